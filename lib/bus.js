'use strict'
// class Bus, the EventEmitter users hold: its public methods and getters, each handing the work
// to one of the parts it is assembled from.
//
// How the parts share a bus's private state: every part is a plain class with #private fields
// of its own, built once per bus by the constructor below, holding references to what it uses:
//   BusState  (lib/state.js)     native handle, own index and generation, closed; addresses
//   Outgoing  (lib/outgoing.js)  staging, flushing, the send queue and its completions, fan-out
//   Incoming  (lib/incoming.js)  delivery start/stop, dispatch of batches, the read queue, events
//   Topics    (lib/topics.js)    subscriptions and publish()          } both use Outgoing to send
//   Requests  (lib/requests.js)  requests, handlers, pending requests } and Incoming to need delivery
//   NamedObjects (lib/objects.js) semaphores, regions and maps opened through this bus
// Each part reads the others through fields fixed at construction (one shape per class, so every
// call between them is monomorphic), and nothing is allocated per message for the split. The hot
// paths keep their calls: write() is Bus#write (BusState#target and encode inlined) calling
// Outgoing#write, which stages, as Bus#write called Bus#stage before; the dispatch loop
// (Incoming#handle) calls Topics#receive / Requests#receive* as it called Bus#handleTopic etc.
// The modules depend downward only: Incoming is below Topics and Requests, which it reaches
// through connect().

const { EventEmitter } = require('node:events')
const { fail } = require('./errors.js')
const { checkTimeoutOption } = require('./options.js')
const { encode } = require('./codec.js')
const { BusState } = require('./state.js')
const { RESOLVED, Outgoing } = require('./outgoing.js')
const { Incoming } = require('./incoming.js')
const { Topics } = require('./topics.js')
const { Requests } = require('./requests.js')
const { NamedObjects } = require('./objects.js')
const { closeAtExit } = require('./process.js')
const { busStats } = require('./stats.js')
const native = require('../binding.js')

class Bus extends EventEmitter {
  #state
  #outgoing
  #incoming
  #topics
  #requests
  #objects
  #forgetAtExit // undoes closeAtExit(this)

