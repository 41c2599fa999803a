'use strict'
// Topics (publish/subscribe) and request/response between the real processes of a cluster.
// Each cluster test runs a fixture (__test__/fixtures/topics-*.js) as a cluster primary in a
// child process of its own process group; it forks real workers and prints JSON lines that the
// tests assert on. Argument checks run in this process, with a primary and a second bus
// attached by name. Tests run serially: several of them bound the time a thing takes.

const fs = require('node:fs')
const path = require('node:path')
const test = require('ava')

const { masterInit, workerInit, PRIMARY, RemoteError, ClusterShmError } = require('..')
const { startCluster, runCluster, runClean, assertCleanExit, problems, SHM_DIR } = require('./helpers/harness')

const noProblems = (t, r) => t.deepEqual(problems(r), [], 'no error, watchdog or stray output in the fixture')
const sortNum = (a) => [...a].sort((x, y) => x - y)

// Fixtures whose output several tests assert on run once, when the first of them needs it.
const shared = new Map()
function sharedRun(name, args, options) {
  if (!shared.has(name)) shared.set(name, startCluster(name, args, options))
  return shared.get(name)
}
test.after.always(async () => {
  for (const r of shared.values()) await r.destroy()
})

// ---------------------------------------------------------------------------------------------
// Topics

test.serial('a topic reaches only its subscribers: what each of 5 processes received, exactly', async (t) => {
  t.timeout(40_000)
  const N = 60
  const M = 7
  const r = await runCluster('topics-delivery.js', [N], { timeout: 30_000, t })
  assertCleanExit(t, r)
  noProblems(t, r)
  t.deepEqual(r.events('peers').map((m) => m.peers), [[0, 1, 2, 3]], 'all 4 workers attached before publishing')
  // publish() resolves with the number of processes reached
  const published = Object.fromEntries(r.events('published').map((m) => [`${m.at} ${m.topic}`, m.histogram]))
  t.deepEqual(published, {
    [`${PRIMARY} news.sports`]: { 1: N }, // worker 2 (news.*) only
    '3 news': { 2: N }, // workers 0 and 1
    '3 news.sports.live': { 2: M }, // worker 2 (news.*) and the primary (news.sports.*)
  })
  // what every process received, per subscription and topic (zero included)
  const ok = (n, from) => ({ n, from: [from], inOrder: true, bad: 0 })
  const counts = Object.fromEntries(r.events('counts').map((m) => [m.at, m]))
  t.deepEqual(sortNum(Object.keys(counts).map(Number)), [PRIMARY, 0, 1, 2, 3], 'every process reported')
  t.deepEqual(counts[0].received, { news: { news: ok(N, 3) } }, 'worker 0')
  t.deepEqual(counts[1].received, { news: { news: ok(N, 3) } }, 'worker 1')
  t.deepEqual(counts[2].received, { 'news.*': { 'news.sports': ok(N, PRIMARY), 'news.sports.live': ok(M, 3) } }, 'worker 2')
  t.deepEqual(counts[3].received, { newsletter: {}, 'news.sport': {}, sports: {} }, 'worker 3 (near-miss topics) received nothing')
  t.deepEqual(counts[PRIMARY].received, { weather: {}, 'news.sports.*': { 'news.sports.live': ok(M, 3) } }, 'the primary')
  for (const at of [PRIMARY, 0, 1, 2, 3]) t.is(counts[at].otherPlain, 0, `no plain message but the fences at ${at}`)
})

