'use strict'
// Helpers shared by the case primary, the workers and the mechanisms: a clock that every process
// of the machine shares, payloads with end markers, a window for promise-based senders, stats.

const v8 = require('node:v8')

/** Microseconds on CLOCK_MONOTONIC (uv_hrtime): comparable across the processes of one machine. */
const now = () => Number(process.hrtime.bigint()) / 1e3

/** Bytes of the small messages. */
const SMALL = 64
/** Bytes of the bulk messages. */
const BULK = 1 << 20

// ---- payloads ----------------------------------------------------------------------------------
//
// Every payload kind has data messages and one end marker that the receiver can tell apart
// cheaply; the marker carries the number of data messages that preceded it, so the receiver
// checks that nothing was lost. Buffer messages also carry a sequence number (first 4 bytes), so
// reordering, loss and duplication are caught message by message.
//   buffer: data = Buffer of `size` bytes (size >= 64), marker = Buffer of 8 bytes
//   string: data = string of 64 ASCII characters, marker = 'END:<count>'
//   value:  data = { seq, ts, name } (v8.serialize: 65 bytes), marker = { end: count }
//   object: data = a new { k: 's', s: seq, d: <40 characters> } per message (62 bytes as JSON;
//           what most users send), marker = { end: count }; `s` is checked like a sequence number

const VALUE = Object.freeze({ seq: 12345, ts: 1700000000.123, name: 'abcdefghijklmnopqrstuvwxyz0123' })
const STRING = 'x'.repeat(SMALL - 8) + '01234567'
const OBJECT_TEXT = 'abcdefghijklmnopqrstuvwxyz0123456789ABCD' // 40 characters
const MARKER_LEN = 8

/** A source of data messages of one kind. `next()` returns the next message. */
function source(kind, size) {
  if (kind === 'string') {
    if (size !== SMALL) throw new Error('string payloads are 64 bytes')
    return { next: () => STRING, marker: (count) => `END:${count}`, size: SMALL }
  }
  if (kind === 'value') {
    if (size !== SMALL) throw new Error('value payloads are ~64 bytes')
    return { next: () => VALUE, marker: (count) => ({ end: count }), size: v8.serialize(VALUE).length }
  }
  if (kind === 'object') {
    if (size !== SMALL) throw new Error('object payloads are ~64 bytes')
    let seq = 0
    return { next: () => ({ k: 's', s: seq++, d: OBJECT_TEXT }), marker: (count) => ({ end: count }), size: JSON.stringify({ k: 's', s: 0, d: OBJECT_TEXT }).length }
  }
  if (kind !== 'buffer') throw new Error(`unknown payload kind ${kind}`)
  // A pool of buffers in rotation: mechanisms that keep a reference until the bytes are written
  // (sockets, ioredis) never see a buffer change under them while it is in flight (windows are
  // far smaller than the pool).
  const POOL = 64
  const pool = []
  for (let i = 0; i < POOL; i++) {
    const b = Buffer.allocUnsafe(size)
    for (let j = 0; j < size; j += 4096) b[j] = j & 0xff
    b.fill(0x5a, 4, Math.min(size, 64))
    pool.push(b)
  }
  let seq = 0
  return {
    next() {
      const b = pool[seq % POOL]
      b.writeUInt32LE(seq >>> 0, 0)
      seq++
      return b
    },
    marker(count) {
      const b = Buffer.alloc(MARKER_LEN)
      b.writeUInt32LE(0xeeeeeeee, 0)
      b.writeUInt32LE(count >>> 0, 4)
      return b
    },
    size,
  }
}

/**
 * A receiver of one kind: `take(data)` returns -1 for a data message, or the count carried by
 * the end marker. It counts messages and bytes and records the first error (bad sequence or
 * size) in `error`.
 */
function sink(kind, size) {
  const s = { count: 0, bytes: 0, error: null, take: null }
  if (kind === 'string') {
    s.take = (d) => {
      if (d.length === SMALL) return s.count++, -1
      if (typeof d === 'string' && d.startsWith('END:')) return Number(d.slice(4))
      s.error ??= `unexpected string of length ${d.length}`
      return -1
    }
  } else if (kind === 'value') {
    s.take = (d) => {
      if (d.end === undefined) return s.count++, -1
      return d.end
    }
  } else if (kind === 'object') {
    s.take = (d) => {
      if (d.end !== undefined) return d.end
      if (d.s !== s.count || d.d !== OBJECT_TEXT) s.error ??= `message ${s.count} is ${JSON.stringify(d)}`
      s.count++
      return -1
    }
  } else {
    s.take = (d) => {
      const len = d.length
      if (len === MARKER_LEN) return d.readUInt32LE(4)
      if (len !== size) s.error ??= `message ${s.count} has ${len} bytes, expected ${size}`
      else if (d.readUInt32LE(0) !== s.count >>> 0) s.error ??= `message ${s.count} carries sequence ${d.readUInt32LE(0)}`
      s.count++
      s.bytes += len
      return -1
    }
  }
  return s
}

// ---- flow control ------------------------------------------------------------------------------

/**
 * At most `size` promises in flight: `track(p)` returns true while there is room, else a promise
 * that resolves once the window is half empty (the sender awaits it before sending more).
 */
class Window {
  constructor(size) {
    this.size = size
    this.inflight = 0
    this.waiter = null
    this.error = null
    this.done = () => {
      this.inflight--
      if (this.waiter !== null && this.inflight <= this.size >> 1) {
        const w = this.waiter
        this.waiter = null
        w()
      }
    }
    this.fail = (err) => {
      this.error ??= err
      this.done()
    }
  }
  track(p) {
    this.inflight++
    p.then(this.done, this.fail)
    if (this.inflight < this.size) return true
    return new Promise((resolve) => (this.waiter = resolve))
  }
  /** Resolves when nothing is in flight. */
  async drain() {
    while (this.inflight > 0) {
      const half = this.size
      this.size = 1 // wake when empty
      await new Promise((resolve) => (this.waiter = resolve))
      this.size = half
    }
    if (this.error) throw this.error
  }
}

// ---- statistics --------------------------------------------------------------------------------

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

function summarize(samples) {
  const s = Float64Array.from(samples).sort()
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1)
  return {
    n: s.length,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    min: s[0],
    max: s[s.length - 1],
    mean,
  }
}

/** Sum of process.cpuUsage()-like objects (µs). */
function cpuDelta(before, after) {
  return after.user - before.user + (after.system - before.system)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Rejects after `ms` with `what` in the message; the timer does not keep the loop alive. */
function withTimeout(promise, ms, what) {
  let timer
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
    timer.unref?.()
  })
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
}

module.exports = { now, SMALL, BULK, source, sink, Window, summarize, cpuDelta, sleep, withTimeout, percentile }
