'use strict'
// Generated values for the codec tests (__test__/codec.spec.js, fixtures/codec-bus.js): plain
// JSON-like trees, trees with every tricky case injected at random depth (Map, Set, Date, RegExp,
// errors, boxed primitives, typed arrays, class instances, toJSON, holes, extra array properties,
// undefined, shared references, cycles, -0, NaN, null prototypes, odd keys, lone surrogates,
// getters, dictionary mode), and values v8.serialize refuses. generate(seed, n) gives the same
// values for the same seed in every process.
//
// same(a, b) is a deep equality strict enough to tell JSON's round trip from v8's: typeof and
// Object.is for primitives (NaN, -0), prototypes, the internal class, own keys in order
// (Reflect.ownKeys: holes, extra array properties, undefined-valued properties), property
// descriptors, Date/RegExp/boxed/Map/Set/ArrayBuffer/typed-array contents, and a bijection
// between the two graphs' objects (a shared sub-object or a cycle must be shared the same way).

const v8 = require('node:v8')

const toTag = (x) => Object.prototype.toString.call(x)

function same(a, b, path, st) {
  if (typeof a !== typeof b) return `${path}: typeof ${typeof a} vs ${typeof b}`
  if (typeof a !== 'object' && typeof a !== 'function') return Object.is(a, b) ? null : `${path}: ${fmt(a)} vs ${fmt(b)}`
  if (a === null || b === null) return a === b ? null : `${path}: null vs object`
  if (st.ab.has(a)) return st.ab.get(a) === b ? null : `${path}: shared reference not preserved`
  if (st.ba.has(b)) return `${path}: shared reference not preserved (other side)`
  st.ab.set(a, b)
  st.ba.set(b, a)
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return `${path}: prototype ${protoName(a)} vs ${protoName(b)}`
  if (toTag(a) !== toTag(b)) return `${path}: ${toTag(a)} vs ${toTag(b)}`
  let r
  if (a instanceof Date) r = Object.is(a.getTime(), b.getTime()) ? null : `${path}: date`
  else if (a instanceof RegExp) r = a.source === b.source && a.flags === b.flags && a.lastIndex === b.lastIndex ? null : `${path}: regexp`
  else if (a instanceof Number || a instanceof String || a instanceof Boolean || a instanceof BigInt) {
    r = Object.is(a.valueOf(), b.valueOf()) ? null : `${path}: boxed ${fmt(a.valueOf())} vs ${fmt(b.valueOf())}`
  } else if (a instanceof Map) {
    if (a.size !== b.size) return `${path}: map size`
    const ea = [...a]
    const eb = [...b]
    for (let i = 0; i < ea.length && !r; i++) r = same(ea[i][0], eb[i][0], `${path}<key ${i}>`, st) || same(ea[i][1], eb[i][1], `${path}<value ${i}>`, st)
  } else if (a instanceof Set) {
    if (a.size !== b.size) return `${path}: set size`
    const ea = [...a]
    const eb = [...b]
    for (let i = 0; i < ea.length && !r; i++) r = same(ea[i], eb[i], `${path}<${i}>`, st)
  } else if (a instanceof ArrayBuffer) {
    r = Buffer.from(a).equals(Buffer.from(b)) ? null : `${path}: ArrayBuffer bytes`
  } else if (ArrayBuffer.isView(a)) {
    // Node's deserializer makes views onto the input buffer where alignment allows (so byteOffset
    // and .buffer depend on where the payload lay): compare the viewed bytes.
    const va = Buffer.from(a.buffer, a.byteOffset, a.byteLength)
    const vb = Buffer.from(b.buffer, b.byteOffset, b.byteLength)
    r = va.equals(vb) ? null : `${path}: view bytes`
  }
  if (r) return r
  // Own properties, in order, with their descriptors.
  const ka = Reflect.ownKeys(a)
  const kb = Reflect.ownKeys(b)
  if (ka.length !== kb.length || ka.some((k, i) => k !== kb[i])) return `${path}: keys [${ka.map(String)}] vs [${kb.map(String)}]`
  for (const k of ka) {
    const da = Object.getOwnPropertyDescriptor(a, k)
    const db = Object.getOwnPropertyDescriptor(b, k)
    const p = `${path}.${String(k)}`
    if (('value' in da) !== ('value' in db)) return `${p}: data vs accessor`
    if (da.enumerable !== db.enumerable || da.writable !== db.writable || da.configurable !== db.configurable) return `${p}: attributes`
    if ('value' in da) {
      if (ArrayBuffer.isView(a) && typeof k === 'string' && /^\d+$/.test(k)) {
        if (!Object.is(da.value, db.value)) return `${p}: element`
        continue
      }
      r = same(da.value, db.value, p, st)
      if (r) return r
    }
  }
  return null
}

