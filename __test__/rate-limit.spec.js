'use strict'
// examples/rate-limit/server.js as a real program: 3 workers on one port, one client's requests
// spread over them (a new connection for each), and the limit holds across all of them. Then
// the sweep of past windows, and a clean stop on SIGINT that leaves nothing in /dev/shm.

const test = require('ava')
const http = require('node:http')

const { segmentsOf } = require('./helpers/harness')
const { startProgram, cleanUp, waitForOutput, withTimeout, sleep } = require('./helpers/program')

const SERVER = 'examples/rate-limit/server.js'

/** Starts the server in its own process group; resolves with it once it printed its port. */
async function startServer(t, env) {
  const child = startProgram(SERVER, { CLUSTER_SHM_SEGMENT: '', PORT: '0', WORKERS: '3', ...env })
  t.teardown(() => cleanUp(child))
  const m = await waitForOutput(child, /3 workers share http:\/\/localhost:(\d+)/, 20_000)
  child.port = Number(m[1])
  return child
}

/** One GET on a connection of its own (no keep-alive), so that requests spread over the workers. */
function get(port, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 5000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (s) => (body += s))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }))
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out`)))
    req.on('error', reject)
  })
}

async function stop(t, server) {
  server.kill('SIGINT')
  const { code, signal } = await withTimeout(server.done, 10_000, 'the server to exit on SIGINT')
  t.deepEqual({ code, signal }, { code: 0, signal: null }, `${server.stdoutText}\n${server.stderrText}`)
  t.deepEqual(segmentsOf(server.pid), [], 'segments of the server left in /dev/shm')
  t.is(server.stderrText, '')
}

test('50 requests of one client over 3 workers with a limit of 20: exactly 20 get 200 and 30 get 429', async (t) => {
  t.timeout(60_000)
  const WINDOW_MS = 3_600_000
  // Not across a window boundary (the windows start on the hour).
  const left = WINDOW_MS - (Date.now() % WINDOW_MS)
  if (left < 10_000) await sleep(left + 200)
  const server = await startServer(t, { LIMIT: '20', WINDOW_MS: String(WINDOW_MS) })

  const replies = []
  for (let i = 0; i < 50; i++) replies.push(await get(server.port, '/?user=alice'))
  const ok = replies.filter((r) => r.status === 200)
  const limited = replies.filter((r) => r.status === 429)
  t.is(ok.length, 20, replies.map((r) => r.body).join(''))
  t.is(limited.length, 30)
  // The first 20 in order, each counted once, whatever worker served it.
  t.deepEqual(
    replies.slice(0, 20).map((r) => r.body.replace(/ \(worker \d+\)\n$/, '')),
    Array.from({ length: 20 }, (_, i) => `200 alice: request ${i + 1} of 20 in this window`),
  )
  t.deepEqual(ok.map((r) => Number(r.headers['x-ratelimit-remaining'])), Array.from({ length: 20 }, (_, i) => 19 - i))
  for (const r of limited) {
    t.is(r.headers['x-ratelimit-remaining'], '0')
    t.true(Number(r.headers['retry-after']) > 0)
  }
  const workers = new Set(replies.map((r) => r.headers['x-worker']))
  t.log(`served by workers ${[...workers].sort().join(', ')}`)
  t.true(workers.size > 1, 'the requests should be spread over several workers')
  t.true([...workers].every((w) => ['0', '1', '2'].includes(w)), [...workers].join())

  // Another client has a budget of its own.
  const bob = await get(server.port, '/?user=bob')
  t.is(bob.status, 200)
  t.is(bob.headers['x-ratelimit-remaining'], '19')
  t.is((await get(server.port, '/?user=alice')).status, 429)

  await stop(t, server)
})

test('the keys of past windows are swept', async (t) => {
  t.timeout(60_000)
  const WINDOW_MS = 2000
  const server = await startServer(t, { LIMIT: '5', WINDOW_MS: String(WINDOW_MS) })
  const stats = async () => JSON.parse((await get(server.port, '/stats')).body)
  // Count 8 clients early in a window, so that they are all in the same one.
  while (Date.now() % WINDOW_MS > 300) await sleep(20)
  const window = Math.floor(Date.now() / WINDOW_MS) * WINDOW_MS
  for (let i = 0; i < 8; i++) t.is((await get(server.port, `/?user=u${i}`)).status, 200)
  const before = await stats()
  t.is(before.window, window, 'still the same window')
  t.is(before.currentKeys, 8)

  // Two windows later (plus a sweep period of 2 s), nothing of that window is left.
  const deadline = Date.now() + 3 * WINDOW_MS + 2500
  let after
  do {
    await sleep(200)
    after = await stats()
  } while ((after.window === window || after.staleKeys + after.currentKeys > 0) && Date.now() < deadline)
  t.true(after.window > window)
  t.is(after.staleKeys, 0, `past windows' keys still in the map: ${JSON.stringify(after)}`)
  t.is(after.currentKeys, 0)
  t.is(after.sweptWindow, after.window, 'the current window was swept')

  await stop(t, server)
})
