'use strict'
// require('cluster-shm/metrics').collect(bus, registry?): Prometheus metrics of the whole
// cluster through prom-client (an optional peer dependency). Every figure is read from the
// shared segment at scrape time (bus.stats()), so one process, any member, exports them all:
// a scrape of one worker sees every process, ring and object of the cluster.

const { fail } = require('./errors.js')
const { Bus } = require('./bus.js')
const { PRIMARY } = require('./state.js')

function loadPromClient() {
  try {
    return require('prom-client')
  } catch {
    return fail('ERR_INVALID_ARG', "metrics need the optional peer dependency prom-client: npm install prom-client")
  }
}

const label = (address) => (address === PRIMARY ? 'primary' : String(address))

// Per process (label `address`): counters summed over the rings it writes or reads.
const PROCESS_COUNTERS = [
  ['messages_written_total', 'written', 'Whole messages this process published into the rings'],
  ['bytes_written_total', 'writtenBytes', 'Payload bytes of the messages this process published'],
  ['ring_full_total', 'full', 'Writes of this process that found the receiver’s ring without room (backpressure)'],
  ['messages_read_total', 'read', 'Messages taken out of this process’s incoming rings'],
  ['bytes_read_total', 'readBytes', 'Payload bytes of the messages taken out of this process’s incoming rings'],
  ['messages_lost_total', 'lost', 'Messages to this process reported lost (a sender died mid-message)'],
  ['ring_corrupt_total', 'corrupt', 'Resets of this process’s incoming rings after corruption'],
]

/**
 * Registers the cluster's metrics (prefix `cluster_shm_`) in `registry` (prom-client's default
 * registry when omitted). Returns `{ names, remove() }`; remove() unregisters them.
 */
function collect(bus, registry) {
  if (!(bus instanceof Bus)) fail('ERR_INVALID_ARG', 'collect(bus, registry?): bus must be a Bus (masterInit, workerInit or join)')
  const client = loadPromClient()
  registry ??= client.register
  if (!(registry instanceof client.Registry)) fail('ERR_INVALID_ARG', 'registry must be a prom-client Registry')
  // One read of the segment per scrape: registry.metrics() calls every collect() synchronously,
  // before any microtask runs.
  let cached = null
  const stats = () => {
    if (cached === null && !bus.closed) {
      cached = bus.stats()
      queueMicrotask(() => (cached = null))
    }
    return cached
  }
  const metrics = []
  const add = (Kind, name, help, labelNames, fill) => {
    const metric = new Kind({
      name: `cluster_shm_${name}`,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset()
        const s = stats()
        if (s !== null) fill(s, (labels, value) => (Kind === client.Counter ? this.inc(labels, value) : this.set(labels, value)))
      },
    })
    metrics.push(metric)
  }
  add(client.Gauge, 'process_attached', 'Whether a process holds this index now (1) or not (0)', ['address'], (s, put) => {
    for (const p of s.processes) put({ address: label(p.address) }, p.attached ? 1 : 0)
  })
  add(client.Gauge, 'process_generation', 'Times the index was taken (restarts of the process at this index, plus one)', ['address'], (s, put) => {
    for (const p of s.processes) put({ address: label(p.address) }, p.generation)
  })
  for (const [name, key, help] of PROCESS_COUNTERS) {
    add(client.Counter, name, help, ['address'], (s, put) => {
      for (const p of s.processes) put({ address: label(p.address) }, p[key])
    })
  }
  add(client.Gauge, 'process_unread_bytes', 'Ring bytes waiting for this process in its incoming rings', ['address'], (s, put) => {
    for (const p of s.processes) put({ address: label(p.address) }, p.unread)
  })
  // Per ring in use (written to at least once): cardinality follows the traffic, not workers².
  const used = (s) => s.rings.filter((r) => r.written > 0 || r.fill > 0)
  add(client.Gauge, 'ring_fill_ratio', 'Fraction of the ring from → to holding unread messages', ['from', 'to'], (s, put) => {
    for (const r of used(s)) put({ from: label(r.from), to: label(r.to) }, r.fill / s.ringSize)
  })
  add(client.Counter, 'ring_messages_total', 'Whole messages published into the ring from → to', ['from', 'to'], (s, put) => {
    for (const r of used(s)) put({ from: label(r.from), to: label(r.to) }, r.written)
  })
  add(client.Gauge, 'semaphore_permits', 'Permits of the named semaphore (a lock has one)', ['name'], (s, put) => {
    for (const x of s.semaphores) put({ name: x.name }, x.permits)
  })
  add(client.Gauge, 'semaphore_available', 'Permits of the named semaphore free now', ['name'], (s, put) => {
    for (const x of s.semaphores) put({ name: x.name }, x.available)
  })
  add(client.Gauge, 'map_size', 'Keys held by the named shared map', ['name'], (s, put) => {
    for (const m of s.maps) put({ name: m.name }, m.size)
  })
  add(client.Gauge, 'map_capacity', 'Most keys the named shared map holds', ['name'], (s, put) => {
    for (const m of s.maps) put({ name: m.name }, m.capacity)
  })
  add(client.Gauge, 'heap_used_bytes', 'Bytes of the shared heap given to named objects', [], (s, put) => put({}, s.heap.used))
  add(client.Gauge, 'heap_size_bytes', 'Bytes of the shared heap', [], (s, put) => put({}, s.heap.size))
  add(client.Gauge, 'topic_subscribers', 'Processes subscribed to the topic (or pattern)', ['topic'], (s, put) => {
    for (const x of s.topics) put({ topic: x.name }, x.subscribers)
  })
  add(client.Gauge, 'queued_sends', 'send()s of the exporting process waiting for room', [], (s, put) => put({}, s.self.queued))
  return {
    names: metrics.map((m) => m.name),
    remove() {
      for (const m of metrics) registry.removeSingleMetric(m.name)
    },
  }
}

module.exports = { collect }
