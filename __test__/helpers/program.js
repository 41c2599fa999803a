'use strict'
// Test-side helpers for the examples run as real programs (examples.spec.js, rate-limit.spec.js):
// `node <script>` from the package root in a process group of its own, its output collected as
// text, and a clean-up that kills the whole group (the workers too) and removes its segments.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { setTimeout: sleep } = require('node:timers/promises')

const { segmentsOf, SHM_DIR } = require('./harness')

const ROOT = path.join(__dirname, '..', '..')

/**
 * Runs `node <script>` (a path from the package root, or absolute) with `env` added to ours;
 * child.stdoutText and child.stderrText collect its output; child.done resolves with
 * { code, signal } at 'close' (the process exited and so did everyone holding its output: the workers).
 */
function startProgram(script, env = {}) {
  const child = spawn(process.execPath, [script], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    detached: true, // a process group of its own, so a failed test can kill the workers too
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdoutText = ''
  child.stderrText = ''
  child.stdout.setEncoding('utf8').on('data', (s) => (child.stdoutText += s))
  child.stderr.setEncoding('utf8').on('data', (s) => (child.stderrText += s))
  child.done = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })))
  return child
}

/** Kills whatever is left of `child`'s process group and removes its segments. */
function cleanUp(child) {
  try {
    process.kill(-child.pid, 'SIGKILL')
  } catch {} // already gone
  for (const name of segmentsOf(child.pid)) fs.rmSync(path.join(SHM_DIR, name), { force: true })
}

/** Resolves with the match of `pattern` in `child`'s stdout once it is there; throws if the child ended first or after `ms`. */
async function waitForOutput(child, pattern, ms) {
  const deadline = Date.now() + ms
  let m
  while (!(m = pattern.exec(child.stdoutText))) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      throw new Error(`no ${pattern} in the output:\n${child.stdoutText}\n${child.stderrText}`)
    }
    await sleep(50)
  }
  return m
}

function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

module.exports = { startProgram, cleanUp, waitForOutput, withTimeout, sleep }
