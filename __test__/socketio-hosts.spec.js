'use strict'
// cluster-shm/socket.io across hosts: two clusters on this machine, each with its own segment,
// stand in for two hosts (A and B, 2 workers each, __test__/fixtures/socketio.js). Each primary
// bridges the adapter's topics (bridgeTopics()) over one real redis-server, started and stopped
// by the test; one real socket.io-client client is connected to each of the 4 servers.

const test = require('ava')
const { Redis } = require('ioredis')
const { io: connect } = require('socket.io-client')

const { startCluster, segmentsOf, sleep } = require('./helpers/harness')
const { record } = require('./helpers/socketio-clients')
const { startRedis } = require('./helpers/redis-server')

const GRACE = 500 // ms within which a duplicate (or an event that should not arrive) would have arrived
const HOSTS = ['A', 'B']
const SERVERS = ['A0', 'A1', 'B0', 'B1'] // host and worker index; client `a0` is connected to A0, ...

/** Resolves once `cond()` holds (or after `ms`, for the assertion that follows to fail). */
async function until(cond, ms = 15_000) {
  const end = Date.now() + ms
  while (!(await cond()) && Date.now() < end) await sleep(20)
}

/**
 * Starts both hosts (host A forgets a silent node after 3 s, host B only after a minute) and
 * connects the clients; resolves once every server counts all 4 servers.
 */
async function setUp(t) {
  const redis = await startRedis(t)
  const env = (host) => ({ REDIS_URL: redis.url, SIO_WORKERS: '2', HEARTBEAT_INTERVAL: '300', HEARTBEAT_TIMEOUT: host === 'A' ? '3000' : '60000' })
  const clusters = {}
  for (const host of HOSTS) clusters[host] = startCluster('socketio.js', [], { t, timeout: 120_000, env: env(host) })
  const bridged = await Promise.all(HOSTS.map((h) => clusters[h].waitFor('bridged', { timeout: 30_000 })))
  t.not(bridged[0].host, bridged[1].host, 'each host bridges with its own id')
  const ports = {}
  const pids = {}
  for (const name of SERVERS) {
    const l = await clusters[name[0]].waitFor((m) => m.event === 'listening' && m.index === Number(name[1]), { timeout: 30_000, what: `${name} listening` })
    ports[name] = l.port
    pids[name] = l.pid
  }
  let nextId = 0
  const ask = async (name, cmd, params = {}) => {
    const id = ++nextId
    clusters[name[0]].command({ to: Number(name[1]), id, cmd, ...params })
    const r = await clusters[name[0]].waitFor((m) => m.event === 'result' && m.id === id, { timeout: 20_000, what: `the result of ${cmd} on ${name}` })
    if (!r.ok) throw new Error(`${cmd} on ${name}: ${r.error}`)
    return r.value
  }
  const clients = SERVERS.map((name) => connect(`http://127.0.0.1:${ports[name]}`, { transports: ['websocket'], reconnection: false, query: { client: name.toLowerCase() } }))
  t.teardown(() => clients.forEach((c) => c.disconnect()))
  await Promise.all(clients.map((c) => new Promise((resolve, reject) => c.on('connect', resolve).on('connect_error', reject))))
  return { redis, clusters, clients, ask, pids }
}

async function tearDown(t, { clusters, clients, redis }) {
  clients.forEach((c) => c.disconnect())
  for (const host of HOSTS) clusters[host].command({ cmd: 'stop' })
  for (const host of HOSTS) {
    const r = await clusters[host].done
    t.is(r.code, 0, `host ${host}: signal ${r.signal}, orphans ${r.orphans}\n${r.messages.slice(-6).map((m) => JSON.stringify(m)).join('\n')}\n${r.stderr}`)
    t.deepEqual(r.messages.filter((m) => m.event === 'error' || m.raw), [], `host ${host}: no errors`)
    t.deepEqual(segmentsOf(clusters[host].pid), [], `host ${host}: segments left in /dev/shm`)
  }
  await redis.stop()
}

