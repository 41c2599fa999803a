'use strict'
// `require('cluster-shm/express-rate-limit')`: a Store for express-rate-limit whose counts live
// in a SharedMap of the cluster, so a limit holds across every worker with no Redis and no IPC.
//
// One map entry per client: 16 bytes, the hit count and the end of its window (two float64).
// Every change is a compareAndSet of the whole entry, retried when another worker changed it
// first: so the window reset is atomic (two workers crossing the window's end never both start a
// fresh window; the loser sees the new window and counts in it). Expired entries are swept (on
// a timer, and at once when the map is full) with compareAndSet too, so a late hit is never lost.
// The timer's sweeps go through every key, so they run in one process at a time: the holder of
// the lock `<name>.sweep` (a permit of a process that died holding it comes back, see README).
// express-rate-limit is not required here: the store only implements its interface.

const { ClusterShmError, fail } = require('./errors.js')
const { checkInt, checkOptions } = require('./options.js')
const { Bus } = require('./bus.js')
const { MAX_NAME_BYTES } = require('../binding.js')

const ENTRY_BYTES = 16
const SWEEP_SUFFIX = '.sweep' // the sweep lock is named <name>.sweep

const encodeEntry = (hits, resetTime) => {
  const b = Buffer.allocUnsafe(ENTRY_BYTES)
  b.writeDoubleLE(hits, 0)
  b.writeDoubleLE(resetTime, 8)
  return b
}

/** The { hits, resetTime } of a stored entry, or null for none (or a value not written by a store). */
const decodeEntry = (b) => (Buffer.isBuffer(b) && b.length === ENTRY_BYTES ? { hits: b.readDoubleLE(0), resetTime: b.readDoubleLE(8) } : null)

class ClusterShmStore {
  #map
  #sweepLock // semaphore of one permit: who runs a timer's sweep (see #sweepTurn)
  #windowMs = 60_000
  #sweeper = null
  #logFull = null // when the request is refused on a full map, who logs it (see init)

  /**
   * @param {{ bus: Bus, name?: string, prefix?: string, capacity?: number, maxKeyBytes?: number }} options
   *   `name`, `capacity` and `maxKeyBytes` are those of the shared map, the same in every worker;
   *   `prefix` tells apart the limiters that share a map (one store per limiter).
   */
  constructor(options) {
    const { bus, name = 'express-rate-limit', prefix = 'rl:', capacity = 10_000, maxKeyBytes = 128 } = checkOptions(options, 'options')
    if (!(bus instanceof Bus)) fail('ERR_INVALID_ARG', 'options.bus must be the Bus of this process (masterInit() or workerInit())')
    if (typeof prefix !== 'string') fail('ERR_INVALID_ARG', 'options.prefix must be a string')
    checkInt('capacity', capacity, 1, 1 << 24)
    // The name of the sweep lock is the longer one: checked before the map is made.
    if (typeof name === 'string' && Buffer.byteLength(name) > MAX_NAME_BYTES - SWEEP_SUFFIX.length) fail('ERR_INVALID_ARG', `options.name must be at most ${MAX_NAME_BYTES - SWEEP_SUFFIX.length} bytes (the store also names a lock '<name>${SWEEP_SUFFIX}')`)
    this.#map = bus.map(name, { capacity, maxKeyBytes, maxValueBytes: ENTRY_BYTES })
    this.#sweepLock = bus.semaphore(name + SWEEP_SUFFIX, { permits: 1 })
    this.prefix = prefix
    /** The counts are shared by every process of the cluster (express-rate-limit's Store flag). */
    this.localKeys = false
  }

