'use strict'
// Shared state across the processes of a cluster: semaphores, locks, regions and maps.
//
// The concurrency tests run a fixture (__test__/fixtures/sync-*.js) as a real cluster primary in
// a child process, which forks real workers; they run one at a time (test.serial), because some
// of them measure time (recovery within 1 s, timeouts). The error-code tests run in this process,
// with a segment of its own (a primary bus, plus a second bus attached to it by name, which takes
// the same path as another process would).

const test = require('ava')
const fs = require('node:fs')
const path = require('node:path')

const { runCluster, runClean, assertCleanExit, noErrors, segmentsOf, SHM_DIR } = require('./helpers/harness')
const lib = require('..')

/** The one 'result' line of a run. */
function result(t, r) {
  const results = r.events('result')
  t.is(results.length, 1, `expected one result line; stderr:\n${r.stderr.slice(-3000)}`)
  return results[0] ?? {}
}

// ------------------------------------------------------------------------------------------------
// Real cluster workers

test.serial('4 workers x 50k increments: a get/set counter under bus.lock and a map.increment counter both end at exactly 200k', async (t) => {
  t.timeout(170_000)
  const r = await runClean(t, 'sync-count.js', [50_000], { timeout: 160_000 })
  const res = result(t, r)
  t.is(res.plain, 200_000, 'get + set under the lock: no update lost')
  t.is(res.overlaps, 0, 'never two processes inside the lock at once')
  t.is(res.inside, 0)
  t.is(res.inc, 200_000, 'map.increment without a lock: no update lost')
  t.is(res.recovered, 0, 'nobody died: no permit was recovered')
  t.is(res.available, 1, 'the mutex is free at the end')
  t.deepEqual(
    res.perWorker.map((w) => [w.locked, w.incs]),
    Array(4).fill([50_000, 50_000]),
  )
  t.log(`ms per worker [lock loop, increment loop]: ${res.perWorker.map((w) => JSON.stringify(w.ms)).join(' ')}`)
})

test.serial('a semaphore of 3 permits never has more than 3 holders (4 workers x 2 loops), and reaches 3', async (t) => {
  t.timeout(50_000)
  const r = await runClean(t, 'sync-semaphore.js', [1500], { timeout: 45_000 })
  const res = result(t, r)
  t.true(res.max <= 3, `at most 3 holders at once, saw ${res.max}`)
  t.is(res.max, 3, 'all 3 permits were held at once at least once')
  t.is(res.holders, 0, 'the holder count went back to 0')
  t.is(res.acquired, 4 * 2 * 1500, 'every acquisition was counted')
  t.is(res.available, 3, 'every permit is free at the end')
  t.is(res.heldByPrimary, 0)
  t.is(res.workers.length, 4)
  for (const w of res.workers) {
    t.is(w.acquired, 2 * 1500, `worker ${w.index}`)
    t.is(w.heldAfter, 0, `worker ${w.index} holds nothing at the end`)
    t.is(w.recovered, 0, `worker ${w.index}: nobody died, nothing recovered`)
  }
})

const recoveries = [
  ['worker', 'acquire', 'a cluster worker SIGKILLed holding a mutex: the waiting worker gets it within 1 s, recovered'],
  ['plain', 'acquire', 'a plain process (workerInit({ name }), not a cluster worker) SIGKILLed holding a mutex: the waiter\'s liveness sweep gives it back within 1 s, recovered'],
  ['plain', 'try', 'a plain process SIGKILLed holding a mutex, nobody waiting in acquire(): tryAcquire() polling gets it within 1 s, recovered'],
  ['zombie', 'acquire', 'a plain process SIGKILLed holding a mutex whose parent does not reap it (a zombie): the waiter gets it within 1 s, recovered'],
]
for (const [mode, waitBy, title] of recoveries) {
  test.serial(title, async (t) => {
    t.timeout(30_000)
    const r = await runClean(t, 'sync-recover.js', [mode, waitBy], { timeout: 25_000 })
    const res = result(t, r)
    t.is(res.mode, mode)
    t.is(res.waitBy, waitBy)
    t.false(res.acquiredBeforeKill, 'the waiter must not take the mutex from a live holder')
    t.true(res.ok, `the waiter's acquire failed with ${res.code} ${res.latency} ms after the kill (the holder's process state then: ${res.holderState ?? 'gone'})`)
    t.true(res.latency >= 0 && res.latency < 1000, `acquired ${res.latency} ms after the kill`)
    t.true(res.recovered, 'permit.recovered === true for the first holder after the crash')
    t.false(res.recoveredAgain, 'the next holder after that gets recovered === false')
    t.is(res.availableAfter, 1)
    t.log(`acquired ${res.latency} ms after the kill`)
  })
}

