'use strict'
// The value codec (lib/codec.js, lib/json-codec.js): small values that JSON carries exactly go as
// JSON text, the rest through v8.serialize. Whatever path a value takes, it must arrive exactly as
// v8's own round trip gives it. Checked on thousands of generated values (helpers/values.js),
// first through encode() and decode() with the payload laid out as in a delivered batch, then
// through a real bus between two cluster workers (fixtures/codec-bus.js).

const test = require('ava')
const v8 = require('node:v8')

const { encode, decode, JSON_TEXT, VALUE, UTF8, BYTES } = require('../lib/codec.js')
const { setLimits } = require('../lib/json-codec.js')
const { generate, fixedValues, sameGraph, expectedArrival, nest } = require('./helpers/values')
const { runClean } = require('./helpers/harness')

/** encode(), then decode() from a batch-like Buffer with the payload at an odd offset. */
function roundTrip(value) {
  const [kind, payload] = encode(value)
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
  const batch = Buffer.alloc(5 + bytes.length + 3)
  batch.set(bytes, 5)
  return decode(kind, batch, 5, 5 + bytes.length)
}

const kindOf = (value) => encode(value)[0]

/** Checks every value: same arrival as v8 (or ERR_UNSERIALIZABLE where v8 throws). */
function checkAll(t, values, label) {
  const failures = []
  const counts = { json: 0, v8: 0, throwing: 0 }
  values.forEach((v, i) => {
    let expected
    try {
      expected = expectedArrival(v)
    } catch {
      counts.throwing++
      try {
        encode(v)
        failures.push(`${label} #${i}: v8 throws, encode() did not`)
      } catch (err) {
        if (err.code !== 'ERR_UNSERIALIZABLE') failures.push(`${label} #${i}: threw ${err.code} ${err.message}`)
      }
      return
    }
    const kind = kindOf(v)
    if (kind === JSON_TEXT) counts.json++
    else if (kind === VALUE) counts.v8++
    const diff = sameGraph(roundTrip(v), expected)
    if (diff !== null) failures.push(`${label} #${i} (kind ${kind}): ${diff}`)
  })
  t.deepEqual(failures.slice(0, 10), [], `${failures.length} value(s) arrive differently from v8's round trip`)
  return counts
}

for (const seed of [1, 2, 3]) {
  test(`10,000 generated values (seed ${seed}) decode exactly as v8's round trip gives them`, (t) => {
    const counts = checkAll(t, generate(seed, 10_000), `seed ${seed}`)
    // The generator makes plenty of each: a codec that sent everything one way would show here.
    t.true(counts.json > 4000, `${counts.json} went as JSON`)
    t.true(counts.v8 > 1500, `${counts.v8} went through v8`)
    t.true(counts.throwing > 900, `${counts.throwing} were refused`)
  })
}

test('fixed cases: the benchmark shapes, top-level primitives, sharing past the linear table, deep nesting', (t) => {
  checkAll(t, fixedValues(), 'fixed')
  t.is(kindOf({ k: 's', s: 1, d: 'x'.repeat(40) }), JSON_TEXT, 'the small object goes as JSON')
  t.is(kindOf('text'), UTF8)
  t.is(kindOf(new Uint8Array(3)), BYTES)
  for (const v of [undefined, -0, NaN, Infinity, 1n, new Date(0), new Map(), [1, , 3], { u: undefined }]) t.is(kindOf(v), VALUE, `${String(v)} needs v8`) // eslint-disable-line no-sparse-arrays
  const shared = { s: 1 }
  t.is(kindOf([shared, shared]), VALUE, 'a shared reference keeps its sharing through v8')
  const cyclic = { a: 1 }
  cyclic.self = cyclic
  t.is(kindOf(cyclic), VALUE)
  t.is(roundTrip(cyclic).self.self.a, 1)
})

