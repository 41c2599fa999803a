'use strict'
// Preloaded by scripts/test-bun.sh: ava's CLI calls v8.takeCoverage() at the end of a run, which
// Bun does not implement (it throws ERR_NOT_IMPLEMENTED). Coverage is not collected under Bun.
require('node:v8').takeCoverage = () => {}
