'use strict'
// The wire vocabulary shared with Rust: frame kinds and batch events, the record header of a
// delivered batch, and the payload codec (string / bytes / v8-serialized value).

const v8 = require('node:v8')
const { fail } = require('./errors.js')
const { isPayloadBytes } = require('./options.js')
const { jsonExact } = require('./json-codec.js')

// Frame kinds (src/core/layout.rs `kind`) and batch events (src/core/inbox.rs `event`).
const BYTES = 1
const UTF8 = 2
const VALUE = 3
// Envelopes for a process (not a mailbox) start with the receiver's generation (u16 LE): a
// successor at the same index drops what was meant for its predecessor.
const TOPIC = 5 // [generation u16][kind u8 | REMOTE][topic length u8][topic][data]
// On a topic envelope's kind: the message came from another host through the bridge
// (lib/bridge.js), which must not send it out again.
const REMOTE = 0x80
const REQUEST = 6 // [generation u16][kind u8][0 u8][id u32][method length u16][requester's generation u16][method][data]
const RESPONSE = 7 // [generation u16][kind u8][status u8: 0 ok, 1 error][id u32][data]
// A value that JSON carries exactly (lib/json-codec.js) as UTF-8 JSON text; others go as VALUE.
const JSON_TEXT = 8
const PEER_UP = 16
const PEER_DOWN = 17
const LOST = 18
const CORRUPT = 19
const CLOSED = 20
const RECORD_HEADER = 8
const RECORD_LARGE = 1 // record flag: the payload is the batch's next large buffer

/**
 * Returns [kind, payload]: a string stays a string (written without a Buffer in between), and
 * so does the JSON text of a value that JSON carries exactly.
 */
function encode(data) {
  if (typeof data === 'string') return [UTF8, data]
  if (isPayloadBytes(data)) return [BYTES, data]
  try {
    return jsonExact(data) ? [JSON_TEXT, JSON.stringify(data)] : [VALUE, v8.serialize(data)]
  } catch (err) {
    return fail('ERR_UNSERIALIZABLE', `payload cannot be serialized: ${err.message}`)
  }
}

function decode(kind, batch, start, end) {
  if (kind === UTF8) return batch.toString('utf8', start, end)
  if (kind === BYTES) return batch.subarray(start, end)
  if (kind === JSON_TEXT) return JSON.parse(batch.toString('utf8', start, end))
  return v8.deserialize(batch.subarray(start, end))
}

const SCRATCH_BYTES = 16 * 1024
const NAMES_KEPT = 256
const scratch = Buffer.allocUnsafe(SCRATCH_BYTES)
const names = new Map() // topic or method -> its UTF-8 bytes (the last NAMES_KEPT used)
const VIEWS_KEPT = 64
const views = new Map() // length -> scratch.subarray(0, length): a stream of one size makes one view

/**
 * An envelope `[head zeroed][name][payload]` built in one buffer that every envelope reuses:
 * the caller fills the head and writes the envelope out (every write and send copies it
 * synchronously) before anything else builds one. Large envelopes get a buffer of their own.
 * Returns [envelope, name length].
 */
function envelope(head, name, payload) {
  let nameBytes = names.get(name)
  if (nameBytes === undefined) {
    if (names.size >= NAMES_KEPT) names.clear()
    nameBytes = Buffer.from(name, 'utf8')
    names.set(name, nameBytes)
  }
  const at = head + nameBytes.length
  const text = typeof payload === 'string'
  const most = at + (text ? payload.length * 3 : payload.length)
  const b = most <= SCRATCH_BYTES ? scratch : Buffer.allocUnsafe(text ? at + Buffer.byteLength(payload) : most)
  for (let i = 0; i < head; i++) b[i] = 0
  b.set(nameBytes, head)
  const n = text ? b.write(payload, at, 'utf8') : (b.set(payload, at), payload.length)
  if (b !== scratch) return [b.subarray(0, at + n), nameBytes.length]
  let view = views.get(at + n)
  if (view === undefined) {
    if (views.size >= VIEWS_KEPT) views.clear()
    view = scratch.subarray(0, at + n)
    views.set(at + n, view)
  }
  return [view, nameBytes.length]
}

/** Whether frames of `kind` are plain messages (not envelopes or events). */
const isMessage = (kind) => kind <= VALUE || kind === JSON_TEXT

/** The data of a message this process wrote to itself: the payload encode() returned. */
function decodeLocal(kind, payload) {
  if (kind === BYTES) return Buffer.from(payload)
  if (kind === VALUE) return v8.deserialize(payload)
  if (kind === JSON_TEXT) return JSON.parse(payload)
  return payload
}

module.exports = {
  BYTES,
  UTF8,
  VALUE,
  TOPIC,
  REMOTE,
  REQUEST,
  RESPONSE,
  JSON_TEXT,
  PEER_UP,
  PEER_DOWN,
  LOST,
  CORRUPT,
  CLOSED,
  RECORD_HEADER,
  RECORD_LARGE,
  encode,
  decode,
  isMessage,
  decodeLocal,
  envelope,
}