test('the walk is bounded: large values, many fractions and deep nesting go through v8', (t) => {
  t.is(kindOf(Array.from({ length: 100 }, (_, i) => i)), JSON_TEXT, '100 ints: within the budget')
  t.is(kindOf(Array.from({ length: 200 }, (_, i) => i)), VALUE, '200 ints: over the budget')
  t.is(kindOf(Array.from({ length: 40 }, (_, i) => i + 0.5)), VALUE, 'fractions cost more')
  t.is(kindOf({ text: 'x'.repeat(900) }), JSON_TEXT)
  t.is(kindOf({ text: 'x'.repeat(1100) }), VALUE, 'long strings go through v8')
  const previous = setLimits({ maxCost: Infinity })
  t.teardown(() => setLimits(previous))
  t.is(kindOf(nest(64)), JSON_TEXT, 'depth 64 is JSON')
  t.is(kindOf(nest(65)), VALUE, 'depth 65 goes through v8')
  const many = Array.from({ length: 40 }, (_, i) => ({ i }))
  t.is(kindOf(many), JSON_TEXT)
  many.push(many[1])
  t.is(kindOf(many), VALUE, 'a late shared reference to an early object (past the linear table)')
  setLimits(previous)
  t.deepEqual(checkAll(t, generate(4, 3000), 'unbounded').throwing > 0, true)
})

test('what v8 refuses stays refused (ERR_UNSERIALIZABLE), with v8 error message', (t) => {
  for (const bad of [() => 1, Symbol('x'), { f() {} }, [Symbol('y')], { p: new Proxy({ a: 1 }, {}) }, (function () { return arguments })(1, 2), { w: new WeakMap() }]) {
    let v8Error
    try {
      v8.serialize(bad)
    } catch (err) {
      v8Error = err
    }
    const err = t.throws(() => encode(bad))
    t.is(err.code, 'ERR_UNSERIALIZABLE')
    t.true(err.message.includes(v8Error.message), err.message)
  }
})

test.serial('a polluted realm and a re-entrant getter fall back to v8', (t) => {
  t.teardown(() => {
    delete Object.prototype.toJSON
    delete Array.prototype[1]
    Array.prototype.length = 0
  })
  Object.prototype.toJSON = function () { return 'polluted' } // eslint-disable-line no-extend-native
  t.is(kindOf({ a: 1 }), VALUE)
  t.deepEqual(roundTrip({ a: 1 }), { a: 1 })
  delete Object.prototype.toJSON
  Array.prototype[1] = 'polluted' // eslint-disable-line no-extend-native
  t.is(kindOf([1, 2, 3]), VALUE)
  delete Array.prototype[1]
  t.is(kindOf({ a: 1 }), VALUE, 'Array.prototype.length is still 2')
  Array.prototype.length = 0
  t.is(kindOf({ a: 1 }), JSON_TEXT)
  const inner = { get g() { return kindOf({ a: [1, 2] }) } }
  t.is(roundTrip({ outer: inner }).outer.g, v8.deserialize(v8.serialize({ outer: inner })).outer.g, 'a getter that encodes while the walk runs')
  t.is(kindOf({ a: 1 }), JSON_TEXT, 'the walker is usable afterwards')
  const throwing = { get g() { throw new Error('getter failed') } }
  t.is(t.throws(() => encode({ x: throwing })).code, 'ERR_UNSERIALIZABLE', 'a throwing getter: as with v8')
  t.is(kindOf({ a: 1 }), JSON_TEXT, 'the walker is reset after a throw')
})

test('known deviation: an own getter runs twice on the JSON path (once with v8)', (t) => {
  let calls = 0
  const counter = { get n() { return ++calls } }
  t.is(roundTrip(counter).n, 2, 'walked once, then read again by JSON.stringify (README)')
  calls = 0
  t.is(v8.deserialize(v8.serialize(counter)).n, 1)
})

test('3,000 generated values through a real bus (write/send, publish, request and answer) arrive as v8 would deliver them', async (t) => {
  t.timeout(120_000)
  const r = await runClean(t, 'codec-bus.js', [7, 3000], { timeout: 110_000 })
  const checked = r.events('checked')
  t.is(checked.length, 2)
  for (const c of checked) {
    t.is(c.n, 3000)
    t.deepEqual(c.failures, [], `worker ${c.at}`)
  }
  const sender = checked.find((c) => c.at === 0)
  t.true(sender.json > 1000, `${sender.json} values took the JSON path`)
})
