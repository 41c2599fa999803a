'use strict'
// Bad inputs for every public function, with the error code each must produce. Runs in the ava
// process itself (masterInit + workerInit({ name }) in one process; every bus is closed at the
// end and no segment of this process may be left in /dev/shm), plus child processes where the
// environment matters.

const { execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const test = require('ava')

const lib = require('..')
const { childEnv, segmentsOf, SHM_DIR } = require('./helpers/harness')

const { masterInit, workerInit, PRIMARY, ClusterShmError } = lib

const opened = []
const track = (bus) => (opened.push(bus), bus)

/** A cluster of `workers` in this process: the primary and `attach` workers at indices 0.. */
function makeCluster({ workers = 2, ringSize = 4096, attach = 2 } = {}) {
  const m = track(masterInit({ workers, ringSize }))
  const w = []
  for (let i = 0; i < attach; i++) w.push(track(workerInit({ name: m.name })))
  return { m, w, name: m.name }
}

// Shared cluster for the table: 2 workers, both indices held (w[0] = 0, w[1] = 1).
const shared = makeCluster()
const ctx = { m: shared.m, w0: shared.w[0], w1: shared.w[1], name: shared.name, maxWrite: shared.w[0].maxWrite }

// Files in /dev/shm that are not cluster-shm segments (removed at the end).
const junk = []
function junkSegment(bytes, mode = 0o600) {
  const name = `/cshmtest_${crypto.randomBytes(6).toString('hex')}`
  fs.writeFileSync(path.join(SHM_DIR, name.slice(1)), bytes, { mode })
  fs.chmodSync(path.join(SHM_DIR, name.slice(1)), mode)
  junk.push(name)
  return name
}
const zeros = junkSegment(Buffer.alloc(64 << 10))
const tiny = junkSegment(Buffer.alloc(16))

test.after.always('every bus closed, nothing left in /dev/shm', () => {
  for (const b of opened) b.close()
  for (const name of junk) fs.rmSync(path.join(SHM_DIR, name.slice(1)), { force: true })
})

/** Runs `call`; reports how it ended: threw, returned, rejected or resolved. */
async function outcome(call) {
  let ret
  try {
    ret = call()
  } catch (err) {
    return { how: 'throw', err }
  }
  if (ret instanceof lib.Bus) track(ret) // should not have succeeded: close it at the end
  if (ret && typeof ret.then === 'function') {
    try {
      return { how: 'resolve', value: await ret }
    } catch (err) {
      return { how: 'reject', err }
    }
  }
  return { how: 'return', value: ret }
}

const big = (n) => Buffer.alloc(n, 1)
const fn = () => {}

// [label, call(ctx), expected code, async (the function returns a promise that must reject)]
const TABLE = [
  // masterInit
  ['masterInit(null)', () => masterInit(null), 'ERR_INVALID_ARG'],
  ['masterInit("4")', () => masterInit('4'), 'ERR_INVALID_ARG'],
  ['masterInit(4)', () => masterInit(4), 'ERR_INVALID_ARG'],
  ['masterInit({ workers: 0 })', () => masterInit({ workers: 0 }), 'ERR_INVALID_ARG'],
  ['masterInit({ workers: -1 })', () => masterInit({ workers: -1 }), 'ERR_INVALID_ARG'],
  ['masterInit({ workers: 1.5 })', () => masterInit({ workers: 1.5 }), 'ERR_INVALID_ARG'],
  ['masterInit({ workers: NaN })', () => masterInit({ workers: NaN }), 'ERR_INVALID_ARG'],
  ['masterInit({ workers: Infinity })', () => masterInit({ workers: Infinity }), 'ERR_INVALID_ARG'],
  ['masterInit({ workers: "2" })', () => masterInit({ workers: '2' }), 'ERR_INVALID_ARG'],
  ['masterInit({ workers: 257 })', () => masterInit({ workers: 257 }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: 5000 }) (not a power of two)', () => masterInit({ workers: 2, ringSize: 5000 }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: 12288 }) (not a power of two)', () => masterInit({ workers: 2, ringSize: 3 * 4096 }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: 2048 }) (below 4096)', () => masterInit({ workers: 2, ringSize: 2048 }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: 0 })', () => masterInit({ workers: 2, ringSize: 0 }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: -4096 })', () => masterInit({ workers: 2, ringSize: -4096 }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: 4096.5 })', () => masterInit({ workers: 2, ringSize: 4096.5 }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: NaN })', () => masterInit({ workers: 2, ringSize: NaN }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: "4096" })', () => masterInit({ workers: 2, ringSize: '4096' }), 'ERR_INVALID_ARG'],
  ['masterInit({ ringSize: 2 ** 31 })', () => masterInit({ workers: 2, ringSize: 2 ** 31 }), 'ERR_INVALID_ARG'],
  ['masterInit({ spinMicros: -1 })', () => masterInit({ workers: 2, spinMicros: -1 }), 'ERR_INVALID_ARG'],
  ['masterInit({ spinMicros: 0.5 })', () => masterInit({ workers: 2, spinMicros: 0.5 }), 'ERR_INVALID_ARG'],
  ['masterInit({ spinMicros: "1" })', () => masterInit({ workers: 2, spinMicros: '1' }), 'ERR_INVALID_ARG'],
  // workerInit
  ['workerInit(null)', () => workerInit(null), 'ERR_INVALID_ARG'],
  ['workerInit("name")', (c) => workerInit(c.name), 'ERR_INVALID_ARG'],
  ['workerInit({ name: 42 })', () => workerInit({ name: 42 }), 'ERR_INVALID_ARG'],
  ['workerInit({ name: {} })', () => workerInit({ name: {} }), 'ERR_INVALID_ARG'],
  ['workerInit({ index: -1 })', (c) => workerInit({ name: c.name, index: -1 }), 'ERR_INVALID_ARG'],
  ['workerInit({ index: 0.5 })', (c) => workerInit({ name: c.name, index: 0.5 }), 'ERR_INVALID_ARG'],
  ['workerInit({ index: NaN })', (c) => workerInit({ name: c.name, index: NaN }), 'ERR_INVALID_ARG'],
  ['workerInit({ index: "0" })', (c) => workerInit({ name: c.name, index: '0' }), 'ERR_INVALID_ARG'],
  ['workerInit({ index: Infinity })', (c) => workerInit({ name: c.name, index: Infinity }), 'ERR_INVALID_ARG'],
  ['workerInit({ spinMicros: -1 })', (c) => workerInit({ name: c.name, spinMicros: -1 }), 'ERR_INVALID_ARG'],
  ['workerInit({ index: workers })', (c) => workerInit({ name: c.name, index: 2 }), 'ERR_INDEX_OUT_OF_RANGE'],
  ['workerInit({ index: 255 })', (c) => workerInit({ name: c.name, index: 255 }), 'ERR_INDEX_OUT_OF_RANGE'],
  ['workerInit({ index: 0 }) held by a live process', (c) => workerInit({ name: c.name, index: 0 }), 'ERR_INDEX_TAKEN'],
  ['workerInit({ index: 1 }) held by a live process', (c) => workerInit({ name: c.name, index: 1 }), 'ERR_INDEX_TAKEN'],
  ['workerInit() with every index held', (c) => workerInit({ name: c.name }), 'ERR_NO_FREE_INDEX'],
  ['workerInit({ name: "bogus" }) (no leading slash)', () => workerInit({ name: 'bogus' }), 'ERR_INVALID_ARG'],
  ['workerInit({ name: "/a/b" })', () => workerInit({ name: '/a/b' }), 'ERR_INVALID_ARG'],
  ['workerInit({ name: "/with space" })', () => workerInit({ name: '/with space' }), 'ERR_INVALID_ARG'],
  ['workerInit({ name: 40-byte name })', () => workerInit({ name: '/' + 'x'.repeat(40) }), 'ERR_INVALID_ARG'],
  ['workerInit({ name: missing segment })', () => workerInit({ name: '/cshm_0_nonexistent' }), 'ERR_SEGMENT_NOT_FOUND'],
  ['workerInit({ name: a file of zeros })', () => workerInit({ name: zeros }), 'ERR_BAD_SEGMENT'],
  ['workerInit({ name: a 16-byte file })', () => workerInit({ name: tiny }), 'ERR_BAD_SEGMENT'],
  // write
  ['write(workers, ..)', (c) => c.w0.write(2, 'x'), 'ERR_INDEX_OUT_OF_RANGE'],
  ['write(-2, ..)', (c) => c.w0.write(-2, 'x'), 'ERR_INDEX_OUT_OF_RANGE'],
  ['write(1000, ..)', (c) => c.w0.write(1000, 'x'), 'ERR_INDEX_OUT_OF_RANGE'],
  ['write(0.5, ..)', (c) => c.w0.write(0.5, 'x'), 'ERR_INVALID_ARG'],
  ['write(NaN, ..)', (c) => c.w0.write(NaN, 'x'), 'ERR_INVALID_ARG'],
  ['write(Infinity, ..)', (c) => c.w0.write(Infinity, 'x'), 'ERR_INVALID_ARG'],
  ['write("1", ..)', (c) => c.w0.write('1', 'x'), 'ERR_INVALID_ARG'],
  ['write(undefined, ..)', (c) => c.w0.write(undefined, 'x'), 'ERR_INVALID_ARG'],
  ['write(null, ..)', (c) => c.w0.write(null, 'x'), 'ERR_INVALID_ARG'],
  ['write(Buffer of maxWrite + 1)', (c) => c.w0.write(1, big(c.maxWrite + 1)), 'ERR_PAYLOAD_TOO_LARGE'],
  ['write(Uint8Array of maxWrite + 1)', (c) => c.w0.write(PRIMARY, new Uint8Array(c.maxWrite + 1)), 'ERR_PAYLOAD_TOO_LARGE'],
  ['write(string of maxWrite + 1 ASCII chars)', (c) => c.w0.write(1, 'a'.repeat(c.maxWrite + 1)), 'ERR_PAYLOAD_TOO_LARGE'],
  ['write(string of maxWrite + 2 UTF-8 bytes, fewer chars)', (c) => c.w0.write(1, 'é'.repeat(c.maxWrite / 2 + 1)), 'ERR_PAYLOAD_TOO_LARGE'],
  ['write(object serialized above maxWrite)', (c) => c.w0.write(1, { s: 'a'.repeat(c.maxWrite) }), 'ERR_PAYLOAD_TOO_LARGE'],
  ['write(a function)', (c) => c.w0.write(1, fn), 'ERR_UNSERIALIZABLE'],
  ['write(a Symbol)', (c) => c.w0.write(1, Symbol('s')), 'ERR_UNSERIALIZABLE'],
  ['write(an object with a method)', (c) => c.w0.write(1, { f() {} }), 'ERR_UNSERIALIZABLE'],
  ['write(an object holding a Symbol)', (c) => c.w0.write(PRIMARY, { s: Symbol('s') }), 'ERR_UNSERIALIZABLE'],
  ['write(a WeakMap)', (c) => c.w0.write(1, new WeakMap()), 'ERR_UNSERIALIZABLE'],
  // send
  ['send(workers, ..)', (c) => c.w0.send(2, 'x'), 'ERR_INDEX_OUT_OF_RANGE', true],
  ['send(-2, ..)', (c) => c.w0.send(-2, 'x'), 'ERR_INDEX_OUT_OF_RANGE', true],
  ['send(0.5, ..)', (c) => c.w0.send(0.5, 'x'), 'ERR_INVALID_ARG', true],
  ['send(NaN, ..)', (c) => c.w0.send(NaN, 'x'), 'ERR_INVALID_ARG', true],
  ['send("1", ..)', (c) => c.w0.send('1', 'x'), 'ERR_INVALID_ARG', true],
  ['send(a function)', (c) => c.w0.send(1, fn), 'ERR_UNSERIALIZABLE', true],
  ['send(a Symbol)', (c) => c.w0.send(PRIMARY, Symbol('s')), 'ERR_UNSERIALIZABLE', true],
  ['send(.., null options)', (c) => c.w0.send(1, 'x', null), 'ERR_INVALID_ARG', true],
  ['send(.., "fast")', (c) => c.w0.send(1, 'x', 'fast'), 'ERR_INVALID_ARG', true],
  ['send(.., { timeout: -1 })', (c) => c.w0.send(1, 'x', { timeout: -1 }), 'ERR_INVALID_ARG', true],
  ['send(.., { timeout: 1.5 })', (c) => c.w0.send(1, 'x', { timeout: 1.5 }), 'ERR_INVALID_ARG', true],
  ['send(.., { timeout: NaN })', (c) => c.w0.send(1, 'x', { timeout: NaN }), 'ERR_INVALID_ARG', true],
  ['send(.., { timeout: "10" })', (c) => c.w0.send(1, 'x', { timeout: '10' }), 'ERR_INVALID_ARG', true],
  ['send(.., { timeout: 2 ** 31 })', (c) => c.w0.send(1, 'x', { timeout: 2 ** 31 }), 'ERR_INVALID_ARG', true],
  // broadcast
  ['broadcast(a function)', (c) => c.w0.broadcast(fn), 'ERR_UNSERIALIZABLE', true],
  ['broadcast(a Symbol)', (c) => c.w0.broadcast(Symbol('s')), 'ERR_UNSERIALIZABLE', true],
  ['broadcast(.., 7)', (c) => c.w0.broadcast('x', 7), 'ERR_INVALID_ARG', true],
  ['broadcast(.., { timeout: -1 })', (c) => c.w0.broadcast('x', { timeout: -1 }), 'ERR_INVALID_ARG', true],
  ['broadcast(.., { timeout: NaN })', (c) => c.w0.broadcast('x', { timeout: NaN }), 'ERR_INVALID_ARG', true],
  // subscribe
  ['subscribe()', (c) => c.w0.subscribe(), 'ERR_INVALID_ARG'],
  ['subscribe("cb")', (c) => c.w0.subscribe('cb'), 'ERR_INVALID_ARG'],
  ['subscribe({})', (c) => c.w0.subscribe({}), 'ERR_INVALID_ARG'],
]

