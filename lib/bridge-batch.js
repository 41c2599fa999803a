'use strict'
// The bridge's envelope on the transport (lib/bridge.js): one transport message carries a batch
// of consecutive messages of one topic from one host, each payload in the encoding the segment
// carries it in (lib/codec.js), so nothing is re-encoded on the way:
//   [version u8 = 2][origin host id 16][first seq f64 LE][count u32 LE]
//   then count x [kind u8][length u32 LE][payload]
// The messages are numbered first .. first + count - 1 in the host's outbound sequence. Batching
// divides what Redis and the client library spend per message by the batch size.

const VERSION = 2
const HOST_BYTES = 16
const SEQ_AT = 1 + HOST_BYTES
const COUNT_AT = SEQ_AT + 8
const HEAD = COUNT_AT + 4
const ENTRY_HEAD = 5
// A batch closes at this size (a message larger than it travels alone, in a batch of one).
const MAX_BATCH_BYTES = 64 * 1024

/** Builds one batch at a time in a buffer it reuses; take() hands out a copy. */
class BatchWriter {
  #scratch = Buffer.allocUnsafe(MAX_BATCH_BYTES)
  #buf = this.#scratch
  #used = HEAD
  topic = null
  count = 0

  /**
   * Appends a message of `topic` as the segment carries it (codec `kind`, payload
   * bytes[start..end]); false when the batch has no room for it (take() first).
   */
  add(topic, kind, bytes, start, end) {
    const n = end - start
    let at = this.#used + ENTRY_HEAD
    if (at + n > this.#buf.length) {
      if (this.count > 0) return false
      this.#buf = Buffer.allocUnsafe(HEAD + ENTRY_HEAD + n) // a batch of one large message
      at = HEAD + ENTRY_HEAD
    }
    const buf = this.#buf
    bytes.copy(buf, at, start, end)
    buf[at - ENTRY_HEAD] = kind
    buf.writeUInt32LE(n, at - 4)
    this.#used = at + n
    this.topic = topic
    this.count++
    return true
  }

  /** The batch as one envelope (a buffer of its own) without its origin and numbers yet (see stamp); starts the next. */
  take() {
    const buf = this.#buf
    buf[0] = VERSION
    buf.writeUInt32LE(this.count, COUNT_AT)
    const env = buf === this.#scratch ? Buffer.from(buf.subarray(0, this.#used)) : buf.subarray(0, this.#used)
    this.clear()
    return env
  }

  /** Drops the batch. */
  clear() {
    this.#buf = this.#scratch
    this.#used = HEAD
    this.topic = null
    this.count = 0
  }
}

/** Writes into an envelope from take() its origin `host` and the number of its first message. */
function stamp(env, host, first) {
  host.copy(env, 1)
  env.writeDoubleLE(first, SEQ_AT)
}

/**
 * Reads an envelope: open() checks the head, then next() steps through the entries, leaving
 * kind/start/end of each (no allocation per entry). next() is false at the end or at an entry
 * that does not fit the envelope; `read` says how many were well-formed.
 */
class BatchReader {
  bytes = null
  first = 0
  count = 0
  read = 0
  kind = 0
  start = 0
  end = 0

  /**
   * Whether `bytes` is a batch of this version (anything else on the channel is not ours): its
   * first number a whole number, its count no more than the bytes can hold (it is untrusted:
   * losses are counted from it).
   */
  open(bytes) {
    if (bytes.length < HEAD || bytes[0] !== VERSION) return false
    const first = bytes.readDoubleLE(SEQ_AT)
    const count = bytes.readUInt32LE(COUNT_AT)
    if (!Number.isSafeInteger(first) || first < 1 || count > (bytes.length - HEAD) / ENTRY_HEAD) return false
    this.bytes = bytes
    this.first = first
    this.count = count
    this.read = 0
    this.end = HEAD
    return true
  }

  /** Whether the envelope comes from `host` (a Buffer of HOST_BYTES). */
  from(host) {
    return host.equals(this.bytes.subarray(1, 1 + HOST_BYTES))
  }

  /** The origin host's id in hex. */
  origin() {
    return this.bytes.toString('hex', 1, 1 + HOST_BYTES)
  }

  next() {
    const bytes = this.bytes
    const at = this.end
    if (this.read === this.count || at + ENTRY_HEAD > bytes.length) return false
    const end = at + ENTRY_HEAD + bytes.readUInt32LE(at + 1)
    if (end > bytes.length) return false
    this.kind = bytes[at]
    this.start = at + ENTRY_HEAD
    this.end = end
    this.read++
    return true
  }
}

module.exports = { BatchWriter, BatchReader, stamp, HOST_BYTES, MAX_BATCH_BYTES }