function protoName(x) {
  const p = Object.getPrototypeOf(x)
  return p === null ? 'null' : p === Object.prototype ? 'Object.prototype' : (p.constructor?.name ?? '?')
}
function fmt(x) {
  if (typeof x === 'string') return JSON.stringify(x.length > 40 ? x.slice(0, 40) + '…' : x)
  if (typeof x === 'bigint') return `${x}n`
  return Object.is(x, -0) ? '-0' : String(x)
}

function mulberry32(a) {
  return () => {
    a |= 0
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
let rnd = mulberry32(1)
const int = (n) => Math.floor(rnd() * n)
const pick = (a) => a[int(a.length)]
const chance = (p) => rnd() < p

const STRINGS = ['', 's', 'hello world', 'quote " back \\ slash', 'ctl \u0000\u0001\n\t\u001f', 'é ü ß 中文 🎉', '\ud800 lone high', 'lone low \udc00', '\u2028\u2029', '__proto__', 'constructor', 'x'.repeat(40), '1e3', '{}', '[]']
const KEYS = ['k', 's', 'd', 'a', 'b', 'id', 'name', 'x', '0', '1', '42', '-1', '01', '4294967295', '4294967294', '1.5', '', 'é', '🎉', 'toJSON', 'constructor', 'length', '__proto__', 'valueOf', 'key with space']
const NUMBERS = [0, 1, -1, 42, 2 ** 31, -(2 ** 31) - 1, 2 ** 53 + 2, 0.1, 1 / 3, -1.5e-7, 1e21, 1e-7, 5e-324, Number.MAX_VALUE, Number.MIN_SAFE_INTEGER]
const TRICKY_NUMBERS = [-0, NaN, Infinity, -Infinity]

class Point {
  constructor(x, y) {
    this.x = x
    this.y = y
  }
  get len() {
    return Math.hypot(this.x, this.y)
  }
}
class WithToJSON {
  constructor(v) {
    this.v = v
  }
  toJSON() {
    return 'replaced by toJSON'
  }
}
class MyArray extends Array {}

// `pool` holds objects made so far in the current value: reused for shared references and cycles.
function genValue(depth, pool, tricky) {
  if (depth > 4 || chance(0.45)) return genLeaf(pool, tricky)
  if (tricky && chance(0.25)) return genTrickyObject(depth, pool, tricky)
  return chance(0.5) ? genPlainObject(depth, pool, tricky) : genArray(depth, pool, tricky)
}

function genLeaf(pool, tricky) {
  const r = rnd()
  if (tricky) {
    if (r < 0.04 && pool.length) return pick(pool) // shared reference or cycle
    if (r < 0.07) return pick(TRICKY_NUMBERS)
    if (r < 0.09) return undefined
    if (r < 0.1) return BigInt(int(1e6)) * (chance(0.5) ? -1n : 1n)
  }
  if (r < 0.35) return pick(STRINGS)
  if (r < 0.45) return 'v' + int(1e6)
  if (r < 0.6) return pick(NUMBERS)
  if (r < 0.75) return int(1e6) - 5e5
  if (r < 0.8) return (rnd() - 0.5) * 10 ** int(12)
  if (r < 0.9) return chance(0.5)
  return null
}

function genPlainObject(depth, pool, tricky) {
  const o = tricky && chance(0.1) ? Object.create(null) : {}
  pool.push(o)
  const n = int(6)
  for (let i = 0; i < n; i++) {
    const k = chance(0.6) ? pick(KEYS) : 'p' + int(100)
    const v = genValue(depth + 1, pool, tricky)
    // defineProperty: also makes an own "__proto__" data property, like JSON.parse and v8 do.
    Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true })
  }
  if (tricky && chance(0.05)) Object.defineProperty(o, 'hidden', { value: 1, enumerable: false })
  if (tricky && chance(0.05)) o[Symbol('sym')] = 1
  if (tricky && chance(0.05)) Object.defineProperty(o, 'g', { get: () => 7, enumerable: true, configurable: true })
  if (tricky && chance(0.03)) delete o[Object.keys(o)[0]] // dictionary mode / key order after delete
  return o
}