// Serial, in this order, so that the test after the table sees the rings as the table left them.
for (const [label, call, code, async] of TABLE) {
  test.serial(`${label} -> ${code}`, async (t) => {
    const o = await outcome(() => call(ctx))
    t.is(o.how, async ? 'reject' : 'throw', async ? 'returns a promise that rejects' : 'throws synchronously')
    t.true(o.err instanceof Error, 'an Error')
    t.is(o.err && o.err.code, code, o.err ? o.err.message : 'no error')
  })
}

test.serial('failed calls wrote nothing and took no index', (t) => {
  t.is(ctx.m.read(), null, 'nothing arrived at the primary')
  t.is(ctx.w1.read(), null, 'nothing arrived at worker 1')
  t.is(ctx.w0.read(), null, 'nothing arrived at worker 0')
  t.deepEqual(ctx.m.peers(), [0, 1], 'only the two workers are attached')
  t.is(ctx.w0.queued, 0)
})

test.serial('every error of the table is a ClusterShmError', async (t) => {
  const offenders = []
  for (const [label, call] of TABLE) {
    const o = await outcome(() => call(ctx))
    if (!(o.err instanceof ClusterShmError)) offenders.push(`${label}: ${o.err && o.err.constructor.name} ${o.err && o.err.code}`)
  }
  t.deepEqual(offenders, [], 'errors that are not ClusterShmError instances')
})

