'use strict'
// The report of one run: results.json (every raw figure), results.md (tables: figures, ratios of
// cluster-shm against each peer, the goals of docs/design.md) and chart.svg. A full run also puts the
// tables and the chart into bench/README.md (between the `results` markers). The native figures
// of the last `cargo bench` (bench/results/native.json) are shown beside them with their own date.

const fs = require('node:fs')
const path = require('node:path')

const README = path.join(__dirname, '..', 'README.md')
const NATIVE = path.join(__dirname, '..', 'results', 'native.json')

// ---- gathering ----

function figures(rows, cases) {
  const f = {}
  for (const row of rows) f[row.id] = { id: row.id, label: row.label, shm: !!row.shm, broadcast: {}, errors: [] }
  const runs = new Map() // `${id}|${test}|${workers}` -> [result]
  for (const c of cases) {
    const x = f[c.id]
    if (!x) continue
    if (c.error) x.errors.push(`N=${c.workers}${c.round > 1 ? ` (round ${c.round})` : ''}: ${c.error}`)
    for (const [test, v] of Object.entries(c.results || {})) {
      if (!v || v.error) continue
      const key = `${c.id}|${test}|${c.workers}`
      if (!runs.has(key)) runs.set(key, [])
      runs.get(key).push(v)
    }
  }
  for (const [key, list] of runs) {
    const [id, test, workers] = key.split('|')
    const v = combine(list)
    if (test === 'broadcast') f[id].broadcast[workers] = v
    else f[id][test] = v
  }
  return f
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** The median of every figure over the rounds of one case (one round: itself). */
function combine(list) {
  if (list.length === 1) return list[0]
  const out = JSON.parse(JSON.stringify(list[0]))
  const paths = [['oneWayUs', 'p50'], ['oneWayUs', 'p90'], ['oneWayUs', 'p99'], ['oneWayUs', 'min'], ['oneWayUs', 'mean'], ['cpuPerMsgUs'], ['msgsPerSec'], ['deliveriesPerSec'], ['MBps'], ['seconds'], ['rttUs', 'p50'], ['rttUs', 'p99']]
  for (const p of paths) {
    const vals = list.map((v) => p.reduce((o, k) => o?.[k], v)).filter((x) => typeof x === 'number')
    if (vals.length !== list.length) continue
    let o = out
    for (const k of p.slice(0, -1)) o = o[k]
    o[p[p.length - 1]] = median(vals)
  }
  out.rounds = list.length
  out.perRound = list.map((v) => ({ p50: v.oneWayUs?.p50, p99: v.oneWayUs?.p99, msgsPerSec: v.msgsPerSec, MBps: v.MBps, cpuPerMsgUs: v.cpuPerMsgUs }))
  return out
}

const get = {
  p50: (x) => x.latency?.oneWayUs.p50,
  p99: (x) => x.latency?.oneWayUs.p99,
  latCpu: (x) => x.latency?.cpuPerMsgUs,
  rate: (x) => x.throughput?.msgsPerSec,
  cpu: (x) => x.throughput?.cpuPerMsgUs,
  mbps: (x) => x.bulk?.MBps,
  bulkCpu: (x) => x.bulk?.cpuPerMsgUs,
  bc: (n) => (x) => x.broadcast[n]?.msgsPerSec,
  bcCpu: (n) => (x) => x.broadcast[n]?.cpuPerMsgUs,
  topic: (x) => x.topic?.msgsPerSec,
  topicCpu: (x) => x.topic?.cpuPerMsgUs,
  rpc: (x) => x.rpc?.msgsPerSec,
  rpcP50: (x) => x.rpc?.rttUs.p50,
  rpcCpu: (x) => x.rpc?.cpuPerMsgUs,
  rpc32: (x) => x.rpc32?.msgsPerSec,
  rpc32P50: (x) => x.rpc32?.rttUs.p50,
  rpc32Cpu: (x) => x.rpc32?.cpuPerMsgUs,
}

// ---- formatting ----

function num(v, digits) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–'
  return v.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}
