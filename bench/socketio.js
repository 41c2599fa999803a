#!/usr/bin/env node
'use strict'
// `node bench/socketio.js`: io.emit() from one worker to 1,000 connected clients spread over 4
// workers, with cluster-shm's socket.io adapter against @socket.io/cluster-adapter (packets
// relayed by the primary over process.send) and @socket.io/redis-adapter (a private
// redis-server, bench/lib/redis-server.js), in one run. Each adapter is a fresh cluster of its own.
//
//   node bench/socketio.js [--clients=1000] [--messages=400] [--sse=20000] [--repeat=3] [--out=DIR]
//   node bench/socketio.js --from=bench/results/socketio.json   (the .md again, from a run's results)
//   env: BENCH_ADAPTERS=cluster-shm,... (a subset), BENCH_PROF=DIR (a CPU profile per worker)
//
// The clients are plain WebSocket connections speaking the socket.io protocol (engine.io v4: open,
// '40' connect, '2'/'3' ping/pong, '42' events) in one separate process, so that what is
// measured is the servers' work, not socket.io-client's. Worker 0 emits `messages` small events
// (io.emit: to every client of the cluster); the time runs from the first emit until every client
// got every event. Reported: deliveries/s (clients × messages / time) and the CPU time of the
// servers' processes (primary, 4 workers, redis-server) per delivery; the clients' CPU apart.
// Then the same io.emit again with the workers' CPU profiled (node:inspector, in-process): each
// sample goes to the innermost frame that belongs either to the adapter (its package, cluster-shm's
// lib/, socket.io-adapter's cluster-adapter.js, ioredis, node:v8, the IPC of process.send) or to
// socket.io's per-client work (socket.io, socket.io-adapter's in-memory broadcast, engine.io, ws,
// net and streams); the primary's and redis-server's CPU count as the adapter's. This splits the
// server CPU per delivery into adapter / socket.io+ws / other (GC, timers, ...), and bounds what
// any adapter could gain on io.emit. Last, once the clients are gone, serverSideEmit from worker 0
// to the 3 other servers: the adapters alone.
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
  const messages = Number(opt('messages', 400))
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
          child.on('exit', (code, signal) => reject(new Error(`${adapter}: the case exited (${code ?? signal}) without a result`)))
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
    const split = Object.fromEntries(['adapter', 'socketio', 'other'].map((k) => [k, median(mine.map((x) => x.split[k]))]))
    return { adapter, deliveriesPerSec: median(mine.map((x) => x.deliveriesPerSec)), serverCpuPerDelivery: median(mine.map((x) => x.serverCpuPerDelivery)), clientCpuPerDelivery: median(mine.map((x) => x.clientCpuPerDelivery)), split, sseMessagesPerSec: median(mine.map((x) => x.sseMessagesPerSec)), sseCpuPerMessage: median(mine.map((x) => x.sseCpuPerMessage)), runs: mine.length }
  })
  const os = require('node:os')
  const meta = { when: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, clients, messages, sse, workers: WORKERS, repeat, redisVersion: redis.version ?? null, loadavg: os.loadavg() }
  report(out, { meta, summary, rows })
}

