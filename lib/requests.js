'use strict'
// Request/response: request() and requestAll() with their pending requests (settled by the
// answer, a timeout, an abort, the responder leaving or close()), the handlers of respond() and
// handle(method), and the request and response envelopes on the wire.

const v8 = require('node:v8')
const { ClusterShmError, RemoteError, fail } = require('./errors.js')
const { checkRequestOptions } = require('./options.js')
const { RESOLVED } = require('./outgoing.js')
const { VALUE, REQUEST, RESPONSE, encode, decode, envelope } = require('./codec.js')

const HANDLES_REQUESTS = 1 // src/core/layout.rs

// Both envelopes are built in the buffer every envelope reuses (lib/codec.js envelope): each is
// written out (or copied for this process itself) before the next is built.

function requestEnvelope(generation, id, kind, method, payload, own) {
  const [b, methodLength] = envelope(12, method, payload)
  b.writeUInt16LE(generation, 0)
  b[2] = kind
  b.writeUInt32LE(id, 4)
  b.writeUInt16LE(methodLength, 8)
  b.writeUInt16LE(own, 10) // the requester's generation: where its answer goes
  return b
}

function responseEnvelope(generation, id, kind, status, payload) {
  const [b] = envelope(8, '', payload)
  b.writeUInt16LE(generation, 0)
  b[2] = kind
  b[3] = status
  b.writeUInt32LE(id, 4)
  return b
}

class Requests {
  #state
  #outgoing
  #incoming
  #handlers = new Map() // method ('' = respond()) -> handler
  #pending = new Map() // request id -> { to, deadline, settle }
  #nextRequest = 0
  #calls = [] // handler calls of the batch being dispatched, run by one microtask (#runCalls)
  #registration = [] // per native index: its [owner, flags] words in the segment view
  // One timer for every pending request, due at the earliest deadline (#timerAt): a timer per
  // request cost more than the rest of a small request. Ref'd only while requests are pending.
  #timer = null
  #timerAt = Infinity

  constructor(state, outgoing, incoming) {
    this.#state = state
    this.#outgoing = outgoing
    this.#incoming = incoming
  }

  /** Whether handlers or pending requests need delivery. */
  get active() {
    return this.#handlers.size > 0 || this.#pending.size > 0
  }

