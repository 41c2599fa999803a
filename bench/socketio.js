#!/usr/bin/env node
'use strict'
// `node bench/socketio.js`: io.emit() from one worker to 1,000 connected clients spread over 4
// workers, with cluster-shm's socket.io adapter against @socket.io/cluster-adapter (packets
// relayed by the primary over process.send) and @socket.io/redis-adapter (a private
// redis-server, bench/lib/redis-server.js), in one run. Each adapter is a fresh cluster of its own.
//
//   node bench/socketio.js [--clients=1000] [--messages=200] [--sse=20000] [--repeat=3] [--out=DIR]
//   node bench/socketio.js --from=bench/results/socketio.json   (the .md again, from a run's results)
//   env: BENCH_ADAPTERS=cluster-shm,... (a subset), BENCH_PROF=DIR (a CPU profile per worker)
//
// The clients are plain WebSocket connections speaking the socket.io protocol (engine.io v4: open,
// '40' connect, '2'/'3' ping/pong, '42' events) in one separate process, so that what is
// measured is the servers' work, not socket.io-client's. Worker 0 emits `messages` small events
// (io.emit: to every client of the cluster); the time runs from the first emit until every client
// got every event. Reported: deliveries/s (clients × messages / time) and the CPU time of the
// servers' processes (primary, 4 workers, redis-server) per delivery; the clients' CPU apart.
// Results: DIR/socketio.json and socketio.md (default bench/results/).

const cluster = require('node:cluster')
const fs = require('node:fs')
const http = require('node:http')
const path = require('node:path')
const { fork } = require('node:child_process')

const WORKERS = 4
const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const a = args.find((x) => x.startsWith(`--${name}=`))
  return a === undefined ? dflt : a.slice(name.length + 3)
}
const ADAPTERS = (process.env.BENCH_ADAPTERS ?? 'cluster-shm,cluster-adapter,redis-adapter').split(',')

const procCpu = (pid) => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(f[11]) + Number(f[12])) * 1e6) / 100 // utime + stime, µs
}

// ---- the driver: one case per adapter, the table ----
async function main() {
  if (opt('from')) return report(path.dirname(path.resolve(opt('from'))), JSON.parse(fs.readFileSync(opt('from'), 'utf8')))
  const clients = Number(opt('clients', 1000))
  const messages = Number(opt('messages', 200))
  const repeat = Number(opt('repeat', 3))
  const sse = Number(opt('sse', 20000))
  const out = opt('out', path.join(__dirname, 'results'))
  const redis = await require('./lib/redis-server').start()
  const rows = []
  try {
    for (let r = 0; r < repeat; r++) {
      for (const adapter of ADAPTERS) {
        if (adapter === 'redis-adapter' && redis.skipped) continue
        const child = fork(__filename, [], { env: { ...process.env, BENCH_ROLE: 'case', BENCH_ADAPTER: adapter, BENCH_CLIENTS: clients, BENCH_MESSAGES: messages, BENCH_SSE: sse, BENCH_REDIS_PORT: redis.port ?? '', BENCH_REDIS_PID: redis.pid ?? '', CLUSTER_SHM_SEGMENT: '' }, detached: true })
        const timer = setTimeout(() => process.kill(-child.pid, 'SIGKILL'), 120_000)
        const result = await new Promise((resolve, reject) => {
          child.on('message', resolve)
          child.on('exit', (code) => reject(new Error(`${adapter}: the case exited (${code}) without a result`)))
        })
        clearTimeout(timer)
        await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.on('exit', resolve)))
        console.log(`${adapter}: ${Math.round(result.deliveriesPerSec).toLocaleString('en')} deliveries/s, ${result.serverCpuPerDelivery.toFixed(2)} µs server CPU per delivery (clients ${result.clientCpuPerDelivery.toFixed(2)} µs); adapter alone: ${Math.round(result.sseMessagesPerSec).toLocaleString('en')} serverSideEmit deliveries/s, ${result.sseCpuPerMessage.toFixed(2)} µs CPU each`)
        rows.push({ adapter, round: r, ...result })
      }
    }
  } finally {
    await redis.stop?.()
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const summary = ADAPTERS.filter((a) => rows.some((x) => x.adapter === a)).map((adapter) => {
    const mine = rows.filter((x) => x.adapter === adapter)
    return { adapter, deliveriesPerSec: median(mine.map((x) => x.deliveriesPerSec)), serverCpuPerDelivery: median(mine.map((x) => x.serverCpuPerDelivery)), clientCpuPerDelivery: median(mine.map((x) => x.clientCpuPerDelivery)), sseMessagesPerSec: median(mine.map((x) => x.sseMessagesPerSec)), sseCpuPerMessage: median(mine.map((x) => x.sseCpuPerMessage)), runs: mine.length }
  })
  const os = require('node:os')
  const meta = { when: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, clients, messages, sse, workers: WORKERS, repeat, redisVersion: redis.version ?? null, loadavg: os.loadavg() }
  report(out, { meta, summary, rows })
}