/** Writes DIR/socketio.json and socketio.md and prints the table. `--from=FILE.json`: redo the .md of an earlier run. */
function report(out, { meta, summary, rows }) {
  const { clients, messages, repeat } = meta
  const base = summary.find((s) => s.adapter === 'cluster-shm')
  const pct = (s) => (100 * s.split.adapter) / (s.split.adapter + s.split.socketio + s.split.other)
  const ref = summary.find((s) => s.adapter === 'cluster-adapter')
  const md = [
    `# socket.io: io.emit to ${clients} clients over ${WORKERS} workers`,
    '',
    `Run of ${meta.when}: Node ${meta.node}, ${meta.cpus} vCPU (${meta.cpuModel}), load average ${meta.loadavg.map((x) => x.toFixed(2)).join(' ')} at the end (a machine shared with other work), redis-server ${meta.redisVersion ?? '(not run)'}; ${messages} events of one worker to every client, then ${meta.sse} serverSideEmit events; each adapter ${repeat} times, in turn (medians). Command: \`node bench/socketio.js\`.`,
    '',
    '| adapter | io.emit deliveries/s | server CPU per delivery (µs) | of which adapter / socket.io+ws / other (µs, profiled run) | serverSideEmit deliveries/s (adapter alone) | CPU per serverSideEmit delivery (µs) |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...summary.map((s) => `| ${s.adapter} | ${Math.round(s.deliveriesPerSec).toLocaleString('en')} | ${s.serverCpuPerDelivery.toFixed(2)} | ${s.split.adapter.toFixed(2)} / ${s.split.socketio.toFixed(2)} / ${s.split.other.toFixed(2)} (adapter ${pct(s).toFixed(1)}%) | ${Math.round(s.sseMessagesPerSec).toLocaleString('en')} | ${s.sseCpuPerMessage.toFixed(2)} |`),
    '',
    ...summary.filter((s) => s !== base).map((s) => `cluster-shm against ${s.adapter}: the adapter alone (serverSideEmit) ${(base.sseMessagesPerSec / s.sseMessagesPerSec).toFixed(2)}× the rate, using ${(base.sseCpuPerMessage / s.sseCpuPerMessage).toFixed(2)}× its CPU per delivery; io.emit to the clients ${(base.deliveriesPerSec / s.deliveriesPerSec).toFixed(2)}× the rate, using ${(base.serverCpuPerDelivery / s.serverCpuPerDelivery).toFixed(2)}× its server CPU per delivery.`),
    '',
    ...(ref && base
      ? [
          `What an adapter can change in io.emit: with ${clients} clients, ${pct(ref).toFixed(1)}% of the servers' CPU is @socket.io/cluster-adapter's (its primary's relay included) and ${pct(base).toFixed(1)}% cluster-shm's; the rest is socket.io's per-client work (encoding once, then one engine.io packet, one WebSocket frame and one socket write per client and event), the same whichever adapter carries the event. On CPU-bound servers, even an adapter that cost nothing would make io.emit at most ${(1 / (1 - pct(ref) / 100)).toFixed(2)}× the rate of @socket.io/cluster-adapter: a goal of 3× on io.emit cannot be met by an adapter. The io.emit rates differ between runs by more than that (scheduling of 6 busy processes on 2 shared vCPUs: see the per-run rows in socketio.json); the serverSideEmit columns compare the adapters themselves.`,
          '',
        ]
      : []),
    'Method: bench/socketio.js (its header). Each adapter runs its own cluster: a primary, 4 workers with socket.io on ports of their own, and one process holding the 1,000 clients (plain WebSockets speaking the socket.io protocol, 250 per worker). io.emit: worker 0 emits small events to every client; the time runs until every client got every event. CPU: user+sys of the primary, the 4 workers and redis-server, per delivery. Split: the same io.emit again with the workers profiled in-process (node:inspector, 200 µs sampling); each sample goes to its innermost frame in the adapter (its package, cluster-shm\'s lib/, socket.io-adapter\'s cluster-adapter.js, ioredis, node:v8, process.send\'s IPC for cluster-adapter) or in socket.io\'s per-client path (socket.io, socket.io-adapter\'s in-memory broadcast, engine.io, ws, net, streams); each worker\'s CPU time is divided in those proportions, and the primary\'s and redis-server\'s CPU count as the adapter\'s. Samples are wall-clock, so a call during which the process is preempted (a wake-up of another process) weighs more than its CPU. serverSideEmit: once the clients are gone, worker 0 emits events to the 3 other servers (no client involved): the adapters alone.',
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
      if (m?.bench === 'sockets') replies.get(`n${i}`)?.(m.n)
      if (m?.bench === 'split') replies.get(`s${i}`)?.(m.split)
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

  // The same again, profiled: where the servers' CPU goes (see the header).
  const split = await profiledEmit(workers, replies, messages, fromLoad, adapter)
  const perDelivery = (x) => x / deliveries
  load.kill()
  // The clients' disconnections are handled before the adapters alone are measured.
  const sockets = () => Promise.all(workers.map((w, i) => new Promise((resolve) => (replies.set(`n${i}`, resolve), w.send({ bench: 'sockets' })))))
  while ((await sockets()).some((n) => n > 0)) await new Promise((r) => setTimeout(r, 50))

  // The adapter alone: serverSideEmit from worker 0 reaches the 3 other workers, no client.
  const sse = Number(process.env.BENCH_SSE)
  const sseCpu0 = await cpuOf()
  const sseDone = Promise.all(workers.slice(1).map((w) => new Promise((resolve) => w.on('message', (m) => m?.bench === 'sse-done' && resolve()))))
  const s0 = process.hrtime.bigint()
  workers[0].send({ bench: 'sse', messages: sse })
  await sseDone
  const sseSeconds = Number(process.hrtime.bigint() - s0) / 1e9
  const sseCpu = (await cpuOf()) - sseCpu0
  process.send({ deliveriesPerSec: deliveries / seconds, seconds, serverCpuPerDelivery: cpu / deliveries, clientCpuPerDelivery, split: { adapter: perDelivery(split.adapter), socketio: perDelivery(split.socketio), other: perDelivery(split.other) }, sseMessagesPerSec: (sse * (WORKERS - 1)) / sseSeconds, sseCpuPerMessage: sseCpu / (sse * (WORKERS - 1)) })
  cluster.disconnect(() => {
    bus?.close()
    process.exit(0)
  })
}

/**
 * io.emit of `messages` events again, with every worker's CPU profiled: resolves with the
 * servers' CPU time (µs) of that run split into { adapter, socketio, other } (see the header).
 */
async function profiledEmit(workers, replies, messages, fromLoad, adapter) {
  const ask = (what, tag) => Promise.all(workers.map((w, i) => new Promise((resolve) => (replies.set(`${tag}${i}`, resolve), w.send({ bench: what })))))
  await ask('profile', 's') // started
  const own0 = process.cpuUsage()
  const redisPid = process.env.BENCH_REDIS_PID
  const redis0 = adapter === 'redis-adapter' && redisPid ? procCpu(redisPid) : 0
  const done = fromLoad('done')
  workers[0].send({ bench: 'go', messages })
  await done
  const own = process.cpuUsage(own0)
  const redis = adapter === 'redis-adapter' && redisPid ? procCpu(redisPid) - redis0 : 0
  const split = { adapter: own.user + own.system + redis, socketio: 0, other: 0, primary: own.user + own.system, redis }
  const perWorker = await ask('unprofile', 's')
  for (const w of perWorker) for (const k of ['adapter', 'socketio', 'other']) split[k] += w[k]
  if (process.env.BENCH_DEBUG) console.error(adapter, JSON.stringify({ ...split, perWorker }))
  return split
}

/**
 * Which part an innermost frame's script belongs to (see the header), or null: look further out.
 * process.send's IPC is the adapter's only for @socket.io/cluster-adapter (else: this bench's).
 */
const ROOT_LIB = path.join(__dirname, '..', 'lib') + path.sep
const IPC = /^node:internal\/child_process/
function partOf(url) {
  if (url === '') return null
  if (url.includes(ROOT_LIB) || /socket\.io-adapter\/dist\/cluster-adapter|@socket\.io\/(cluster|redis)-adapter|\/(ioredis|redis-parser|notepack\.io|denque|cluster-key-slot)\/|^node:v8$/.test(url)) return 'adapter'
  if (IPC.test(url)) return process.env.BENCH_ADAPTER === 'cluster-adapter' ? 'adapter' : 'other'
  if (/node_modules\/(socket\.io|engine\.io|ws|socket\.io-parser|base64id)\/|socket\.io-adapter\/dist\/in-memory-adapter|^node:net$|^node:internal\/(streams|stream_base_commons|net)|^node:(http|_http)/.test(url)) return 'socketio'
  return null
}

/** The CPU time (µs) of a profile's samples per part: each sample goes to its innermost known frame. */
function splitProfile(profile) {
  const parent = new Map()
  const byId = new Map()
  for (const n of profile.nodes) {
    byId.set(n.id, n)
    for (const c of n.children ?? []) parent.set(c, n.id)
  }
  const partOfNode = new Map()
  const part = (id) => {
    if (partOfNode.has(id)) return partOfNode.get(id)
    const n = byId.get(id)
    const name = n.callFrame.functionName
    let p = name === '(idle)' ? 'idle' : name === '(garbage collector)' || name === '(program)' || name === '(root)' ? 'other' : partOf(n.callFrame.url)
    if (p === null) p = parent.has(id) ? part(parent.get(id)) : 'other'
    partOfNode.set(id, p)
    return p
  }
  const us = { adapter: 0, socketio: 0, other: 0, idle: 0 }
  for (let i = 0; i < profile.samples.length; i++) us[part(profile.samples[i])] += profile.timeDeltas[i] ?? 0
  return us
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
  let session = null
  let cpu0 = null
  process.on('message', async (m) => {
    if (m?.bench === 'cpu') {
      const c = process.cpuUsage()
      process.send({ bench: 'cpu', cpu: c.user + c.system })
    } else if (m?.bench === 'sockets') {
      process.send({ bench: 'sockets', n: io.engine.clientsCount })
    } else if (m?.bench === 'profile') {
      session = new (require('node:inspector').Session)()
      session.connect()
      const post = (method, params) => new Promise((resolve, reject) => session.post(method, params, (err, r) => (err ? reject(err) : resolve(r))))
      await post('Profiler.enable')
      await post('Profiler.setSamplingInterval', { interval: 200 })
      await post('Profiler.start')
      cpu0 = process.cpuUsage()
      process.send({ bench: 'split', split: null })
    } else if (m?.bench === 'unprofile') {
      const c = process.cpuUsage(cpu0)
      const { profile } = await new Promise((resolve, reject) => session.post('Profiler.stop', (err, r) => (err ? reject(err) : resolve(r))))
      session.disconnect()
      // The samples give the shares of the busy time; the process's CPU time gives the µs.
      const us = splitProfile(profile)
      const busy = us.adapter + us.socketio + us.other
      const cpu = c.user + c.system
      process.send({ bench: 'split', split: { adapter: (cpu * us.adapter) / busy, socketio: (cpu * us.socketio) / busy, other: (cpu * us.other) / busy } })
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
        if (++received === expected) {
          received = 0 // for the next round of io.emit
          process.send({ bench: 'done' })
        }
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
