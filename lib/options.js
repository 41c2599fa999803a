'use strict'
// Checks of the arguments and options users pass, and the limits and defaults of a segment.

const { fail } = require('./errors.js')

const MAX_WORKERS = 256
const RING_BUDGET = 64 << 20

function checkInt(name, value, min, max) {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    fail('ERR_INVALID_ARG', `${name} must be an integer, got ${typeof value === 'number' ? value : typeof value}`)
  }
  if (value < min || value > max) fail('ERR_INVALID_ARG', `${name} must be in ${min}..${max}, got ${value}`)
  return value
}

/**
 * A plain copy of an options object: its getters (and a Proxy's traps) run once, here, so that
 * one that throws, or a revoked Proxy, is an ERR_INVALID_ARG and not a stray TypeError later.
 */
function checkOptions(options, name) {
  if (options === undefined) return {}
  if (options === null || typeof options !== 'object') fail('ERR_INVALID_ARG', `${name} must be an object`)
  const copy = {}
  try {
    for (const key in options) copy[key] = options[key]
  } catch (err) {
    fail('ERR_INVALID_ARG', `${name} could not be read: ${err?.message}`)
  }
  return copy
}

// %TypedArray%.prototype's getters read the object's internal slots: a Proxy (revoked or not)
// cannot fake them, and they never throw (undefined / 0 for anything that is not a typed array).
const typedArray = Object.getPrototypeOf(Uint8Array.prototype)
const typedArrayName = Object.getOwnPropertyDescriptor(typedArray, Symbol.toStringTag).get
const typedArrayLength = Object.getOwnPropertyDescriptor(typedArray, 'length').get

/** Whether a view of length 0 is one whose buffer was transferred or detached. */
function isDetached(view) {
  if (typedArrayLength.call(view) !== 0) return false
  try {
    new Uint8Array(view.buffer) // throws on a detached ArrayBuffer
    return false
  } catch {
    return true
  }
}

/**
 * Whether a payload goes as raw bytes: a real (not a Proxy of one) Buffer or plain Uint8Array.
 * Other typed arrays, subclasses of Uint8Array included, go through v8.serialize. A detached
 * view is refused (ERR_INVALID_ARG) rather than sent as 0 bytes. The common case, a non-empty
 * Buffer, costs the slot read and one branch.
 */
function isPayloadBytes(data) {
  if (typedArrayName.call(data) !== 'Uint8Array') return false
  if (data.length === 0 && isDetached(data)) fail('ERR_INVALID_ARG', 'the payload is a view of a detached ArrayBuffer')
  return Buffer.isBuffer(data) || Object.getPrototypeOf(data) === Uint8Array.prototype
}

/** region.write's bytes: any real Uint8Array (subclasses included), not detached. */
function checkBytes(bytes) {
  if (typedArrayName.call(bytes) !== 'Uint8Array') fail('ERR_INVALID_ARG', 'bytes must be a Buffer or Uint8Array (not a Proxy of one)')
  if (isDetached(bytes)) fail('ERR_INVALID_ARG', 'bytes is a view of a detached ArrayBuffer')
  return bytes
}

/** masterInit's and workerInit's `maxQueuedBytes`: bytes of send()s one bus may have queued. */
function checkQueueLimit(options) {
  return checkInt('maxQueuedBytes', options.maxQueuedBytes ?? 64 << 20, 0, Number.MAX_SAFE_INTEGER)
}

/** The optional `timeout` (ms) of send(), broadcast() and publish(). */
function checkTimeoutOption(options) {
  const { timeout } = checkOptions(options, 'options')
  if (timeout !== undefined) checkInt('timeout', timeout, 0, 2 ** 31 - 1)
  return timeout
}

// AbortSignal.prototype.aborted's getter is a brand check: it throws for anything but a real
// AbortSignal (a Proxy of one, revoked or not, included), whose methods would throw later.
const abortedOf = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted').get

function checkSignal(signal) {
  if (signal === undefined) return
  try {
    abortedOf.call(signal)
  } catch {
    fail('ERR_INVALID_ARG', 'signal must be an AbortSignal')
  }
}

function checkRequestOptions(options) {
  const { timeout = 30000, signal, method = '' } = checkOptions(options, 'options')
  checkInt('timeout', timeout, 0, 2 ** 31 - 1)
  if (typeof method !== 'string' || Buffer.byteLength(method) > 65535) fail('ERR_INVALID_ARG', 'method must be a string of at most 65535 bytes')
  checkSignal(signal)
  return { timeout, signal, method }
}

/** Rings per ordered pair of endpoints: a default that keeps the segment near 64 MiB. */
function defaultRingSize(workers) {
  const rings = (workers + 1) * workers
  let size = 1 << 20
  while (size > 64 << 10 && size * rings > RING_BUDGET) size >>= 1
  return size
}

module.exports = { MAX_WORKERS, checkInt, checkOptions, checkQueueLimit, isPayloadBytes, checkBytes, checkTimeoutOption, checkSignal, checkRequestOptions, defaultRingSize }