function us(v) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–'
  return v < 10 ? num(v, 2) : v < 100 ? num(v, 1) : num(v, 0)
}
function rate(v) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–'
  if (v >= 1e6) return `${num(v / 1e6, 2)} M`
  if (v >= 1e3) return `${num(v / 1e3, v >= 1e5 ? 0 : 1)} k`
  return num(v, 0)
}
function mb(v) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–'
  return v >= 100 ? num(v, 0) : num(v, 1)
}
function ratio(v) {
  if (v === undefined || v === null || !Number.isFinite(v)) return '–'
  return `${v >= 10 ? num(v, 0) : v >= 1 ? num(v, 1) : num(v, 2)}×`
}

function table(head, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`
  return [line(head), line(head.map((_, i) => (i === 0 ? '---' : '---:'))), ...rows.map(line)].join('\n')
}

// ---- markdown ----

const PEERS = ['ps-json', 'ps-advanced', 'unix-socket', 'redis']

function markdown(meta, rows, f, native) {
  const out = []
  const when = meta.date.replace('T', ' ').replace(/\..*/, ' UTC')
  out.push(`Run of ${when}${meta.quick ? ' (quick: short phases, noisier)' : ''}${meta.repeat > 1 ? ` (every case ${meta.repeat} times, round-robin; medians)` : ''}: Node ${meta.node}, ${meta.cpus} vCPU (${meta.cpuModel}), ${meta.memoryGiB} GiB, ${meta.platform}${meta.redisVersion ? `, redis-server ${meta.redisVersion}` : ''}; ${num(meta.seconds, 0)} s; load average before ${(meta.loadavgBefore || []).map((l) => num(l, 2)).join(' ')}.`)
  const lib = meta.library
  if (lib) {
    const dirty = lib.uncommittedChanges && lib.uncommittedChanges.length ? ` plus uncommitted changes to ${lib.uncommittedChanges.map((l) => l.replace(/^\S+\s+/, '')).join(', ')}` : ''
    out.push(`\ncluster-shm measured: ${lib.commit ? `commit ${lib.commit}${dirty}` : lib.dir}${lib.binary ? ` (binary built ${lib.binary.modified.replace('T', ' ').replace(/\..*/, ' UTC')})` : ''}.`)
  }
  const sk = Object.entries(meta.skipped || {})
  if (sk.length) out.push(`\nSkipped: ${sk.map(([k, v]) => `${k} (${v})`).join('; ')}.`)
  const ids = rows.map((r) => r.id).filter((id) => f[id])
  const N = [2, 4, 8].filter((n) => ids.some((id) => f[id].broadcast[n]))

  out.push('\n#### Figures\n')
  out.push('Between two cluster workers, the primary present. Latency: one way (RTT/2) of a strict ping-pong of ~64-byte messages. Throughput: 64-byte messages, end to end. Broadcast: one worker to the N−1 others, messages/s each receiver got. CPU: user+sys of every process of the case (primary, workers, redis-server) per delivered message.\n')
  out.push(
    table(
      ['mechanism', 'latency p50 µs', 'p99 µs', '64 B msgs/s', 'CPU µs/msg', '1 MiB MB/s', ...N.map((n) => `bcast N=${n} msgs/s`), `CPU µs/delivery N=${N[N.length - 1] ?? 2}`, 'ping-pong CPU µs/msg'],
      ids.filter((id) => ['latency', 'throughput', 'bulk'].some((t) => f[id][t]) || Object.keys(f[id].broadcast).length || f[id].errors.length).map((id) => {
        const x = f[id]
        const last = N[N.length - 1]
        return [x.label + (x.errors.length ? ' ⚠' : ''), us(get.p50(x)), us(get.p99(x)), rate(get.rate(x)), us(get.cpu(x)), mb(get.mbps(x)), ...N.map((n) => rate(get.bc(n)(x))), us(last && get.bcCpu(last)(x)), us(get.latCpu(x))]
      }),
    ),
  )

  const tr = ids.filter((id) => f[id].topic || f[id].rpc || f[id].rpc32)
  if (tr.length) {
    out.push('\n#### Topic fan-out and request/response\n')
    const tn = tr.map((id) => f[id].topic).find(Boolean)
    out.push(`Topic: one worker publishes 64-byte messages on a topic that 2 of the ${tn ? tn.subscribers + tn.nonSubscribers + 1 : 8} workers subscribed to (the others did not, and must receive nothing); messages/s each subscriber got, and CPU of every process of the case (primary, all workers, redis-server) per delivered message. Request/response: worker 0 sends ~64-byte requests to worker 1, which echoes them; requests/s and round-trip time, with 1 and with 32 requests in flight; CPU of every process per request.\n`)
    out.push(
      table(
        ['mechanism', 'topic msgs/s per subscriber', 'topic CPU µs/delivery', 'req/s (1 in flight)', 'RTT p50 µs', 'CPU µs/req', 'req/s (32 in flight)', 'RTT p50 µs (32)', 'CPU µs/req (32)'],
        tr.map((id) => {
          const x = f[id]
          return [x.label + (x.errors.length ? ' ⚠' : ''), rate(get.topic(x)), us(get.topicCpu(x)), rate(get.rpc(x)), us(get.rpcP50(x)), us(get.rpcCpu(x)), rate(get.rpc32(x)), us(get.rpc32P50(x)), us(get.rpc32Cpu(x))]
        }),
      ),
    )
    const s0 = f['shm-buffer']
    const peersTr = PEERS.filter((id) => f[id] && tr.includes(id))
    if (s0 && peersTr.length) {
      out.push('\ncluster-shm (Buffer) against each peer (above 1× cluster-shm wins):\n')
      out.push(
        table(
          ['', 'topic msgs/s', 'topic CPU/delivery', 'req/s (1)', 'RTT p50 (1)', 'req/s (32)'],
          peersTr.map((p) => {
            const b = f[p]
            return [`vs ${b.label}`, ratio(get.topic(s0) / get.topic(b)), ratio(get.topicCpu(b) / get.topicCpu(s0)), ratio(get.rpc(s0) / get.rpc(b)), ratio(get.rpcP50(b) / get.rpcP50(s0)), ratio(get.rpc32(s0) / get.rpc32(b))]
          }),
        ),
      )
    }
  }

  const shms = ['shm-buffer', 'shm-string'].filter((id) => f[id])
  const peers = PEERS.filter((id) => f[id])
  if (shms.length && peers.length) {
    out.push('\n#### cluster-shm against each peer (same run)\n')
    out.push('How many times better cluster-shm is: peer latency ÷ cluster-shm latency, cluster-shm rate ÷ peer rate, peer CPU ÷ cluster-shm CPU. Above 1× cluster-shm wins.\n')
    const lastN = N[N.length - 1]
    const body = []
    for (const s of shms) {
      for (const p of peers) {
        const a = f[s]
        const b = f[p]
        body.push([
          `${a.label} vs ${b.label}`,
          ratio(get.p50(b) / get.p50(a)),
          ratio(get.rate(a) / get.rate(b)),
          ratio(get.mbps(a) / get.mbps(b)),
          ratio(lastN && get.bc(lastN)(a) / get.bc(lastN)(b)),
          ratio(get.cpu(b) / get.cpu(a)),
          ratio(lastN && get.bcCpu(lastN)(b) / get.bcCpu(lastN)(a)),
        ])
      }
    }
    out.push(table(['', 'latency p50', '64 B msgs/s', '1 MiB MB/s', `bcast N=${lastN ?? '–'} msgs/s`, 'CPU/msg (stream)', `CPU/delivery (bcast N=${lastN ?? '–'})`], body))
  }

  const same = samePayloadRows(f)
  if (same.length) {
    out.push('\n#### Same payload, cluster-shm against the socket and process.send\n')
    out.push('Each cluster-shm row against a peer that sends the same kind of data: small objects (`{ k, s, d }`, JSON frames on the socket), short strings, 64-byte Buffers (raw frames). Rates: cluster-shm ÷ peer; latency and CPU: peer ÷ cluster-shm. Above 1× cluster-shm wins.\n')
    out.push(table(['', 'msgs/s', 'CPU/msg (stream)', 'latency p50', 'req/s (1)', 'req/s (32)', 'CPU/req (1)'], same))
  }

  const goals = goalRows(f, N)
  if (goals.length) {
    out.push('\n#### Goals ([docs/design.md](../docs/design.md#performance-goals)), as ratios of this run\n')
    out.push(table(['goal', 'target', 'measured', 'met'], goals))
  }

  const errs = ids.filter((id) => f[id].errors.length)
  if (errs.length) {
    out.push('\n#### Errors\n')
    for (const id of errs) for (const e of f[id].errors) out.push(`- ${f[id].label} ${e.split('\n')[0]}`)
  }

  if (native) {
    out.push(`\n#### Native ring and doorbell alone (\`cargo bench\`, ${native.date.replace('T', ' ').replace(/\..*/, ' UTC')})\n`)
    out.push('Process to process through src/core only (no Node, no N-API): what the JS numbers above pay on top of it is the cost of the binding and the event loop.\n')
    out.push(table(['case', 'result', 'detail'], native.rows.map((r) => [r.name, r.value, r.detail ?? ''])))
  }
  return out.join('\n')
}

