'use strict'
// A rate limiter shared by every worker of a cluster: each client gets LIMIT requests per window
// of WINDOW_MS, however the requests are spread over the workers. The count of a client in the
// current window is one key of a cluster-shm map, `${client}|${windowStart}`, and every worker
// bumps it with map.increment(), which is atomic across processes: no Redis, no round trip
// through the primary. Keys of past windows are deleted once per window, by one worker at a time
// (bus.lock), each only if nobody counted a late request in it meanwhile (compareAndSet).
//
//   node examples/rate-limit/server.js
//   WORKERS=4 PORT=8080 LIMIT=5 WINDOW_MS=10000 node examples/rate-limit/server.js
//   (defaults: one worker per CPU, port 3000, 20 requests per 60 s; PORT=0: any free port)
//
// The client is `?user=<name>` if given, else the client's IP address. Every response says which
// worker served it (header x-worker) and what is left (x-ratelimit-limit, -remaining, -reset).
// GET /stats (not counted) shows how many keys the map holds for this window and for past ones.

const cluster = require('node:cluster')
const http = require('node:http')
const os = require('node:os')
const { masterInit, workerInit } = require('../..')

const WORKERS = Number(process.env.WORKERS) || os.availableParallelism()
const PORT = Number(process.env.PORT ?? 3000)
const LIMIT = Number(process.env.LIMIT) || 20 // requests per client per window
const WINDOW_MS = Number(process.env.WINDOW_MS) || 60_000
const MAX_CLIENTS = Number(process.env.MAX_CLIENTS) || 10_000 // distinct clients per window

// The same name and parameters in every process (other parameters would be ERR_MISMATCH).
const MAP = 'rate-limit'
const MAP_OPTIONS = {
  capacity: 2 * MAX_CLIENTS, // this window's clients, and the last window's until they are swept
  maxKeyBytes: 128, // `${client}|${windowStart}`: an IPv6 address or a user name, '|', 13 digits
  maxValueBytes: 8, // numbers only: a count, or the start of the last swept window
}
const SWEPT = '$swept' // the window whose predecessors were swept (no '|': never a client's key)
const MAX_USER_BYTES = 64
// Named objects live in the segment's heap (masterInit's heapSize, 4 MiB by default). A map takes
// at most 3 x capacity slots of 32 + maxKeyBytes + maxValueBytes bytes; round up to pages.
const HEAP_SIZE = Math.ceil((3 * MAP_OPTIONS.capacity * (32 + MAP_OPTIONS.maxKeyBytes + MAP_OPTIONS.maxValueBytes) + 65536) / 4096) * 4096

if (cluster.isPrimary) primary()
else worker()

// ------------------------------------------------------------------------------------------------
// The primary: creates the bus (and so the segment the map lives in), forks the workers, replaces
// the ones that die, stops on Ctrl-C.

