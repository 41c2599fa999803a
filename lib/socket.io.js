'use strict'
// `require('cluster-shm/socket.io')`: a socket.io adapter whose cluster traffic goes over
// cluster-shm topics instead of process.send through the primary (@socket.io/cluster-adapter)
// or a Redis server (@socket.io/redis-adapter).
//
// socket.io-adapter's ClusterAdapterWithHeartbeat does all the socket.io work (broadcasts, acks,
// rooms, fetchSockets, serverSideEmit, the node list); this file only carries its messages:
//   - requests to every node of a namespace: published on `<prefix>.<namespace>`, which every
//     process's adapter of that namespace subscribes to;
//   - responses to one node: on `<prefix>.<namespace>.<uid>`, subscribed only by the node with
//     that (random, cross-host unique) uid. All of them match the pattern `<prefix>.*`
//     (bridgeTopics()), so that bus.bridge() carries the adapter between hosts. A response to a
//     node of this host goes on `<prefix>#local.<namespace>.<uid>` instead, outside that pattern:
//     it never crosses hosts.
// A message is `<uid> <host tag> ` then JSON text (a string), or, when it holds binary content,
// the same head then v8-serialized bytes (a Buffer): the publisher drops its own copy by its uid
// without parsing it, and the host tag (random, one per segment) tells the nodes of this host,
// whose bus index is known, from those of other hosts. JSON is what socket.io itself sends to
// clients (and what @socket.io/cluster-adapter relays), and is several times cheaper than v8.
// Messages go out with tryPublish (no promise per message); only when a ring is full does
// publish() queue them, in order.
// A process that dies or closes its bus leaves the node list at once, through the bus's 'detach'
// event, instead of after a heartbeat timeout (nodes of other hosts: ADAPTER_CLOSE or heartbeat).

const crypto = require('node:crypto')
const v8 = require('node:v8')
const { ClusterAdapterWithHeartbeat } = require('socket.io-adapter')
const { fail } = require('./errors.js')
const { checkOptions } = require('./options.js')
const { Bus } = require('./bus.js')
const { MAX_TOPIC_BYTES } = require('../binding.js')

const UID_BYTES = 16 // socket.io-adapter's randomId(): 8 random bytes in hex
const LOCAL = '#local' // after the prefix: the topics that never cross hosts
const HOST_MAP = 'cluster-shm.socket.io' // shared map: 'host' -> this segment's host tag
const MAX_WALK_DEPTH = 64 // deeper (or cyclic) messages go through v8, which keeps cycles
const MAX_WALK_OBJECTS = 10_000 // more objects than this: v8 (a widely shared sub-object would blow JSON up)
const NO_OFFSET = Promise.resolve('')
const RESOLVED = Promise.resolve()
const SPACE = 0x20

/** A topic-safe form of a namespace name: '.', '*', '#' have a meaning in these topic names. */
const escapeName = (nspName) => nspName.replace(/[%.*#]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)

function checkPrefix(prefix) {
  if (typeof prefix !== 'string' || prefix.length === 0 || prefix.includes('*') || prefix.includes('#')) fail('ERR_INVALID_ARG', 'prefix must be a non-empty string without "*" and "#"')
  return prefix
}

/** The topic patterns to pass to bus.bridge({ topics }) so that the adapter works across hosts. */
function bridgeTopics(prefix = 'socket.io') {
  return [`${checkPrefix(prefix)}.*`]
}

const hostTags = new WeakMap() // bus -> the host tag of its segment
/** A random tag shared by every process of the bus's segment (one host), set by the first one. */
function hostTagOf(bus) {
  let tag = hostTags.get(bus)
  if (tag === undefined) {
    const map = bus.map(HOST_MAP, { capacity: 1, maxKeyBytes: 8, maxValueBytes: 32 })
    map.compareAndSet('host', undefined, crypto.randomBytes(8).toString('hex'))
    tag = map.get('host')
    hostTags.set(bus, tag)
  }
  return tag
}

/**
 * Whether `message` must go through v8: it holds bytes (Buffer, typed array, ArrayBuffer), or is
 * too deep or has too many objects to tell (cycles, shared sub-objects: v8 keeps them, JSON would
 * not end or would copy them).
 */
function needsV8(message) {
  let budget = MAX_WALK_OBJECTS
  const walk = (v, depth) => {
    if (v === null || typeof v !== 'object') return false
    if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return true
    if (depth > MAX_WALK_DEPTH || --budget < 0) return true
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) if (walk(v[i], depth + 1)) return true
      return false
    }
    for (const k in v) if (walk(v[k], depth + 1)) return true
    return false
  }
  return walk(message, 0)
}

const ignore = () => {}

class ClusterShmAdapter extends ClusterAdapterWithHeartbeat {
  #bus
  #topic // requests: `<prefix>.<namespace>`
  #local // `<prefix>#local.<namespace>`
  #hostTag
  #head // `<uid> <host tag> `
  #headBytes
  #subscriptions
  #indexOf = new Map() // uid of another node of this host -> the bus index it publishes from
  #onDetach

