#!/usr/bin/env bash
# The Debian part of the managed plugin's rootfs, made once per input and kept: OUT/ holds a minbase bookworm with
# only what tsnet runs (ip, nft, iptables for dockerd's DOCKER-USER chain) and nothing apt leaves behind (lists,
# caches, docs, man pages, locales). Packages come from deb.debian.org, as every other Debian package here.
# usrmerge (and the 50 MiB of perl it brings) is purged: the tree is merged already and usr-is-merged stands in.
# usage: plugin-base.sh OUT SUITE PACKAGES(comma-separated)
set -euo pipefail
out=$1 suite=$2 pkgs=$3
[ -d "$out" ] && exit 0
tmp=$(mktemp -d "$out.partial.XXXXXX") # beside OUT: the final rename stays on one filesystem
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --variant=minbase --include="$pkgs" --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/zoneinfo/*' \
  --customize-hook='chroot "$1" apt-get -y -qq purge --autoremove usrmerge libfile-find-rule-perl perl perl-modules-5.36 libperl5.36' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*' \
  "$suite" "$tmp/rootfs" http://deb.debian.org/debian
mv "$tmp/rootfs" "$out"
