#!/usr/bin/env node
'use strict'
// The CPU cost of one message, sender and receiver together, on one thread: a primary bus and a
// second bus attached by name (worker index 0) in this process, so there are no cross-process
// wake-ups and a busy machine disturbs the figure far less than the cluster benchmark's.
// Before/after comparisons of the JS paths: run it against two copies of the library.
//
//   node bench/one-process.js [case] [ms] [library dir]
//   cases: object (write() of { k, s, d }), string, buffer (64 bytes), publish (64-byte Buffers,
//          promises awaited per 256), tryPublish (publish() only when it returns false),
//          rpc1 / rpc32 (request/response, 1 or 32 in flight)
// Prints { which, perSec, usPerMsg (wall), cpuUsPerMsg (user + system of this process) }.
const path = require('node:path')
const which = process.argv[2] ?? 'object'
const ms = Number(process.argv[3] ?? 1000)
const lib = require(path.resolve(process.argv[4] ?? path.join(__dirname, '..')))
const a = lib.masterInit({ workers: 1 })
const b = lib.workerInit({ name: a.name, index: 0 })
const D = 'abcdefghijklmnopqrstuvwxyz0123456789ABCD'
const now = () => Number(process.hrtime.bigint()) / 1e6
async function main() {
  let got = 0
  let sent = 0
  const t0 = now()
  const c0 = process.cpuUsage()
  const end = t0 + ms
  if (which === 'object' || which === 'string' || which === 'buffer') {
    b.subscribe(() => got++)
    const buf = Buffer.alloc(64)
    const S = 'x'.repeat(64)
    while (now() < end) {
      for (let i = 0; i < 256; i++) {
        const m = which === 'object' ? { k: 's', s: sent, d: D } : which === 'string' ? S : buf
        if (!a.write(0, m)) await a.send(0, m)
        sent++
      }
      await new Promise((r) => setImmediate(r))
    }
  } else if (which === 'publish' || which === 'tryPublish') {
    b.subscribe('t', () => got++)
    const buf = Buffer.alloc(64)
    const try_ = which === 'tryPublish' && typeof a.tryPublish === 'function'
    let inflight = []
    while (now() < end) {
      for (let i = 0; i < 256; i++) {
        if (try_) {
          if (!a.tryPublish('t', buf)) await a.publish('t', buf)
        } else inflight.push(a.publish('t', buf))
        sent++
      }
      if (inflight.length) await Promise.all(inflight), (inflight = [])
      await new Promise((r) => setImmediate(r))
    }
  } else if (which === 'rpc1' || which === 'rpc32') {
    b.respond((d) => d)
    const buf = Buffer.alloc(64)
    const loop = async () => {
      while (now() < end) {
        await a.request(0, buf)
        sent++
      }
    }
    await Promise.all(Array.from({ length: which === 'rpc1' ? 1 : 32 }, loop))
    got = sent
  }
  while (got < sent) await new Promise((r) => setImmediate(r))
  const t1 = now()
  const c = process.cpuUsage(c0)
  console.log(JSON.stringify({ which, perSec: Math.round(sent / ((t1 - t0) / 1000)), usPerMsg: +(((t1 - t0) * 1000) / sent).toFixed(3), cpuUsPerMsg: +((c.user + c.system) / sent).toFixed(3) }))
  b.close()
  a.close()
}
main()
