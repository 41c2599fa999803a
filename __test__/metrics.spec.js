'use strict'
// require('cluster-shm/metrics').collect(bus, registry?): one worker of a live 3-worker cluster
// (__test__/fixtures/stats-cluster.js) scrapes a prom-client registry, and the text shows every
// process's, ring's and object's figures; its types check under --strict.

const test = require('ava')
const path = require('node:path')
const ts = require('typescript')
const { Registry } = require('prom-client')

const { startCluster } = require('./helpers/harness')
const lib = require('..')
const { collect } = require('../lib/metrics.js')

/** The value of `name{labels}` in Prometheus text, or undefined. */
function value(text, name, labels = '') {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `))
  return line === undefined ? undefined : Number(line.split(' ').pop())
}

test.serial('a scrape of worker 0 shows the whole cluster: every process, the rings in use, semaphores, maps, topics, heap', async (t) => {
  t.timeout(90_000)
  const c = startCluster('stats-cluster.js', [], { t, timeout: 80_000 })
  await c.waitFor('ready', { timeout: 40_000 })
  c.command({ cmd: 'metrics' })
  const { text, removed } = await c.waitFor('metrics')
  for (const a of ['0', '1', '2', 'primary']) {
    t.is(value(text, 'cluster_shm_process_attached', `address="${a}"`), 1, a)
    t.is(value(text, 'cluster_shm_process_generation', `address="${a}"`), 1, a)
  }
  const expected = [
    ['cluster_shm_messages_written_total', 'address="1"', 110],
    ['cluster_shm_bytes_written_total', 'address="1"', 5500],
    ['cluster_shm_messages_read_total', 'address="0"', 100],
    ['cluster_shm_bytes_read_total', 'address="0"', 5000],
    ['cluster_shm_messages_read_total', 'address="2"', 0],
    ['cluster_shm_process_unread_bytes', 'address="2"', 800],
    ['cluster_shm_messages_lost_total', 'address="0"', 0],
    ['cluster_shm_ring_full_total', 'address="1"', 0],
    ['cluster_shm_ring_fill_ratio', 'from="1",to="2"', 800 / 65536],
    ['cluster_shm_ring_fill_ratio', 'from="1",to="0"', 0],
    ['cluster_shm_ring_messages_total', 'from="1",to="0"', 100],
    ['cluster_shm_ring_messages_total', 'from="0",to="1"', undefined],
    ['cluster_shm_semaphore_permits', 'name="jobs"', 3],
    ['cluster_shm_semaphore_available', 'name="jobs"', 2],
    ['cluster_shm_semaphore_available', 'name="door"', 0],
    ['cluster_shm_map_size', 'name="hits"', 5],
    ['cluster_shm_map_capacity', 'name="hits"', 100],
    ['cluster_shm_topic_subscribers', 'topic="room.*"', 1],
  ]
  for (const [name, labels, v] of expected) t.is(value(text, name, labels), v, `${name}{${labels}}`)
  t.true(value(text, 'cluster_shm_heap_used_bytes') > 0)
  t.is(value(text, 'cluster_shm_heap_size_bytes'), 4 << 20)
  t.is(value(text, 'cluster_shm_queued_sends'), 0)
  t.regex(text, /# TYPE cluster_shm_messages_written_total counter/)
  t.regex(text, /# TYPE cluster_shm_ring_fill_ratio gauge/)
  t.true(removed, 'remove() unregistered every metric')
  c.command({ cmd: 'stop' })
  await c.done
})

test.serial('collect() in one process: the default registry, figures of later scrapes, bad arguments, a closed bus', async (t) => {
  const a = lib.masterInit({ workers: 1, ringSize: 4096 })
  const b = lib.workerInit({ name: a.name, index: 0 })
  t.teardown(() => (b.close(), a.close()))
  const registry = new Registry()
  const collected = collect(a, registry)
  t.true(collected.names.includes('cluster_shm_messages_written_total'))
  t.throws(() => collect(a, registry), { message: /already been registered/ })
  for (let i = 0; i < 7; i++) a.write(0, 'hi')
  a.flush()
  t.is(value(await registry.metrics(), 'cluster_shm_messages_written_total', 'address="primary"'), 7)
  a.write(0, 'again')
  a.flush()
  t.is(value(await registry.metrics(), 'cluster_shm_messages_written_total', 'address="primary"'), 8, 'a later scrape reads again')
  collected.remove()
  t.throws(() => collect({}, registry), { code: 'ERR_INVALID_ARG' })
  t.throws(() => collect(a, {}), { code: 'ERR_INVALID_ARG' })
  const promClient = require('prom-client')
  const viaDefault = collect(b)
  t.teardown(() => viaDefault.remove())
  t.is(value(await promClient.register.metrics(), 'cluster_shm_process_attached', 'address="0"'), 1)
  b.close()
  t.is(value(await promClient.register.metrics(), 'cluster_shm_process_attached', 'address="0"'), undefined, 'a closed bus exports nothing')
})

test('lib/metrics.d.ts type-checks in use under --strict', (t) => {
  const file = path.join(__dirname, 'types', 'metrics-usage.ts')
  const program = ts.createProgram([file], { strict: true, noEmit: true, types: ['node'], esModuleInterop: true })
  const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))
  t.deepEqual(diagnostics, [])
})
