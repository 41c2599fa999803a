'use strict'
// The outgoing path of a bus: small writes staged in JS and flushed in one native call, the
// send queue (send()s waiting for room on the native sender thread, settled through
// completions), and the fan-out of one payload to several processes.

const { ClusterShmError, fail } = require('./errors.js')
const { checkTimeoutOption } = require('./options.js')
const { encode } = require('./codec.js')

const RESOLVED = Promise.resolve()

// Small writes are staged in JS and flushed in one native call (see Outgoing#write).
const STAGED_MAX = 1024 // largest payload staged, in bytes
const STAGE_BYTES = 64 * 1024
/** Ring bytes a single-frame message of `len` payload bytes takes (src/core/layout.rs frame_size). */
const ringBytes = (len) => (16 + len + 15) & ~15

/** The outgoing paths of this process (one per bus) with staged writes. */
const staging = new Set()

/** Writes what every bus of this process has staged. */
function flushStaged() {
  for (const outgoing of staging) outgoing.flush()
}

class Outgoing {
  #state
  #native
  #completions = new Map() // id of a queued send or acquire -> resolve(result)
  #staged = [] // per target: small writes waiting for one native call (see write())
  #stagedMax = STAGED_MAX // largest payload staged: at most one ring frame (tiny rings have smaller ones)
  #maxFrame = 0 // largest single-frame payload (Geometry::max_frame_payload)
  #dirty = new Set() // targets with staged writes
  #queuedTo = [] // per target: send()s queued natively, which staged writes must not overtake
  #maxWrite // the most one write() takes (Outbox::max_write)
  #keepAlive = null // a ref'd handle while anything is pending: awaited work keeps the process alive
  queuedBytes = 0 // payload bytes of the send()s queued natively
  maxQueuedBytes // past this, send() rejects at once with ERR_QUEUE_FULL

