'use strict'
// Unawaited send()s to a receiver that never reads: the bytes queued per process stop at a
// high-water mark (send() rejects at once with ERR_QUEUE_FULL past it), `queuedBytes` tells how
// many are queued, and close() gives the memory back. Runs in a fresh child process, so that its
// memory figures are its own.

const { execFileSync } = require('node:child_process')
const test = require('ava')
const { childEnv } = require('./helpers/harness')

const CHILD = `
const { masterInit, workerInit, PRIMARY } = require(${JSON.stringify(require.resolve('..'))})
const mib = (n) => Math.round(n / 1048576)
const m = masterInit({ workers: 2, ringSize: 65536 })
const w = workerInit({ name: m.name, maxQueuedBytes: 32 << 20 })
const other = workerInit({ name: m.name })
const dflt = other.maxQueuedBytes
other.close()
` + `
async function main() {
  const payload = Buffer.alloc(64 << 10, 7)
  global.gc(); const rss0 = process.memoryUsage().rss
  const settled = []
  let full = 0
  for (let i = 0; i < 2000; i++) {
    settled.push(w.send(PRIMARY, payload).then(() => 'sent', (e) => (e.code === 'ERR_QUEUE_FULL' && full++, e.code)))
  }
  const queuedBytes = w.queuedBytes
  global.gc(); const rss1 = process.memoryUsage().rss
  w.close()
  const codes = await Promise.all(settled)
  await new Promise((r) => setTimeout(r, 100))
  global.gc(); const rss2 = process.memoryUsage().rss
  m.close()
  const count = (c) => codes.filter((x) => x === c).length
  console.log(JSON.stringify({ dflt, queuedBytes, after: w.queuedBytes, full, closed: count('ERR_CLOSED'), sent: count('sent'), rss0: mib(rss0), rss1: mib(rss1), rss2: mib(rss2) }))
}
main()
`

test('unawaited sends stop at maxQueuedBytes with ERR_QUEUE_FULL; close() releases what was queued', (t) => {
  t.timeout(60_000)
  const out = execFileSync(process.execPath, ['--expose-gc', '-e', CHILD], { env: childEnv(), encoding: 'utf8', timeout: 50_000 })
  const r = JSON.parse(out.trim().split('\n').pop())
  t.log(r)
  t.is(r.dflt, 64 << 20, 'the default high-water mark is 64 MiB')
  t.true(r.queuedBytes > 0 && r.queuedBytes <= 32 << 20, `queuedBytes ${r.queuedBytes} is within the mark`)
  t.true(r.full >= 1400, `sends past the mark were refused at once (${r.full} of 2000)`)
  t.is(r.full + r.closed + r.sent, 2000, 'every send settled')
  t.true(r.closed > 0, 'the queued ones were rejected by close() with ERR_CLOSED')
  t.is(r.after, 0, 'nothing is queued after close()')
  t.true(r.rss1 - r.rss0 < 80, `memory grew by at most the mark and change (${r.rss1 - r.rss0} MiB)`)
  t.true(r.rss2 - r.rss0 < 16, `close() gave the queued memory back (RSS ${r.rss0} -> ${r.rss1} -> ${r.rss2} MiB)`)
})
