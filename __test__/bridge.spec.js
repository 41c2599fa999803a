'use strict'
// bus.bridge(): two clusters on one machine, each with its own segment, stand in for two hosts,
// bridged through a real redis-server started and stopped by each test.

const test = require('ava')
const { Redis } = require('ioredis')
const { startCluster, assertCleanExit, noErrors, sleep } = require('./helpers/harness')
const { startRedis } = require('./helpers/redis-server')

const K = 200

/**
 * The messages of one bridge envelope, read here independently of lib/bridge-batch.js:
 * [version 2][host 16][first seq f64][count u32], then count x [kind u8][length u32][payload].
 */
function unpack(b) {
  if (b[0] !== 2) throw new Error(`envelope version ${b[0]}`)
  const first = b.readDoubleLE(17)
  const count = b.readUInt32LE(25)
  const messages = []
  let at = 29
  for (let i = 0; i < count; i++) {
    const len = b.readUInt32LE(at + 1)
    messages.push({ seq: first + i, kind: b[at], data: b.toString('utf8', at + 5, at + 5 + len) })
    at += 5 + len
  }
  if (at !== b.length) throw new Error(`envelope of ${b.length} bytes, ${at} read`)
  return messages
}

/** A Redis connection of the test's own that counts every message per channel (psubscribe '*'). */
async function countingSubscriber(t, url) {
  const redis = new Redis(url)
  t.teardown(() => redis.disconnect())
  const channels = new Map()
  redis.on('pmessageBuffer', (_p, channel, message) => {
    const c = channel.toString()
    channels.set(c, (channels.get(c) ?? 0) + unpack(message).length)
  })
  await redis.psubscribe('*')
  return channels
}

const lostOf = (r, cause) => r.events('lost').filter((e) => e.reason === 'bridge' && e.cause === cause)
const sum = (events) => events.reduce((n, e) => n + e.count, 0)

test('every message crosses both ways exactly once, in order per publisher; none echoes; unbridged topics never reach Redis', async (t) => {
  const redis = await startRedis(t)
  const channels = await countingSubscriber(t, redis.url)
  const env = { REDIS_URL: redis.url, BRIDGE_K: String(K) }
  const a = startCluster('bridge-host.js', ['A', 'cross'], { timeout: 60_000, env, t })
  const b = startCluster('bridge-host.js', ['B', 'cross'], { timeout: 60_000, env, t })
  const [ra, rb] = await Promise.all([a.waitFor('ready'), b.waitFor('ready')])
  t.not(ra.host, rb.host, 'each host has its own id')
  for (const c of channels.keys()) t.is(c, 'cluster-shm:room.hello', 'only hellos crossed before go')
  channels.clear()
  a.command({ cmd: 'go' })
  b.command({ cmd: 'go' })
  const [resA, resB] = await Promise.all([a.done, b.done])
  const publishers = ['-1', '0', '1']
  for (const r of [resA, resB]) {
    assertCleanExit(t, r)
    noErrors(t, r)
    t.deepEqual(r.events('lost'), [], 'nothing lost')
    const got = r.events('got')
    t.is(got.length, 3, 'every process reported')
    for (const { at, got: messages } of got) {
      for (const tag of ['A', 'B']) {
        for (const p of publishers) {
          const room = messages.filter((m) => m.startsWith(`room.${tag}|${tag}:${p}:`))
          t.deepEqual(room, Array.from({ length: K }, (_, i) => `room.${tag}|${tag}:${p}:${i}`), `process ${at}: ${tag}:${p}'s room messages, each once, in order`)
          const cache = messages.filter((m) => m.startsWith(`cache.invalidate|${tag}:${p}:`))
          t.deepEqual(cache, Array.from({ length: K / 10 }, (_, i) => `cache.invalidate|${tag}:${p}:c${i * 10}`), `process ${at}: ${tag}:${p}'s invalidations, each once, in order`)
          // Across topics too: a batch holds one topic, and a message of another topic closes it.
          const both = messages.filter((m) => m.startsWith(`room.${tag}|${tag}:${p}:`) || m.startsWith(`cache.invalidate|${tag}:${p}:`))
          const published = []
          for (let i = 0; i < K; i++) {
            published.push(`room.${tag}|${tag}:${p}:${i}`)
            if (i % 10 === 0) published.push(`cache.invalidate|${tag}:${p}:c${i}`)
          }
          t.deepEqual(both, published, `process ${at}: ${tag}:${p}'s messages of both topics in the order published`)
        }
      }
      const tag = r === resA ? 'A' : 'B'
      const local = messages.filter((m) => m.startsWith('local.'))
      t.is(local.length, 3 * (K / 10), `process ${at}: its own host's unbridged messages only`)
      t.true(local.every((m) => m.startsWith(`local.${tag}|`)), `process ${at}: no unbridged message from the other host`)
    }
  }
  // What Redis carried: each bridged message once (no echo back from the other host), nothing
  // unbridged. (The hosts' hellos, the handshake before 'go', may still be crossing after it.)
  channels.delete('cluster-shm:room.hello')
  t.deepEqual(Object.fromEntries([...channels].sort()), {
    'cluster-shm:cache.invalidate': 2 * 3 * (K / 10),
    'cluster-shm:room.A': 3 * K,
    'cluster-shm:room.B': 3 * K,
  })
})