test.serial('acquire: timeouts reject with ERR_TIMEOUT in time; aborts reject with ERR_ABORTED and take no permit, also racing a grant; queued acquires reject with ERR_CLOSED at close()', async (t) => {
  t.timeout(40_000)
  const r = await runClean(t, 'sync-acquire.js', [], { timeout: 35_000 })
  const { checks: c, primary } = result(t, r)
  const inTime = (ms, lo, what) => t.true(ms >= lo - 2 && ms < 1000, `${what}: settled after ${ms.toFixed(1)} ms, expected >= ${lo} and < 1000`)

  t.like(c.timeout, { ok: false, code: 'ERR_TIMEOUT', held: 0, available: 0 })
  inTime(c.timeout.elapsed, 200, 'acquire({ timeout: 200 })')
  t.like(c.lockTimeout, { ok: false, code: 'ERR_TIMEOUT', fnRan: false, held: 0 })
  inTime(c.lockTimeout.elapsed, 150, 'lock(name, fn, { timeout: 150 })')
  t.like(c.timeoutZero, { ok: false, code: 'ERR_TIMEOUT' })
  t.true(c.timeoutZero.elapsed < 500, `timeout 0 (only if free now) settled after ${c.timeoutZero.elapsed} ms`)
  t.like(c.queuedTimeout, { ok: false, code: 'ERR_TIMEOUT', longOk: false, longCode: 'ERR_ABORTED' })
  inTime(c.queuedTimeout.elapsed, 200, 'a 200 ms timeout queued behind a 5 s one')
  t.true(c.queuedTimeout.abortLatency < 500, `the abort took ${c.queuedTimeout.abortLatency} ms to reject`)

  t.like(c.abort, { ok: false, code: 'ERR_ABORTED', held: 0, available: 0 })
  inTime(c.abort.elapsed, 100, 'an acquire aborted after 100 ms')
  t.deepEqual(c.afterRelease, { availableAtOnce: 1, available: 1, held: 0 }, 'once the holder releases, the aborted acquire has not taken the permit')
  t.deepEqual(c.order, { order: [1, 2, 3, 4], held: 0, available: 1 }, 'acquires of one process are served in call order')
  t.deepEqual(c.mismatch, { permits: 'ERR_MISMATCH', map: 'ERR_MISMATCH', region: 'ERR_MISMATCH' }, 'another process opening the name with other parameters or as another kind')

  t.deepEqual(c.preAborted, { settledAtOnce: 'ERR_ABORTED', code: 'ERR_ABORTED', lockCode: 'ERR_ABORTED', fnRan: false, available: 1, held: 0 }, 'an already-aborted signal rejects at once, even when a permit is free')
  t.deepEqual(c.freeAfter, { tryAcquire: true, available: 1, held: 0 })

  t.deepEqual(c.race.wrong, [], 'aborts racing grants: every acquire was granted or rejected with ERR_ABORTED, and left nothing held')
  t.is(c.race.granted + c.race.aborted, 400)
  t.true(c.race.aborted > 0 && c.race.granted > 0, `both outcomes happened (granted ${c.race.granted}, aborted ${c.race.aborted})`)
  t.is(c.race.held, 0)
  t.is(c.race.available, 1, 'the raced semaphore is free at the end')
  t.deepEqual(primary, { raceAvailable: 1, raceHeld: 0, mutexHeld: 1 })

  t.like(c.closed, { primaryHolds: true, code: 'ERR_CLOSED', lockCode: 'ERR_CLOSED' })
  t.true(c.closed.elapsed < 500, `queued acquires rejected ${c.closed.elapsed} ms after close()`)
})

