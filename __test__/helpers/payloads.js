'use strict'
// Payloads of every kind, shared by the fixtures (which send them) and the tests (which compute
// what must arrive), `describe`, a JSON-safe exact description of a value (type included), so
// a value received in another process can be compared with `t.deepEqual`, and seqBuffer, a
// numbered self-checking Buffer for the streams of the fixtures.

function num(x) {
  return Object.is(x, -0) ? '-0' : String(x) // keeps NaN, Infinity and -0 apart
}

function describe(v) {
  if (v === null) return null
  switch (typeof v) {
    case 'undefined':
      return { $: 'undefined' }
    case 'number':
      return { $: 'number', v: num(v) }
    case 'bigint':
      return { $: 'bigint', v: v.toString() }
    case 'string':
      return { $: 'string', v }
    case 'boolean':
      return { $: 'boolean', v }
    case 'function':
    case 'symbol':
      return { $: typeof v }
  }
  if (Buffer.isBuffer(v)) return { $: 'Buffer', hex: v.toString('hex') }
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    return { $: v.constructor.name, values: Array.from(v, (x) => (typeof x === 'bigint' ? x.toString() : num(x))) }
  }
  if (v instanceof Date) return { $: 'Date', t: num(v.getTime()) }
  if (v instanceof Map) return { $: 'Map', entries: [...v].map(([k, x]) => [describe(k), describe(x)]) }
  if (v instanceof Set) return { $: 'Set', values: [...v].map(describe) }
  if (Array.isArray(v)) return { $: 'Array', items: v.map(describe) }
  if (v instanceof RegExp) return { $: 'RegExp', v: String(v) }
  const proto = Object.getPrototypeOf(v)
  return {
    $: proto === Object.prototype ? 'Object' : proto === null ? 'null-proto' : `instance of ${proto.constructor && proto.constructor.name}`,
    entries: Object.keys(v).map((k) => [k, describe(v[k])]),
  }
}

/**
 * The payload cases: `value` is what is sent, `expected` the description of what must arrive
 * (a Uint8Array arrives as a Buffer; everything else as itself).
 */
function payloadCases() {
  const bytes = Buffer.alloc(1000)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) & 255
  const backing = new Uint8Array([9, 9, 9, 1, 2, 3, 4, 5, 9, 9]).buffer
  const cases = [
    { name: 'Buffer', value: bytes },
    { name: 'empty Buffer', value: Buffer.alloc(0) },
    { name: 'Uint8Array', value: new Uint8Array([0, 1, 2, 127, 128, 255]) },
    { name: 'Uint8Array view at an offset', value: new Uint8Array(backing, 3, 5) },
    { name: 'ASCII string', value: 'hello, cluster' },
    { name: 'non-ASCII string', value: 'héllo wörld — 日本語 ✓ 🎉 \u0000 ünïcödé' },
    { name: 'empty string', value: '' },
    { name: 'long non-ASCII string', value: 'é🎉ß'.repeat(300) },
    {
      name: 'structured object',
      value: {
        map: new Map([
          ['a', 1],
          [2, { b: [1, 'two'] }],
        ]),
        date: new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789)),
        f64: new Float64Array([1.5, -0, NaN, Infinity]),
        i32: new Int32Array([-1, 2 ** 31 - 1]),
        u16: new Uint16Array([65535, 0, 7]),
        set: new Set(['x', 3]),
        big: 2n ** 70n,
        nested: { arr: [1, 'x', null, true, undefined], s: 'ünï' },
      },
    },
    { name: 'number', value: -12.5 },
    { name: 'null', value: null },
    { name: 'array', value: [1, 'a', { b: new Date(0) }] },
  ]
  for (const c of cases) {
    c.expected = c.value instanceof Uint8Array ? describe(Buffer.from(c.value)) : describe(c.value)
  }
  return cases
}

/**
 * Message `seq` of a numbered stream, `size` (>= 8) bytes: seq and size as u32, then bytes
 * derived from seq and their position, so that a torn, shifted or mixed-up message shows.
 */
function seqBuffer(seq, size) {
  const b = Buffer.alloc(size)
  b.writeUInt32LE(seq, 0)
  b.writeUInt32LE(size, 4)
  for (let i = 8; i < size; i++) b[i] = (seq ^ i) & 255
  return b
}

/** The seq of an intact seqBuffer, or -1. */
function seqOfBuffer(b) {
  const seq = b.readUInt32LE(0)
  if (b.readUInt32LE(4) !== b.length) return -1
  for (let i = 8; i < b.length; i++) if (b[i] !== ((seq ^ i) & 255)) return -1
  return seq
}

module.exports = { describe, payloadCases, seqBuffer, seqOfBuffer }
