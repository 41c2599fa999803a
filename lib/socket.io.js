'use strict'
// `require('cluster-shm/socket.io')`: a socket.io adapter whose cluster traffic goes over
// cluster-shm topics instead of process.send through the primary (@socket.io/cluster-adapter)
// or a Redis server (@socket.io/redis-adapter).
//
// socket.io-adapter's ClusterAdapterWithHeartbeat does all the socket.io work (broadcasts, acks,
// rooms, fetchSockets, serverSideEmit, the node list); this file only carries its messages:
//   - requests to every node of a namespace: published on the topic `<prefix>#<namespace>`, which
//     every worker's adapter of that namespace subscribes to;
//   - responses to one node: published on `<prefix>#<namespace>#<index>`, subscribed only by the
//     worker at `index` (the requester's index is learnt from the messages it sent).
// A worker that dies or closes its bus leaves the node list at once, through the bus's 'detach'
// event, instead of after a heartbeat timeout. Messages are v8-serialized here, once, and travel
// as bytes (Buffers and other binary content arrive as they were sent): the publisher, itself a
// subscriber of the namespace topic, drops its own copy without deserializing it.

const v8 = require('node:v8')
const { ClusterAdapterWithHeartbeat } = require('socket.io-adapter')
const { fail } = require('./errors.js')
const { checkOptions } = require('./options.js')
const { Bus } = require('./bus.js')

const MAX_TOPIC_BYTES = 128

/** A topic-safe form of a namespace name: '.' and '*' have a meaning in topic names. */
function topicOf(prefix, nspName) {
  const name = nspName.replace(/[%.*#]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  const topic = `${prefix}#${name}`
  // Room for the response suffix `#<index>` (at most 4 bytes).
  if (Buffer.byteLength(topic) + 4 > MAX_TOPIC_BYTES) fail('ERR_INVALID_ARG', `the namespace "${nspName}" is too long for a topic name (at most ${MAX_TOPIC_BYTES - 5} bytes with the prefix)`)
  return topic
}

class ClusterShmAdapter extends ClusterAdapterWithHeartbeat {
  #bus
  #topic
  #subscriptions
  #indexOf = new Map() // uid of another node -> the bus index it publishes from
  #onDetach

  constructor(nsp, bus, { prefix, ...heartbeat }) {
    super(nsp, heartbeat)
    // The adapter's timers never keep a process alive (nor does a bus subscription).
    this.cleanupTimer.unref()
    this.#bus = bus
    this.#topic = topicOf(prefix, nsp.name)
    const receive = ({ from, data }) => {
      if (from === bus.index || !Buffer.isBuffer(data)) return // what this adapter published, or not an adapter's message
      const message = v8.deserialize(data)
      if (typeof message?.uid === 'string') this.#indexOf.set(message.uid, from)
      this.onMessage(message)
    }
    this.#subscriptions = [bus.subscribe(this.#topic, receive), bus.subscribe(`${this.#topic}#${bus.index}`, receive)]
    this.#onDetach = (index) => {
      for (const [uid, at] of this.#indexOf) {
        if (at !== index) continue
        this.#indexOf.delete(uid)
        this.removeNode(uid) // settles the requests that waited for it
      }
    }
    bus.on('detach', this.#onDetach)
  }

  scheduleHeartbeat() {
    super.scheduleHeartbeat()
    this.heartbeatTimer.unref()
  }

  doPublish(message) {
    // Connection state recovery needs offsets from a persistent log, which topics are not.
    return this.#publish(this.#topic, message).then(() => '')
  }

  doPublishResponse(requesterUid, response) {
    const to = this.#indexOf.get(requesterUid)
    if (to === undefined) return Promise.resolve() // the requester is gone
    return this.#publish(`${this.#topic}#${to}`, response).then(() => {})
  }

  /** Publishes `message` serialized; a failure (e.g. a function in socket.data) is a rejection, as socket.io-adapter expects. */
  #publish(topic, message) {
    let bytes
    try {
      bytes = v8.serialize(message)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#bus.publish(topic, bytes)
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
 * `heartbeatTimeout` (10000 ms), which only matter for nodes that stop answering without leaving.
 */
function createAdapter(bus, options) {
  if (!(bus instanceof Bus)) fail('ERR_INVALID_ARG', 'bus must be the Bus of this process (workerInit() or masterInit())')
  const { prefix = 'socket.io', ...rest } = checkOptions(options, 'options')
  if (typeof prefix !== 'string' || prefix.length === 0 || prefix.includes('*')) fail('ERR_INVALID_ARG', 'options.prefix must be a non-empty string without "*"')
  // socket.io calls it with `new`: a plain function (not an arrow) that returns the adapter.
  return function clusterShmAdapter(nsp) {
    return new ClusterShmAdapter(nsp, bus, { prefix, ...rest })
  }
}

module.exports = { createAdapter, ClusterShmAdapter }
