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
  if ! command -v apt-get >/dev/null; then
    echo "dockerd: no Docker Engine and no apt-get to install one; install Docker by hand" >&2
    exit 1
  fi
  echo "dockerd: installing Debian's Docker Engine" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends docker.io containerd runc iptables >/dev/null
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