test.serial('several callbacks per topic each get every message; unsubscribe() stops only its own; the last one stops delivery to the process', async (t) => {
  t.timeout(40_000)
  const K = 10
  const r = await runCluster('topics-unsub.js', [], { timeout: 30_000, t })
  assertCleanExit(t, r)
  noProblems(t, r)
  const published = Object.fromEntries(r.events('published').map((m) => [m.phase, m.results]))
  const times = (n) => Array(K).fill(n)
  // the primary and worker 1 always; worker 0 except in phase 4, when it has no subscription
  t.deepEqual(published, { 1: times(3), 2: times(3), 3: times(3), 4: times(2), 5: times(3) }, 'publish() resolved with the processes reached')
  const calls = (at) => Object.fromEntries(r.events('calls').filter((m) => m.at === at).map((m) => [m.phase, m.calls]))
  t.deepEqual(calls(0), {
    1: { a: 2 * K, b: K }, // s1 and s3 share the function a: two calls per message
    2: { a: 2 * K }, // s2 (b) unsubscribed
    3: { a: K }, // s1 unsubscribed (twice): s3 still delivers
    4: {}, // s3 unsubscribed: nothing, not even later when it subscribes again
    5: { a: K },
  }, 'worker 0, per phase and callback')
  t.deepEqual(calls(1), { 1: { c: K }, 2: { c: K }, 3: { c: K }, 4: { c: K }, 5: { c: K } }, 'worker 1 (control)')
  t.deepEqual(calls(PRIMARY), { 1: { p: K }, 2: { p: K }, 3: { p: K }, 4: { p: K }, 5: { p: K } }, 'the primary publishes to itself too')
})

test.serial('subscribe() and unsubscribe() are visible to publishers before they return', async (t) => {
  t.timeout(40_000)
  const R = 20
  const r = await runCluster('topics-visible.js', [R], { timeout: 30_000, t })
  assertCleanExit(t, r)
  noProblems(t, r)
  t.deepEqual(r.events('missing'), [], 'every first message arrived')
  const expected = []
  for (let i = 0; i < R; i++) {
    const by = i % 2 === 0 ? PRIMARY : 1
    expected.push({ round: i, what: 'first', by, n: 1 }, { round: i, what: 'after unsubscribe', by, n: 0 })
  }
  t.deepEqual(r.events('published').map(({ round, what, by, n }) => ({ round, what, by, n })), expected)
  const [received] = r.events('received')
  t.deepEqual(
    received.received,
    Array.from({ length: R }, (_, i) => ({ from: i % 2 === 0 ? PRIMARY : 1, topic: `flash.${i}`, data: `first ${i}` })),
    'worker 0 got each first message once, and nothing published after it unsubscribed',
  )
})

const deadsub = () => sharedRun('topics-deadsub.js', [], { timeout: 40_000 })

test.serial('a SIGKILLed subscriber does not block publishers, even with more than a ring of messages pending for it', async (t) => {
  t.timeout(60_000)
  const r = await deadsub().done
  t.log(`timeline (ms): ${r.messages.map((m) => `${m.event}@${m._rx - r.messages[0]._rx}`).join(' ')}`)
  assertCleanExit(t, r)
  noProblems(t, r)
  const [pending] = r.events('pending-A')
  const stuck = pending.issued - pending.settled
  // 200-byte messages into a 4096-byte ring that nobody drains: at most ~20 fit
  t.true(stuck > 4096 / 200, `more than a ring's worth of publishes waited for the stalled subscriber (${stuck} pending)`)
  const [settled] = r.events('settled')
  t.true(settled.afterKillMs < 5000, `every pending publish settled ${settled.afterKillMs} ms after the kill`)
  t.is((settled.A[1] || 0) + (settled.A[2] || 0), 200, `phase A: every publish resolved (no rejection): ${JSON.stringify(settled.A)}`)
  t.true((settled.A[1] || 0) >= stuck, 'the publishes that waited for the dead subscriber do not count it')
  t.true((settled.A[2] || 0) >= pending.settled, 'those that reached it before do')
  t.deepEqual(settled.B, { 1: 100 }, 'phase B (published after the kill) reached only the live subscriber')
  const published = Object.fromEntries(r.events('published').map((m) => [m.phase, m.results]))
  t.deepEqual(published, { C: { 1: 20 }, D: { 2: 20 } }, 'C: the replacement is not subscribed; D: it is')
  const healthy = r.events('received').find((m) => m.role === 'original')
  const all = (n) => ({ n, inOrder: true, bad: 0 })
  t.deepEqual(healthy && healthy.got, { A: all(200), B: all(100), C: all(20), D: all(20) }, 'the live subscriber got everything, in order')
})

