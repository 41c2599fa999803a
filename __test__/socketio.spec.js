'use strict'
// cluster-shm/socket.io: the behaviours @socket.io/cluster-adapter's own test suite checks, with
// 3 real cluster workers (__test__/fixtures/socketio.js, each socket.io server on a port of its
// own) and one real socket.io-client client connected to each; plus binary and 1 MiB payloads
// and a worker killed in the middle of a test.

const test = require('ava')
const { io: connect } = require('socket.io-client')

const { startCluster, segmentsOf, sleep } = require('./helpers/harness')
const { record } = require('./helpers/socketio-clients')

const GRACE = 300 // ms within which an event that should not arrive would have arrived

/** Starts the fixture and connects client `c<i>` to worker i; resolves with { cluster, clients, ask }. */
async function setUp(t, env = {}) {
  const cluster = startCluster('socketio.js', [], { t, timeout: 240_000, env })
  const ports = []
  for (let i = 0; i < 3; i++) {
    const l = await cluster.waitFor((m) => m.event === 'listening' && m.index === i, { timeout: 30_000, what: `worker ${i} listening` })
    ports[i] = l.port
    cluster.pids = { ...cluster.pids, [i]: l.pid }
  }
  let nextId = 0
  const ask = async (to, cmd, params = {}) => {
    const id = ++nextId
    cluster.command({ to, id, cmd, ...params })
    const r = await cluster.waitFor((m) => m.event === 'result' && m.id === id, { timeout: 20_000, what: `the result of ${cmd} on ${to}` })
    if (!r.ok) throw new Error(`${cmd} on worker ${to}: ${r.error}`)
    return r.value
  }
  const clients = ports.map((port, i) => connect(`http://127.0.0.1:${port}`, { transports: ['websocket'], reconnection: false, query: { client: `c${i}` } }))
  t.teardown(() => clients.forEach((c) => c.disconnect()))
  await Promise.all(clients.map((c) => new Promise((resolve, reject) => c.on('connect', resolve).on('connect_error', reject))))
  // Every adapter knows the two others (heartbeats) before the test starts.
  for (let i = 0; i < 3; i++) {
    const end = Date.now() + 10_000
    while ((await ask(i, 'serverCount')) !== 3) {
      if (Date.now() > end) throw new Error(`worker ${i} does not see 3 servers`)
      await sleep(20)
    }
  }
  return { cluster, clients, ask, ports }
}

async function tearDown(t, { cluster, clients }) {
  clients.forEach((c) => c.disconnect())
  cluster.command({ cmd: 'stop' })
  const r = await cluster.done
  t.is(r.code, 0, `signal ${r.signal}, orphans ${r.orphans}\n${r.messages.slice(-6).map((m) => JSON.stringify(m)).join('\n')}\n${r.stderr}`)
  t.deepEqual(r.messages.filter((m) => m.event === 'error' || m.raw), [])
  t.deepEqual(segmentsOf(cluster.pid), [], 'segments left in /dev/shm')
}

/** Resolves once `cond()` holds (or after 10 s, for the assertion that follows to fail). */
async function until(cond) {
  const end = Date.now() + 10_000
  while (!cond() && Date.now() < end) await sleep(10)
  await sleep(GRACE) // and nothing more arrives
}

test('broadcast: to all, to a namespace, to a room, except a room, local only; binary and 1 MiB', async (t) => {
  const s = await setUp(t)
  const { clients, ask } = s

  const all = record(clients, 'all')
  await ask(0, 'emit', { event: 'all', args: [1, '2', { $buf: Buffer.from([1, 2, 3]).toString('base64') }] })
  await until(() => all.every((g) => g.length > 0))
  for (const got of all) {
    t.is(got.length, 1)
    t.is(got[0][0], 1)
    t.is(got[0][1], '2')
    t.true(Buffer.isBuffer(got[0][2]) || got[0][2] instanceof ArrayBuffer)
    t.deepEqual([...new Uint8Array(got[0][2])], [1, 2, 3])
  }

  // A namespace: only the sockets connected to /custom.
  const custom = clients.map((c) => c.io.socket('/custom'))
  t.teardown(() => custom.forEach((c) => c.disconnect()))
  await Promise.all(custom.map((c) => new Promise((resolve) => (c.connected ? resolve() : c.once('connect', resolve)))))
  const inCustom = record(custom, 'ns')
  const inMain = record(clients, 'ns')
  await ask(1, 'emit', { nsp: '/custom', event: 'ns', args: ['custom'] })
  await until(() => inCustom.every((g) => g.length > 0))
  t.deepEqual(inCustom, [[['custom']], [['custom']], [['custom']]])
  t.deepEqual(inMain, [[], [], []])

  // A room that only worker 1's socket is in.
  await ask(1, 'join', { rooms: ['room1'] })
  const room = record(clients, 'room')
  await ask(0, 'emit', { in: 'room1', event: 'room', args: [] })
  await until(() => room[1].length > 0)
  t.deepEqual(room.map((g) => g.length), [0, 1, 0])

  const except = record(clients, 'except')
  await ask(0, 'emit', { except: 'room1', event: 'except', args: [] })
  await until(() => except[0].length > 0 && except[2].length > 0)
  t.deepEqual(except.map((g) => g.length), [1, 0, 1])

  const local = record(clients, 'local')
  await ask(0, 'emit', { local: true, event: 'local', args: [] })
  await until(() => local[0].length > 0)
  t.deepEqual(local.map((g) => g.length), [1, 0, 0])

  // 1 MiB of binary and 1 MiB of text, from worker 2 to everybody.
  const big = record(clients, 'big')
  await ask(2, 'emitBig', { event: 'big', bytes: 1 << 20, fill: 0xab })
  await until(() => big.every((g) => g.length > 0))
  for (const got of big) {
    t.is(got.length, 1)
    const bytes = new Uint8Array(got[0][0])
    t.is(bytes.length, 1 << 20)
    t.true(bytes.every((b) => b === 0xab))
    t.is(got[0][1], 'x'.repeat(1 << 20))
  }
  await tearDown(t, s)
})

