'use strict'
// Starts a private redis-server for the benchmark: 127.0.0.1 only, a free port, no persistence
// (no RDB, no AOF, its own empty working directory), no pub/sub output-buffer limit (a slow
// subscriber is not disconnected in the middle of a burst). stop() ends it and removes the dir.

const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')

function findBinary() {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const f = path.join(dir, 'redis-server')
    try {
      fs.accessSync(f, fs.constants.X_OK)
      return f
    } catch {}
  }
  return null
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** Resolves with { port, pid, version, stop() }, or with { skipped: reason }. */
async function start() {
  const bin = findBinary()
  if (bin === null) return { skipped: 'redis-server is not installed (Debian: apt-get install redis-server)' }
  let ioredis = true
  try {
    require.resolve('ioredis', { paths: [path.join(__dirname, '..', '..')] })
  } catch {
    ioredis = false
  }
  if (!ioredis) return { skipped: 'ioredis is not installed (npm install)' }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cshm-bench-redis-'))
  const port = await freePort()
  const args = [
    '--bind', '127.0.0.1', '--port', String(port), '--protected-mode', 'yes',
    '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no',
    '--client-output-buffer-limit', 'pubsub 0 0 0', '--loglevel', 'notice', '--logfile', '',
  ]
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const version = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server not ready after 10 s:\n${out}`)), 10_000)
    const onData = (d) => {
      out += d
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer)
        const m = out.match(/version=([\d.]+)/) || out.match(/v=([\d.]+)/)
        resolve(m ? m[1] : 'unknown')
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.once('exit', (code, sig) => {
      clearTimeout(timer)
      reject(new Error(`redis-server exited (${sig ?? code}):\n${out}`))
    })
  }).catch((err) => {
    child.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
    throw err
  })
  child.removeAllListeners('exit')
  child.stdout.resume()
  child.stderr.resume()
  let stopped = null
  const stop = () => {
    stopped ??= new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      const kill = setTimeout(() => child.kill('SIGKILL'), 3000)
      child.once('exit', () => {
        clearTimeout(kill)
        resolve()
      })
      child.kill('SIGTERM')
    }).then(() => fs.rmSync(dir, { recursive: true, force: true }))
    return stopped
  }
  return { port, pid: child.pid, version, stop, kill: () => child.kill('SIGKILL') }
}

module.exports = { start, freePort }