/** Writes DIR/socketio.json and socketio.md and prints the table. `--from=FILE.json`: redo the .md of an earlier run. */
function report(out, { meta, summary, rows }) {
  const { clients, messages, repeat } = meta
  const base = summary.find((s) => s.adapter === 'cluster-shm')
  const md = [
    `# socket.io: io.emit to ${clients} clients over ${WORKERS} workers`,
    '',
    `Run of ${meta.when}: Node ${meta.node}, ${meta.cpus} vCPU (${meta.cpuModel}), redis-server ${meta.redisVersion ?? '(not run)'}; ${messages} events of one worker to every client, then ${meta.sse} serverSideEmit events; each adapter ${repeat} times (medians). Command: \`node bench/socketio.js\`.`,
    '',
    '| adapter | io.emit deliveries/s | server CPU per delivery (µs) | serverSideEmit deliveries/s (adapter alone) | CPU per serverSideEmit delivery (µs) |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...summary.map((s) => `| ${s.adapter} | ${Math.round(s.deliveriesPerSec).toLocaleString('en')} | ${s.serverCpuPerDelivery.toFixed(2)} | ${Math.round(s.sseMessagesPerSec).toLocaleString('en')} | ${s.sseCpuPerMessage.toFixed(2)} |`),
    '',
    ...summary.filter((s) => s !== base).map((s) => `cluster-shm against ${s.adapter}: io.emit to the clients ${(base.deliveriesPerSec / s.deliveriesPerSec).toFixed(2)}× the rate; the adapter alone (serverSideEmit) ${(base.sseMessagesPerSec / s.sseMessagesPerSec).toFixed(2)}× the rate, using ${(base.sseCpuPerMessage / s.sseCpuPerMessage).toFixed(2)}× its CPU per delivery.`),
    '',
    'Method: bench/socketio.js (its header). Each adapter runs its own cluster: a primary, 4 workers with socket.io on ports of their own, and one process holding the 1,000 clients (plain WebSockets speaking the socket.io protocol, 250 per worker). io.emit: worker 0 emits small events to every client; the time runs until every client got every event. serverSideEmit: worker 0 emits events to the 3 other servers (no client involved), so the adapters alone are compared. CPU: user+sys of the primary, the 4 workers and redis-server, per delivery.',
    '',
    'Reading: with clients, the server CPU per delivery is the same for the three adapters (socket.io encoding and one WebSocket write per client and event dominate; the adapter carries one message per worker and event), so the rate differences in the io.emit column come from how the work is spread in time, and they move a lot between runs on a shared 2-vCPU machine: see the per-run rows in socketio.json.',
    '',
  ].join('\n')
  fs.mkdirSync(out, { recursive: true })
  fs.writeFileSync(path.join(out, 'socketio.json'), JSON.stringify({ meta, summary, rows }, null, 2) + '\n')
  fs.writeFileSync(path.join(out, 'socketio.md'), md)
  console.log('\n' + md)
}

