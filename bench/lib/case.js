'use strict'
// The cluster primary of one benchmark case: sets up the mechanism, forks the workers, runs the
// case's tests by telling the workers what to do, and sends the figures to bench/run.js.
// Every wait is bounded; any failure ends the case with an error (bench/run.js kills the whole
// process group if this process itself does not end in time).
//
// argv[2]: JSON { mech, variant, workers, tests: [...], params, label }

const cluster = require('node:cluster')
const fs = require('node:fs')
const path = require('node:path')
const { cpuDelta, withTimeout, sleep } = require('./common')

const spec = JSON.parse(process.argv[2])
const P = spec.params
const mech = require(`../mechanisms/${spec.mech}`)
const N = spec.workers
const workers = []
let prim = null
let nextId = 1
const pending = new Map()
const waiters = new Map() // `${evt}:${rank}` -> resolve
const early = new Map()
let finishing = false
const results = {}

function rpc(rank, cmd, args, ms = 15_000) {
  const id = nextId++
  const p = new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject })
    workers[rank].send({ rpc: id, cmd, args })
  })
  return withTimeout(p, ms, `worker ${rank} ${cmd}`).finally(() => pending.delete(id))
}

function waitEvent(evt, rank, ms) {
  const key = `${evt}:${rank}`
  if (early.has(key)) {
    const v = early.get(key)
    early.delete(key)
    return Promise.resolve(v)
  }
  return withTimeout(new Promise((resolve) => waiters.set(key, resolve)), ms, `worker ${rank} ${evt}`)
}

function onControl(rank, msg) {
  if (msg.rpc !== undefined) {
    const p = pending.get(msg.rpc)
    if (!p) return
    if (msg.error !== undefined) p.reject(new Error(`worker ${rank}: ${msg.error}`))
    else p.resolve(msg.result)
  } else if (msg.evt !== undefined) {
    const key = `${msg.evt}:${msg.rank}`
    const w = waiters.get(key)
    if (w) waiters.delete(key), w(msg)
    else early.set(key, msg)
  }
}

// ---- CPU of every process of the case ----

const CLK_TCK = 100
function redisCpu() {
  const pid = process.env.BENCH_REDIS_PID
  if (!pid || spec.mech !== 'redis') return 0
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK // utime + stime
  } catch {
    return 0
  }
}

async function cpuAll() {
  const ws = await Promise.all(workers.map((_, r) => rpc(r, 'cpu')))
  const own = process.cpuUsage()
  const perProcess = ws.map((c) => c.user + c.system)
  return { total: perProcess.reduce((a, b) => a + b, 0) + own.user + own.system + redisCpu(), perProcess, primary: own.user + own.system, redis: redisCpu() }
}

function cpuSpent(a, b) {
  return {
    total: b.total - a.total,
    workers: b.perProcess.map((v, i) => v - a.perProcess[i]),
    primary: b.primary - a.primary,
    redis: b.redis - a.redis,
  }
}

// ---- tests ----

const kind = spec.variant.payload ?? (spec.mech === 'unix-socket' ? 'buffer' : 'string')

async function latency() {
  const maxRounds = P.maxRounds
  const limit = (P.latencyWarmMs + P.latencyMs) * 4 + 10_000
  if (spec.variant.poll) {
    const c0 = await cpuAll()
    const pong = rpc(1, 'pollPong', { peer: 0, limitMs: limit }, limit + 5000)
    const r = await rpc(0, 'pollPing', { peer: 1, kind, warmMs: P.latencyWarmMs, durationMs: P.latencyMs, maxRounds }, limit)
    await pong
    const cpu = cpuSpent(c0, await cpuAll())
    return latencyFigures(r, cpu, '(CPU includes the warm-up)')
  }
  await rpc(1, 'armEcho', { peer: 0, kind })
  await rpc(0, 'ping', { peer: 1, kind, warmMs: P.latencyWarmMs, minWarm: 200, durationMs: 1, maxRounds }, limit)
  const c0 = await cpuAll()
  const r = await rpc(0, 'ping', { peer: 1, kind, warmMs: 0, minWarm: 20, durationMs: P.latencyMs, maxRounds }, limit)
  const cpu = cpuSpent(c0, await cpuAll())
  return latencyFigures(r, cpu)
}

