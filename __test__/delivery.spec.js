'use strict'
// Both delivery paths carry the same stream: the event loop woken by the loop bell (the default
// on Linux) and the delivery thread (every other platform, or CLUSTER_SHM_DELIVERY=thread).
// Each run is a real cluster: worker 0 streams 100k messages of every payload kind to worker 1
// through a 4096-byte ring, so the full-ring and wake-up paths run all the time.

const test = require('ava')

const { runClean } = require('./helpers/harness')

const MODES = process.platform === 'linux' ? ['event-loop', 'thread'] : ['thread']

for (const mode of MODES) {
  test(`delivery '${mode}': 100k messages through a tiny ring arrive in order, once each, and the process exits by itself`, async (t) => {
    t.timeout(90_000)
    const env = mode === 'thread' ? { CLUSTER_SHM_DELIVERY: 'thread' } : {}
    const r = await runClean(t, 'stream.js', [100_000, 4096], { timeout: 80_000, env })
    const [summary] = r.events('summary')
    t.truthy(summary, 'the receiver reported')
    t.is(summary.delivery, mode, 'the receiver used the delivery path under test')
    t.is(summary.received, 100_000)
    t.is(summary.wrong, 0, `out of order or corrupt: ${JSON.stringify(summary.firstWrong)}`)
    t.is(summary.last, 99_999)
    t.deepEqual(r.events('after').map((m) => m.received), [100_000], 'no duplicate arrived after the last message')
    t.true(r.events('sent')[0].writeFalse > 0, 'the ring filled up: write() returned false at least once')
  })
}
