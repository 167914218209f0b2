#!/usr/bin/env bash
# Installs what the deployment checks (go test ./deploy) need, when it is
# missing: promtool from Debian's prometheus package, and helm, built once
# from the Go module proxy at the version pinned in deploy/tools_test.go
# into the user cache (~/.cache/pkgfleet/tools/helm-<version>/helm), where
# the tests find it. Safe to run again: it does nothing when both are there.
# With --print-helm it prints that helm's path on stdout (for PKGFLEET_HELM).
set -euo pipefail
cd "$(dirname "$0")/.."

helm_version=$(sed -n 's/^const helmVersion = "\(v[0-9.]*\)"$/\1/p' deploy/tools_test.go)
if [ -z "$helm_version" ]; then
  echo "deploy-deps: no helmVersion in deploy/tools_test.go" >&2
  exit 1
fi

if ! command -v promtool >/dev/null; then
  if ! command -v apt-get >/dev/null; then
    echo "deploy-deps: promtool is missing and there is no apt-get; install Prometheus' promtool by hand" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deploy-deps: installing prometheus (for promtool)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # Only the binaries are wanted: keep the packaged service from starting
  # where an init system would start it.
  $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

cache=${XDG_CACHE_HOME:-$HOME/.cache}
helm_dir=$cache/pkgfleet/tools/helm-$helm_version
if [ ! -x "$helm_dir/helm" ]; then
  echo "deploy-deps: building helm $helm_version into $helm_dir (once; a few minutes)" >&2
  mkdir -p "$helm_dir"
  tmp=$(mktemp -d "$helm_dir/build-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && GOBIN=$tmp GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
    go install "-ldflags=-X helm.sh/helm/v3/internal/version.version=$helm_version" \
    "helm.sh/helm/v3/cmd/helm@$helm_version")
  mv "$tmp/helm" "$helm_dir/helm"
fi
if [ "${1:-}" = --print-helm ]; then
  echo "$helm_dir/helm"
fi