test.serial('map from 4 workers at once (seeded random operations): owned keys match each worker\'s model, shared counters sum exactly, no torn value', async (t) => {
  t.timeout(50_000)
  const seed = Number(process.env.SYNC_MAP_SEED) || 1 + Math.floor(Math.random() * 1e9)
  t.log(`seed ${seed} (rerun with SYNC_MAP_SEED=${seed})`)
  const r = await runClean(t, 'sync-map.js', [seed, 30_000], { timeout: 45_000 })
  const res = result(t, r)
  t.is(res.seed, seed)
  t.deepEqual(res.workerProblems, [], `seed ${seed}: ${res.workerProblemCount} problems seen by the workers`)
  t.is(res.workerProblemCount, 0)
  t.deepEqual(res.problems, [], `seed ${seed}: owned keys read by the primary`)
  for (const c of [...res.counters, ...res.casCounters]) t.is(c.actual, c.expected, `seed ${seed}: ${c.key}`)
  t.true(res.counters.every((c) => c.expected > 0) && res.casCounters.every((c) => c.expected > 0))
  t.deepEqual(res.missing, [], 'keys that should be in the map')
  t.deepEqual(res.extra, [], 'keys that should not be in the map')
  t.is(res.duplicateKeys, 0)
  t.is(res.size, res.keyCount, 'size === keys().length')
  // The workers' runs overlapped (they started together).
  const latestStart = Math.max(...res.spans.map((s) => s[0]))
  const earliestEnd = Math.min(...res.spans.map((s) => s[1]))
  t.true(latestStart < earliestEnd, 'the 4 workers ran at the same time')
})

test.serial('map: a writer SIGKILLed mid-set, not reaped yet; its parent (the primary) reads at once: no hang, no torn value, the map stays usable', async (t) => {
  t.timeout(40_000)
  const ROUNDS = 8
  const r = await runCluster('sync-map-crash.js', [ROUNDS], { timeout: 30_000, t })
  const rounds = r.events('round')
  const reads = r.events('read')
  // A primary stuck in map.get() never prints its read (and is killed by the harness's timeout).
  t.is(reads.length, ROUNDS, `the primary hung in map.get() after killing the writer of round ${rounds.length - 1} (its state: ${rounds.at(-1)?.state})`)
  assertCleanExit(t, r)
  noErrors(t, r)
  t.true(rounds.every((m) => m.state === 'Z'), `the killed writer was a zombie at the read: ${rounds.map((m) => m.state)}`)
  for (const m of reads) {
    t.true(m.ms < 1000, `round ${m.i}: map.get() took ${m.ms} ms`)
    t.not(m.value, 'torn', `round ${m.i}: a torn value was returned`)
    t.true(m.setOk, `round ${m.i}: set() after the crash`)
  }
  t.log(`reads: ${reads.map((m) => m.value).join(', ')} (absent: the kill tore a write, which was dropped)`)
  t.is(r.events('result').length, 1)
})

// ------------------------------------------------------------------------------------------------
// Error codes, in this process

const buses = new Set()
/** A primary bus of this process plus a second bus attached to its segment by name. */
function cluster(t, options = { workers: 2 }) {
  const bus = lib.masterInit(options)
  const other = lib.workerInit({ name: bus.name })
  buses.add(bus)
  t.teardown(() => {
    other.close()
    bus.close()
    buses.delete(bus)
  })
  return [bus, other]
}
test.after.always(() => {
  for (const bus of buses) bus.close()
  for (const f of segmentsOf(process.pid)) fs.rmSync(path.join(SHM_DIR, f), { force: true })
})

const code = (code) => ({ code })
const BAD_INTS = [null, '4', 1.5, -1, NaN, Infinity, -Infinity, {}, true, 4n, [4]]
const BAD_KEYS = [1, null, undefined, {}, Symbol('k'), ['a'], Buffer.from('a'), true]

