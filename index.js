'use strict'
// The public entry of cluster-shm: the platform binary (loaded by the generated ./binding.js)
// plus the ergonomic layer: payload encoding, EventEmitter delivery, cluster integration and
// stable error codes. Everything that touches shared memory is in Rust (src/).

const cluster = require('node:cluster')
const os = require('node:os')
const v8 = require('node:v8')
const fs = require('node:fs')
const { EventEmitter } = require('node:events')
const native = require('./binding.js')

/** Address of the primary process. */
const PRIMARY = -1
/** Environment variable through which forked workers find their cluster's segment. */
const SEGMENT_ENV = 'CLUSTER_SHM_SEGMENT'

// Frame kinds (src/core/layout.rs `kind`) and batch events (src/core/inbox.rs `event`).
const BYTES = 1
const UTF8 = 2
const VALUE = 3
// Envelopes for a process (not a mailbox) start with the receiver's generation (u16 LE): a
// successor at the same index drops what was meant for its predecessor.
const TOPIC = 5 // [generation u16][kind u8][topic length u8][topic][data]
const REQUEST = 6 // [generation u16][kind u8][0 u8][id u32][method length u16][0 u16][method][data]
const RESPONSE = 7 // [generation u16][kind u8][status u8: 0 ok, 1 error][id u32][data]
const PEER_UP = 16
const PEER_DOWN = 17
const LOST = 18
const CORRUPT = 19
const CLOSED = 20
const RECORD_HEADER = 8
const RECORD_LARGE = 1 // record flag: the payload is the batch's next large buffer

const MAX_WORKERS = 256
const RING_BUDGET = 64 << 20

class ClusterShmError extends Error {
  constructor(code, message) {
    super(message)
    this.name = 'ClusterShmError'
    this.code = code
  }
}
// Errors thrown by the addon itself are ClusterShmErrors too.
native.registerErrorClass(ClusterShmError)

const fail = (code, message) => {
  throw new ClusterShmError(code, message)
}

const RESOLVED = Promise.resolve()

// Small writes are staged in JS and flushed in one native call (see Bus#stage).
const STAGED_MAX = 1024 // largest payload staged, in bytes
const STAGE_BYTES = 64 * 1024
/** Ring bytes a single-frame message of `len` payload bytes takes (src/core/layout.rs frame_size). */
const ringBytes = (len) => (16 + len + 15) & ~15

/** The error a request handler threw, carried back to the requester. */
class RemoteError extends Error {
  constructor(message, code, from) {
    super(message)
    this.name = 'RemoteError'
    this.code = code
    this.from = from
  }
}

/** `a.b.c` -> `a.b.c`, `a.b.*`, `a.*`, `*`: the subscriptions that match a published topic. */
function* topicPatterns(topic) {
  yield topic
  for (let i = topic.lastIndexOf('.'); i >= 0; i = topic.lastIndexOf('.', i - 1)) yield `${topic.slice(0, i + 1)}*`
  yield '*'
}

function bytesOf(payload) {
  return typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
}

function requestEnvelope(generation, id, kind, method, payload) {
  const m = Buffer.from(method, 'utf8')
  const head = Buffer.alloc(12)
  head.writeUInt16LE(generation, 0)
  head[2] = kind
  head.writeUInt32LE(id, 4)
  head.writeUInt16LE(m.length, 8)
  return Buffer.concat([head, m, bytesOf(payload)])
}

function responseEnvelope(generation, id, kind, status, payload) {
  const head = Buffer.alloc(8)
  head.writeUInt16LE(generation, 0)
  head[2] = kind
  head[3] = status
  head.writeUInt32LE(id, 4)
  return Buffer.concat([head, bytesOf(payload)])
}

function checkRequestOptions(options) {
  const { timeout = 30000, signal, method = '' } = checkOptions(options, 'options')
  checkInt('timeout', timeout, 0, 2 ** 31 - 1)
  if (typeof method !== 'string' || Buffer.byteLength(method) > 65535) fail('ERR_INVALID_ARG', 'method must be a string of at most 65535 bytes')
  if (signal !== undefined && !(signal instanceof AbortSignal)) fail('ERR_INVALID_ARG', 'signal must be an AbortSignal')
  return { timeout, signal, method }
}

const HANDLES_REQUESTS = 1 // src/core/layout.rs

function isUint8(data) {
  return Buffer.isBuffer(data) || (data instanceof Uint8Array && data.constructor === Uint8Array)
}

/** Returns [kind, payload]: a string stays a string (written without a Buffer in between). */
function encode(data) {
  if (typeof data === 'string') return [UTF8, data]
  if (isUint8(data)) return [BYTES, data]
  try {
    return [VALUE, v8.serialize(data)]
  } catch (err) {
    return fail('ERR_UNSERIALIZABLE', `payload cannot be serialized: ${err.message}`)
  }
}

function decode(kind, batch, start, end) {
  if (kind === UTF8) return batch.toString('utf8', start, end)
  if (kind === BYTES) return batch.subarray(start, end)
  return v8.deserialize(batch.subarray(start, end))
}

function checkInt(name, value, min, max) {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    fail('ERR_INVALID_ARG', `${name} must be an integer, got ${typeof value === 'number' ? value : typeof value}`)
  }
  if (value < min || value > max) fail('ERR_INVALID_ARG', `${name} must be in ${min}..${max}, got ${value}`)
  return value
}

function checkOptions(options, name) {
  if (options === undefined) return {}
  if (options === null || typeof options !== 'object') fail('ERR_INVALID_ARG', `${name} must be an object`)
  return options
}

