'use strict'
// Fixture side of topics.spec.js (used by __test__/fixtures/topics-*.js, which run as a real
// cluster primary and its workers). Output: one JSON object per line on the primary's stdout;
// workers hand their lines to the primary over the cluster IPC channel.

const cluster = require('node:cluster')

const lib = require('../..')

const write = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

/** Prints a line (primary) or hands it to the primary (worker). */
function out(obj) {
  if (cluster.isPrimary) write(obj)
  else if (process.connected) process.send({ __out: obj })
}

/** Primary: prints the workers' lines; calls `onMessage(worker, msg)` for their other messages. */
function relay(onMessage) {
  cluster.on('message', (worker, msg) => {
    if (msg && typeof msg === 'object' && msg.__out) write(msg.__out)
    else if (onMessage) onMessage(worker, msg)
  })
}

/** Any uncaught error becomes an `error` line and exit code 1. */
function reportErrors() {
  const die = (err) => {
    const line = { event: 'error', message: String(err && err.message), code: err && err.code, stack: String(err && err.stack), pid: process.pid }
    if (cluster.isPrimary) {
      write(line)
      process.exit(1)
    } else if (process.connected) process.send({ __out: line }, () => process.exit(1))
    else process.exit(1)
  }
  process.on('uncaughtException', die)
  process.on('unhandledRejection', die)
}

/** An unref'd timer: if the fixture still runs after `ms`, a `watchdog` line and exit code 3. */
function watchdog(ms) {
  setTimeout(() => {
    out({ event: 'watchdog' })
    process.exit(3)
  }, ms).unref()
}

/** Worker: a queue of the primary's IPC commands: `next(type)` resolves with the next one of `type`. */
function commandsFromPrimary() {
  const seen = []
  const waiting = []
  process.on('message', (msg) => {
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return
    const i = waiting.findIndex((w) => w.type === msg.type)
    if (i >= 0) waiting.splice(i, 1)[0].resolve(msg)
    else seen.push(msg)
  })
  return {
    next(type) {
      const i = seen.findIndex((m) => m.type === type)
      if (i >= 0) return Promise.resolve(seen.splice(i, 1)[0])
      return new Promise((resolve) => waiting.push({ type, resolve }))
    },
  }
}

/** Primary: a queue of the workers' IPC messages: `next(type)` resolves with the next [worker, msg] of `type`. */
function messagesFromWorkers() {
  const seen = []
  const waiting = []
  relay((worker, msg) => {
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return
    const i = waiting.findIndex((w) => w.type === msg.type)
    if (i >= 0) waiting.splice(i, 1)[0].resolve([worker, msg])
    else seen.push([worker, msg])
  })
  return {
    next(type) {
      const i = seen.findIndex(([, m]) => m.type === type)
      if (i >= 0) return Promise.resolve(seen.splice(i, 1)[0])
      return new Promise((resolve) => waiting.push({ type, resolve }))
    },
  }
}

/** Tells the primary something over IPC (not through the bus). */
const tell = (msg) => process.send(msg)

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Settles `p` and describes the outcome (JSON-safe), with the time it took from `t0`. */
async function outcome(p, t0 = Date.now()) {
  try {
    const value = await p
    return { ok: true, value: describe(value), ms: Date.now() - t0 }
  } catch (err) {
    return {
      ok: false,
      code: err && err.code,
      message: err && err.message,
      errName: err && err.name,
      remote: err instanceof lib.RemoteError,
      shmError: err instanceof lib.ClusterShmError,
      from: err && err.from,
      ms: Date.now() - t0,
    }
  }
}

/** A JSON-safe exact description of a value, its type included. */
function describe(v) {
  if (v === null) return null
  switch (typeof v) {
    case 'undefined':
      return { $: 'undefined' }
    case 'number':
      return { $: 'number', v: Object.is(v, -0) ? '-0' : String(v) }
    case 'bigint':
      return { $: 'bigint', v: v.toString() }
    case 'string':
      return { $: 'string', v }
    case 'boolean':
      return { $: 'boolean', v }
    case 'function':
    case 'symbol':
      return { $: typeof v }
  }
  if (Buffer.isBuffer(v)) return { $: 'Buffer', hex: v.toString('hex') }
  if (ArrayBuffer.isView(v)) return { $: v.constructor.name, values: Array.from(v, String) }
  if (v instanceof Date) return { $: 'Date', t: String(v.getTime()) }
  if (v instanceof Map) return { $: 'Map', entries: [...v].map(([k, x]) => [describe(k), describe(x)]) }
  if (v instanceof Set) return { $: 'Set', values: [...v].map(describe) }
  if (Array.isArray(v)) return { $: 'Array', items: v.map(describe) }
  const proto = Object.getPrototypeOf(v)
  return { $: proto === Object.prototype ? 'Object' : `instance of ${proto && proto.constructor && proto.constructor.name}`, entries: Object.keys(v).map((k) => [k, describe(v[k])]) }
}

module.exports = { lib, cluster, out, relay, reportErrors, watchdog, commandsFromPrimary, messagesFromWorkers, tell, sleep, outcome, describe }
