'use strict'
// Topics: subscriptions by topic or prefix pattern (`a.b.*`), publish() to exactly the processes
// subscribed (the registry in the segment says which), and the topic envelope on the wire.

const { fail } = require('./errors.js')
const { checkTimeoutOption } = require('./options.js')
const { TOPIC, REMOTE, encode, decode, envelope } = require('./codec.js')

const MATCHES_KEPT = 1024 // published topics whose matching subscriptions are remembered
const WATCHED_MAX = 1024 // topics whose targets are watched natively (beyond: read in full each time)
const SELF_COPIES_BYTES = 64 * 1024 // the buffer that envelopes to this process itself are copied into
const REGISTRATION_WORD = 2 ** 31 // a watched word at or above: in the registrations view (src/binding/bus.rs)

/** `a.b.c` -> `a.b.c`, `a.b.*`, `a.*`, `*`: the subscriptions that match a published topic. */
function* topicPatterns(topic) {
  yield topic
  for (let i = topic.lastIndexOf('.'); i >= 0; i = topic.lastIndexOf('.', i - 1)) yield `${topic.slice(0, i + 1)}*`
  yield '*'
}

class Topics {
  #state
  #outgoing
  #incoming
  #topics = new Map() // topic or pattern -> Set of callbacks
  #matching = new Map() // published topic -> the subscription entries it reaches (cleared on every change)
  #watched = new Map() // topic this process publishes to -> { id, pairs, words } (see #targets)
  // The topic of the last envelope received, as bytes and as a string, with its callbacks: a
  // stream on one topic then costs a byte comparison per message, not a string and a lookup.
  #lastBytes = Buffer.alloc(0)
  #lastTopic = ''
  #lastCallbacks = null // null: look up again (subscriptions changed)
  #selfCopies = null // see #toSelf
  #selfCopiesUsed = 0

  constructor(state, outgoing, incoming) {
    this.#state = state
    this.#outgoing = outgoing
    this.#incoming = incoming
  }

  /** Whether any subscription needs delivery. */
  get active() {
    return this.#topics.size > 0
  }

  /** Bus#subscribe(topic, callback): `callback({ from, topic, data })`. */
  subscribe(topic, callback) {
    return this.#add(topic, callback, false)
  }

  /**
   * For the bridge (lib/bridge.js): `callback(from, topic, kind, bytes, start, end)` with each
   * message as the segment carries it (codec kind, payload bytes[start..end]), not decoded; a
   * message that arrived from another host (injected, flagged REMOTE) is not passed to it.
   */
  subscribeEncoded(topic, callback) {
    return this.#add(topic, callback, true)
  }

