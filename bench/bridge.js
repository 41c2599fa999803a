'use strict'
// Across hosts: 2 "hosts" (two clusters on this machine, each with its own segment) x 4 workers,
// every worker subscribed to one topic, one publisher (worker 0 of host A), 64-byte messages.
//   bridge:  cluster-shm topics; each host's primary bridges 'bench.*' to Redis (bus.bridge)
//   ioredis: every worker holds its own ioredis subscriber; the publisher PUBLISHes to Redis
// Reports deliveries/s (all 8 subscribers together) and CPU per delivery: of redis-server, and of
// every process (both primaries, 8 workers, redis-server).
//   node bench/bridge.js [--messages=N]     (needs redis-server on the PATH and ioredis)

const cluster = require('node:cluster')
const fs = require('node:fs')
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
const now = () => performance.timeOrigin + performance.now()
const line = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const cpuOf = () => {
  const c = process.cpuUsage()
  return c.user + c.system
}

/** Publishes `n` messages with at most WINDOW unacknowledged. */
async function publishAll(n, publishOne) {
  let inFlight = 0
  let wake = null
  for (let i = 0; i < n; i++) {
    inFlight++
    publishOne().finally(() => {
      inFlight--
      if (wake !== null && inFlight < WINDOW) wake(), (wake = null)
    })
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
    process.send({ type: 'done', count, first, last, t0, cpu: cpuOf() - cpu0 })
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
  bus.on('lost', (e) => (lost += e.count ?? 0))
  const ready = new Set()
  const done = []
  let cpu0 = 0
  cluster.on('message', (w, m) => {
    if (m.type === 'ready') ready.add(m.index)
    if (m.type === 'done') done.push(m)
    if (m.type === 'published') line({ event: 'published' })
    if (done.length === WORKERS) {
      line({ event: 'done', workers: done, primaryCpu: cpuOf() - cpu0, lost, stats: bridge ? bridge.stats : null })
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
function redisCpu(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(f[11]) + Number(f[12])) * 1e6) / 100
}

function startHost(tag, mech, env) {
  const child = spawn(process.execPath, [__filename], { env: { ...process.env, ...env, BENCH_ROLE: 'host', BENCH_HOST: tag, BENCH_MECH: mech }, stdio: ['pipe', 'pipe', 'inherit'] })
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

async function runCase(mech, redis, n) {
  const env = { REDIS_URL: `redis://127.0.0.1:${redis.port}`, BENCH_N: String(n) }
  const hosts = [startHost('A', mech, env), startHost('B', mech, env)]
  await Promise.all(hosts.map((h) => h.waitFor('ready')))
  const r0 = redisCpu(redis.pid)
  for (const h of hosts) h.command('go')
  await hosts[0].waitFor('published')
  for (const h of hosts) h.command('published')
  const results = await Promise.all(hosts.map((h) => h.waitFor('done')))
  const redisUs = redisCpu(redis.pid) - r0
  await Promise.all(hosts.map((h) => new Promise((r) => (h.child.exitCode !== null ? r() : h.child.once('exit', r)))))
  const ws = results.flatMap((r) => r.workers)
  const deliveries = ws.reduce((s, w) => s + w.count, 0)
  const t0 = Math.min(...ws.map((w) => w.t0))
  const seconds = (Math.max(...ws.map((w) => w.last)) - t0) / 1000
  const processesUs = ws.reduce((s, w) => s + w.cpu, 0) + results.reduce((s, r) => s + r.primaryCpu, 0)
  return {
    mech,
    deliveries,
    expected: 2 * WORKERS * n,
    lost: results.reduce((s, r) => s + r.lost, 0),
    seconds,
    perSecond: deliveries / seconds,
    redisUsPerDelivery: redisUs / deliveries,
    allUsPerDelivery: (processesUs + redisUs) / deliveries,
  }
}

async function main() {
  const n = arg('messages', 100_000)
  const redis = await require('./lib/redis-server').start()
  if (redis.skipped) return console.log(`skipped: ${redis.skipped}`)
  try {
    const rows = []
    for (const mech of ['bridge', 'ioredis']) rows.push(await runCase(mech, redis, n))
    const [b, r] = rows
    console.log(`2 hosts x ${WORKERS} workers, 1 publisher, ${n} messages of 64 bytes, redis-server ${redis.version}`)
    console.log('mechanism | deliveries (of expected) | lost reported | deliveries/s | redis-server CPU µs/delivery | all processes CPU µs/delivery')
    for (const x of rows) {
      console.log(`${x.mech} | ${x.deliveries} (${x.expected}) | ${x.lost} | ${Math.round(x.perSecond)} | ${x.redisUsPerDelivery.toFixed(3)} | ${x.allUsPerDelivery.toFixed(2)}`)
    }
    console.log(`bridge / ioredis: ${(b.perSecond / r.perSecond).toFixed(2)}x deliveries/s, ${(b.redisUsPerDelivery / r.redisUsPerDelivery).toFixed(3)}x redis-server CPU per delivery`)
    const out = path.join(__dirname, 'results', 'bridge.json')
    fs.writeFileSync(out, JSON.stringify({ when: new Date().toISOString(), messages: n, rows }, null, 2) + '\n')
  } finally {
    await redis.stop()
  }
}

if (cluster.isWorker) worker()
else if (process.env.BENCH_ROLE === 'host') host()
else main()
