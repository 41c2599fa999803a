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

function checkOptions(options, name) {
  if (options === undefined) return {}
  if (options === null || typeof options !== 'object') fail('ERR_INVALID_ARG', `${name} must be an object`)
  return options
}

/** The optional `timeout` (ms) of send(), broadcast() and publish(). */
function checkTimeoutOption(options) {
  const { timeout } = checkOptions(options, 'options')
  if (timeout !== undefined) checkInt('timeout', timeout, 0, 2 ** 31 - 1)
  return timeout
}

function checkSignal(signal) {
  if (signal !== undefined && !(signal instanceof AbortSignal)) fail('ERR_INVALID_ARG', 'signal must be an AbortSignal')
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

module.exports = { MAX_WORKERS, checkInt, checkOptions, checkTimeoutOption, checkSignal, checkRequestOptions, defaultRingSize }
