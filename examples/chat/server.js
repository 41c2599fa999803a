'use strict'
// A chat server on a Node.js cluster: every worker runs its own WebSocket server on the SAME
// port (the cluster module shares it), so the clients of one chat room end up spread over all
// workers. A message typed on worker 2 must still reach everybody: worker 2 hands it to its own
// clients and broadcasts it through cluster-shm; every other worker receives it straight from
// shared memory and hands it to its clients. The primary does not relay anything.
//
//   npm run chat                        (or: node examples/chat/server.js)
//   WORKERS=4 PORT=8080 npm run chat    (defaults: one worker per CPU, port 3000)

const cluster = require('node:cluster')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { WebSocketServer, WebSocket } = require('ws')
const { masterInit, workerInit } = require('../..')

const WORKERS = Number(process.env.WORKERS) || os.availableParallelism()
const PORT = Number(process.env.PORT ?? 3000) // 0: any free port

if (cluster.isPrimary) primary()
else worker()

// ------------------------------------------------------------------------------------------------
// The primary: creates the bus, forks the workers, replaces the ones that die, stops on Ctrl-C.

function primary() {
  const bus = masterInit({ workers: WORKERS }) // before forking: the workers attach to it

  // broadcast() reaches every attached process, the primary included. The primary has no
  // clients, but it must read its messages all the same (an unread ring fills up, and then
  // broadcasts wait for room). It makes a fine chat log.
  bus.subscribe(({ from, data }) => console.log(`[worker ${from}] ${data.user}: ${data.text}`))

  for (let i = 0; i < WORKERS; i++) cluster.fork()

  let listening = 0
  cluster.on('listening', (worker, { port }) => {
    if (++listening !== WORKERS) return
    console.log(`chat: ${WORKERS} workers share http://localhost:${port} (one WebSocket server each, linked by cluster-shm)`)
    console.log(`  try it: open http://localhost:${port} in two browser tabs`)
    console.log(`      or: npx wscat -c ws://localhost:${port}   (in two terminals)`)
    console.log('  Ctrl-C stops the server')
  })

  // A worker that dies is replaced; the replacement takes over its index on the bus.
  let stopping = false
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    console.log(`worker (pid ${worker.process.pid}) died (${signal ?? code}), starting another one`)
    cluster.fork()
  })

  // Ctrl-C / kill. With a signal handler of our own, closing the bus is our job: bus.close()
  // removes the shared-memory segment and tells every worker ('shutdown' event), which then
  // closes its connections and exits. The primary exits once the workers are gone.
  function stop() {
    if (stopping) return
    stopping = true
    console.log('chat: stopping')
    bus.close()
    const straggle = setTimeout(() => {
      for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL')
    }, 3000)
    straggle.unref()
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

// ------------------------------------------------------------------------------------------------
// A worker: an HTTP server for the page, a WebSocket server for the chat, and the bus.

function worker() {
  const bus = workerInit() // attach to the primary's segment; bus.index is this worker's address
  const me = bus.index

  const page = fs.readFileSync(path.join(__dirname, 'public', 'index.html'))
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/' || req.url === '/index.html')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page)
    } else {
      res.writeHead(404).end()
    }
  })
  const wss = new WebSocketServer({ server })

  /** Sends a chat message to this worker's clients (except its author). */
  function deliver(msg, author) {
    const json = JSON.stringify(msg)
    for (const client of wss.clients) {
      if (client !== author && client.readyState === WebSocket.OPEN) client.send(json)
    }
  }

  let connections = 0
  wss.on('connection', (ws, req) => {
    const name = new URL(req.url, 'http://localhost').searchParams.get('name')
    const user = name?.slice(0, 32) || `guest-${me}.${++connections}`
    ws.send(JSON.stringify({ type: 'welcome', user, worker: me }))

    ws.on('message', (data) => {
      const msg = { type: 'chat', user, worker: me, text: data.toString().slice(0, 2000) }
      deliver(msg, ws) // this worker's clients
      // Every other worker (and the primary): a structured message, no JSON round trip needed.
      bus.broadcast(msg).catch((err) => console.error(`worker ${me}: broadcast failed: ${err.message}`))
    })
  })

  // Messages typed by the clients of the other workers.
  bus.subscribe(({ data }) => deliver(data))

  // The primary closed the bus: it is shutting down, and so are we.
  bus.on('shutdown', () => {
    bus.close()
    for (const client of wss.clients) client.close(1001, 'server shutting down')
    server.close(() => process.exit(0)) // once every connection is closed...
    setTimeout(() => process.exit(0), 1000).unref() // ...or after 1 s at most
  })
  // Ctrl-C in a terminal reaches every process of the cluster; the primary leads the shutdown.
  process.on('SIGINT', () => {})

  server.listen(PORT)
}
