'use strict'
// Self-checking payloads for the fault-injection and soak tests.
//
// A message of `len` >= HEADER bytes is
//   [magic u32 'CSHT'][a u32][b u32][seq u32][len u32][crc32 of the body u32][body]
// where `a`/`b` say who sent it (a generation, a sender address + 1, ...) and the body is a slice of
// POOL (4 MiB of deterministic pseudo-random bytes, identical in every process) at an offset that
// depends on (a, b, seq). A torn, truncated, shifted or mixed-up message fails the length, the CRC
// or the body comparison. Messages shorter than HEADER (the soak sends down to 1 byte) are a POOL
// slice too: the receiver knows which (a, b, seq) it expects next and compares the exact bytes.

const zlib = require('node:zlib')

const MAGIC = 0x54485343 // 'CSHT' little-endian
const HEADER = 24
const POOL_SIZE = 4 << 20

const POOL = (() => {
  const words = new Uint32Array(POOL_SIZE / 4)
  let x = 0x9e3779b9
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    words[i] = x >>> 0
  }
  return Buffer.from(words.buffer)
})()

/** A 32-bit mix of up to four unsigned integers (murmur3 finaliser). */
function hash32(a, b = 0, c = 0, d = 0) {
  let h = 0x811c9dc5
  for (const v of [a, b, c, d]) {
    h = Math.imul(h ^ (v >>> 0), 0x01000193)
    h ^= h >>> 15
    h = Math.imul(h, 0x85ebca6b)
    h ^= h >>> 13
    h = Math.imul(h, 0xc2b2ae35)
    h ^= h >>> 16
  }
  return h >>> 0
}

function bodyOffset(a, b, seq, bodyLen) {
  return hash32(a, b, seq, 0xb0d7) % (POOL_SIZE - bodyLen + 1)
}

/** The message (a, b, seq) of `len` bytes. */
function make(a, b, seq, len) {
  if (len < HEADER) return Buffer.from(POOL.subarray(bodyOffset(a, b, seq, len), bodyOffset(a, b, seq, len) + len))
  const bodyLen = len - HEADER
  const off = bodyOffset(a, b, seq, bodyLen)
  const body = POOL.subarray(off, off + bodyLen)
  const buf = Buffer.allocUnsafe(len)
  buf.writeUInt32LE(MAGIC, 0)
  buf.writeUInt32LE(a >>> 0, 4)
  buf.writeUInt32LE(b >>> 0, 8)
  buf.writeUInt32LE(seq >>> 0, 12)
  buf.writeUInt32LE(len >>> 0, 16)
  buf.writeUInt32LE(zlib.crc32(body), 20)
  body.copy(buf, HEADER)
  return buf
}

/**
 * Reads and verifies a message of HEADER bytes or more. `ok` is true only if the magic, the
 * length, the CRC and the body all match what (a, b, seq) in its header say.
 */
function check(buf) {
  if (!Buffer.isBuffer(buf) || buf.length < HEADER) return { ok: false, why: `not a framed message (${buf && buf.length} bytes)` }
  const magic = buf.readUInt32LE(0)
  const a = buf.readUInt32LE(4)
  const b = buf.readUInt32LE(8)
  const seq = buf.readUInt32LE(12)
  const len = buf.readUInt32LE(16)
  const crc = buf.readUInt32LE(20)
  if (magic !== MAGIC) return { ok: false, a, b, seq, len: buf.length, why: `bad magic ${magic.toString(16)}` }
  if (len !== buf.length) return { ok: false, a, b, seq, len: buf.length, why: `length ${buf.length}, header says ${len}` }
  const body = buf.subarray(HEADER)
  if (zlib.crc32(body) !== crc) return { ok: false, a, b, seq, len, why: 'crc mismatch' }
  const off = bodyOffset(a, b, seq, body.length)
  if (!POOL.subarray(off, off + body.length).equals(body)) return { ok: false, a, b, seq, len, why: 'body differs from the expected bytes' }
  return { ok: true, a, b, seq, len }
}

/** Whether `buf` is exactly the message (a, b, seq) of `len` bytes (any length, tiny ones included). */
function isExactly(buf, a, b, seq, len) {
  if (buf.length !== len) return false
  if (len < HEADER) {
    const off = bodyOffset(a, b, seq, len)
    return POOL.subarray(off, off + len).equals(buf)
  }
  const c = check(buf)
  return c.ok && c.a === a && c.b === b && c.seq === seq
}

/** Deterministic pseudo-random generator (for fixtures that want reproducible choices). */
function rng(seed) {
  let x = hash32(seed) || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 4294967296
  }
}

module.exports = { MAGIC, HEADER, POOL, POOL_SIZE, hash32, make, check, isExactly, rng }
