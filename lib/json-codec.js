'use strict'
// The JSON fast path of the value codec: small values that JSON carries exactly go as JSON text
// (frame kind JSON, lib/codec.js); everything else goes through v8.serialize, as before.
//
// jsonExact(value) answers true only if JSON.parse(JSON.stringify(value)) is exactly what
// v8.deserialize(v8.serialize(value)) gives - same values, same prototypes, same key order, same
// sharing - AND the value is small enough for JSON to be the faster of the two (measured: v8 is
// as fast or faster past ~0.5-1 KB, for long strings and for many fractional numbers).
// Rules, all of which must hold (any doubt -> v8):
//   primitives  string, boolean, null; numbers that are finite and not -0.
//               undefined, bigint, symbol, function, NaN, +-Infinity, -0 -> v8.
//   arrays      Array.isArray, prototype === Array.prototype, not a Proxy; every index
//               0..length-1 present and exact (a hole or an undefined element -> v8); no other
//               own enumerable string-keyed property (Object.keys/values count === length).
//   objects     prototype === Object.prototype (and not an arguments object, not an Array whose
//               prototype was replaced) or prototype === null (and not a module namespace); not a
//               Proxy; every own enumerable string-keyed property value exact. Keys need no check:
//               every string key survives both ways, and both skip symbol keys and
//               non-enumerable properties. Date, RegExp, Map, Set, Error, boxed primitives, typed
//               arrays, ArrayBuffer, DataView, class instances, ... -> v8.
//   identity    no object reached twice: a shared sub-object or a cycle -> v8 (v8 keeps the
//               sharing, JSON would copy it).
//   size        cost <= MAX_COST units, where every object or array costs 1, every property or
//               element 1, a non-integer number 3 more, a string value 1 per 8 characters more.
//               The walk stops there, so a large value pays a bounded walk before v8.
//   depth       nesting <= MAX_DEPTH (also bounded by MAX_COST).
//   realm       checked on every call: no 'toJSON' reachable from Array.prototype (which covers
//               Object.prototype) and no index property on Array.prototype; else -> v8.
//   re-entrance a getter that calls jsonExact while a walk runs gets false (v8) for that call.
// Getters: the walker reads every property once and JSON.stringify reads it again, so an own
// getter runs twice (v8 runs it once). A getter whose second result differs sends that result.
//
// The JSON text is always well-formed UTF-16 (JSON.stringify escapes lone surrogates), so writing
// it into the ring as UTF-8 (native writeString, buf.write) is lossless.
// __test__/codec.spec.js checks the round trip against v8's for thousands of generated values.

const { isProxy, isArgumentsObject, isModuleNamespaceObject } = require('node:util').types

let MAX_COST = 128 // see "size" above: the crossover with v8 for every shape measured
let MAX_DEPTH = 64
let CHECK_EXOTICS = true // refuse proxies and arguments objects (v8 refuses them)
const LINEAR = 32 // objects tracked in a plain array (linear search) before switching to a Set

const getProto = Object.getPrototypeOf
const keysOf = Object.keys
const valuesOf = Object.values
const isArray = Array.isArray
const floor = Math.floor
const ITERATOR = Symbol.iterator
const OBJECT_PROTO = Object.prototype
const ARRAY_PROTO = Array.prototype

let busy = false
let budget = 0 // cost units left in this walk
const seen = new Array(LINEAR).fill(undefined) // the first LINEAR objects of the walk
let nSeen = 0
let seenSet = null // the following ones

/** One property or element value: true if exact (objects are walked); charges its cost. */
function exactMember(v, depth) {
  if (typeof v === 'string') {
    budget -= v.length >>> 3
    return true
  }
  if (typeof v === 'boolean') return true
  if (typeof v === 'number') {
    if (v - v !== 0 || (v === 0 && 1 / v < 0)) return false // NaN, +-Infinity, -0
    if (v !== floor(v)) budget -= 3 // JSON prints and parses every digit of a fraction
    return true
  }
  if (typeof v === 'object') return v === null || walkObject(v, depth + 1)
  return false // undefined (or a hole), bigint, symbol, function
}

/** True if the object `o` (not null) may go as JSON; see the rules above. */
function walkObject(o, depth) {
  if (--budget < 0 || depth > MAX_DEPTH) return false
  if (CHECK_EXOTICS && isProxy(o)) return false
  // Identity: every object must be reached once only.
  if (nSeen < LINEAR) {
    for (let i = 0; i < nSeen; i++) if (seen[i] === o) return false
    seen[nSeen++] = o
  } else {
    if (seenSet === null) seenSet = new Set(seen)
    if (seenSet.has(o)) return false
    seenSet.add(o)
  }
  const proto = getProto(o)
  if (proto === ARRAY_PROTO) {
    if (!isArray(o)) return false
    const n = o.length
    if ((budget -= n) < 0) return false
    for (let i = 0; i < n; i++) if (!exactMember(o[i], depth)) return false
    // No hole (an absent index reads undefined, refused above): the own enumerable properties
    // number length + the extra named ones. Object.keys is the cheaper for short arrays.
    return (n <= 16 ? keysOf(o) : valuesOf(o)).length === n
  }
  if (proto === OBJECT_PROTO) {
    if (isArray(o) || (CHECK_EXOTICS && ITERATOR in o && isArgumentsObject(o))) return false
  } else if (proto !== null || isArray(o) || isModuleNamespaceObject(o)) return false
  // for-in + o[k] reads fields through V8's enum cache (no key array, no megamorphic loads). It
  // would also list enumerable inherited keys (only from a polluted Object.prototype): checking
  // their values too only makes the walker stricter.
  for (const k in o) if (--budget < 0 || !exactMember(o[k], depth)) return false
  return true
}

/**
 * True if JSON.parse(JSON.stringify(value)) is exactly v8.deserialize(v8.serialize(value)) and
 * the value is small enough for JSON to be the faster.
 */
function jsonExact(value) {
  switch (typeof value) {
    case 'string':
      return value.length <= MAX_COST * 8
    case 'boolean':
      return true
    case 'number':
      return value - value === 0 && (value !== 0 || 1 / value > 0)
    case 'object':
      break
    default:
      return false
  }
  if (value === null) return true
  if (busy || 'toJSON' in ARRAY_PROTO || ARRAY_PROTO.length !== 0) return false
  busy = true
  budget = MAX_COST
  try {
    return walkObject(value, 0) && budget >= 0
  } finally {
    // Drop the references: the codec keeps no object alive.
    seenSet = null
    for (let i = 0; i < nSeen; i++) seen[i] = undefined
    nSeen = 0
    busy = false
  }
}

/** For tests and benchmarks: change the walker's bounds; returns the previous ones. */
function setLimits({ maxCost = MAX_COST, maxDepth = MAX_DEPTH, checkExotics = CHECK_EXOTICS } = {}) {
  const previous = { maxCost: MAX_COST, maxDepth: MAX_DEPTH, checkExotics: CHECK_EXOTICS }
  MAX_COST = maxCost
  MAX_DEPTH = maxDepth
  CHECK_EXOTICS = checkExotics
  return previous
}

module.exports = { jsonExact, setLimits }