  constructor(state, maxQueuedBytes = Infinity) {
    this.maxQueuedBytes = maxQueuedBytes
    const nativeBus = state.native
    this.#state = state
    this.#native = nativeBus
    this.#maxFrame = nativeBus.ringSize / 4 - 16 // Geometry::max_frame_payload
    this.#stagedMax = Math.min(STAGED_MAX, this.#maxFrame)
    this.#maxWrite = nativeBus.maxWrite
    nativeBus.setCompletionHandler((id, result) => {
      const resolve = this.#completions.get(id)
      this.#completions.delete(id)
      if (this.#completions.size === 0 && this.#keepAlive !== null) {
        clearInterval(this.#keepAlive)
        this.#keepAlive = null
      }
      resolve?.(result)
    })
  }

  /** The result reported for a queued send or acquire `id`. */
  completion(id) {
    // Like any pending I/O in Node, a queued send or acquire keeps the process alive until it
    // settles (the completion callback itself is weak); close() settles them all.
    this.#keepAlive ??= setInterval(() => {}, 2 ** 31 - 1)
    return new Promise((resolve) => this.#completions.set(id, resolve))
  }

  /**
   * Bus#write to the other process at native index `t`. Small writes are staged here and written
   * to the ring by one native call per microtask (or when the credit runs out): the N-API
   * boundary, not the ring, is what a small write costs. `credit` is ring space that surely
   * takes them (see Outbox::credit), so a staged write is a promise the ring keeps: it returns
   * true only when the message will fit. (One method, not write() calling a #stage(): Bus#write
   * already adds a call in front of it.)
   */
  write(t, kind, payload) {
    // The payload's byte length, or -1 for a string short enough to skip measuring.
    const len = typeof payload === 'string' ? (payload.length <= this.#stagedMax / 3 ? -1 : Buffer.byteLength(payload)) : payload.length
    if (len > this.#stagedMax) {
      this.#flush(t)
      return this.#writeNow(t, kind, payload)
    }
    let st = this.#staged[t]
    if (st === undefined) st = this.#staged[t] = { buf: Buffer.allocUnsafe(STAGE_BYTES), used: 0, count: 0, credit: 0, scheduled: false }
    if (this.#queuedTo[t] > 0) return false // queued send()s to t go first
    let bytes = len >= 0 ? len : this.#stagedMax // worst case for a short string, exact below
    if (st.credit < ringBytes(bytes) || st.used + 8 + bytes > STAGE_BYTES) {
      this.#flush(t)
      st.credit = this.#native.credit(t)
      if (st.credit < ringBytes(bytes)) {
        // Little room left: the ring decides exactly, so false still means "full".
        return this.#writeNow(t, kind, payload)
      }
    }
    const at = st.used + 8
    if (typeof payload === 'string') bytes = st.buf.write(payload, at, 'utf8')
    else st.buf.set(payload, at)
    st.buf[st.used] = kind
    st.buf.writeUInt32LE(bytes, st.used + 4)
    st.used = at + bytes
    st.count++
    st.credit -= ringBytes(bytes)
    if (!st.scheduled) {
      st.scheduled = true
      this.#dirty.add(t)
      staging.add(this)
      queueMicrotask(() => this.#flush(t))
    }
    return true
  }

  /**
   * A write straight into the ring, past the staging: the credit kept for `t` no longer says
   * what surely fits (room() would trust it), so it is dropped; the next write asks again.
   */
  #writeNow(t, kind, payload) {
    const st = this.#staged[t]
    if (st !== undefined) st.credit = 0
    return typeof payload === 'string' ? this.#native.writeString(t, kind, payload) : this.#native.write(t, kind, payload)
  }

  /** Messages staged now and their payload bytes (for Bus#stats). */
  staged() {
    let messages = 0
    let bytes = 0
    for (const st of this.#staged) if (st !== undefined) (messages += st.count), (bytes += st.used - 8 * st.count)
    return { messages, bytes }
  }

  /** Bus#flush: writes every target's staged messages into the rings now. */
  flush() {
    for (const t of this.#dirty) this.#flush(t)
  }

  /** Writes what is staged for `t` (before anything else goes to `t`, to keep FIFO). */
  #flush(t) {
    const st = this.#staged[t]
    if (st === undefined) return
    st.scheduled = false
    this.#dirty.delete(t)
    if (this.#dirty.size === 0) staging.delete(this)
    if (st.used === 0 || this.#state.closed) return
    const records = st.buf.subarray(0, st.used)
    const count = st.count
    st.used = 0
    st.count = 0
    const [accepted, credit] = this.#native.writeStaged(t, records)
    st.credit = credit
    if (accepted === count) return
    // The credit makes a shortfall impossible unless the ring was found corrupt; queue the rest
    // rather than drop what write() accepted.
    let at = 0
    for (let i = 0; at < records.length; i++) {
      const len = records.readUInt32LE(at + 4)
      if (i >= accepted) this.send(t, records[at], Buffer.from(records.subarray(at + 8, at + 8 + len)), undefined, false, true).catch(() => {})
      at += 8 + len
    }
  }

  /**
   * Writes now if the ring has room, else queues on the sender thread. `bound`: for the process
   * holding `t` now (broadcast, publish, requests), rejected with ERR_PEER_GONE if it leaves.
   */
  send(t, kind, payload, timeout, bound, accepted = false) {
    this.#flush(t)
    const staged = this.#staged[t]
    if (staged !== undefined) staged.credit = 0 // the writes below bypass the staging's credit
    const max = this.#native.maxWrite
    if (typeof payload === 'string') {
      // Short strings go straight from the JS string into the ring.
      if (payload.length * 3 <= max && this.#native.writeString(t, kind, payload)) return RESOLVED
      payload = Buffer.from(payload, 'utf8')
      if (payload.length <= max && payload.length > max / 3 && this.#native.write(t, kind, payload)) return RESOLVED
    } else if (payload.length <= max && this.#native.write(t, kind, payload)) {
      return RESOLVED
    }
    // The high-water mark; one message is always taken, and so is what write() already accepted.
    const bytes = payload.length
    if (this.queuedBytes > 0 && this.queuedBytes + bytes > this.maxQueuedBytes && !accepted) {
      return Promise.reject(new ClusterShmError('ERR_QUEUE_FULL', `${this.queuedBytes} bytes of send()s are queued already (maxQueuedBytes ${this.maxQueuedBytes})`))
    }
    const id = this.#native.sendQueued(t, kind, payload, timeout, bound)
    this.queuedBytes += bytes
    this.#queuedTo[t] = (this.#queuedTo[t] ?? 0) + 1 // nothing staged may overtake it (write() and room() check)
    return this.completion(id).then((code) => {
      this.queuedBytes -= bytes
      this.#queuedTo[t]--
      if (code) fail(code, code === 'ERR_TIMEOUT' ? `no room in the ring to ${this.#state.toPublic(t)} within ${timeout} ms` : `send to ${this.#state.toPublic(t)} failed: ${code}`)
    })
  }

  /**
   * For the process holding `t` now (publish, requests, answers): stages the message like
   * write() when it surely fits (one native call per flush for many envelopes), else send()s it
   * bound to that process. Returns RESOLVED or the send's promise.
   */
  post(t, kind, payload, timeout) {
    // More than one write takes: write() would refuse it (ERR_PAYLOAD_TOO_LARGE); send() splits it.
    const long = typeof payload === 'string' ? payload.length * 3 > this.#maxWrite && Buffer.byteLength(payload) > this.#maxWrite : payload.length > this.#maxWrite
    if (long) return this.send(t, kind, payload, timeout, true)
    return this.write(t, kind, payload) ? RESOLVED : this.send(t, kind, payload, timeout, true)
  }

  /**
   * Whether a message of `bytes` to `t` surely fits now, so that write() takes it: lets a caller
   * with several targets write to all of them or to none. Only single-frame messages qualify.
   */
  room(t, bytes) {
    if (this.#queuedTo[t] > 0 || bytes > this.#maxFrame) return false
    const st = this.#staged[t]
    if (st !== undefined && st.credit >= ringBytes(bytes)) return true
    this.#flush(t)
    const credit = this.#native.credit(t)
    if (st !== undefined) st.credit = credit
    return credit >= ringBytes(bytes)
  }

  /**
   * Sends to each of `targets`; resolves with how many processes got it (those that left do not
   * count). With `generations`, `payload` is an envelope whose first two bytes get each target's.
   */
  fanOut(targets, kind, payload, timeout, generations) {
    if (typeof payload === 'string' && targets.length > 1) payload = Buffer.from(payload, 'utf8') // encode once
    let n = targets.length
    const pending = []
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]
      if (generations !== undefined) payload.writeUInt16LE(generations[i], 0) // the write copies it right away
      const p = this.post(t, kind, payload, timeout)
      if (p !== RESOLVED) pending.push(p.catch((err) => { if (err.code === 'ERR_PEER_GONE') n--; else throw err }))
    }
    return pending.length === 0 ? Promise.resolve(n) : Promise.all(pending).then(() => n)
  }

  /** Bus#broadcast. */
  broadcast(data, options) {
    try {
      const timeout = checkTimeoutOption(options)
      const state = this.#state
      if (state.closed) fail('ERR_CLOSED', 'the bus is closed')
      const [kind, payload] = encode(data)
      return this.fanOut(this.#native.attached().filter((i) => i !== state.self), kind, payload, timeout)
    } catch (err) {
      return Promise.reject(err)
    }
  }
}

module.exports = { RESOLVED, Outgoing, flushStaged }