function primary() {
  const bus = masterInit({ workers: WORKERS, heapSize: HEAP_SIZE }) // before forking: the workers attach to it
  // Create the map here, so that a configuration the heap cannot hold fails now, once, rather
  // than in every worker. The workers open the same map by name.
  bus.map(MAP, MAP_OPTIONS)
  for (let i = 0; i < WORKERS; i++) cluster.fork()

  let listening = 0
  cluster.on('listening', (worker, { port }) => {
    if (++listening !== WORKERS) return
    const url = `http://localhost:${port}`
    console.log(`rate-limit: ${WORKERS} workers share ${url}; ${LIMIT} requests per client per ${WINDOW_MS / 1000} s, counted across all workers`)
    console.log('  try it (each curl opens a new connection, so the requests go to different workers):')
    console.log(`    for i in $(seq ${LIMIT + 5}); do curl -s "${url}/?user=alice"; done`)
    console.log('  Ctrl-C stops the server')
  })

  // A worker that dies is replaced; the counts live in shared memory, so nothing is lost.
  let stopping = false
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    if (listening < WORKERS) {
      // Died before it served anything: a bug or a bad configuration, not bad luck. Give up.
      console.error(`worker (pid ${worker.process.pid}) died at startup (${signal ?? code}); stopping`)
      process.exitCode = 1
      return stop()
    }
    console.log(`worker (pid ${worker.process.pid}) died (${signal ?? code}), starting another one`)
    cluster.fork()
  })

  // Ctrl-C / kill: the workers stop accepting, finish their requests and exit; then closing the
  // bus removes the shared-memory segment. (With handlers of our own, that is our job.)
  function stop() {
    if (stopping) return
    stopping = true
    console.log('rate-limit: stopping')
    const straggle = setTimeout(() => {
      for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL')
    }, 3000)
    straggle.unref()
    cluster.disconnect(() => {
      bus.close()
      console.log('rate-limit: stopped')
    })
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

// ------------------------------------------------------------------------------------------------
// A worker: an HTTP server that counts every request in the shared map.

function worker() {
  const bus = workerInit() // attach to the primary's segment
  const me = bus.index
  const hits = bus.map(MAP, MAP_OPTIONS)

  const windowOf = (t) => Math.floor(t / WINDOW_MS) * WINDOW_MS
  /** The window of a client's key, or NaN for other keys. */
  const windowOfKey = (key) => (key.includes('|') ? Number(key.slice(key.lastIndexOf('|') + 1)) : NaN)

  /** Deletes the keys of past windows. One worker at a time, once per window. */
  async function sweep() {
    const current = windowOf(Date.now())
    if (hits.get(SWEPT) === current) return 0
    try {
      // timeout 0: if another worker is sweeping right now, leave it to that one.
      return await bus.lock('rate-limit:sweep', (permit) => {
        // A sweeper that died halfway left nothing broken: sweeping again finishes its work.
        if (permit.recovered) console.log(`worker ${me}: the previous sweeper died; sweeping again`)
        if (hits.get(SWEPT) === current) return 0
        let deleted = 0
        for (const key of hits.keys()) {
          if (!(windowOfKey(key) < current)) continue
          // Delete only if the count did not change since we read it: a request of the old
          // window still in flight may have counted itself meanwhile (the next sweep takes it).
          const count = hits.get(key)
          if (count !== undefined && hits.compareAndSet(key, count, undefined)) deleted++
        }
        hits.set(SWEPT, current)
        return deleted
      }, { timeout: 0 })
    } catch (err) {
      if (err.code === 'ERR_TIMEOUT') return 0
      throw err
    }
  }
  const sweeper = setInterval(() => sweep().catch((err) => console.error(`worker ${me}: sweep failed: ${err.message}`)), Math.min(WINDOW_MS, 10_000))
  sweeper.unref()

  /** Counts one request of `client` in the current window; returns its count so far. */
  async function count(client, windowStart) {
    const key = `${client}|${windowStart}`
    try {
      return hits.increment(key)
    } catch (err) {
      if (err.code !== 'ERR_MAP_FULL') throw err
      await sweep() // room for this window's clients, if the last window's were still there
      return hits.increment(key) // still full: too many clients at once (MAX_CLIENTS)
    }
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost')
    if (url.pathname === '/stats') return stats(res) // not counted
    const user = url.searchParams.get('user')
    if (user !== null && (user === '' || Buffer.byteLength(user) > MAX_USER_BYTES)) {
      return res.writeHead(400, { 'x-worker': me }).end(`user must be 1..${MAX_USER_BYTES} bytes\n`)
    }
    const client = user !== null ? `user:${user}` : `ip:${req.socket.remoteAddress}`
    const who = user ?? req.socket.remoteAddress
    const now = Date.now()
    const windowStart = windowOf(now)
    const reset = Math.ceil((windowStart + WINDOW_MS - now) / 1000)

    let n
    try {
      n = await count(client, windowStart)
    } catch (err) {
      // Fail closed: ERR_MAP_FULL means more clients in one window than MAX_CLIENTS.
      console.error(`worker ${me}: cannot count ${client}: ${err.code} ${err.message}`)
      return res.writeHead(503, { 'x-worker': me, 'retry-after': reset }).end('try again later\n')
    }
    const headers = {
      'content-type': 'text/plain; charset=utf-8',
      'x-worker': me,
      'x-ratelimit-limit': LIMIT,
      'x-ratelimit-remaining': Math.max(0, LIMIT - n),
      'x-ratelimit-reset': reset,
    }
    if (n > LIMIT) {
      res.writeHead(429, { ...headers, 'retry-after': reset })
      res.end(`429 ${who}: over the limit of ${LIMIT} requests per ${WINDOW_MS / 1000} s; retry in ${reset} s (worker ${me})\n`)
    } else {
      res.writeHead(200, headers)
      res.end(`200 ${who}: request ${n} of ${LIMIT} in this window (worker ${me})\n`)
    }
  })

  /** What the map holds: keys of the current window, and of past ones not swept yet. */
  function stats(res) {
    const current = windowOf(Date.now())
    let currentKeys = 0
    let staleKeys = 0
    for (const key of hits.keys()) {
      const w = windowOfKey(key)
      if (w >= current) currentKeys++
      else if (w < current) staleKeys++
    }
    const body = { worker: me, window: current, currentKeys, staleKeys, sweptWindow: hits.get(SWEPT) ?? null }
    res.writeHead(200, { 'content-type': 'application/json', 'x-worker': me }).end(JSON.stringify(body) + '\n')
  }

  // Ctrl-C in a terminal reaches every process of the cluster; the primary leads the shutdown
  // (cluster.disconnect() closes this server, then the worker exits by itself).
  process.on('SIGINT', () => {})
  server.listen(PORT)
}
