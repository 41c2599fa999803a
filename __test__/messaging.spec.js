'use strict'
// Messaging between the real processes of a cluster: every test runs a fixture (__test__/fixtures)
// as a cluster primary in a child process, which forks real workers.

const test = require('ava')

const { runClean } = require('./helpers/harness')
const { payloadCases } = require('./helpers/payloads')

const PRIMARY = -1

test('round trip of every payload kind, worker <-> worker and worker <-> primary', async (t) => {
  t.timeout(40_000)
  const r = await runClean(t, 'roundtrip.js', [], { timeout: 30_000 })
  const cases = payloadCases()
  const twice = [...cases, ...cases].map((c) => ({ case: c.name, d: c.expected }))
  const recv = (at, from) =>
    r.messages
      .filter((m) => m.event === 'recv' && m.at === at && m.from === from)
      .map((m, i) => ({ case: twice[i] ? twice[i].case : `extra #${i}`, d: m.d }))
  // what worker 0 sent: first pass write() to worker 1 and send() to the primary, second pass the other way
  t.deepEqual(recv(1, 0), twice, 'worker 1 received from worker 0')
  t.deepEqual(recv(PRIMARY, 0), twice, 'the primary received from worker 0')
  // the echoes: worker 1 echoes with send(), the primary with write()
  t.deepEqual(recv(0, 1), twice, 'worker 0 received the echoes of worker 1')
  t.deepEqual(recv(0, PRIMARY), twice, 'worker 0 received the echoes of the primary')
  const writes = r.events('write')
  t.is(writes.length, 2 * cases.length)
  t.deepEqual(writes.filter((w) => w.ok !== true), [], 'write() returned true with plenty of room')
  t.deepEqual(r.events('write-false'), [], 'the primary\'s echo write() returned true')
  t.is(r.events('recv').length, 4 * twice.length, 'no other message arrived anywhere')
})

for (const ring of [undefined, 4096]) {
  test(`100k messages from one worker to another arrive in order, none lost (ringSize ${ring ?? 'default'})`, async (t) => {
    t.timeout(70_000)
    const args = ring ? [100_000, ring] : [100_000]
    const r = await runClean(t, 'stream.js', args, { timeout: 60_000 })
    const [summary] = r.events('summary')
    t.truthy(summary, 'the receiver reported')
    t.is(summary.received, 100_000)
    t.is(summary.wrong, 0, `out of order or corrupt: ${JSON.stringify(summary.firstWrong)}`)
    t.is(summary.last, 99_999)
    t.is(summary.fromOthers, 0)
    t.deepEqual(r.events('after').map((m) => m.received), [100_000], 'no duplicate arrived after the last message')
    const [sent] = r.events('sent')
    t.is(sent.n, 100_000)
    // with a 4096-byte ring the sender outruns the receiver: the retry-on-false path is exercised
    if (ring === 4096) t.true(sent.writeFalse > 0, 'write() returned false at least once')
  })
}

test('broadcast from one worker reaches the 3 other workers and the primary exactly once', async (t) => {
  t.timeout(40_000)
  const r = await runClean(t, 'broadcast.js', [], { timeout: 30_000 })
  t.deepEqual(r.events('broadcast').map((m) => m.n), [4, 4, 4], 'broadcast() resolved with 4 receivers each time')
  const expected = [
    { from: 0, d: { $: 'string', v: 'to everyone: ✓' } },
    { from: 0, d: { $: 'Buffer', hex: '0102030405' } },
    {
      from: 0,
      d: {
        $: 'Object',
        entries: [
          ['n', { $: 'number', v: '3' }],
          ['when', { $: 'Date', t: '5' }],
        ],
      },
    },
  ]
  for (const at of [1, 2, 3, PRIMARY]) {
    const got = r.messages.filter((m) => m.event === 'recv' && m.at === at).map(({ from, d }) => ({ from, d }))
    t.deepEqual(got, expected, `receiver ${at}`)
  }
  t.deepEqual(r.messages.filter((m) => m.event === 'recv' && m.at === 0), [], 'the broadcaster does not receive its own broadcast')
  t.is(r.events('recv').length, 12)
  t.deepEqual(r.messages.find((m) => m.event === 'peers' && m.at === 0).peers.sort(), [-1, 1, 2, 3])
  t.deepEqual(r.messages.find((m) => m.event === 'peers' && m.at === PRIMARY).peers.sort(), [0, 1, 2, 3])
})