/** Every message on `channel` as it reaches Redis: { t, seq, data, envelope: its Redis message's number, bytes: that message's size }. */
async function recordChannel(t, url, channel) {
  const redis = new Redis(url)
  t.teardown(() => redis.disconnect())
  const seen = []
  let envelopes = 0
  redis.on('messageBuffer', (_c, m) => {
    const now = Date.now()
    const envelope = envelopes++
    for (const x of unpack(m)) seen.push({ t: now, seq: x.seq, data: x.data, envelope, bytes: m.length })
  })
  await redis.subscribe(channel)
  return seen
}

const until = async (cond, what, ms = 20_000) => {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

const failover = test.macro({
  async exec(t, mode) {
    const redis = await startRedis(t)
    const seen = await recordChannel(t, redis.url, 'cluster-shm:room.s')
    const a = startCluster('bridge-host.js', ['A', mode], { timeout: 60_000, env: { REDIS_URL: redis.url }, t })
    const first = await a.waitFor('active')
    t.not(first.at, -1, 'a candidate bridges, not the primary')
    await until(() => seen.length >= 20, '20 messages on Redis')
    const killedAt = Date.now()
    const before = seen.length
    process.kill(first.pid, 'SIGKILL')
    const second = await a.waitFor((m) => m.event === 'active' && m.pid !== first.pid)
    t.not(second.at, first.at, 'the other worker took over')
    const takeover = second.t - killedAt
    t.true(takeover < 3000, `took over ${takeover} ms after the kill`)
    t.log(`takeover ${takeover} ms after SIGKILL`)
    const lost = await a.waitFor((m) => m.event === 'lost' && m.cause === 'failover')
    t.is(lost.reason, 'bridge')
    t.is(lost.at, second.at, 'reported by the new bridge')
    t.is(lost.count, null, 'local publishes while nobody bridged cannot be counted')
    t.true(typeof lost.gapMs === 'number' && lost.gapMs >= 0 && lost.gapMs < 5000, `gapMs ${lost.gapMs}`)
    await until(() => seen.length >= before + 20, '20 messages after the takeover')
    a.command({ cmd: 'stop' })
    const r = await a.done
    assertCleanExit(t, r)
    noErrors(t, r)
    // The successor continues the sequence numbers in the segment (none reused) and the order
    // holds. They are contiguous but for at most one jump at the failover: a batch the killed
    // bridge had numbered (the number is in the segment before the batch leaves) and not yet
    // written to its socket is lost, and another host would report that hole as a 'gap'.
    const seqs = seen.map((m) => m.seq)
    t.true(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'sequence numbers continue across the failover, none reused')
    const jumps = seqs.filter((s, i) => i > 0 && s !== seqs[i - 1] + 1).length
    t.true(jumps <= 1, `contiguous but for the failover: ${jumps} jumps`)
    const ns = seen.map((m) => Number(m.data.split(':')[1]))
    t.true(ns.every((n, i) => i === 0 || n > ns[i - 1]), 'the publisher\'s order holds')
    const gap = seen[before].t - seen[before - 1].t
    t.log(`gap on Redis: ${gap} ms, ${ns[before] - ns[before - 1] - 1} messages published while nobody bridged`)
    t.true(gap < 3000, `messages reach Redis again ${gap} ms after the last one before the kill`)
  },
  title: (_, mode) => `the bridging process is SIGKILLed: another candidate bridges within about a second and reports the gap (${mode})`,
})

test(failover, 'failover') // candidates: cluster workers; the primary's cluster 'exit' frees the lock
test(failover, 'failover-join') // candidates: processes attached by name; the liveness check frees it

test('redis-server restarted mid-stream: traffic resumes, the connection that stayed down and the loss are reported', async (t) => {
  const redis = await startRedis(t)
  const env = { REDIS_URL: redis.url, BRIDGE_DOWN_AFTER: '1000' }
  const recv = startCluster('bridge-host.js', ['B', 'receive'], { timeout: 60_000, env, t })
  await recv.waitFor('ready')
  const send = startCluster('bridge-host.js', ['A', 'send'], { timeout: 60_000, env, t })
  await send.waitFor('ready')
  const count = async () => {
    recv.command({ cmd: 'count' })
    const n = recv.events('count').length
    return (await recv.waitFor((m) => m.event === 'count' && recv.events('count').length > n)).n
  }
  let n = 0
  while ((n = await count()) < 100) await sleep(100)
  await redis.restart(2000) // down for 2 s: longer than downAfter (1 s)
  const atRestart = await count()
  let after = atRestart
  const end = Date.now() + 20_000
  while ((after = await count()) < atRestart + 100 && Date.now() < end) await sleep(100)
  t.true(after >= atRestart + 100, `traffic resumed after the restart (${atRestart} -> ${after})`)
  // Both connections of each host are back (an idle publisher connection may reconnect last).
  await Promise.all([send.waitFor('up'), recv.waitFor('up')])
  send.command({ cmd: 'stop' })
  const rs = await send.done
  recv.command({ cmd: 'stop' })
  const rr = await recv.done
  for (const r of [rs, rr]) {
    assertCleanExit(t, r)
    noErrors(t, r)
    t.true(r.events('down').length >= 1, 'the connection that stayed down was reported')
    t.true(r.events('up').length >= 1, 'and its return')
  }
  const published = rs.events('published')[0].n
  const got = rr.events('got')[0].got.map((d) => Number(d.split(':')[1]))
  t.true(got.every((x, i) => i === 0 || x > got[i - 1]), 'order kept, nothing twice')
  const missing = published - got.length
  const droppedBySender = sum(lostOf(rs, 'redis-down'))
  const gaps = sum(lostOf(rr, 'gap'))
  t.log(`published ${published}, received ${got.length}; sender reported ${droppedBySender} dropped, receiver ${gaps} missing in the sequence`)
  t.true(missing > 0, 'messages were lost while redis-server was down')
  t.true(droppedBySender + gaps >= missing, 'every lost message is reported by the sender or the receiver')
  t.true(droppedBySender > 0, 'the sender reported what it could not send')
})

test('a full outbound queue drops and reports: what reached Redis and what was reported lost add up', async (t) => {
  const redis = await startRedis(t)
  const seen = await recordChannel(t, redis.url, 'cluster-shm:room.s')
  const n = 2000
  const env = { REDIS_URL: redis.url, BRIDGE_K: String(n), BRIDGE_MAX_QUEUE: '5' }
  const r = await startCluster('bridge-host.js', ['A', 'burst'], { timeout: 60_000, env, t }).done
  assertCleanExit(t, r)
  noErrors(t, r)
  const full = sum(lostOf(r, 'queue-full'))
  // This test's own subscriber may still be receiving the last batches (bounded wait).
  for (const end = Date.now() + 5000; seen.length + full < n && Date.now() < end; ) await sleep(20)
  t.true(full > 0, 'the burst overflowed a queue of 5')
  t.true(seen.length >= 5, `${seen.length} reached Redis`)
  t.is(seen.length + full, n, 'every message either reached Redis or was reported lost')
  const stats = r.events('stats')[0]
  t.is(stats.sent, seen.length)
  t.is(stats.lost, full)
  const ns = seen.map((m) => Number(m.data.split(':')[1]))
  t.true(ns.every((x, i) => i === 0 || x > ns[i - 1]), 'in order')
})

test('a burst published in one turn crosses in few Redis messages, split at 64 KiB, complete and in order, strings, bytes and values alike', async (t) => {
  const redis = await startRedis(t)
  const seen = await recordChannel(t, redis.url, 'cluster-shm:room.s')
  const n = 300
  const pad = 1000 // ~300 KB in all: more than one batch of at most 64 KiB
  const big = 100_000 // message n/2 alone is larger than a batch: it travels in one of its own
  const env = { REDIS_URL: redis.url, BRIDGE_K: String(n), BRIDGE_PAD: String(pad), BRIDGE_BIG: String(big), BRIDGE_KINDS: '1' }
  const kinds = ['bytes:000102ff', 'json:{"a":1,"b":[true,null]}', 'map:[[1,"x"]]'] // published after the strings, in the same turn
  const recv = startCluster('bridge-host.js', ['B', 'receive'], { timeout: 60_000, env, t })
  await recv.waitFor('ready')
  // The receiving bridge's pattern subscription is in place before the burst.
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  await until(async () => (await probe.pubsub('NUMPAT')) >= 1, 'the receiving bridge subscribed')
  const send = await startCluster('bridge-host.js', ['A', 'burst'], { timeout: 60_000, env, t }).done
  assertCleanExit(t, send)
  noErrors(t, send)
  t.deepEqual(send.events('lost'), [], 'nothing lost by the sender')
  const counts = []
  for (;;) {
    recv.command({ cmd: 'count' })
    const c = await recv.waitFor((m) => m.event === 'count' && recv.events('count').length > counts.length)
    counts.push(c.n)
    if (c.n >= n + kinds.length || counts.length > 200) break
    await sleep(100)
  }
  recv.command({ cmd: 'stop' })
  const r = await recv.done
  assertCleanExit(t, r)
  noErrors(t, r)
  t.deepEqual(r.events('lost'), [], 'nothing lost or missing in the sequence on the receiver')
  const expected = Array.from({ length: n }, (_, i) => `A:${i}:x*${i === n / 2 ? big : pad}`)
  const got = r.events('got')[0].got
  t.is(got.length, n + kinds.length, 'every message arrived once')
  t.true(got.slice(0, n).every((d, i) => d === expected[i]), 'complete and in the order published')
  t.deepEqual(got.slice(n), kinds, 'a Buffer, an object and a Map arrive as what was published')
  // What Redis carried: the same messages, numbered without a gap, in few envelopes of at most 64 KiB.
  t.deepEqual(seen.slice(0, n).map((m) => m.data), expected.map((d) => d.replace(/x\*(\d+)$/, (_, k) => 'x'.repeat(Number(k)))))
  t.is(seen.length, n + kinds.length)
  t.true(seen.every((m, i) => i === 0 || m.seq === seen[i - 1].seq + 1), 'contiguous sequence numbers')
  const envelopes = new Map(seen.map((m) => [m.envelope, m.bytes]))
  t.is(new Set(seen.slice(n).map((m) => m.envelope)).size, 1, 'messages of three encodings share one batch')
  const bigOne = seen[n / 2]
  t.is(seen.filter((m) => m.envelope === bigOne.envelope).length, 1, 'the message larger than a batch travels alone')
  for (const [e, bytes] of envelopes) if (e !== bigOne.envelope) t.true(bytes <= 64 * 1024, `envelope ${e}: ${bytes} bytes`)
  const minimum = Math.ceil((n - 1) * (pad + 10) / (64 * 1024)) + 1
  t.log(`${n} messages in ${envelopes.size} Redis messages (at least ${minimum})`)
  t.true(envelopes.size >= minimum, 'split at the batch limit')
  t.true(envelopes.size <= n / 10, 'batched: far fewer Redis messages than messages')
})

/** A bridge envelope built here (see unpack): `entries` = [[kind, Buffer], ...]; `count` may lie. */
function pack(host, first, entries, count = entries.length) {
  const head = Buffer.alloc(29)
  head[0] = 2
  host.copy(head, 1)
  head.writeDoubleLE(first, 17)
  head.writeUInt32LE(count, 25)
  const parts = [head]
  for (const [kind, payload] of entries) {
    const h = Buffer.alloc(5)
    h[0] = kind
    h.writeUInt32LE(payload.length, 1)
    parts.push(h, payload)
  }
  return Buffer.concat(parts)
}

test('what Redis carries is untrusted: garbage, undecodable values, short envelopes and impossible numbers are reported as malformed, never delivered, and the rest arrives', async (t) => {
  const redis = await startRedis(t)
  const env = { REDIS_URL: redis.url }
  const recv = startCluster('bridge-host.js', ['B', 'receive'], { timeout: 60_000, env, t })
  await recv.waitFor('ready')
  const pub = new Redis(redis.url)
  t.teardown(() => pub.disconnect())
  await until(async () => (await pub.pubsub('NUMPAT')) >= 1, 'the receiving bridge subscribed')
  const host = Buffer.alloc(16, 7)
  const utf8 = (s) => [2, Buffer.from(s)]
  await pub.publish('cluster-shm:room.s', Buffer.from('not an envelope')) // 1 malformed
  // 2, 3 and 4 are malformed: a v8 value that does not deserialize, JSON that does not parse, a
  // frame kind that is no message (a topic envelope).
  await pub.publish('cluster-shm:room.s', pack(host, 1, [utf8('ok:1'), [3, Buffer.from([0xff, 0x0f, 0x99])], [8, Buffer.from('{not json')], [5, Buffer.from('x')], utf8('ok:2')]))
  // Says 3 messages, holds 1 and 6 bytes that make no second and third: 2 malformed.
  await pub.publish('cluster-shm:room.s', Buffer.concat([pack(host, 6, [utf8('ok:3')], 3), Buffer.alloc(6)]))
  // A channel the bridged pattern matches whose topic is no topic (longer than 128 bytes): 2 malformed.
  await pub.publish(`cluster-shm:room.${'x'.repeat(200)}`, pack(host, 9, [utf8('no:1'), utf8('no:2')]))
  // Numbers no envelope can carry, each refused whole (1 malformed each, no gap made up): a
  // count more than its bytes can hold, and a first number that is no whole number.
  await pub.publish('cluster-shm:room.s', pack(host, 11, [utf8('no:3')], 2 ** 32 - 1))
  await pub.publish('cluster-shm:room.s', pack(host, NaN, [utf8('no:4')]))
  const counts = []
  for (;;) {
    recv.command({ cmd: 'count' })
    const c = await recv.waitFor((m) => m.event === 'count' && recv.events('count').length > counts.length)
    counts.push(c.n)
    if (c.n >= 3 || counts.length > 100) break
    await sleep(100)
  }
  await sleep(300) // a 'lost' event is sent within 100 ms of the loss
  recv.command({ cmd: 'stop' })
  const r = await recv.done
  assertCleanExit(t, r)
  noErrors(t, r)
  t.deepEqual(r.events('got')[0].got, ['ok:1', 'ok:2', 'ok:3'], 'the well-formed messages, once, in order')
  t.is(sum(lostOf(r, 'malformed')), 10, 'every malformed message counted, each once')
  t.deepEqual(lostOf(r, 'gap'), [], 'no gap: the envelopes were numbered without one')
})

test('bridge() checks its options', (t) => {
  const { masterInit, ClusterShmError } = require('..')
  const bus = masterInit({ workers: 1, ringSize: 4096 })
  t.teardown(() => bus.close())
  const bad = [
    undefined,
    { redis: 'redis://127.0.0.1:1', topics: [] },
    { redis: 'redis://127.0.0.1:1', topics: ['a*'] },
    { redis: 'redis://127.0.0.1:1', topics: ['a.*.b'] },
    { redis: 42, topics: ['a'] },
    { redis: 'redis://127.0.0.1:1', topics: ['a'], prefix: 1 },
    { redis: 'redis://127.0.0.1:1', topics: ['a'], maxQueue: 0 },
    { redis: 'redis://127.0.0.1:1', topics: ['a'], candidate: 'yes' },
  ]
  for (const options of bad) t.throws(() => bus.bridge(options), { code: 'ERR_INVALID_ARG' }, JSON.stringify(options))
  // Topic names are refused by subscribe()'s own rule, with its error, before anything starts.
  for (const topic of ['', 'x'.repeat(129), 'é'.repeat(64) + 'x', 'a*', 'a.*.b', 'a.b*', '**', 7]) {
    const subscribed = t.throws(() => bus.subscribe(topic, () => {}), { code: 'ERR_INVALID_ARG' }, `subscribe ${topic}`)
    t.throws(() => bus.bridge({ redis: 'redis://127.0.0.1:1', topics: ['ok', topic] }), { code: 'ERR_INVALID_ARG', message: subscribed.message, instanceOf: ClusterShmError }, `bridge ${topic}`)
  }
  const longest = bus.bridge({ redis: 'redis://127.0.0.1:1', topics: ['x'.repeat(128), 'é'.repeat(64)], candidate: false })
  t.deepEqual(longest.topics, ['x'.repeat(128), 'é'.repeat(64)], '128 bytes is a valid name')
  longest.close()
  const bridge = bus.bridge({ redis: 'redis://127.0.0.1:1', topics: ['room.*', 'room.1', 'room.1.x', 'cache'], candidate: false })
  t.deepEqual(bridge.topics, ['room.*', 'cache'], 'topics a pattern covers are dropped (one delivery each)')
  t.false(bridge.active)
  bridge.close()
  bus.close()
  t.throws(() => bus.bridge({ redis: 'redis://127.0.0.1:1', topics: ['a'] }), { code: 'ERR_CLOSED' })
})
