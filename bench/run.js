#!/usr/bin/env node
'use strict'
// `npm run bench`: cluster-shm side by side with what Node users reach for instead, in one run
// on one machine. Each case is a fresh cluster (a case primary, bench/lib/case.js, forking its
// workers) in its own process group, bounded in time and killed whole if it overruns.
//
//   npm run bench                 full run (a few minutes), results in bench/results/
//   npm run bench -- --quick      ~30 s smoke run, results in $TMPDIR/cluster-shm-bench-quick/
//   options: --only=id,id (rows: see ROWS)  --tests=latency,throughput,bulk,broadcast,topic,rpc,rpc32
//            --fanout=4,8 (broadcast sizes beyond N=2; empty: none)  --out=DIR  --no-redis
//            --repeat=K (every case K times, round-robin; the report shows medians)
//
// Method: bench/README.md.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { fork, execFileSync } = require('node:child_process')
const redisServer = require('./lib/redis-server')
const report = require('./lib/report')

const args = process.argv.slice(2)
const flag = (name) => args.includes(`--${name}`)
const opt = (name) => {
  const a = args.find((x) => x.startsWith(`--${name}=`))
  return a === undefined ? undefined : a.slice(name.length + 3)
}
const quick = flag('quick')

const PARAMS = quick
  ? { latencyWarmMs: 100, latencyMs: 300, maxRounds: 200_000, streamWarmMs: 100, streamMs: 300, bulkWarmMs: 100, bulkMs: 300, broadcastWarmMs: 50, broadcastMs: 250, topicWarmMs: 50, topicMs: 250, rpcWarmMs: 100, rpcMs: 300 }
  : { latencyWarmMs: 500, latencyMs: 2000, maxRounds: 400_000, streamWarmMs: 300, streamMs: 2000, bulkWarmMs: 300, bulkMs: 2000, broadcastWarmMs: 200, broadcastMs: 1500, topicWarmMs: 200, topicMs: 1500, rpcWarmMs: 300, rpcMs: 2000 }
const FANOUT = opt('fanout') !== undefined ? opt('fanout').split(',').filter(Boolean).map(Number) : quick ? [4] : [4, 8]
const onlyTests = opt('tests')?.split(',')
const REPEAT = Math.max(1, Number(opt('repeat') ?? 1))

/** The rows of the report: a mechanism with a variant, and the tests that apply to it. */
const ALL = ['latency', 'throughput', 'bulk', 'broadcast', 'rpc', 'rpc32'] // rpc last: it takes over the workers' receive handlers
/** Workers of the topic fan-out case: one publisher, 2 subscribers, the rest not subscribed. */
const TOPIC_N = 8
const ROWS = [
  { id: 'shm-buffer', mech: 'cluster-shm', variant: { payload: 'buffer' }, label: 'cluster-shm (Buffer)', tests: ALL, fanout: true, topic: true, shm: true },
  { id: 'shm-string', mech: 'cluster-shm', variant: { payload: 'string' }, label: 'cluster-shm (string)', tests: ['latency', 'throughput', 'broadcast'], fanout: true, shm: true },
  { id: 'shm-value', mech: 'cluster-shm', variant: { payload: 'value' }, label: 'cluster-shm (value)', tests: ['latency', 'throughput'], shm: true },
  { id: 'shm-object', mech: 'cluster-shm', variant: { payload: 'object' }, label: 'cluster-shm (object)', tests: ['latency', 'throughput', 'rpc', 'rpc32'], shm: true },
  { id: 'shm-spin', mech: 'cluster-shm', variant: { payload: 'buffer', spinMicros: 50 }, label: 'cluster-shm (Buffer, spinMicros 50)', tests: ['latency'], shm: true },
  { id: 'shm-poll', mech: 'cluster-shm', variant: { payload: 'buffer', poll: true }, label: 'cluster-shm (Buffer, busy-poll read())', tests: ['latency'], shm: true },
  { id: 'ps-json', mech: 'process-send', variant: { serialization: 'json' }, label: "process.send (json)", tests: ALL, fanout: true, topic: true },
  { id: 'ps-advanced', mech: 'process-send', variant: { serialization: 'advanced' }, label: "process.send (advanced)", tests: ALL, fanout: true, topic: true },
  { id: 'unix-socket', mech: 'unix-socket', variant: {}, label: 'Unix socket (direct)', tests: ALL, fanout: true, topic: true },
  { id: 'sock-string', mech: 'unix-socket', variant: { payload: 'string' }, label: 'Unix socket (string frames)', tests: ['throughput'] },
  { id: 'sock-json', mech: 'unix-socket', variant: { payload: 'object' }, label: 'Unix socket (JSON frames)', tests: ['latency', 'throughput', 'rpc', 'rpc32'] },
  { id: 'ps-json-object', mech: 'process-send', variant: { serialization: 'json', payload: 'object' }, label: 'process.send (json, object)', tests: ['throughput'] },
  { id: 'redis', mech: 'redis', variant: {}, label: 'Redis pub/sub (ioredis)', tests: ALL, fanout: true, topic: true },
]

