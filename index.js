'use strict'
// The public entry of cluster-shm: the platform binary (loaded by the generated ./binding.js)
// plus the ergonomic layer: payload encoding, EventEmitter delivery, cluster integration and
// stable error codes. Everything that touches shared memory is in Rust (src/).

const cluster = require('node:cluster')
const os = require('node:os')
const v8 = require('node:v8')
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
const PEER_UP = 16
const PEER_DOWN = 17
const LOST = 18
const CORRUPT = 19
const CLOSED = 20
const RECORD_HEADER = 8

const MAX_WORKERS = 256
const RING_BUDGET = 64 << 20

class ClusterShmError extends Error {
  constructor(code, message) {
    super(message)
    this.name = 'ClusterShmError'
    this.code = code
  }
}

const fail = (code, message) => {
  throw new ClusterShmError(code, message)
}

const RESOLVED = Promise.resolve()

function isUint8(data) {
  return data instanceof Uint8Array && (data.constructor === Uint8Array || Buffer.isBuffer(data))
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

class Bus extends EventEmitter {
  #native
  #primary // native index of the primary
  #spin
  #delivering = false
  #loopback = [] // messages this process sent to itself
  #loopbackScheduled = false
  #polled = null // batch being handed out by read()
  #polledAt = 0
  #cleanup = []

  constructor(nativeBus, spinMicros) {
    super()
    this.#native = nativeBus
    this.#primary = nativeBus.endpoints - 1
    this.#spin = spinMicros
    const onExit = () => this.close()
    process.on('exit', onExit)
    this.#cleanup.push(() => process.off('exit', onExit))
    // Delivery runs while somebody listens for messages (subscribe() or on('message')).
    this.on('newListener', (event) => {
      if (event === 'message' && !this.#delivering && !this.closed) this.#startDelivery()
    })
    this.on('removeListener', (event) => {
      if (event === 'message' && this.listenerCount('message') === 0 && this.#delivering) {
        this.#delivering = false
        this.#native.stop()
      }
    })
  }

  /** This process's address: a worker index, or PRIMARY. */
  get index() {
    return this.#toPublic(this.#native.index)
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
    return this.#native.closed
  }
  /** Messages of this process still waiting for room in a receiver's ring. */
  get queued() {
    return this.#native.queued
  }

  #toPublic(i) {
    return i === this.#primary ? PRIMARY : i
  }

  /** Validates an address; returns the native index, or -2 for this process itself. */
  #target(to) {
    if (this.closed) fail('ERR_CLOSED', 'the bus is closed')
    if (typeof to !== 'number' || !Number.isInteger(to)) fail('ERR_INVALID_ARG', `address must be an integer worker index or PRIMARY, got ${typeof to === 'number' ? to : typeof to}`)
    if (to !== PRIMARY && (to < 0 || to >= this.#primary)) fail('ERR_INDEX_OUT_OF_RANGE', `address ${to} is out of range: workers are 0..${this.#primary - 1}, or PRIMARY`)
    const n = to === PRIMARY ? this.#primary : to
    return n === this.#native.index ? -2 : n
  }

  /**
   * Writes one message now, or nothing: returns false when the receiver's ring is full (or this
   * process still has send()s queued to it). Never blocks.
   */
  write(to, data) {
    const t = this.#target(to)
    const [kind, payload] = encode(data)
    if (t === -2) return this.#loop(kind, payload), true
    return kind === UTF8 ? this.#native.writeString(t, payload) : this.#native.write(t, kind, payload)
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
      return this.#send(t, kind, payload, timeout)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  #send(t, kind, payload, timeout) {
    if (t === -2) return this.#loop(kind, payload), RESOLVED
    const max = this.#native.maxWrite
    if (typeof payload === 'string') {
      // Short strings go straight from the JS string into the ring.
      if (payload.length * 3 <= max && this.#native.writeString(t, payload)) return RESOLVED
      payload = Buffer.from(payload, 'utf8')
      if (payload.length <= max && payload.length > max / 3 && this.#native.write(t, kind, payload)) return RESOLVED
    } else if (payload.length <= max && this.#native.write(t, kind, payload)) {
      return RESOLVED
    }
    return this.#native.sendQueued(t, kind, payload, timeout).then((code) => {
      if (code) fail(code, code === 'ERR_TIMEOUT' ? `no room in the ring to ${this.#toPublic(t)} within ${timeout} ms` : `send to ${this.#toPublic(t)} failed: ${code}`)
    })
  }

  /**
   * Sends one message to every other attached process. Resolves with the number of receivers
   * once it is in every ring.
   */
  broadcast(data, options) {
    try {
      const { timeout } = checkOptions(options, 'options')
      if (timeout !== undefined) checkInt('timeout', timeout, 0, 2 ** 31 - 1)
      if (this.closed) fail('ERR_CLOSED', 'the bus is closed')
      let [kind, payload] = encode(data)
      const me = this.#native.index
      const targets = this.#native.attached().filter((i) => i !== me)
      if (kind === UTF8 && targets.length > 1) payload = Buffer.from(payload, 'utf8') // encode once
      const pending = []
      for (const t of targets) {
        const p = this.#send(t, kind, payload, timeout)
        if (p !== RESOLVED) pending.push(p)
      }
      const n = targets.length
      return pending.length === 0 ? Promise.resolve(n) : Promise.all(pending).then(() => n)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Addresses of the other processes attached now (PRIMARY included when attached). */
  peers() {
    const me = this.#native.index
    return this.#native.attached().filter((i) => i !== me).map((i) => this.#toPublic(i))
  }

  /** Pulls the next message ({ from, data }) or null. Not while a subscription is active. */
  read() {
    if (this.closed) fail('ERR_CLOSED', 'the bus is closed')
    if (this.#delivering) fail('ERR_SUBSCRIBED', 'read() cannot be used while a subscription delivers messages')
    if (this.#loopback.length > 0) return this.#loopback.shift()
    for (;;) {
      if (this.#polled === null || this.#polledAt >= this.#polled.length) {
        this.#polled = this.#native.poll(256)
        this.#polledAt = 0
        if (this.#polled === null) return null
      }
      const msg = this.#record(this.#polled)
      if (msg !== null) return msg
    }
  }

  /** Parses the record at #polledAt; returns a message, or null after emitting an event. */
  #record(batch) {
    const at = this.#polledAt
    const from = batch.readUInt16LE(at)
    const kind = batch[at + 2]
    const len = batch.readUInt32LE(at + 4)
    const start = at + RECORD_HEADER
    this.#polledAt = start + len
    if (kind <= VALUE) return { from: this.#toPublic(from), data: decode(kind, batch, start, start + len) }
    this.#event(kind, this.#toPublic(from), len === 4 ? batch.readUInt32LE(start) : 0)
    return null
  }

  #event(kind, from, value) {
    if (kind === PEER_UP) this.emit('attach', from)
    else if (kind === PEER_DOWN) this.emit('detach', from)
    else if (kind === LOST) this.emit('lost', { from, count: value, reason: 'incomplete' })
    else if (kind === CORRUPT) this.emit('lost', { from, bytes: value, reason: 'corrupt' })
    else if (kind === CLOSED) this.emit('shutdown')
  }

  /** Calls `callback({ from, data })` for every message; returns a handle with unsubscribe(). */
  subscribe(callback) {
    if (typeof callback !== 'function') fail('ERR_INVALID_ARG', 'callback must be a function')
    if (this.closed) fail('ERR_CLOSED', 'the bus is closed')
    this.on('message', callback)
    return { unsubscribe: () => void this.off('message', callback) }
  }

  #startDelivery() {
    this.#delivering = true
    if (this.#polled !== null) {
      // Hand out what read() had polled before delivery takes over.
      const batch = this.#polled
      this.#polled = null
      queueMicrotask(() => this.#dispatch(batch, this.#polledAt))
    }
    this.#native.start((batch) => this.#dispatch(batch, 0), this.#spin)
    if (this.#loopback.length > 0) this.#scheduleLoopback()
  }

  /** Runs one batch. Listener errors are rethrown after the batch, so the batch is acknowledged. */
  #dispatch(batch, at) {
    let error = null
    this.#polledAt = at
    while (this.#polledAt < batch.length) {
      try {
        const msg = this.#record(batch)
        if (msg !== null) this.emit('message', msg)
      } catch (err) {
        error ??= err
      }
    }
    if (error !== null) process.nextTick(() => { throw error })
  }

  #loop(kind, payload) {
    const data = kind === BYTES ? Buffer.from(payload) : kind === VALUE ? v8.deserialize(payload) : payload
    this.#loopback.push({ from: this.index, data })
    if (this.#delivering) this.#scheduleLoopback()
  }

  #scheduleLoopback() {
    if (this.#loopbackScheduled) return
    this.#loopbackScheduled = true
    setImmediate(() => {
      this.#loopbackScheduled = false
      const msgs = this.#loopback.splice(0)
      for (const msg of msgs) this.emit('message', msg)
    })
  }

  /**
   * Detaches this process. Queued send()s reject with ERR_CLOSED; messages not yet delivered
   * stay in the rings for the next holder of this index. The primary's close() also removes
   * the segment and tells every worker ('shutdown'). Idempotent.
   */
  close() {
    if (this.closed) return
    this.#delivering = false
    this.#native.close()
    for (const undo of this.#cleanup.splice(0)) undo()
    this.emit('close')
  }
}

/** Creates this cluster's segment; call in the primary before forking. */
function masterInit(options) {
  options = checkOptions(options, 'options')
  const workers = checkInt('workers', options.workers ?? os.availableParallelism(), 1, MAX_WORKERS)
  const ringSize = options.ringSize ?? defaultRingSize(workers)
  checkInt('ringSize', ringSize, 4096, 1 << 30)
  if ((ringSize & (ringSize - 1)) !== 0) fail('ERR_INVALID_ARG', `ringSize must be a power of two, got ${ringSize}`)
  const spin = checkInt('spinMicros', options.spinMicros ?? 0, 0, 1e6)
  const handle = native.createCluster(workers, ringSize)
  const bus = new Bus(handle, spin)
  process.env[SEGMENT_ENV] = bus.name
  if (cluster.isPrimary) {
    // A worker that died (crash, kill, exit) gives its index back so a replacement can take it.
    const onExit = (worker) => {
      if (!bus.closed && worker.process.pid) handle.releasePid(worker.process.pid)
    }
    cluster.on('exit', onExit)
    bus.once('close', () => cluster.off('exit', onExit))
  }
  cleanUpOnSignals(bus)
  return bus
}

/**
 * Ctrl-C or `kill` of the primary would skip 'exit' handlers and leave the segment in
 * /dev/shm. When nobody else handles the signal, remove the segment and die by the same signal.
 */
function cleanUpOnSignals(bus) {
  const handlers = []
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    const handler = () => {
      if (process.listenerCount(signal) > 1) return // the application handles it (and exits)
      bus.close()
      process.kill(process.pid, signal)
    }
    process.on(signal, handler)
    handlers.push([signal, handler])
  }
  bus.once('close', () => {
    for (const [signal, handler] of handlers) process.off(signal, handler)
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

module.exports = { masterInit, workerInit, PRIMARY, SEGMENT_ENV, ClusterShmError, Bus }