  /** Called by express-rate-limit with its options: takes `windowMs` and starts the sweep timer. */
  init(options) {
    this.#windowMs = checkInt('windowMs', options.windowMs, 1, 2 ** 31 - 1)
    // With passOnStoreError express-rate-limit logs the store's error itself. Without it the
    // error goes to next(err), and express's default handler prints nothing under NODE_ENV=test
    // (nor does an application's own handler, necessarily): so the store logs it then.
    const logger = options.logger ?? console
    this.#logFull = options.passOnStoreError ? null : (err) => logger.error(err, 'the request is refused (passOnStoreError is false)')
    clearInterval(this.#sweeper)
    this.#sweeper = setInterval(() => this.#sweepTurn(), Math.max(this.#windowMs, 1000))
    this.#sweeper.unref()
  }

  /** { totalHits, resetTime } of `key` in its current window, or undefined. */
  get(key) {
    const e = decodeEntry(this.#map.get(this.prefix + key))
    if (e === null || e.resetTime <= Date.now()) return undefined
    return { totalHits: e.hits, resetTime: new Date(e.resetTime) }
  }

  /** Counts one hit of `key`, starting a new window if its last one ended. */
  increment(key) {
    const k = this.prefix + key
    for (;;) {
      const old = this.#map.get(k)
      const e = decodeEntry(old)
      const now = Date.now()
      const fresh = e === null || e.resetTime <= now
      const hits = fresh ? 1 : e.hits + 1
      const resetTime = fresh ? now + this.#windowMs : e.resetTime
      if (this.#swap(k, old, encodeEntry(hits, resetTime))) return { totalHits: hits, resetTime: new Date(resetTime) }
    }
  }

  /** Takes back one hit of `key` (express-rate-limit's skipSuccessfulRequests/skipFailedRequests). */
  decrement(key) {
    const k = this.prefix + key
    for (;;) {
      const old = this.#map.get(k)
      const e = decodeEntry(old)
      if (e === null || e.resetTime <= Date.now() || e.hits <= 0) return
      if (this.#map.compareAndSet(k, old, encodeEntry(e.hits - 1, e.resetTime))) return
    }
  }

  resetKey(key) {
    this.#map.delete(this.prefix + key)
  }

  /** Forgets every client of this store (its prefix) in the whole cluster. */
  resetAll() {
    for (const k of this.#map.keys()) if (k.startsWith(this.prefix)) this.#map.delete(k)
  }

  /** Deletes the entries of this store whose window has ended; returns how many. */
  sweep() {
    const now = Date.now()
    let deleted = 0
    for (const k of this.#map.keys()) {
      if (!k.startsWith(this.prefix)) continue
      const old = this.#map.get(k)
      const e = decodeEntry(old)
      // Only if unchanged since read: a hit counted meanwhile started a new window.
      if (e !== null && e.resetTime <= now && this.#map.compareAndSet(k, old, undefined)) deleted++
    }
    return deleted
  }

  /**
   * The timer's sweep, skipped while another process runs one on this map: every worker's timer
   * fires every window, and sweeps at once would go through the same keys, contending on the
   * map's lock. (One lock per map, not per prefix, to take one name of the segment's table: a
   * prefix skipped so waits for the next timer of some worker.) The sweep is synchronous, so
   * the permit is never held across a turn of the event loop. sweep() called directly and the
   * sweep of a full map do not wait for the lock: a request needs room now.
   */
  #sweepTurn() {
    if (!this.#sweepLock.tryAcquire()) return
    try {
      this.sweep()
    } finally {
      this.#sweepLock.release()
    }
  }

  /** Stops the sweep timer (express-rate-limit calls this on shutdown). */
  shutdown() {
    clearInterval(this.#sweeper)
    this.#sweeper = null
  }

  /** compareAndSet; when the map is full, sweeps once and tries again, then fails clearly. */
  #swap(k, old, value) {
    try {
      return this.#map.compareAndSet(k, old, value)
    } catch (err) {
      if (err.code !== 'ERR_MAP_FULL') throw err
    }
    this.sweep()
    try {
      return this.#map.compareAndSet(k, old, value)
    } catch (err) {
      if (err.code !== 'ERR_MAP_FULL') throw err
      const full = new ClusterShmError('ERR_MAP_FULL', `cluster-shm rate-limit store: the shared map holds ${this.#map.capacity} clients whose windows have not ended, so "${k}" cannot be counted; raise \`capacity\` of ClusterShmStore`)
      this.#logFull?.(full)
      throw full
    }
  }
}

module.exports = { ClusterShmStore }
