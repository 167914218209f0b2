#!/usr/bin/env bash
# Installs what pkgfleet's run and tests need on Debian/Ubuntu, when it is
# missing: redis-server, R, Python's build module (with setuptools and
# wheel for --no-isolation builds), git and bubblewrap (benchmarks only);
# with --tests also chromium (the builds page's browser test drives it
# headless), redis-sentinel (the failover tests), setuptools-scm, hatchling
# and hatch-vcs, which make run does not need, and versitygw, the S3 server
# the tests start (scripts/versitygw.sh builds it once into
# ~/.cache/pkgfleet/tools/).
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v git >/dev/null || need+=(git)
[ -x /usr/lib/R/bin/R ] || command -v R >/dev/null || need+=(r-base-core)
/usr/bin/python3 -c 'import build, setuptools, wheel, venv, ensurepip' 2>/dev/null ||
  need+=(python3-build python3-setuptools python3-wheel python3-venv python3-pip)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v unshare >/dev/null || need+=(util-linux)
if [ "${1:-}" = --tests ]; then
  command -v chromium >/dev/null || need+=(chromium)
  # One master, two replicas and three sentinels (faulttest's failover),
  # and the chart's Sentinel scripts (deploy/).
  command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
  # A package that takes its version from its git tag (e2e), as the
  # worker image's setuptools-scm and hatch-vcs do.
  /usr/bin/python3 -c 'import setuptools_scm' 2>/dev/null || need+=(python3-setuptools-scm)
  # Packages versioned from git history by hatch-vcs (e2e versions_test.go).
  /usr/bin/python3 -c 'import hatchling, hatch_vcs' 2>/dev/null || need+=(python3-hatchling python3-hatch-vcs)
fi

# As root, builds run as a dedicated unprivileged user (Server.RunAsUser's
# default): create it once, without a home or a login shell.
if [ "$(id -u)" -eq 0 ] && ! id pkgfleet >/dev/null 2>&1 && command -v useradd >/dev/null; then
  echo "deps: creating the system user pkgfleet that builds run as" >&2
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pkgfleet
fi

if [ ${#need[@]} -gt 0 ]; then
  source "$(dirname "$0")/apt.sh"
  apt_install deps "${need[@]}"
  # Only the binary is wanted: the tests start their own sentinels, and
  # the packaged service would hold port 26379.
  if [[ " ${need[*]} " == *" redis-sentinel "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet redis-sentinel 2>/dev/null; then
    systemctl disable --now redis-sentinel >/dev/null 2>&1 || true
  fi
fi
if [ "${1:-}" = --tests ]; then
  bash "$(dirname "$0")/versitygw.sh"
fi
