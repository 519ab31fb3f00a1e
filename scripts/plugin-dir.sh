#!/usr/bin/env bash
# Assembles the managed plugin's directory for `docker plugin create`: OUT/config.json (the checkout's top-level config.json) and
# OUT/rootfs = the Debian base (plugin-base.sh) + the pinned Node runtime's binary (stripped) + tsnet (bin/, dist/) + its
# production dependencies. Those are installed once per package-lock.json into MODULES (npm ci --omit=dev, scripts
# off), and better-sqlite3's native addon is the one the checkout built against this same runtime (make's module
# stamp), so nothing compiles here and the addon matches the node it runs under.
# usage: plugin-dir.sh OUT BASE NODE NPM MODULES
set -euo pipefail
out=$1 base=$2 node=$3 npm=$4 modules=$5
addon=node_modules/better-sqlite3/build/Release/better_sqlite3.node
[ -f "$addon" ] || { echo "plugin-dir: $addon missing (make build first)" >&2; exit 1; }

if [ ! -d "$modules" ]; then
  stage=$(mktemp -d "$modules.partial.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  cp package.json package-lock.json "$stage/"
  (cd "$stage" && "$npm" ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
  # The addon's sources and build inputs are not needed at run time.
  rm -rf "$stage/node_modules/better-sqlite3/deps" "$stage/node_modules/better-sqlite3/src"
  mv "$stage/node_modules" "$modules"
  rm -rf "$stage"
  trap - EXIT
fi

rm -rf "$out" "$out.partial"
mkdir -p "$out.partial/rootfs"
cp -a "$base/." "$out.partial/rootfs/"
root=$out.partial/rootfs
# The official binary carries its debug info (18 MiB); the plugin's copy goes without (the checked one is untouched).
mkdir -p "$root/usr/local/bin"
strip -o "$root/usr/local/bin/node" "$node"
mkdir -p "$root/app" "$root/var/lib/tsnet" "$root/host/proc" "$root/host/run"
cp -a bin dist package.json "$root/app/"
rm -rf "$root/app/dist/.compile-cache"
cp -a "$modules" "$root/app/node_modules"
install -D -m 0755 "$addon" "$root/app/$addon"
cp config.json "$out.partial/config.json"
mv "$out.partial" "$out"
echo "plugin-dir: $out, rootfs $(du -sm "$out/rootfs" | cut -f1) MiB"
