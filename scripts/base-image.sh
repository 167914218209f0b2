#!/usr/bin/env bash
# Makes the Debian 12 base image pkgfleet-base:bookworm without a container
# registry: debootstrap (minbase) from the machine's own Debian mirror, then
# docker import. The root filesystem is kept as a tarball in
# ~/.cache/pkgfleet/images/ so that a second run only imports it.
# Where a registry exists the Dockerfiles use debian:bookworm-slim instead.
#
#   bash scripts/base-image.sh [EXTRA_PACKAGES…]   # packages to include
#
# With extra packages the image is tagged pkgfleet-base:bookworm-<hash of the list>,
# and the tag is printed on stdout either way.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/dockerd.sh

pkgs=("$@")
tag=pkgfleet-base:bookworm
if [ ${#pkgs[@]} -gt 0 ]; then
  tag=pkgfleet-base:bookworm-$(printf '%s\n' "${pkgs[@]}" | sort | sha256sum | cut -c1-12)
fi
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
source scripts/apt.sh
if ! command -v debootstrap >/dev/null; then
  apt_install base-image debootstrap
fi
mirror=$(debian_mirror)
if [ -z "$mirror" ]; then
  echo "base-image: no Debian mirror found in /etc/apt/sources.list*; cannot debootstrap" >&2
  exit 1
fi

cache=${XDG_CACHE_HOME:-$HOME/.cache}/pkgfleet/images
mkdir -p "$cache"
tarball=$cache/${tag#pkgfleet-base:}.tar
if [ ! -s "$tarball" ]; then
  root=$(mktemp -d "$cache/rootfs-XXXXXX")
  trap '$sudo rm -rf "$root"' EXIT
  include=()
  if [ ${#pkgs[@]} -gt 0 ]; then
    include=(--include="$(IFS=,; echo "${pkgs[*]}")")
  fi
  echo "base-image: debootstrap bookworm ${pkgs[*]:-} (once; a few minutes)" >&2
  $sudo debootstrap --variant=minbase "${include[@]}" bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
  # What an image needs and a registry's base images leave out: no apt
  # lists or caches, no machine identity.
  $sudo rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  : | $sudo tee "$root/etc/machine-id" >/dev/null
  $sudo tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
docker import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
echo "$tag"
