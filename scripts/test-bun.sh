#!/usr/bin/env bash
# The specs under Bun (the `bun` npm package, a devDependency): ava itself, its workers and every
# cluster fixture they fork run on Bun's binary (process.execPath). BUN_SPECS overrides the set.
# Left out: __test__/sync.spec.js, whose map tests size structured values by Node's v8.serialize
# (Bun's output is longer: 65 bytes where Node's is 55, so ERR_PAYLOAD_TOO_LARGE comes earlier).
set -euo pipefail
cd "$(dirname "$0")/.."
bun=node_modules/.bin/bun
"$bun" --version
specs=${BUN_SPECS:-"__test__/messaging.spec.js __test__/errors.spec.js __test__/hostile-input.spec.js __test__/topics.spec.js __test__/lifecycle.spec.js __test__/primary-death.spec.js __test__/queue-limit.spec.js __test__/map-stopped-holder.spec.js __test__/bun.spec.js"}
# shellcheck disable=SC2086 # the spec list is split on purpose
"$bun" --preload ./scripts/bun-preload.js node_modules/ava/entrypoints/cli.mjs $specs