  #add(topic, callback, encoded) {
    if (typeof topic !== 'string') fail('ERR_INVALID_ARG', 'topic must be a string')
    if (typeof callback !== 'function') fail('ERR_INVALID_ARG', 'callback must be a function')
    const state = this.#state
    if (state.closed) fail('ERR_CLOSED', 'the bus is closed')
    let set = this.#topics.get(topic)
    if (set === undefined) {
      state.native.topicSubscribe(topic)
      set = new Set()
      this.#topics.set(topic, set)
    }
    const entry = { callback, encoded } // one entry per subscribe() call, so the same callback can be added twice
    set.add(entry)
    this.#matching.clear()
    this.#lastCallbacks = null
    this.#incoming.update()
    let active = true
    return {
      unsubscribe: () => {
        if (!active) return
        active = false
        set.delete(entry)
        this.#matching.clear()
        this.#lastCallbacks = null
        if (set.size === 0 && this.#topics.get(topic) === set) {
          this.#topics.delete(topic)
          if (!state.closed) state.native.topicUnsubscribe(topic)
        }
        this.#incoming.update()
      },
    }
  }

  /** Bus#publish. */
  publish(topic, data, options) {
    try {
      const timeout = checkTimeoutOption(options)
      const [pairs, env] = this.#prepare(topic, data)
      // Room in every ring (the usual case): written now, without a promise per target.
      if (this.#tryWrite(pairs, env, true)) return Promise.resolve(pairs.length >> 1)
      return this.#fanOut(pairs, env, timeout, true)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Bus#tryPublish: like publish(), but now or not at all, without a promise. Returns false (and
   * sends nothing) when any subscriber's ring lacks room for it, or it is larger than one frame.
   */
  tryPublish(topic, data) {
    const [pairs, env] = this.#prepare(topic, data)
    return this.#tryWrite(pairs, env, true)
  }

  /**
   * For the bridge: publishes a message from another host, already encoded (codec `kind`,
   * payload bytes[start..end]), flagged REMOTE so that no bridge sends it out again. Written now
   * when every ring has room (returns true), else queued behind (returns publish()'s promise).
   * This process's own subscriptions get it only if one of them is not the bridge's.
   */
  inject(topic, kind, bytes, start, end) {
    if (typeof topic !== 'string') fail('ERR_INVALID_ARG', 'topic must be a string')
    if (this.#state.closed) fail('ERR_CLOSED', 'the bus is closed')
    const pairs = this.#targets(topic)
    const [env, topicLength] = envelope(4, topic, bytes.subarray(start, end))
    env[2] = kind | REMOTE
    env[3] = topicLength
    const self = (this.#matching.get(topic) ?? this.#match(topic)).some((entry) => !entry.encoded)
    return this.#tryWrite(pairs, env, self) || this.#fanOut(pairs, env, undefined, self)
  }

  /** The envelope to every target in `pairs` now, or to none (false). `self`: to this process too, if subscribed. */
  #tryWrite(pairs, env, self) {
    const state = this.#state
    const outgoing = this.#outgoing
    for (let i = 0; i < pairs.length; i += 2) if (pairs[i] !== state.self && !outgoing.room(pairs[i], env.length)) return false
    for (let i = 0; i < pairs.length; i += 2) {
      if (pairs[i] === state.self) {
        if (self) this.#toSelf(env)
      } else {
        env[0] = pairs[i + 1] & 0xff
        env[1] = pairs[i + 1] >>> 8
        // room() said it fits; should write() still refuse (a ring found corrupt), queue it
        // rather than drop it.
        if (!outgoing.write(pairs[i], TOPIC, env)) outgoing.send(pairs[i], TOPIC, env, undefined, true, true).catch(() => {})
      }
    }
    return true
  }

  /** The envelope to every target in `pairs`, waiting for room; resolves with how many processes got it. */
  #fanOut(pairs, env, timeout, self) {
    const targets = []
    const generations = []
    let mine = 0
    for (let i = 0; i < pairs.length; i += 2) {
      if (pairs[i] === this.#state.self) mine = self ? 1 : 0
      else targets.push(pairs[i]), generations.push(pairs[i + 1])
    }
    if (mine) this.#toSelf(env)
    const sent = this.#outgoing.fanOut(targets, TOPIC, env, timeout, generations)
    return mine ? sent.then((n) => n + 1) : sent
  }

  /** The subscribers ([index, generation, ...]) and the envelope (a reused buffer: write it out at once). */
  #prepare(topic, data) {
    if (typeof topic !== 'string') fail('ERR_INVALID_ARG', 'topic must be a string')
    const state = this.#state
    if (state.closed) fail('ERR_CLOSED', 'the bus is closed')
    const pairs = this.#targets(topic) // [index, generation, ...]
    const [kind, payload] = encode(data)
    const [env, topicLength] = envelope(4, topic, payload)
    env[2] = kind
    env[3] = topicLength
    return [pairs, env]
  }

  /**
   * The subscribers of `topic` now, `[index, generation, ...]` (not to be modified). Read from
   * the segment on every publish, as before. For a topic published to before, the segment words
   * they were derived from (the topic table's entry count, the subscriber bitmaps it looks up,
   * the targets' owner words; `words` = [index, value, ...]) are read here through views of
   * the mapping (the topic table, the endpoint slots), with Atomics, and the native side is asked again only when one of them changed:
   * no N-API call per publish while the subscribers stay the same. Without a view (a runtime
   * without external buffers), the native side compares them on every publish.
   */
  #targets(topic) {
    const native = this.#state.native
    let w = this.#watched.get(topic)
    if (w === undefined) {
      if (this.#watched.size >= WATCHED_MAX) return native.topicTargets(topic)
      w = { id: native.topicWatch(topic), pairs: null, words: null } // throws for a bad topic
      this.#watched.set(topic, w)
    }
    const words = w.words
    if (words !== null) {
      const table = this.#state.topics
      const slots = this.#state.registrations
      let same = true
      for (let i = 0; same && i < words.length; i += 2) {
        const at = words[i]
        same = (at < REGISTRATION_WORD ? Atomics.load(table, at) : Atomics.load(slots, at - REGISTRATION_WORD)) === words[i + 1]
      }
      if (same) return w.pairs
    }
    if (this.#state.topicsView() === null || this.#state.registrationsView() === null) {
      const changed = native.topicTargetsChanged(w.id)
      if (changed != null) w.pairs = changed
      return w.pairs
    }
    const st = native.topicWatchState(w.id) // [n, ...n numbers of targets, ...words]
    w.pairs = st.slice(1, 1 + st[0])
    w.words = Uint32Array.from(st.slice(1 + st[0]))
    return w.pairs
  }

  /**
   * Delivers a copy of the envelope to this process's own subscriptions, on a later turn. Small
   * copies go into a shared buffer (#selfCopies, a fresh one when full, never reused: a
   * subscriber may keep a Buffer that views it), not into a Buffer each.
   */
  #toSelf(env) {
    const state = this.#state
    const n = env.length
    let copies = this.#selfCopies
    let at = this.#selfCopiesUsed
    if (n > SELF_COPIES_BYTES / 8) (copies = Buffer.allocUnsafe(n)), (at = 0)
    else {
      if (copies === null || at + n > SELF_COPIES_BYTES) (copies = this.#selfCopies = Buffer.allocUnsafe(SELF_COPIES_BYTES)), (at = 0)
      this.#selfCopiesUsed = at + n
    }
    env.copy(copies, at)
    copies[at] = state.generation & 0xff
    copies[at + 1] = state.generation >>> 8
    state.later(() => this.receive(state.self, copies, at, at + n))
  }

  /** The entries of every subscription that `topic` reaches, kept until the subscriptions change. */
  #match(topic) {
    const callbacks = []
    for (const name of topicPatterns(topic)) {
      const set = this.#topics.get(name)
      if (set !== undefined) callbacks.push(...set)
    }
    if (this.#matching.size >= MATCHES_KEPT) this.#matching.clear()
    this.#matching.set(topic, callbacks)
    return callbacks
  }

  /** Calls the callbacks of every subscription matching the topic envelope `b[start..end]`. */
  receive(from, b, start, end) {
    const state = this.#state
    if ((b[start] | (b[start + 1] << 8)) !== state.generation) return // meant for this index's previous holder
    const flags = b[start + 2] // the codec kind, with REMOTE
    const topicLength = b[start + 3]
    const topicEnd = start + 4 + topicLength
    let topic = this.#lastTopic
    let callbacks = this.#lastCallbacks
    const last = this.#lastBytes
    let same = callbacks !== null && last.length === topicLength
    for (let i = 0; same && i < topicLength; i++) same = last[i] === b[start + 4 + i]
    if (!same) {
      topic = b.toString('utf8', start + 4, topicEnd)
      callbacks = this.#matching.get(topic) ?? this.#match(topic)
      this.#lastBytes = Buffer.from(b.subarray(start + 4, topicEnd))
      this.#lastTopic = topic
      this.#lastCallbacks = callbacks
    }
    if (callbacks.length === 0) return // unsubscribed while it was in flight
    const remote = (flags & REMOTE) !== 0
    const kind = flags & ~REMOTE
    let msg = null // decoded once, for the first callback that wants it
    let undecodable = false // then no callback that wants it is called
    let error = null
    for (const { callback, encoded } of callbacks) {
      try {
        if (encoded) {
          if (!remote) callback(from, topic, kind, b, topicEnd, end)
        } else if (!undecodable) {
          if (msg === null) {
            undecodable = true
            msg = { from: state.toPublic(from), topic, data: decode(kind, b, topicEnd, end) }
            undecodable = false
          }
          callback(msg)
        }
      } catch (err) {
        error ??= err
      }
    }
    if (error !== null) throw error
  }
}

module.exports = { Topics }