test.serial('map: ERR_MAP_FULL at capacity (deleted keys free their slot), ERR_PAYLOAD_TOO_LARGE for keys and values in bytes, ERR_NOT_A_NUMBER', (t) => {
  const [bus, other] = cluster(t)
  const map = bus.map('full', { capacity: 4, maxKeyBytes: 8, maxValueBytes: 16 })
  for (const k of ['a', 'b', 'c', 'd']) map.set(k, 1)
  t.is(map.size, 4)
  t.throws(() => map.set('e', 1), code('ERR_MAP_FULL'))
  t.throws(() => map.increment('e'), code('ERR_MAP_FULL'))
  t.throws(() => map.compareAndSet('e', undefined, 1), code('ERR_MAP_FULL'))
  t.throws(() => other.map('full', { capacity: 4, maxKeyBytes: 8, maxValueBytes: 16 }).set('e', 1), code('ERR_MAP_FULL'))
  t.false(map.has('e'))
  t.is(map.size, 4)
  // Keys already in the map can still change.
  map.set('a', 'x')
  t.is(map.increment('b', 2), 3)
  t.true(map.compareAndSet('c', 1, 5))
  t.true(map.delete('d'))
  map.set('e', 'in')
  t.is(map.get('e'), 'in')
  t.throws(() => map.set('f', 1), code('ERR_MAP_FULL'))
  // Deleted slots are reused: 1000 distinct keys come and go through the one free slot.
  t.true(map.delete('e'))
  for (let i = 0; i < 1000; i++) {
    map.set(`t${i}`, i)
    t.is(map.get(`t${i}`), i)
    if (!map.delete(`t${i}`)) t.fail(`t${i} vanished`)
  }
  t.is(map.size, 3)
  t.deepEqual(map.keys().sort(), ['a', 'b', 'c'])

  const sized = bus.map('sized', { capacity: 16, maxKeyBytes: 8, maxValueBytes: 16 })
  sized.set('12345678', 1) // 8 bytes: fits
  t.throws(() => sized.set('123456789', 1), code('ERR_PAYLOAD_TOO_LARGE'))
  t.throws(() => sized.set('€€€', 1), code('ERR_PAYLOAD_TOO_LARGE'), '3 characters, 9 bytes of UTF-8')
  t.throws(() => sized.increment('123456789'), code('ERR_PAYLOAD_TOO_LARGE'))
  t.throws(() => sized.compareAndSet('123456789', undefined, 1), code('ERR_PAYLOAD_TOO_LARGE'))
  sized.set('v', 'x'.repeat(16)) // 16 bytes: fits
  t.is(sized.get('v'), 'x'.repeat(16))
  t.throws(() => sized.set('v', 'x'.repeat(17)), code('ERR_PAYLOAD_TOO_LARGE'))
  t.throws(() => sized.set('v', '€'.repeat(6)), code('ERR_PAYLOAD_TOO_LARGE'), '6 characters, 18 bytes')
  t.throws(() => sized.set('v', Buffer.alloc(17)), code('ERR_PAYLOAD_TOO_LARGE'))
  t.throws(() => sized.set('v', { a: 'a long enough string' }), code('ERR_PAYLOAD_TOO_LARGE'))
  t.throws(() => sized.compareAndSet('v', 'x'.repeat(16), 'y'.repeat(17)), code('ERR_PAYLOAD_TOO_LARGE'))
  t.is(sized.get('v'), 'x'.repeat(16), 'a refused write leaves the old value')
  sized.set('b', Buffer.alloc(16, 7))
  t.deepEqual(sized.get('b'), Buffer.alloc(16, 7))
  t.is(sized.size, 3)

  for (const v of ['str', '5', Buffer.from([1]), { n: 1 }, [1], true, null]) {
    sized.set('nan', v)
    t.throws(() => sized.increment('nan'), code('ERR_NOT_A_NUMBER'), `increment on ${typeof v} ${String(v)}`)
    t.deepEqual(sized.get('nan'), v, 'unchanged')
  }
  sized.set('num', 1.5)
  t.is(sized.increment('num', -0.25), 1.25)
  t.is(other.map('sized', { capacity: 16, maxKeyBytes: 8, maxValueBytes: 16 }).increment('num'), 2.25, 'the other bus sees the same map')
})

