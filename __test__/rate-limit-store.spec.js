'use strict'
// cluster-shm/express-rate-limit: express-rate-limit with ClusterShmStore in 3 real cluster
// workers on one port (__test__/fixtures/rate-limit-store.js), driven by real HTTP requests, each
// on a connection of its own so that they spread over the workers.

const test = require('ava')
const http = require('node:http')

const { startCluster, segmentsOf, sleep } = require('./helpers/harness')

/** Starts the fixture with `env`; resolves with it once its 3 workers listen (cluster.port). */
async function start(t, env) {
  const c = startCluster('rate-limit-store.js', [], { t, timeout: 120_000, env })
  c.port = (await c.waitFor('ready', { timeout: 30_000 })).port
  return c
}

async function stop(t, c) {
  c.command({ cmd: 'stop' })
  const r = await c.done
  t.is(r.code, 0, r.stderr)
  t.deepEqual(segmentsOf(c.pid), [], 'segments left in /dev/shm')
}

function get(port, path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: 10_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (s) => (body += s))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body, worker: res.headers['x-worker'], pid: Number(res.headers['x-pid']) }))
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)))
    req.on('error', reject)
  })
}

const statuses = (replies) => replies.map((r) => r.status)
const count = (replies, status) => replies.filter((r) => r.status === status).length

test('exactly `limit` requests pass across 3 workers, one after the other and all at once', async (t) => {
  const c = await start(t, { LIMIT: '7', WINDOW_MS: '600000' })
  const seq = []
  for (let i = 0; i < 20; i++) seq.push(await get(c.port, '/hit?user=alice'))
  t.deepEqual(statuses(seq), [...Array(7).fill(200), ...Array(13).fill(429)])
  const workers = new Set(seq.map((r) => r.worker))
  t.log(`served by workers ${[...workers].sort()}`)
  t.true(workers.size > 1, 'requests should spread over the workers')
  t.is(seq[0].headers.ratelimit, 'limit=7, remaining=6, reset=600')
  t.regex(seq[6].headers.ratelimit, /^limit=7, remaining=0, reset=\d+$/)

  // 40 at once from one client: exactly 7 pass, whatever the interleaving over the workers.
  const burst = await Promise.all(Array.from({ length: 40 }, () => get(c.port, '/hit?user=bob')))
  t.is(count(burst, 200), 7)
  t.is(count(burst, 429), 33)
  t.true(new Set(burst.map((r) => r.worker)).size > 1)

  // get (limiter.getKey) sees the shared count from any worker.
  const info = JSON.parse((await get(c.port, '/info?user=bob')).body)
  t.is(info.info.totalHits, 40)
  t.true(info.info.resetTime > Date.now())
  t.is(info.size, 2)
  t.is(JSON.parse((await get(c.port, '/info?user=nobody')).body).info, null)

  // resetKey and resetAll act on the whole cluster.
  await get(c.port, '/reset?user=alice')
  t.is((await get(c.port, '/hit?user=alice')).status, 200)
  await get(c.port, '/reset-all')
  const after = await Promise.all(Array.from({ length: 9 }, () => get(c.port, '/hit?user=bob')))
  t.is(count(after, 200), 7)
  await stop(t, c)
})

test('a new window starts once, atomically, and expired keys are swept', async (t) => {
  const WINDOW_MS = 1500
  const c = await start(t, { LIMIT: '4', WINDOW_MS: String(WINDOW_MS) })
  const first = await Promise.all(Array.from({ length: 12 }, () => get(c.port, '/hit?user=carol')))
  t.is(count(first, 200), 4, statuses(first).join())
  for (let round = 0; round < 3; round++) {
    // The window is used up; 30 requests from 30 ms before its end to 60 ms after it, over all
    // workers: only the new window has room, and exactly one worker starts it (4 pass, not 8).
    const { resetTime } = JSON.parse((await get(c.port, '/info?user=carol')).body).info
    await sleep(resetTime - Date.now() - 30)
    const edge = await Promise.all(Array.from({ length: 30 }, (_, i) => sleep(i * 3).then(() => get(c.port, '/hit?user=carol'))))
    t.is(count(edge, 200), 4, `round ${round}: ${statuses(edge).join()}`)
    const now = JSON.parse((await get(c.port, '/info?user=carol')).body).info
    t.true(now.resetTime > resetTime, 'a new window')
  }
  // Nothing but expired entries left after a window: the sweep takes them all.
  await sleep(WINDOW_MS + 100)
  const swept = JSON.parse((await get(c.port, '/sweep')).body).deleted
  const size = JSON.parse((await get(c.port, '/info?user=x')).body).size
  t.is(size, 0, `deleted ${swept} now`)
  await stop(t, c)
})