/** Rings per ordered pair of endpoints: a default that keeps the segment near 64 MiB. */
function defaultRingSize(workers) {
  const rings = (workers + 1) * workers
  let size = 1 << 20
  while (size > 64 << 10 && size * rings > RING_BUDGET) size >>= 1
  return size
}

/** Buses of this process with staged writes (see Bus#stage). */
const stagingBuses = new Set()

/** Buses of this process not closed yet: one 'exit' listener closes them all. */
const openBuses = new Set()

function closeAllAtExit() {
  for (const bus of [...openBuses]) {
    // If the process exits anyway (process.exit()), say what did not go out.
    const queued = bus.queued
    if (queued > 0) fs.writeSync(2, `cluster-shm: process exiting with ${queued} queued message(s) not sent (index ${bus.index})\n`)
    bus.close()
  }
}

class Bus extends EventEmitter {
  #native
  #primary // native index of the primary
  #self // native index of this process
  #closed = false
  #objects = new Map() // name -> Semaphore | Region | SharedMap opened through this bus
  #spin
  #delivering = false
  #queue = [] // plain messages waiting for read() or the next 'message' listener
  #topics = new Map() // topic or pattern -> Set of callbacks
  #handlers = new Map() // method ('' = respond()) -> handler
  #pending = new Map() // request id -> { to, settle }
  #generation // this attachment's generation (u16), checked on envelopes
  #nextRequest = 0
  #completions = new Map() // id of a queued send or acquire -> resolve(result)
  #staged = [] // per target: small writes waiting for one native call (see #stage)
  #stagedMax = STAGED_MAX // largest payload staged: at most one ring frame (tiny rings have smaller ones)
  #dirty = new Set() // targets with staged writes
  #queuedTo = [] // per target: send()s queued natively, which staged writes must not overtake
  #keepAlive = null // a ref'd handle while anything is pending: awaited work keeps the process alive
  #polled = null // [records, ...large payloads] being handed out by read()
  #polledAt = 0 // next record in #polled[0] (or in the batch being dispatched)
  #largeAt = 1 // next large payload
  #cleanup = []

  constructor(nativeBus, spinMicros) {
    super()
    this.#native = nativeBus
    this.#primary = nativeBus.endpoints - 1
    this.#self = nativeBus.index
    this.#generation = nativeBus.generation
    this.#spin = spinMicros
    this.#stagedMax = Math.min(STAGED_MAX, nativeBus.ringSize / 4 - 16) // Geometry::max_frame_payload
    nativeBus.setCompletionHandler((id, result) => {
      const resolve = this.#completions.get(id)
      this.#completions.delete(id)
      if (this.#completions.size === 0 && this.#keepAlive !== null) {
        clearInterval(this.#keepAlive)
        this.#keepAlive = null
      }
      resolve?.(result)
    })
    if (openBuses.size === 0) process.on('exit', closeAllAtExit)
    openBuses.add(this)
    this.#cleanup.push(() => {
      openBuses.delete(this)
      if (openBuses.size === 0) process.off('exit', closeAllAtExit)
    })
    // Delivery runs while anything needs incoming records: 'message' listeners, topic
    // callbacks, request handlers, pending requests.
    this.on('newListener', (event) => {
      if (event !== 'message') return
      this.#update(1)
      if (this.#queue.length > 0) setImmediate(() => this.#drainQueue())
    })
    this.on('removeListener', (event) => {
      if (event === 'message') this.#update()
    })
  }

  /** This process's address: a worker index, or PRIMARY. */
  get index() {
    return this.#toPublic(this.#self)
  }
  /** Number of worker indices (0..workers-1). */
  get workers() {
    return this.#primary
  }
  /** Name of the shared-memory segment (what workers attach to). */
  get name() {
    return this.#native.name
  }
  get ringSize() {
    return this.#native.ringSize
  }
  /** Largest payload write() takes in bytes; send() takes anything up to 4 GiB - 1. */
  get maxWrite() {
    return this.#native.maxWrite
  }
  get closed() {
    return this.#closed
  }
  /** Messages of this process still waiting for room in a receiver's ring. */
  /**
   * How incoming messages reach this process now: 'event-loop' (its event loop is woken
   * directly; Linux), 'thread' (a delivery thread hands them over), or null (nothing subscribed).
   */
  get delivery() {
    return this.#closed ? null : this.#native.delivery
  }
  get queued() {
    return this.#native.queued
  }

  /** The result reported for a queued send or acquire `id`. */
  #completion(id) {
    // Like any pending I/O in Node, a queued send or acquire keeps the process alive until it
    // settles (the completion callback itself is weak); close() settles them all.
    this.#keepAlive ??= setInterval(() => {}, 2 ** 31 - 1)
    return new Promise((resolve) => this.#completions.set(id, resolve))
  }

