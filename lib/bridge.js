'use strict'
// bus.bridge({ redis, topics, prefix? }): carries the bridged topics between hosts. Every process
// of a host may call it; the candidates compete for the named lock LOCK and its holder bridges:
//   outbound: it subscribes locally to the bridged topics, so it sees every local publish on
//             them, and sends each once to the transport, batched: consecutive messages of one
//             topic go as one envelope carrying the host's id (lib/bridge-batch.js), sent at the
//             end of the event loop's turn, or later while earlier batches wait for Redis;
//   inbound:  it subscribes to the same topics on the transport and publishes what arrives into
//             the segment, dropping what its own host sent (no echo, no loop).
// When the holder dies its permit is recovered (about 100 ms) and the next candidate bridges.
// The host's id, the outbound sequence number and the last sequence number seen from each other
// host live in the segment, so a successor continues both and counts the gaps exactly.
// Losses are counted and emitted on the bus as 'lost' with reason 'bridge'.

const cluster = require('node:cluster')
const crypto = require('node:crypto')
const { EventEmitter } = require('node:events')
const { fail } = require('./errors.js')
const { checkTopicName } = require('../binding.js')
const { BYTES, UTF8, JSON_TEXT, VALUE, decode } = require('./codec.js')
const { RedisTransport } = require('./bridge-redis.js')
const { BatchWriter, BatchReader, stamp, HOST_BYTES } = require('./bridge-batch.js')

const LOCK = 'cluster-shm.bridge'
const STATE = 'cluster-shm.bridge.state' // region: [host id 16][outbound seq f64][heartbeat ms f64]
const SEEN = 'cluster-shm.bridge.seen' // map: other host's id (hex) -> last seq received from it
const SEQ_AT = 16
const BEAT_AT = 24
const HEARTBEAT_MS = 100
const HOSTS_KEPT = 1024 // other hosts whose last sequence number is cached here (as in SEEN)
// Outbound batches sent and not yet confirmed, at most. A batch that is not full leaves only
// when none is (as Nagle's algorithm does): the slower Redis answers, the larger the batches.
const BATCHES_IN_FLIGHT = 4
// Default bound of the outbound queue, in messages: two delivery batches (a batch hands the
// bridge up to 16 Ki messages at once, src/core/inbox.rs Budget::BATCH), so that a burst the
// rings took is not dropped here while Redis confirms the one before. (The bridging process's
// own publishes reach it in one run per turn, unbatched: a burst of more in one turn is cut.)
const MAX_QUEUE = 32 * 1024

/** Drops exact topics and patterns that a broader bridged pattern already covers (one delivery each). */
function normalizeTopics(topics) {
  if (!Array.isArray(topics) || topics.length === 0) fail('ERR_INVALID_ARG', 'topics must be a non-empty array of topic names or patterns')
  for (const t of topics) {
    if (typeof t !== 'string') fail('ERR_INVALID_ARG', 'topic must be a string')
    checkTopicName(t) // the core's rule, as subscribe() applies it when the bridge starts
  }
  const covers = (p, t) => p !== t && p.endsWith('*') && t.startsWith(p.slice(0, -1))
  return [...new Set(topics)].filter((t) => !topics.some((p) => covers(p, t)))
}

class Bridge extends EventEmitter {
  #bus
  #busTopics // the bus's lib/topics.js Topics: subscribeEncoded() and inject()
  #topics
  #transport
  #maxQueue
  #downAfter
  #abort = new AbortController()
  #closed = false
  #active = false
  #permit = null
  #region = null
  #seen = null // shared map
  #last = new Map() // host hex -> last seq (cache of #seen)
  #host = null // Buffer of HOST_BYTES
  #hostHex = ''
  #seq = 0
  #seqBytes = Buffer.alloc(8)
  #batch = new BatchWriter() // the outbound batch being collected
  #closedBatches = [] // { topic, env, count }: full (or closed by another topic), waiting to be sent
  #batchesInFlight = 0
  #queued = 0 // messages in #closedBatches and in flight (the open batch's are batch.count)
  #pumping = false // a pump at the end of this turn is scheduled
  #reader = new BatchReader()
  #subs = []
  #timers = []
  #downTimer = null
  #lost = new Map() // cause -> count not yet reported
  #lostTimer = null
  stats = { sent: 0, received: 0, lost: 0 }

