'use strict'
// A direct Unix-domain socket between each pair of workers, with length-prefixed frames
// (u32 LE length, then the payload): what an expert writes by hand with the net module.
//
// Each worker listens on <dir>/<rank>.sock and connects once to every other worker; it sends on
// the connections it opened and receives on the ones it accepted.
// Sending: small frames are copied into a 64 KiB staging buffer that is written when full or on
// the next tick (one write system call for many messages); a large payload is written as its
// header plus the caller's Buffer (no copy in JS). socket.write() returning false means
// backpressure: the sender awaits 'drain'.
// Receiving: frames are parsed in place (subarray of the chunk, no copy); a frame split across
// chunks is assembled with one Buffer.concat.

const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const CHUNK = 64 * 1024

function primary() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cshm-bench-sock-'))
  return {
    serialization: 'json',
    env: { BENCH_SOCK_DIR: dir },
    close: async () => fs.rmSync(dir, { recursive: true, force: true }),
  }
}

class FrameWriter {
  constructor(socket) {
    this.socket = socket
    this.buf = Buffer.allocUnsafe(CHUNK)
    this.len = 0
    this.scheduled = false
    this.flushTick = () => {
      this.scheduled = false
      this.flush()
    }
    this.waiters = []
    socket.on('drain', () => {
      for (const w of this.waiters.splice(0)) w(true)
    })
  }
  /** true, or a promise to await (backpressure). */
  write(data) {
    const n = data.length
    let ok = true
    if (n + 4 > CHUNK - this.len) ok = this.flush()
    if (n + 4 > CHUNK) {
      const h = Buffer.allocUnsafe(4)
      h.writeUInt32LE(n, 0)
      this.socket.cork()
      this.socket.write(h)
      ok = this.socket.write(data)
      this.socket.uncork()
    } else {
      this.buf.writeUInt32LE(n, this.len)
      data.copy(this.buf, this.len + 4)
      this.len += n + 4
      if (!this.scheduled) {
        this.scheduled = true
        process.nextTick(this.flushTick)
      }
    }
    return ok && !this.socket.writableNeedDrain ? true : this.drained()
  }
  flush() {
    if (this.len === 0) return true
    const out = this.buf.subarray(0, this.len)
    this.buf = Buffer.allocUnsafe(CHUNK)
    this.len = 0
    return this.socket.write(out)
  }
  drained() {
    if (!this.socket.writableNeedDrain) return Promise.resolve(true)
    return new Promise((resolve) => this.waiters.push(resolve))
  }
}

/** Parses frames out of a socket's chunks and calls `onFrame(buffer)` for each. */
function frameReader(onFrame) {
  let parts = [] // chunks of an incomplete frame
  let have = 0
  let need = 0 // bytes of the incomplete frame, header included (0: header not complete yet)
  return (chunk) => {
    if (have > 0) {
      parts.push(chunk)
      have += chunk.length
      if (need === 0 && have >= 4) {
        const head = parts.length === 1 ? parts[0] : Buffer.concat(parts)
        parts = [head]
        need = 4 + head.readUInt32LE(0)
      }
      if (need === 0 || have < need) return
      const whole = parts.length === 1 ? parts[0] : Buffer.concat(parts, have)
      onFrame(whole.subarray(4, need))
      chunk = whole.subarray(need)
      parts = []
      have = 0
      need = 0
    }
    let off = 0
    const len = chunk.length
    while (len - off >= 4) {
      const n = chunk.readUInt32LE(off)
      if (len - off - 4 < n) break
      onFrame(chunk.subarray(off + 4, off + 4 + n))
      off += 4 + n
    }
    if (off < len) {
      const rest = chunk.subarray(off)
      parts = [rest]
      have = rest.length
      need = have >= 4 ? 4 + rest.readUInt32LE(0) : 0
    }
  }
}

async function open({ rank }) {
  const dir = process.env.BENCH_SOCK_DIR
  const writers = new Map()
  const accepted = new Set()
  let handler = null
  let waiting = null // request id -> resolve (requester side)
  let nextId = 1
  const onFrame = (frame) => handler(frame)
  const server = net.createServer((socket) => {
    accepted.add(socket)
    socket.on('data', frameReader(onFrame))
    socket.on('error', () => {})
    socket.on('close', () => accepted.delete(socket))
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(path.join(dir, `${rank}.sock`), resolve)
  })
  return {
    kind: 'buffer',
    async link(peers) {
      await Promise.all(
        peers.map(
          (p) =>
            new Promise((resolve, reject) => {
              const s = net.connect(path.join(dir, `${p}.sock`), () => {
                writers.set(p, new FrameWriter(s))
                resolve()
              })
              s.once('error', reject)
            }),
        ),
      )
    },
    listen(fn) {
      handler = fn
    },
    send(to, data) {
      return writers.get(to).write(data)
    },
    broadcast(targets, data) {
      let wait = null
      for (let i = 0; i < targets.length; i++) {
        const r = writers.get(targets[i]).write(data)
        if (r !== true) (wait ??= []).push(r)
      }
      return wait === null ? true : Promise.all(wait)
    },
    // Topics: no broker; the publisher knows the subscribers and writes only to their sockets.
    async subscribe() {},
    publish(_topic, data, subscribers) {
      return this.broadcast(subscribers, data)
    },
    // Request/response: frames whose payload is [u8 1 = request | 2 = answer][u8 from][u32 LE id]
    // then the data; the answer goes back on the responder's own connection to the requester.
    respond(fn) {
      handler = (frame) => {
        if (frame[0] !== 1) throw new Error(`expected a request frame, got type ${frame[0]}`)
        const answer = fn(frame.subarray(6))
        const out = Buffer.allocUnsafe(6 + answer.length)
        out[0] = 2
        out[1] = rank
        out.writeUInt32LE(frame.readUInt32LE(2), 2)
        answer.copy(out, 6)
        const r = writers.get(frame[1]).write(out)
        if (r !== true) r.then(null, () => {})
      }
    },
    request(to, data) {
      if (waiting === null) {
        waiting = new Map()
        handler = (frame) => {
          const id = frame.readUInt32LE(2)
          const w = waiting.get(id)
          if (frame[0] !== 2 || w === undefined) throw new Error(`unexpected frame type ${frame[0]} id ${id}`)
          waiting.delete(id)
          w(frame.subarray(6))
        }
      }
      const id = nextId++
      const out = Buffer.allocUnsafe(6 + data.length)
      out[0] = 1
      out[1] = rank
      out.writeUInt32LE(id, 2)
      data.copy(out, 6)
      return new Promise((resolve) => {
        waiting.set(id, resolve)
        const r = writers.get(to).write(out)
        if (r !== true) r.then(null, () => {})
      })
    },
    async drain() {
      for (const w of writers.values()) w.flush()
      await Promise.all([...writers.values()].map((w) => w.drained()))
    },
    async close() {
      for (const w of writers.values()) w.socket.end()
      for (const s of accepted) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

module.exports = { id: 'unix-socket', primary, open, frameReader }