function latencyFigures(r, cpu, note) {
  const half = (x) => x / 2
  return {
    oneWayUs: { p50: half(r.rtt.p50), p90: half(r.rtt.p90), p99: half(r.rtt.p99), min: half(r.rtt.min), mean: half(r.rtt.mean) },
    rttUs: r.rtt,
    samples: r.rtt.n,
    rounds: r.rounds,
    cpuUs: cpu,
    cpuPerMsgUs: cpu.total / (2 * r.rounds),
    note,
  }
}

/** One stream from worker 0 to `receivers` (or published on `topic`, which they subscribed to). */
async function streamRound(receivers, k, size, durationMs, topic) {
  const limit = durationMs * 6 + 20_000
  const done = receivers.map((r) => waitEvent('recvDone', r, limit))
  await Promise.all(receivers.map((r) => rpc(r, 'armRecv', { kind: k, size })))
  const c0 = await cpuAll()
  const s = await rpc(0, 'stream', { targets: receivers, kind: k, size, durationMs, topic }, limit)
  const ends = await Promise.all(done)
  const cpu = cpuSpent(c0, await cpuAll())
  for (const e of ends) {
    if (e.error) throw new Error(`receiver ${e.rank}: ${e.error}`)
    if (e.count !== s.sent || e.expected !== s.sent) throw new Error(`receiver ${e.rank} got ${e.count} of ${s.sent} messages (marker said ${e.expected})`)
  }
  const tEnd = Math.max(...ends.map((e) => e.tEnd))
  const seconds = (tEnd - s.t0) / 1e6
  const deliveries = s.sent * receivers.length
  return {
    messages: s.sent,
    receivers: receivers.length,
    seconds,
    senderSeconds: (s.t1 - s.t0) / 1e6,
    senderStats: s.stats,
    receiverSeconds: ends.map((e) => (e.tEnd - e.tFirst) / 1e6),
    msgsPerSec: s.sent / seconds,
    deliveriesPerSec: deliveries / seconds,
    MBps: (s.sent * size) / seconds / 1e6,
    cpuUs: cpu,
    cpuPerMsgUs: cpu.total / deliveries,
  }
}

async function stream(receivers, k, size, warmMs, ms, topic) {
  const warm = await streamRound(receivers, k, size, warmMs, topic)
  const r = await streamRound(receivers, k, size, ms, topic)
  r.warmup = { messages: warm.messages, msgsPerSec: warm.msgsPerSec }
  return r
}

/**
 * Topic fan-out: worker 0 publishes 64-byte messages on a topic that workers 1 and 2 subscribed
 * to; workers 3..N-1 did not, and must receive nothing. CPU: every process of the case, per
 * delivered message (messages × 2 subscribers).
 */
async function topic() {
  const TOPIC = 'bench.topic'
  const subs = [1, 2]
  const others = workers.map((_, r) => r).filter((r) => r > 2)
  if (N < 3) throw new Error('the topic test needs at least 3 workers')
  for (const r of subs) await rpc(r, 'subscribe', { topic: TOPIC })
  await Promise.all(others.map((r) => rpc(r, 'armCount', { kind })))
  const res = await stream(subs, kind, 64, P.topicWarmMs, P.topicMs, TOPIC)
  const strays = await Promise.all(others.map((r) => rpc(r, 'strays')))
  const got = strays.reduce((a, s) => a + s.count, 0)
  if (got !== 0) throw new Error(`non-subscribers received ${got} messages`)
  res.subscribers = subs.length
  res.nonSubscribers = others.length
  return res
}