test.serial('semaphore: ERR_NOT_HELD for a release without a permit; permit.release() is idempotent; a bus closed holding a permit loses it, recovered', async (t) => {
  const [bus, other] = cluster(t)
  const sem = bus.semaphore('s', { permits: 2 })
  const sem2 = other.semaphore('s', { permits: 2 })
  t.throws(() => sem.release(), code('ERR_NOT_HELD'))
  const permit = await sem.acquire()
  t.false(permit.recovered)
  t.is(sem.held, 1)
  t.is(sem.available, 1)
  permit.release()
  permit.release()
  t.is(sem.held, 0)
  t.is(sem.available, 2, 'a second permit.release() gave nothing back twice')
  t.throws(() => sem.release(), code('ERR_NOT_HELD'))
  // A permit of the other bus is not this one's to release.
  t.true(sem2.tryAcquire())
  t.throws(() => sem.release(), code('ERR_NOT_HELD'))
  t.is(sem2.held, 1)
  t.is(sem.available, 1)
  t.true(sem.tryAcquire())
  t.false(sem.tryAcquire(), 'both permits are taken')
  t.false(sem2.tryAcquire())
  // The other bus closes holding its permit: it comes back, marked recovered.
  other.close()
  const back = await sem.acquire({ timeout: 1000 })
  t.true(back.recovered)
  t.is(sem.held, 2)
  back.release()
  sem.release()
  t.throws(() => sem.release(), code('ERR_NOT_HELD'))
  t.is(sem.available, 2)
})

test.serial('lock: returns what fn returns; releases when fn throws or rejects; the error reaches the caller', async (t) => {
  const [bus] = cluster(t)
  const sem = bus.semaphore('L')
  t.is(await bus.lock('L', () => 42), 42)
  t.is(await bus.lock('L', async (permit) => (permit.recovered ? 'recovered' : 'clean')), 'clean')
  await t.throwsAsync(bus.lock('L', () => {
    throw new Error('sync boom')
  }), { message: 'sync boom' })
  t.is(sem.available, 1)
  await t.throwsAsync(bus.lock('L', async () => {
    await null
    throw new Error('async boom')
  }), { message: 'async boom' })
  t.is(sem.available, 1)
  t.is(sem.held, 0)
  // Non-reentrant: a lock taken inside the same lock waits (here: times out).
  await t.throwsAsync(bus.lock('L', () => bus.lock('L', () => 1, { timeout: 50 })), code('ERR_TIMEOUT'))
  t.is(sem.available, 1)
})

test.serial('ERR_MISMATCH: the same name with other parameters, or as another kind, from this bus and from another one', async (t) => {
  const [bus, other] = cluster(t)
  bus.semaphore('s', { permits: 2 })
  t.throws(() => bus.semaphore('s', { permits: 3 }), code('ERR_MISMATCH'))
  t.throws(() => bus.semaphore('s'), code('ERR_MISMATCH'), 'default permits (1)')
  t.throws(() => other.semaphore('s', { permits: 3 }), code('ERR_MISMATCH'))
  await t.throwsAsync(bus.lock('s', () => t.fail('ran')), code('ERR_MISMATCH'), 'lock() on a semaphore of 2 permits')
  await t.throwsAsync(other.lock('s', () => t.fail('ran')), code('ERR_MISMATCH'))
  t.is(other.semaphore('s', { permits: 2 }).permits, 2, 'the right parameters still open it')

  const opts = { capacity: 8, maxKeyBytes: 16, maxValueBytes: 32 }
  bus.map('m', opts)
  for (const changed of [{ capacity: 9 }, { maxKeyBytes: 17 }, { maxValueBytes: 33 }, {}]) {
    const o = Object.keys(changed).length ? { ...opts, ...changed } : undefined // {}: the defaults
    t.throws(() => bus.map('m', o), code('ERR_MISMATCH'), JSON.stringify(o))
    t.throws(() => other.map('m', o), code('ERR_MISMATCH'), JSON.stringify(o))
  }
  other.map('m', opts).set('k', 1)
  t.is(bus.map('m', opts).get('k'), 1)

  bus.region('r', 16)
  t.throws(() => bus.region('r', 32), code('ERR_MISMATCH'))
  t.throws(() => other.region('r', 8), code('ERR_MISMATCH'))

  // Across kinds, both ways.
  for (const b of [bus, other]) {
    t.throws(() => b.map('s'), code('ERR_MISMATCH'))
    t.throws(() => b.region('s', 8), code('ERR_MISMATCH'))
    t.throws(() => b.semaphore('m'), code('ERR_MISMATCH'))
    t.throws(() => b.region('m', 8), code('ERR_MISMATCH'))
    t.throws(() => b.semaphore('r'), code('ERR_MISMATCH'))
    t.throws(() => b.map('r'), code('ERR_MISMATCH'))
    await t.throwsAsync(b.lock('m', () => t.fail('ran')), code('ERR_MISMATCH'))
  }
})

