'use strict'
// What is inside a cluster, as plain objects: Bus#stats() (this process, its peers, the whole
// cluster) and the same cluster part for an observer that is not a member (the `cluster-shm`
// command, lib/metrics.js). The native side (src/core/stats.rs) only loads from the segment;
// this module turns native indices into addresses (PRIMARY for the primary) and groups figures.

const { PRIMARY } = require('./state.js')

/** The cluster part of a snapshot (`inspectSegment()` or `busStats()`), shaped for users. */
function shapeCluster(n) {
  const primary = n.endpoints - 1
  const address = (i) => (i === primary ? PRIMARY : i)
  const ring = (r) => ({ from: address(r.from), to: address(r.to), fill: r.counters.fill, written: r.counters.written, writtenBytes: r.counters.writtenBytes, full: r.counters.full, read: r.counters.read, readBytes: r.counters.readBytes, lost: r.counters.lost, corrupt: r.counters.corrupt })
  const holder = (h) => ({ address: address(h.index), pid: h.pid })
  return {
    name: n.name,
    size: n.size,
    ringSize: n.ringSize,
    workers: primary,
    primaryPid: n.primaryPid,
    joined: n.joined,
    closed: n.closed === 0 ? false : n.closed === 1 ? 'closed' : 'primary-died',
    processes: n.processes.map((p) => ({
      address: address(p.index),
      attached: p.attached,
      pid: p.pid,
      generation: p.generation,
      handlesRequests: p.handlesRequests,
      // what it wrote (all its outgoing rings) and read (all its incoming rings)
      written: p.totals.written,
      writtenBytes: p.totals.writtenBytes,
      full: p.totals.full,
      read: p.totals.read,
      readBytes: p.totals.readBytes,
      lost: p.totals.lost,
      corrupt: p.totals.corrupt,
      unread: p.totals.fill, // ring bytes waiting for it in all its incoming rings
    })),
    rings: n.rings.map(ring),
    semaphores: n.semaphores.map((s) => ({ name: s.name, permits: s.permits, available: s.available, holders: s.holders.map(holder) })),
    // A lock is a semaphore of one permit (Bus#lock).
    locks: n.semaphores.filter((s) => s.permits === 1).map((s) => ({ name: s.name, holder: s.holders.length > 0 ? holder(s.holders[0]) : null })),
    maps: n.maps.map((m) => ({ name: m.name, size: m.size, capacity: m.capacity })),
    regions: n.regions.map((r) => ({ name: r.name, size: r.size })),
    heap: { size: n.heapSize, used: n.heapUsed },
    topics: n.topics.map((t) => ({ name: t.name, subscribers: t.subscribers.length, addresses: t.subscribers.map(address) })),
  }
}

/**
 * Bus#stats(): `self` (this process, with what only it knows: delivery path, queued sends,
 * staged writes), `peers` (every other index, with the rings to and from it), and the cluster.
 */
function busStats(native, snapshot, local) {
  const cluster = shapeCluster(snapshot)
  const me = native.index
  const primary = snapshot.endpoints - 1
  const address = (i) => (i === primary ? PRIMARY : i)
  const rings = new Map(cluster.rings.map((r) => [`${r.from}>${r.to}`, r]))
  const ringOf = (from, to) => rings.get(`${address(from)}>${address(to)}`)
  const mine = cluster.processes[me]
  const self = { address: address(me), pid: mine.pid, generation: mine.generation, ...local }
  const peers = cluster.processes
    .filter((p) => p.address !== self.address)
    .map((p) => {
      const i = p.address === PRIMARY ? primary : p.address
      const to = ringOf(me, i)
      const from = ringOf(i, me)
      return {
        address: p.address,
        attached: p.attached,
        pid: p.pid,
        generation: p.generation,
        to: { fill: to.fill / cluster.ringSize, bytes: to.fill, written: to.written, writtenBytes: to.writtenBytes, full: to.full, read: to.read, readBytes: to.readBytes },
        from: { fill: from.fill / cluster.ringSize, bytes: from.fill, written: from.written, writtenBytes: from.writtenBytes, read: from.read, readBytes: from.readBytes, lost: from.lost, corrupt: from.corrupt },
      }
    })
  return { self, peers, ...cluster }
}

module.exports = { shapeCluster, busStats }