/** Pairs of rows that carry the same payload: [cluster-shm id, peer id]. */
const SAME_PAYLOAD = [
  ['shm-object', 'sock-json'],
  ['shm-object', 'ps-json-object'],
  ['shm-string', 'sock-string'],
  ['shm-string', 'unix-socket'],
  ['shm-buffer', 'unix-socket'],
]

function samePayloadRows(f) {
  return SAME_PAYLOAD.filter(([a, b]) => f[a] && f[b]).map(([a, b]) => {
    const s = f[a]
    const p = f[b]
    return [`${s.label} vs ${p.label}`, ratio(get.rate(s) / get.rate(p)), ratio(get.cpu(p) / get.cpu(s)), ratio(get.p50(p) / get.p50(s)), ratio(get.rpc(s) / get.rpc(p)), ratio(get.rpc32(s) / get.rpc32(p)), ratio(get.rpcCpu(p) / get.rpcCpu(s))]
  })
}

/** The goals of issue 12 (every kind of message against the hand-written socket). */
function messageGoalRows(f, yes) {
  const rows = []
  const goal = (name, a, b, metric, min, fmt = rate) => {
    if (!f[a] || !f[b]) return
    const x = metric(f[a])
    const y = metric(f[b])
    if (x === undefined || y === undefined) return
    rows.push([name, `≥ ${min}×`, `${fmt(x)} vs ${fmt(y)} = ${num(x / y, 2)}×`, yes(x / y >= min)])
  }
  goal('small objects msgs/s ≥ 1.5× Unix socket (JSON frames)', 'shm-object', 'sock-json', get.rate, 1.5)
  goal('small objects msgs/s ≥ 10× process.send (json)', 'shm-object', 'ps-json-object', get.rate, 10)
  goal('short strings msgs/s ≥ 2× Unix socket (raw frames)', 'shm-string', 'unix-socket', get.rate, 2)
  goal('topic msgs/s per subscriber ≥ 1× Unix socket', 'shm-buffer', 'unix-socket', get.topic, 1)
  goal('req/s, 1 in flight ≥ 1.2× Unix socket', 'shm-buffer', 'unix-socket', get.rpc, 1.2)
  goal('req/s, 32 in flight ≥ 1.5× Unix socket', 'shm-buffer', 'unix-socket', get.rpc32, 1.5)
  goal('object req/s, 1 in flight ≥ 1.2× Unix socket (JSON frames)', 'shm-object', 'sock-json', get.rpc, 1.2)
  goal('object req/s, 32 in flight ≥ 1.5× Unix socket (JSON frames)', 'shm-object', 'sock-json', get.rpc32, 1.5)
  return rows
}