  /** Bus#request. */
  request(to, data, options) {
    try {
      const { timeout, signal, method } = checkRequestOptions(options)
      const state = this.#state
      const t = state.target(to)
      const [kind, payload] = encode(data)
      if (signal?.aborted) fail('ERR_ABORTED', 'the request was aborted')
      let generation = state.generation
      if (t !== -2) {
        const holder = this.#holder(t) // generation + flags * 65536, or -1
        if (holder < 0) fail('ERR_NOT_ATTACHED', `no process is attached at ${to}`)
        if ((Math.floor(holder / 65536) & HANDLES_REQUESTS) === 0) throw new RemoteError(`no handler for requests at ${to}`, 'ERR_NO_HANDLER', to)
        generation = holder % 65536
      }
      const id = (this.#nextRequest = (this.#nextRequest + 1) >>> 0)
      return new Promise((resolve, reject) => {
        const onAbort = signal === undefined ? undefined : () => settle(new ClusterShmError('ERR_ABORTED', 'the request was aborted'))
        const settle = (err, value) => {
          if (!this.#pending.delete(id)) return
          signal?.removeEventListener('abort', onAbort)
          if (this.#pending.size === 0) {
            this.#timer?.unref()
            // Only the last one can stop delivery; on a later turn, since the next request is
            // often sent from this answer's continuation and would start it again at once.
            this.#incoming.updateSoon()
          }
          if (err) reject(err)
          else resolve(value)
        }
        const deadline = performance.now() + timeout
        this.#pending.set(id, { to: t, generation, deadline, timeout, address: to, settle })
        if (this.#pending.size === 1) this.#timer?.ref()
        if (deadline < this.#timerAt) this.#arm(deadline)
        signal?.addEventListener('abort', onAbort, { once: true })
        if (this.#pending.size === 1) this.#incoming.update() // only the first one can start delivery
        const env = requestEnvelope(generation, id, kind, method, payload, state.generation)
        if (t === -2) {
          const mine = Buffer.from(env)
          return state.later(() => this.receiveRequest(state.self, mine, 0, mine.length))
        }
        const sent = this.#outgoing.post(t, REQUEST, env, undefined)
        if (sent !== RESOLVED) sent.then(undefined, (err) => settle(err))
      })
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * What NativeBus#holderInfo(t) says, read from the registrations view when there is one.
   * The 64-bit owner word is read as two loads, pid (low half) first: a change between them
   * cannot make up a holder. A generation is only ever stored together with a nonzero pid (an
   * attach); a detach zeroes the pid and keeps the generation (src/core/layout.rs,
   * Registration). So a nonzero pid, then generation G, means that G held the index at some
   * instant between the two loads: what one 64-bit load at that instant would have said of the
   * generation (the pid may be its predecessor's), so no false ERR_PEER_GONE in peerGone() and
   * no generation nobody held. Keep this order: with the generation first, a freed index's old G
   * could be joined to a successor's pid. (The flags word, read after, may still be the
   * predecessor's for a moment, as natively.) The low half is the u32 at words[0] on the
   * little-endian targets the addon is built for.
   */
  #holder(t) {
    const slots = this.#state.registrationsView()
    if (slots === null) return this.#state.native.holderInfo(t)
    const words = (this.#registration[t] ??= this.#state.native.registrationWords(t))
    if (Atomics.load(slots, words[0]) === 0) return -1 // no pid: free
    return (Atomics.load(slots, words[0] + 1) & 0xffff) + Atomics.load(slots, words[1]) * 65536
  }

  /** (Re)arms the requests' timer for `deadline` (a performance.now() time). */
  #arm(deadline) {
    clearTimeout(this.#timer)
    this.#timerAt = deadline
    this.#timer = setTimeout(() => this.#expire(), Math.max(1, Math.ceil(deadline - performance.now())))
  }

  /** Rejects the requests past their deadline with ERR_TIMEOUT, and arms for the next one. */
  #expire() {
    this.#timer = null
    this.#timerAt = Infinity
    const now = performance.now()
    let next = Infinity
    for (const [, p] of this.#pending) {
      if (p.deadline <= now) p.settle(new ClusterShmError('ERR_TIMEOUT', `no answer from ${p.address} within ${p.timeout} ms`))
      else if (p.deadline < next) next = p.deadline
    }
    if (next !== Infinity) this.#arm(next)
  }

  /** Bus#requestAll. */
  requestAll(data, options) {
    try {
      checkRequestOptions(options)
      if (this.#state.closed) fail('ERR_CLOSED', 'the bus is closed')
      const targets = this.#state.peers()
      const results = targets.map((to) =>
        this.request(to, data, options).then(
          (value) => ({ from: to, data: value }),
          (err) => ({ from: to, code: err.code ?? 'ERR_REMOTE', message: err.message, failed: true }),
        ),
      )
      return Promise.all(results).then((all) => ({
        answers: all.filter((r) => !r.failed),
        failures: all.filter((r) => r.failed).map(({ failed, ...r }) => r),
      }))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Bus#handle (and respond(), method ''). */
  handle(method, handler) {
    if (typeof method !== 'string') fail('ERR_INVALID_ARG', 'method must be a string')
    if (typeof handler !== 'function') fail('ERR_INVALID_ARG', 'handler must be a function')
    const state = this.#state
    if (state.closed) fail('ERR_CLOSED', 'the bus is closed')
    this.#handlers.set(method, handler)
    state.native.setHandlesRequests(true) // requesters check this before they send
    this.#incoming.update()
    return {
      unsubscribe: () => {
        if (this.#handlers.get(method) === handler) this.#handlers.delete(method)
        if (this.#handlers.size === 0 && !state.closed) state.native.setHandlesRequests(false)
        this.#incoming.update()
      },
    }
  }

  /** Runs the handler of the request envelope `b[start..end]` and sends its answer back. */
  receiveRequest(from, b, start, end) {
    const state = this.#state
    if (b.readUInt16LE(start) !== state.generation) return // meant for this index's previous holder
    const kind = b[start + 2]
    const id = b.readUInt32LE(start + 4)
    const methodEnd = start + 12 + b.readUInt16LE(start + 8)
    const method = b.toString('utf8', start + 12, methodEnd)
    // The requester's generation, so the answer cannot reach a successor of it: from the
    // envelope (0 there only after 65536 attaches at that index: then asked of the segment).
    let back = from === state.self ? state.generation : b[start + 10] | (b[start + 11] << 8)
    if (back === 0) {
      const holder = state.native.holderInfo(from)
      if (holder < 0) return // the requester left
      back = holder % 65536
    }
    const handler = this.#handlers.get(method) ?? (method === '' ? undefined : this.#handlers.get('*'))
    const reply = (status, value) => {
      if (state.closed) return
      let env
      try {
        const [k, payload] = encode(value)
        env = responseEnvelope(back, id, k, status, payload)
      } catch (err) {
        env = responseEnvelope(back, id, VALUE, 1, v8.serialize({ message: `answer cannot be serialized: ${err.message}`, code: 'ERR_UNSERIALIZABLE' }))
      }
      if (from === state.self) {
        const mine = Buffer.from(env)
        return state.later(() => this.receiveResponse(from, mine, 0, mine.length))
      }
      const sent = this.#outgoing.post(from, RESPONSE, env, undefined)
      if (sent !== RESOLVED) sent.catch(() => {}) // the requester left: nobody to tell
    }
    if (handler === undefined) return reply(1, { message: `no handler for ${method === '' ? 'requests' : `method "${method}"`} at ${state.toPublic(state.self)}`, code: 'ERR_NO_HANDLER' })
    let data
    try {
      data = decode(kind, b, methodEnd, end)
    } catch (err) {
      return reply(1, { message: err.message, code: 'ERR_UNSERIALIZABLE' })
    }
    const failed = (err) => reply(1, { message: String(err?.message ?? err), code: err?.code ?? 'ERR_REMOTE', name: err?.name })
    // The handler runs on a microtask, as it always did (one microtask for the handlers of a
    // batch, in order: queueMicrotask costs an async resource per call); a plain value is
    // answered right away, without the two promises a .then() chain costs per request.
    if (this.#calls.push(() => {
      let value
      let then
      try {
        value = handler(data, { from: state.toPublic(from), method })
        then = value !== null && (typeof value === 'object' || typeof value === 'function') ? value.then : undefined
      } catch (err) {
        return failed(err)
      }
      if (typeof then === 'function') Promise.resolve(value).then((v) => reply(0, v), failed)
      else reply(0, value)
    }) === 1) queueMicrotask(() => this.#runCalls())
  }

  /** Runs the handler calls queued by receiveRequest(), each on its own (a throw is answered). */
  #runCalls() {
    const calls = this.#calls
    this.#calls = []
    let error = null
    for (let i = 0; i < calls.length; i++) {
      try {
        calls[i]()
      } catch (err) {
        error ??= err
      }
    }
    if (error !== null) throw error
  }

  /** Settles the pending request that the response envelope `b[start..end]` answers. */
  receiveResponse(from, b, start, end) {
    const state = this.#state
    if (b.readUInt16LE(start) !== state.generation) return // meant for this index's previous holder
    const id = b.readUInt32LE(start + 4)
    const pending = this.#pending.get(id)
    if (pending === undefined || pending.to !== from && !(from === state.self && pending.to === -2)) return // late: timed out or aborted
    let value
    try {
      value = decode(b[start + 2], b, start + 8, end)
    } catch (err) {
      return pending.settle(new ClusterShmError('ERR_UNSERIALIZABLE', `answer cannot be decoded: ${err.message}`))
    }
    if (b[start + 3] === 0) return pending.settle(null, value)
    const err = new RemoteError(value?.message ?? 'remote handler failed', value?.code ?? 'ERR_REMOTE', state.toPublic(from))
    pending.settle(err)
  }

  /**
   * A process at native index `from` left: what was asked of it gets no answer. Requests sent
   * to the holder there now (a successor that attached before this event was handled, so the
   * request carries its generation) are still answered by it.
   */
  peerGone(from, address) {
    const holder = this.#holder(from)
    const current = holder < 0 ? -1 : holder % 65536
    for (const [, p] of this.#pending) if (p.to === from && p.generation !== current) p.settle(new ClusterShmError('ERR_PEER_GONE', `${address} left before answering`))
  }

  /** The bus is closing: every pending request rejects with ERR_CLOSED. */
  close() {
    for (const [, p] of this.#pending) p.settle(new ClusterShmError('ERR_CLOSED', 'the bus was closed'))
    clearTimeout(this.#timer)
    this.#timer = null
    this.#timerAt = Infinity
  }
}

module.exports = { Requests }
