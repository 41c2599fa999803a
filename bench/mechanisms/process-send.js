'use strict'
// process.send through the primary, the way cluster users do it today: the worker sends
// { t: to, d: data } to the primary, whose 'message' handler forwards it to worker `t`
// (broadcast: { b: from, d } forwarded to every other worker). The variant picks the cluster's
// serialization: 'json' (Node's default) or 'advanced' (v8 structured clone).
//
// Backpressure: process.send() returns false once the pipe to the primary has a backlog; the
// sender then sends a tiny no-op message with a callback and waits for it to be written. The
// primary forwards without flow control, as a relay written by a user would.
// Receiving: a JSON-serialized Buffer arrives as { type: 'Buffer', data: [...] }; the receiver
// turns it back into a Buffer (a user needs the bytes), which is part of that path's cost.

const NOP = { n: 1 }

function primary({ variant }) {
  return {
    serialization: variant.serialization,
    // Called by the case primary for every non-control message of a worker.
    relay(from, msg, workers) {
      if (msg.t !== undefined) {
        workers[msg.t].send(msg)
      } else if (msg.b !== undefined) {
        for (let r = 0; r < workers.length; r++) if (r !== msg.b) workers[r].send(msg)
      }
    },
    close: async () => {},
  }
}

async function open({ rank, variant }) {
  let handler = null
  const json = variant.serialization === 'json'
  const onData = (msg) => {
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
    async drain() {},
    async close() {},
  }
}

module.exports = { id: 'process.send', primary, open }
