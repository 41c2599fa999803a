'use strict'
// Fixture-side helpers (used by the scripts in __test__/fixtures, which run as a real cluster
// primary and its workers). Output is one JSON object per line on the primary's stdout; workers
// send their lines to the primary over the cluster IPC channel, which prints them. Commands from
// the test arrive as JSON lines on the primary's stdin.

const cluster = require('node:cluster')
const fs = require('node:fs')
const readline = require('node:readline')

const lib = require('../..')

/** Prints one line straight to stdout (what a worker does once its IPC channel is closed). */
function write(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** Prints one line (primary) or hands it to the primary (worker). */
function out(obj) {
  if (cluster.isPrimary) write(obj)
  else if (process.connected) process.send({ __out: { pid: process.pid, ...obj } })
}

/** Primary: prints the lines of the workers; calls `onMessage(worker, msg)` for other messages. */
function relay(onMessage) {
  cluster.on('message', (worker, msg) => {
    if (msg && typeof msg === 'object' && msg.__out) write(msg.__out)
    else if (onMessage) onMessage(worker, msg)
  })
}

/** Primary: sends `msg` to every worker. */
function toWorkers(msg) {
  for (const w of Object.values(cluster.workers)) w.send(msg)
}

/**
 * Primary: forks `n` workers, relays their lines and hands their other messages to
 * `onMessage(worker, msg)`; once all `n` have sent { type: 'finished', index } (see finished),
 * disconnects them, then prints `end`.
 */
function forkUntilFinished(n, onMessage) {
  const finished = new Set()
  relay((worker, msg) => {
    if (onMessage) onMessage(worker, msg)
    if (msg.type === 'finished') {
      finished.add(msg.index)
      if (finished.size === n) cluster.disconnect(() => out({ event: 'end' }))
    }
  })
  for (let i = 0; i < n; i++) cluster.fork()
}

/** Worker: tells forkUntilFinished that worker `index` is finished (`extra`: more fields for the primary). */
function finished(index, extra) {
  process.send({ type: 'finished', index, ...extra })
}

/**
 * Worker: waits a grace period, within which anything extra (a duplicate) would still arrive,
 * then prints `report()` and tells the primary that worker `index` is finished.
 */
function finishAfterGrace(index, report) {
  setTimeout(() => {
    out(report())
    finished(index)
  }, 200)
}

/** Primary: calls `cb(cmd)` for every JSON line on stdin. Returns stop(), which lets the process exit. */
function commands(cb) {
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    if (line.trim() !== '') cb(JSON.parse(line))
  })
  return () => {
    rl.close()
    process.stdin.destroy()
  }
}

/** Reports an uncaught error as a line and exits with 1 (workers hand the line over first). */
function reportErrors() {
  const die = (err) => {
    const line = { event: 'error', message: String(err && err.message), code: err && err.code, stack: String(err && err.stack) }
    if (cluster.isPrimary) {
      write(line)
      process.exit(1)
    } else if (process.connected) {
      process.send({ __out: { pid: process.pid, ...line } }, () => process.exit(1))
    } else {
      process.exit(1)
    }
  }
  process.on('uncaughtException', die)
  process.on('unhandledRejection', die)
}

/** A timer that does not keep the process alive: exits with code 3 if the fixture is still running. */
function watchdog(ms) {
  setTimeout(() => {
    out({ event: 'watchdog' })
    process.exit(3)
  }, ms).unref()
}

/** Resolves once `cond()` is true (checked every `every` ms), or rejects after `timeout` ms. */
async function until(cond, { timeout = 10_000, every = 5, what = 'condition' } = {}) {
  const end = Date.now() + timeout
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, every))
  }
}

/** Worker: resolves with the next IPC message from the primary matching `type`. */
function fromPrimary(type) {
  return new Promise((resolve) => {
    const on = (msg) => {
      if (msg && msg.type === type) {
        process.off('message', on)
        resolve(msg)
      }
    }
    process.on('message', on)
  })
}

/** Primary: resolves with the next IPC message of `type` from any worker: [worker, msg]. */
function fromWorker(type) {
  return new Promise((resolve) => {
    const on = (worker, msg) => {
      if (msg && msg.type === type) {
        cluster.off('message', on)
        resolve([worker, msg])
      }
    }
    cluster.on('message', on)
  })
}

