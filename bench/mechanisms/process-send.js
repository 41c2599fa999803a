'use strict'
// process.send through the primary, the way cluster users do it today: the worker sends
// { t: to, d: data } to the primary, whose 'message' handler forwards it to worker `t`
// (broadcast: { b: from, d } forwarded to every other worker). The variant picks the cluster's
// serialization: 'json' (Node's default) or 'advanced' (v8 structured clone).
//
// Backpressure: process.send() returns false once the pipe to the primary has a backlog; the
// sender then sends a tiny no-op message with a callback and waits for it to be written. The
// primary forwards without flow control, as a relay written by a user would.
// Topics: a worker tells the primary it subscribed ({ sub: topic }); the publisher sends
// { tp: topic, d } to the primary, which forwards it to the subscribed workers only.
// Request/response: { t: to, q: id, f: from, d } relayed to `to`, whose answer { t: from, a: id, d }
// is relayed back; the requester matches it by id.
// Receiving: a JSON-serialized Buffer arrives as { type: 'Buffer', data: [...] }; the receiver
// turns it back into a Buffer (a user needs the bytes), which is part of that path's cost.

const NOP = { n: 1 }

function primary({ variant }) {
  const topics = new Map() // topic -> [ranks of the workers that subscribed]
  return {
    serialization: variant.serialization,
    // Called by the case primary for every non-control message of a worker.
    relay(from, msg, workers) {
      if (msg.t !== undefined) {
        workers[msg.t].send(msg)
      } else if (msg.b !== undefined) {
        for (let r = 0; r < workers.length; r++) if (r !== msg.b) workers[r].send(msg)
      } else if (msg.tp !== undefined) {
        // Topic: only to the workers that told the primary they subscribed.
        const subs = topics.get(msg.tp)
        if (subs !== undefined) for (let i = 0; i < subs.length; i++) workers[subs[i]].send(msg)
      } else if (msg.sub !== undefined) {
        if (!topics.has(msg.sub)) topics.set(msg.sub, [])
        topics.get(msg.sub).push(from)
      }
    },
    close: async () => {},
  }
}

async function open({ rank, variant }) {
  let handler = null
  let responder = null
  const json = variant.serialization === 'json'
  const waiting = new Map() // request id -> resolve
  let nextId = 1
  const onData = (msg) => {
    if (msg.q !== undefined) {
      // A request { t, q: id, f: from, d }: answer { t: from, a: id, d } through the primary.
      process.send({ t: msg.f, a: msg.q, d: responder(msg.d) })
      return
    }
    if (msg.a !== undefined) {
      const w = waiting.get(msg.a)
      if (w === undefined) throw new Error(`answer to unknown request ${msg.a}`)
      waiting.delete(msg.a)
      w(msg.d)
      return
    }
    let d = msg.d
    if (json && d !== null && typeof d === 'object' && d.type === 'Buffer') d = Buffer.from(d.data)
    handler(d)
  }
  const drained = () => new Promise((resolve) => process.send(NOP, () => resolve(true)))
  return {
    kind: 'string',
    // The worker's control dispatcher hands data messages here.
    onData,
    async link() {},
    listen(fn) {
      handler = fn
    },
    send(to, d) {
      return process.send({ t: to, d }) ? true : drained()
    },
    broadcast(_targets, d) {
      return process.send({ b: rank, d }) ? true : drained()
    },
    // Topics: the primary keeps who subscribed ({ sub }) and forwards { tp, d } only to them.
    // The subscription is on the same pipe as the reply to the case primary, so it is
    // registered before the publisher starts.
    async subscribe(topic) {
      process.send({ sub: topic })
    },
    publish(topic, d) {
      return process.send({ tp: topic, d }) ? true : drained()
    },
    // Request/response through the primary, with request ids.
    respond(fn) {
      responder = fn
    },
    request(to, d) {
      const id = nextId++
      return new Promise((resolve) => {
        waiting.set(id, resolve)
        process.send({ t: to, q: id, f: rank, d })
      })
    },
    async drain() {},
    async close() {},
  }
}

module.exports = { id: 'process.send', primary, open }
