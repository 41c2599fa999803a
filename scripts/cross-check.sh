#!/usr/bin/env bash
# Keeps the platforms that cannot run here from breaking silently: `cargo check` and
# `cargo clippy -D warnings` of the library and of its unit tests (`--profile test`) for
# x86_64-pc-windows-msvc, x86_64-apple-darwin and aarch64-apple-darwin (checking needs no
# linker, no SDK and no MSVC libraries). Installs the rustup targets it needs. The integration
# tests in tests/ are Unix-only and are not checked for Windows (CROSS_CHECK_ALL_TARGETS=1 adds
# --all-targets anyway). Exits non-zero on the first failure. ~1.5 min (first run: three
# targets' std and a check of the dependencies for each, ~3 min).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

TARGETS=${CROSS_CHECK_TARGETS:-x86_64-pc-windows-msvc x86_64-apple-darwin aarch64-apple-darwin}
need_target $TARGETS
extra=()
[ -n "${CROSS_CHECK_ALL_TARGETS:-}" ] && extra=(--all-targets)

for t in $TARGETS; do
  say "$t: cargo check"
  cargo check --quiet --target "$t" --lib "${extra[@]}"
  cargo check --quiet --target "$t" --lib --profile test
  say "$t: cargo clippy -D warnings"
  cargo clippy --quiet --target "$t" --lib "${extra[@]}" -- -D warnings
  cargo clippy --quiet --target "$t" --lib --profile test -- -D warnings
done
say "cross-check ok: $TARGETS ($(elapsed))"
