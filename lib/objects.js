'use strict'
// The named shared objects of a cluster: Semaphore (with its Permit), Region and SharedMap with
// the codec of its values, and the per-bus registry that opens each name once.

const { fail } = require('./errors.js')
const { checkInt, checkOptions, checkSignal, checkBytes } = require('./options.js')
const { encode, decode } = require('./codec.js')

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
      checkSignal(signal)
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
    this.#native.write(offset, checkBytes(bytes))
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
  #lockTimeout = 0
  constructor(nativeMap, { capacity, maxKeyBytes, maxValueBytes }) {
    this.#native = nativeMap
    this.capacity = capacity
    this.maxKeyBytes = maxKeyBytes
    this.maxValueBytes = maxValueBytes
  }
  /**
   * Milliseconds an operation of this process waits while another process holds the map's lock
   * (one that is stopped, or starved of CPU) before it throws ERR_LOCK_TIMEOUT, changing nothing.
   */
  get lockTimeout() {
    return this.#lockTimeout
  }
  set lockTimeout(ms) {
    checkInt('lockTimeout', ms, 0, 2 ** 31 - 1)
    this.#native.setLockTimeout(ms)
    this.#lockTimeout = ms
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

/** The objects a bus opened, by kind and name: each is opened once and checked on every use. */
class NamedObjects {
  #state
  #completion // (id) => promise of the result of a queued acquire (lib/outgoing.js completions)
  #objects = new Map() // name -> Semaphore | Region | SharedMap opened through this bus

  constructor(state, completion) {
    this.#state = state
    this.#completion = completion
  }

  #object(name, kind, open) {
    if (this.#state.closed) fail('ERR_CLOSED', 'the bus is closed')
    if (typeof name !== 'string' || name.length === 0) fail('ERR_INVALID_ARG', 'name must be a non-empty string')
    const key = `${kind}:${name}`
    let obj = this.#objects.get(key)
    if (obj === undefined) {
      obj = open()
      this.#objects.set(key, obj)
    }
    return obj
  }

  /** Bus#semaphore. */
  semaphore(name, options) {
    const { permits = 1 } = checkOptions(options, 'options')
    checkInt('permits', permits, 1, 4096)
    const sem = this.#object(name, 'semaphore', () => new Semaphore(this.#state.native.semaphore(name, permits), name, this.#completion))
    if (sem.permits !== permits) fail('ERR_MISMATCH', `semaphore "${name}" exists with ${sem.permits} permits`)
    return sem
  }

  /** Bus#lock. */
  async lock(name, fn, options) {
    if (typeof fn !== 'function') fail('ERR_INVALID_ARG', 'fn must be a function')
    const permit = await this.semaphore(name, { permits: 1 }).acquire(options)
    try {
      return await fn(permit)
    } finally {
      permit.release()
    }
  }

  /** Bus#region. */
  region(name, size) {
    checkInt('size', size, 1, Number.MAX_SAFE_INTEGER)
    const region = this.#object(name, 'region', () => new Region(this.#state.native.region(name, size)))
    if (region.size !== size) fail('ERR_MISMATCH', `region "${name}" exists with ${region.size} bytes`)
    return region
  }

  /** Bus#map. */
  map(name, options) {
    const { capacity = 1024, maxKeyBytes = 64, maxValueBytes = 256, lockTimeout = 10 } = checkOptions(options, 'options')
    checkInt('lockTimeout', lockTimeout, 0, 2 ** 31 - 1)
    checkInt('capacity', capacity, 1, 1 << 24)
    checkInt('maxKeyBytes', maxKeyBytes, 1, 1024)
    checkInt('maxValueBytes', maxValueBytes, 8, 1 << 20)
    const map = this.#object(name, 'map', () => new SharedMap(this.#state.native.map(name, capacity, maxKeyBytes, maxValueBytes), { capacity, maxKeyBytes, maxValueBytes }))
    if (map.capacity !== capacity || map.maxKeyBytes !== maxKeyBytes || map.maxValueBytes !== maxValueBytes) fail('ERR_MISMATCH', `map "${name}" exists with other parameters`)
    map.lockTimeout = lockTimeout // this process's own bound, not a parameter of the shared map
    return map
  }
}

module.exports = { Semaphore, Permit, Region, SharedMap, NamedObjects }
