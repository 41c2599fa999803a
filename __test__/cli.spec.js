'use strict'
// The `cluster-shm` command (bin/cluster-shm.js), run as a child process against a live 3-worker
// cluster (__test__/fixtures/stats-cluster.js): ls, inspect (--json equals the primary's
// bus.stats()), top in tmux (exits on q and on Ctrl-C), clean (removes a SIGKILLed primary's
// segment and nothing else), and corrupt, hostile or foreign segments refused with a message
// and exit code 1, never a crash.

const test = require('ava')
const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { execFile, execFileSync, spawn } = require('node:child_process')

const { startCluster, SHM_DIR, sleep } = require('./helpers/harness')
const lib = require('..')

const BIN = path.join(__dirname, '..', 'bin', 'cluster-shm.js')

/** Runs the command; resolves with { code, signal, stdout, stderr } (never rejects). */
function cli(...args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? null) : 0, signal: err?.signal ?? null, stdout, stderr })
    })
  })
}

/** A segment file of this test's own (its PID is alive, so nothing judges it stale); removed at teardown. */
function fakeSegment(t, bytes, mode = 0o600) {
  const name = `cshm_${process.pid.toString(16)}_${crypto.randomBytes(8).toString('hex')}`
  const file = path.join(SHM_DIR, name)
  fs.writeFileSync(file, bytes, { mode })
  fs.chmodSync(file, mode)
  t.teardown(() => fs.rmSync(file, { force: true }))
  return { name: `/${name}`, file }
}

async function liveCluster(t, args = []) {
  const c = startCluster('stats-cluster.js', args, { t, timeout: 110_000 })
  const ready = await c.waitFor('ready', { timeout: 40_000 })
  t.teardown(async () => {
    c.command({ cmd: 'stop' })
    await Promise.race([c.done, sleep(5000)])
  })
  return { c, ready }
}

function hasTmux() {
  try {
    execFileSync('tmux', ['-V'])
    return true
  } catch {
    return false
  }
}

test.serial('ls lists the live cluster; inspect --json equals bus.stats(); inspect prints its tables', async (t) => {
  t.timeout(100_000)
  const { c, ready } = await liveCluster(t)
  const ls = await cli('ls', '--json')
  t.is(ls.code, 0, ls.stderr)
  const entry = JSON.parse(ls.stdout).find((s) => s.name === ready.name)
  t.like(entry, { name: ready.name, primaryPid: ready.pid, joined: false, members: 4, stale: false, error: null })
  t.true(entry.size > 64 * 1024 * 12, 'twelve rings of 64 KiB')
  t.true(entry.ageSeconds >= 0 && entry.ageSeconds < 120)
  const text = await cli('ls')
  t.regex(text.stdout, new RegExp(`${ready.name}\\s+${ready.pid}\\s+4\\s+\\d+s\\s+[\\d.]+ MiB\\s+live`))

  c.command({ cmd: 'stats' })
  const { stats } = await c.waitFor('stats')
  const inspect = await cli('inspect', ready.name, '--json')
  t.is(inspect.code, 0, inspect.stderr)
  const { self, peers, ...cluster } = stats
  t.deepEqual(JSON.parse(inspect.stdout), cluster)
  t.is(self.address, lib.PRIMARY)
  t.is(peers.length, 3)

  const tables = await cli('inspect', ready.name.slice(1)) // the leading '/' is optional
  t.is(tables.code, 0, tables.stderr)
  t.regex(tables.stdout, new RegExp(`^${ready.name}: primary pid ${ready.pid}, 3 workers`))
  t.regex(tables.stdout, new RegExp(`\\n1\\s+${ready.pids[1]}\\s+1\\s+110\\s`), 'worker 1 sent 110 messages')
  t.regex(tables.stdout, /\n1 -> 2\s+800 B \(1%\)\s+10\s+0\s/)
  t.regex(tables.stdout, new RegExp(`\\njobs\\s+3\\s+2\\s+2 \\(pid ${ready.pids[2]}\\)`))
  t.regex(tables.stdout, /\nhits\s+5\s+100/)
  t.regex(tables.stdout, /\nroom\.\*\s+1\s+0/)
})

