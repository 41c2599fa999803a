'use strict'
// Helpers for the sync-*.js fixtures (semaphores, locks, maps across real cluster workers).

const fs = require('node:fs')

const { cluster, out, relay, fromPrimary, toWorkers } = require('./fixture')

/**
 * A start line for the workers, so that their loops really run at the same time. Primary:
 * `startTogether(n)` lets the workers go each time `n` of them are ready. Worker: `await ready()`
 * (as many times as there are phases).
 */
function startTogether(n) {
  let ready = 0
  cluster.on('message', (worker, msg) => {
    if (msg && msg.type === '__sync_ready' && ++ready === n) {
      ready = 0
      toWorkers({ type: '__sync_go' })
    }
  })
}

function ready() {
  const go = fromPrimary('__sync_go')
  process.send({ type: '__sync_ready' })
  return go
}

/**
 * Primary: collects the workers' { type: 'done' } reports; once `n` are in, prints
 * { event: 'result', ...result(reports) }, closes `bus` and disconnects the workers.
 */
function resultWhenDone(n, bus, result) {
  const reports = []
  relay((worker, msg) => {
    if (msg.type !== 'done') return
    reports.push(msg)
    if (reports.length < n) return
    out({ event: 'result', ...result(reports) })
    bus.close()
    cluster.disconnect()
  })
}

/** The state letter of process `pid` in /proc ('R', 'S', 'Z' for a zombie, ...), or null once it is gone. */
function processState(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] ?? null
  } catch {
    return null
  }
}

module.exports = { startTogether, ready, resultWhenDone, processState }