  constructor(nsp, bus, { prefix, ...heartbeat }) {
    super(nsp, heartbeat)
    // The adapter's timers never keep a process alive (nor does a bus subscription).
    this.cleanupTimer.unref()
    const name = escapeName(nsp.name)
    this.#bus = bus
    this.#topic = `${prefix}.${name}`
    this.#local = `${prefix}${LOCAL}.${name}`
    if (Buffer.byteLength(this.#local) + 1 + UID_BYTES > MAX_TOPIC_BYTES) fail('ERR_INVALID_ARG', `the namespace "${nsp.name}" is too long for a topic name (at most ${MAX_TOPIC_BYTES - 2 - UID_BYTES - LOCAL.length} bytes with the prefix)`)
    this.#hostTag = hostTagOf(bus)
    this.#head = `${this.uid} ${this.#hostTag} `
    this.#headBytes = Buffer.from(this.#head, 'latin1')
    const receive = ({ from, data }) => this.#receive(from, data)
    this.#subscriptions = [
      bus.subscribe(this.#topic, receive),
      bus.subscribe(`${this.#topic}.${this.uid}`, receive),
      bus.subscribe(`${this.#local}.${this.uid}`, receive),
    ]
    this.#onDetach = (index) => {
      for (const [uid, at] of this.#indexOf) {
        if (at !== index) continue
        this.#indexOf.delete(uid)
        this.removeNode(uid) // settles the requests that waited for it
      }
    }
    bus.on('detach', this.#onDetach)
  }

  #receive(from, data) {
    let uid, tag, message
    try {
      if (typeof data === 'string') {
        if (data.startsWith(this.#head)) return // this node's own message
        const a = data.indexOf(' ')
        const b = data.indexOf(' ', a + 1)
        if (a <= 0 || b < 0) return // not an adapter's message
        uid = data.slice(0, a)
        tag = data.slice(a + 1, b)
        message = JSON.parse(data.slice(b + 1))
      } else if (Buffer.isBuffer(data)) {
        const head = this.#headBytes
        if (data.length >= head.length && data.compare(head, 0, head.length, 0, head.length) === 0) return
        const a = data.indexOf(SPACE)
        const b = data.indexOf(SPACE, a + 1)
        if (a <= 0 || b < 0) return
        uid = data.latin1Slice(0, a)
        tag = data.latin1Slice(a + 1, b)
        message = v8.deserialize(data.subarray(b + 1))
      } else {
        return
      }
    } catch {
      return // not an adapter's message
    }
    if (message === null || typeof message !== 'object') return
    if (tag === this.#hostTag) this.#indexOf.set(uid, from)
    this.onMessage(message)
  }

  scheduleHeartbeat() {
    super.scheduleHeartbeat()
    this.heartbeatTimer.unref()
  }

  // ClusterAdapterWithHeartbeat#publish and ClusterAdapter#publish in one, without the promise
  // per message that publishAndReturnOffset() and its catch() would cost. Errors are ignored, as
  // there (e.g. a publish on a closed bus).
  publish(message) {
    this.scheduleHeartbeat()
    message.uid = this.uid
    message.nsp = this.nsp.name
    try {
      this.#send(this.#topic, message)?.catch(ignore)
    } catch {}
  }

  doPublish(message) {
    // Connection state recovery needs offsets from a persistent log, which topics are not.
    try {
      const queued = this.#send(this.#topic, message)
      return queued === null ? NO_OFFSET : queued.then(() => '')
    } catch (err) {
      return Promise.reject(err)
    }
  }

  doPublishResponse(requesterUid, response) {
    if (typeof requesterUid !== 'string' || !/^[0-9a-zA-Z_-]{1,64}$/.test(requesterUid)) return RESOLVED
    // A requester of this host gets it on a topic that is never bridged; another host's on the
    // bridged one (its host's bridge publishes it there).
    const topic = this.#indexOf.has(requesterUid) ? `${this.#local}.${requesterUid}` : `${this.#topic}.${requesterUid}`
    try {
      const queued = this.#send(topic, response)
      return queued === null ? RESOLVED : queued.then(ignore)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Publishes `message` encoded: null once written, or the promise of a publish that waits for room. Throws if it cannot be encoded. */
  #send(topic, message) {
    let payload
    if (needsV8(message)) {
      const body = v8.serialize(message)
      payload = Buffer.allocUnsafe(this.#headBytes.length + body.length)
      this.#headBytes.copy(payload, 0)
      body.copy(payload, this.#headBytes.length)
    } else {
      payload = this.#head + JSON.stringify(message)
    }
    return this.#bus.tryPublish(topic, payload) ? null : this.#bus.publish(topic, payload)
  }

  close() {
    super.close() // tells the other nodes (ADAPTER_CLOSE; a failed publish on a closed bus is ignored)
    for (const s of this.#subscriptions) s.unsubscribe()
    this.#bus.off('detach', this.#onDetach)
  }
}

/**
 * `io.adapter(createAdapter(bus, options))` in every worker. Options: `prefix` of the topics
 * (default 'socket.io'), and ClusterAdapterWithHeartbeat's `heartbeatInterval` (5000 ms) and
 * `heartbeatTimeout` (10000 ms), which only matter for nodes that stop answering without leaving
 * (and for the nodes of other hosts).
 */
function createAdapter(bus, options) {
  if (!(bus instanceof Bus)) fail('ERR_INVALID_ARG', 'bus must be the Bus of this process (workerInit() or masterInit())')
  const { prefix = 'socket.io', ...rest } = checkOptions(options, 'options')
  checkPrefix(prefix)
  // socket.io calls it with `new`: a plain function (not an arrow) that returns the adapter.
  return function clusterShmAdapter(nsp) {
    return new ClusterShmAdapter(nsp, bus, { prefix, ...rest })
  }
}

module.exports = { createAdapter, bridgeTopics, ClusterShmAdapter }
