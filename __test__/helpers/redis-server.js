'use strict'
// A real redis-server for the bridge tests: started on a free port, stopped at the end of the
// test (t.teardown, also when it failed); restart() stops it and starts it again on that port.

const { spawn } = require('node:child_process')
const { freePort } = require('../../bench/lib/redis-server')

function launch(port) {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  return new Promise((resolve, reject) => {
    let text = ''
    const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${text}`)), 10_000)
    child.once('error', (err) => (clearTimeout(timer), reject(err)))
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`redis-server exited (${code}):\n${text}`))))
    child.stdout.setEncoding('utf8').on('data', (s) => {
      text += s
      if (/Ready to accept connections/.test(text)) {
        clearTimeout(timer)
        child.removeAllListeners('exit')
        resolve(child)
      }
    })
  })
}

function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    child.once('exit', resolve)
    child.kill('SIGKILL')
  })
}

/** Starts redis-server for the test `t`; resolves with { url, port, restart(downMs), stop() }. */
async function startRedis(t) {
  const port = await freePort()
  let child = await launch(port)
  const server = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async restart(downMs = 0) {
      await stop(child)
      await new Promise((r) => setTimeout(r, downMs))
      child = await launch(port)
    },
    stop: () => stop(child),
  }
  t.teardown(() => stop(child))
  return server
}

module.exports = { startRedis }