test.serial('the replacement of a dead subscriber gets topic messages only once it subscribes itself, and then does', async (t) => {
  t.timeout(60_000)
  const r = await deadsub().done
  t.deepEqual(r.events('replacement').map((m) => m.index), [0], 'the replacement took the dead worker\'s index')
  const published = Object.fromEntries(r.events('published').map((m) => [m.phase, m.results]))
  t.deepEqual(published.C, { 1: 20 }, 'publishes before it subscribed did not count it')
  const replacement = r.events('received').find((m) => m.role === 'replacement')
  t.truthy(replacement, 'the replacement reported')
  // Only phase D was published while it was subscribed. Phases A and B were published to its
  // dead predecessor, whose subscription the primary dropped: a message in flight when its
  // topic is unsubscribed is discarded (README), not handed to a later subscriber.
  t.deepEqual(replacement.got, { D: { n: 20, inOrder: true, bad: 0 } }, 'the replacement received exactly what was published after it subscribed')
})

// ---------------------------------------------------------------------------------------------
// Request/response

const rpc = () => sharedRun('topics-rpc.js', [], { timeout: 45_000 })
const steps = (r) => r.events('step')
const stepsNamed = (r, name) => steps(r).filter((s) => s.name === name)

test.serial('request/response round trip, worker -> worker and worker -> primary, every payload kind both ways; handle(method) routing', async (t) => {
  t.timeout(60_000)
  const r = await rpc().done
  assertCleanExit(t, r)
  noProblems(t, r)
  for (const to of [1, PRIMARY]) {
    for (const kind of ['buffer', 'string', 'value']) {
      const [echo] = stepsNamed(r, `echo ${kind}`).filter((s) => s.to === to)
      t.true(echo && echo.ok, `echo ${kind} to ${to}: ${JSON.stringify(echo).slice(0, 300)}`)
      t.deepEqual(echo && echo.value, echo && echo.expected, `echo ${kind} to ${to}: the answer is the request, type included`)
      const [seen] = stepsNamed(r, `describe ${kind}`).filter((s) => s.to === to)
      t.true(seen && seen.ok, `describe ${kind} to ${to}`)
      t.deepEqual(seen && seen.value, seen && seen.expected, `describe ${kind} to ${to}: the handler got the request, type included, with from and method`)
    }
    const [bytes] = stepsNamed(r, 'bytes').filter((s) => s.to === to)
    t.deepEqual(bytes && bytes.value, bytes && bytes.expected, `string request, Buffer answer from ${to}`)
    const [who] = stepsNamed(r, 'whoami').filter((s) => s.to === to)
    const fields = who && Object.fromEntries(who.value.entries.filter(([k]) => k !== 'pid'))
    t.deepEqual(fields, { index: { $: 'number', v: String(to) }, from: { $: 'number', v: '0' }, method: { $: 'string', v: 'whoami' } }, `routed to ${to}'s whoami handler`)
    const [many] = stepsNamed(r, 'concurrent').filter((s) => s.to === to)
    t.deepEqual(many && { n: many.n, wrong: many.wrong }, { n: 100, wrong: 0 }, `100 concurrent requests to ${to}: each got its own answer`)
  }
  const [star] = stepsNamed(r, 'star')
  t.deepEqual(star && star.value, { $: 'Object', entries: [['star', { $: 'string', v: 'no-such-method' }], ['data', { $: 'string', v: 'anything' }]] }, "handle('*') answers methods nobody else handles")
  const [fine] = stepsNamed(r, 'still fine')
  t.deepEqual(fine && fine.value, { $: 'string', v: 'ok' }, 'requests still work after a peer died')
})

test.serial('a handler\'s thrown error or rejected promise reaches the requester as a RemoteError with its message and code', async (t) => {
  t.timeout(60_000)
  const r = await rpc().done
  for (const to of [1, PRIMARY]) {
    const pick = (name) => stepsNamed(r, name).find((s) => s.to === to)
    const shape = (s) => s && { ok: s.ok, remote: s.remote, errName: s.errName, code: s.code, message: s.message, from: s.from }
    t.deepEqual(shape(pick('fail')), { ok: false, remote: true, errName: 'RemoteError', code: 'E_BOOM', message: `boom at ${to}`, from: to }, `thrown by ${to}`)
    t.deepEqual(shape(pick('reject')), { ok: false, remote: true, errName: 'RemoteError', code: 'E_ASYNC', message: `async boom at ${to}`, from: to }, `rejected by ${to}`)
    const plain = pick('plain-error')
    t.deepEqual(plain && { ok: plain.ok, remote: plain.remote, message: plain.message, from: plain.from }, { ok: false, remote: true, message: `plain at ${to}`, from: to }, `an error without a code, from ${to}`)
  }
})