function genArray(depth, pool, tricky) {
  const a = []
  pool.push(a)
  const n = int(7)
  for (let i = 0; i < n; i++) a.push(genValue(depth + 1, pool, tricky))
  if (tricky) {
    const r = rnd()
    if (r < 0.05) a.extra = genLeaf(pool, false) // array with an extra property
    else if (r < 0.1) a[n + 2] = 1 // holes
    else if (r < 0.13 && n > 0) delete a[int(n)] // a hole in the middle
    else if (r < 0.15) a.length = n + 3 // trailing holes
  }
  return a
}

function genTrickyObject(depth, pool, tricky) {
  const r = int(26)
  let o
  switch (r) {
    case 0: o = new Map(); pool.push(o); for (let i = int(4); i > 0; i--) o.set(genValue(depth + 1, pool, tricky), genValue(depth + 1, pool, tricky)); return o
    case 1: o = new Set(); pool.push(o); for (let i = int(4); i > 0; i--) o.add(genValue(depth + 1, pool, tricky)); return o
    case 2: return new Date(chance(0.9) ? int(2e12) : NaN)
    case 3: o = /a+b?[c-z]/gi; o.lastIndex = int(3); return chance(0.5) ? o : new RegExp('x\\d', 'msu')
    case 4: { const E = pick([Error, TypeError, RangeError, SyntaxError]); o = new E('boom ' + int(9)); o.stack = `${o.name}: ${o.message}\n    at generated`; if (chance(0.3)) o.extra = 1; return o } // a fixed stack: the same in every process
    case 5: return pick([Object(1), Object(-0), Object(NaN), Object('str'), Object(true), Object(false), Object(5n)])
    case 6: return pick([new Uint8Array([1, 2, 3]), new Float64Array([1.5, NaN, -0]), new Int32Array(3), Buffer.from('buf'), new BigInt64Array([1n]), new Uint16Array(new ArrayBuffer(16), 4, 2)])
    case 7: { const ab = new ArrayBuffer(8); new Uint8Array(ab).set([1, 2, 3]); return chance(0.5) ? ab : [new Uint8Array(ab, 0, 4), new DataView(ab, 2)] }
    case 8: o = new Point(int(9), int(9)); pool.push(o); return o
    case 9: o = new WithToJSON(genValue(depth + 1, pool, tricky)); pool.push(o); return o
    case 10: o = MyArray.from([1, 2, 3]); pool.push(o); return o
    case 11: { o = { a: 1 }; Object.defineProperty(o, 'toJSON', { value: { not: 'callable' }, enumerable: true }); return o }
    case 12: o = [1, , 3]; pool.push(o); return o // eslint-disable-line no-sparse-arrays
    case 13: o = new Array(3); pool.push(o); return o
    case 14: o = Object.assign([], { only: 'named' }); pool.push(o); return o
    case 15: return { u: undefined, n: null }
    case 16: return [undefined, null]
    case 17: { o = {}; for (let i = 0; i < 5; i++) o['k' + i] = genValue(depth + 1, pool, tricky); pool.push(o); return o }
    case 18: { const s = { shared: true }; return [s, { s }] }
    case 19: { o = { self: null }; o.self = o; return o }
    case 20: return { d: -0, n: NaN, i: Infinity }
    case 21: { o = Object.create(null); o.x = 1; o.y = [Object.create(null)]; return o }
    case 22: { o = { b: 1, 2: 'two', a: 3, 1: 'one' }; return o }
    case 23: return Object.setPrototypeOf({ x: 1 }, Point.prototype)
    case 24: { o = { get g() { return { fresh: 1 } }, v: 1 }; return o } // getter returning a new object each call
    default: { o = new Point(1, 2); o.nested = { p: new Point(3, 4) }; return o }
  }
}