function goalRows(f, N) {
  const s = f['shm-buffer']
  if (!s) return []
  const rows = []
  const yes = (ok) => (ok === undefined || Number.isNaN(ok) ? '–' : ok ? 'yes' : '**no**')
  const cmp = (a, b) => (a === undefined || b === undefined ? undefined : a / b)
  const sock = f['unix-socket']
  const pj = f['ps-json']
  const pa = f['ps-advanced']
  if (sock) {
    const r = cmp(get.p50(s), get.p50(sock))
    rows.push(['latency p50 ≤ direct Unix socket', '≤ 1.0× socket', r === undefined ? '–' : `${us(get.p50(s))} vs ${us(get.p50(sock))} µs = ${num(r, 3)}×`, yes(r !== undefined && r <= 1)])
  }
  for (const p of [pj, pa].filter(Boolean)) {
    const r = cmp(get.p50(s), get.p50(p))
    rows.push([`latency p50 ≤ ½ ${p.label}`, '≤ 0.5×', r === undefined ? '–' : `${us(get.p50(s))} vs ${us(get.p50(p))} µs = ${num(r, 3)}×`, yes(r !== undefined && r <= 0.5)])
  }
  const spin = f['shm-spin']
  if (spin) rows.push(['spinning receiver (spinMicros 50) p50 < 5 µs', '< 5 µs', `${us(get.p50(spin))} µs (p99 ${us(get.p99(spin))} µs, ${us(get.latCpu(spin))} µs CPU/msg)`, yes(get.p50(spin) < 5)])
  const poll = f['shm-poll']
  if (poll) rows.push(['(reference) busy-poll read() on the JS thread p50', '< 5 µs', `${us(get.p50(poll))} µs`, yes(get.p50(poll) < 5)])
  if (sock) {
    const r = cmp(get.rate(s), get.rate(sock))
    rows.push(['64 B msgs/s ≥ 2× Unix socket', '≥ 2×', r === undefined ? '–' : `${rate(get.rate(s))} vs ${rate(get.rate(sock))} = ${num(r, 3)}×`, yes(r !== undefined && r >= 2)])
  }
  for (const p of [pj, pa].filter(Boolean)) {
    const r = cmp(get.rate(s), get.rate(p))
    rows.push([`64 B msgs/s ≥ 20× ${p.label}`, '≥ 20×', r === undefined ? '–' : `${rate(get.rate(s))} vs ${rate(get.rate(p))} = ${num(r, 1)}×`, yes(r !== undefined && r >= 20)])
  }
  if (sock) {
    const r = cmp(get.mbps(s), get.mbps(sock))
    rows.push(['1 MiB MB/s ≥ 3× Unix socket', '≥ 3×', r === undefined ? '–' : `${mb(get.mbps(s))} vs ${mb(get.mbps(sock))} MB/s = ${num(r, 3)}×`, yes(r !== undefined && r >= 3)])
  }
  const lo = N[0]
  const hi = N[N.length - 1]
  if (lo !== undefined && hi !== undefined && hi !== lo) {
    const a = get.bcCpu(lo)(s)
    const b = get.bcCpu(hi)(s)
    const r = cmp(b, a)
    rows.push([`broadcast cost linear in N (CPU per delivery, N=${hi} ÷ N=${lo})`, '≈ 1 (≤ 1.5×)', r === undefined ? '–' : `${us(b)} vs ${us(a)} µs = ${num(r, 3)}×`, yes(r !== undefined && r <= 1.5)])
  }
  const peers = PEERS.map((id) => f[id]).filter(Boolean)
  const below = (metric, name) => {
    const mine = metric(s)
    const others = peers.map((p) => [p, metric(p)]).filter(([, v]) => v !== undefined)
    if (mine === undefined || others.length === 0) return
    const best = others.reduce((a, b) => (b[1] < a[1] ? b : a))
    rows.push([`CPU per message below every peer (${name})`, `< ${best[0].label}`, `${us(mine)} vs ${us(best[1])} µs = ${num(mine / best[1], 2)}×`, yes(mine < best[1])])
  }
  below(get.cpu, '64 B stream')
  below(get.latCpu, 'ping-pong')
  below(get.bulkCpu, '1 MiB, per message')
  if (hi !== undefined) below(get.bcCpu(hi), `broadcast N=${hi}, per delivery`)
  rows.push(...messageGoalRows(f, yes))
  return rows
}