test.serial('a request nobody handles rejects with ERR_NO_HANDLER', async (t) => {
  t.timeout(60_000)
  const r = await rpc().done
  for (const [name, to] of [['no handler (primary)', PRIMARY], ['no handler (unsubscribed)', PRIMARY], ['no handler (worker)', 2], ['no respond()', 2]]) {
    const [s] = stepsNamed(r, name)
    t.deepEqual(s && { ok: s.ok, remote: s.remote, code: s.code, from: s.from }, { ok: false, remote: true, code: 'ERR_NO_HANDLER', from: to }, name)
    t.true(s && s.ms < 2000, `${name}: answered at once (${s && s.ms} ms)`)
  }
})

test.serial('a request to a process that registered no handler at all rejects with ERR_NO_HANDLER, not a timeout', async (t) => {
  t.timeout(60_000)
  const r = await rpc().done
  const [s] = stepsNamed(r, 'no handler at all')
  t.deepEqual(s && { ok: s.ok, code: s.code, from: s.from }, { ok: false, code: 'ERR_NO_HANDLER', from: 3 }, `worker 3 is attached and has no handler: ${JSON.stringify(s)}`)
})

test.serial('ERR_NOT_ATTACHED at once, ERR_TIMEOUT near the requested time, ERR_ABORTED when the signal aborts', async (t) => {
  t.timeout(60_000)
  const r = await rpc().done
  const [na] = stepsNamed(r, 'not attached')
  t.deepEqual(na && { ok: na.ok, shmError: na.shmError, code: na.code }, { ok: false, shmError: true, code: 'ERR_NOT_ATTACHED' })
  t.true(na && na.ms < 1000, `ERR_NOT_ATTACHED after ${na && na.ms} ms (timeout was 20 s)`)
  const [to] = stepsNamed(r, 'timeout')
  t.deepEqual(to && { ok: to.ok, shmError: to.shmError, code: to.code }, { ok: false, shmError: true, code: 'ERR_TIMEOUT' })
  t.true(to && to.ms >= 995 && to.ms < 3000, `ERR_TIMEOUT after ${to && to.ms} ms for a 1000 ms timeout`)
  const [ab] = stepsNamed(r, 'abort')
  t.deepEqual(ab && { ok: ab.ok, shmError: ab.shmError, code: ab.code }, { ok: false, shmError: true, code: 'ERR_ABORTED' })
  t.true(ab && ab.ms >= 295 && ab.ms < 2300, `ERR_ABORTED after ${ab && ab.ms} ms for an abort at 300 ms`)
  const [pre] = stepsNamed(r, 'aborted already')
  t.deepEqual(pre && { ok: pre.ok, code: pre.code }, { ok: false, code: 'ERR_ABORTED' })
  t.true(pre && pre.ms < 1000, 'an aborted signal rejects at once')
})

test.serial('a target SIGKILLed during a request: ERR_PEER_GONE within about 1 s of the kill', async (t) => {
  t.timeout(60_000)
  const r = await rpc().done
  const [killing] = r.events('killing')
  const [gone] = stepsNamed(r, 'peer gone')
  t.truthy(killing && gone, 'the kill and the outcome were reported')
  t.deepEqual(gone && { ok: gone.ok, shmError: gone.shmError, code: gone.code }, { ok: false, shmError: true, code: 'ERR_PEER_GONE' })
  const after = gone.end - killing.at
  t.true(after < 1500, `ERR_PEER_GONE ${after} ms after the kill (the request's timeout was 20 s)`)
  const [again] = stepsNamed(r, 'after peer gone')
  t.deepEqual(again && { ok: again.ok, code: again.code }, { ok: false, code: 'ERR_NOT_ATTACHED' }, 'the dead worker\'s index is free')
})