test('socket.io across two hosts bridged over Redis: broadcasts, heartbeats, fetchSockets, serverSideEmit with acks, a server that leaves', async (t) => {
  const s = await setUp(t)
  const { clusters, clients, ask, pids } = s

  // What crosses Redis: only the adapter's bridged topics, never a response to a node of the same host.
  const monitor = new Redis(s.redis.url)
  t.teardown(() => monitor.disconnect())
  const channels = new Map() // channel -> messages
  // A Redis message is a bridge batch: [version 2][host 16][first seq f64][count u32][...].
  const messagesIn = (b) => (b[0] === 2 ? b.readUInt32LE(25) : NaN)
  monitor.on('pmessageBuffer', (_p, channel, message) => channels.set(channel.toString(), (channels.get(channel.toString()) ?? 0) + messagesIn(message)))
  await monitor.psubscribe('*')

  // Heartbeats cross: every server counts the 4.
  const counts = async () => Promise.all(SERVERS.map((name) => ask(name, 'serverCount')))
  await until(async () => (await counts()).every((n) => n === 4))
  t.deepEqual(await counts(), [4, 4, 4, 4], 'every server knows the servers of both hosts')

  // Broadcast to all, from each host: every client once.
  for (const from of ['A0', 'B1']) {
    const all = record(clients, 'all')
    await ask(from, 'emit', { event: 'all', args: [from, { n: 1 }] })
    await until(() => all.every((g) => g.length > 0))
    await sleep(GRACE)
    t.deepEqual(all, SERVERS.map(() => [[from, { n: 1 }]]), `io.emit from ${from}: each client once`)
  }

  // Binary content crosses too (the v8-serialized form of the messages).
  const bin = record(clients, 'bin')
  await ask('B0', 'emit', { event: 'bin', args: [{ $buf: Buffer.from([7, 8, 9]).toString('base64') }] })
  await until(() => bin.every((g) => g.length > 0))
  await sleep(GRACE)
  t.deepEqual(bin.map((g) => g.map((args) => [...new Uint8Array(args[0])])), SERVERS.map(() => [[7, 8, 9]]), 'binary broadcast: each client once, intact')

  // A room with a socket on each host (a0, b1), and `except` that room.
  await ask('A0', 'join', { rooms: ['r'] })
  await ask('B1', 'join', { rooms: ['r'] })
  const room = record(clients, 'room')
  await ask('B0', 'emit', { in: 'r', event: 'room', args: ['in r'] })
  await until(() => room[0].length > 0 && room[3].length > 0)
  await sleep(GRACE)
  t.deepEqual(room.map((g) => g.length), [1, 0, 0, 1], 'to a room: its sockets on both hosts, once')
  const except = record(clients, 'except')
  await ask('A1', 'emit', { except: 'r', event: 'except', args: [] })
  await until(() => except[1].length > 0 && except[2].length > 0)
  await sleep(GRACE)
  t.deepEqual(except.map((g) => g.length), [0, 1, 1, 0], 'except a room: the others on both hosts, once')

  // fetchSockets: the sockets of both hosts, with their rooms and data.
  for (const name of SERVERS) await ask(name, 'setData', { data: { server: name } })
  for (const from of ['A1', 'B0']) {
    const all = await ask(from, 'fetchSockets')
    t.deepEqual(all.map((x) => x.query), ['a0', 'a1', 'b0', 'b1'], `fetchSockets from ${from}`)
    t.deepEqual(all.map((x) => x.data.server), SERVERS)
    t.deepEqual(all.map((x) => x.id), clients.map((c) => c.id))
    t.deepEqual(all[3].rooms, [clients[3].id, 'r'].sort())
  }
  t.deepEqual((await ask('A1', 'fetchSockets', { in: 'r' })).map((x) => x.query), ['a0', 'b1'], 'fetchSockets of a room')

  // serverSideEmit: to the 3 other servers, once each; with acks, the answers of both hosts.
  await ask('A0', 'serverSideEmit', { args: ['hi'] })
  await until(() => clusters.A.events('serverSideEmit').length + clusters.B.events('serverSideEmit').length >= 3)
  await sleep(GRACE)
  const got = [...clusters.A.events('serverSideEmit').map((m) => `A${m.index}`), ...clusters.B.events('serverSideEmit').map((m) => `B${m.index}`)].sort()
  t.deepEqual(got, ['A1', 'B0', 'B1'], 'serverSideEmit: every other server once, not the sender')
  for (const from of ['A0', 'B1']) {
    const uid = await ask(from, 'uid')
    channels.clear()
    const r = await ask(from, 'serverSideEmitWithAck', { arg: from })
    t.is(r.error, undefined, `${from}: no timeout`)
    // The fixture answers { pong: <worker index>, arg }: every other server of both hosts once.
    const others = SERVERS.filter((n) => n !== from)
    t.is(r.answers.length, others.length, `${from}: 3 answers`)
    t.deepEqual(r.answers.map((a) => a.arg), others.map(() => from))
    t.deepEqual(r.answers.map((a) => a.pong).sort(), others.map((n) => Number(n[1])).sort(), `${from}: the answers of both hosts`)
    await sleep(GRACE)
    // Over Redis: the answers of the other host's 2 servers, on the requester's uid; not its own host's.
    t.is(channels.get(`cluster-shm:socket.io./.${uid}`), 2, `${from}: answers that crossed Redis: ${JSON.stringify([...channels])}`)
  }

  // A1 leaves (its adapter publishes ADAPTER_CLOSE): host B forgets it at once, though it would
  // only time it out after a minute; its socket is gone from fetchSockets on both hosts.
  await ask('A1', 'leave')
  await until(async () => (await ask('B0', 'serverCount')) === 3, 5_000)
  t.is(await ask('B0', 'serverCount'), 3, 'host B dropped the server that left')
  t.is(await ask('A0', 'serverCount'), 3, 'host A too')
  t.deepEqual((await ask('B1', 'fetchSockets')).map((x) => x.query), ['a0', 'b0', 'b1'])

  // B1 is killed: its own host drops it at once (the bus's 'detach'), host A after its 3 s
  // heartbeat timeout; then fetchSockets and serverSideEmitWithAck only involve the two left.
  process.kill(pids.B1, 'SIGKILL')
  await clusters.B.waitFor((m) => m.event === 'exit' && m.index === 1)
  t.is(await ask('B0', 'serverCount'), 2, 'host B dropped its killed server at once')
  const t0 = Date.now()
  await until(async () => (await ask('A0', 'serverCount')) === 2, 10_000)
  t.is(await ask('A0', 'serverCount'), 2, `host A dropped the killed server of host B (after ${Date.now() - t0} ms)`)
  t.deepEqual((await ask('A0', 'fetchSockets')).map((x) => x.query), ['a0', 'b0'])
  const last = await ask('B0', 'serverSideEmitWithAck', { arg: 'end' })
  t.is(last.error, undefined)
  t.deepEqual(last.answers, [{ pong: 0, arg: 'end' }], 'the answer of A0, the one other server left')
  const after = record([clients[0], clients[2]], 'after')
  await ask('A0', 'emit', { event: 'after', args: [] })
  await until(() => after.every((g) => g.length > 0))
  await sleep(GRACE)
  t.deepEqual(after.map((g) => g.length), [1, 1], 'the rest goes on')

  await tearDown(t, s)
})
