'use strict'
// `cluster-shm ls`, `clean` and `inspect`: this user's segments, opened read-only and validated
// as members validate them (src/core/stats.rs), printed as tables or JSON.

const native = require('../../binding.js')
const { shapeCluster } = require('../stats.js')
const { bytes, age, address, table } = require('./format.js')

/** `/cshm_…` from what the user typed (the leading '/' is optional). */
function segmentName(name) {
  return name.startsWith('/') ? name : `/${name}`
}

/** The cluster in segment `name`, as bus.stats() shows its cluster part; throws ClusterShmError. */
function inspect(name) {
  return shapeCluster(native.inspectSegment(segmentName(name)))
}

function ls({ json }, print) {
  const now = Date.now() / 1000
  const list = native.listSegments().map((s) => ({
    name: s.name,
    primaryPid: s.joined ? null : s.primaryPid,
    joined: s.joined,
    members: s.members,
    ageSeconds: Math.max(0, Math.round(now - s.modified)),
    size: s.size,
    stale: s.stale,
    error: s.error ?? null,
  }))
  if (json) return print(JSON.stringify(list, null, 2))
  if (list.length === 0) return print('no cluster-shm segments of this user')
  const state = (s) => (s.stale ? 'stale' : s.error ? `unreadable: ${s.error}` : 'live')
  print(table(['NAME', 'PRIMARY', 'MEMBERS', 'AGE', 'SIZE', 'STATE'], list.map((s) => [s.name, s.joined ? '(joined)' : s.primaryPid, s.members, age(s.ageSeconds), bytes(s.size), state(s)])))
}

function clean({ json }, print) {
  const removed = native.cleanSegments()
  if (json) return print(JSON.stringify({ removed }, null, 2))
  print(removed.length === 0 ? 'no stale segments' : removed.map((n) => `removed ${n}`).join('\n'))
}

/** The tables of `inspect` for the shaped cluster `s`. */
function render(s) {
  const out = []
  const closed = s.closed ? ` (${s.closed})` : ''
  const owner = s.joined ? 'joined (no primary)' : `primary pid ${s.primaryPid}`
  out.push(`${s.name}: ${owner}, ${s.workers} workers, rings of ${bytes(s.ringSize)}, segment ${bytes(s.size)}, heap ${bytes(s.heap.used)} of ${bytes(s.heap.size)}${closed}`)
  out.push('')
  const procs = s.processes.filter((p) => p.attached || p.generation > 0)
  out.push(
    table(
      ['INDEX', 'PID', 'GEN', 'SENT', 'SENT BYTES', 'FULL', 'RECEIVED', 'RECV BYTES', 'LOST', 'CORRUPT', 'UNREAD'],
      procs.map((p) => [address(p.address), p.attached ? p.pid : '-', p.generation, p.written, bytes(p.writtenBytes), p.full, p.read, bytes(p.readBytes), p.lost, p.corrupt, bytes(p.unread)]),
    ),
  )
  const rings = s.rings.filter((r) => r.written > 0 || r.fill > 0 || r.full > 0 || r.lost > 0 || r.corrupt > 0)
  if (rings.length > 0) {
    out.push('')
    out.push(
      table(
        ['RING', 'FILL', 'WRITTEN', 'READ', 'FULL', 'LOST', 'CORRUPT'],
        rings.map((r) => [`${address(r.from)} -> ${address(r.to)}`, `${bytes(r.fill)} (${Math.round((100 * r.fill) / s.ringSize)}%)`, r.written, r.read, r.full, r.lost, r.corrupt]),
      ),
    )
  }
  const holders = (hs) => hs.map((h) => `${address(h.address)} (pid ${h.pid})`).join(', ') || '-'
  if (s.semaphores.length > 0) {
    out.push('')
    out.push(table(['SEMAPHORE', 'PERMITS', 'AVAILABLE', 'HOLDERS'], s.semaphores.map((x) => [x.name, x.permits, x.available, holders(x.holders)])))
  }
  if (s.maps.length > 0) {
    out.push('')
    out.push(table(['MAP', 'SIZE', 'CAPACITY'], s.maps.map((m) => [m.name, m.size, m.capacity])))
  }
  if (s.regions.length > 0) {
    out.push('')
    out.push(table(['REGION', 'SIZE'], s.regions.map((r) => [r.name, bytes(r.size)])))
  }
  if (s.topics.length > 0) {
    out.push('')
    out.push(table(['TOPIC', 'SUBSCRIBERS', 'ADDRESSES'], s.topics.map((x) => [x.name, x.subscribers, x.addresses.map(address).join(', ') || '-'])))
  }
  return out.join('\n')
}

function inspectCommand(name, { json }, print) {
  const s = inspect(name)
  print(json ? JSON.stringify(s, null, 2) : render(s))
}

module.exports = { ls, clean, inspect, inspectCommand, render, segmentName }
