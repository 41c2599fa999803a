'use strict'
// join(): processes with no primary share one segment (child_process.fork children, independent
// node processes, this test process), the last one out removes it, a dead member is reaped by
// the others; and the errors of join().

const fs = require('node:fs')
const test = require('ava')

const { startCluster, sleep, SHM_DIR } = require('./helpers/harness')
const { join, cleanupJoined, PRIMARY } = require('..')

let apps = 0
const appName = (tag) => `join-spec-${tag}-${process.pid}-${apps++}`
const exists = (segment) => fs.existsSync(SHM_DIR + segment)

/** Checks the lines of `n` members that joined, greeted each other and left. */
function assertTalkedAndLeft(t, lines, n) {
  const joined = lines.filter((m) => m.event === 'joined')
  t.deepEqual(joined.map((m) => m.index).sort(), [...Array(n).keys()], 'each member took its own index')
  const done = lines.filter((m) => m.event === 'done')
  t.is(done.length, n)
  for (const d of done) {
    t.deepEqual(d.hellos, [...Array(n).keys()].filter((i) => i !== d.index), `member ${d.index} heard every other member`)
    t.is(d.joins, n, 'the shared counter counts every member')
  }
  const left = lines.filter((m) => m.event === 'left')
  t.is(left.length, n)
  t.deepEqual(lines.filter((m) => m.event === 'error'), [])
  return left[0].name
}

test('child_process.fork children (no cluster) join one segment, talk, leave, and the segment is removed', async (t) => {
  t.timeout(40_000)
  const run = await startCluster('join-fork.js', [], { env: { JOIN_APP: appName('fork'), JOIN_MEMBERS: '3' }, t, timeout: 30_000 }).done
  t.is(run.code, 0, run.stderr)
  t.deepEqual(run.events('child-exit').map((m) => m.code), [0, 0, 0])
  const segment = assertTalkedAndLeft(t, run.messages, 3)
  t.regex(segment, /^\/cshm_j[0-9a-f]{16}$/)
  t.false(exists(segment), 'the last member out removed the segment')
})

test('independent node processes started one after another join, talk, leave, and the segment is removed', async (t) => {
  t.timeout(40_000)
  const env = { JOIN_APP: appName('independent'), JOIN_MEMBERS: '3' }
  const procs = []
  for (let i = 0; i < 3; i++) {
    procs.push(startCluster('join-member.js', [], { env, t, timeout: 30_000 }))
    await sleep(150)
  }
  const runs = await Promise.all(procs.map((p) => p.done))
  t.deepEqual(runs.map((r) => r.code), [0, 0, 0], runs.map((r) => r.stderr).join('\n'))
  const segment = assertTalkedAndLeft(t, runs.flatMap((r) => r.messages), 3)
  t.false(exists(segment))
})

test('a SIGKILLed member is reaped by a survivor (detach), and the survivor stopped by SIGTERM removes the segment', async (t) => {
  t.timeout(40_000)
  const env = { JOIN_APP: appName('reap'), JOIN_MEMBERS: '2', JOIN_STAY: '1' }
  const a = startCluster('join-member.js', [], { env, t, timeout: 30_000 })
  const b = startCluster('join-member.js', [], { env, t, timeout: 30_000 })
  const [doneA, doneB] = await Promise.all([a.waitFor('done'), b.waitFor('done')])
  b.kill('SIGKILL')
  const detach = await a.waitFor((m) => m.event === 'detach', { timeout: 10_000, what: 'a detach event' })
  t.is(detach.at, doneB.index, 'the survivor saw the dead member go')
  a.kill('SIGTERM')
  const run = await a.done
  t.is(run.signal, 'SIGTERM')
  const joined = run.messages.find((m) => m.event === 'joined')
  t.is(joined.index, doneA.index)
  const segment = join({ name: env.JOIN_APP, workers: 2, ringSize: 1 << 16, heapSize: 1 << 20 })
  t.true(segment.name.startsWith('/cshm_j'))
  t.deepEqual(segment.peers(), [], 'a fresh segment: nobody else in it')
  segment.close()
  t.false(exists(segment.name), 'closed by its only member: removed')
})

test('join() in this process: peers, PRIMARY, mismatch with both values, a held index times out, cleanupJoined', (t) => {
  const name = appName('api')
  const opts = { name, workers: 3, ringSize: 1 << 16, heapSize: 1 << 20 }
  const a = join(opts)
  const b = join({ ...opts, index: 2, maxQueuedBytes: 1 << 20 })
  t.teardown(() => (a.close(), b.close()))
  t.is(a.maxQueuedBytes, 64 * 1024 * 1024, 'the default high-water mark of send(), as in a cluster')
  t.is(b.maxQueuedBytes, 1 << 20, 'the maxQueuedBytes option')
  t.is(a.index, 0)
  t.is(b.index, 2)
  t.deepEqual(a.peers(), [2])
  t.false(a.peers().includes(PRIMARY), 'nobody holds PRIMARY in a joined segment')
  t.is(a.workers, 3)
  const mismatch = t.throws(() => join({ ...opts, workers: 4 }), { code: 'ERR_MISMATCH' })
  t.regex(mismatch.message, /workers.*4.*3/)
  t.throws(() => join({ ...opts, heapSize: 2 << 20 }), { code: 'ERR_MISMATCH', message: /heapSize.*2097152.*1048576/ })
  const held = t.throws(() => join({ ...opts, index: 2, timeout: 200 }), { code: 'ERR_TIMEOUT' })
  t.regex(held.message, /index 2/)
  t.throws(() => join({ ...opts, index: 3 }), { code: 'ERR_INDEX_OUT_OF_RANGE' })
  t.throws(() => join({ workers: 2 }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => join({ name: '' }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => join({ ...opts, timeout: -1 }), { code: 'ERR_INVALID_ARG' })
  t.false(cleanupJoined(name), 'live members keep it')
  const segment = a.name
  a.close()
  t.true(exists(segment), 'b is still a member')
  b.close()
  t.false(exists(segment), 'the last one out removed it')
  t.true(cleanupJoined(name), 'nothing left')
})

test('join() takes PM2\'s NODE_APP_INSTANCE as its index', async (t) => {
  const env = { JOIN_APP: appName('instance'), JOIN_MEMBERS: '1', JOIN_WORKERS: '4', NODE_APP_INSTANCE: '3' }
  const run = await startCluster('join-member.js', [], { env, t, timeout: 20_000 }).done
  t.is(run.code, 0, run.stderr)
  t.is(run.events('joined')[0].index, 3)
  t.false(exists(run.events('left')[0].name))
})

test('10 rounds of 4 node processes started together: one segment each round, every member talks, nothing left', async (t) => {
  t.timeout(120_000)
  for (let round = 0; round < 10; round++) {
    const env = { JOIN_APP: appName('together'), JOIN_MEMBERS: '4' }
    const procs = [0, 1, 2, 3].map(() => startCluster('join-member.js', [], { env, t, timeout: 30_000 }))
    const runs = await Promise.all(procs.map((p) => p.done))
    t.deepEqual(runs.map((r) => r.code), [0, 0, 0, 0], runs.map((r) => r.stderr).join('\n'))
    const segment = assertTalkedAndLeft(t, runs.flatMap((r) => r.messages), 4)
    t.false(exists(segment), `round ${round}`)
  }
})