test.serial('requestAll() with one worker SIGKILLed mid-gather resolves with the answers of the others and a failure for each that failed', async (t) => {
  t.timeout(60_000)
  const r = await runCluster('topics-gather.js', [], { timeout: 45_000, t })
  assertCleanExit(t, r)
  noProblems(t, r)
  t.deepEqual(r.events('gather-rejected'), [], 'requestAll() never rejected')
  const [{ pids }] = r.events('pids')
  const byMethod = Object.fromEntries(r.events('gathered').map((m) => [m.method, m]))
  const ping = byMethod.ping
  t.deepEqual(ping && ping.keys, ['answers', 'failures'])
  t.deepEqual(ping && sortNum(ping.answers.map((a) => a.from)), [PRIMARY, 1, 2, 3, 4], 'everyone answered the first gather')
  for (const a of (ping && ping.answers) || []) t.deepEqual(a.data, { index: a.from, pid: pids[a.from] }, `answer of ${a.from}`)
  t.deepEqual(ping && ping.failures, [])

  const who = byMethod.who
  t.truthy(who, 'the second gather resolved')
  t.deepEqual(sortNum(who.answers.map((a) => a.from)), [PRIMARY, 1])
  for (const a of who.answers) t.deepEqual(a.data, { index: a.from, pid: pids[a.from], from: 0, data: { q: 'who' } }, `answer of ${a.from}`)
  const failures = Object.fromEntries(who.failures.map((f) => [f.from, f]))
  t.deepEqual(sortNum(Object.keys(failures).map(Number)), [2, 3, 4], 'one failure for each process that failed')
  t.deepEqual(failures[2], { from: 2, code: 'E_NOPE', message: 'nope from 2' }, 'a thrown error')
  t.true(['ERR_PEER_GONE', 'ERR_TIMEOUT'].includes(failures[3] && failures[3].code), `the killed worker: ${JSON.stringify(failures[3])}`)
  t.is(typeof (failures[3] && failures[3].message), 'string')
  t.is(failures[4] && failures[4].code, 'ERR_TIMEOUT', 'the worker that answers too late')
  t.true(who.ms >= 1990 && who.ms < 5000, `the gather took ${who.ms} ms with a 2000 ms timeout`)
})

test.serial('no leak after requests of every outcome: the cluster exits by itself once the workers are disconnected', async (t) => {
  t.timeout(60_000)
  const r = await runCluster('topics-leak.js', [], { timeout: 45_000, t })
  assertCleanExit(t, r)
  noProblems(t, r)
  const outcomes = Object.fromEntries(r.events('outcomes').map((m) => [m.at, m]))
  const expected = { ok: 40, E_BOOM: 15, ERR_NO_HANDLER: 5, ERR_NOT_ATTACHED: 5, ERR_TIMEOUT: 10, ERR_ABORTED: 15 }
  for (const at of [0, PRIMARY]) {
    const o = outcomes[at]
    t.truthy(o, `${at} reported`)
    if (!o) continue
    const { gathered, gatherFailed, ...counts } = o.outcomes
    t.deepEqual(counts, at === 0 ? { ...expected, ERR_PEER_GONE: 5 } : expected, `outcomes at ${at}`)
    t.true(gathered + gatherFailed >= 2, `requestAll() at ${at} settled with every peer accounted for`)
    t.deepEqual(o.resources.filter((x) => x === 'Timeout' || x === 'Immediate'), [], `no timer left at ${at}: ${o.resources}`)
  }
  const exits = r.events('worker-exit').map((m) => (m.signal ? m.signal : m.code))
  t.deepEqual(exits.sort(), [0, 0, 'SIGKILL'].sort(), 'the workers exited by themselves (the peer-gone target was killed)')
  const [disconnecting] = r.events('disconnecting')
  t.true(r.exitedAt - disconnecting._rx < 5000, `the primary exited ${r.exitedAt - disconnecting._rx} ms after disconnecting its workers`)
})

// ---------------------------------------------------------------------------------------------
// In this process: patterns and argument checks

/** A primary and a second bus attached by name (index 0), closed at the end of the test. */
function pair(t) {
  const bus = masterInit({ workers: 2, ringSize: 65536 })
  const w = workerInit({ name: bus.name })
  t.teardown(() => {
    w.close()
    bus.close()
  })
  return { bus, w }
}

