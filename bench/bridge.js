'use strict'
// Across hosts: 2 "hosts" (two clusters on this machine, each with its own segment) x 4 workers,
// every worker subscribed to one topic, one publisher (worker 0 of host A), 64-byte messages.
//   bridge:  cluster-shm topics; each host's primary bridges 'bench.*' to Redis (bus.bridge)
//   ioredis: every worker holds its own ioredis subscriber; the publisher PUBLISHes to Redis
// Both publishers keep at most WINDOW publishes unconfirmed (the ioredis one auto-pipelines).
// Reports deliveries/s (all 8 subscribers together) and CPU per delivery: of redis-server (its
// own getrusage, from INFO cpu), and of every process (both primaries, 8 workers, redis-server),
// and the load average before each case; the ratios bridge / ioredis of each round and their medians.
//   node bench/bridge.js [--messages=N] [--rounds=R]   (needs redis-server on the PATH and ioredis)
// R rounds (default 3), the two cases alternating; the ratios of each round and their medians.
// BENCH_CPU_PROF=<dir>: runs the bridge case alone, every process writing a V8 CPU profile there
// (--cpu-prof), and prints its figures (results/bridge.json is left alone). BENCH_ONLY=bridge or
// BENCH_ONLY=ioredis runs that case alone in every round (for profiling with perf; no ratios).

const cluster = require('node:cluster')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')
const { spawn } = require('node:child_process')

const WORKERS = 4
const PAYLOAD = 'x'.repeat(64)
const WINDOW = 1024 // publishes in flight at most
const QUIET_MS = 1000 // a subscriber that got nothing for this long reports what it has

const arg = (name, dflt) => {
  const a = process.argv.find((s) => s.startsWith(`--${name}=`))
  return a ? Number(a.split('=')[1]) : dflt
}
const ORIGIN = performance.timeOrigin // read once: its getter costs as much as now() itself
const now = () => ORIGIN + performance.now()
const line = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const cpuOf = () => {
  const c = process.cpuUsage()
  return c.user + c.system
}

/** Publishes `n` messages with at most WINDOW unacknowledged. */
async function publishAll(n, publishOne) {
  let inFlight = 0
  let wake = null
  // One callback for every settlement (no closure or finally() chain per message), for both peers.
  const settled = () => {
    inFlight--
    if (wake !== null && inFlight < WINDOW) wake(), (wake = null)
  }
  for (let i = 0; i < n; i++) {
    inFlight++
    publishOne().then(settled, settled)
    if (inFlight >= WINDOW) await new Promise((r) => (wake = r))
  }
}

// ---- a worker of a host ----
async function worker() {
  const { workerInit } = require('..')
  const { Redis } = require('ioredis')
  const mech = process.env.BENCH_MECH
  const n = Number(process.env.BENCH_N)
  const bus = workerInit()
  let count = 0
  let first = 0
  let last = 0
  const got = () => {
    if (count++ === 0) first = now()
    last = now()
  }
  let sub = null
  let pub = null
  if (mech === 'bridge') bus.subscribe('bench.t', got)
  else {
    sub = new Redis(process.env.REDIS_URL)
    sub.on('message', got)
    await sub.subscribe('bench.t')
    pub = new Redis(process.env.REDIS_URL, { enableAutoPipelining: true })
    await pub.ping()
  }
  process.send({ type: 'ready', index: bus.index })
  let published = false // the publisher (on either host) finished: from then on, QUIET_MS without a message ends the wait
  process.on('message', async (m) => {
    if (m.type === 'published') published = true
    if (m.type !== 'go') return
    const cpu0 = cpuOf()
    const t0 = now()
    if (bus.index === 0 && process.env.BENCH_HOST === 'A') {
      if (mech === 'bridge') await publishAll(n, () => bus.publish('bench.t', PAYLOAD))
      else await publishAll(n, () => pub.publish('bench.t', PAYLOAD))
      process.send({ type: 'published' })
    }
    let since = 0
    while (count < n && (!published || now() - Math.max(last, since) < QUIET_MS)) {
      if (published && since === 0) since = now()
      await new Promise((r) => setTimeout(r, 20))
    }
    process.send({ type: 'done', count, first, last, t0, cpu: cpuOf() - cpu0, publisher: bus.index === 0 && process.env.BENCH_HOST === 'A' })
    if (sub) sub.disconnect(), pub.disconnect()
    bus.close()
  })
}

