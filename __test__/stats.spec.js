'use strict'
// bus.stats(): the figures match what the processes of a real 3-worker cluster sent, received
// and hold (__test__/fixtures/stats-cluster.js), and a bus in this process sees its own writes,
// reads, backpressure and staged writes.

const test = require('ava')

const { startCluster } = require('./helpers/harness')
const lib = require('..')

const FRAME = 80 // a 50-byte payload in the ring: 16-byte header, padded to 16

test.serial('stats() of a live 3-worker cluster: counts, fill, holders, maps, topics, from every process', async (t) => {
  t.timeout(90_000)
  const c = startCluster('stats-cluster.js', [], { t, timeout: 80_000 })
  const ready = await c.waitFor('ready', { timeout: 40_000 })
  c.command({ cmd: 'stats' })
  const { stats: s } = await c.waitFor('stats')
  const views = await Promise.all([0, 1, 2].map((i) => c.waitFor((m) => m.event === 'worker-stats' && m.index === i)))

  t.is(s.name, ready.name)
  t.is(s.workers, 3)
  t.is(s.primaryPid, ready.pid)
  t.false(s.closed)
  t.deepEqual(
    s.processes.map((p) => [p.address, p.attached, p.pid, p.generation]),
    [[0, true, ready.pids[0], 1], [1, true, ready.pids[1], 1], [2, true, ready.pids[2], 1], [lib.PRIMARY, true, ready.pid, 1]],
  )
  const ring = (from, to) => s.rings.find((r) => r.from === from && r.to === to)
  t.like(ring(1, 0), { written: 100, writtenBytes: 5000, read: 100, readBytes: 5000, fill: 0, lost: 0, corrupt: 0 })
  t.like(ring(1, 2), { written: 10, writtenBytes: 500, read: 0, readBytes: 0, fill: 10 * FRAME })
  t.like(s.processes[1], { written: 110, writtenBytes: 5500, read: 0 })
  t.like(s.processes[0], { read: 100, readBytes: 5000, unread: 0 })
  t.like(s.processes[2], { read: 0, unread: 10 * FRAME })
  t.is(s.rings.length, 12, 'one ring per ordered pair of 4 processes')

  t.deepEqual(s.semaphores.find((x) => x.name === 'jobs'), { name: 'jobs', permits: 3, available: 2, holders: [{ address: 2, pid: ready.pids[2] }] })
  t.deepEqual(s.locks, [{ name: 'door', holder: { address: 2, pid: ready.pids[2] } }])
  t.deepEqual(s.maps, [{ name: 'hits', size: 5, capacity: 100 }])
  t.deepEqual(s.regions, [{ name: 'cfg', size: 64 }])
  t.deepEqual(s.topics, [{ name: 'room.*', subscribers: 1, addresses: [0] }])
  t.true(s.heap.used > 0 && s.heap.used <= s.heap.size)

  // The primary's own view.
  t.like(s.self, { address: lib.PRIMARY, pid: ready.pid, generation: 1, queued: 0, stagedMessages: 0 })
  t.deepEqual(s.peers.map((p) => p.address), [0, 1, 2])
  // Worker 1's view: the rings to 0 and 2, as fractions of the ring and in bytes.
  const w1 = views[1].stats
  t.like(w1.self, { address: 1, pid: ready.pids[1], queued: 0, queuedBytes: 0 })
  const to2 = w1.peers.find((p) => p.address === 2)
  t.like(to2, { attached: true, pid: ready.pids[2], generation: 1 })
  t.like(to2.to, { bytes: 10 * FRAME, written: 10, writtenBytes: 500, read: 0 })
  t.is(to2.to.fill, (10 * FRAME) / s.ringSize)
  t.like(w1.peers.find((p) => p.address === 0).to, { written: 100, read: 100, fill: 0 })
  // Worker 0's view of the ring from 1, and its delivery path.
  const w0 = views[0].stats
  t.like(w0.peers.find((p) => p.address === 1).from, { written: 100, read: 100, readBytes: 5000, lost: 0, corrupt: 0 })
  t.not(w0.self.delivery, null)
  t.is(views[2].stats.self.delivery, null, 'worker 2 never subscribed')

  c.command({ cmd: 'stop' })
  await c.done
})

test.serial('stats() in one process: backpressure counts as full, staged writes and queued sends show, a closed bus throws', async (t) => {
  const a = lib.masterInit({ workers: 1, ringSize: 4096 })
  const b = lib.workerInit({ name: a.name, index: 0 })
  t.teardown(() => (b.close(), a.close()))
  const payload = Buffer.alloc(200, 1)
  let written = 0
  while (a.write(0, payload)) written++
  a.flush()
  t.true(written > 0)
  const pending = a.send(0, payload) // waits for room: queued natively
  const s = a.stats()
  const to = s.peers.find((p) => p.address === 0).to
  t.true(to.full >= 1, 'a write found the ring full')
  t.true(to.fill > 0.5, `ring mostly full: ${to.fill}`)
  t.is(s.self.queued, 1)
  t.is(s.self.queuedBytes, 200)
  // b drains: everything is read, the queued send goes out.
  let got = 0
  b.subscribe(() => got++)
  await pending
  const toZero = () => a.stats().peers.find((p) => p.address === 0).to
  for (const end = Date.now() + 5000; Date.now() < end; ) {
    const now = toZero()
    if (now.read === now.written && got === now.read) break
    await new Promise((r) => setTimeout(r, 10))
  }
  const after = toZero()
  t.is(after.read, after.written)
  t.is(got, after.read)
  t.is(after.fill, 0)
  // A write staged in this microtask shows as staged.
  a.write(0, Buffer.alloc(10))
  t.like(a.stats().self, { stagedMessages: 1, stagedBytes: 10 })
  a.flush()
  t.like(a.stats().self, { stagedMessages: 0, stagedBytes: 0 })
  b.close()
  t.throws(() => b.stats(), { code: 'ERR_CLOSED' })
})
