'use strict'
// join(): the entry point with no primary (PM2 cluster mode, child_process.fork, independent
// processes). Every process calls the same thing; the first creates the application's segment,
// the others attach, the last one out removes it (the protocol: src/core/join.rs). The duty the
// primary has in a cluster, freeing the indices of members that died, is done by every member
// on a timer: whoever notices first.

const native = require('../binding.js')
const { fail } = require('./errors.js')
const { MAX_WORKERS, checkInt, checkOptions, checkQueueLimit } = require('./options.js')
const { cleanUpOnSignals } = require('./process.js')
const { Bus } = require('./bus.js')
const { segmentOptions } = require('./cluster.js')

/** How often each member looks for members that died (ms). */
const REAP_INTERVAL = 1000

function checkName(name) {
  if (typeof name !== 'string' || name === '') fail('ERR_INVALID_ARG', 'name must be a non-empty string')
  return name
}

/** The index to take: `index`, else PM2's NODE_APP_INSTANCE, else -1 (the lowest free one). */
function wantedIndex(options) {
  if (options.index !== undefined) return checkInt('index', options.index, 0, MAX_WORKERS - 1)
  const pm2 = process.env.NODE_APP_INSTANCE
  if (pm2 === undefined || pm2 === '') return -1
  const index = Number(pm2)
  return checkInt('NODE_APP_INSTANCE', index, 0, MAX_WORKERS - 1)
}

/** Creates or attaches to the segment of application `name`; see README, "join". */
function join(options) {
  options = checkOptions(options, 'options')
  const name = checkName(options.name)
  const { workers, ringSize, heapSize, spin } = segmentOptions(options)
  const index = wantedIndex(options)
  const timeout = checkInt('timeout', options.timeout ?? 10000, 0, 2 ** 31 - 1)
  const handle = native.joinCluster(name, workers, ringSize, heapSize, index, timeout)
  const bus = new Bus(handle, spin, checkQueueLimit(options))
  const reaper = setInterval(() => native.reapDead(handle), REAP_INTERVAL).unref()
  bus.once('close', () => clearInterval(reaper))
  cleanUpOnSignals(bus)
  return bus
}

/** Removes application `name`'s segment if no live process is a member; true when none is left. */
function cleanupJoined(name) {
  return native.cleanupJoined(checkName(name))
}

module.exports = { join, cleanupJoined }
