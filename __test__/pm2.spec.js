'use strict'
// join() under PM2 itself (the `pm2` dev dependency, its daemon's home in a temporary
// directory): `pm2 start -i 3` instances talk and share a counter; one instance stopped and
// restarted gets its index back with the messages left in its ring; `pm2 reload` of all of them
// (new instances start while the old ones still hold their indices) fails nowhere and keeps the
// counter; `pm2 delete` leaves nothing in /dev/shm. Every test ends with `pm2 kill` (also when
// it fails) and checks that the daemon is gone.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const test = require('ava')

const { fixture, sleep, SHM_DIR } = require('./helpers/harness')
const { join } = require('..')

const PM2 = path.join(__dirname, '..', 'node_modules', 'pm2', 'bin', 'pm2')

function alive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** PIDs of every PM2 daemon and app instance the tests saw: none may outlive them. */
const seen = new Set()

test.after.always('no PM2 daemon or instance outlives the tests', (t) => {
  t.true(seen.size > 0, 'the tests saw PM2 processes')
  t.deepEqual([...seen].filter(alive), [])
})

/** A PM2 with its own home, killed (and checked gone) when the test ends. */
function startPm2(t) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cshm-pm2-'))
  const env = { ...process.env, PM2_HOME: home }
  delete env.CLUSTER_SHM_SEGMENT
  const run = (...args) => execFileSync(process.execPath, [PM2, ...args], { env, timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] }).toString()
  const pidFile = path.join(home, 'pm2.pid')
  const pm2 = (...args) => {
    const result = run(...args)
    if (fs.existsSync(pidFile)) seen.add(Number(fs.readFileSync(pidFile, 'utf8')))
    if (args[0] !== 'kill') for (const p of JSON.parse(run('jlist'))) if (p.pid) seen.add(p.pid)
    return result
  }
  t.teardown(async () => {
    const daemon = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) : 0
    try {
      run('kill')
    } catch {}
    for (let i = 0; i < 100 && daemon && alive(daemon); i++) await sleep(50)
    if (daemon && alive(daemon)) process.kill(daemon, 'SIGKILL')
    fs.rmSync(home, { recursive: true, force: true })
  })
  return { pm2, env, home }
}

/** The JSON lines appended to `file` so far. */
const linesOf = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [])

async function waitLines(file, pred, n, what, timeout = 30_000) {
  const end = Date.now() + timeout
  for (;;) {
    const got = linesOf(file).filter(pred)
    if (got.length >= n) return got
    if (Date.now() > end) throw new Error(`no ${n} × ${what} within ${timeout} ms; lines:\n${fs.readFileSync(file, 'utf8').slice(-3000)}`)
    await sleep(100)
  }
}