test('a 64 MiB Buffer arrives intact with the default ring size', async (t) => {
  t.timeout(70_000)
  const r = await runClean(t, 'big.js', [], { timeout: 60_000 })
  const [geometry] = r.events('geometry')
  t.true(geometry.ringSize < 64 << 20, 'the payload is larger than a ring (it must be chunked)')
  const [sent] = r.events('sent')
  t.is(sent.length, 64 << 20)
  const recv = r.events('recv')
  t.is(recv.length, 2, 'exactly two messages arrived')
  t.like(recv[0], { from: 0, type: 'Buffer', length: 64 << 20, sha: sent.sha })
  t.like(recv[1], { from: 0, type: 'string', data: 'after the big one' })
})

test('full ring: write() returns false and a pending send() waits until the receiver reads, then all arrives in order', async (t) => {
  t.timeout(40_000)
  const r = await runClean(t, 'backpressure.js', [], { timeout: 30_000 })
  const [full] = r.events('full')
  t.true(full.written > 0, 'some writes succeeded before the ring was full')
  t.true(full.written < 4096 / 100, 'write() returned false once the 4096-byte ring was full')
  t.deepEqual(full.stillFalse, [false, false], 'write() keeps returning false while nobody reads')
  const [pending] = r.events('pending')
  t.false(pending.small, 'the small send() was still pending 500 ms later')
  t.false(pending.big, 'the send() larger than the ring was still pending 500 ms later')
  t.is(pending.queued, 2, 'bus.queued counts the pending sends')
  t.false(pending.writeWhileQueued, 'write() returns false while sends to that target are queued')
  const [reading] = r.events('reading')
  const [resolved] = r.events('resolved')
  t.true(resolved.small >= reading.t, 'the small send() resolved after the receiver started reading')
  t.true(resolved.big >= reading.t, 'the big send() resolved after the receiver started reading')
  t.is(resolved.queued, 0)
  const [received] = r.events('received')
  const k = full.written
  const expected = [...Array.from({ length: k + 1 }, (_, seq) => ({ from: 0, seq, ok: true, size: 100 })), { from: 0, seq: k + 1, ok: true, size: 20_000 }]
  t.deepEqual(received.got, expected, 'everything arrived once, intact, in order')
})

test('FIFO per sender when send() and write() are mixed', async (t) => {
  t.timeout(70_000)
  const r = await runClean(t, 'fifo.js', [20_000], { timeout: 60_000 })
  const [a] = r.events('phase-a')
  t.true(a.filled > 0)
  t.deepEqual(a.whileQueued, Array(20).fill(false), 'write() returned false while a send() to the same target was queued')
  t.is(a.queued, 21, 'the send() and the 20 fallbacks are queued')
  t.true(a.otherTarget, 'a write() to another target is not held back by the queue')
  t.deepEqual(r.events('primary-recv').map(({ from, seq }) => ({ from, seq })), [{ from: 0, seq: 7 }])
  const [b] = r.events('phase-b')
  t.true(b.writeTrue > 0, 'some write()s went straight into the ring')
  t.true(b.sends > 0 && b.bigSends > 0, 'some messages went through send(), some of them chunked')
  const [received] = r.events('received')
  t.is(received.received, 20_000)
  t.is(received.wrong, 0, `out of order: ${JSON.stringify(received.firstWrong)}`)
})
