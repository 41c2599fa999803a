'use strict'
// This process's end, for every bus it holds: one 'exit' listener closes the open buses, and one
// handler per signal removes the segments of the primary buses. Takes buses as they are (close(),
// once('close'), queued, index), so it sits below lib/bus.js.

const fs = require('node:fs')

/** Buses of this process not closed yet: one 'exit' listener closes them all. */
const openBuses = new Set()

function closeAllAtExit() {
  for (const bus of [...openBuses]) {
    // If the process exits anyway (process.exit()), say what did not go out.
    const queued = bus.queued
    if (queued > 0) fs.writeSync(2, `cluster-shm: process exiting with ${queued} queued message(s) not sent (index ${bus.index})\n`)
    bus.close()
  }
}

/** Closes `bus` when the process exits; returns what to call once it is closed. */
function closeAtExit(bus) {
  if (openBuses.size === 0) process.on('exit', closeAllAtExit)
  openBuses.add(bus)
  return () => {
    openBuses.delete(bus)
    if (openBuses.size === 0) process.off('exit', closeAllAtExit)
  }
}

/**
 * Ctrl-C or `kill` of the primary would skip 'exit' handlers and leave the segment in
 * /dev/shm. When nobody else handles the signal, remove the segments of every primary bus of
 * this process and die by the same signal. One handler per signal serves them all, so that
 * several buses do not take each other's handlers for the application's.
 */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP']
const primaryBuses = new Set()

function onSignal(signal) {
  if (process.listenerCount(signal) > 1) return // the application handles it (and exits)
  for (const bus of [...primaryBuses]) bus.close()
  process.kill(process.pid, signal)
}

function cleanUpOnSignals(bus) {
  if (primaryBuses.size === 0) for (const signal of SIGNALS) process.on(signal, onSignal)
  primaryBuses.add(bus)
  bus.once('close', () => {
    primaryBuses.delete(bus)
    if (primaryBuses.size === 0) for (const signal of SIGNALS) process.off(signal, onSignal)
  })
}

module.exports = { closeAtExit, cleanUpOnSignals }