// ---- chart ----

const COLORS = {
  'shm-buffer': '#0f766e',
  'shm-string': '#14b8a6',
  'shm-value': '#5eead4',
  'shm-object': '#2dd4bf',
  'shm-spin': '#0e7490',
  'shm-poll': '#67e8f9',
  'ps-json': '#b45309',
  'ps-advanced': '#f59e0b',
  'unix-socket': '#4f46e5',
  'sock-string': '#6366f1',
  'sock-json': '#818cf8',
  'ps-json-object': '#d97706',
  redis: '#dc2626',
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** Horizontal bars on a log scale, one panel per metric. */
function svg(meta, rows, f) {
  const W = 980
  const LABEL = 270
  const PLOT = 560
  const BAR = 14
  const GAP = 6
  const panels = []
  const ids = rows.map((r) => r.id).filter((id) => f[id])
  const N = [2, 4, 8].filter((n) => ids.some((id) => f[id].broadcast[n]))
  panels.push({ title: 'One-way latency p50 (µs; tick: p99) — shorter is better', fmt: us, items: ids.map((id) => [id, get.p50(f[id]), get.p99(f[id])]) })
  panels.push({ title: '64-byte messages per second, one sender to one receiver — longer is better', fmt: rate, items: ids.map((id) => [id, get.rate(f[id])]) })
  panels.push({ title: '1 MiB Buffers, MB/s end to end — longer is better', fmt: mb, items: ids.map((id) => [id, get.mbps(f[id])]) })
  for (const n of N) panels.push({ title: `Broadcast to ${n - 1} receiver${n > 2 ? 's' : ''} (N=${n}), messages/s per receiver — longer is better`, fmt: rate, items: ids.map((id) => [id, get.bc(n)(f[id])]) })
  panels.push({ title: 'CPU time per 64-byte message (µs, all processes) — shorter is better', fmt: us, items: ids.map((id) => [id, get.cpu(f[id])]) })
  panels.push({ title: 'Topic with 2 subscribers among 8 workers, messages/s per subscriber — longer is better', fmt: rate, items: ids.map((id) => [id, get.topic(f[id])]) })
  panels.push({ title: 'Request/response, 1 in flight: round trip p50 (µs) — shorter is better', fmt: us, items: ids.map((id) => [id, get.rpcP50(f[id])]) })
  let y = 76
  const parts = []
  for (const p of panels) {
    const items = p.items.filter(([, v]) => v !== undefined && v > 0)
    if (items.length === 0) continue
    const vals = items.flatMap(([, v, w]) => (w ? [v, w] : [v]))
    const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...vals))))
    const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...vals) * 1.05)))
    const x = (v) => LABEL + (Math.log10(v / lo) / Math.log10(hi / lo)) * PLOT
    parts.push(`<text x="20" y="${y}" class="t">${esc(p.title)}</text>`)
    y += 12
    const top = y
    const height = items.length * (BAR + GAP)
    for (let d = lo; d <= hi * 1.0001; d *= 10) {
      parts.push(`<line x1="${x(d).toFixed(1)}" y1="${top}" x2="${x(d).toFixed(1)}" y2="${top + height}" class="g"/>`)
      parts.push(`<text x="${x(d).toFixed(1)}" y="${top + height + 12}" class="a">${esc(p.fmt(d))}</text>`)
    }
    for (const [id, v, w] of items) {
      const yy = y + GAP / 2
      parts.push(`<text x="${LABEL - 8}" y="${yy + BAR - 3}" class="l">${esc(f[id].label)}</text>`)
      parts.push(`<rect x="${LABEL}" y="${yy}" width="${Math.max(1, x(v) - LABEL).toFixed(1)}" height="${BAR}" fill="${COLORS[id] || '#888'}"/>`)
      let end = x(v)
      if (w) {
        parts.push(`<line x1="${x(w).toFixed(1)}" y1="${yy - 1}" x2="${x(w).toFixed(1)}" y2="${yy + BAR + 1}" stroke="#111" stroke-width="2"/>`)
        parts.push(`<line x1="${x(v).toFixed(1)}" y1="${yy + BAR / 2}" x2="${x(w).toFixed(1)}" y2="${yy + BAR / 2}" stroke="#111" stroke-width="1"/>`)
        end = Math.max(end, x(w))
      }
      parts.push(`<text x="${(end + 6).toFixed(1)}" y="${yy + BAR - 3}" class="v">${esc(p.fmt(v))}${w ? ` (p99 ${esc(p.fmt(w))})` : ''}</text>`)
      y += BAR + GAP
    }
    y += 40
  }
  const when = meta.date.replace('T', ' ').replace(/\..*/, ' UTC')
  const head = `cluster-shm vs the alternatives — Node ${meta.node}, ${meta.cpus} vCPU, ${when}${meta.quick ? ' (quick run)' : ''}`
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="Helvetica, Arial, sans-serif">`,
    '<style>.t{font-size:14px;font-weight:bold;fill:#111}.l{font-size:12px;text-anchor:end;fill:#222}.v{font-size:11px;fill:#222}.a{font-size:10px;text-anchor:middle;fill:#666}.g{stroke:#ddd;stroke-width:1}.h{font-size:16px;font-weight:bold;fill:#111}.s{font-size:11px;fill:#555}</style>',
    `<rect width="${W}" height="${y}" fill="#fff"/>`,
    `<text x="20" y="24" class="h">${esc(head)}</text>`,
    `<text x="20" y="40" class="s">Between two cluster workers (broadcast: 1 to N−1), primary present; log scales; every figure from the same run${meta.repeat > 1 ? ` (medians of ${meta.repeat} rounds)` : ''}.</text>`,
    `<text x="20" y="53" class="s">${esc(meta.library?.commit ? `cluster-shm ${meta.library.commit}; ` : '')}load average ${(meta.loadavgBefore || []).map((l) => l.toFixed(1)).join(' ')} at start; method: bench/README.md.</text>`,
    ...parts,
    '</svg>',
  ].join('\n')
}

// ---- files ----

function writeAtomic(file, text) {
  const tmp = `${file}.tmp`
  fs.writeFileSync(tmp, text)
  fs.renameSync(tmp, file)
}

function readNative() {
  try {
    return JSON.parse(fs.readFileSync(NATIVE, 'utf8'))
  } catch {
    return null
  }
}

function write({ meta, rows, cases, outDir, updateReadme }) {
  fs.mkdirSync(outDir, { recursive: true })
  const f = figures(rows, cases)
  const native = readNative()
  const md = markdown(meta, rows, f, native)
  const paths = {
    json: path.join(outDir, 'results.json'),
    markdown: path.join(outDir, 'results.md'),
    svg: path.join(outDir, 'chart.svg'),
  }
  writeAtomic(paths.json, JSON.stringify({ meta, figures: f, cases }, null, 2) + '\n')
  writeAtomic(paths.markdown, `# cluster-shm benchmark results\n\n${md}\n\n![chart](chart.svg)\n`)
  writeAtomic(paths.svg, svg(meta, rows, f) + '\n')
  if (updateReadme && fs.existsSync(README)) {
    const text = fs.readFileSync(README, 'utf8')
    const start = '<!-- results:start -->'
    const end = '<!-- results:end -->'
    const i = text.indexOf(start)
    const j = text.indexOf(end)
    if (i >= 0 && j > i) {
      const block = `${start}\n${md}\n\n![chart](results/chart.svg)\n${end}`
      writeAtomic(README, text.slice(0, i) + block + text.slice(j + end.length))
    }
  }
  return { markdown: md, paths }
}

module.exports = { write, figures, markdown, svg }

// `node bench/lib/report.js [results.json]`: writes the report again from the raw figures of a run
// (next to that file; the README section too when it is bench/results/results.json of a full run).
if (require.main === module) {
  const file = path.resolve(process.argv[2] || path.join(__dirname, '..', 'results', 'results.json'))
  const { meta, cases } = JSON.parse(fs.readFileSync(file, 'utf8'))
  const rows = []
  for (const c of cases) {
    if (!rows.some((r) => r.id === c.id)) rows.push({ id: c.id, label: c.label, shm: c.mech === 'cluster-shm' })
  }
  const own = file === path.join(__dirname, '..', 'results', 'results.json')
  const { paths } = write({ meta, rows, cases, outDir: path.dirname(file), updateReadme: own && !meta.quick })
  console.log(`wrote ${Object.values(paths).join(', ')}`)
}