test('broadcast with acknowledgements: from every client, binary, no client, timeout', async (t) => {
  const s = await setUp(t)
  const { clients, ask } = s
  clients.forEach((c, i) => c.on('ack', (cb) => cb(i + 1)))
  t.deepEqual(await ask(0, 'emitWithAck', { event: 'ack', timeout: 5000 }), { err: null, responses: [1, 2, 3] })

  clients.forEach((c, i) => c.on('ack-bin', (cb) => cb(Buffer.from([i + 1]))))
  const bin = await ask(1, 'emitWithAck', { event: 'ack-bin', timeout: 5000 })
  t.is(bin.err, null)
  t.deepEqual(bin.responses.map((r) => Buffer.from(r.$buf, 'base64')[0]).sort(), [1, 2, 3])

  // Nobody in that room: the ack callback is called at once with no responses.
  t.deepEqual(await ask(2, 'emitWithAck', { event: 'ack', in: 'empty-room', timeout: 5000 }), { err: null, responses: [] })

  // Client 2 never answers: a timeout, with the two answers that came.
  clients[0].on('ack-some', (cb) => cb(1))
  clients[1].on('ack-some', (cb) => cb(2))
  clients[2].on('ack-some', () => {})
  const some = await ask(0, 'emitWithAck', { event: 'ack-some', timeout: 1000 })
  t.is(some.err, 'operation has timed out')
  t.deepEqual(some.responses, [1, 2])
  await tearDown(t, s)
})

test('socketsJoin, socketsLeave, disconnectSockets and fetchSockets across workers', async (t) => {
  const s = await setUp(t)
  const { clients, ask } = s
  const rooms = async () => Promise.all([0, 1, 2].map((i) => ask(i, 'rooms').then((r) => r[0])))

  await ask(0, 'socketsJoin', { rooms: ['all-in'] })
  t.deepEqual(await rooms(), [['all-in'], ['all-in'], ['all-in']])

  // Only the sockets in room1 (those of workers 0 and 2) join room2.
  await ask(0, 'join', { rooms: ['room1'] })
  await ask(2, 'join', { rooms: ['room1'] })
  await ask(1, 'socketsJoin', { in: 'room1', rooms: ['room2'] })
  t.deepEqual(await rooms(), [['all-in', 'room1', 'room2'], ['all-in'], ['all-in', 'room1', 'room2']])

  // Joined then emitted to at once: every socket is in the room by the time the emit arrives.
  const race = record(clients, 'after-join')
  await ask(1, 'socketsJoin', { rooms: ['late'] })
  await ask(1, 'emit', { in: 'late', event: 'after-join', args: ['x'] })
  await until(() => race.every((g) => g.length > 0))
  t.deepEqual(race, [[['x']], [['x']], [['x']]])

  await ask(2, 'socketsLeave', { in: 'room2', rooms: ['all-in'] })
  t.deepEqual(await rooms(), [['late', 'room1', 'room2'], ['all-in', 'late'], ['late', 'room1', 'room2']])
  await ask(0, 'socketsLeave', { rooms: ['late'] })
  t.deepEqual(await rooms(), [['room1', 'room2'], ['all-in'], ['room1', 'room2']])

  // fetchSockets: every socket of the cluster, with its rooms and data; or only those of a room.
  for (let i = 0; i < 3; i++) await ask(i, 'setData', { data: { tag: `t${i}` } })
  const all = await ask(1, 'fetchSockets')
  t.deepEqual(all.map((x) => x.query), ['c0', 'c1', 'c2'])
  t.deepEqual(all.map((x) => x.data), [0, 1, 2].map((i) => ({ worker: i, tag: `t${i}` })))
  t.deepEqual(all.map((x) => x.id), clients.map((c) => c.id))
  t.deepEqual(all[2].rooms, [clients[2].id, 'room1', 'room2'].sort())
  t.deepEqual((await ask(1, 'fetchSockets', { in: 'room1' })).map((x) => x.query), ['c0', 'c2'])
  t.deepEqual((await ask(0, 'fetchSockets', { except: 'room1' })).map((x) => x.query), ['c1'])

  // disconnectSockets: those of a room, then all of them.
  const reasons = clients.map((c) => new Promise((resolve) => c.on('disconnect', resolve)))
  await ask(1, 'disconnectSockets', { in: 'room2' })
  t.is(await reasons[0], 'io server disconnect')
  t.is(await reasons[2], 'io server disconnect')
  await sleep(GRACE)
  t.true(clients[1].connected)
  await ask(0, 'disconnectSockets', {})
  t.is(await reasons[1], 'io server disconnect')
  t.deepEqual(await ask(2, 'fetchSockets'), [])
  await tearDown(t, s)
})