test.serial('write() takes exactly maxWrite bytes (the bound of ERR_PAYLOAD_TOO_LARGE)', async (t) => {
  const { m, w } = makeCluster({ attach: 1 })
  const max = w[0].maxWrite
  t.true(max > 0 && max < 4096)
  t.true(w[0].write(PRIMARY, big(max)), 'a payload of exactly maxWrite bytes is written into an empty ring')
  const got = m.read()
  t.is(got.from, 0)
  t.true(got.data.equals(big(max)))
  // larger payloads go through send() (chunked); keep reading meanwhile: read() frees the ring
  // space of what it handed out at its next call
  const sent = w[0].send(PRIMARY, big(max + 1))
  let next
  for (let i = 0; i < 1000 && !(next = m.read()); i++) await new Promise((r) => setTimeout(r, 2))
  await sent
  t.true(next && next.data.equals(big(max + 1)))
  m.close()
  w[0].close()
})

test.serial('read() while subscribed -> ERR_SUBSCRIBED, and read() works again after unsubscribe', async (t) => {
  const { m, w } = makeCluster({ attach: 1 })
  const sub = m.subscribe(() => {})
  const e1 = t.throws(() => m.read())
  t.is(e1.code, 'ERR_SUBSCRIBED')
  sub.unsubscribe()
  t.is(m.read(), null)
  const listener = () => {}
  m.on('message', listener)
  const e2 = t.throws(() => m.read())
  t.is(e2.code, 'ERR_SUBSCRIBED', "bus.on('message') subscribes too")
  m.off('message', listener)
  t.true(w[0].write(PRIMARY, 'after'))
  let msg = null
  for (let i = 0; i < 1000 && !(msg = m.read()); i++) await new Promise((r) => setTimeout(r, 2))
  t.deepEqual(msg, { from: 0, data: 'after' })
  m.close()
  w[0].close()
})