test.serial('region: ERR_OUT_OF_BOUNDS outside it, nothing written by a refused write; zeroed at creation; shared by both buses', (t) => {
  const [bus, other] = cluster(t)
  const region = bus.region('r', 16)
  t.is(region.size, 16)
  t.deepEqual(region.read(0, 16), Buffer.alloc(16))
  region.write(0, Buffer.alloc(16, 0xaa))
  t.throws(() => region.write(10, Buffer.alloc(8, 0xbb)), code('ERR_OUT_OF_BOUNDS'))
  t.throws(() => region.write(17, Buffer.alloc(0)), code('ERR_OUT_OF_BOUNDS'))
  t.throws(() => region.write(2 ** 53 - 1, Buffer.alloc(1)), code('ERR_OUT_OF_BOUNDS'))
  t.throws(() => region.read(16, 1), code('ERR_OUT_OF_BOUNDS'))
  t.throws(() => region.read(0, 17), code('ERR_OUT_OF_BOUNDS'))
  t.throws(() => region.read(2 ** 53 - 1, 2), code('ERR_OUT_OF_BOUNDS'))
  t.deepEqual(region.read(0, 16), Buffer.alloc(16, 0xaa), 'the refused write wrote nothing')
  region.write(16, Buffer.alloc(0))
  t.deepEqual(region.read(16, 0), Buffer.alloc(0))
  region.write(14, new Uint8Array([1, 2]))
  const seen = other.region('r', 16).read(12, 4)
  t.deepEqual(seen, Buffer.from([0xaa, 0xaa, 1, 2]))
  seen[0] = 0 // a copy, not a view
  t.is(region.read(12, 1)[0], 0xaa)
})

