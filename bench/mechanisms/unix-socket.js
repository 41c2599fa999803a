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
// Variants (payload): 'buffer' (raw frames, the default), 'string' (the string written straight
// into the staging buffer, `toString` on receipt) and 'object' (JSON.stringify written straight
// into the staging buffer, JSON.parse of the frame on receipt): what a user who sends JS
// objects over a socket by hand does.

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
  /**
   * Writes one frame: `data` (a Buffer or a string), after a 6-byte request header
   * [type][from][id u32 LE] when `type` is not 0. Returns true, or a promise to await
   * (backpressure).
   */
  write(data, type = 0, from = 0, id = 0) {
    const head = type === 0 ? 0 : 6
    const str = typeof data === 'string'
    const most = head + (str ? data.length * 3 : data.length) // worst case for a string
    let ok = true
    if (most + 4 > CHUNK - this.len) ok = this.flush()
    if (most + 4 > CHUNK) {
      const body = str ? Buffer.from(data, 'utf8') : data
      const h = Buffer.allocUnsafe(4 + head)
      h.writeUInt32LE(head + body.length, 0)
      if (head !== 0) (h[4] = type), (h[5] = from), h.writeUInt32LE(id, 6)
      this.socket.cork()
      this.socket.write(h)
      ok = this.socket.write(body)
      this.socket.uncork()
    } else {
      const at = this.len + 4
      if (head !== 0) (this.buf[at] = type), (this.buf[at + 1] = from), this.buf.writeUInt32LE(id, at + 2)
      const n = str ? this.buf.write(data, at + head, 'utf8') : data.copy(this.buf, at + head)
      this.buf.writeUInt32LE(head + n, this.len)
      this.len = at + head + n
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

/** How a payload variant turns a received frame back into data. */
const DECODE = {
  buffer: (frame) => frame,
  string: (frame) => frame.toString('utf8'),
  object: (frame) => JSON.parse(frame.toString('utf8')),
}

async function open({ rank, variant }) {
  const dir = process.env.BENCH_SOCK_DIR
  const payload = variant.payload ?? 'buffer'
  const decode = DECODE[payload]
  const encode = payload === 'object' ? JSON.stringify : (d) => d
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
    kind: payload,
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
      handler = payload === 'buffer' ? fn : (frame) => fn(decode(frame))
    },
    send(to, data) {
      return writers.get(to).write(encode(data))
    },
    broadcast(targets, data) {
      const d = encode(data) // once for every receiver
      let wait = null
      for (let i = 0; i < targets.length; i++) {
        const r = writers.get(targets[i]).write(d)
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
        const answer = fn(decode(frame.subarray(6)))
        const r = writers.get(frame[1]).write(encode(answer), 2, rank, frame.readUInt32LE(2))
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
          w(decode(frame.subarray(6)))
        }
      }
      const id = nextId++
      return new Promise((resolve) => {
        waiting.set(id, resolve)
        const r = writers.get(to).write(encode(data), 1, rank, id)
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