/** Worker: tells the primary something over IPC (not through the bus). */
const tell = (msg) => process.send(msg)

/** A queue of typed messages: `next(type)` resolves with the next item pushed with that type, even one pushed before. */
function typedQueue() {
  const seen = []
  const waiting = []
  return {
    push(type, item) {
      const i = waiting.findIndex((w) => w.type === type)
      if (i >= 0) waiting.splice(i, 1)[0].resolve(item)
      else seen.push({ type, item })
    },
    next(type) {
      const i = seen.findIndex((s) => s.type === type)
      if (i >= 0) return Promise.resolve(seen.splice(i, 1)[0].item)
      return new Promise((resolve) => waiting.push({ type, resolve }))
    },
  }
}

const isTyped = (msg) => msg && typeof msg === 'object' && typeof msg.type === 'string'

/** Worker: a queue of the primary's IPC commands: `next(type)` resolves with the next one of `type`. */
function commandsFromPrimary() {
  const queue = typedQueue()
  process.on('message', (msg) => {
    if (isTyped(msg)) queue.push(msg.type, msg)
  })
  return { next: queue.next }
}

/**
 * Primary: relays the workers' lines (see relay) and queues their other IPC messages:
 * `next(type)` resolves with the next [worker, msg] of `type`.
 */
function messagesFromWorkers() {
  const queue = typedQueue()
  relay((worker, msg) => {
    if (isTyped(msg)) queue.push(msg.type, [worker, msg])
  })
  return { next: queue.next }
}

/** Primary: waits for `n` workers' { type: 'ready', index } on `workers` (messagesFromWorkers); resolves with a Map index -> worker. */
async function readyWorkers(workers, n) {
  const byIndex = new Map()
  for (let i = 0; i < n; i++) {
    const [worker, msg] = await workers.next('ready')
    byIndex.set(msg.index, worker)
  }
  return byIndex
}

/**
 * Primary: forks `n` workers, waits until each has told { type: 'ready', index }, then runs
 * `scenario(byIndex, workers)` (readyWorkers, messagesFromWorkers); once it resolves, prints
 * `end` and disconnects the workers.
 */
async function directWorkers(n, scenario) {
  const workers = messagesFromWorkers()
  for (let i = 0; i < n; i++) cluster.fork()
  const byIndex = await readyWorkers(workers, n)
  await scenario(byIndex, workers)
  out({ event: 'end' })
  cluster.disconnect()
}

/**
 * Primary, in a directWorkers scenario: lets worker 0 `go`, SIGKILLs worker `victim` once it
 * tells { type: 'hanging' } (a request to it is then in flight), printing `killing` with the
 * time, and resolves once worker 0 tells `finished`.
 */
async function goAndKillHanging(byIndex, workers, victim) {
  byIndex.get(0).send({ type: 'go' })
  await workers.next('hanging')
  out({ event: 'killing', at: Date.now() })
  byIndex.get(victim).process.kill('SIGKILL')
  await workers.next('finished')
}

/**
 * Opens `file` for writing; returns log(line), which appends one line with a single synchronous
 * write, so the file holds every line logged up to the moment the process is killed.
 */
function lineLog(file) {
  const fd = fs.openSync(file, 'w')
  return (line) => fs.writeSync(fd, line + '\n')
}

/** Logs every 'lost' event of `bus` as `L <from> <reason> <count>` (the line faults.spec.js reads). */
function logLost(bus, log) {
  bus.on('lost', (e) => log(`L ${e.from} ${e.reason} ${e.count ?? e.bytes}`))
}

/** An Error with `code` (as handlers throw to test how errors cross processes). */
function coded(message, code) {
  const err = new Error(message)
  err.code = code
  return err
}

/** How many times each value occurs: { value: count }. */
function histogram(values) {
  const h = {}
  for (const v of values) h[v] = (h[v] || 0) + 1
  return h
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

module.exports = {
  lib,
  out,
  write,
  relay,
  toWorkers,
  forkUntilFinished,
  finished,
  finishAfterGrace,
  commands,
  reportErrors,
  watchdog,
  until,
  fromPrimary,
  fromWorker,
  tell,
  commandsFromPrimary,
  messagesFromWorkers,
  readyWorkers,
  directWorkers,
  goAndKillHanging,
  lineLog,
  logLost,
  coded,
  histogram,
  sleep,
  cluster,
}
