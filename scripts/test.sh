#!/usr/bin/env bash
# make test: every check, in phases, one line each with its time and a
# summary at the end. Each phase's whole output goes to var/test-logs/<phase>.log
# (PKGFLEET_TEST_VERBOSE=1 also shows it); a failed phase shows the end of
# its log, and the phases after it still run.
#
#   install     what the tests need: apt packages and versitygw (deps.sh),
#               promtool, containerd (deploy-deps.sh --packages); then helm,
#               kube-apiserver, etcd, the node's kubelet, scheduler,
#               controller manager and CoreDNS (deploy-deps.sh, built once
#               into ~/.cache) build in the background for the chart,
#               containers and cluster phases
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

install() { bash scripts/deps.sh --tests && bash scripts/deploy-deps.sh --packages; }

# The Go tools only the chart, containers and cluster phases use (helm,
# Kubernetes, etcd, CoreDNS: deploy-deps.sh, built once into ~/.cache)
# build in the background at the lowest priority while the phases before
# them run. On a fresh machine that is 15-25 min of compiling on two
# cores, which would otherwise all come before the first test; this way
# most of it fills the e2e and fault phases' waits. Those three phases
# wait for it first (with_tools). The exit status goes through a file, so
# that a phase run in a subshell (PKGFLEET_TEST_VERBOSE) can wait too.
tools_log=$logs/tools.log
tools_rc=$logs/tools.rc
tools_pid=
start_tools() {
  local p
  for p in chart containers cluster; do
    if [ -z "${PKGFLEET_TEST_PHASES:-}" ] || [[ " $PKGFLEET_TEST_PHASES " == *" $p "* ]]; then
      rm -f "$tools_rc"
      (
        s=$SECONDS rc=0
        nice -n 19 bash scripts/deploy-deps.sh >"$tools_log" 2>&1 </dev/null || rc=$?
        echo "$rc $((SECONDS - s))" >"$tools_rc.new" && mv "$tools_rc.new" "$tools_rc"
      ) &
      tools_pid=$!
      echo "test: tools      building the chart's and the cluster's tools in the background (deploy-deps.sh; $tools_log)"
      return 0
    fi
  done
}
with_tools() { # command...: runs it once the background tools' build ended well
  [ -n "$tools_pid" ] || { "$@"; return; }
  [ -e "$tools_rc" ] || echo "waiting for the tools' background build ($tools_log)"
  while [ ! -e "$tools_rc" ]; do sleep 1; done
  local rc took_s
  read -r rc took_s <"$tools_rc"
  if [ "$rc" -ne 0 ]; then
    echo "the tools' background build failed (exit $rc, ${took_s}s); the end of $tools_log:"
    tail -n 40 "$tools_log"
    return 1
  fi
  echo "the tools' background build ended well in ${took_s}s"
  "$@"
}
stop_tools() { # on exit: never leave the background build behind
  if [ -n "$tools_pid" ] && kill -0 "$tools_pid" 2>/dev/null; then
    pkill -TERM -P "$tools_pid" 2>/dev/null || true
    kill -TERM "$tools_pid" 2>/dev/null || true
  fi
}
trap stop_tools EXIT
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
phase install "installing what is missing (apt packages, promtool, containerd, versitygw)" install
start_tools
phase vet "go vet ./..., what each binary links, the CLI for darwin and windows" vet
phase lint "gofmt and staticcheck" lint
phase unit "go test -race: every package but e2e, fault, fleet and deploy" unit
phase sandbox "the sandbox's escape suite as an unprivileged user, both tiers" bash scripts/test-sandbox-unprivileged.sh
phase e2e "API + worker + Redis building R and Python, the builds page in Chromium" gotest internal/e2e
phase fault "failures injected into Redis, workers and builds" gotest internal/faulttest
phase fleet "several worker processes and API replicas" gotest internal/fleettest
phase chart "alert rules, Grafana, profiles and the Helm chart against a kube-apiserver" with_tools gotest deploy
phase containers "images, compose stack, worker container under each Docker setting" with_tools bash scripts/test-containers.sh
phase cluster "the chart on a single-node Kubernetes: install, builds, upgrade, rollback, restricted" with_tools bash scripts/test-cluster.sh
phase fuzz "every fuzz target for a fixed count of inputs" bash scripts/fuzz.sh

echo
echo "make test: $(took $((SECONDS - start))) in all; logs in $logs, screenshots in $PKGFLEET_TEST_ARTIFACTS"
printf '%s\n' "${summary[@]}"
echo "phases: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