  constructor(nativeBus, spinMicros, maxQueuedBytes) {
    super()
    const state = (this.#state = new BusState(nativeBus, spinMicros))
    const outgoing = (this.#outgoing = new Outgoing(state, maxQueuedBytes))
    this.#forgetAtExit = closeAtExit(this)
    const incoming = (this.#incoming = new Incoming(this, state))
    this.#topics = new Topics(state, outgoing, incoming)
    this.#requests = new Requests(state, outgoing, incoming)
    incoming.connect(this.#topics, this.#requests)
    this.#objects = new NamedObjects(state, (id) => outgoing.completion(id))
  }

  /** This process's address: a worker index, or PRIMARY. */
  get index() {
    return this.#state.toPublic(this.#state.self)
  }
  /** Number of worker indices (0..workers-1). */
  get workers() {
    return this.#state.primary
  }
  /** Name of the shared-memory segment (what workers attach to). */
  get name() {
    return this.#state.native.name
  }
  get ringSize() {
    return this.#state.native.ringSize
  }
  /** Largest payload write() takes in bytes; send() takes anything up to 4 GiB - 1. */
  get maxWrite() {
    return this.#state.native.maxWrite
  }
  get closed() {
    return this.#state.closed
  }
  /**
   * How incoming messages reach this process now: 'event-loop' (its event loop is woken
   * directly; Linux), 'thread' (a delivery thread hands them over), or null (nothing subscribed).
   */
  get delivery() {
    return this.#state.closed ? null : this.#state.native.delivery
  }
  /** Messages of this process still waiting for room in a receiver's ring. */
  get queued() {
    return this.#state.native.queued
  }
  /** Payload bytes of those messages; send() rejects with ERR_QUEUE_FULL past maxQueuedBytes. */
  get queuedBytes() {
    return this.#outgoing.queuedBytes
  }
  get maxQueuedBytes() {
    return this.#outgoing.maxQueuedBytes
  }

  /**
   * Writes one message now, or nothing: returns false when the receiver's ring is full (or this
   * process still has send()s queued to it). Never blocks.
   */
  write(to, data) {
    const t = this.#state.target(to)
    const [kind, payload] = encode(data)
    if (t === -2) return this.#incoming.loop(kind, payload), true
    return this.#outgoing.write(t, kind, payload)
  }

  /**
   * Writes staged small messages into the rings now. write() stages them until the end of the
   * current microtask checkpoint; call flush() before spinning or blocking synchronously
   * (read() flushes by itself).
   */
  flush() {
    this.#outgoing.flush()
  }

  /**
   * Sends one message of any size: resolves once it is in the receiver's ring, waiting for room
   * as long as needed (or `timeout` ms: rejects with ERR_TIMEOUT if not a byte was written).
   */
  send(to, data, options) {
    try {
      const timeout = checkTimeoutOption(options)
      const t = this.#state.target(to)
      const [kind, payload] = encode(data)
      if (t === -2) return this.#incoming.loop(kind, payload), RESOLVED
      return this.#outgoing.send(t, kind, payload, timeout, false)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Sends one message to every other attached process. Resolves with the number of receivers
   * once it is in every ring.
   */
  broadcast(data, options) {
    return this.#outgoing.broadcast(data, options)
  }

  /** Addresses of the other processes attached now (PRIMARY included when attached). */
  peers() {
    return this.#state.peers()
  }

  /** Pulls the next message ({ from, data }) or null. Not while 'message' listeners exist. */
  read() {
    return this.#incoming.read()
  }

  /**
   * subscribe(callback): every plain message, as `callback({ from, data })`.
   * subscribe(topic, callback): messages published to `topic` (a trailing `*` matches every
   * topic with that prefix), as `callback({ from, topic, data })`; visible to publishers on return.
   * Returns a handle with unsubscribe().
   */
  subscribe(topic, callback) {
    if (typeof topic === 'function' && callback === undefined) {
      if (this.#state.closed) fail('ERR_CLOSED', 'the bus is closed')
      const cb = topic
      this.on('message', cb)
      return { unsubscribe: () => void this.off('message', cb) }
    }
    return this.#topics.subscribe(topic, callback)
  }

  /**
   * Delivers `data` to every process subscribed to `topic` (this one included), and to no other.
   * Resolves with the number of processes it reached.
   */
  publish(topic, data, options) {
    return this.#topics.publish(topic, data, options)
  }

  /**
   * publish() now or not at all, without a promise: writes `data` into the ring of every process
   * subscribed to `topic` (this one included) and returns true, or writes nothing and returns
   * false when any of those rings lacks room (or it is larger than one frame): then
   * `await bus.publish(topic, data)`, which waits for room.
   */
  tryPublish(topic, data) {
    return this.#topics.tryPublish(topic, data)
  }

  /**
   * Sends `data` to `to` and resolves with the answer of its handler (respond() or
   * handle(method)). Rejects with the handler's error (its message and code), or with
   * ERR_NOT_ATTACHED, ERR_PEER_GONE (it left before answering), ERR_TIMEOUT (default 30 s),
   * ERR_ABORTED. Nothing is left behind after any outcome.
   */
  request(to, data, options) {
    return this.#requests.request(to, data, options)
  }

  /**
   * Asks every other attached process; never rejects for a process that fails: resolves with
   * `{ answers: [{ from, data }], failures: [{ from, code, message }] }`.
   */
  requestAll(data, options) {
    return this.#requests.requestAll(data, options)
  }

  /** Answers requests without a method: `handler(data, { from })` returns the answer (or a promise of it). */
  respond(handler) {
    return this.handle('', handler)
  }

  /** Answers requests sent with `{ method }`. Returns a handle with unsubscribe(). */
  handle(method, handler) {
    return this.#requests.handle(method, handler)
  }

  /**
   * The named cross-process semaphore (created on first use with `permits`, default 1). A
   * permit held by a process that dies returns within about 100 ms (sooner through the
   * primary's cluster 'exit'), and the next holder sees `recovered === true`.
   */
  semaphore(name, options) {
    return this.#objects.semaphore(name, options)
  }

  /** Runs `fn(permit)` holding the named mutex; releases it when fn settles (also on throw). */
  lock(name, fn, options) {
    return this.#objects.lock(name, fn, options)
  }

  /** The named region of `size` shared bytes (created zeroed on first use). */
  region(name, size) {
    return this.#objects.region(name, size)
  }

  /** The named shared map (created on first use). */
  map(name, options) {
    return this.#objects.map(name, options)
  }

  /**
   * What is inside the cluster now, as a plain object: this process (`self`), every other index
   * (`peers`: attached, pid, generation, the rings to and from it), every process's counters,
   * every ring, and the named objects (README, "Operating it").
   */
  stats() {
    const state = this.#state
    if (state.closed) fail('ERR_CLOSED', 'the bus is closed')
    const staged = this.#outgoing.staged()
    const local = { delivery: this.delivery, queued: this.queued, queuedBytes: this.queuedBytes, stagedMessages: staged.messages, stagedBytes: staged.bytes }
    return busStats(state.native, native.busStats(state.native), local)
  }

  /** Bridges `topics` to other hosts over Redis (lib/bridge.js); returns the Bridge handle. */
  bridge(options) {
    if (this.#state.closed) fail('ERR_CLOSED', 'the bus is closed')
    return new (require('./bridge.js').Bridge)(this, this.#topics, options)
  }

  /**
   * Detaches this process. Queued send()s reject with ERR_CLOSED; messages not yet delivered
   * stay in the rings for the next holder of this index. The primary's close() also removes
   * the segment and tells every worker ('shutdown'). Idempotent.
   */
  close() {
    const state = this.#state
    if (state.closed) return
    this.flush() // what write() accepted goes out
    state.closed = true
    this.#incoming.close()
    state.native.close()
    this.#requests.close()
    this.#forgetAtExit()
    this.emit('close')
  }
}

module.exports = { Bus }