for (const [how, key] of [
  ['q', 'q'],
  ['Ctrl-C', 'C-c'],
]) {
  test.serial(`top renders rates and ring fill in tmux and exits on ${how}`, async (t) => {
    t.timeout(100_000)
    t.true(hasTmux(), 'tmux is installed (.ci/run installs it)')
    const { ready } = await liveCluster(t, ['busy'])
    const session = `cshm-top-${process.pid}-${key === 'q' ? 'q' : 'c'}`
    const done = path.join(require('node:os').tmpdir(), `${session}.code`)
    fs.rmSync(done, { force: true })
    // The exit code is written to a file once top returns, so the test sees it after the pane closed.
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '120', '-y', '40', `${process.execPath} ${BIN} top ${ready.name} --interval 300; echo $? > ${done}`])
    t.teardown(() => {
      try {
        execFileSync('tmux', ['kill-session', '-t', session], { stdio: 'ignore' })
      } catch {} // already gone
      fs.rmSync(done, { force: true })
    })
    let screen = ''
    const until = Date.now() + 20_000
    // Rates need two snapshots; worker 1 keeps writing to worker 0.
    while (!/\n1 -> 0\s+\[[#.]{20}\]\s+\d+%\s+[1-9][\d.]*k?/.test(screen) && Date.now() < until) {
      await sleep(300)
      screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' })
    }
    t.regex(screen, new RegExp(`cluster-shm top  ${ready.name}  primary ${ready.pid}  4/4 attached`))
    t.regex(screen, /\n1 -> 0\s+\[[#.]{20}\]\s+\d+%\s+[1-9][\d.]*k?/, screen)
    t.regex(screen, /\n1 -> 2\s+\[\.{20}\]\s+1%/, screen)
    t.regex(screen, /\njobs\s+1\/3/)
    t.regex(screen, /q or Ctrl-C quits/)
    execFileSync('tmux', ['send-keys', '-t', session, key])
    const deadline = Date.now() + 10_000
    while (!fs.existsSync(done) && Date.now() < deadline) await sleep(100)
    t.is(fs.existsSync(done) ? fs.readFileSync(done, 'utf8').trim() : 'still running', '0')
  })
}

test.serial('clean removes a SIGKILLed primary’s segment and a SIGKILLed join() member’s, and nothing else', async (t) => {
  t.timeout(100_000)
  const { ready } = await liveCluster(t)
  const stale = startCluster('stale-primary.js', [], { t, timeout: 60_000 })
  const { name: staleName } = await stale.waitFor('ready')
  // A join() member, alone in its segment: nobody but `clean` (or a joiner of the same app) removes it.
  const joiner = spawn(process.execPath, ['-e', `const b = require(${JSON.stringify(path.join(__dirname, '..'))}).join({ name: 'cli-stale-${process.pid}', workers: 1 }); console.log(b.name); setInterval(() => {}, 1000)`], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => joiner.kill('SIGKILL'))
  const joinedName = (await new Promise((resolve) => joiner.stdout.once('data', resolve))).toString().trim()
  t.teardown(() => fs.rmSync(path.join(SHM_DIR, joinedName), { force: true }))
  const corrupt = fakeSegment(t, crypto.randomBytes(8192))
  stale.kill('SIGKILL')
  joiner.kill('SIGKILL')
  await Promise.all([stale.exitPromise, new Promise((resolve) => joiner.once('exit', resolve))])
  const before = JSON.parse((await cli('ls', '--json')).stdout)
  t.like(before.find((s) => s.name === joinedName), { joined: true, primaryPid: null, members: 0, stale: true })
  t.like(before.find((s) => s.name === ready.name), { stale: false, members: 4 })
  t.like(before.find((s) => s.name === corrupt.name), { stale: false, members: 0 })
  t.regex(before.find((s) => s.name === corrupt.name).error, /not a cluster-shm segment/)
  // Any masterInit on the host removes dead primaries' segments too (another test's may be first).
  const primaryLeft = before.find((s) => s.name === staleName)
  if (primaryLeft) t.like(primaryLeft, { stale: true, members: 0 })
  else t.log('the dead primary’s segment was already removed by a concurrent masterInit on this host')

  const r = await cli('clean', '--json')
  t.is(r.code, 0, r.stderr)
  const { removed } = JSON.parse(r.stdout)
  t.true(removed.includes(joinedName))
  t.false(fs.existsSync(path.join(SHM_DIR, joinedName)))
  t.false(fs.existsSync(path.join(SHM_DIR, staleName)))
  t.true(fs.existsSync(path.join(SHM_DIR, ready.name)), 'the live cluster is kept')
  t.true(fs.existsSync(corrupt.file), 'a corrupt segment whose creator lives is kept')
  // Whatever else it removed (another test's dead primary, on a shared machine) was stale.
  for (const n of removed) t.false(before.some((s) => s.name === n && !s.stale), `${n} was live`)
  const again = await cli('clean')
  t.is(again.code, 0)
  t.false(again.stdout.includes(joinedName))
})

test.serial('corrupt, hostile and foreign segments: a clear message and exit code 1, never a crash', async (t) => {
  t.timeout(60_000)
  const garbage = fakeSegment(t, crypto.randomBytes(8192))
  for (const cmd of ['inspect', 'top']) {
    const r = await cli(cmd, garbage.name)
    t.is(r.code, 1, `${cmd}: ${r.stderr}`)
    t.is(r.signal, null)
    t.regex(r.stderr, new RegExp(`^cluster-shm: (cannot read ${garbage.name}: )?not a cluster-shm segment of layout \\d+: magic \\(ERR_BAD_SEGMENT\\)`))
  }
  const tiny = fakeSegment(t, Buffer.alloc(10))
  t.regex((await cli('inspect', tiny.name)).stderr, /smaller than its header \(ERR_BAD_SEGMENT\)/)

  // A published header of this layout with an impossible geometry.
  const header = Buffer.alloc(8192)
  Buffer.from('CLSHM\0\x04\x00', 'latin1').copy(header, 0)
  header.writeUInt32LE(4, 8) // layout version
  header.writeUInt32LE(process.pid, 12)
  header.writeUInt32LE(100_000, 24) // endpoints
  header.writeUInt32LE(4096, 28) // ring capacity
  const hostile = fakeSegment(t, header)
  const h = await cli('inspect', hostile.name, '--json')
  t.is(h.code, 1)
  t.regex(h.stderr, /geometry \(ERR_BAD_SEGMENT\)/)

  // A valid segment whose rings and object table are overwritten with garbage: read, not followed.
  const bus = lib.masterInit({ workers: 2, ringSize: 4096 })
  t.teardown(() => bus.close())
  bus.semaphore('s', { permits: 2 })
  const file = path.join(SHM_DIR, bus.name)
  const fd = fs.openSync(file, 'r+')
  const size = fs.fstatSync(fd).size
  const slotsEnd = 128 + 3 * 384
  fs.writeSync(fd, crypto.randomBytes(size - slotsEnd), 0, size - slotsEnd, slotsEnd)
  fs.closeSync(fd)
  const g = await cli('inspect', bus.name, '--json')
  t.is(g.code, 0, g.stderr)
  const s = JSON.parse(g.stdout)
  t.is(s.processes.length, 3)
  for (const r of s.rings) t.true(r.fill >= 0 && r.fill <= s.ringSize, 'fill is clamped to the ring')

  // Another user's segment is not listed and cannot be opened; as non-root, a segment readable
  // by others (not mode 0600) stands for it.
  const foreign = fakeSegment(t, crypto.randomBytes(8192), process.getuid() === 0 ? 0o600 : 0o644)
  if (process.getuid() === 0) fs.chownSync(foreign.file, 65534, 65534)
  const f = await cli('inspect', foreign.name)
  t.is(f.code, 1)
  t.regex(f.stderr, /segment belongs to another user or is not mode 0600 \(ERR_SEGMENT_ACCESS\)/)
  if (process.getuid() === 0) t.false((await cli('ls')).stdout.includes(foreign.name))

  const missing = await cli('inspect', '/cshm_0_0000000000000000')
  t.is(missing.code, 1)
  t.regex(missing.stderr, /no segment of that name .* \(ERR_SEGMENT_NOT_FOUND\)/)
  const usage = await cli('inspect')
  t.is(usage.code, 2)
  t.regex(usage.stderr, /^usage: cluster-shm/)
})
