'use strict'
// A socket.io chat on a Node.js cluster: rooms, presence (who is in the room, whatever worker
// they are connected to) and typing indicators. Every worker runs socket.io on the SAME port
// (the cluster module shares it); cluster-shm's adapter carries room broadcasts and
// fetchSockets between the workers, straight through shared memory. The primary relays nothing.
//
//   node examples/socket.io-chat/server.js
//   WORKERS=4 PORT=8080 node examples/socket.io-chat/server.js  (defaults: one worker per CPU, port 3000; 0: any port)
//
// The page connects with the WebSocket transport only: a connection stays on the worker that
// accepted it, so no sticky sessions are needed (HTTP long-polling would need them).

const cluster = require('node:cluster')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { Server } = require('socket.io')
const { masterInit, workerInit } = require('../..')
const { createAdapter } = require('../../lib/socket.io.js') // in an application: require('cluster-shm/socket.io')

const WORKERS = Number(process.env.WORKERS) || os.availableParallelism()
const PORT = Number(process.env.PORT ?? 3000)

if (cluster.isPrimary) primary()
else worker()

function primary() {
  const bus = masterInit({ workers: WORKERS }) // all the primary does for socket.io
  for (let i = 0; i < WORKERS; i++) cluster.fork()
  let listening = 0
  cluster.on('listening', (w, { port }) => {
    if (++listening === WORKERS) console.log(`socket.io chat: ${WORKERS} workers share http://localhost:${port}`)
  })
  let stopping = false
  cluster.on('exit', () => stopping || cluster.fork()) // a worker that dies is replaced
  const stop = () => {
    if (stopping) return
    stopping = true
    cluster.disconnect(() => bus.close()) // closes the workers' servers; they exit, then so do we
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

function worker() {
  const bus = workerInit()
  const page = fs.readFileSync(path.join(__dirname, 'public', 'index.html'))
  const server = http.createServer((req, res) => {
    if (req.url === '/' || req.url.startsWith('/?')) res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'x-worker': bus.index }).end(page)
    else res.writeHead(404).end()
  })
  const io = new Server(server, { adapter: createAdapter(bus), transports: ['websocket'] })

  /** Who is in `room`, over every worker (fetchSockets asks the other workers' adapters). */
  async function presence(room) {
    const sockets = await io.in(room).fetchSockets()
    const users = sockets.map((s) => ({ name: s.data.name, worker: s.data.worker })).sort((a, b) => a.name.localeCompare(b.name))
    io.to(room).emit('presence', { room, users })
  }

  io.on('connection', (socket) => {
    socket.data = { name: null, room: null, worker: bus.index }
    socket.emit('welcome', { worker: bus.index })

    socket.on('join', async ({ name, room }, ack) => {
      if (typeof name !== 'string' || typeof room !== 'string' || !name.trim() || !room.trim()) return ack?.({ error: 'name and room are required' })
      const old = socket.data.room
      if (old) {
        socket.leave(old)
        socket.to(old).emit('system', `${socket.data.name} left`)
      }
      socket.data.name = name.trim().slice(0, 32)
      socket.data.room = room.trim().slice(0, 32)
      socket.join(socket.data.room)
      socket.to(socket.data.room).emit('system', `${socket.data.name} joined`)
      ack?.({ ok: true, worker: bus.index })
      if (old) await presence(old)
      await presence(socket.data.room)
    })

    socket.on('message', (text) => {
      const { name, room } = socket.data
      if (!room || typeof text !== 'string' || !text) return
      io.to(room).emit('message', { name, text: text.slice(0, 1000), worker: bus.index, at: Date.now() })
    })

    socket.on('typing', (typing) => {
      const { name, room } = socket.data
      if (room) socket.to(room).emit('typing', { name, typing: Boolean(typing) })
    })

    socket.on('disconnect', () => {
      const { name, room } = socket.data
      if (!room) return
      socket.to(room).emit('typing', { name, typing: false })
      socket.to(room).emit('system', `${name} left`)
      presence(room).catch(() => {}) // the other workers may be stopping too
    })
  })

  // cluster.disconnect() closes the listening server; io.close() also ends the open connections.
  process.on('disconnect', () => io.close())
  process.on('SIGINT', () => {}) // Ctrl-C reaches every process: the primary leads the shutdown
  server.listen(PORT)
}