test('the timer sweeps in one worker at a time: none while another holds the sweep lock, and again once its holder is killed', async (t) => {
  const WINDOW_MS = 1000 // the sweep timer's period too
  const c = await start(t, { LIMIT: '4', WINDOW_MS: String(WINDOW_MS) })
  let hold
  do hold = JSON.parse((await get(c.port, '/hold-sweep')).body)
  while (!hold.held) // a timer's sweep held it at that instant
  for (const user of ['a', 'b', 'c']) t.is((await get(c.port, `/hit?user=${user}`)).status, 200)
  // Expired after 1 s; each of the 3 workers' timers fires about 3 times more: none may sweep.
  await sleep(WINDOW_MS + 3 * WINDOW_MS + 200)
  const size = async () => JSON.parse((await get(c.port, '/info?user=x')).body).size
  t.is(await size(), 3, 'swept while another worker held the sweep lock')

  process.kill(hold.pid, 'SIGKILL')
  await c.waitFor((m) => m.event === 'exit' && m.pid === hold.pid, { what: 'the exit of the lock holder' })
  // Its permit comes back: a timer of a living worker sweeps within about a period.
  const deadline = Date.now() + 3 * WINDOW_MS
  let left
  while ((left = await size()) > 0 && Date.now() < deadline) await sleep(100)
  t.is(left, 0, 'not swept after the holder of the sweep lock died')
  await stop(t, c)
})

test('skipFailedRequests takes hits back (decrement) across workers', async (t) => {
  const c = await start(t, { LIMIT: '3', WINDOW_MS: '600000' })
  const failed = []
  for (let i = 0; i < 6; i++) failed.push(await get(c.port, '/flaky?user=erin&ok=0'))
  t.deepEqual(statuses(failed), Array(6).fill(500), 'failed requests are not counted')
  const ok = []
  for (let i = 0; i < 5; i++) ok.push(await get(c.port, '/flaky?user=erin&ok=1'))
  t.deepEqual(statuses(ok), [200, 200, 200, 429, 429])
  await stop(t, c)
})

test('the count carries on when the worker that served the last request is killed', async (t) => {
  const c = await start(t, { LIMIT: '10', WINDOW_MS: '600000' })
  const first = []
  for (let i = 0; i < 4; i++) first.push(await get(c.port, '/hit?user=frank'))
  t.deepEqual(statuses(first), Array(4).fill(200))
  const victim = first[3].pid
  process.kill(victim, 'SIGKILL')
  const exit = await c.waitFor((m) => m.event === 'exit' && m.pid === victim, { what: 'the exit of the killed worker' })
  t.is(exit.signal, 'SIGKILL')
  const rest = []
  for (let i = 0; i < 10; i++) rest.push(await get(c.port, '/hit?user=frank'))
  t.deepEqual(statuses(rest), [...Array(6).fill(200), ...Array(4).fill(429)])
  t.false(rest.some((r) => r.pid === victim))
  t.is(rest[0].headers.ratelimit.split(',')[1].trim(), 'remaining=5')
  await stop(t, c)
})

for (const pass of [false, true]) {
  test(`a full map is a clear logged error, and the request is ${pass ? 'let through (passOnStoreError)' : 'refused'}`, async (t) => {
    const c = await start(t, { LIMIT: '2', WINDOW_MS: '600000', CAPACITY: '3', PASS_ON_STORE_ERROR: pass ? '1' : '0' })
    for (const user of ['a', 'b', 'c']) t.is((await get(c.port, `/hit?user=${user}`)).status, 200)
    const full = await get(c.port, '/hit?user=d')
    t.is(full.status, pass ? 200 : 500)
    // Clients already in the map are still counted.
    t.is((await get(c.port, '/hit?user=a')).status, 200)
    t.is((await get(c.port, '/hit?user=a')).status, 429)
    await sleep(300) // stderr of the worker reaches us
    t.regex(c.stderr, /ERR_MAP_FULL|map holds 3 clients/)
    t.regex(c.stderr, /cluster-shm rate-limit store: the shared map holds 3 clients whose windows have not ended, so "rl:d" cannot be counted; raise `capacity`/)
    t.regex(c.stderr, pass ? /allowing request without rate-limiting/ : /the request is refused \(passOnStoreError is false\)/)
    await stop(t, c)
  })
}

test('a full map makes room by sweeping expired clients', async (t) => {
  const c = await start(t, { LIMIT: '2', WINDOW_MS: '1000', CAPACITY: '3' })
  for (const user of ['a', 'b', 'c']) t.is((await get(c.port, `/hit?user=${user}`)).status, 200)
  await sleep(1100)
  for (const user of ['d', 'e', 'f']) t.is((await get(c.port, `/hit?user=${user}`)).status, 200)
  t.is(c.stderr, '')
  await stop(t, c)
})

test('a store name too long for its sweep lock is refused before anything is made in the segment', (t) => {
  const { masterInit } = require('..')
  const { ClusterShmStore } = require('../lib/express-rate-limit.js')
  const bus = masterInit({ workers: 1, ringSize: 4096 })
  t.teardown(() => bus.close())
  const err = t.throws(() => new ClusterShmStore({ bus, name: 'n'.repeat(123) }), { code: 'ERR_INVALID_ARG' })
  t.regex(err.message, /at most 122 bytes/)
  t.deepEqual(bus.stats().maps, [], 'no map was made')
  const store = new ClusterShmStore({ bus, name: 'n'.repeat(122) })
  t.is(bus.stats().maps.length, 1, 'a name of 122 bytes is fine')
  store.shutdown()
})