// Values that must throw (functions, symbols, and what v8 refuses: proxies, arguments objects…).
function genThrowing() {
  const bad = pick([() => 1, function named() {}, Symbol('s'), new Proxy({}, {}), new Proxy([1], {}), (function () { return arguments })(1, 2), new WeakMap(), Promise.resolve(), Object(Symbol('b'))])
  const r = int(4)
  if (r === 0) return bad
  if (r === 1) return { k: 's', nested: { bad } }
  if (r === 2) return [1, 2, [bad]]
  return { a: [{ b: 1 }, { c: new Map([[1, bad]]) }] }
}

// The benchmark shapes, always in.
function fixedValues() {
  const small = { k: 's', s: 1, d: 'x'.repeat(40) }
  return [
    small,
    { id: 1, name: 'n', email: 'e@x', active: true, score: 1.5, tags: ['a', 'b'], created: 1700000000000, ratio: 0.25, nested: { x: 1, y: [1, 2] }, count: 3 },
    Array.from({ length: 100 }, (_, i) => ({ k: 's', s: i, d: 'x'.repeat(40) })),
    { m: new Map([[1, 'a']]), k: 's' },
    undefined, null, -0, 0, NaN, Infinity, 1n, true, 'top string', 5,
    [small, small], // shared reference
    { a: small, b: { c: small } },
    JSON.parse('{"__proto__": {"x": 1}, "a": [1]}'),
    nest(200), // deeper than MAX_DEPTH: v8 path
    // More objects than the walker tracks linearly (16): the Set path, sharing found late.
    (() => { const s = { shared: 1 }; return [...Array.from({ length: 40 }, (_, i) => ({ i })), s, { s }] })(),
    (() => { const a = Array.from({ length: 40 }, (_, i) => ({ i })); a.push(a[3]); return a })(),
    (() => { const o = { list: Array.from({ length: 30 }, (_, i) => ({ i })) }; o.list[29].back = o; return o })(),
    Array.from({ length: 300 }, (_, i) => ({ i, name: 'n' + i })), // JSON, > 16 objects
    Array.from({ length: 1000 }, (_, i) => Math.sin(i)), // number-heavy: v8
    Array.from({ length: 1000 }, (_, i) => i), // number-heavy: v8
  ]
}
function nest(d) {
  let o = { leaf: 1 }
  for (let i = 0; i < d; i++) o = { o }
  return o
}


/**
 * `n` values for `seed`: 40 % JSON-like, 50 % with tricky cases, and (with `throwing`) 10 % that
 * v8.serialize refuses; without `throwing` those are replaced by JSON-like ones.
 */
function generate(seed, n, { throwing = true } = {}) {
  rnd = mulberry32(seed)
  const values = []
  for (let i = 0; i < n; i++) {
    const kind = i % 10
    if (kind < 4 || (kind === 9 && !throwing)) values.push(genValue(0, [], false))
    else if (kind < 9) values.push(genValue(0, [], true))
    else values.push(genThrowing())
  }
  return values
}

/**
 * What the bus delivers for `v` (README "Payloads"): a string as UTF-8 text (so a lone surrogate
 * becomes U+FFFD), a Buffer or Uint8Array as a Buffer, anything else as v8's round trip gives it.
 */
function expectedArrival(v) {
  if (typeof v === 'string') return Buffer.from(v, 'utf8').toString('utf8')
  if (Buffer.isBuffer(v) || (v instanceof Uint8Array && v.constructor === Uint8Array)) return Buffer.from(v)
  return v8.deserialize(v8.serialize(v))
}

/** null if `a` and `b` are the same graph (see above), else where and how they differ. */
const sameGraph = (a, b) => same(a, b, '$', { ab: new Map(), ba: new Map() })

module.exports = { generate, fixedValues, sameGraph, expectedArrival, nest }
