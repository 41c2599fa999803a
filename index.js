'use strict'
// The public entry of cluster-shm: the platform binary (loaded by the generated ./binding.js)
// plus the ergonomic layer in lib/: payload encoding, EventEmitter delivery, cluster integration
// and stable error codes. Everything that touches shared memory is in Rust (src/).
//
// lib/, bottom to top (each module requires only those above it in this list):
//   errors.js    ClusterShmError, RemoteError, fail (the error class is registered with the addon)
//   options.js   argument and option checks, limits, the default ring size
//   codec.js     frame kinds, record header, payload encode/decode
//   process.js   process 'exit' closing every bus, signals removing the primary's segment
//   state.js     a bus's shared state (BusState) and addresses (PRIMARY)
//   outgoing.js  staging, flushing, the send queue, fan-out
//   incoming.js  delivery start/stop, dispatch of batches, the read queue, events
//   topics.js    subscribe(topic), publish, topic envelopes and patterns
//   requests.js  request/requestAll/respond/handle, envelopes, pending requests
//   objects.js   Semaphore, Permit, Region, SharedMap (with its value codec)
//   bus.js       class Bus, assembled from the parts above
//   cluster.js   masterInit/workerInit, SEGMENT_ENV, the cluster module's 'exit'
//   join.js      join() with no primary (PM2, child_process.fork), cleanupJoined

const { ClusterShmError, RemoteError } = require('./lib/errors.js')
const { PRIMARY } = require('./lib/state.js')
const { Semaphore, Permit, Region, SharedMap } = require('./lib/objects.js')
const { Bus } = require('./lib/bus.js')
const { SEGMENT_ENV, masterInit, workerInit } = require('./lib/cluster.js')
const { join, cleanupJoined } = require('./lib/join.js')

module.exports = { masterInit, workerInit, join, cleanupJoined, PRIMARY, SEGMENT_ENV, ClusterShmError, RemoteError, Bus, Semaphore, Permit, Region, SharedMap }
