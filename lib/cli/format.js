'use strict'
// Text formatting for the `cluster-shm` command: sizes, ages, tables, fill bars.

const { PRIMARY } = require('../state.js')

/** 1536 -> '1.5 KiB'. */
function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`
}

/** Seconds -> '42s', '5m', '3h', '2d'. */
function age(s) {
  if (s < 120) return `${Math.max(0, Math.round(s))}s`
  if (s < 7200) return `${Math.round(s / 60)}m`
  if (s < 172800) return `${Math.round(s / 3600)}h`
  return `${Math.round(s / 86400)}d`
}

/** 12345.6 -> '12.3k' (per-second rates). */
function rate(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`
  return String(Math.round(n))
}

function address(a) {
  return a === PRIMARY ? 'primary' : String(a)
}

/** `[#####.....]  50%` for a fraction 0..1. */
function bar(fraction, width = 20) {
  const f = Math.min(1, Math.max(0, fraction))
  const full = Math.round(f * width)
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}] ${String(Math.round(f * 100)).padStart(3)}%`
}

/** Rows (arrays of cells) under `head`, columns padded to their widest cell. */
function table(head, rows) {
  const all = [head, ...rows].map((r) => r.map(String))
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i].length)))
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd()).join('\n')
}

module.exports = { bytes, age, rate, address, bar, table }
