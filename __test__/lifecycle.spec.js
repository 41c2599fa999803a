'use strict'
// Lifecycle of a cluster: workers dying and being replaced, attaching late, processes exiting by
// themselves, segments in /dev/shm, isolation of two clusters, attach/detach events.

const fs = require('node:fs')
const path = require('node:path')
const test = require('ava')

const { startCluster, runClean, assertCleanExit, noErrors, segmentsOf, sleep, SHM_DIR } = require('./helpers/harness')
const { masterInit, PRIMARY } = require('..')

test('a SIGKILLed worker is replaced and the replacement receives what was sent to its index meanwhile, in order', async (t) => {
  t.timeout(40_000)
  const r = await runClean(t, 'respawn.js', [], { timeout: 30_000 })
  const attached = r.events('attached')
  const victim = attached.find((m) => m.role === 'victim')
  t.deepEqual(
    r.messages.filter((m) => m.event === 'recv' && m.role === 'victim').map((m) => m.data),
    ['before-0', 'before-1', 'before-2'],
  )
  const [firstExit] = r.events('exit')
  t.like(firstExit, { pid: victim.pid, code: null, signal: 'SIGKILL' }, 'the first worker to die was the victim, by SIGKILL')
  // while the victim was down, its index was not attached
  t.deepEqual(r.messages.find((m) => m.event === 'peers-while-down' && m.at === 0).peers, [PRIMARY])
  t.deepEqual(r.messages.find((m) => m.event === 'peers-while-down' && m.at === PRIMARY).peers, [0])
  t.deepEqual(r.events('down-write').map((m) => m.ok), [true, true, true])
  const replacement = attached.find((m) => m.role === 'replacement')
  t.truthy(replacement, 'a replacement was forked and attached')
  t.is(replacement.index, 1, 'the replacement took the lowest free index, the victim\'s')
  const [{ got }] = r.events('replacement-received')
  const fromSender = got.filter((m) => m.from === 0).map((m) => m.data)
  const fromPrimary = got.filter((m) => m.from === PRIMARY).map((m) => m.data)
  t.deepEqual(fromSender, ['down-0', 'down-1', 'down-2', 'down-3', 'down-4', 'down-5', 'after-0', 'after-1'], 'worker 0\'s messages: nothing delivered before is repeated, nothing sent while down is lost, in order')
  t.deepEqual(fromPrimary, ['down-p-0', 'down-p-1', 'down-p-2'], 'the primary\'s messages, in order')
  t.is(got.length, 11, 'nothing else arrived')
})

test('messages sent to an index before a process attached are received after it attaches', async (t) => {
  t.timeout(40_000)
  const r = await runClean(t, 'preattach.js', [], { timeout: 30_000 })
  const [pw] = r.events('primary-writes')
  t.deepEqual(pw.writes, [true, true, true, true, true, true])
  t.deepEqual(pw.peers, [], 'nobody was attached when the primary wrote')
  t.deepEqual(r.events('peers-before-send')[0].peers, [PRIMARY], 'index 0 was not attached when worker 1 sent to it')
  t.deepEqual(r.events('b-sent')[0].results, [true, null, true, null])
  const received = (at) => r.messages.find((m) => m.event === 'received' && m.at === at).got
  t.deepEqual(received(1), [
    { from: PRIMARY, data: 'p-3' },
    { from: PRIMARY, data: 'p-4' },
    { from: PRIMARY, data: 'p-5' },
  ])
  const at0 = received(0)
  t.deepEqual(at0.filter((m) => m.from === PRIMARY).map((m) => m.data), ['p-0', 'p-1', 'p-2'])
  t.deepEqual(at0.filter((m) => m.from === 1).map((m) => m.data), ['b-0', 'b-1', 'b-2', 'b-3'])
  t.is(at0.length, 7)
})

async function naturalExit(t, args) {
  t.timeout(30_000)
  const r = await runClean(t, 'natural-exit.js', args, { timeout: 12_000 })
  const [disconnected] = r.events('disconnected')
  t.truthy(disconnected, 'the workers disconnected')
  t.deepEqual(
    r.events('worker-exit').map(({ code, signal }) => ({ code, signal })),
    [
      { code: 0, signal: null },
      { code: 0, signal: null },
    ],
    'both workers exited by themselves with code 0',
  )
  t.true(r.exitedAt - disconnected.t < 3000, `the primary exited ${r.exitedAt - disconnected.t} ms after the workers disconnected`)
  t.like(r.events('primary-exit')[0], { code: 0, closed: true }, 'the exit hook closed the bus')
  return r
}

test('natural exit: the primary and its workers exit by themselves without close()', async (t) => {
  await naturalExit(t, [])
})

test('natural exit: a pending send() keeps its worker alive until it settles, then the worker exits by itself', async (t) => {
  const r = await naturalExit(t, ['pending'])
  t.like(r.events('pending')[0], { queued: 1 }, 'the send() was pending when the worker was disconnected')
  t.deepEqual(r.events('pending-rejected').map((e) => e.code), ['ERR_TIMEOUT'], 'the send() settled by its timeout, not by the exit')
  t.deepEqual(r.events('pending-resolved'), [])
})

