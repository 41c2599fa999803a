'use strict'
// Test side of topics.spec.js: runs a fixture (__test__/fixtures/topics-*.js) as a real cluster
// primary in a child process of its own process group, collects the JSON lines it prints, and
// never leaves a process or a segment behind (teardown kills the whole group and removes the
// segments named after the primary's PID, even when the test failed).

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')

const SHM_DIR = '/dev/shm'
const live = new Set()
process.on('exit', () => {
  for (const r of live) r.killGroup()
})

/** Segments in /dev/shm created by process `pid` (`cshm_<pid hex>_<random>`). */
function segmentsOf(pid) {
  const prefix = `cshm_${pid.toString(16)}_`
  try {
    return fs.readdirSync(SHM_DIR).filter((f) => f.startsWith(prefix))
  } catch {
    return []
  }
}

class Run {
  constructor(t, name, args = [], { timeout = 30_000 } = {}) {
    this.name = name
    this.lines = []
    this.stderr = ''
    this.waiters = []
    this.exited = false
    const env = { ...process.env }
    for (const k of ['CLUSTER_SHM_SEGMENT', 'NODE_UNIQUE_ID', 'NODE_CHANNEL_FD']) delete env[k]
    this.child = spawn(process.execPath, [path.join(__dirname, '..', 'fixtures', name), ...args.map(String)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env,
    })
    this.pid = this.child.pid
    live.add(this)
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      let m
      try {
        m = JSON.parse(line)
      } catch {
        m = { raw: line }
      }
      if (m === null || typeof m !== 'object') m = { raw: line }
      m._rx = Date.now()
      this.lines.push(m)
      for (const w of [...this.waiters]) if (w.pred(m)) w.resolve(m)
    })
    this.child.stderr.setEncoding('utf8')
    this.child.stderr.on('data', (s) => {
      if (this.stderr.length < 64 << 10) this.stderr += s
    })
    const exit = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exited = true
        resolve({ code, signal, exitedAt: Date.now() })
      })
    })
    const closed = new Promise((resolve) => this.child.once('close', resolve))
    this.timedOut = false
    this.timer = setTimeout(() => {
      this.timedOut = true
      this.killGroup()
    }, timeout)
    this.done = exit.then(async (r) => {
      // the workers share the primary's stdout: wait (boundedly) until they are gone too
      const orphans = await Promise.race([closed.then(() => false), new Promise((res) => setTimeout(res, 5000, true).unref())])
      if (orphans) this.killGroup()
      clearTimeout(this.timer)
      live.delete(this)
      for (const w of this.waiters.splice(0)) w.reject(this.error(`exited before ${w.what}`))
      return { ...r, orphans, timedOut: this.timedOut, lines: this.lines, stderr: this.stderr, pid: this.pid, events: (event) => this.events(event) }
    })
    if (t) t.teardown(() => this.cleanup())
  }

  /** Kills whatever is left of the run and removes the segments its primary left behind. */
  async cleanup() {
    this.killGroup()
    await this.done.catch(() => {})
    for (const f of segmentsOf(this.pid)) {
      try {
        fs.unlinkSync(path.join(SHM_DIR, f))
      } catch {}
    }
  }

  error(what) {
    const tail = this.lines.slice(-8).map((m) => JSON.stringify(m).slice(0, 400))
    return new Error(`${this.name} (pid ${this.pid}) ${what}\nlast lines:\n${tail.join('\n')}\nstderr:\n${this.stderr.slice(-3000)}`)
  }

  killGroup() {
    try {
      process.kill(-this.pid, 'SIGKILL')
    } catch {}
  }

  /** The first line (printed already or to come) matching `pred` (a function or an event name). */
  waitFor(pred, { timeout = 20_000, what } = {}) {
    if (typeof pred === 'string') {
      what ??= `event "${pred}"`
      const event = pred
      pred = (m) => m.event === event
    }
    what ??= 'the expected line'
    const found = this.lines.find(pred)
    if (found) return Promise.resolve(found)
    if (this.exited && !live.has(this)) return Promise.reject(this.error(`exited before ${what}`))
    return new Promise((resolve, reject) => {
      const w = { pred, what }
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        reject(this.error(`no ${what} within ${timeout} ms`))
      }, timeout)
      w.resolve = (m) => {
        clearTimeout(timer)
        this.waiters.splice(this.waiters.indexOf(w), 1)
        resolve(m)
      }
      w.reject = (e) => {
        clearTimeout(timer)
        reject(e)
      }
      this.waiters.push(w)
    })
  }

  events(event) {
    return this.lines.filter((m) => m.event === event)
  }
}

/**
 * Starts fixture `name`; the returned Run is killed and cleaned up at the teardown of test `t`
 * (or, with `t` null, by its cleanup()).
 */
const start = (t, name, args, options) => new Run(t, name, args, options)

/** Runs fixture `name` to its end: { code, signal, timedOut, orphans, lines, stderr, pid, exitedAt }. */
const run = (t, name, args, options) => start(t, name, args, options).done

/** The fixture ended by itself: exit code 0, no timeout, no worker left, no segment left. */
function assertCleanExit(t, r) {
  const why = `\nlast lines:\n${r.lines.slice(-8).map((m) => JSON.stringify(m).slice(0, 400)).join('\n')}\nstderr:\n${r.stderr.slice(-3000)}`
  t.false(r.timedOut, `timed out${why}`)
  t.is(r.signal, null, `killed by ${r.signal}${why}`)
  t.is(r.code, 0, `exit code ${r.code}${why}`)
  t.false(r.orphans, 'workers outlived the primary by more than 5 s')
  t.deepEqual(segmentsOf(r.pid), [], 'segments of this primary left in /dev/shm')
}

/** Lines that report a failure inside the fixture (uncaught error, watchdog, stray output). */
const problems = (r) => r.lines.filter((m) => m.event === 'error' || m.event === 'watchdog' || m.raw !== undefined)

module.exports = { start, run, assertCleanExit, problems, segmentsOf, SHM_DIR }