test.serial('calls on a closed bus -> ERR_CLOSED', async (t) => {
  const { m, w } = makeCluster({ attach: 2 })
  const bus = w[0]
  let closeEvents = 0
  bus.on('close', () => closeEvents++)
  bus.close()
  t.true(bus.closed)
  t.notThrows(() => bus.close(), 'close() is idempotent')
  t.is(closeEvents, 1)
  const calls = [
    ['write', () => bus.write(1, 'x'), false],
    ['write to the primary', () => bus.write(PRIMARY, Buffer.from('x')), false],
    ['send', () => bus.send(1, 'x'), true],
    ['broadcast', () => bus.broadcast('x'), true],
    ['read', () => bus.read(), false],
    ['subscribe', () => bus.subscribe(() => {}), false],
  ]
  for (const [label, call, async] of calls) {
    const o = await outcome(call)
    t.is(o.how, async ? 'reject' : 'throw', label)
    t.is(o.err && o.err.code, 'ERR_CLOSED', label)
  }
  // the primary's bus too
  m.close()
  t.true(m.closed)
  t.is((await outcome(() => m.write(1, 'x'))).err?.code, 'ERR_CLOSED')
  t.is((await outcome(() => m.send(1, 'x'))).err?.code, 'ERR_CLOSED')
  w[1].close()
})

