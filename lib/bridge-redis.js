'use strict'
// The Redis transport of the bridge (lib/bridge.js). A transport is the small interface the
// bridge needs from a message system, so that another one (NATS) can be added beside this file:
//   start(topics, { onMessage(topic, bytes), onState(up) })  connects, subscribes to `topics`
//                                     (exact names and `a.*` patterns), calls back per message
//   ready                             whether a publish can be sent now
//   publish(topic, bytes) -> Promise  sends once (never resent after a reconnect); settles
//                                     when Redis confirmed it (the bridge counts what waits)
//   close() -> Promise                drops the connections
// Two connections per host: one subscribed (a subscribed Redis connection cannot publish), one
// publishing. Both are made here, from a URL or as duplicates of the user's client (whose own
// connection is left alone), with the options at-most-once needs.

const { fail } = require('./errors.js')

// No offline queue (what cannot be sent now is dropped and counted by the bridge, never buffered
// without bound), and no resending after a reconnect (a publish Redis may already have delivered
// would be delivered twice). Auto-pipelining puts the batches of several topics sent in one turn
// into one write.
const PUBLISHER_OPTIONS = { enableOfflineQueue: false, autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 0, lazyConnect: false, enableAutoPipelining: true }
// The subscriber re-subscribes by itself after a reconnect (ioredis autoResubscribe).
const SUBSCRIBER_OPTIONS = { autoResubscribe: true, autoResendUnfulfilledCommands: true, lazyConnect: false }

function loadIoredis() {
  try {
    const mod = require('ioredis')
    return mod.Redis ?? mod.default ?? mod
  } catch {
    return fail('ERR_INVALID_ARG', 'bridge({ redis: url }) needs the optional peer dependency ioredis: npm install ioredis')
  }
}

/** Escapes Redis glob characters so that a topic prefix matches only itself. */
const globEscape = (s) => s.replace(/[*?[\]\\]/g, '\\$&')

class RedisTransport {
  #connect // (options) -> new ioredis connection
  #prefix
  #pub = null
  #sub = null
  #up = false

  constructor(redis, prefix) {
    if (typeof redis === 'string') {
      const Redis = loadIoredis()
      this.#connect = (options) => new Redis(redis, options)
    } else if (redis !== null && typeof redis === 'object' && typeof redis.duplicate === 'function') {
      this.#connect = (options) => redis.duplicate(options)
    } else {
      fail('ERR_INVALID_ARG', 'redis must be a redis:// URL or an ioredis client')
    }
    this.#prefix = prefix
  }

  get ready() {
    return this.#pub !== null && this.#pub.status === 'ready'
  }

  start(topics, { onMessage, onState }) {
    const prefix = this.#prefix
    const pub = (this.#pub = this.#connect(PUBLISHER_OPTIONS))
    const sub = (this.#sub = this.#connect(SUBSCRIBER_OPTIONS))
    const deliver = (channel, message) => {
      const name = channel.toString('utf8')
      if (name.startsWith(prefix)) onMessage(name.slice(prefix.length), message)
    }
    sub.on('messageBuffer', deliver)
    sub.on('pmessageBuffer', (_pattern, channel, message) => deliver(channel, message))
    // Up means both connections work: publishing and receiving.
    const state = () => {
      const up = pub.status === 'ready' && sub.status === 'ready'
      if (up !== this.#up) onState((this.#up = up))
    }
    for (const c of [pub, sub]) {
      c.on('ready', state)
      c.on('close', state)
      c.on('end', state)
      c.on('error', () => {}) // reconnecting is ioredis's job; the bridge reports the state
    }
    const exact = topics.filter((t) => !t.endsWith('*')).map((t) => prefix + t)
    const patterns = topics.filter((t) => t.endsWith('*')).map((t) => globEscape(prefix + t.slice(0, -1)) + '*')
    if (exact.length > 0) sub.subscribe(...exact).catch(() => {}) // retried by autoResubscribe
    if (patterns.length > 0) sub.psubscribe(...patterns).catch(() => {})
  }

  publish(topic, bytes) {
    return this.#pub.publish(this.#prefix + topic, bytes)
  }

  async close() {
    for (const c of [this.#sub, this.#pub]) if (c !== null) c.disconnect()
    this.#up = false
  }
}

module.exports = { RedisTransport }