const only = opt('only')?.split(',')
const rows = only ? ROWS.filter((r) => only.includes(r.id)) : ROWS
const outDir = path.resolve(opt('out') ?? (quick ? path.join(os.tmpdir(), 'cluster-shm-bench-quick') : path.join(__dirname, 'results')))

let current = null // the running case's child process
let redis = null
let interrupted = false

function shmLeftovers(pid) {
  const prefix = `cshm_${pid.toString(16)}_`
  try {
    return fs.readdirSync('/dev/shm').filter((f) => f.startsWith(prefix))
  } catch {
    return []
  }
}

/** Runs one case; resolves with its result (or { error }). Never rejects. */
function runCase(row, workers, tests) {
  const spec = { mech: row.mech, variant: row.variant, workers, tests, params: PARAMS, label: row.label }
  const budgetMs = tests.reduce((a, t) => a + testBudget(t), 0) * 3 + 30_000
  return new Promise((resolve) => {
    const child = fork(path.join(__dirname, 'lib', 'case.js'), [JSON.stringify(spec)], {
      detached: true, // its own process group: the case primary and its workers die together
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, ...(redis && redis.port ? { BENCH_REDIS_PORT: String(redis.port), BENCH_REDIS_PID: String(redis.pid) } : {}) },
    })
    current = child
    let outcome = null
    const timer = setTimeout(() => {
      outcome = { error: `case did not finish within ${budgetMs / 1000} s (killed)` }
      killGroup(child)
    }, budgetMs)
    child.on('message', (m) => {
      if (m.result) outcome ??= m.result
      else if (m.error) outcome ??= { error: m.error, results: m.partial }
    })
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      current = null
      killGroup(child) // workers that outlived their primary
      const left = shmLeftovers(child.pid)
      for (const f of left) fs.rmSync(path.join('/dev/shm', f), { force: true })
      outcome ??= { error: `case primary exited (${signal ?? code}) without a result` }
      if (left.length) outcome.shmLeftovers = left
      resolve(outcome)
    })
  })
}

/** Which cluster-shm was measured: its directory, git commit, uncommitted changes, binary date. */
function libraryInfo() {
  const dir = path.resolve(process.env.BENCH_LIB || path.join(__dirname, '..'))
  const git = (...a) => {
    try {
      return execFileSync('git', ['-C', dir, ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    } catch {
      return null
    }
  }
  // BENCH_LIB_COMMIT labels a clean copy (e.g. `git archive` of a commit) that has no .git.
  const commit = process.env.BENCH_LIB_COMMIT || git('rev-parse', '--short', 'HEAD')
  const changed = process.env.BENCH_LIB_COMMIT ? '' : commit === null ? null : git('status', '--porcelain', '--', 'src', 'index.js', 'lib', 'binding.js')
  let binary = null
  try {
    const f = fs.readdirSync(dir).find((x) => x.startsWith('cluster-shm.') && x.endsWith('.node'))
    if (f) binary = { file: f, modified: fs.statSync(path.join(dir, f)).mtime.toISOString() }
  } catch {}
  return { dir, commit, uncommittedChanges: changed === null ? null : changed.split('\n').filter(Boolean).map((l) => l.trim()), binary }
}

function killGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL')
  } catch {}
}

function testBudget(t) {
  const p = PARAMS
  return { latency: p.latencyWarmMs + p.latencyMs, throughput: p.streamWarmMs + p.streamMs, bulk: p.bulkWarmMs + p.bulkMs, broadcast: p.broadcastWarmMs + p.broadcastMs, topic: p.topicWarmMs + p.topicMs, rpc: p.rpcWarmMs + p.rpcMs, rpc32: p.rpcWarmMs + p.rpcMs }[t] + 2000
}

function fmtCase(row, workers, r) {
  const parts = []
  const res = r.results || {}
  if (res.latency && !res.latency.error) parts.push(`p50 ${res.latency.oneWayUs.p50.toFixed(1)} µs p99 ${res.latency.oneWayUs.p99.toFixed(1)} µs`)
  if (res.throughput && !res.throughput.error) parts.push(`${Math.round(res.throughput.msgsPerSec).toLocaleString('en')} msgs/s`)
  if (res.bulk && !res.bulk.error) parts.push(`${Math.round(res.bulk.MBps)} MB/s`)
  if (res.broadcast && !res.broadcast.error) parts.push(`bcast N=${workers}: ${Math.round(res.broadcast.msgsPerSec).toLocaleString('en')}/s per receiver`)
  if (res.topic && !res.topic.error) parts.push(`topic N=${workers}: ${Math.round(res.topic.msgsPerSec).toLocaleString('en')}/s per subscriber, ${res.topic.cpuPerMsgUs.toFixed(2)} µs CPU/delivery`)
  for (const k of ['rpc', 'rpc32']) if (res[k] && !res[k].error) parts.push(`req/resp c=${res[k].concurrency}: ${Math.round(res[k].msgsPerSec).toLocaleString('en')}/s p50 RTT ${res[k].rttUs.p50.toFixed(1)} µs`)
  const err = r.error ? `  ERROR: ${r.error}` : ''
  return `  ${row.label.padEnd(40)} ${parts.join(' | ')}${err}`
}