  #toPublic(i) {
    return i === this.#primary ? PRIMARY : i
  }

  /** Validates an address; returns the native index, or -2 for this process itself. */
  #target(to) {
    if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
    if (typeof to !== 'number' || !Number.isInteger(to)) fail('ERR_INVALID_ARG', `address must be an integer worker index or PRIMARY, got ${typeof to === 'number' ? to : typeof to}`)
    if (to !== PRIMARY && (to < 0 || to >= this.#primary)) fail('ERR_INDEX_OUT_OF_RANGE', `address ${to} is out of range: workers are 0..${this.#primary - 1}, or PRIMARY`)
    const n = to === PRIMARY ? this.#primary : to
    return n === this.#self ? -2 : n
  }

  /**
   * Writes one message now, or nothing: returns false when the receiver's ring is full (or this
   * process still has send()s queued to it). Never blocks.
   */
  write(to, data) {
    const t = this.#target(to)
    const [kind, payload] = encode(data)
    if (t === -2) return this.#loop(kind, payload), true
    const len = typeof payload === 'string' ? (payload.length <= this.#stagedMax / 3 ? -1 : Buffer.byteLength(payload)) : payload.length
    if (len <= this.#stagedMax) return this.#stage(t, kind, payload, len)
    this.#flush(t)
    return kind === UTF8 ? this.#native.writeString(t, payload) : this.#native.write(t, kind, payload)
  }

  /**
   * Small writes are staged here and written to the ring by one native call per microtask (or
   * when the credit runs out): the N-API boundary, not the ring, is what a small write costs.
   * `credit` is ring space that surely takes them (see Outbox::credit), so a staged write is a
   * promise the ring keeps: it returns true only when the message will fit.
   * `len` is the payload's byte length, or -1 for a string short enough to skip measuring.
   */
  #stage(t, kind, payload, len) {
    let st = this.#staged[t]
    if (st === undefined) st = this.#staged[t] = { buf: Buffer.allocUnsafe(STAGE_BYTES), used: 0, count: 0, credit: 0, scheduled: false }
    if (this.#queuedTo[t] > 0) return false // queued send()s to t go first
    let bytes = len >= 0 ? len : this.#stagedMax // worst case for a short string, exact below
    if (st.credit < ringBytes(bytes) || st.used + 8 + bytes > STAGE_BYTES) {
      this.#flush(t)
      st.credit = this.#native.credit(t)
      if (st.credit < ringBytes(bytes)) {
        // Little room left: the ring decides exactly, so false still means "full".
        return kind === UTF8 ? this.#native.writeString(t, payload) : this.#native.write(t, kind, payload)
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
      stagingBuses.add(this)
      queueMicrotask(() => this.#flush(t))
    }
    return true
  }

  /**
   * Writes staged small messages into the rings now. write() stages them until the end of the
   * current microtask checkpoint; call flush() before spinning or blocking synchronously
   * (read() flushes by itself).
   */
  flush() {
    for (const t of this.#dirty) this.#flush(t)
  }

  /** Writes what is staged for `t` (before anything else goes to `t`, to keep FIFO). */
  #flush(t) {
    const st = this.#staged[t]
    if (st === undefined) return
    st.scheduled = false
    this.#dirty.delete(t)
    if (this.#dirty.size === 0) stagingBuses.delete(this)
    if (st.used === 0 || this.#closed) return
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
      if (i >= accepted) this.#send(t, records[at], Buffer.from(records.subarray(at + 8, at + 8 + len)), undefined, false).catch(() => {})
      at += 8 + len
    }
  }

  /**
   * Sends one message of any size: resolves once it is in the receiver's ring, waiting for room
   * as long as needed (or `timeout` ms: rejects with ERR_TIMEOUT if not a byte was written).
   */
  send(to, data, options) {
    try {
      const { timeout } = checkOptions(options, 'options')
      if (timeout !== undefined) checkInt('timeout', timeout, 0, 2 ** 31 - 1)
      const t = this.#target(to)
      const [kind, payload] = encode(data)
      if (t === -2) return this.#loop(kind, payload), RESOLVED
      return this.#send(t, kind, payload, timeout, false)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Writes now if the ring has room, else queues on the sender thread. `bound`: for the process
   * holding `t` now (broadcast, publish, requests), rejected with ERR_PEER_GONE if it leaves.
   */
  #send(t, kind, payload, timeout, bound) {
    this.#flush(t)
    const max = this.#native.maxWrite
    if (typeof payload === 'string') {
      // Short strings go straight from the JS string into the ring.
      if (payload.length * 3 <= max && this.#native.writeString(t, payload)) return RESOLVED
      payload = Buffer.from(payload, 'utf8')
      if (payload.length <= max && payload.length > max / 3 && this.#native.write(t, kind, payload)) return RESOLVED
    } else if (payload.length <= max && this.#native.write(t, kind, payload)) {
      return RESOLVED
    }
    const id = this.#native.sendQueued(t, kind, payload, timeout, bound)
    this.#queuedTo[t] = (this.#queuedTo[t] ?? 0) + 1
    const staged = this.#staged[t]
    if (staged !== undefined) staged.credit = 0 // nothing staged may overtake it
    return this.#completion(id).then((code) => {
      this.#queuedTo[t]--
      if (code) fail(code, code === 'ERR_TIMEOUT' ? `no room in the ring to ${this.#toPublic(t)} within ${timeout} ms` : `send to ${this.#toPublic(t)} failed: ${code}`)
    })
  }

  /**
   * Sends to each of `targets`; resolves with how many processes got it (those that left do not
   * count). With `generations`, `payload` is an envelope whose first two bytes get each target's.
   */
  #fanOut(targets, kind, payload, timeout, generations) {
    if (typeof payload === 'string' && targets.length > 1) payload = Buffer.from(payload, 'utf8') // encode once
    let n = targets.length
    const pending = []
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]
      if (generations !== undefined) payload.writeUInt16LE(generations[i], 0) // the write copies it right away
      const p = this.#send(t, kind, payload, timeout, true)
      if (p !== RESOLVED) pending.push(p.catch((err) => { if (err.code === 'ERR_PEER_GONE') n--; else throw err }))
    }
    return pending.length === 0 ? Promise.resolve(n) : Promise.all(pending).then(() => n)
  }

  /**
   * Sends one message to every other attached process. Resolves with the number of receivers
   * once it is in every ring.
   */
  broadcast(data, options) {
    try {
      const { timeout } = checkOptions(options, 'options')
      if (timeout !== undefined) checkInt('timeout', timeout, 0, 2 ** 31 - 1)
      if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
      const [kind, payload] = encode(data)
      return this.#fanOut(this.#native.attached().filter((i) => i !== this.#self), kind, payload, timeout)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Addresses of the other processes attached now (PRIMARY included when attached). */
  peers() {
    const me = this.#self
    return this.#native.attached().filter((i) => i !== me).map((i) => this.#toPublic(i))
  }

  /** Pulls the next message ({ from, data }) or null. Not while 'message' listeners exist. */
  read() {
    if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
    if (this.listenerCount('message') > 0) fail('ERR_SUBSCRIBED', 'read() cannot be used while a subscription delivers messages')
    // A poller may never yield to the microtasks that flush staged writes, its own or those of
    // other buses of this process: flush them here.
    for (const bus of stagingBuses) bus.flush()
    if (this.#queue.length > 0) return this.#queue.shift()
    if (this.#delivering) return null // topics or requests keep delivery running: plain messages arrive in #queue
    for (;;) {
      if (this.#polled === null || this.#polledAt >= this.#polled[0].length) {
        // One record per poll: the next poll commits exactly what was handed out.
        this.#polled = this.#native.poll(1)
        this.#polledAt = 0
        this.#largeAt = 1
        if (this.#polled === null) return this.#queue.length > 0 ? this.#queue.shift() : null
      }
      this.#handle(this.#polled)
      if (this.#queue.length > 0) return this.#queue.shift()
    }
  }

  /**
   * subscribe(callback): every plain message, as `callback({ from, data })`.
   * subscribe(topic, callback): messages published to `topic` (a trailing `*` matches every
   * topic with that prefix), as `callback({ from, topic, data })`; visible to publishers on return.
   * Returns a handle with unsubscribe().
   */
  subscribe(topic, callback) {
    if (typeof topic === 'function' && callback === undefined) {
      if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
      const cb = topic
      this.on('message', cb)
      return { unsubscribe: () => void this.off('message', cb) }
    }
    if (typeof topic !== 'string') fail('ERR_INVALID_ARG', 'topic must be a string')
    if (typeof callback !== 'function') fail('ERR_INVALID_ARG', 'callback must be a function')
    if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
    let set = this.#topics.get(topic)
    if (set === undefined) {
      this.#native.topicSubscribe(topic)
      set = new Set()
      this.#topics.set(topic, set)
    }
    const entry = { callback } // one entry per subscribe() call, so the same callback can be added twice
    set.add(entry)
    this.#update()
    let active = true
    return {
      unsubscribe: () => {
        if (!active) return
        active = false
        set.delete(entry)
        if (set.size === 0 && this.#topics.get(topic) === set) {
          this.#topics.delete(topic)
          if (!this.#closed) this.#native.topicUnsubscribe(topic)
        }
        this.#update()
      },
    }
  }

  /**
   * Delivers `data` to every process subscribed to `topic` (this one included), and to no other.
   * Resolves with the number of processes it reached.
   */
  publish(topic, data, options) {
    try {
      const { timeout } = checkOptions(options, 'options')
      if (timeout !== undefined) checkInt('timeout', timeout, 0, 2 ** 31 - 1)
      if (typeof topic !== 'string') fail('ERR_INVALID_ARG', 'topic must be a string')
      if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
      const pairs = this.#native.topicTargets(topic) // [index, generation, ...]
      const [kind, payload] = encode(data)
      const topicBytes = Buffer.from(topic, 'utf8')
      const head = Buffer.alloc(4)
      head[2] = kind
      head[3] = topicBytes.length
      const envelope = Buffer.concat([head, topicBytes, bytesOf(payload)])
      const targets = []
      const generations = []
      let self = false
      for (let i = 0; i < pairs.length; i += 2) {
        if (pairs[i] === this.#self) self = true
        else targets.push(pairs[i]), generations.push(pairs[i + 1])
      }
      if (self) {
        const mine = Buffer.from(envelope)
        mine.writeUInt16LE(this.#generation, 0)
        this.#later(() => this.#handleTopic(this.#self, mine, 0, mine.length))
      }
      return this.#fanOut(targets, TOPIC, envelope, timeout, generations).then((n) => n + (self ? 1 : 0))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Sends `data` to `to` and resolves with the answer of its handler (respond() or
   * handle(method)). Rejects with the handler's error (its message and code), or with
   * ERR_NOT_ATTACHED, ERR_PEER_GONE (it left before answering), ERR_TIMEOUT (default 30 s),
   * ERR_ABORTED. Nothing is left behind after any outcome.
   */
  request(to, data, options) {
    try {
      const { timeout, signal, method } = checkRequestOptions(options)
      const t = this.#target(to)
      const [kind, payload] = encode(data)
      if (signal?.aborted) fail('ERR_ABORTED', 'the request was aborted')
      let generation = this.#generation
      if (t !== -2) {
        const holder = this.#native.holderInfo(t) // [generation, flags] or null
        if (holder === null) fail('ERR_NOT_ATTACHED', `no process is attached at ${to}`)
        if ((holder[1] & HANDLES_REQUESTS) === 0) throw new RemoteError(`no handler for requests at ${to}`, 'ERR_NO_HANDLER', to)
        generation = holder[0]
      }
      const id = (this.#nextRequest = (this.#nextRequest + 1) >>> 0)
      return new Promise((resolve, reject) => {
        let timer
        const onAbort = () => settle(new ClusterShmError('ERR_ABORTED', 'the request was aborted'))
        const settle = (err, value) => {
          if (!this.#pending.delete(id)) return
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          this.#update()
          if (err) reject(err)
          else resolve(value)
        }
        this.#pending.set(id, { to: t, settle })
        timer = setTimeout(() => settle(new ClusterShmError('ERR_TIMEOUT', `no answer from ${to} within ${timeout} ms`)), timeout)
        signal?.addEventListener('abort', onAbort, { once: true })
        this.#update()
        const envelope = requestEnvelope(generation, id, kind, method, payload)
        if (t === -2) return this.#later(() => this.#handleRequest(this.#self, envelope, 0, envelope.length))
        this.#send(t, REQUEST, envelope, undefined, true).then(undefined, (err) => settle(err))
      })
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Asks every other attached process; never rejects for a process that fails: resolves with
   * `{ answers: [{ from, data }], failures: [{ from, code, message }] }`.
   */
  requestAll(data, options) {
    try {
      checkRequestOptions(options)
      if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
      const targets = this.peers()
      const results = targets.map((to) =>
        this.request(to, data, options).then(
          (value) => ({ from: to, data: value }),
          (err) => ({ from: to, code: err.code ?? 'ERR_REMOTE', message: err.message, failed: true }),
        ),
      )
      return Promise.all(results).then((all) => ({
        answers: all.filter((r) => !r.failed),
        failures: all.filter((r) => r.failed).map(({ failed, ...r }) => r),
      }))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Answers requests without a method: `handler(data, { from })` returns the answer (or a promise of it). */
  respond(handler) {
    return this.handle('', handler)
  }

  /** Answers requests sent with `{ method }`. Returns a handle with unsubscribe(). */
  handle(method, handler) {
    if (typeof method !== 'string') fail('ERR_INVALID_ARG', 'method must be a string')
    if (typeof handler !== 'function') fail('ERR_INVALID_ARG', 'handler must be a function')
    if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
    this.#handlers.set(method, handler)
    this.#native.setHandlesRequests(true) // requesters check this before they send
    this.#update()
    return {
      unsubscribe: () => {
        if (this.#handlers.get(method) === handler) this.#handlers.delete(method)
        if (this.#handlers.size === 0 && !this.#closed) this.#native.setHandlesRequests(false)
        this.#update()
      },
    }
  }

  #update(extraListeners = 0) {
    const want = !this.#closed && (this.listenerCount('message') + extraListeners > 0 || this.#topics.size > 0 || this.#handlers.size > 0 || this.#pending.size > 0)
    if (want && !this.#delivering) {
      this.#delivering = true
      const rest = this.#polled // what read() had polled but not handed out yet, first
      this.#polled = null
      if (rest !== null) this.#dispatch(rest, this.#polledAt, this.#largeAt)
      this.#native.start((buffers) => this.#dispatch(buffers, 0, 1), this.#spin)
    } else if (!want && this.#delivering) {
      this.#delivering = false
      this.#native.stop()
    }
  }

  /** Handles every record of a batch. Listener errors are rethrown after it, so the batch is acknowledged. */
  #dispatch(buffers, at, largeAt) {
    if (this.#closed) return // left in the ring for the next holder of this index: not committed
    let error = null
    this.#polledAt = at
    this.#largeAt = largeAt
    while (this.#polledAt < buffers[0].length) {
      try {
        this.#handle(buffers)
      } catch (err) {
        error ??= err
      }
    }
    if (error !== null) process.nextTick(() => { throw error })
  }

  /**
   * Handles the record at #polledAt of `buffers` = [records, ...large payloads]: a record flagged
   * RECORD_LARGE has its payload in the next large buffer (handed over by Rust without a copy).
   */
  #handle(buffers) {
    const records = buffers[0]
    const at = this.#polledAt
    // The header by hand: readUInt16LE/readUInt32LE cost a call and bounds checks per message.
    const from = records[at] | (records[at + 1] << 8)
    const kind = records[at + 2]
    const len = (records[at + 4] | (records[at + 5] << 8) | (records[at + 6] << 16)) + records[at + 7] * 0x1000000
    this.#polledAt = at + RECORD_HEADER + len
    let batch = records
    let start = at + RECORD_HEADER
    if ((records[at + 3] & RECORD_LARGE) !== 0) {
      batch = buffers[this.#largeAt++]
      start = 0
    }
    const end = batch === records ? start + len : batch.length
    if (kind <= VALUE) this.#message({ from: this.#toPublic(from), data: decode(kind, batch, start, end) })
    else if (kind === TOPIC) this.#handleTopic(from, batch, start, end)
    else if (kind === REQUEST) this.#handleRequest(from, batch, start, end)
    else if (kind === RESPONSE) this.#handleResponse(from, batch, start, end)
    else this.#event(kind, from, len === 4 ? batch.readUInt32LE(start) : 0)
  }

  #message(msg) {
    if (this.#queue.length === 0 && this.listenerCount('message') > 0) this.emit('message', msg)
    else this.#queue.push(msg)
  }

  #drainQueue() {
    while (this.#queue.length > 0 && this.listenerCount('message') > 0) this.emit('message', this.#queue.shift())
  }

  #event(kind, from, value) {
    const address = this.#toPublic(from)
    if (kind === PEER_UP) this.emit('attach', address)
    else if (kind === PEER_DOWN) {
      for (const [, p] of this.#pending) if (p.to === from) p.settle(new ClusterShmError('ERR_PEER_GONE', `${address} left before answering`))
      this.emit('detach', address)
    } else if (kind === LOST) this.emit('lost', { from: address, count: value, reason: 'incomplete' })
    else if (kind === CORRUPT) this.emit('lost', { from: address, bytes: value, reason: 'corrupt' })
    else if (kind === CLOSED) this.emit('shutdown', { reason: value === 1 ? 'primary-died' : 'closed' })
  }

  #handleTopic(from, b, start, end) {
    if (b.readUInt16LE(start) !== this.#generation) return // meant for this index's previous holder
    const kind = b[start + 2]
    const topicEnd = start + 4 + b[start + 3]
    const topic = b.toString('utf8', start + 4, topicEnd)
    const callbacks = []
    for (const name of topicPatterns(topic)) {
      const set = this.#topics.get(name)
      if (set !== undefined) callbacks.push(...set)
    }
    if (callbacks.length === 0) return // unsubscribed while it was in flight
    const msg = { from: this.#toPublic(from), topic, data: decode(kind, b, topicEnd, end) }
    let error = null
    for (const { callback } of callbacks) {
      try {
        callback(msg)
      } catch (err) {
        error ??= err
      }
    }
    if (error !== null) throw error
  }

  #handleRequest(from, b, start, end) {
    if (b.readUInt16LE(start) !== this.#generation) return // meant for this index's previous holder
    const kind = b[start + 2]
    const id = b.readUInt32LE(start + 4)
    const methodEnd = start + 12 + b.readUInt16LE(start + 8)
    const method = b.toString('utf8', start + 12, methodEnd)
    // The requester's generation, so the answer cannot reach a successor of it.
    const back = from === this.#self ? this.#generation : this.#native.holderInfo(from)?.[0]
    if (back === undefined) return // the requester left
    const handler = this.#handlers.get(method) ?? (method === '' ? undefined : this.#handlers.get('*'))
    const reply = (status, value) => {
      if (this.#closed) return
      let envelope
      try {
        const [k, payload] = encode(value)
        envelope = responseEnvelope(back, id, k, status, payload)
      } catch (err) {
        envelope = responseEnvelope(back, id, VALUE, 1, v8.serialize({ message: `answer cannot be serialized: ${err.message}`, code: 'ERR_UNSERIALIZABLE' }))
      }
      if (from === this.#self) return this.#later(() => this.#handleResponse(from, envelope, 0, envelope.length))
      this.#send(from, RESPONSE, envelope, undefined, true).catch(() => {}) // the requester left: nobody to tell
    }
    if (handler === undefined) return reply(1, { message: `no handler for ${method === '' ? 'requests' : `method "${method}"`} at ${this.index}`, code: 'ERR_NO_HANDLER' })
    let data
    try {
      data = decode(kind, b, methodEnd, end)
    } catch (err) {
      return reply(1, { message: err.message, code: 'ERR_UNSERIALIZABLE' })
    }
    Promise.resolve()
      .then(() => handler(data, { from: this.#toPublic(from), method }))
      .then(
        (value) => reply(0, value),
        (err) => reply(1, { message: String(err?.message ?? err), code: err?.code ?? 'ERR_REMOTE', name: err?.name }),
      )
  }

  #handleResponse(from, b, start, end) {
    if (b.readUInt16LE(start) !== this.#generation) return // meant for this index's previous holder
    const id = b.readUInt32LE(start + 4)
    const pending = this.#pending.get(id)
    if (pending === undefined || pending.to !== from && !(from === this.#self && pending.to === -2)) return // late: timed out or aborted
    let value
    try {
      value = decode(b[start + 2], b, start + 8, end)
    } catch (err) {
      return pending.settle(new ClusterShmError('ERR_UNSERIALIZABLE', `answer cannot be decoded: ${err.message}`))
    }
    if (b[start + 3] === 0) return pending.settle(null, value)
    const err = new RemoteError(value?.message ?? 'remote handler failed', value?.code ?? 'ERR_REMOTE', this.#toPublic(from))
    pending.settle(err)
  }

  #later(fn) {
    setImmediate(() => {
      if (!this.#closed) fn()
    })
  }

  #loop(kind, payload) {
    const data = kind === BYTES ? Buffer.from(payload) : kind === VALUE ? v8.deserialize(payload) : payload
    this.#later(() => this.#message({ from: this.index, data }))
  }

  #object(name, kind, open) {
    if (this.#closed) fail('ERR_CLOSED', 'the bus is closed')
    if (typeof name !== 'string' || name.length === 0) fail('ERR_INVALID_ARG', 'name must be a non-empty string')
    const key = `${kind}:${name}`
    let obj = this.#objects.get(key)
    if (obj === undefined) {
      obj = open()
      this.#objects.set(key, obj)
    }
    return obj
  }

  /**
   * The named cross-process semaphore (created on first use with `permits`, default 1). A
   * permit held by a process that dies returns within about 100 ms (sooner through the
   * primary's cluster 'exit'), and the next holder sees `recovered === true`.
   */
  semaphore(name, options) {
    const { permits = 1 } = checkOptions(options, 'options')
    checkInt('permits', permits, 1, 4096)
    const sem = this.#object(name, 'semaphore', () => new Semaphore(this.#native.semaphore(name, permits), name, (id) => this.#completion(id)))
    if (sem.permits !== permits) fail('ERR_MISMATCH', `semaphore "${name}" exists with ${sem.permits} permits`)
    return sem
  }

  /** Runs `fn(permit)` holding the named mutex; releases it when fn settles (also on throw). */
  async lock(name, fn, options) {
    if (typeof fn !== 'function') fail('ERR_INVALID_ARG', 'fn must be a function')
    const permit = await this.semaphore(name, { permits: 1 }).acquire(options)
    try {
      return await fn(permit)
    } finally {
      permit.release()
    }
  }

  /** The named region of `size` shared bytes (created zeroed on first use). */
  region(name, size) {
    checkInt('size', size, 1, Number.MAX_SAFE_INTEGER)
    const region = this.#object(name, 'region', () => new Region(this.#native.region(name, size)))
    if (region.size !== size) fail('ERR_MISMATCH', `region "${name}" exists with ${region.size} bytes`)
    return region
  }

  /** The named shared map (created on first use). */
  map(name, options) {
    const { capacity = 1024, maxKeyBytes = 64, maxValueBytes = 256 } = checkOptions(options, 'options')
    checkInt('capacity', capacity, 1, 1 << 24)
    checkInt('maxKeyBytes', maxKeyBytes, 1, 1024)
    checkInt('maxValueBytes', maxValueBytes, 8, 1 << 20)
    const map = this.#object(name, 'map', () => new SharedMap(this.#native.map(name, capacity, maxKeyBytes, maxValueBytes), { capacity, maxKeyBytes, maxValueBytes }))
    if (map.capacity !== capacity || map.maxKeyBytes !== maxKeyBytes || map.maxValueBytes !== maxValueBytes) fail('ERR_MISMATCH', `map "${name}" exists with other parameters`)
    return map
  }

  /**
   * Detaches this process. Queued send()s reject with ERR_CLOSED; messages not yet delivered
   * stay in the rings for the next holder of this index. The primary's close() also removes
   * the segment and tells every worker ('shutdown'). Idempotent.
   */
  close() {
    if (this.#closed) return
    this.flush() // what write() accepted goes out
    this.#closed = true
    this.#delivering = false
    this.#native.close()
    for (const [, p] of this.#pending) p.settle(new ClusterShmError('ERR_CLOSED', 'the bus was closed'))
    for (const undo of this.#cleanup.splice(0)) undo()
    this.emit('close')
  }
}

class Permit {
  #semaphore
  #released = false
  constructor(semaphore, recovered) {
    this.#semaphore = semaphore
    /** True when the previous holder died (or detached) holding this permit. */
    this.recovered = recovered
  }
  /** Gives the permit back. Idempotent. */
  release() {
    if (this.#released) return
    this.#released = true
    this.#semaphore.release()
  }
}

class Semaphore {
  #native
  #completion
  #queued = 0 // acquires of this process waiting on the native waiter thread
  constructor(nativeSemaphore, name, completion) {
    this.#native = nativeSemaphore
    this.#completion = completion
    this.name = name
    /** Whether the permit taken by the last successful tryAcquire() was recovered. */
    this.recovered = false
  }
  get permits() {
    return this.#native.permits
  }
  /** Permits free now. */
  get available() {
    return this.#native.available
  }
  /** Permits this process holds. */
  get held() {
    return this.#native.held
  }

  /** Takes a permit now if one is free (and no acquire() of this process is waiting). */
  tryAcquire() {
    if (this.#queued > 0) return false
    const r = this.#native.tryAcquire()
    if (r === null) return false
    this.recovered = r === 'recovered'
    return true
  }

  /**
   * Resolves with a Permit once one is free. Rejects with ERR_TIMEOUT after `timeout` ms, or
   * ERR_ABORTED when `signal` aborts; either way no permit stays taken.
   */
  acquire(options) {
    try {
      const { timeout, signal } = checkOptions(options, 'options')
      if (timeout !== undefined) checkInt('timeout', timeout, 0, 2 ** 31 - 1)
      if (signal !== undefined && !(signal instanceof AbortSignal)) fail('ERR_INVALID_ARG', 'signal must be an AbortSignal')
      if (signal?.aborted) fail('ERR_ABORTED', 'the acquire was aborted')
      if (this.#queued === 0) {
        const r = this.#native.tryAcquire()
        if (r !== null) return Promise.resolve(new Permit(this, r === 'recovered'))
      }
      const id = this.#native.acquire(timeout)
      const pending = this.#completion(id)
      this.#queued++
      const onAbort = () => this.#native.cancel(id)
      signal?.addEventListener('abort', onAbort, { once: true })
      return pending.then((code) => {
        this.#queued--
        signal?.removeEventListener('abort', onAbort)
        if (code === 'clean' || code === 'recovered') {
          if (!signal?.aborted) return new Permit(this, code === 'recovered')
          this.#native.release() // granted as the abort arrived: give it back
          code = 'ERR_ABORTED'
        }
        const why = { ERR_TIMEOUT: `no permit of "${this.name}" within ${timeout} ms`, ERR_ABORTED: 'the acquire was aborted', ERR_CLOSED: 'the bus was closed' }
        return fail(code, why[code] ?? code)
      })
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Gives back one permit held by this process. */
  release() {
    if (!this.#native.release()) fail('ERR_NOT_HELD', `this process holds no permit of "${this.name}"`)
  }
}

function checkOffset(name, value) {
  return checkInt(name, value, 0, Number.MAX_SAFE_INTEGER)
}

class Region {
  #native
  constructor(nativeRegion) {
    this.#native = nativeRegion
    this.size = nativeRegion.size
  }
  /** Copies `bytes` (Buffer/Uint8Array) into the region at `offset`. */
  write(offset, bytes) {
    checkOffset('offset', offset)
    if (!(bytes instanceof Uint8Array)) fail('ERR_INVALID_ARG', 'bytes must be a Buffer or Uint8Array')
    this.#native.write(offset, bytes)
  }
  /** Copies `length` bytes from `offset` into a new Buffer. */
  read(offset, length) {
    checkOffset('offset', offset)
    checkOffset('length', length)
    return this.#native.read(offset, length)
  }
}

const F64 = 4

/** [kind, ...bytes] of a map value: numbers are stored as float64 so increment() applies. */
function encodeValue(value) {
  if (typeof value === 'number') {
    const b = Buffer.allocUnsafe(9)
    b[0] = F64
    b.writeDoubleLE(value, 1)
    return b
  }
  const [kind, payload] = encode(value)
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
  const b = Buffer.allocUnsafe(bytes.length + 1)
  b[0] = kind
  b.set(bytes, 1)
  return b
}

function decodeValue(b) {
  if (b === null) return undefined
  if (b[0] === F64) return b.readDoubleLE(1)
  return decode(b[0], b, 1, b.length)
}

function checkKey(key) {
  if (typeof key !== 'string') fail('ERR_INVALID_ARG', 'map keys must be strings')
  return key
}

class SharedMap {
  #native
  constructor(nativeMap, { capacity, maxKeyBytes, maxValueBytes }) {
    this.#native = nativeMap
    this.capacity = capacity
    this.maxKeyBytes = maxKeyBytes
    this.maxValueBytes = maxValueBytes
  }
  /** Keys held now. */
  get size() {
    return this.#native.size
  }
  get(key) {
    return decodeValue(this.#native.get(checkKey(key)))
  }
  has(key) {
    return this.#native.has(checkKey(key))
  }
  set(key, value) {
    const v = encodeValue(value)
    this.#native.set(checkKey(key), v[0], v.subarray(1))
    return this
  }
  delete(key) {
    return this.#native.delete(checkKey(key))
  }
  /** Atomically adds `by` (default 1) to the number at `key` (absent counts as 0); returns the new value. */
  increment(key, by = 1) {
    if (typeof by !== 'number' || Number.isNaN(by)) fail('ERR_INVALID_ARG', 'by must be a number')
    return this.#native.increment(checkKey(key), by)
  }
  /**
   * Atomically sets `key` to `value` if its current value equals `expected` (same type and
   * bytes; `undefined` = absent). `value` undefined deletes. Returns whether it changed.
   */
  compareAndSet(key, expected, value) {
    const e = expected === undefined ? null : encodeValue(expected)
    const v = value === undefined ? null : encodeValue(value)
    return this.#native.compareAndSet(checkKey(key), e, v)
  }
  keys() {
    return this.#native.keys()
  }
}

/** Creates this cluster's segment; call in the primary before forking. */
function masterInit(options) {
  options = checkOptions(options, 'options')
  const workers = checkInt('workers', options.workers ?? os.availableParallelism(), 1, MAX_WORKERS)
  const ringSize = options.ringSize ?? defaultRingSize(workers)
  checkInt('ringSize', ringSize, 4096, 1 << 30)
  if ((ringSize & (ringSize - 1)) !== 0) fail('ERR_INVALID_ARG', `ringSize must be a power of two, got ${ringSize}`)
  const heapSize = checkInt('heapSize', options.heapSize ?? 4 << 20, 0, 2 ** 34)
  if (heapSize % 4096 !== 0) fail('ERR_INVALID_ARG', `heapSize must be a multiple of 4096, got ${heapSize}`)
  const spin = checkInt('spinMicros', options.spinMicros ?? 0, 0, 1e6)
  const handle = native.createCluster(workers, ringSize, heapSize)
  const bus = new Bus(handle, spin)
  process.env[SEGMENT_ENV] = bus.name
  if (cluster.isPrimary) {
    // A worker that died (crash, kill, exit) gives its index back so a replacement can take it.
    const onExit = (worker) => {
      if (!bus.closed && worker.process.pid) handle.processExited(worker.process.pid)
    }
    cluster.on('exit', onExit)
    bus.once('close', () => cluster.off('exit', onExit))
  }
  cleanUpOnSignals(bus)
  return bus
}

/**
 * Ctrl-C or `kill` of the primary would skip 'exit' handlers and leave the segment in
 * /dev/shm. When nobody else handles the signal, remove the segments of every primary bus of
 * this process and die by the same signal. One handler per signal serves them all, so that
 * several buses do not take each other's handlers for the application's.
 */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP']
const primaryBuses = new Set()

function onSignal(signal) {
  if (process.listenerCount(signal) > 1) return // the application handles it (and exits)
  for (const bus of [...primaryBuses]) bus.close()
  process.kill(process.pid, signal)
}

function cleanUpOnSignals(bus) {
  if (primaryBuses.size === 0) for (const signal of SIGNALS) process.on(signal, onSignal)
  primaryBuses.add(bus)
  bus.once('close', () => {
    primaryBuses.delete(bus)
    if (primaryBuses.size === 0) for (const signal of SIGNALS) process.off(signal, onSignal)
  })
}

/** Attaches this process (a cluster worker, or any process given `name`) to the segment. */
function workerInit(options) {
  options = checkOptions(options, 'options')
  const name = options.name ?? process.env[SEGMENT_ENV]
  if (name === undefined || name === '') fail('ERR_NO_SEGMENT', `no segment name: call workerInit() in a worker forked after masterInit(), or pass { name }`)
  if (typeof name !== 'string') fail('ERR_INVALID_ARG', 'name must be a string')
  const index = options.index === undefined ? -1 : checkInt('index', options.index, 0, MAX_WORKERS - 1)
  const spin = checkInt('spinMicros', options.spinMicros ?? 0, 0, 1e6)
  return new Bus(native.attachCluster(name, index), spin)
}

module.exports = { masterInit, workerInit, PRIMARY, SEGMENT_ENV, ClusterShmError, RemoteError, Bus, Semaphore, Permit, Region, SharedMap }