// ---- a case: the cluster primary ----
async function casePrimary() {
  const adapter = process.env.BENCH_ADAPTER
  const clients = Number(process.env.BENCH_CLIENTS)
  const messages = Number(process.env.BENCH_MESSAGES)
  let bus = null
  if (adapter === 'cluster-shm') bus = require('..').masterInit({ workers: WORKERS })
  if (adapter === 'cluster-adapter') require('@socket.io/cluster-adapter').setupPrimary()
  // BENCH_PROF=DIR: a CPU profile of every worker (node --cpu-prof) in DIR.
  if (process.env.BENCH_PROF) cluster.setupPrimary({ execArgv: ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROF}`] })
  const workers = []
  const ports = []
  const replies = new Map()
  for (let i = 0; i < WORKERS; i++) {
    const w = cluster.fork({ BENCH_ROLE: 'worker' })
    workers.push(w)
    w.on('message', (m) => {
      if (m?.bench === 'port') ports[i] = m.port
      if (m?.bench === 'cpu') replies.get(i)?.(m.cpu)
    })
  }
  while (ports.filter(Boolean).length < WORKERS) await new Promise((r) => setTimeout(r, 20))
  const load = fork(__filename, [], { env: { ...process.env, BENCH_ROLE: 'clients', BENCH_PORTS: ports.join(',') } })
  const fromLoad = (what) => new Promise((resolve) => load.on('message', (m) => m.bench === what && resolve(m)))
  await fromLoad('connected')
  await new Promise((r) => setTimeout(r, 1000)) // heartbeats settle, nodes know each other
  const cpuOf = async () => {
    const ws = await Promise.all(workers.map((w, i) => new Promise((resolve) => (replies.set(i, resolve), w.send({ bench: 'cpu' })))))
    const own = process.cpuUsage()
    const redisPid = process.env.BENCH_REDIS_PID
    return ws.reduce((a, c) => a + c, own.user + own.system) + (adapter === 'redis-adapter' && redisPid ? procCpu(redisPid) : 0)
  }
  const cpu0 = await cpuOf()
  const clientCpu0 = procCpu(load.pid)
  const done = fromLoad('done')
  const t0 = process.hrtime.bigint()
  workers[0].send({ bench: 'go', messages })
  await done
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  const cpu = (await cpuOf()) - cpu0
  const deliveries = clients * messages
  const clientCpuPerDelivery = (procCpu(load.pid) - clientCpu0) / deliveries
  load.kill()

  // The adapter alone: serverSideEmit from worker 0 reaches the 3 other workers, no client.
  const sse = Number(process.env.BENCH_SSE)
  const sseCpu0 = await cpuOf()
  const sseDone = Promise.all(workers.slice(1).map((w) => new Promise((resolve) => w.on('message', (m) => m?.bench === 'sse-done' && resolve()))))
  const s0 = process.hrtime.bigint()
  workers[0].send({ bench: 'sse', messages: sse })
  await sseDone
  const sseSeconds = Number(process.hrtime.bigint() - s0) / 1e9
  const sseCpu = (await cpuOf()) - sseCpu0
  process.send({ deliveriesPerSec: deliveries / seconds, seconds, serverCpuPerDelivery: cpu / deliveries, clientCpuPerDelivery, sseMessagesPerSec: (sse * (WORKERS - 1)) / sseSeconds, sseCpuPerMessage: sseCpu / (sse * (WORKERS - 1)) })
  cluster.disconnect(() => {
    bus?.close()
    process.exit(0)
  })
}

// ---- a worker: socket.io with the adapter under test, on a port of its own ----
async function caseWorker() {
  const { Server } = require('socket.io')
  const adapter = process.env.BENCH_ADAPTER
  let createAdapterFn
  if (adapter === 'cluster-shm') createAdapterFn = require('../lib/socket.io.js').createAdapter(require('..').workerInit())
  else if (adapter === 'cluster-adapter') createAdapterFn = require('@socket.io/cluster-adapter').createAdapter()
  else {
    const Redis = require('ioredis')
    const pub = new Redis({ port: Number(process.env.BENCH_REDIS_PORT), host: '127.0.0.1' })
    createAdapterFn = require('@socket.io/redis-adapter').createAdapter(pub, pub.duplicate())
  }
  const server = http.createServer()
  const io = new Server(server, { adapter: createAdapterFn, transports: ['websocket'] })
  process.on('message', async (m) => {
    if (m?.bench === 'cpu') {
      const c = process.cpuUsage()
      process.send({ bench: 'cpu', cpu: c.user + c.system })
    } else if (m?.bench === 'sse') {
      for (let i = 0; i < m.messages; i++) {
        io.serverSideEmit('tick', i)
        if (i % 10 === 9) await new Promise((r) => setImmediate(r))
      }
    } else if (m?.bench === 'go') {
      for (let i = 0; i < m.messages; i++) {
        io.emit('tick', i)
        if (i % 10 === 9) await new Promise((r) => setImmediate(r))
      }
    }
  })
  let ticks = 0
  io.on('tick', () => ++ticks === Number(process.env.BENCH_SSE) && process.send({ bench: 'sse-done' }))
  process.on('disconnect', () => process.exit(0))
  server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => process.send({ bench: 'port', port: server.address().port }))
}

// ---- the clients: plain WebSockets speaking socket.io's protocol, in one process ----
async function clientsProcess() {
  const { WebSocket } = require('ws')
  const ports = process.env.BENCH_PORTS.split(',').map(Number)
  const n = Number(process.env.BENCH_CLIENTS)
  const expected = n * Number(process.env.BENCH_MESSAGES)
  let connected = 0
  let received = 0
  for (let i = 0; i < n; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${ports[i % ports.length]}/socket.io/?EIO=4&transport=websocket`)
    ws.on('message', (data) => {
      const s = data.toString()
      if (s[0] === '0') ws.send('40') // engine.io open -> connect to the main namespace
      else if (s === '2') ws.send('3') // ping -> pong
      else if (s.startsWith('40')) {
        if (++connected === n) process.send({ bench: 'connected' })
      } else if (s.startsWith('42')) {
        if (++received === expected) process.send({ bench: 'done' })
      }
    })
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 10)) // no SYN flood
  }
}

const role = process.env.BENCH_ROLE
if (role === 'case') casePrimary()
else if (role === 'worker') caseWorker()
else if (role === 'clients') clientsProcess()
else main().catch((err) => {
  console.error(err)
  process.exit(1)
})
