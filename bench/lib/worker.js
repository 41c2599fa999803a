'use strict'
// A cluster worker of one benchmark case. It opens the mechanism's transport and then does what
// the case primary asks over the IPC channel ({ rpc, cmd, args } -> { rpc, result | error }).
// Data messages of the process.send mechanism share that channel; they have no `rpc` field.

const { now, source, sink, summarize } = require('./common')

const spec = JSON.parse(process.env.BENCH_SPEC)
const rank = Number(process.env.BENCH_RANK)
const mech = require(`../mechanisms/${spec.mech}`)
let t = null

process.on('message', (msg) => {
  if (msg.rpc === undefined) {
    if (t !== null && t.onData !== undefined && msg.n === undefined) t.onData(msg)
    return
  }
  Promise.resolve()
    .then(() => commands[msg.cmd](msg.args ?? {}))
    .then(
      (result) => process.send({ rpc: msg.rpc, result }),
      (err) => process.send({ rpc: msg.rpc, error: String((err && err.stack) || err) }),
    )
})

const commands = {
  async open() {
    t = await mech.open({ rank, workers: spec.workers, variant: spec.variant })
    return { pid: process.pid }
  },
  async link({ peers }) {
    await t.link(peers)
  },
  cpu() {
    return process.cpuUsage()
  },

  // ---- latency: strict ping-pong ----
  armEcho({ peer, kind }) {
    t.listen((d) => {
      const r = t.send(peer, d)
      if (r !== true) r.then(null, fatal)
    }, kind)
  },
  ping({ peer, kind, warmMs, minWarm, durationMs, maxRounds }) {
    const msg = source(kind, 64).next()
    return new Promise((resolve, reject) => {
      const rtts = new Float64Array(maxRounds)
      let n = 0
      let rounds = 0
      const warmEnd = now() + warmMs * 1e3
      let end = Infinity
      let t0 = 0
      const fire = () => {
        t0 = now()
        const r = t.send(peer, msg)
        if (r !== true) r.then(null, reject)
      }
      t.listen(() => {
        const t1 = now()
        rounds++
        if (end === Infinity) {
          if (t1 >= warmEnd && rounds >= minWarm) end = t1 + durationMs * 1e3
        } else {
          rtts[n++] = t1 - t0
          if (n >= maxRounds || t1 >= end) {
            t.listen(() => {}, kind)
            return resolve({ rtt: summarize(rtts.subarray(0, n)), rounds })
          }
        }
        fire()
      }, kind)
      fire()
    })
  },
  pollPong({ peer, limitMs }) {
    return { rounds: t.pollPong(peer, limitMs) }
  },
  pollPing({ peer, kind, warmMs, durationMs, maxRounds }) {
    const msg = source(kind, 64).next()
    const rtts = t.pollPing(peer, msg, warmMs, durationMs, maxRounds)
    return { rtt: summarize(rtts), rounds: rtts.length }
  },

  // ---- streams: throughput, bulk, broadcast ----
  armRecv({ kind, size }) {
    const s = sink(kind, size)
    let first = 0
    t.listen((d) => {
      if (first === 0) first = now()
      const expected = s.take(d)
      if (expected < 0) return
      const tEnd = now()
      t.listen(() => {}, kind)
      process.send({ evt: 'recvDone', rank, count: s.count, expected, bytes: s.bytes, error: s.error, tFirst: first, tEnd })
    }, kind)
  },
  async stream({ targets, kind, size, durationMs }) {
    const src = source(kind, size)
    const single = targets.length === 1 ? targets[0] : -1
    const every = size >= 65536 ? 1 : 64
    const t0 = now()
    const end = t0 + durationMs * 1e3
    let sent = 0
    for (;;) {
      for (let i = 0; i < every; i++) {
        const m = src.next()
        const r = single >= 0 ? t.send(single, m) : t.broadcast(targets, m)
        if (r !== true) await r
      }
      sent += every
      if (now() >= end) break
    }
    const m = src.marker(sent)
    const r = single >= 0 ? t.send(single, m) : t.broadcast(targets, m)
    if (r !== true) await r
    await t.drain()
    const t1 = now()
    return { sent, t0, t1, stats: t.stats?.() }
  },

  async close() {
    if (t !== null) await t.close()
    t = null
    setImmediate(() => process.exit(0))
  },
}

function fatal(err) {
  console.error(`bench worker ${rank}:`, err)
  process.exit(1)
}