// ---- a host: a cluster primary ----
function host() {
  const { masterInit } = require('..')
  const tag = process.env.BENCH_HOST
  const mech = process.env.BENCH_MECH
  const bus = masterInit({ workers: WORKERS })
  let bridge = null
  let otherSeen = mech !== 'bridge'
  let hello = null
  if (mech === 'bridge') {
    bridge = bus.bridge({ redis: process.env.REDIS_URL, topics: ['bench.*'] })
    bus.subscribe('bench.hello', ({ data }) => {
      if (data !== tag) otherSeen = true
    })
    hello = setInterval(() => bridge.connected && bus.publish('bench.hello', tag), 100)
  }
  let lost = 0
  const causes = {}
  bus.on('lost', (e) => {
    lost += e.count ?? 0
    causes[e.cause ?? e.reason] = (causes[e.cause ?? e.reason] ?? 0) + (e.count ?? 0)
  })
  const ready = new Set()
  const done = []
  let cpu0 = 0
  cluster.on('message', (w, m) => {
    if (m.type === 'ready') ready.add(m.index)
    if (m.type === 'done') done.push(m)
    if (m.type === 'published') line({ event: 'published' })
    if (done.length === WORKERS) {
      line({ event: 'done', workers: done, primaryCpu: cpuOf() - cpu0, lost, causes, stats: bridge ? bridge.stats : null })
      cluster.disconnect(() => (bridge && bridge.close(), bus.close()))
    }
  })
  const waitReady = setInterval(() => {
    if (ready.size === WORKERS && otherSeen) clearInterval(waitReady), line({ event: 'ready' })
  }, 50)
  readline.createInterface({ input: process.stdin }).on('line', (l) => {
    const { cmd } = JSON.parse(l)
    if (cmd === 'published') {
      for (const w of Object.values(cluster.workers)) w.send({ type: 'published' })
      return process.stdin.destroy()
    }
    if (cmd !== 'go') return
    clearInterval(hello)
    cpu0 = cpuOf()
    for (const w of Object.values(cluster.workers)) w.send({ type: 'go' })
  })
  for (let i = 0; i < WORKERS; i++) cluster.fork()
}

// ---- the orchestrator ----
/** redis-server's CPU time so far in µs (getrusage of all its threads, finer than /proc ticks). */
async function redisCpu(client) {
  const info = await client.info('cpu')
  const field = (name) => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(info)[1])
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1e6
}

/** How many PUBLISH commands redis-server has run. */
async function redisPublishes(client) {
  const m = /^cmdstat_publish:calls=(\d+)/m.exec(await client.info('commandstats'))
  return m === null ? 0 : Number(m[1])
}

function startHost(tag, mech, env) {
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []
  const child = spawn(process.execPath, [...prof, __filename], { env: { ...process.env, ...env, BENCH_ROLE: 'host', BENCH_HOST: tag, BENCH_MECH: mech }, stdio: ['pipe', 'pipe', 'inherit'] })
  const events = []
  const waiters = []
  readline.createInterface({ input: child.stdout }).on('line', (l) => {
    const m = JSON.parse(l)
    events.push(m)
    for (const w of waiters.splice(0)) w()
  })
  const waitFor = async (event) => {
    for (;;) {
      const m = events.find((e) => e.event === event)
      if (m) return m
      if (child.exitCode !== null) throw new Error(`host ${tag} exited before ${event}`)
      await new Promise((r) => waiters.push(r) && setTimeout(r, 200))
    }
  }
  return { child, waitFor, command: (cmd) => child.stdin.write(JSON.stringify({ cmd }) + '\n') }
}

async function runCase(mech, redis, client, n) {
  const env = { REDIS_URL: `redis://127.0.0.1:${redis.port}`, BENCH_N: String(n) }
  const load = os.loadavg().map((x) => Number(x.toFixed(2)))
  const hosts = [startHost('A', mech, env), startHost('B', mech, env)]
  await Promise.all(hosts.map((h) => h.waitFor('ready')))
  const p0 = await redisPublishes(client)
  const r0 = await redisCpu(client)
  for (const h of hosts) h.command('go')
  await hosts[0].waitFor('published')
  for (const h of hosts) h.command('published')
  const results = await Promise.all(hosts.map((h) => h.waitFor('done')))
  const redisUs = (await redisCpu(client)) - r0
  const publishes = (await redisPublishes(client)) - p0
  await Promise.all(hosts.map((h) => new Promise((r) => (h.child.exitCode !== null ? r() : h.child.once('exit', r)))))
  const ws = results.flatMap((r) => r.workers)
  const deliveries = ws.reduce((s, w) => s + w.count, 0)
  const t0 = Math.min(...ws.map((w) => w.t0))
  const seconds = (Math.max(...ws.map((w) => w.last)) - t0) / 1000
  const publisherUs = ws.filter((w) => w.publisher).reduce((s, w) => s + w.cpu, 0)
  const workersUs = ws.reduce((s, w) => s + w.cpu, 0) - publisherUs
  const primariesUs = results.reduce((s, r) => s + r.primaryCpu, 0)
  const processesUs = publisherUs + workersUs + primariesUs
  return {
    mech,
    load,
    deliveries,
    expected: 2 * WORKERS * n,
    lost: results.reduce((s, r) => s + r.lost, 0),
    lostByCause: results.map((r) => r.causes),
    bridgeStats: results.map((r) => r.stats), // host A's bridge, host B's
    redisPublishes: publishes, // the bridge sends batches: messages / this = the mean batch
    seconds,
    perSecond: deliveries / seconds,
    redisUsPerDelivery: redisUs / deliveries,
    allUsPerDelivery: (processesUs + redisUs) / deliveries,
    // where the CPU went, µs per delivery: the publishing worker, the 7 others, the 2 primaries
    // (with the bridge: the bridging processes)
    publisherUsPerDelivery: publisherUs / deliveries,
    workersUsPerDelivery: workersUs / deliveries,
    primariesUsPerDelivery: primariesUs / deliveries,
    // CPU ms of each process: per host, [primary, [workers by index]]
    processCpuMs: results.map((r) => [Math.round(r.primaryCpu / 1e3), r.workers.map((w) => Math.round(w.cpu / 1e3))]),
  }
}