/** Resolves when the message published before it reached `w` (FIFO per sender and receiver). */
async function fence(bus, w) {
  let seen = false
  const sub = w.subscribe(({ data }) => {
    if (data === 'fence') seen = true
  })
  await bus.send(0, 'fence')
  const end = Date.now() + 10_000
  while (!seen && Date.now() < end) await new Promise((r) => setTimeout(r, 5))
  sub.unsubscribe()
  await new Promise((r) => setImmediate(r)) // the primary's own topic delivery
  return seen
}

test.serial('patterns: room.* matches every topic below room., * matches all, nothing else matches', async (t) => {
  const { bus, w } = pair(t)
  const got = []
  w.subscribe('room.*', ({ topic }) => got.push(`w room.* ${topic}`))
  w.subscribe('room.7', ({ topic }) => got.push(`w room.7 ${topic}`))
  bus.subscribe('*', ({ topic }) => got.push(`p * ${topic}`))
  const reached = {}
  for (const topic of ['room.7', 'room.7.x', 'room.8', 'room', 'roomy', 'lobby']) reached[topic] = await bus.publish(topic, topic)
  t.true(await fence(bus, w), 'the fence arrived')
  t.deepEqual(reached, { 'room.7': 2, 'room.7.x': 2, 'room.8': 2, room: 1, roomy: 1, lobby: 1 }, 'a process is counted once however many of its subscriptions match')
  t.deepEqual(got.filter((g) => g.startsWith('w')).sort(), ['w room.* room.7', 'w room.* room.7.x', 'w room.* room.8', 'w room.7 room.7'].sort())
  t.deepEqual(got.filter((g) => g.startsWith('p')).sort(), ['room.7', 'room.7.x', 'room.8', 'room', 'roomy', 'lobby'].map((x) => `p * ${x}`).sort())
})

test.serial('a trailing * not after a dot (new*) is refused, or matches every topic with that prefix', async (t) => {
  // README: "A topic ends in * to match every topic with that prefix"; accepting such a
  // subscription and never delivering to it would be a silent no-op.
  const { bus, w } = pair(t)
  let sub
  try {
    sub = w.subscribe('new*', () => {})
  } catch (err) {
    t.is(err.code, 'ERR_INVALID_ARG')
    return
  }
  t.is(await bus.publish('news', 'x'), 1, "subscribe('new*') was accepted: publish('news') must reach it")
})

