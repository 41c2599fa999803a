'use strict'
// The incoming path of a bus: delivery started and stopped as listeners come and go, batches of
// records dispatched by kind (plain messages, topic, request and response envelopes, events),
// the queue of plain messages nobody listens to yet, and read() for pollers.
// Topic and request envelopes go to the parts above this one, handed over by connect().

const { fail } = require('./errors.js')
const { TOPIC, REQUEST, RESPONSE, PEER_UP, PEER_DOWN, LOST, CORRUPT, CLOSED, RECORD_HEADER, RECORD_LARGE, decode, isMessage, decodeLocal } = require('./codec.js')
const { flushStaged } = require('./outgoing.js')

// Runtimes that load N-API addons but whose libuv functions are stubs (Bun aborts in
// uv_poll_init) deliver on a thread instead of the event loop. (Deno's libuv functions work.)
if (process.versions.bun !== undefined) require('../binding.js').useDeliveryThread?.() // Linux only: elsewhere delivery is a thread anyway

class Incoming {
  #bus // the EventEmitter users hold: messages and events are emitted on it
  #state
  #delivering = false
  #updateSoon = false // an update() is scheduled (updateSoon())
  #queue = [] // plain messages waiting for read() or the next 'message' listener
  #polled = null // [records, ...large payloads] being handed out by read()
  #polledAt = 0 // next record in #polled[0] (or in the batch being dispatched)
  #largeAt = 1 // next large payload
  #topics = null // lib/topics.js Topics: TOPIC envelopes
  #requests = null // lib/requests.js Requests: REQUEST and RESPONSE envelopes, peers that leave
  #watch // unref'd once-a-second check that the cluster runs, subscribed or not (null once it ended)

  constructor(bus, state) {
    this.#bus = bus
    this.#state = state
    this.#watch = setInterval(() => {
      const s = state.native.clusterState()
      if (s !== 0) this.#shutdown(s === 2 ? 1 : 0)
    }, 1000).unref()
    // Delivery runs while anything needs incoming records: 'message' listeners, topic
    // callbacks, request handlers, pending requests.
    bus.on('newListener', (event) => {
      if (event !== 'message') return
      this.update(1)
      if (this.#queue.length > 0) setImmediate(() => this.#drainQueue())
    })
    bus.on('removeListener', (event) => {
      if (event === 'message') this.update()
    })
  }

  /** The parts that take topic and request envelopes (and whose state keeps delivery running). */
  connect(topics, requests) {
    this.#topics = topics
    this.#requests = requests
  }

  /** A message this process wrote to itself, delivered on a later turn. */
  loop(kind, payload) {
    const state = this.#state
    const data = decodeLocal(kind, payload)
    state.later(() => this.#message({ from: state.toPublic(state.self), data }))
  }

  /** Bus#read. */
  read() {
    if (this.#state.closed) fail('ERR_CLOSED', 'the bus is closed')
    if (this.#bus.listenerCount('message') > 0) fail('ERR_SUBSCRIBED', 'read() cannot be used while a subscription delivers messages')
    // A poller may never yield to the microtasks that flush staged writes, its own or those of
    // other buses of this process: flush them here.
    flushStaged()
    if (this.#updateSoon) this.update() // a poller does not wait for the scheduled stop
    if (this.#queue.length > 0) return this.#queue.shift()
    if (this.#delivering) return null // topics or requests keep delivery running: plain messages arrive in #queue
    for (;;) {
      if (this.#polled === null || this.#polledAt >= this.#polled[0].length) {
        // One record per poll: the next poll commits exactly what was handed out.
        this.#polled = this.#state.native.poll(1)
        this.#polledAt = 0
        this.#largeAt = 1
        if (this.#polled === null) return this.#queue.length > 0 ? this.#queue.shift() : null
      }
      this.#handle(this.#polled)
      if (this.#queue.length > 0) return this.#queue.shift()
    }
  }

  /** Starts or stops delivery as what needs it comes and goes. */
  update(extraListeners = 0) {
    const state = this.#state
    const want = !state.closed && (this.#bus.listenerCount('message') + extraListeners > 0 || this.#topics.active || this.#requests.active)
    if (want && !this.#delivering) {
      this.#delivering = true
      const rest = this.#polled // what read() had polled but not handed out yet, first
      this.#polled = null
      if (rest !== null) this.#dispatch(rest, this.#polledAt, this.#largeAt)
      state.native.start((buffers) => this.#dispatch(buffers, 0, 1), state.spin)
    } else if (!want && this.#delivering) {
      this.#delivering = false
      state.native.stop()
    }
  }

  /**
   * update() on the next turn of the event loop: for what stops needing delivery and may well
   * need it again at once (the last pending request settles, and its continuation sends the
   * next one): stopping and starting delivery costs a socket and several system calls.
   */
  updateSoon() {
    if (this.#updateSoon) return
    this.#updateSoon = true
    setImmediate(() => {
      this.#updateSoon = false
      this.update()
    })
  }

  /** The bus is closing: delivery ends with it. */
  close() {
    this.#delivering = false
    clearInterval(this.#watch)
  }

  /** Handles every record of a batch. Listener errors are rethrown after it, so the batch is acknowledged. */
  #dispatch(buffers, at, largeAt) {
    if (this.#state.closed) return // left in the ring for the next holder of this index: not committed
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
    if (isMessage(kind)) this.#message({ from: this.#state.toPublic(from), data: decode(kind, batch, start, end) })
    else if (kind === TOPIC) this.#topics.receive(from, batch, start, end)
    else if (kind === REQUEST) this.#requests.receiveRequest(from, batch, start, end)
    else if (kind === RESPONSE) this.#requests.receiveResponse(from, batch, start, end)
    else this.#event(kind, from, len === 4 ? batch.readUInt32LE(start) : undefined)
  }

  #message(msg) {
    if (this.#queue.length === 0 && this.#bus.listenerCount('message') > 0) this.#bus.emit('message', msg)
    else this.#queue.push(msg)
  }

  #drainQueue() {
    while (this.#queue.length > 0 && this.#bus.listenerCount('message') > 0) this.#bus.emit('message', this.#queue.shift())
  }

  #event(kind, from, value) {
    const address = this.#state.toPublic(from)
    const bus = this.#bus
    if (kind === PEER_UP) bus.emit('attach', address)
    else if (kind === PEER_DOWN) {
      this.#requests.peerGone(from, address)
      bus.emit('detach', address)
    } else if (kind === LOST) bus.emit('lost', { from: address, count: value, reason: 'incomplete' })
    else if (kind === CORRUPT) bus.emit('lost', value === undefined ? { from: address, reason: 'corrupt' } : { from: address, bytes: value, reason: 'corrupt' })
    else if (kind === CLOSED) this.#shutdown(value)
  }

  /** 'shutdown', once, whether delivery or the once-a-second check noticed it. */
  #shutdown(value) {
    if (this.#watch === null) return
    clearInterval(this.#watch)
    this.#watch = null
    this.#bus.emit('shutdown', { reason: value === 1 ? 'primary-died' : 'closed' })
  }
}

module.exports = { Incoming }