test.serial('a send() that finds no room within its timeout -> ERR_TIMEOUT, and nothing is written', async (t) => {
  const { m, w } = makeCluster({ attach: 1 })
  let n = 0
  while (n < 1000 && w[0].write(PRIMARY, big(100))) n++
  t.true(n > 0 && n < 1000, 'the ring filled up')
  const started = Date.now()
  const o = await outcome(() => w[0].send(PRIMARY, 'late', { timeout: 200 }))
  const took = Date.now() - started
  t.is(o.how, 'reject')
  t.is(o.err && o.err.code, 'ERR_TIMEOUT')
  t.true(took >= 150 && took < 3000, `rejected after ${took} ms`)
  t.is(w[0].queued, 0)
  const o0 = await outcome(() => w[0].send(PRIMARY, 'late', { timeout: 0 }))
  t.is(o0.err && o0.err.code, 'ERR_TIMEOUT', 'timeout 0 with a full ring')
  // what arrives: the n writes, not the timed-out sends
  const got = []
  for (let msg; (msg = m.read()); ) got.push(msg)
  t.is(got.length, n)
  t.true(got.every((g) => Buffer.isBuffer(g.data) && g.data.length === 100))
  t.is(m.read(), null)
  m.close()
  w[0].close()
})

test.serial('close() rejects the pending send()s with ERR_CLOSED', async (t) => {
  const { m, w } = makeCluster({ attach: 1 })
  while (w[0].write(PRIMARY, big(100)));
  const pending = [w[0].send(PRIMARY, 'a'), w[0].send(PRIMARY, big(10_000))]
  t.is(w[0].queued, 2)
  const started = Date.now()
  w[0].close()
  const outcomes = await Promise.all(pending.map((p) => outcome(() => p)))
  t.deepEqual(
    outcomes.map((o) => [o.how, o.err && o.err.code]),
    [
      ['reject', 'ERR_CLOSED'],
      ['reject', 'ERR_CLOSED'],
    ],
  )
  t.true(Date.now() - started < 1000, 'promptly')
  m.close()
})

test('workerInit() outside a cluster without a name -> ERR_NO_SEGMENT (in a fresh process)', (t) => {
  const script = `
    const { workerInit, ClusterShmError } = require(${JSON.stringify(path.join(__dirname, '..'))})
    try { workerInit(); console.log(JSON.stringify({ ok: true })) }
    catch (e) { console.log(JSON.stringify({ code: e.code, cls: e instanceof ClusterShmError })) }
    try { workerInit({}); console.log(JSON.stringify({ ok: true })) }
    catch (e) { console.log(JSON.stringify({ code: e.code, cls: e instanceof ClusterShmError })) }`
  const stdout = execFileSync(process.execPath, ['-e', script], { env: childEnv(), timeout: 20_000, encoding: 'utf8' })
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l))
  t.deepEqual(lines, [
    { code: 'ERR_NO_SEGMENT', cls: true },
    { code: 'ERR_NO_SEGMENT', cls: true },
  ])
})

test.after.always('no segment of this process is left in /dev/shm', (t) => {
  t.deepEqual(segmentsOf(process.pid), [])
})
