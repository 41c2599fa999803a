'use strict'
// `cluster-shm top <name>`: the cluster redrawn every interval: messages and bytes per second
// per process, and a fill bar per ring in use. Exits on q, Ctrl-C (SIGINT) or when the segment
// is gone. The segment is opened read-only each time (src/core/stats.rs).

const { inspect } = require('./commands.js')
const { bytes, rate, address, bar, table } = require('./format.js')

/** The screen for snapshot `s`, with rates against the previous snapshot `prev` taken `dt` s earlier. */
function screen(s, prev, dt) {
  const lines = []
  const owner = s.joined ? 'joined' : `primary ${s.primaryPid}`
  const attached = s.processes.filter((p) => p.attached).length
  lines.push(`cluster-shm top  ${s.name}  ${owner}  ${attached}/${s.processes.length} attached  heap ${bytes(s.heap.used)}/${bytes(s.heap.size)}`)
  lines.push('')
  const per = (p, key) => {
    const before = prev?.processes.find((q) => q.address === p.address)
    return before && dt > 0 ? Math.max(0, (p[key] - before[key]) / dt) : 0
  }
  lines.push(
    table(
      ['INDEX', 'PID', 'GEN', 'SENT/s', 'SENT B/s', 'RECV/s', 'RECV B/s', 'FULL', 'LOST', 'CORRUPT'],
      s.processes
        .filter((p) => p.attached || p.generation > 0)
        .map((p) => [address(p.address), p.attached ? p.pid : '-', p.generation, rate(per(p, 'written')), bytes(Math.round(per(p, 'writtenBytes'))), rate(per(p, 'read')), bytes(Math.round(per(p, 'readBytes'))), p.full, p.lost, p.corrupt]),
    ),
  )
  const rings = s.rings.filter((r) => r.written > 0 || r.fill > 0)
  lines.push('')
  lines.push(
    rings.length === 0
      ? 'no ring used yet'
      : table(
          ['RING', 'FILL', 'MSG/s'],
          rings.map((r) => {
            const before = prev?.rings.find((q) => q.from === r.from && q.to === r.to)
            const msgs = before && dt > 0 ? Math.max(0, (r.written - before.written) / dt) : 0
            return [`${address(r.from)} -> ${address(r.to)}`, bar(r.fill / s.ringSize), rate(msgs)]
          }),
        ),
  )
  if (s.semaphores.length > 0) {
    lines.push('')
    lines.push(table(['SEMAPHORE', 'IN USE'], s.semaphores.map((x) => [x.name, `${x.permits - x.available}/${x.permits}`])))
  }
  if (s.maps.length > 0) {
    lines.push('')
    lines.push(table(['MAP', 'FILL'], s.maps.map((m) => [m.name, `${bar(m.size / m.capacity, 10)} ${m.size}/${m.capacity}`])))
  }
  lines.push('')
  lines.push('q or Ctrl-C quits')
  return lines.join('\n')
}

/** Runs until q, Ctrl-C or the segment's end; resolves with the exit code. */
function top(name, { interval = 1000 }, out = process.stdout, input = process.stdin, err = process.stderr) {
  return new Promise((resolve) => {
    let prev = null
    let prevAt = 0
    let timer = null
    let finished = false
    const finish = (code, message) => {
      if (finished) return
      finished = true
      clearInterval(timer)
      process.off('SIGINT', onSigint)
      input.off('data', onKey)
      if (input.isTTY) input.setRawMode(false)
      input.pause()
      if (out.isTTY) out.write('\x1b[?25h') // cursor back
      if (message) err.write(`${message}\n`)
      resolve(code)
    }
    const onSigint = () => finish(0)
    const onKey = (k) => {
      const key = k.toString()
      if (key === 'q' || key === 'Q' || key === '\x03') finish(0)
    }
    const draw = () => {
      let s
      try {
        s = inspect(name)
      } catch (err) {
        return finish(1, `cluster-shm: ${err.message} (${err.code ?? 'error'})`)
      }
      const now = Date.now()
      const text = screen(s, prev, (now - prevAt) / 1000)
      prev = s
      prevAt = now
      out.write(`${out.isTTY ? '\x1b[?25l\x1b[H\x1b[2J' : ''}${text}\n`)
    }
    process.on('SIGINT', onSigint)
    if (input.isTTY) input.setRawMode(true) // keys one by one; Ctrl-C arrives as \x03
    input.on('data', onKey)
    input.resume()
    timer = setInterval(draw, interval)
    draw()
  })
}

module.exports = { top, screen }
