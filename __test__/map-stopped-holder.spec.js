'use strict'
// A process stopped (SIGSTOP) while it holds a map's lock must not freeze the other processes'
// JS threads: their map operations give up after `lockTimeout` ms with ERR_LOCK_TIMEOUT and
// change nothing; once the holder runs again, they work. The holder is a real child process (the
// cluster's primary) doing 1 MiB map.set()s in a loop, stopped until it is caught holding the lock.

const { spawn, execFileSync } = require('node:child_process')
const readline = require('node:readline')
const test = require('ava')
const { workerInit } = require('..')
const { childEnv } = require('./helpers/harness')

const MAP = { capacity: 2, maxKeyBytes: 16, maxValueBytes: 1 << 20 }
const HOLDER = `
const { masterInit } = require(${JSON.stringify(require.resolve('..'))})
const bus = masterInit({ workers: 1, ringSize: 65536, heapSize: 16 << 20 })
const map = bus.map('m', ${JSON.stringify(MAP)})
const big = Buffer.alloc(${MAP.maxValueBytes} - 1, 1)
console.log(bus.name)
for (;;) map.set('big', big) // most of its time inside the map's lock, copying 1 MiB
`

const state = (pid) => execFileSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).trim()

test('map operations are bounded while a SIGSTOPped process holds the lock', async (t) => {
  t.timeout(60_000)
  const child = spawn(process.execPath, ['-e', HOLDER], { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT')
      child.kill('SIGKILL')
    }
  })
  const name = await new Promise((resolve) => readline.createInterface({ input: child.stdout }).once('line', resolve))
  const bus = workerInit({ name })
  t.teardown(() => bus.close())
  const map = bus.map('m', { ...MAP, lockTimeout: 20 })
  t.is(map.lockTimeout, 20)

  // Stop the holder until it is caught inside the lock (the probe's get() times out).
  let caught = null
  for (let attempt = 0; attempt < 50 && caught === null; attempt++) {
    child.kill('SIGSTOP')
    while (!state(child.pid).startsWith('T')) await new Promise((resolve) => setTimeout(resolve, 5))
    try {
      map.get('small')
      child.kill('SIGCONT')
      await new Promise((resolve) => setTimeout(resolve, 10 + attempt))
    } catch (err) {
      caught = err
    }
  }
  t.is(caught?.code, 'ERR_LOCK_TIMEOUT', `the stopped holder was caught inside the lock: ${caught}`)

  // Every operation is bounded while it stays stopped.
  const ops = {
    get: () => map.get('small'),
    has: () => map.has('small'),
    set: () => map.set('small', 1),
    increment: () => map.increment('n'),
    delete: () => map.delete('small'),
    compareAndSet: () => map.compareAndSet('small', undefined, 2),
    keys: () => map.keys(),
    size: () => map.size,
  }
  for (const [op, call] of Object.entries(ops)) {
    const t0 = process.hrtime.bigint()
    let err = null
    try {
      call()
    } catch (e) {
      err = e
    }
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    t.is(err?.code, 'ERR_LOCK_TIMEOUT', `${op}: ${err}`)
    t.true(ms < 1000, `${op} returned after ${ms.toFixed(1)} ms, not when the holder resumed`)
  }
  t.true(state(child.pid).startsWith('T'), 'the holder was stopped all along')

  // The holder resumes: the operations work again, and none of the refused ones changed anything.
  child.kill('SIGCONT')
  map.lockTimeout = 1000
  t.is(map.get('small'), undefined, 'the refused set() wrote nothing')
  t.is(map.get('n'), undefined, 'the refused increment() wrote nothing')
  t.is(map.increment('n', 2), 2)
  t.is(map.get('big').length, MAP.maxValueBytes - 1, "the holder's value is whole")
})
