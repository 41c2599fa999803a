#!/usr/bin/env node
'use strict'
// The `cluster-shm` command: look inside the running clusters of this user (README, "Operating
// it"). Segments are opened read-only and validated as members validate them; a segment that
// is corrupt, of another layout version or another user's is refused with a message and exit
// code 1. Usage errors exit with 2.

const { ls, clean, inspectCommand } = require('../lib/cli/commands.js')
const { top } = require('../lib/cli/top.js')

const USAGE = `usage: cluster-shm <command>

  ls [--json]                 this user's segments: name, primary pid, members, age, size, stale
  clean [--json]              removes the stale segments (their owner is dead), and nothing else
  inspect <name> [--json]     processes, rings, semaphores, maps, regions and topics of a cluster
  top <name> [--interval ms]  the same, refreshed: rates per second and ring fill (q or Ctrl-C quits)
`

function parse(argv) {
  const opts = { json: false, interval: 1000 }
  const args = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--json') opts.json = true
    else if (a === '--interval') opts.interval = Number(argv[++i])
    else if (a === '-h' || a === '--help') opts.help = true
    else if (a.startsWith('-')) throw new Error(`unknown option ${a}`)
    else args.push(a)
  }
  if (!(opts.interval >= 50)) throw new Error('--interval must be at least 50 (ms)')
  return { command: args[0], args: args.slice(1), opts }
}

async function main(argv) {
  let cmd
  try {
    cmd = parse(argv)
  } catch (err) {
    process.stderr.write(`cluster-shm: ${err.message}\n${USAGE}`)
    return 2
  }
  const print = (s) => process.stdout.write(s + '\n')
  const { command, args, opts } = cmd
  if (opts.help || command === 'help') return print(USAGE), 0
  const needsName = command === 'inspect' || command === 'top'
  if (!['ls', 'clean', 'inspect', 'top'].includes(command) || (needsName && args.length !== 1) || (!needsName && args.length !== 0)) {
    process.stderr.write(USAGE)
    return 2
  }
  try {
    if (command === 'ls') ls(opts, print)
    else if (command === 'clean') clean(opts, print)
    else if (command === 'inspect') inspectCommand(args[0], opts, print)
    else return await top(args[0], opts)
    return 0
  } catch (err) {
    if (err && typeof err.code === 'string' && err.code.startsWith('ERR_')) {
      process.stderr.write(`cluster-shm: cannot read ${args[0] ?? 'segments'}: ${err.message} (${err.code})\n`)
      return 1
    }
    throw err
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
})
