'use strict'
// What a process of the same user can break by shrinking the segment file (ftruncate of
// /dev/shm/cshm_…), as README "What another process of the same user can break" states: the
// members that have it mapped die with SIGBUS at their next access beyond the new end (this is
// not guarded), while a process that attaches afterwards is refused with ERR_BAD_SEGMENT and
// does not crash. The member is a real child process; the test removes what it leaves behind.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')
const test = require('ava')
const { workerInit } = require('..')
const { childEnv, SHM_DIR } = require('./helpers/harness')

const MEMBER = `
const { masterInit } = require(${JSON.stringify(path.join(__dirname, '..'))})
const bus = masterInit({ workers: 2, ringSize: 65536 })
console.log(bus.name)
require('node:readline').createInterface({ input: process.stdin }).on('line', () => {
  bus.write(0, 'x') // the ring to worker 0 lies beyond the first page
  bus.flush()
  console.log('wrote')
})
`

test('shrinking the segment file: a member dies with SIGBUS at its next access; a new attacher gets ERR_BAD_SEGMENT', async (t) => {
  t.timeout(30_000)
  const child = spawn(process.execPath, ['-e', MEMBER], { env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'))
  const lines = readline.createInterface({ input: child.stdout })
  const name = await new Promise((resolve) => lines.once('line', resolve))
  const file = path.join(SHM_DIR, name.slice(1))
  t.teardown(() => fs.rmSync(file, { force: true })) // the crashed member cannot remove it
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))

  fs.truncateSync(file, 4096)
  const attach = (() => {
    try {
      workerInit({ name }).close()
      return 'attached'
    } catch (err) {
      return err.code
    }
  })()
  t.is(attach, 'ERR_BAD_SEGMENT', 'a process attaching after the shrink is refused, not crashed')

  child.stdin.write('write\n')
  const { code, signal } = await exited
  t.is(signal, 'SIGBUS', `the member that had it mapped died by SIGBUS (code ${code}, signal ${signal})`)
})