const METRICS = ['perSecond', 'redisUsPerDelivery', 'allUsPerDelivery']
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]

function printRound(round, rows) {
  for (const x of rows) {
    const parts = [x.publisherUsPerDelivery, x.workersUsPerDelivery, x.primariesUsPerDelivery].map((v) => v.toFixed(2)).join(' / ')
    console.log(`${round} | ${x.mech} | ${x.load.join(' ')} | ${x.deliveries} (${x.expected}) | ${x.lost} | ${x.redisPublishes} | ${Math.round(x.perSecond)} | ${x.redisUsPerDelivery.toFixed(4)} | ${x.allUsPerDelivery.toFixed(2)} | ${parts}`)
  }
}

async function main() {
  const n = arg('messages', 100_000)
  const rounds = arg('rounds', 3)
  const redis = await require('./lib/redis-server').start()
  if (redis.skipped) return console.log(`skipped: ${redis.skipped}`)
  const { Redis } = require('ioredis')
  const client = new Redis(`redis://127.0.0.1:${redis.port}`)
  try {
    if (process.env.BENCH_CPU_PROF) return console.log(await runCase('bridge', redis, client, n)) // profiling the bridge alone
    console.log(`2 hosts x ${WORKERS} workers, 1 publisher, ${n} messages of 64 bytes, redis-server ${redis.version}, window ${WINDOW}; ${rounds} rounds, the cases alternating`)
    console.log('round | mechanism | load before | deliveries (of expected) | lost reported | Redis PUBLISHes | deliveries/s | redis-server CPU µs/delivery | all processes CPU µs/delivery | publisher / other workers / primaries µs/delivery')
    const rows = []
    for (let round = 1; round <= rounds; round++) {
      const pair = []
      for (const mech of process.env.BENCH_ONLY ? [process.env.BENCH_ONLY] : ['bridge', 'ioredis']) pair.push({ round, ...(await runCase(mech, redis, client, n)) })
      printRound(round, pair)
      for (const x of pair) if (x.lost > 0) console.log(`  ${x.mech} lost by cause (host A, host B): ${JSON.stringify(x.lostByCause)}`)
      rows.push(...pair)
    }
    if (process.env.BENCH_ONLY) return // one case: no ratios, no results file
    // The ratios bridge / ioredis of each round (its two cases ran back to back, under about the
    // same load), and their medians; the medians of each case's own figures for reference.
    const medians = {}
    for (const mech of ['bridge', 'ioredis']) {
      const mine = rows.filter((x) => x.mech === mech)
      medians[mech] = Object.fromEntries(METRICS.map((m) => [m, median(mine.map((x) => x[m]))]))
    }
    const perRound = rows.filter((x) => x.mech === 'bridge').map((b) => {
      const r = rows.find((x) => x.mech === 'ioredis' && x.round === b.round)
      return Object.fromEntries(METRICS.map((m) => [m, b[m] / r[m]]))
    })
    const ratios = Object.fromEntries(METRICS.map((m) => [m, median(perRound.map((r) => r[m]))]))
    for (const mech of ['bridge', 'ioredis']) {
      const m = medians[mech]
      console.log(`median ${mech}: ${Math.round(m.perSecond)} deliveries/s, redis-server ${m.redisUsPerDelivery.toFixed(4)} µs/delivery, all processes ${m.allUsPerDelivery.toFixed(2)} µs/delivery`)
    }
    const fmt = (r) => `${r.perSecond.toFixed(2)}x deliveries/s, ${r.redisUsPerDelivery.toFixed(3)}x redis-server CPU per delivery, ${r.allUsPerDelivery.toFixed(2)}x all processes' CPU per delivery`
    console.log(`bridge / ioredis (median of the rounds' ratios): ${fmt(ratios)}`)
    for (const [i, r] of perRound.entries()) console.log(`  round ${i + 1}: ${fmt(r)}`)
    const out = path.join(__dirname, 'results', 'bridge.json')
    const machine = { node: process.version, cpus: os.cpus().length, redis: redis.version }
    fs.writeFileSync(out, JSON.stringify({ when: new Date().toISOString(), messages: n, window: WINDOW, rounds, machine, ratios, perRound, medians, rows }, null, 2) + '\n')
  } finally {
    client.disconnect()
    await redis.stop()
  }
}

if (cluster.isWorker) worker()
else if (process.env.BENCH_ROLE === 'host') host()
else main()
