'use strict'
// Test-side harness: runs a fixture script as a real cluster primary in a child process (its own
// process group, so that the primary and every worker it forks can be killed together), collects
// the JSON lines it prints, lets the test send it commands on stdin, and never leaves a process
// behind: every child is killed at the end of its test (t.teardown) and at the exit of the ava
// worker, even when the test failed or timed out.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')

const FIXTURES = path.join(__dirname, '..', 'fixtures')
const SHM_DIR = '/dev/shm'

const live = new Set()
process.on('exit', () => {
  for (const h of live) h.killGroup('SIGKILL')
})

const fixture = (name) => path.join(FIXTURES, name)

/** Environment for a child: ours, without anything that would attach it to a cluster. */
function childEnv(extra) {
  const env = { ...process.env, ...extra }
  delete env.CLUSTER_SHM_SEGMENT
  delete env.NODE_UNIQUE_ID
  delete env.NODE_CHANNEL_FD
  return env
}

/** Names of the segments in /dev/shm created by the process `pid` (`cshm_<pid hex>_<random>`). */
function segmentsOf(pid) {
  const prefix = `cshm_${pid.toString(16)}_`
  try {
    return fs.readdirSync(SHM_DIR).filter((f) => f.startsWith(prefix))
  } catch {
    return []
  }
}

class ClusterProcess {
  /**
   * @param {string} script path of the fixture (or a name under __test__/fixtures)
   * @param {Array} args command-line arguments (stringified)
   * @param {{timeout?: number, env?: object, t?: object}} options timeout of the whole run in ms
   *   (then SIGTERM, and SIGKILL one second later); `t`: the ava context, to kill at teardown.
   */
  constructor(script, args = [], { timeout = 30_000, env = {}, t } = {}) {
    if (!path.isAbsolute(script)) script = fixture(script)
    this.script = script
    this.messages = []
    this.stderr = ''
    this.timedOut = false
    this.exited = false
    this.exitedAt = 0
    this.code = null
    this.signal = null
    this.waiters = []
    this.child = spawn(process.execPath, [script, ...args.map(String)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // own process group: the workers are killed with the primary
      env: childEnv(env),
    })
    this.pid = this.child.pid
    live.add(this)
    this.child.stdin.on('error', () => {})
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => this.#line(line))
    this.child.stderr.setEncoding('utf8')
    this.child.stderr.on('data', (s) => {
      if (this.stderr.length < 64 << 10) this.stderr += s
    })
    this.exitPromise = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exited = true
        this.exitedAt = Date.now()
        this.code = code
        this.signal = signal
        resolve({ code, signal })
      })
    })
    this.closePromise = new Promise((resolve) => this.child.once('close', resolve))
    this.done = this.#finish()
    this.timer = setTimeout(() => {
      this.timedOut = true
      this.killGroup('SIGTERM')
      setTimeout(() => this.killGroup('SIGKILL'), 1000).unref()
    }, timeout)
    this.timer.unref()
    if (t) t.teardown(() => this.destroy())
  }

  #line(line) {
    let msg
    try {
      msg = JSON.parse(line)
    } catch {
      msg = { raw: line }
    }
    if (msg === null || typeof msg !== 'object') msg = { raw: line }
    msg._rx = Date.now()
    this.messages.push(msg)
    for (const w of [...this.waiters]) {
      if (w.pred(msg)) {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        w.resolve(msg)
      }
    }
  }

  async #finish() {
    await this.exitPromise
    // Workers inherit the primary's stdout: wait for them, but not forever.
    const orphans = await Promise.race([
      this.closePromise.then(() => false),
      new Promise((r) => setTimeout(() => r(true), 5000).unref()),
    ])
    if (orphans) this.killGroup('SIGKILL')
    clearTimeout(this.timer)
    live.delete(this)
    for (const w of this.waiters.splice(0)) w.reject(this.#error(`exited before ${w.what}`))
    return {
      code: this.code,
      signal: this.signal,
      timedOut: this.timedOut,
      orphans,
      exitedAt: this.exitedAt,
      messages: this.messages,
      stderr: this.stderr,
      pid: this.pid,
      events: (event) => this.events(event),
    }
  }

  #error(what) {
    const tail = this.messages.slice(-5).map((m) => JSON.stringify(m).slice(0, 300))
    return new Error(
      `${path.basename(this.script)} (pid ${this.pid}) ${what}; code=${this.code} signal=${this.signal}` +
        ` timedOut=${this.timedOut}\nlast lines:\n${tail.join('\n')}\nstderr:\n${this.stderr.slice(-3000)}`,
    )
  }

  /** Resolves with the first line (already printed or to come) for which `pred` is true. */
  waitFor(pred, { timeout = 20_000, what = 'the expected line' } = {}) {
    if (typeof pred === 'string') {
      const event = pred
      pred = (m) => m.event === event
      what = `event "${event}"`
    }
    const found = this.messages.find(pred)
    if (found) return Promise.resolve(found)
    if (this.exited && !this.child.stdout.readable) return Promise.reject(this.#error(`exited before ${what}`))
    return new Promise((resolve, reject) => {
      const w = { pred, what }
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        reject(this.#error(`no ${what} within ${timeout} ms`))
      }, timeout)
      w.resolve = (m) => (clearTimeout(timer), resolve(m))
      w.reject = (e) => (clearTimeout(timer), reject(e))
      this.waiters.push(w)
    })
  }

  /** Lines whose `event` is `event`. */
  events(event) {
    return this.messages.filter((m) => m.event === event)
  }

  /** Sends a command (one JSON line) to the fixture's stdin. */
  command(obj) {
    this.child.stdin.write(JSON.stringify(obj) + '\n')
  }

  /** Signals the primary only. */
  kill(signal = 'SIGKILL') {
    try {
      process.kill(this.pid, signal)
    } catch {}
  }

  /** Signals the primary and every worker (the process group). */
  killGroup(signal = 'SIGKILL') {
    try {
      process.kill(-this.pid, signal)
    } catch {}
  }

  /** Teardown: kills whatever is left and removes the segments this primary left behind. */
  async destroy() {
    if (!this.exited) {
      this.killGroup('SIGKILL')
    } else {
      this.killGroup('SIGKILL') // workers left over after the primary
    }
    await this.done.catch(() => {})
    for (const f of segmentsOf(this.pid)) {
      try {
        fs.unlinkSync(path.join(SHM_DIR, f))
      } catch {}
    }
  }
}

