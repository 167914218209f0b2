#!/usr/bin/env bash
# make test: every check, in phases, one line each with its time and a
# summary at the end. Each phase's whole output goes to var/test-logs/<phase>.log
# (PKGFLEET_TEST_VERBOSE=1 also shows it); a failed phase shows the end of
# its log, and the phases after it still run.
#
#   install     what the tests need: apt packages (deps.sh), promtool, helm,
#               kube-apiserver, etcd, the node's kubelet, scheduler,
#               controller manager and CoreDNS (deploy-deps.sh, built once
#               into ~/.cache)
#   vet         go vet ./..., and what each binary links (scripts/binaries.sh)
#   lint        gofmt and staticcheck
#   unit        go test -race of every package but the ones below
#   sandbox     the sandbox's escape suite again as an unprivileged user, both tiers
#   e2e         internal/e2e: API + worker + Redis + R/Python builds, the builds page in Chromium
#   fault       internal/faulttest: Redis, worker and build failures injected
#   fleet       internal/fleettest: several real worker processes and API replicas
#   chart       ./deploy: alert rules (promtool), the chart (helm, a real kube-apiserver)
#   containers  images, the compose stack, the worker under each Docker setting
#   cluster     the Helm chart on a single-node Kubernetes of its own
#               (scripts/test-cluster.sh, internal/clustertest)
#   fuzz        every fuzz target for a fixed count of inputs
#
# PKGFLEET_TEST_PHASES="vet lint unit" runs only those (install always runs).
# Tests start their own redis-server processes (one per test package, on
# unix sockets); the containers phase starts a Docker Engine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI=${CI:-}
logs=${PKGFLEET_TEST_LOGS:-$PWD/var/test-logs}
mkdir -p "$logs"
export PKGFLEET_TEST_ARTIFACTS=${PKGFLEET_TEST_ARTIFACTS:-${TMPDIR:-/tmp}/pkgfleet-test-artifacts}

module=$(go list -m)
special=(internal/e2e internal/faulttest internal/fleettest deploy)

install() { bash scripts/deps.sh --tests && bash scripts/deploy-deps.sh; }
vet() { go vet ./... && bash scripts/binaries.sh; }
lint() {
  local unformatted
  unformatted=$(gofmt -l $(git ls-files '*.go'))
  if [ -n "$unformatted" ]; then
    echo "gofmt needed: $unformatted"
    return 1
  fi
  go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
}
unit() {
  local skip pkgs
  skip=$(printf -- "-e ^$module/%s\$ " "${special[@]}")
  # shellcheck disable=SC2086
  pkgs=$(go list ./... | grep -v $skip)
  # shellcheck disable=SC2086
  go test -race -count=1 -timeout 30m $pkgs
}
gotest() { go test -race -count=1 -timeout 30m -v "./$1/"; }

took() { # seconds
  if [ "$1" -ge 60 ]; then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi
}

summary=() failed=0 passed=0
phase() { # name what command...
  local name=$1 what=$2
  shift 2
  if [ "$name" != install ] && [ -n "${PKGFLEET_TEST_PHASES:-}" ] && [[ " $PKGFLEET_TEST_PHASES " != *" $name "* ]]; then
    return 0
  fi
  local log=$logs/$name.log start=$SECONDS rc=0
  printf 'test: %-10s %s\n' "$name" "$what"
  if [ -n "${PKGFLEET_TEST_VERBOSE:-}" ]; then
    "$@" 2>&1 | tee "$log" || rc=$?
  else
    "$@" >"$log" 2>&1 || rc=$?
  fi
  local t
  t=$(took $((SECONDS - start)))
  if [ "$rc" -eq 0 ]; then
    printf 'test: %-10s ok      %s\n' "$name" "$t"
    summary+=("$(printf '  %-10s ok      %7s' "$name" "$t")")
    passed=$((passed + 1))
  else
    printf 'test: %-10s FAILED  %s (exit %d); the end of %s:\n' "$name" "$t" "$rc" "$log"
    tail -n 60 "$log" | sed 's/^/    /'
    summary+=("$(printf '  %-10s FAILED  %7s  %s' "$name" "$t" "$log")")
    failed=$((failed + 1))
    if [ "$name" = install ]; then
      echo "test: nothing else can run without what install provides"
      exit 1
    fi
  fi
}

start=$SECONDS
phase install "installing what is missing (apt packages, promtool, helm, kube-apiserver)" install
phase vet "go vet ./..., what each binary links, the CLI for darwin and windows" vet
phase lint "gofmt and staticcheck" lint
phase unit "go test -race: every package but e2e, fault, fleet and deploy" unit
phase sandbox "the sandbox's escape suite as an unprivileged user, both tiers" bash scripts/test-sandbox-unprivileged.sh
phase e2e "API + worker + Redis building R and Python, the builds page in Chromium" gotest internal/e2e
phase fault "failures injected into Redis, workers and builds" gotest internal/faulttest
phase fleet "several worker processes and API replicas" gotest internal/fleettest
phase chart "alert rules, Grafana, profiles and the Helm chart against a kube-apiserver" gotest deploy
phase containers "images, compose stack, worker container under each Docker setting" bash scripts/test-containers.sh
phase cluster "the chart on a single-node Kubernetes: install, builds, upgrade, rollback, restricted" bash scripts/test-cluster.sh
phase fuzz "every fuzz target for a fixed count of inputs" bash scripts/fuzz.sh

echo
echo "make test: $(took $((SECONDS - start))) in all; logs in $logs, screenshots in $PKGFLEET_TEST_ARTIFACTS"
printf '%s\n' "${summary[@]}"
echo "phases: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