test('a stale segment left by a SIGKILLed cluster is removed by the next masterInit (and a live one is kept)', async (t) => {
  t.timeout(40_000)
  const dead = startCluster('stale-primary.js', [], { timeout: 30_000, t })
  const alive = startCluster('stale-primary.js', [], { timeout: 30_000, t })
  const [d, a] = await Promise.all([dead.waitFor('ready'), alive.waitFor('ready')])
  const file = (name) => path.join(SHM_DIR, name.slice(1))
  t.true(fs.existsSync(file(d.name)), 'the segment exists while its primary runs')
  t.deepEqual(segmentsOf(dead.pid), [d.name.slice(1)], 'segment names carry the primary\'s pid in hex')
  // The whole cluster dies at once (OOM killer, container kill): nobody gets to clean up.
  dead.killGroup('SIGKILL')
  const rd = await dead.done
  // Right after the SIGKILL the segment is still there ...
  const leaked = fs.existsSync(file(d.name))
  const bus = masterInit({ workers: 1, ringSize: 4096 })
  const removed = !fs.existsSync(file(d.name))
  const aliveKept = fs.existsSync(file(a.name))
  const ownName = bus.name
  bus.close()
  // A SIGKILLed primary leaves its segment behind; any masterInit on the host removes it, and
  // ava runs two test files at once, so another file's masterInit may have been first.
  if (!leaked) t.log('the stale segment was already removed by a concurrent masterInit on this host')
  t.true(removed, 'the next masterInit (ours, or a concurrent one) removed the stale segment')
  t.true(aliveKept, 'the segment of a live primary was not removed')
  t.false(fs.existsSync(file(ownName)), 'close() of the primary removed its own segment')
  t.deepEqual(segmentsOf(process.pid), [])
  // the live one cleans up after itself on SIGTERM
  alive.kill('SIGTERM')
  const ra = await alive.done
  t.is(ra.signal, 'SIGTERM')
  t.deepEqual(segmentsOf(alive.pid), [], 'SIGTERM of a primary removes its segment')
  t.is(rd.signal, 'SIGKILL')
  t.false(rd.orphans, 'the worker died with its primary')
  t.deepEqual(segmentsOf(dead.pid), [])
})

for (const buses of [1, 2]) {
  test(`SIGTERM of a primary process with ${buses} live bus(es) removes the segments and ends the process`, async (t) => {
    t.timeout(30_000)
    const p = startCluster('sigterm.js', [buses], { timeout: 20_000, t })
    const { names } = await p.waitFor('ready')
    t.is(names.length, buses)
    t.is(segmentsOf(p.pid).length, buses)
    p.kill('SIGTERM')
    const exited = await Promise.race([p.exitPromise.then(() => true), sleep(3000).then(() => false)])
    t.true(exited, 'the process ended within 3 s of SIGTERM')
    t.deepEqual(segmentsOf(p.pid), [], 'its segments were removed')
    if (exited) t.is(p.signal, 'SIGTERM', 'it died by the same signal')
  })
}

test('two clusters on one host do not see each other', async (t) => {
  t.timeout(40_000)
  const a = startCluster('two-clusters.js', ['A'], { timeout: 30_000, t })
  const b = startCluster('two-clusters.js', ['B'], { timeout: 30_000, t })
  const [ra, rb] = await Promise.all([a.waitFor('ready'), b.waitFor('ready')])
  t.not(ra.name, rb.name)
  t.deepEqual(ra.indices, [0, 1], 'cluster A\'s workers hold indices 0 and 1')
  t.deepEqual(rb.indices, [0, 1], 'so do cluster B\'s: they do not share a registry')
  a.command({ cmd: 'go' })
  b.command({ cmd: 'go' })
  const [resA, resB] = await Promise.all([a.done, b.done])
  for (const [tag, r] of [
    ['A', resA],
    ['B', resB],
  ]) {
    assertCleanExit(t, r)
    noErrors(t, r)
    const recv = r.events('recv')
    t.deepEqual(recv.filter((m) => !m.data.startsWith(`${tag}:`)), [], `cluster ${tag} received nothing from the other cluster`)
    const got = recv.map((m) => `${m.at}<-${m.data}`).sort()
    const expected = [
      `-1<-${tag}:0`,
      `-1<-${tag}:0:direct`,
      `-1<-${tag}:1`,
      `-1<-${tag}:1:direct`,
      `0<-${tag}:-1`,
      `0<-${tag}:1`,
      `1<-${tag}:-1`,
      `1<-${tag}:0`,
    ].sort()
    t.deepEqual(got, expected, `cluster ${tag}: every message exactly once`)
    t.deepEqual(r.events('broadcast').map((m) => m.n), [2, 2, 2], `cluster ${tag}: each broadcast reached 2 receivers`)
    t.deepEqual(r.messages.find((m) => m.event === 'peers' && m.at === PRIMARY).peers, [0, 1])
  }
})

test("'attach' and 'detach' events and peers()", async (t) => {
  t.timeout(40_000)
  const r = await runClean(t, 'events.js', [], { timeout: 30_000 })
  const at = (who) => r.messages.filter((m) => (m.event === 'attach' || m.event === 'detach') && m.at === who).map(({ event, index, peers }) => ({ event, index, peers }))
  t.deepEqual(at(PRIMARY), [
    { event: 'attach', index: 0, peers: [0] },
    { event: 'attach', index: 1, peers: [0, 1] },
    { event: 'detach', index: 1, peers: [0] }, // B closed its bus
    { event: 'detach', index: 0, peers: [] }, // A was SIGKILLed
  ])
  t.deepEqual(at(0), [
    { event: 'attach', index: 1, peers: [1, PRIMARY] },
    { event: 'detach', index: 1, peers: [PRIMARY] },
  ])
  const steps = Object.fromEntries(r.events('peers').map((m) => [`${m.at} ${m.step}`, m.peers]))
  t.deepEqual(steps, {
    '-1 start': [],
    '1 attached': [0, PRIMARY],
    '-1 after B closed': [0],
    '-1 after A killed': [],
  })
  t.like(r.events('closed')[0], { closed: true, closeEvents: 1 }, "close() is idempotent and emits 'close' once")
  t.deepEqual(r.events('recv'), [])
})