  constructor(bus, busTopics, options) {
    super()
    if (options === null || typeof options !== 'object') fail('ERR_INVALID_ARG', 'bridge options must be an object')
    const prefix = options.prefix ?? 'cluster-shm:'
    if (typeof prefix !== 'string') fail('ERR_INVALID_ARG', 'prefix must be a string')
    this.#topics = normalizeTopics(options.topics)
    this.#maxQueue = checkCount('maxQueue', options.maxQueue ?? MAX_QUEUE)
    this.#downAfter = checkCount('downAfter', options.downAfter ?? 2_000)
    this.#transport = new RedisTransport(options.redis, prefix)
    this.#bus = bus
    this.#busTopics = busTopics
    // In a cluster the primary is the candidate by default; a worker bridges only when asked.
    const candidate = options.candidate ?? !cluster.isWorker
    if (typeof candidate !== 'boolean') fail('ERR_INVALID_ARG', 'candidate must be a boolean')
    const lock = bus.semaphore(LOCK, { permits: 1 })
    bus.once('close', () => this.close())
    if (candidate) this.#compete(lock).catch((err) => this.emit('error', err))
  }

  /** Whether this process is the host's bridge now. */
  get active() {
    return this.#active
  }

  /** This host's id (hex), once this process has bridged; null before. */
  get host() {
    return this.#host === null ? null : this.#hostHex
  }

  /** Whether this process bridges and its Redis connections are up now. */
  get connected() {
    return this.#active && this.#connected
  }