async function main() {
  const started = Date.now()
  console.log(`cluster-shm benchmark${quick ? ' (quick)' : ''}: Node ${process.version}, ${os.cpus().length} CPU (${os.cpus()[0]?.model.trim()}), ${os.type()} ${os.release()}`)
  const loadBefore = os.loadavg()
  if (loadBefore[0] > 0.7) console.log(`  note: the machine is busy (load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}): figures will be noisier`)
  const skipped = {}
  if (rows.some((r) => r.mech === 'redis')) {
    if (flag('no-redis')) skipped.redis = '--no-redis'
    else {
      try {
        const r = await redisServer.start()
        if (r.skipped) skipped.redis = r.skipped
        else redis = r
      } catch (err) {
        skipped.redis = `redis-server did not start: ${err.message.split('\n')[0]}`
      }
    }
    if (skipped.redis) console.log(`  skipping Redis: ${skipped.redis}`)
    else console.log(`  redis-server ${redis.version} on 127.0.0.1:${redis.port} (pid ${redis.pid})`)
  }
  if (rows.some((r) => r.mech === 'cluster-shm')) {
    // The addon must load and create a segment; otherwise every cluster-shm case would fail alike.
    try {
      const lib = require(process.env.BENCH_LIB || path.join(__dirname, '..'))
      lib.masterInit({ workers: 1 }).close()
      delete process.env[lib.SEGMENT_ENV]
    } catch (err) {
      skipped['cluster-shm'] = `the addon does not work here: ${err.message.split('\n')[0]}`
      console.log(`  skipping cluster-shm: ${skipped['cluster-shm']}`)
      process.exitCode = 1
    }
  }
  const cases = []
  const plan = []
  for (const row of rows) {
    if (skipped[row.mech]) continue
    const tests = row.tests.filter((t) => !onlyTests || onlyTests.includes(t))
    if (tests.length) plan.push([row, 2, tests])
  }
  if (!onlyTests || onlyTests.includes('broadcast')) {
    for (const n of FANOUT) for (const row of rows) if (row.fanout && !skipped[row.mech]) plan.push([row, n, ['broadcast']])
  }
  if (!onlyTests || onlyTests.includes('topic')) {
    for (const row of rows) if (row.topic && !skipped[row.mech]) plan.push([row, TOPIC_N, ['topic']])
  }
  for (let round = 1; round <= REPEAT; round++) {
    if (REPEAT > 1) console.log(`  -- round ${round} of ${REPEAT}`)
    for (const [row, workers, tests] of plan) {
      if (interrupted) break
      const r = await runCase(row, workers, tests)
      console.log(fmtCase(row, workers, r))
      cases.push({ id: row.id, mech: row.mech, label: row.label, variant: row.variant, workers, tests, round, ...r })
    }
  }
  const redisVersion = redis ? redis.version : null
  if (redis) await redis.stop()
  redis = null
  const meta = {
    date: new Date().toISOString(),
    quick,
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    redisVersion,
    params: PARAMS,
    repeat: REPEAT,
    library: libraryInfo(),
    seconds: (Date.now() - started) / 1000,
    loadavgBefore: loadBefore,
    loadavgAfter: os.loadavg(),
    skipped,
    interrupted,
  }
  const files = report.write({ meta, rows, cases, outDir, updateReadme: !quick && !only && !onlyTests && opt('fanout') === undefined && !opt('out') })
  console.log(`\n${files.markdown}\n`)
  console.log(`results: ${outDir} (${Object.values(files.paths).map((f) => path.basename(f)).join(', ')}) in ${meta.seconds.toFixed(0)} s`)
  const failed = cases.filter((c) => c.error)
  if (failed.length) {
    console.log(`${failed.length} case(s) failed:`)
    for (const c of failed) console.log(`  ${c.label} N=${c.workers}: ${c.error}`)
    process.exitCode = 1
  }
}

// Whatever ends this process (an error, a closed stdout), the case running and redis-server go too.
process.on('exit', () => {
  if (current) killGroup(current)
  if (redis) redis.kill()
})
process.stdout.on('error', () => {})

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (interrupted) return
    interrupted = true
    console.error(`\n${sig}: stopping`)
    if (current) killGroup(current)
    if (redis) redis.kill()
    setTimeout(() => process.exit(130), 500)
  })
}

main().catch((err) => {
  console.error(err)
  if (current) killGroup(current)
  if (redis) redis.kill()
  process.exitCode = 1
})
