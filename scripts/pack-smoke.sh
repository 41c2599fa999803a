#!/usr/bin/env bash
# The packaged result, installed as a user would, without Rust: builds the release binary of this
# platform (npm run build), packs it into its platform package (npm/<platform>/, as `napi
# prepublish` publishes it) and packs the main package (npm pack), checks what each tarball
# holds, installs both tarballs into an empty temporary project with `npm install --offline` and
# a PATH without cargo or rustc, and runs the two-worker exchange (scripts/smoke-exchange.js)
# from there, checking that the binary came from node_modules/cluster-shm-<platform>. Cleans up
# after itself. ~15 s when the release build is up to date (after `npm test`), ~70 s otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cluster-shm-pack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# napi's platform name of this machine (linux-x64-gnu, linux-x64-musl, darwin-arm64, win32-x64-msvc, ...)
platform=$(node -p '
  const { platform, arch } = process;
  const abi = platform === "linux" ? (process.report.getReport().header.glibcVersionRuntime ? "-gnu" : "-musl")
    : platform === "win32" ? "-msvc" : "";
  `${platform}-${arch}${abi}`')
[ -d "npm/$platform" ] || die "no npm/$platform package: this platform is not in napi.targets"
binary="cluster-shm.$platform.node"

say "release build (npm run build)"
npm run build --silent >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log"; die "npm run build"; }
[ -f "$binary" ] || die "the build made no $binary"

say "npm pack: cluster-shm-$platform and cluster-shm"
cp -r "npm/$platform" "$tmp/platform-pkg"
cp "$binary" "$tmp/platform-pkg/"
(cd "$tmp/platform-pkg" && npm pack --silent --pack-destination "$tmp" >/dev/null)
npm pack --silent --pack-destination "$tmp" >/dev/null
main_tgz=$(ls "$tmp"/cluster-shm-[0-9]*.tgz)
plat_tgz=$(ls "$tmp"/cluster-shm-"$platform"-*.tgz)
main_files=$(tar -tzf "$main_tgz" | sort)
plat_files=$(tar -tzf "$plat_tgz" | sort)
echo "$(basename "$main_tgz"): $(echo $main_files)"
echo "$(basename "$plat_tgz"): $(echo $plat_files)"
for f in index.js index.d.ts binding.js package.json lib/*.js; do grep -qx "package/$f" <<<"$main_files" || die "main tarball lacks $f"; done
grep -q '\.node$' <<<"$main_files" && die "the main tarball carries a binary (it belongs in the platform package)"
grep -qx "package/$binary" <<<"$plat_files" || die "platform tarball lacks $binary"

say "npm install --offline into an empty project, PATH without cargo/rustc"
app="$tmp/app"
mkdir -p "$app/bin"
ln -s "$(command -v node)" "$app/bin/node"
ln -s "$(command -v npm)" "$app/bin/npm"
cp scripts/smoke-exchange.js "$app/"
clean_env=(env -i HOME="$tmp/home" PATH="$app/bin:/usr/bin:/bin" TMPDIR="$tmp" CARGO_HOME=/nonexistent RUSTUP_HOME=/nonexistent
  npm_config_cache="$tmp/npm-cache" npm_config_update_notifier=false)
mkdir -p "$tmp/home"
# The restricted PATH must really lack a Rust toolchain (npm could otherwise build from source).
if "${clean_env[@]}" sh -c 'command -v cargo || command -v rustc' >/dev/null; then die "cargo/rustc still on the restricted PATH"; fi
(cd "$app" && "${clean_env[@]}" npm init -y >/dev/null &&
  "${clean_env[@]}" npm install --offline --no-audit --no-fund --silent "$main_tgz" "$plat_tgz")

say "two-worker exchange from the installed package"
(cd "$app" && "${clean_env[@]}" node smoke-exchange.js) | tee "$tmp/smoke.out"
grep -q '^smoke: ok' "$tmp/smoke.out" || die "smoke test from the installed package"
loaded=$(cd "$app" && "${clean_env[@]}" node -e "require('cluster-shm'); console.log(Object.keys(require.cache).find((k) => k.endsWith('.node')))")
echo "binary loaded: $loaded"
case "$loaded" in
  "$app/node_modules/cluster-shm-$platform/$binary") ;;
  *) die "the binary did not come from node_modules/cluster-shm-$platform" ;;
esac
say "pack-smoke ok ($(elapsed))"