/** Starts `script` as a cluster primary in a child process; see ClusterProcess. */
function startCluster(script, args, options) {
  return new ClusterProcess(script, args, options)
}

/** Runs `script` to its end; resolves with { code, signal, timedOut, messages, stderr, pid, ... }. */
function runCluster(script, args, options) {
  return startCluster(script, args, options).done
}

/** Asserts a clean run: exit code 0 by itself, no timeout, no orphaned worker, no segment left. */
function assertCleanExit(t, r) {
  const why = `\nlast lines:\n${r.messages.slice(-8).map((m) => JSON.stringify(m).slice(0, 400)).join('\n')}\nstderr:\n${r.stderr.slice(-3000)}`
  t.false(r.timedOut, `timed out${why}`)
  t.is(r.signal, null, `killed by ${r.signal}${why}`)
  t.is(r.code, 0, `exit code ${r.code}${why}`)
  t.false(r.orphans, 'workers outlived the primary by more than 5 s')
  t.deepEqual(segmentsOf(r.pid), [], 'segments of this primary left in /dev/shm')
}

/** Lines that report a failure inside the fixture (uncaught error, watchdog, stray output). */
const problems = (r) => r.messages.filter((m) => m.event === 'error' || m.event === 'watchdog' || m.raw !== undefined)

/** Asserts that the fixture printed no error, no watchdog line and no stray (non-empty, non-JSON) line. */
function noErrors(t, r) {
  t.deepEqual(r.messages.filter((m) => m.event === 'error' || m.event === 'watchdog' || m.raw), [], r.stderr.slice(-3000))
}

/**
 * Runs `script` to its end (runCluster, torn down with the test `t`), asserts a clean exit
 * (assertCleanExit) and no errors (noErrors); resolves with the run.
 */
async function runClean(t, script, args, options) {
  const r = await runCluster(script, args, { ...options, t })
  assertCleanExit(t, r)
  noErrors(t, r)
  return r
}

/** The median of a list of numbers (NaN for none). */
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

module.exports = { startCluster, runCluster, runClean, assertCleanExit, noErrors, problems, median, segmentsOf, fixture, childEnv, sleep, SHM_DIR }
