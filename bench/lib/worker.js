'use strict'
// A cluster worker of one benchmark case. It opens the mechanism's transport and then does what
// the case primary asks over the IPC channel ({ rpc, cmd, args } -> { rpc, result | error }).
// Data messages of the process.send mechanism share that channel; they have no `rpc` field.

const { now, source, sink, summarize } = require('./common')

const spec = JSON.parse(process.env.BENCH_SPEC)
const rank = Number(process.env.BENCH_RANK)
const mech = require(`../mechanisms/${spec.mech}`)
let t = null
let strays = 0
let answered = 0
let responding = false

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
  // ---- topic fan-out ----
  async subscribe({ topic }) {
    await t.subscribe(topic)
  },
  /** A process that did not subscribe: counts whatever reaches it (must stay 0). */
  armCount({ kind }) {
    strays = 0
    t.listen(() => strays++, kind)
  },
  strays() {
    return { count: strays }
  },

  // ---- request/response ----
  armResponder() {
    if (responding) return
    responding = true
    t.respond((d) => (answered++, d)) // echo
  },
  answered() {
    return { count: answered }
  },
  /** `concurrency` loops, each sends a request and awaits its answer, until `durationMs`. */
  async requests({ peer, kind, concurrency, durationMs }) {
    const src = source(kind, 64)
    const rtts = []
    let bad = null
    const end = now() + durationMs * 1e3
    const loop = async () => {
      while (now() < end) {
        const m = src.next()
        const t0 = now()
        const a = await t.request(peer, m)
        rtts.push(now() - t0)
        if (kind === 'object') {
          if (a.s !== m.s || a.d !== m.d) bad ??= `answer ${JSON.stringify(a)} to request ${JSON.stringify(m)}`
        } else if (a.length !== m.length) bad ??= `answer of ${a.length} bytes to a request of ${m.length}`
        else if (kind === 'buffer' && a.readUInt32LE(0) !== m.readUInt32LE(0)) bad ??= `answer carries sequence ${a.readUInt32LE(0)}, request ${m.readUInt32LE(0)}`
      }
    }
    const t0 = now()
    await Promise.all(Array.from({ length: concurrency }, loop))
    const t1 = now()
    if (bad) throw new Error(bad)
    return { requests: rtts.length, seconds: (t1 - t0) / 1e6, rtt: summarize(rtts) }
  },

  async stream({ targets, kind, size, durationMs, topic }) {
    const src = source(kind, size)
    const single = targets.length === 1 && topic === undefined ? targets[0] : -1
    const every = size >= 65536 ? 1 : 64
    const t0 = now()
    const end = t0 + durationMs * 1e3
    let sent = 0
    for (;;) {
      for (let i = 0; i < every; i++) {
        const m = src.next()
        const r = topic !== undefined ? t.publish(topic, m, targets) : single >= 0 ? t.send(single, m) : t.broadcast(targets, m)
        if (r !== true) await r
      }
      sent += every
      if (now() >= end) break
    }
    const m = src.marker(sent)
    const r = topic !== undefined ? t.publish(topic, m, targets) : single >= 0 ? t.send(single, m) : t.broadcast(targets, m)
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
