'use strict'
// How a process gets its bus: masterInit() creates the cluster's segment in the primary and
// publishes its name in the environment (SEGMENT_ENV) for the workers it forks, workerInit()
// attaches to it; the primary's bus follows the cluster module's 'exit' of workers.

const cluster = require('node:cluster')
const os = require('node:os')
const native = require('../binding.js')
const { fail } = require('./errors.js')
const { MAX_WORKERS, checkInt, checkOptions, checkQueueLimit, defaultRingSize } = require('./options.js')
const { cleanUpOnSignals } = require('./process.js')
const { Bus } = require('./bus.js')

/** Environment variable through which forked workers find their cluster's segment. */
const SEGMENT_ENV = 'CLUSTER_SHM_SEGMENT'

/** The geometry options of a segment (masterInit, join), checked, with their defaults. */
function segmentOptions(options) {
  const workers = checkInt('workers', options.workers ?? os.availableParallelism(), 1, MAX_WORKERS)
  const ringSize = options.ringSize ?? defaultRingSize(workers)
  checkInt('ringSize', ringSize, 4096, 1 << 30)
  if ((ringSize & (ringSize - 1)) !== 0) fail('ERR_INVALID_ARG', `ringSize must be a power of two, got ${ringSize}`)
  const heapSize = checkInt('heapSize', options.heapSize ?? 4 << 20, 0, 2 ** 34)
  if (heapSize % 4096 !== 0) fail('ERR_INVALID_ARG', `heapSize must be a multiple of 4096, got ${heapSize}`)
  const spin = checkInt('spinMicros', options.spinMicros ?? 0, 0, 1e6)
  return { workers, ringSize, heapSize, spin }
}

/** Creates this cluster's segment; call in the primary before forking. */
function masterInit(options) {
  options = checkOptions(options, 'options')
  const { workers, ringSize, heapSize, spin } = segmentOptions(options)
  const handle = native.createCluster(workers, ringSize, heapSize)
  const bus = new Bus(handle, spin, checkQueueLimit(options))
  process.env[SEGMENT_ENV] = bus.name
  if (cluster.isPrimary) {
    // A worker that died (crash, kill, exit) gives its index back so a replacement can take it.
    const onExit = (worker) => {
      if (!bus.closed && worker.process.pid) handle.processExited(worker.process.pid)
    }
    cluster.on('exit', onExit)
    bus.once('close', () => cluster.off('exit', onExit))
  }
  cleanUpOnSignals(bus)
  return bus
}

/** Attaches this process (a cluster worker, or any process given `name`) to the segment. */
function workerInit(options) {
  options = checkOptions(options, 'options')
  const name = options.name ?? process.env[SEGMENT_ENV]
  if (name === undefined || name === '') fail('ERR_NO_SEGMENT', `no segment name: call workerInit() in a worker forked after masterInit(), or pass { name }`)
  if (typeof name !== 'string') fail('ERR_INVALID_ARG', 'name must be a string')
  const index = options.index === undefined ? -1 : checkInt('index', options.index, 0, MAX_WORKERS - 1)
  const spin = checkInt('spinMicros', options.spinMicros ?? 0, 0, 1e6)
  return new Bus(native.attachCluster(name, index), spin, checkQueueLimit(options))
}

module.exports = { SEGMENT_ENV, masterInit, workerInit, segmentOptions }