test.serial('bad arguments: topics, callbacks, request options, handlers', async (t) => {
  const { bus, w } = pair(t)
  w.respond((d) => d)
  const invalid = { code: 'ERR_INVALID_ARG' } // the class is checked in the next test
  const badTopics = [5, null, undefined, {}, Buffer.from('news'), '', 'a'.repeat(129), '日'.repeat(43) /* 129 bytes */, 'news.*.x', 'a*b', '**', '*x']
  for (const topic of badTopics) {
    t.throws(() => bus.subscribe(topic, () => {}), invalid, `subscribe(${JSON.stringify(topic)})`)
    await t.throwsAsync(bus.publish(topic, 'x'), invalid, `publish(${JSON.stringify(topic)})`)
  }
  await t.throwsAsync(bus.publish('room.*', 'x'), { ...invalid, message: /patterns are for subscribe/ }, 'publish to a pattern says why')
  // the limits themselves are fine
  const longest = 'a'.repeat(128)
  t.notThrows(() => bus.subscribe(longest, () => {}).unsubscribe())
  t.is(await bus.publish(longest, 'x'), 0)
  t.notThrows(() => bus.subscribe('日'.repeat(42) + 'ab', () => {}).unsubscribe(), '128 bytes in multi-byte characters')
  for (const cb of [undefined, null, 'f', {}]) t.throws(() => bus.subscribe('news', cb), invalid, `subscribe('news', ${String(cb)})`)
  await t.throwsAsync(bus.publish('news', 'x', { timeout: -1 }), invalid, 'publish timeout')
  await t.throwsAsync(bus.publish('news', () => {}), { code: 'ERR_UNSERIALIZABLE' })

  for (const timeout of [-1, 1.5, NaN, Infinity, '100', 2 ** 31, null]) {
    await t.throwsAsync(bus.request(0, 'x', { timeout }), invalid, `request timeout ${String(timeout)}`)
  }
  for (const method of [5, null, Buffer.from('m'), {}, 'm'.repeat(65536)]) {
    await t.throwsAsync(bus.request(0, 'x', { method }), invalid, `request method ${typeof method}`)
  }
  for (const signal of [{}, 'x', null, { aborted: false, addEventListener() {}, removeEventListener() {} }]) {
    await t.throwsAsync(bus.request(0, 'x', { signal }), invalid, `request signal ${JSON.stringify(signal)}`)
  }
  await t.throwsAsync(bus.request(0, 'x', 'opts'), invalid, 'request options not an object')
  await t.throwsAsync(bus.request('0', 'x'), invalid, 'request address not a number')
  await t.throwsAsync(bus.request(7, 'x'), { code: 'ERR_INDEX_OUT_OF_RANGE' })
  await t.throwsAsync(bus.request(0, () => {}), { code: 'ERR_UNSERIALIZABLE' })
  t.is(await bus.request(0, 'still works', { timeout: 10_000 }), 'still works', 'the bad calls left nothing behind')
  t.is(await bus.request(PRIMARY, 'to myself', { timeout: 10_000 }).catch((e) => e.code), 'ERR_NO_HANDLER', 'a request to oneself without a handler')

  for (const handler of [undefined, null, 'f', {}]) {
    t.throws(() => bus.handle('m', handler), invalid, `handle('m', ${String(handler)})`)
    t.throws(() => bus.respond(handler), invalid, `respond(${String(handler)})`)
  }
  for (const method of [5, null, undefined, {}]) t.throws(() => bus.handle(method, () => {}), invalid, `handle(${String(method)}, fn)`)
})

test.serial('a refused topic name is a ClusterShmError, like every error of the library', async (t) => {
  const { bus } = pair(t)
  const classOf = (err) => ({ code: err && err.code, isClusterShmError: err instanceof ClusterShmError })
  let thrown
  try {
    bus.subscribe('', () => {})
  } catch (err) {
    thrown = err
  }
  const rejected = await bus.publish('a*b', 'x').then(() => undefined, (err) => err)
  t.deepEqual(
    { subscribe: classOf(thrown), publish: classOf(rejected) },
    { subscribe: { code: 'ERR_INVALID_ARG', isClusterShmError: true }, publish: { code: 'ERR_INVALID_ARG', isClusterShmError: true } },
  )
})

test.serial('requestAll() with bad arguments rejects with ERR_INVALID_ARG instead of reporting every peer as failed', async (t) => {
  const { bus, w } = pair(t)
  w.respond((d) => d)
  const settle = (p) => p.then((value) => ({ resolved: value }), (err) => ({ rejected: err.code }))
  const got = {
    'timeout -1': await settle(bus.requestAll('x', { timeout: -1 })),
    'method 5': await settle(bus.requestAll('x', { method: 5 })),
    'signal {}': await settle(bus.requestAll('x', { signal: {} })),
    'options "opts"': await settle(bus.requestAll('x', 'opts')),
  }
  const invalid = { rejected: 'ERR_INVALID_ARG' }
  t.deepEqual(got, { 'timeout -1': invalid, 'method 5': invalid, 'signal {}': invalid, 'options "opts"': invalid })
  t.deepEqual(await bus.requestAll('ok', { timeout: 10_000 }), { answers: [{ from: 0, data: 'ok' }], failures: [] })
})