test.serial('ERR_INVALID_ARG for bad input to every method (wrong types, NaN, negative, fractional, out of range)', async (t) => {
  const [bus] = cluster(t)
  const sem = bus.semaphore('sem', { permits: 2 })
  const region = bus.region('region', 16)
  const map = bus.map('map', { capacity: 8 })
  map.set('keep', 1)
  const invalid = (f, what) => t.throws(f, code('ERR_INVALID_ARG'), what)
  /** Must return a promise that rejects with ERR_INVALID_ARG, not throw. */
  const rejects = async (f, what) => {
    let p
    try {
      p = f()
    } catch (err) {
      return t.fail(`${what}: threw ${err.code} instead of returning a rejected promise`)
    }
    t.true(p instanceof Promise, `${what}: returns a promise`)
    await t.throwsAsync(p, code('ERR_INVALID_ARG'), what)
  }
  const fmt = (v) => (typeof v === 'symbol' ? 'Symbol' : typeof v === 'bigint' ? `${v}n` : JSON.stringify(v) ?? String(v))
  const BAD_NAMES = ['', 5, null, undefined, {}, 'x'.repeat(129), '€'.repeat(43)]

  for (const name of BAD_NAMES) {
    invalid(() => bus.semaphore(name), `semaphore name ${fmt(name)}`)
    invalid(() => bus.region(name, 8), `region name ${fmt(name)}`)
    invalid(() => bus.map(name), `map name ${fmt(name)}`)
    await rejects(() => bus.lock(name, () => t.fail('ran')), `lock name ${fmt(name)}`)
  }
  for (const options of [null, 5, 'x']) {
    invalid(() => bus.semaphore('s1', options), `semaphore options ${fmt(options)}`)
    invalid(() => bus.map('m1', options), `map options ${fmt(options)}`)
    await rejects(() => sem.acquire(options), `acquire options ${fmt(options)}`)
    await rejects(() => bus.lock('l1', () => t.fail('ran'), options), `lock options ${fmt(options)}`)
  }
  for (const v of [...BAD_INTS, 0, 4097]) invalid(() => bus.semaphore('s2', { permits: v }), `permits ${fmt(v)}`)
  for (const v of [...BAD_INTS, 0, undefined, 4 * 2 ** 20 + 1]) invalid(() => bus.region('r2', v), `region size ${fmt(v)}`)
  for (const [opt, extra] of [['capacity', [0, 2 ** 24 + 1]], ['maxKeyBytes', [0, 1025]], ['maxValueBytes', [7, 2 ** 20 + 1]]]) {
    for (const v of [...BAD_INTS, ...extra]) invalid(() => bus.map('m2', { [opt]: v }), `map ${opt} ${fmt(v)}`)
  }
  for (const fn of [undefined, null, 'fn', {}]) await rejects(() => bus.lock('l2', fn), `lock fn ${fmt(fn)}`)
  for (const v of [...BAD_INTS, 2 ** 31]) {
    await rejects(() => sem.acquire({ timeout: v }), `acquire timeout ${fmt(v)}`)
    await rejects(() => bus.lock('l3', () => t.fail('ran'), { timeout: v }), `lock timeout ${fmt(v)}`)
  }
  for (const v of [{}, 'signal', 1, null, new AbortController()]) {
    await rejects(() => sem.acquire({ signal: v }), `acquire signal ${fmt(v)}`)
    await rejects(() => bus.lock('l4', () => t.fail('ran'), { signal: v }), `lock signal ${fmt(v)}`)
  }
  t.is(sem.available, 2, 'no refused acquire took a permit')
  t.is(sem.held, 0)
  t.is(bus.semaphore('l3').available, 1, 'no refused lock() took its mutex')

  for (const v of BAD_INTS) {
    invalid(() => region.write(v, Buffer.alloc(1)), `region.write offset ${fmt(v)}`)
    invalid(() => region.read(v, 1), `region.read offset ${fmt(v)}`)
    invalid(() => region.read(0, v), `region.read length ${fmt(v)}`)
  }
  for (const v of ['bytes', [1, 2], 5, null, undefined, new Float64Array(1), new Uint16Array(1), new DataView(new ArrayBuffer(2)), new ArrayBuffer(2)]) {
    invalid(() => region.write(0, v), `region.write bytes ${Object.prototype.toString.call(v)}`)
  }
  t.deepEqual(region.read(0, 16), Buffer.alloc(16), 'no refused write wrote anything')

  for (const key of BAD_KEYS) {
    const k = fmt(key)
    invalid(() => map.get(key), `get(${k})`)
    invalid(() => map.has(key), `has(${k})`)
    invalid(() => map.set(key, 1), `set(${k})`)
    invalid(() => map.delete(key), `delete(${k})`)
    invalid(() => map.increment(key), `increment(${k})`)
    invalid(() => map.compareAndSet(key, undefined, 1), `compareAndSet(${k})`)
  }
  for (const by of [NaN, '1', null, {}, true, 1n, [1]]) invalid(() => map.increment('keep', by), `increment by ${fmt(by)}`)
  t.throws(() => map.set('f', () => 1), code('ERR_UNSERIALIZABLE'))
  t.throws(() => map.set('f', Symbol('v')), code('ERR_UNSERIALIZABLE'))
  t.throws(() => map.compareAndSet('keep', 1, () => 1), code('ERR_UNSERIALIZABLE'))
  t.deepEqual(map.keys(), ['keep'], 'no refused operation changed the map')
  t.is(map.get('keep'), 1)

  const before = segmentsOf(process.pid).length
  for (const v of [...BAD_INTS.filter((x) => x !== null), 1000, 4097]) {
    // (null means the default, like undefined)
    t.throws(() => lib.masterInit({ workers: 1, heapSize: v }).close(), code('ERR_INVALID_ARG'), `heapSize ${fmt(v)}`)
  }
  t.is(segmentsOf(process.pid).length, before, 'no segment was created by a refused masterInit')
})