  get topics() {
    return [...this.#topics]
  }

  async #compete(lock) {
    let permit
    try {
      permit = await lock.acquire({ signal: this.#abort.signal })
    } catch (err) {
      if (this.#closed) return
      throw err
    }
    if (this.#closed) return void permit.release()
    this.#permit = permit
    this.#run(permit.recovered)
  }

  #run(recovered) {
    const bus = this.#bus
    const region = (this.#region = bus.region(STATE, 32))
    this.#seen = bus.map(SEEN, { capacity: 1024, maxKeyBytes: 2 * HOST_BYTES, maxValueBytes: 16 })
    let host = region.read(0, HOST_BYTES)
    if (host.every((b) => b === 0)) region.write(0, (host = crypto.randomBytes(HOST_BYTES)))
    this.#host = host
    this.#hostHex = host.toString('hex')
    this.#seq = region.read(SEQ_AT, 8).readDoubleLE(0)
    const beat = region.read(BEAT_AT, 8).readDoubleLE(0)
    if (recovered) {
      // The previous bridge died: what was published here and elsewhere while nobody bridged is
      // gone. Local publishes in the gap cannot be counted; other hosts' are (as a 'gap' below).
      this.#report('failover', null, { gapMs: beat > 0 ? Date.now() - beat : null })
    }
    this.#heartbeat()
    this.#timers.push(setInterval(() => this.#heartbeat(), HEARTBEAT_MS).unref())
    for (const t of this.#topics) this.#subs.push(this.#busTopics.subscribeEncoded(t, this.#outbound))
    this.#transport.start(this.#topics, {
      onMessage: (topic, bytes) => this.#inbound(topic, bytes),
      onState: (up) => this.#state(up),
    })
    this.#active = true
    this.#downTimer = setTimeout(() => this.#stayedDown(), this.#downAfter).unref() // until the first 'up'
    this.emit('active')
  }

  #heartbeat() {
    const b = Buffer.alloc(8)
    b.writeDoubleLE(Date.now(), 0)
    this.#region.write(BEAT_AT, b)
  }

  /** A local publish on a bridged topic (what came from other hosts is never passed here: no echo). */
  #outbound = (from, topic, kind, bytes, start, end) => {
    if (!this.#transport.ready) return this.#report('redis-down', 1)
    const batch = this.#batch
    // The bound counts messages: those waiting for Redis and those of the open batch.
    if (this.#queued + batch.count >= this.#maxQueue) return this.#report('queue-full', 1)
    // A batch holds one topic; a message of another topic closes it, so the order holds.
    if (batch.count > 0 && batch.topic !== topic) this.#close()
    if (!batch.add(topic, kind, bytes, start, end)) {
      this.#close()
      batch.add(topic, kind, bytes, start, end)
    }
    if (!this.#pumping) {
      this.#pumping = true
      setImmediate(this.#endOfTurn)
    }
  }

  #endOfTurn = () => {
    this.#pumping = false
    if (!this.#closed) this.#pump(false)
  }

  /** Closes the open batch: it waits for its turn to be sent. */
  #close() {
    const batch = this.#batch
    const count = batch.count
    this.#closedBatches.push({ topic: batch.topic, env: batch.take(), count })
    this.#queued += count
    this.#pump(false)
  }

  /**
   * Sends the closed batches while fewer than BATCHES_IN_FLIGHT are unconfirmed, then the open
   * one if nothing is in flight (or `all`). Sequence numbers are taken, and kept in the
   * segment, only as a batch leaves: what is dropped before never makes a gap.
   */
  #pump(all) {
    const transport = this.#transport
    const waiting = this.#closedBatches
    if (!transport.ready) return this.#dropWaiting('redis-down')
    while (waiting.length > 0 && (all || this.#batchesInFlight < BATCHES_IN_FLIGHT)) this.#send(waiting.shift())
    const batch = this.#batch
    if (batch.count > 0 && (all || this.#batchesInFlight === 0)) {
      const count = batch.count
      this.#queued += count
      this.#send({ topic: batch.topic, env: batch.take(), count })
    }
  }

  #send({ topic, env, count }) {
    stamp(env, this.#host, this.#seq + 1)
    this.#seq += count
    // The sequence number is in the segment before the batch leaves: a successor never reuses it.
    this.#seqBytes.writeDoubleLE(this.#seq, 0)
    this.#region.write(SEQ_AT, this.#seqBytes)
    this.stats.sent += count
    this.#batchesInFlight++
    this.#transport.publish(topic, env).then(
      () => this.#confirmed(count, null),
      () => this.#confirmed(count, 'redis-down'),
    )
  }

  #confirmed(count, lost) {
    this.#batchesInFlight--
    this.#queued -= count
    if (lost !== null) this.#report(lost, count)
    if (!this.#closed) this.#pump(false)
  }

  /** Counts every message not sent yet (closed batches and the open one) as lost for `cause`. */
  #dropWaiting(cause) {
    let closed = 0
    for (const b of this.#closedBatches) closed += b.count
    this.#closedBatches.length = 0
    this.#queued -= closed
    const count = closed + this.#batch.count
    this.#batch.clear()
    if (count > 0) this.#report(cause, count)
  }

  #inbound(topic, bytes) {
    const r = this.#reader
    if (!this.#active) return
    if (!r.open(bytes)) return this.#report('malformed', 1) // not a batch of this version
    if (r.from(this.#host)) return // our own host's: no echo
    const origin = r.origin()
    const first = r.first
    let last = this.#last.get(origin)
    if (last === undefined) last = this.#seen.get(origin)
    if (typeof last === 'number' && first > last + 1) this.#report('gap', first - last - 1, { host: origin })
    last = first + r.count - 1
    if (this.#last.size >= HOSTS_KEPT && !this.#last.has(origin)) this.#last.clear() // ids are untrusted: bounded
    this.#last.set(origin, last)
    this.#remember(origin, last)
    const topics = this.#busTopics
    let malformed = 0
    while (r.next()) {
      // Strings and bytes are anything; JSON and v8 values are decoded once here so that what
      // does not decode (Redis input is untrusted) never reaches a subscriber.
      if (r.kind !== UTF8 && r.kind !== BYTES && !decodes(r.kind, bytes, r.start, r.end)) {
        malformed++
        continue
      }
      try {
        // Straight into the rings when they have room; else queued behind, in order.
        const sent = topics.inject(topic, r.kind, bytes, r.start, r.end)
        if (sent !== true) sent.catch(this.#injectFailed)
        this.stats.received++
      } catch (err) {
        // The channel names no topic one can publish to (a pattern matched it): the whole
        // envelope is malformed, found at its first message rather than at each.
        if (err?.code === 'ERR_INVALID_ARG') return this.#report('malformed', r.count)
        this.#injectFailed(err)
      }
    }
    malformed += r.count - r.read
    if (malformed > 0) this.#report('malformed', malformed)
  }

  /** A message from Redis that could not be published here: why, as a loss cause. */
  #injectFailed = (err) => {
    const code = err?.code
    this.#report(code === 'ERR_INVALID_ARG' ? 'malformed' : code === 'ERR_QUEUE_FULL' ? 'queue-full' : 'closed', 1)
  }

  #connected = false
  /** Keeps `seq` in the segment for a successor; a map full of hosts long gone is emptied. */
  #remember(origin, seq) {
    try {
      this.#seen.set(origin, seq)
    } catch (err) {
      if (err.code !== 'ERR_MAP_FULL') throw err
      for (const k of this.#seen.keys()) this.#seen.delete(k)
      this.#seen.set(origin, seq)
    }
  }

  #state(up) {
    if (this.#closed) return
    this.#connected = up
    clearTimeout(this.#downTimer)
    this.#downTimer = null
    if (up) {
      if (this.#reportedDown) this.emit('up')
      this.#reportedDown = false
    } else {
      this.#downTimer = setTimeout(() => this.#stayedDown(), this.#downAfter).unref()
    }
  }

  #reportedDown = false
  #stayedDown() {
    this.#reportedDown = true
    this.emit('down', { ms: this.#downAfter })
  }

  /** Counts `count` losses of `cause`; one 'lost' event per cause at most every 100 ms. */
  #report(cause, count, extra) {
    if (count === null) {
      this.#bus.emit('lost', { from: null, reason: 'bridge', cause, count: null, ...extra })
      return
    }
    this.stats.lost += count
    if (extra !== undefined) {
      this.#bus.emit('lost', { from: null, reason: 'bridge', cause, count, ...extra })
      return
    }
    this.#lost.set(cause, (this.#lost.get(cause) ?? 0) + count)
    this.#lostTimer ??= setTimeout(() => {
      this.#lostTimer = null
      for (const [c, n] of this.#lost) this.#bus.emit('lost', { from: null, reason: 'bridge', cause: c, count: n })
      this.#lost.clear()
    }, 100)
  }

  /** Sends what waits, or counts it lost when the bus (and so the segment) is closed already. */
  #flushAtClose() {
    if (this.#bus.closed) this.#dropWaiting('closed')
    else this.#pump(true)
  }

  /** Stops bridging (or competing); the next candidate takes over. Idempotent. */
  close() {
    if (this.#closed) return
    this.#closed = true
    this.#abort.abort()
    if (this.#active) this.#flushAtClose()
    for (const t of this.#timers) clearInterval(t)
    clearTimeout(this.#downTimer)
    if (this.#lostTimer !== null) {
      clearTimeout(this.#lostTimer)
      for (const [c, n] of this.#lost) this.#bus.emit('lost', { from: null, reason: 'bridge', cause: c, count: n })
    }
    for (const s of this.#subs) s.unsubscribe()
    this.#transport.close()
    this.#active = false
    if (this.#permit !== null && !this.#bus.closed) this.#permit.release()
    this.emit('close')
  }
}

/** Whether the payload bytes[start..end] is a JSON or v8 value that decodes. */
function decodes(kind, bytes, start, end) {
  if (kind !== JSON_TEXT && kind !== VALUE) return false
  try {
    decode(kind, bytes, start, end)
    return true
  } catch {
    return false
  }
}

function checkCount(name, v) {
  if (!Number.isInteger(v) || v < 1) fail('ERR_INVALID_ARG', `${name} must be a positive integer`)
  return v
}

module.exports = { Bridge, normalizeTopics }