test('serverSideEmit: to the other servers, with acknowledgements, and its timeout', async (t) => {
  const s = await setUp(t)
  const { cluster, ask } = s
  await ask(0, 'serverSideEmit', { args: ['hi', { $buf: Buffer.from('bin').toString('base64') }] })
  await cluster.waitFor((m) => m.event === 'serverSideEmit' && m.index === 1)
  await cluster.waitFor((m) => m.event === 'serverSideEmit' && m.index === 2)
  await sleep(GRACE)
  const got = cluster.events('serverSideEmit')
  t.deepEqual(got.map((m) => m.index).sort(), [1, 2], 'not to the sender itself')
  for (const m of got) t.deepEqual(m.args, ['hi', { $buf: Buffer.from('bin').toString('base64') }])

  for (const from of [0, 1, 2]) {
    const r = await ask(from, 'serverSideEmitWithAck', { arg: from })
    t.deepEqual(r.answers, [0, 1, 2].filter((i) => i !== from).map((i) => ({ pong: i, arg: from })))
  }

  // Worker 2 does not answer: the request times out (socket.io-adapter's 5 s) with worker 1's answer.
  await ask(2, 'mute', { mute: true })
  const r = await ask(0, 'serverSideEmitWithAck', { arg: 'late' })
  t.is(r.error, 'timeout reached: missing 1 responses')
  t.deepEqual(r.answers, [{ pong: 1, arg: 'late' }])
  t.true(r.ms >= 4900, `${r.ms} ms`)
  await tearDown(t, s)
})

test('a worker killed mid-test: requests waiting for it settle at once, its sockets leave fetchSockets, the rest goes on', async (t) => {
  // A heartbeat timeout of a minute: only the bus's 'detach' can make the others forget worker 2 in time.
  const s = await setUp(t, { HEARTBEAT_TIMEOUT: '60000' })
  const { cluster, clients, ask } = s
  t.is((await ask(0, 'fetchSockets')).length, 3)

  // Worker 2 holds a serverSideEmitWithAck of worker 0 unanswered, and is killed.
  await ask(2, 'mute', { mute: true })
  const pending = ask(0, 'serverSideEmitWithAck', { arg: 'q' })
  await sleep(GRACE)
  const dropped = new Promise((resolve) => clients[2].on('disconnect', resolve))
  process.kill(cluster.pids[2], 'SIGKILL')
  const exit = await cluster.waitFor((m) => m.event === 'exit' && m.index === 2)
  t.is(exit.signal, 'SIGKILL')
  const r = await pending
  t.is(r.error, undefined, 'settled without waiting for the dead worker')
  t.deepEqual(r.answers, [{ pong: 1, arg: 'q' }])
  t.true(r.ms < 4900, `${r.ms} ms: the 5 s timeout must not be what settled it`)
  t.is(await dropped, 'transport close')

  // fetchSockets no longer waits for worker 2 (it would time out after 5 s and fail).
  const t0 = Date.now()
  const left = await ask(1, 'fetchSockets')
  t.deepEqual(left.map((x) => x.query), ['c0', 'c1'])
  t.true(Date.now() - t0 < 4900, `${Date.now() - t0} ms`)
  t.is(await ask(0, 'serverCount'), 2)

  const after = record(clients.slice(0, 2), 'after')
  await ask(1, 'emit', { event: 'after', args: ['still here'] })
  await until(() => after.every((g) => g.length > 0))
  t.deepEqual(after, [[['still here']], [['still here']]])
  await tearDown(t, s)
})
