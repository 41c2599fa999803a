'use strict'
// Bun loads the addon but its libuv functions are stubs: uv_poll_init panics (exit 134) and the
// segment was left behind. A subscription under Bun must choose the delivery thread by itself.
// Runs a real Bun process (node_modules/.bin/bun, from the `bun` devDependency) that subscribes
// and exchanges messages, with no CLUSTER_SHM_DELIVERY in its environment.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const test = require('ava')
const { childEnv, SHM_DIR } = require('./helpers/harness')

const BUN = path.join(__dirname, '..', 'node_modules', '.bin', 'bun')
const SCRIPT = `
const { masterInit, workerInit, PRIMARY } = require(${JSON.stringify(path.join(__dirname, '..'))})
const m = masterInit({ workers: 1, ringSize: 65536 })
const w = workerInit({ name: m.name })
console.log(JSON.stringify({ runtime: process.versions.bun ? 'bun' : 'node', name: m.name }))
let got = 0
m.subscribe(({ from, data }) => {
  if (++got < 1000) return
  console.log(JSON.stringify({ got, from, last: data, delivery: m.delivery }))
  w.close()
  m.close()
})
for (let i = 0; i < 1000; i++) w.send(PRIMARY, { i })
`

test('under Bun, a subscription uses the delivery thread instead of aborting in uv_poll_init', (t) => {
  t.timeout(60_000)
  const env = childEnv()
  delete env.CLUSTER_SHM_DELIVERY
  const r = spawnSync(BUN, ['-e', SCRIPT], { env, encoding: 'utf8', timeout: 50_000 })
  const first = r.stdout.split('\n')[0]
  // A Bun that aborted leaves its segment: remove it whatever the outcome.
  if (first.startsWith('{')) t.teardown(() => fs.rmSync(path.join(SHM_DIR, JSON.parse(first).name.slice(1)), { force: true }))
  t.is(r.status, 0, `bun exited with ${r.status} / ${r.signal}: ${r.stderr.slice(-2000)}`)
  const [hello, done] = r.stdout.trim().split('\n').map((l) => JSON.parse(l))
  t.is(hello.runtime, 'bun', 'it ran on Bun')
  t.deepEqual(done, { got: 1000, from: 0, last: { i: 999 }, delivery: 'thread' })
  t.false(fs.existsSync(path.join(SHM_DIR, hello.name.slice(1))), 'no segment left')
})
