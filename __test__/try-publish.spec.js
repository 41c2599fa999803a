'use strict'
// bus.tryPublish(topic, data): publish() now or not at all, without a promise. Mostly in this process:
// a primary and two buses attached by name (worker indices 0 and 1) with small rings, so that
// filling a ring takes a synchronous loop (delivery cannot drain it until the loop yields); the
// crash tests run a real cluster (fixtures/publish-then-die.js).

const test = require('ava')

const { masterInit, workerInit } = require('..')
const { runClean } = require('./helpers/harness')

const RING = 4096

function trio(t) {
  const bus = masterInit({ workers: 2, ringSize: RING })
  const w0 = workerInit({ name: bus.name, index: 0 })
  const w1 = workerInit({ name: bus.name, index: 1 })
  t.teardown(() => {
    w1.close()
    w0.close()
    bus.close()
  })
  return { bus, w0, w1 }
}

const turn = () => new Promise((r) => setImmediate(r))
async function until(cond, what) {
  const end = Date.now() + 10_000
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 2))
  }
}

test('true: every subscriber gets it, this process included, in order and unchanged', async (t) => {
  const { bus, w0, w1 } = trio(t)
  const got = { w0: [], w1: [], self: [] }
  w0.subscribe('news.*', ({ from, topic, data }) => got.w0.push([from, topic, data]))
  w1.subscribe('news.sports', ({ data }) => got.w1.push(data))
  bus.subscribe('news.sports', ({ data }) => got.self.push(data))
  const values = [{ k: 's', s: 1, d: 'x'.repeat(40) }, 'text', Buffer.from([1, 2, 3]), new Map([[1, 2]]), [1, 2, 3]]
  for (const v of values) t.true(bus.tryPublish('news.sports', v))
  t.true(bus.tryPublish('news.weather', 'only w0'))
  t.true(bus.tryPublish('nobody.listens', 1), 'no subscriber: nothing to write, nothing refused')
  await until(() => got.w0.length === 6 && got.w1.length === 5 && got.self.length === 5, 'every message')
  t.deepEqual(got.w1, values)
  t.deepEqual(got.self, values)
  t.deepEqual(got.w0.map(([from]) => from), Array(6).fill(bus.index))
  t.deepEqual(got.w0.map(([, topic, data]) => [topic, data]), [...values.map((v) => ['news.sports', v]), ['news.weather', 'only w0']])
})

test('false when a ring is full: nothing written anywhere; publish() then delivers the rest in order', async (t) => {
  const { bus, w0, w1 } = trio(t)
  const got0 = []
  const got1 = []
  w0.subscribe('s', ({ data }) => got0.push(data))
  w1.subscribe('s', ({ data }) => got1.push(data))
  // Fill w1's ring alone with plain messages (w1 drains nothing while this loop runs).
  let plain = 0
  while (bus.write(1, { plain: plain })) plain++
  t.true(plain > 10, `${plain} plain messages filled the ring`)
  t.false(bus.tryPublish('s', { n: 0 }), "w1's ring is full")
  t.false(bus.tryPublish('s', { n: 0 }), 'still full')
  await bus.publish('s', { n: 0 }) // waits for room in w1's ring
  // Stream: tryPublish while it works, publish() when it does not.
  let refused = 0
  for (let n = 1; n < 400; n++) {
    if (!bus.tryPublish('s', { n })) refused++, await bus.publish('s', { n })
  }
  t.true(refused > 0, `${refused} refusals with ${RING}-byte rings`)
  await until(() => got0.length === 400 && got1.length === 400, 'every published message')
  const expected = Array.from({ length: 400 }, (_, n) => ({ n }))
  t.deepEqual(got0, expected, 'w0 got each exactly once, in order: a refused tryPublish wrote nothing to w0 either')
  t.deepEqual(got1, expected)
})

test('larger than one frame: false, and publish() delivers it', async (t) => {
  const { bus, w0 } = trio(t)
  const got = []
  w0.subscribe('big', ({ data }) => got.push(data))
  const big = Buffer.alloc(RING / 4, 7) // over ringSize / 4 - 16 with the envelope
  t.false(bus.tryPublish('big', big))
  t.true(bus.tryPublish('big', 'small'))
  t.is(await bus.publish('big', big), 1)
  await until(() => got.length === 2, 'both')
  t.is(got[0], 'small')
  t.true(got[1].equals(big))
})

test('misuse throws (it returns no promise): bad topic, unserializable data, closed bus', async (t) => {
  const { bus, w0 } = trio(t)
  w0.subscribe('t', () => {})
  t.is(t.throws(() => bus.tryPublish(1, 'x')).code, 'ERR_INVALID_ARG')
  t.is(t.throws(() => bus.tryPublish('a*', 'x')).code, 'ERR_INVALID_ARG')
  t.is(t.throws(() => bus.tryPublish('t', () => 1)).code, 'ERR_UNSERIALIZABLE')
  await turn()
  const b2 = masterInit({ workers: 1 })
  b2.close()
  t.is(t.throws(() => b2.tryPublish('t', 'x')).code, 'ERR_CLOSED')
})

for (const how of ['publish', 'flush']) {
  test(`a publisher SIGKILLed right after ${how === 'publish' ? 'await publish() resolved' : 'tryPublish() and flush()'} loses nothing it published`, async (t) => {
    t.timeout(40_000)
    const r = await runClean(t, 'publish-then-die.js', [how], { timeout: 30_000 })
    t.deepEqual(r.events('publisher-exit').map((e) => e.signal), ['SIGKILL'])
    const [received] = r.events('received')
    t.deepEqual(received.got, Array.from({ length: 50 }, (_, i) => ({ i })), 'every message, in order, the last one included')
  })
}

