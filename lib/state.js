'use strict'
// What every part of a bus reads: its native handle, who it is (index, generation), the primary's
// index, whether it is closed; with the translation between public addresses (PRIMARY) and
// native indices. One instance per bus, shared by the parts that lib/bus.js assembles.

const { fail } = require('./errors.js')

/** Address of the primary process. */
const PRIMARY = -1

class BusState {
  constructor(nativeBus, spinMicros) {
    this.native = nativeBus
    this.primary = nativeBus.endpoints - 1 // native index of the primary
    this.self = nativeBus.index // native index of this process
    this.generation = nativeBus.generation // this attachment's generation (u16), checked on envelopes
    this.spin = spinMicros
    this.closed = false
    this.registrations = undefined // see registrationsView()
    this.topics = undefined // see topicsView()
  }

  /**
   * Uint32Arrays over two small regions of the mapping, the endpoint slots and the topic table
   * (NativeBus#registrationsView, #topicsView), made once per bus, or null where the runtime
   * cannot view external memory: for reading, with Atomics, words the native side names (topic
   * targets, holders) without an N-API call each time.
   */
  registrationsView() {
    if (this.registrations === undefined) {
      const ab = this.native.registrationsView()
      this.registrations = ab === null ? null : new Uint32Array(ab)
    }
    return this.registrations
  }

  topicsView() {
    if (this.topics === undefined) {
      const ab = this.native.topicsView()
      this.topics = ab === null ? null : new Uint32Array(ab)
    }
    return this.topics
  }

  toPublic(i) {
    return i === this.primary ? PRIMARY : i
  }

  /** Validates an address; returns the native index, or -2 for this process itself. */
  target(to) {
    if (this.closed) fail('ERR_CLOSED', 'the bus is closed')
    if (typeof to !== 'number' || !Number.isInteger(to)) fail('ERR_INVALID_ARG', `address must be an integer worker index or PRIMARY, got ${typeof to === 'number' ? to : typeof to}`)
    if (to !== PRIMARY && (to < 0 || to >= this.primary)) fail('ERR_INDEX_OUT_OF_RANGE', `address ${to} is out of range: workers are 0..${this.primary - 1}, or PRIMARY`)
    const n = to === PRIMARY ? this.primary : to
    return n === this.self ? -2 : n
  }

  /** Addresses of the other processes attached now (PRIMARY included when attached). */
  peers() {
    const me = this.self
    return this.native.attached().filter((i) => i !== me).map((i) => this.toPublic(i))
  }

  #later = [] // functions for the next turn, in order: one setImmediate for all of them

  /** Runs `fn` on a later turn of the event loop, unless the bus is closed by then. */
  later(fn) {
    if (this.#later.length === 0) setImmediate(this.#runLater)
    this.#later.push(fn)
  }

  /** Runs what later() queued; a throw does not stop the others and is rethrown after them. */
  #runLater = () => {
    const fns = this.#later
    this.#later = []
    let error = null
    for (const fn of fns) {
      if (this.closed) break
      try {
        fn()
      } catch (err) {
        error ??= err
      }
    }
    if (error !== null) throw error
  }
}

module.exports = { PRIMARY, BusState }
