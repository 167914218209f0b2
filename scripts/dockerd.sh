#!/usr/bin/env bash
# Makes sure a Docker Engine answers on this machine: installs Debian's
# Docker Engine package when dockerd is missing, and starts dockerd in the background
# when nothing listens on its socket (CI and fresh machines start with no
# services). Logs go to ~/.cache/pkgfleet/dockerd.log. Safe to run again.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v dockerd >/dev/null; then
  source "$(dirname "$0")/apt.sh"
  apt_install dockerd docker.io containerd runc iptables
fi
if ! docker info >/dev/null 2>&1; then
  log=${XDG_CACHE_HOME:-$HOME/.cache}/pkgfleet/dockerd.log
  mkdir -p "$(dirname "$log")"
  echo "dockerd: starting dockerd (log: $log)" >&2
  # setsid: the engine outlives this script and the make that ran it.
  $sudo setsid dockerd >>"$log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
  done
  echo "dockerd: the engine did not answer within 60s; see $log" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
