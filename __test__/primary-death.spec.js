'use strict'
// A process attached by name that never subscribes, only writes, learns that the primary was
// SIGKILLed within about a second: it gets 'shutdown' (reason 'primary-died'), and its writes
// and sends fail with ERR_CLUSTER_CLOSED from then on. The primary is a real child process.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const readline = require('node:readline')
const test = require('ava')
const { workerInit, PRIMARY } = require('..')
const { childEnv, SHM_DIR } = require('./helpers/harness')

const PRIMARY_SCRIPT = `
const { masterInit } = require(${JSON.stringify(require.resolve('..'))})
const bus = masterInit({ workers: 2, ringSize: 65536 })
console.log(bus.name)
setInterval(() => {}, 1000)
`

test('an unsubscribed, writing-only process notices the primary died within about a second', async (t) => {
  t.timeout(30_000)
  const child = spawn(process.execPath, ['-e', PRIMARY_SCRIPT], { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'))
  const name = await new Promise((resolve) => readline.createInterface({ input: child.stdout }).once('line', resolve))
  const bus = workerInit({ name })
  t.teardown(() => bus.close())
  t.is(bus.delivery, null, 'nothing subscribed: no delivery runs')
  const shutdowns = []
  bus.on('shutdown', (e) => shutdowns.push({ ...e, at: Date.now() }))
  t.true(bus.write(PRIMARY, 'before'), 'writes work while the primary lives')

  const killedAt = Date.now()
  child.kill('SIGKILL')
  await new Promise((resolve) => child.once('exit', resolve))
  let failedAt = 0
  let code = null
  while (Date.now() - killedAt < 5000) {
    try {
      bus.write(1, 'x')
      bus.flush()
    } catch (err) {
      failedAt = Date.now()
      code = err.code
      break
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.log(`write failed ${failedAt - killedAt} ms after the kill; shutdown ${shutdowns[0] ? shutdowns[0].at - killedAt : 'never'} ms`)
  t.is(code, 'ERR_CLUSTER_CLOSED')
  t.true(failedAt - killedAt < 2500, `noticed within about a second (${failedAt - killedAt} ms)`)
  await new Promise((resolve) => setImmediate(resolve))
  t.is(shutdowns.length, 1, "exactly one 'shutdown' event")
  t.is(shutdowns[0]?.reason, 'primary-died')
  const e = await bus.send(1, 'y').then(() => null, (err) => err)
  t.is(e?.code, 'ERR_CLUSTER_CLOSED', `send() fails too: ${e}`)
  bus.close()
  t.false(fs.existsSync(`${SHM_DIR}/${name.slice(1)}`), "the dead primary's segment was removed by the last process to close")
})
