'use strict'
// bus.bridge(): two clusters on one machine, each with its own segment, stand in for two hosts,
// bridged through a real redis-server started and stopped by each test.

const test = require('ava')
const { Redis } = require('ioredis')
const { startCluster, assertCleanExit, noErrors, sleep } = require('./helpers/harness')
const { startRedis } = require('./helpers/redis-server')

const K = 200

/** A Redis connection of the test's own that counts every message per channel (psubscribe '*'). */
async function countingSubscriber(t, url) {
  const redis = new Redis(url)
  t.teardown(() => redis.disconnect())
  const channels = new Map()
  redis.on('pmessageBuffer', (_p, channel) => {
    const c = channel.toString()
    channels.set(c, (channels.get(c) ?? 0) + 1)
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
        }
      }
      const tag = r === resA ? 'A' : 'B'
      const local = messages.filter((m) => m.startsWith('local.'))
      t.is(local.length, 3 * (K / 10), `process ${at}: its own host's unbridged messages only`)
      t.true(local.every((m) => m.startsWith(`local.${tag}|`)), `process ${at}: no unbridged message from the other host`)
    }
  }
  // What Redis carried: each bridged message once (no echo back from the other host), nothing unbridged.
  t.deepEqual(Object.fromEntries([...channels].sort()), {
    'cluster-shm:cache.invalidate': 2 * 3 * (K / 10),
    'cluster-shm:room.A': 3 * K,
    'cluster-shm:room.B': 3 * K,
  })
})