test.serial('ERR_CLOSED from every method after bus.close(), for objects opened before it too', async (t) => {
  const [bus, other] = cluster(t)
  const sem = bus.semaphore('sem')
  const region = bus.region('region', 16)
  const map = bus.map('map')
  map.set('k', 1)
  const otherSem = other.semaphore('held')
  t.true(otherSem.tryAcquire())
  const pending = bus.semaphore('held').acquire({ timeout: 10_000 })
  const pendingLock = bus.lock('held', () => t.fail('ran'), { timeout: 10_000 })
  bus.close()
  await t.throwsAsync(pending, code('ERR_CLOSED'), 'a queued acquire')
  await t.throwsAsync(pendingLock, code('ERR_CLOSED'), 'a queued lock()')
  const closed = (f, what) => t.throws(f, code('ERR_CLOSED'), what)
  closed(() => bus.semaphore('sem'), 'bus.semaphore (opened before)')
  closed(() => bus.semaphore('new'), 'bus.semaphore (new)')
  closed(() => bus.region('region', 16), 'bus.region')
  closed(() => bus.map('map'), 'bus.map')
  await t.throwsAsync(bus.lock('sem', () => t.fail('ran')), code('ERR_CLOSED'), 'bus.lock')
  closed(() => sem.tryAcquire(), 'sem.tryAcquire')
  closed(() => sem.release(), 'sem.release')
  await t.throwsAsync(sem.acquire(), code('ERR_CLOSED'), 'sem.acquire')
  await t.throwsAsync(sem.acquire({ timeout: 10 }), code('ERR_CLOSED'), 'sem.acquire with a timeout')
  closed(() => region.read(0, 1), 'region.read')
  closed(() => region.write(0, Buffer.alloc(1)), 'region.write')
  closed(() => map.get('k'), 'map.get')
  closed(() => map.has('k'), 'map.has')
  closed(() => map.set('k', 2), 'map.set')
  closed(() => map.delete('k'), 'map.delete')
  closed(() => map.increment('k'), 'map.increment')
  closed(() => map.compareAndSet('k', 1, 2), 'map.compareAndSet')
  closed(() => map.keys(), 'map.keys')
  t.true(bus.closed)
})

test.serial('ERR_NO_SPACE when the heap (masterInit heapSize) or the name table is full; a refused name stays free', (t) => {
  const [bus] = cluster(t, { workers: 1, heapSize: 65536 })
  t.throws(() => bus.map('big', { capacity: 10_000 }), code('ERR_NO_SPACE'))
  t.throws(() => bus.region('huge', 65537), code('ERR_INVALID_ARG'), 'a region larger than the heap')
  const small = bus.map('small', { capacity: 4 })
  small.set('a', 1)
  t.is(bus.semaphore('wide', { permits: 4096 }).available, 4096) // 32 KiB
  t.throws(() => bus.semaphore('wide2', { permits: 4096 }), code('ERR_NO_SPACE'))
  t.throws(() => bus.region('rest', 40_000), code('ERR_NO_SPACE'))
  t.is(bus.map('big', { capacity: 4 }).capacity, 4, 'the name of a refused object was not taken')
  t.is(small.get('a'), 1)

  const [roomy] = cluster(t, { workers: 1, heapSize: 1 << 20 })
  for (let i = 0; i < 256; i++) roomy.region(`r${i}`, 1)
  t.throws(() => roomy.region('one-too-many', 1), code('ERR_NO_SPACE'))
  t.throws(() => roomy.map('one-too-many'), code('ERR_NO_SPACE'))

  const [none] = cluster(t, { workers: 1, heapSize: 0 })
  t.throws(() => none.semaphore('s'), code('ERR_NO_SPACE'))
})
