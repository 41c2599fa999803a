'use strict'
// Two-worker message exchange through cluster-shm, for smoke tests of a packaged or
// cross-built binary (scripts/pack-smoke.sh, scripts/cross-build-*.sh).
//
// The primary forks two workers. Worker 0 sends worker 1 SMOKE_N messages (strings, Buffers,
// structured values) and one Buffer of 3 MiB (larger than the 64 KiB rings: chunked, so both
// the receiver's doorbell and the sender's space bell are rung across processes); worker 1
// echoes every message back with send(); worker 0 checks that everything came back, in order
// and intact, and reports to the primary through the bus. Prints `smoke: ok ...` and exits 0,
// or prints `smoke: FAIL ...` and exits 1. A watchdog (SMOKE_TIMEOUT_MS, default 120 s, for
// emulators) ends a hung run.
//
// Usage: node smoke-exchange.js            loads `cluster-shm` as resolved from the cwd
//        SMOKE_MODULE=/path/to/pkg node smoke-exchange.js

const cluster = require('node:cluster')
const { isDeepStrictEqual } = require('node:util')

const modulePath = require.resolve(process.env.SMOKE_MODULE || 'cluster-shm', { paths: [process.cwd()] })
const { masterInit, workerInit, PRIMARY } = require(modulePath)

const N = Number(process.env.SMOKE_N || 2000)
const TIMEOUT = Number(process.env.SMOKE_TIMEOUT_MS || 120_000)
const BIG = 3 * 1024 * 1024 + 7

function payload(i) {
  switch (i % 3) {
    case 0:
      return `message ${i} ✓`
    case 1:
      return Buffer.alloc(1 + (i % 200), i & 0xff)
    default:
      return { i, when: new Date(i * 1000), tags: new Set(['a', String(i)]), n: BigInt(i) * 3n }
  }
}

function big() {
  const b = Buffer.alloc(BIG)
  for (let i = 0; i < BIG; i += 4096) b[i] = (i / 4096) & 0xff
  b[BIG - 1] = 0x5a
  return b
}

function fail(msg) {
  console.log(`smoke: FAIL ${msg}`)
  process.exit(1)
}

if (cluster.isPrimary) {
  const started = Date.now()
  const watchdog = setTimeout(() => {
    for (const w of Object.values(cluster.workers)) w.process.kill()
    fail(`timed out after ${TIMEOUT} ms`)
  }, TIMEOUT)
  const bus = masterInit({ workers: 2, ringSize: 65536 })
  let report = null
  let exited = 0
  bus.subscribe(({ from, data }) => {
    if (data && data.report) {
      report = { from, ...data.report }
      if (!report.ok) fail(`worker ${from}: ${report.error}`)
      for (const w of Object.values(cluster.workers)) w.disconnect()
    }
  })
  cluster.on('exit', (worker, code, signal) => {
    if (!report) fail(`worker ${worker.process.pid} exited (code ${code}, signal ${signal}) before the report`)
    if (code !== 0) fail(`worker ${worker.process.pid} exited with code ${code}`)
    if (++exited === 2) {
      clearTimeout(watchdog)
      bus.close()
      console.log(
        `smoke: ok ${report.messages} messages + ${BIG} bytes worker->worker and back, ` +
          `node ${process.version} ${process.platform}-${process.arch}, ${Date.now() - started} ms (${modulePath})`,
      )
    }
  })
  cluster.fork()
  cluster.fork()
} else {
  const bus = workerInit()
  const report = (r) => bus.send(PRIMARY, { report: r })
  if (bus.index === 1) {
    bus.subscribe(({ from, data }) => {
      bus.send(from, data).catch((err) => report({ ok: false, error: `echo: ${err.code} ${err.message}` }))
    })
  } else {
    const expected = []
    let got = 0
    const done = new Promise((resolve, reject) => {
      bus.subscribe(({ from, data }) => {
        const want = expected[got]
        if (from !== 1) return reject(new Error(`message from ${from}`))
        const same = Buffer.isBuffer(want) ? Buffer.isBuffer(data) && want.equals(data) : isDeepStrictEqual(data, want)
        if (!same) return reject(new Error(`message ${got} came back different`))
        if (++got === expected.length) resolve()
      })
    })
    ;(async () => {
      while (!bus.peers().includes(1)) await new Promise((r) => setTimeout(r, 10))
      for (let i = 0; i < N; i++) expected.push(payload(i))
      expected.push(big())
      for (const m of expected) await bus.send(1, m)
      await done
      await report({ ok: true, messages: N })
    })().catch((err) => report({ ok: false, error: err.stack || String(err) }))
  }
}