test.serial('pm2 start -i 3, stop + restart of one instance, reload of all, delete: talk, keep the counter, leave nothing', async (t) => {
  t.timeout(180_000)
  const { pm2, env, home } = startPm2(t)
  const app = `pm2-spec-${process.pid}`
  const out = path.join(home, 'lines.jsonl')
  Object.assign(env, { JOIN_APP: app, JOIN_MEMBERS: '3', JOIN_WORKERS: '4', JOIN_STAY: '1', JOIN_OUT: out })
  pm2('start', fixture('join-member.js'), '-i', '3', '--name', app)

  // the three instances join at their NODE_APP_INSTANCE, greet each other, count themselves
  const done = await waitLines(out, (m) => m.event === 'done', 3, 'done')
  const joined = linesOf(out).filter((m) => m.event === 'joined')
  t.deepEqual(joined.map((m) => m.index).sort(), [0, 1, 2])
  for (const j of joined) t.is(String(j.index), j.instance, 'index = NODE_APP_INSTANCE')
  for (const d of done) t.deepEqual(d.hellos, [0, 1, 2].filter((i) => i !== d.index))
  t.deepEqual(linesOf(out).filter((m) => m.event === 'error'), [])

  // this process joins too (index 3), to write to an instance while it is down
  const me = join({ name: app, workers: 4, ringSize: 1 << 16, heapSize: 1 << 20, index: 3 })
  t.teardown(() => me.close())
  const segment = me.name
  t.true(fs.existsSync(SHM_DIR + segment))
  const counter = me.map('counter')
  t.is(counter.get('joins'), 3)
  const procs = JSON.parse(pm2('jlist'))
  const one = procs.find((p) => p.pm2_env.NODE_APP_INSTANCE === 1 || p.pm2_env.NODE_APP_INSTANCE === '1')
  t.truthy(one, 'instance 1 is listed')
  pm2('stop', String(one.pm_id))
  for (let i = 0; i < 50 && me.peers().includes(1); i++) await sleep(100)
  t.false(me.peers().includes(1), 'the stopped instance gave its index back')
  for (let i = 0; i < 3; i++) await me.send(1, `while-down-${i}`)
  pm2('restart', String(one.pm_id))
  const back = await waitLines(out, (m) => m.event === 'message' && m.pid !== one.pid && String(m.data).startsWith('while-down'), 3, 'messages left in the ring')
  const newPid = back[0].pid
  t.deepEqual(back.map((m) => [m.from, m.data]), [[3, 'while-down-0'], [3, 'while-down-1'], [3, 'while-down-2']], 'in order, from this process')
  t.is(linesOf(out).find((m) => m.event === 'joined' && m.pid === newPid).index, 1, 'the restarted instance got index 1 back')
  t.is(counter.get('joins'), 4)

  // reload: each new instance starts while the old one holds its index, and waits for it
  const before = new Set(linesOf(out).filter((m) => m.event === 'joined').map((m) => m.pid))
  pm2('reload', app)
  const reloaded = await waitLines(out, (m) => m.event === 'joined' && !before.has(m.pid), 3, 'joins after the reload', 60_000)
  t.deepEqual(reloaded.map((m) => m.index).sort(), [0, 1, 2])
  t.log('join() of the reloaded instances took (ms):', reloaded.map((m) => m.joinMs))
  t.deepEqual(linesOf(out).filter((m) => m.event === 'error'), [], 'no instance failed')
  t.true(reloaded.every((m) => m.joins > 4), 'the counter survived the reload')
  t.is(counter.get('joins'), 7)

  // delete: the instances leave; with this process gone too, nothing is left
  me.close()
  pm2('delete', app)
  for (let i = 0; i < 100 && fs.existsSync(SHM_DIR + segment); i++) await sleep(100)
  t.false(fs.existsSync(SHM_DIR + segment), 'pm2 delete left nothing in /dev/shm')
})

test.serial('examples/pm2: the ecosystem file starts 4 instances that count hits together; delete leaves nothing', async (t) => {
  t.timeout(120_000)
  const { pm2, env } = startPm2(t)
  const net = require('node:net')
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
  env.PORT = String(port)
  pm2('start', path.join(__dirname, '..', 'examples', 'pm2', 'ecosystem.config.js'))
  const get = (p) =>
    new Promise((resolve, reject) => {
      require('node:http')
        .get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
          let body = ''
          res.on('data', (c) => (body += c))
          res.on('end', () => resolve(JSON.parse(body)))
        })
        .on('error', reject)
    })
  let peers
  for (let i = 0; i < 200; i++) {
    peers = await get('/peers').catch(() => null)
    if (peers && peers.peers.length === 3) break
    await sleep(100)
  }
  t.is(peers.peers.length, 3, 'four instances attached')
  const totals = []
  for (let i = 0; i < 8; i++) totals.push((await get('/')).total)
  t.deepEqual(totals, [1, 2, 3, 4, 5, 6, 7, 8], 'one counter for all instances')
  pm2('delete', 'pm2-example')
  t.deepEqual(JSON.parse(pm2('jlist')), [])
  for (let i = 0; i < 100 && fs.existsSync(SHM_DIR + peers.segment); i++) await sleep(100)
  t.false(fs.existsSync(SHM_DIR + peers.segment), 'the last instance out removed the segment')
})
