'use strict'
// Soak: 8 processes (the primary and 7 workers) all to all, checksummed and sequence-numbered
// payloads of random sizes (1 B to 1 MiB, skewed to small), for 60 s when CI is set, 15 s
// otherwise. See fixtures/soak-allpairs.js.

const test = require('ava')

const { runClean, median } = require('./helpers/harness')

const DURATION = process.env.CI ? 60_000 : 15_000
const MiB = 1 << 20

test(`soak: 8 processes all to all for ${DURATION / 1000} s: zero lost, duplicated or reordered, memory flat, clean exit`, async (t) => {
  t.timeout(DURATION + 240_000)
  const r = await runClean(t, 'soak-allpairs.js', [DURATION], { timeout: DURATION + 200_000 })
  t.truthy(r.events('all-final')[0], 'every process reported')
  t.deepEqual(
    r.events('worker-exit').map(({ code, signal }) => ({ code, signal })),
    Array(7).fill({ code: 0, signal: null }),
    'the 7 workers exited by themselves with code 0',
  )

  const [{ sent }] = r.events('sent')
  const finals = r.events('final')
  const addresses = ['-1', '0', '1', '2', '3', '4', '5', '6']
  t.deepEqual(finals.map((f) => String(f.index)).sort(), [...addresses].sort())
  let messages = 0
  let bytes = 0
  for (const f of finals) {
    const me = String(f.index)
    t.true(f.complete, `${me} received everything it was sent: ${JSON.stringify({ received: f.received, expected: f.expected })}`)
    for (const from of addresses.filter((a) => a !== me)) {
      t.true(sent[from][me] > 0, `${from} sent to ${me}`)
      t.is(f.received[from], sent[from][me], `${from} -> ${me}: received exactly what was sent`)
      messages += f.received[from]
    }
    const { lost, duplicated, reordered, corrupt, misrouted, lostEvents, samples } = f.errors
    t.deepEqual({ lost, duplicated, reordered, corrupt, misrouted, lostEvents }, { lost: 0, duplicated: 0, reordered: 0, corrupt: 0, misrouted: 0, lostEvents: 0 }, `at ${me}: ${JSON.stringify(samples)}`)
    bytes += f.bytesIn
  }

  // Memory: every process sampled its RSS every 500 ms while sending. After a warm-up (V8 heaps
  // grow, the rings' pages get touched) it must stay flat.
  const warmup = Math.min(10_000, DURATION / 3)
  const rss = {}
  for (const f of finals) {
    const after = median(f.rss.filter((s) => s.t >= warmup && s.t < warmup + 3000).map((s) => s.rss))
    const last = median(f.rss.slice(-3).map((s) => s.rss))
    rss[f.index] = `${(after / MiB).toFixed(0)} -> ${(last / MiB).toFixed(0)} MiB`
    t.true(f.rss.length >= DURATION / 500 / 2, `${f.index}: ${f.rss.length} RSS samples`)
    t.true(last <= 1.5 * after, `${f.index}: RSS ${rss[f.index]} (after warm-up -> at the end)`)
  }
  t.log(`${messages} messages, ${(bytes / MiB).toFixed(0)} MiB in ${DURATION / 1000} s; RSS after warm-up -> at the end: ${JSON.stringify(rss)}`)
})