/** Request/response: worker 0 sends ~64-byte requests to worker 1, which echoes them. */
async function requests(concurrency) {
  const limit = (P.rpcWarmMs + P.rpcMs) * 6 + 20_000
  await rpc(1, 'armResponder', { kind })
  await rpc(0, 'requests', { peer: 1, kind, concurrency, durationMs: P.rpcWarmMs }, limit)
  const a0 = (await rpc(1, 'answered')).count
  const c0 = await cpuAll()
  const r = await rpc(0, 'requests', { peer: 1, kind, concurrency, durationMs: P.rpcMs }, limit)
  const cpu = cpuSpent(c0, await cpuAll())
  const answered = (await rpc(1, 'answered')).count - a0
  if (answered !== r.requests) throw new Error(`responder answered ${answered} requests, requester got ${r.requests} answers`)
  return {
    concurrency,
    requests: r.requests,
    seconds: r.seconds,
    msgsPerSec: r.requests / r.seconds,
    rttUs: r.rtt,
    cpuUs: cpu,
    cpuPerMsgUs: cpu.total / r.requests,
  }
}

const tests = {
  latency,
  throughput: () => stream([1], kind, 64, P.streamWarmMs, P.streamMs),
  bulk: () => stream([1], 'buffer', 1 << 20, P.bulkWarmMs, P.bulkMs),
  broadcast: () =>
    stream(
      workers.map((_, r) => r).filter((r) => r !== 0),
      kind,
      64,
      P.broadcastWarmMs,
      P.broadcastMs,
    ),
  topic,
  rpc: () => requests(1),
  rpc32: () => requests(32),
}

// ---- lifecycle ----

async function main() {
  prim = await mech.primary({ workers: N, variant: spec.variant })
  Object.assign(process.env, prim.env ?? {})
  cluster.setupPrimary({
    exec: path.join(__dirname, 'worker.js'),
    serialization: prim.serialization ?? 'json',
  })
  cluster.on('exit', (w, code, signal) => {
    if (!finishing) fail(new Error(`worker ${w.rank} (pid ${w.process.pid}) exited (${signal ?? code})`))
  })
  const workerSpec = JSON.stringify({ mech: spec.mech, variant: spec.variant, workers: N })
  for (let r = 0; r < N; r++) {
    const w = cluster.fork({ BENCH_RANK: String(r), BENCH_SPEC: workerSpec })
    w.rank = r
    const relay = prim.relay
    if (relay) {
      w.on('message', (msg) => {
        if (msg.rpc === undefined && msg.evt === undefined) relay(r, msg, workers)
        else onControl(r, msg)
      })
    } else {
      w.on('message', (msg) => onControl(r, msg))
    }
    workers.push(w)
  }
  const pids = await Promise.all(workers.map((_, r) => rpc(r, 'open', {}, 20_000)))
  const all = workers.map((_, r) => r)
  await Promise.all(all.map((r) => rpc(r, 'link', { peers: all.filter((p) => p !== r) }, 20_000)))
  let error = null
  for (const test of spec.tests) {
    try {
      results[test] = await tests[test]()
    } catch (err) {
      // The workers may be stuck mid-test: stop here, keep what was measured.
      error = `${test}: ${(err && err.message) || err}`
      results[test] = { error }
      break
    }
  }
  await shutdown()
  process.send({ result: { results, error, info: prim.info, pids: pids.map((p) => p.pid), primaryPid: process.pid } }, () => process.exit(0))
}

async function shutdown() {
  finishing = true
  await Promise.allSettled(workers.map((w, r) => (w.isConnected() ? rpc(r, 'close', {}, 3000) : null)))
  const deadline = Date.now() + 3000
  while (workers.some((w) => !w.isDead()) && Date.now() < deadline) await sleep(10)
  for (const w of workers) if (!w.isDead()) w.process.kill('SIGKILL')
  if (prim) await prim.close()
}

let failed = false
function fail(err) {
  if (failed) return
  failed = true
  finishing = true
  const message = String((err && err.stack) || err)
  for (const w of workers) if (!w.isDead()) w.process.kill('SIGKILL')
  Promise.resolve(prim && prim.close())
    .catch(() => {})
    .finally(() => process.send({ error: message, partial: results }, () => process.exit(1)))
}

main().catch(fail)
