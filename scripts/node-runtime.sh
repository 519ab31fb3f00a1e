#!/usr/bin/env bash
# Brings the pinned Node.js runtime and npm into DIR: DIR/bin/{node,npm,npx} and DIR/include/node (the headers
# node-gyp builds better-sqlite3 against, so it downloads none). The host's npm serves only as a downloader: when
# there is none, the distribution's `npm` package is installed for that (Debian 12 / Ubuntu 24.04 bring Node 18).
# `npm pack` checks each tarball against the registry's integrity; it is checked here again against the sha512
# pinned in the Makefile, so a tarball the registry serves differently later is refused.
# usage: node-runtime.sh DIR NODE_SPEC NODE_SHA512 NPM_SPEC NPM_SHA512   (SHA512s in npm's "sha512-<base64>" form)
set -euo pipefail
dir=$1 node_spec=$2 node_sri=$3 npm_spec=$4 npm_sri=$5

if ! command -v npm >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm
fi

mkdir -p "$(dirname "$dir")"
tmp=$(mktemp -d "$dir.partial.XXXXXX") # beside DIR: the final rename stays on one filesystem
trap 'rm -rf "$tmp"' EXIT

# Prints the path of SPEC's tarball once its sha512 matches SRI.
fetch() {
  local spec=$1 sri=$2 file want got
  file=$(cd "$tmp" && npm pack --silent "$spec" | tail -n 1)
  want=$(printf '%s' "${sri#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  got=$(sha512sum "$tmp/$file" | cut -d ' ' -f 1)
  if [ "$got" != "$want" ]; then
    echo "node-runtime: $spec does not match its pinned sha512 ($sri)" >&2
    return 1
  fi
  echo "$tmp/$file"
}

node_tgz=$(fetch "$node_spec" "$node_sri")
npm_tgz=$(fetch "$npm_spec" "$npm_sri")
rt=$tmp/runtime
mkdir -p "$rt/lib/npm"
tar -xzf "$node_tgz" -C "$rt" --strip-components=1 package/bin/node package/include package/LICENSE
tar -xzf "$npm_tgz" -C "$rt/lib/npm" --strip-components=1
for tool in npm npx; do
  printf '#!/bin/sh\n# %s pinned with this runtime, run by it.\nexec "$(dirname "$0")/node" "$(dirname "$0")/../lib/npm/bin/%s-cli.js" "$@"\n' "$tool" "$tool" >"$rt/bin/$tool"
  chmod 755 "$rt/bin/$tool"
done
"$rt/bin/node" --version >/dev/null # refuses a runtime this host cannot execute
rm -rf "$dir"
mv "$rt" "$dir"
echo "node-runtime: $("$dir/bin/node" --version) and npm $("$dir/bin/npm" --version) in $dir"