test.serial('every topic and request method of a closed bus fails with ERR_CLOSED', async (t) => {
  const { bus, w } = pair(t)
  const sub = bus.subscribe('news', () => {})
  const h = bus.handle('m', () => 1)
  w.respond((d) => d)
  bus.close()
  const closed = { code: 'ERR_CLOSED', instanceOf: ClusterShmError }
  t.throws(() => bus.subscribe('news', () => {}), closed, 'subscribe(topic, cb)')
  t.throws(() => bus.subscribe(() => {}), closed, 'subscribe(cb)')
  await t.throwsAsync(bus.publish('news', 'x'), closed, 'publish')
  await t.throwsAsync(bus.request(0, 'x'), closed, 'request')
  t.throws(() => bus.respond(() => {}), closed, 'respond')
  t.throws(() => bus.handle('m', () => {}), closed, 'handle')
  t.notThrows(() => sub.unsubscribe(), 'unsubscribe() of an earlier subscription is harmless')
  t.notThrows(() => h.unsubscribe(), 'unsubscribe() of an earlier handler is harmless')
  t.false(fs.existsSync(path.join(SHM_DIR, bus.name.replace(/^\//, ''))), 'the primary\'s close() removed the segment from /dev/shm')
  await t.throwsAsync(bus.requestAll('x'), closed, 'requestAll')
})

test.serial('a process that closes its bus loses its subscriptions', async (t) => {
  const { bus, w } = pair(t)
  w.subscribe('news', () => {})
  w.subscribe('news.*', () => {})
  t.is(await bus.publish('news', 'x'), 1)
  t.is(await bus.publish('news.x', 'x'), 1)
  w.close()
  t.is(await bus.publish('news', 'x'), 0, 'exact subscription gone')
  t.is(await bus.publish('news.x', 'x'), 0, 'pattern subscription gone')
})

test.serial('RemoteError is exported and carries message, code and from', async (t) => {
  const { bus, w } = pair(t)
  w.handle('fail', () => {
    throw Object.assign(new Error('nope'), { code: 'E_X' })
  })
  const err = await t.throwsAsync(bus.request(0, null, { method: 'fail', timeout: 10_000 }), { instanceOf: RemoteError })
  t.deepEqual({ name: err.name, message: err.message, code: err.code, from: err.from }, { name: 'RemoteError', message: 'nope', code: 'E_X', from: 0 })
})

test.serial('publish, request and response longer than one frame (1.5 MiB bytes, 1.5 MB strings), to one and to two subscribers', async (t) => {
  t.timeout(60_000)
  const r = await runClean(t, 'topics-large', [])
  const buffer = { buffer: 1.5 * 1024 * 1024, right: true }
  const string = { string: 512 * 1024, right: true }
  const published = r.messages.find((m) => m.event === 'published')
  t.deepEqual(published && published.reached, [1, 1, 2, 2], "publish() resolves with how many processes it reached")
  t.deepEqual(published && published.echoes, [buffer, string], 'the request and its answer arrived whole')
  const received = (index) => r.messages.find((m) => m.event === 'received' && m.index === index)?.got
  t.deepEqual(received(1), [buffer, string, buffer, string], 'worker 1: both topics, in order')
  t.deepEqual(received(2), [buffer, string], 'worker 2: its topic')
})

test.serial("a process's own publishes reach its own subscriptions in order, and a Buffer it kept stays intact while later ones arrive", async (t) => {
  const bus = masterInit({ workers: 1, ringSize: 64 * 1024 })
  t.teardown(() => bus.close())
  const got = []
  let wake = null
  bus.subscribe('self.t', ({ from, data }) => {
    got.push({ from, data })
    if (wake !== null) wake()
  })
  const arrived = (n) => new Promise((resolve) => {
    wake = () => got.length >= n && resolve()
    wake()
  })
  // Two turns of publishes, more than 64 KiB in each (the copies for oneself share buffers),
  // with strings between and one payload larger than those shared buffers take.
  const fill = (i, size) => Buffer.alloc(size, i & 0xff)
  const expected = []
  for (let turn = 0; turn < 2; turn++) {
    for (let i = 0; i < 100; i++) {
      const k = turn * 100 + i
      const data = i === 50 ? fill(k, 20_000) : i % 10 === 3 ? `s${k}` : fill(k, 1000)
      t.true(bus.tryPublish('self.t', data), 'room in an empty ring')
      expected.push(data)
    }
    await arrived(expected.length)
  }
  t.is(got.length, 200, 'each once')
  for (const [i, { from, data }] of got.entries()) {
    t.is(from, PRIMARY)
    if (typeof expected[i] === 'string') t.is(data, expected[i], `message ${i}`)
    else t.true(Buffer.isBuffer(data) && data.equals(expected[i]), `message ${i}: its own bytes, in order, unchanged after the second turn`)
  }
})