test('a topic published to before sees every later change of its subscribers (watched targets)', async (t) => {
  const { bus, w0 } = trio(t)
  t.is(await bus.publish('w', 0), 0, 'nobody yet')
  const got = []
  let sub = w0.subscribe('w', ({ data }) => got.push(data))
  t.is(await bus.publish('w', 1), 1, 'a new subscriber is reached by the next publish')
  t.true(bus.tryPublish('w', 2))
  await until(() => got.length === 2, 'both')
  sub.unsubscribe()
  t.is(await bus.publish('w', 3), 0, 'unsubscribed: not reached')
  w0.close()
  const next = workerInit({ name: bus.name, index: 0 }) // the next holder of index 0
  t.teardown(() => next.close())
  const got2 = []
  sub = next.subscribe('w', ({ data }) => got2.push(data))
  t.is(await bus.publish('w', 4), 1, 'the new holder (new generation) is reached')
  t.true(bus.tryPublish('w', 5))
  await until(() => got2.length === 2, 'the new holder got both')
  t.deepEqual(got, [1, 2])
  t.deepEqual(got2, [4, 5])
})

test('watched targets, read through the segment view: a successor subscribed like its predecessor (same bits, new generation) and a pattern added later are both reached by the next tryPublish', async (t) => {
  const { bus, w0, w1 } = trio(t)
  const old = []
  w0.subscribe('x.y', ({ data }) => old.push(data))
  t.true(bus.tryPublish('x.y', 1)) // watched from here: no native call while nothing changes
  t.true(bus.tryPublish('x.y', 2))
  await until(() => old.length === 2, 'the first holder got 1 and 2')
  // The same subscriber bitmap as before, held by a new process at index 0: only its owner word
  // (generation) tells them apart.
  w0.close()
  const next = workerInit({ name: bus.name, index: 0 })
  t.teardown(() => next.close())
  const got = []
  next.subscribe('x.y', ({ data }) => got.push(data))
  t.true(bus.tryPublish('x.y', 3))
  // A pattern that the topic looks up, added after the topic was first published: a new entry
  // in the topic table.
  const viaPattern = []
  w1.subscribe('x.*', ({ topic, data }) => viaPattern.push([topic, data]))
  t.true(bus.tryPublish('x.y', 4))
  await until(() => got.length === 2 && viaPattern.length === 1, 'the successor got 3 and 4, the pattern 4')
  t.deepEqual(got, [3, 4])
  t.deepEqual(viaPattern, [['x.y', 4]])
  t.deepEqual(old, [1, 2], 'the closed holder got nothing more')
  t.is(await bus.publish('x.y', 5), 2, 'publish() sees the same two')
})

test.serial('the views JS reads segment words through are small regions (the endpoint slots, the topic table), not the mapping: V8 counts them as external memory', async (t) => {
  const v8 = require('node:v8')
  const bus = masterInit({ workers: 8 }) // a segment of tens of MiB
  const w0 = workerInit({ name: bus.name, index: 0 })
  t.teardown(() => {
    w0.close()
    bus.close()
  })
  const before = v8.getHeapStatistics().external_memory
  w0.subscribe('v', () => {})
  w0.respond((d) => d)
  t.true(bus.tryPublish('v', 1)) // the topic table's view and the slots' view
  t.is(await bus.request(0, 2), 2) // the requester reads the responder's slot through the latter
  const grown = v8.getHeapStatistics().external_memory - before
  t.true(grown < 4 * 1024 * 1024, `external memory grew by ${grown} bytes for a segment of ${bus.ringSize * 72} bytes of rings`)
})

test('a requester reading the responder\'s slot through the view sees a handler added, removed and a new holder at once', async (t) => {
  const { bus, w0 } = trio(t)
  await t.throwsAsync(w0.request(-1, 1), { code: 'ERR_NO_HANDLER' }, 'no handler yet')
  const h = bus.respond((d) => d + 1)
  t.is(await w0.request(-1, 1), 2, 'the flag set by respond() is seen by the next request')
  h.unsubscribe()
  await t.throwsAsync(w0.request(-1, 1), { code: 'ERR_NO_HANDLER' }, 'and its removal')
  w0.respond((d) => d * 10)
  t.is(await bus.request(0, 3), 30)
  bus.subscribe(() => {}) // delivery keeps running, so the primary sees w0 leave ('detach')
  let left = false
  bus.once('detach', () => (left = true))
  w0.close()
  await t.throwsAsync(bus.request(0, 3), { code: 'ERR_NOT_ATTACHED' }, 'the holder left: its owner word says so')
  await until(() => left, "w0's 'detach'")
  const next = workerInit({ name: bus.name, index: 0 })
  t.teardown(() => next.close())
  next.respond((d) => d * 100)
  t.is(await bus.request(0, 3), 300, 'the new holder (new generation) answers')
})

test('a request sent to a successor before the requester handled its predecessor\'s departure is answered, not rejected with ERR_PEER_GONE', async (t) => {
  const { bus, w0 } = trio(t)
  w0.respond((d) => d * 10)
  t.is(await bus.request(0, 3), 30)
  bus.subscribe(() => {}) // delivery runs, so the primary will see index 0 change hands
  // Within one turn: the holder leaves, a successor takes the index and answers, and the request
  // goes out to it; the primary's delivery sees the change (detach, attach) only afterwards.
  w0.close()
  const next = workerInit({ name: bus.name, index: 0 })
  t.teardown(() => next.close())
  next.respond((d) => d * 100)
  const answer = bus.request(0, 3, { timeout: 10_000 })
  let detached
  bus.once('detach', (address) => (detached = address))
  t.is(await answer, 300, 'the successor answered the request sent to it')
  await until(() => detached !== undefined, "the predecessor's 'detach'")
  t.is(detached, 0, "the predecessor's departure was still reported")
})
