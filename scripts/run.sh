#!/usr/bin/env bash
# make run: a whole local pkgfleet — Redis, the API and one worker — with
# the bundled example packages turned into git repositories, built once.
# It prints one line per example build as it changes state, then where to
# look. Everything lives under ./var; Ctrl-C stops the worker, then the
# API, then Redis.
#
# Builds run in the sandbox. Where it does not work, make run stops and
# says why; PKGFLEET_RUN_UNSANDBOXED=1 make run builds without it instead
# (Git.AllowUnsandboxedGitBuilds, for a demo on such a machine only).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
var=$root/var
bash scripts/deps.sh
mkdir -p "$var"/{data,tmp,run,log,redis,repos}
go build -o bin/pkgfleet-api ./cmd/api
go build -o bin/pkgfleet-worker ./cmd/worker
go build -o bin/pkgfleet ./cmd/pkgfleet

# Each daemon runs in a session of its own, so that Ctrl-C reaches only
# this script, which then stops them in order: the worker first (it may
# finish or requeue its builds, which needs Redis), then the API, then
# Redis.
redis_pid="" api_pid="" worker_pid="" follow_pids=()
stop() { # pid
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  wait "$1" 2>/dev/null || true
}
cleanup() {
  trap - INT TERM EXIT
  local what=()
  [ -z "$worker_pid" ] || what+=("the worker")
  [ -z "$api_pid" ] || what+=("the API")
  [ -z "$redis_pid" ] || what+=("Redis")
  [ ${#what[@]} -gt 0 ] || return 0
  echo
  echo "run: stopping $(IFS=,; echo "${what[*]}" | sed 's/,/, then /g')"
  for p in "${follow_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  stop "$worker_pid"
  stop "$api_pid"
  stop "$redis_pid"
  echo "run: stopped"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

redis_addr=${PKGFLEET_REDIS_ADDRESS:-}
if [ -z "$redis_addr" ]; then
  redis_addr=$var/redis/redis.sock
  setsid redis-server --port 0 --unixsocket "$redis_addr" --unixsocketperm 700 --dir "$var/redis" \
    --appendonly yes --maxmemory-policy noeviction --save "" >"$var/log/redis.log" 2>&1 </dev/null &
  redis_pid=$!
  for _ in $(seq 100); do [ -S "$redis_addr" ] && break; sleep 0.1; done
fi

port=${PKGFLEET_PORT:-4242}
cat >"$var/pkgfleet.gcfg" <<CFG
; written by scripts/run.sh for a local demo
[Server]
DataDir = $var/data
TempDir = $var/tmp
SockFileDir = $var/run

[Git]
AllowFileURLs = true
PollInterval = 1m
BuildRetries = 2

[Worker]
MetricsListen = 127.0.0.1:${PKGFLEET_WORKER_METRICS_PORT:-9464}

[Redis]
Address = $redis_addr

[HTTP]
Listen = 127.0.0.1:$port
CFG

# The sandbox is required: probe it as the worker will, and stop here with
# the reason and the remedy when it does not work.
if ! check=$(bin/pkgfleet-worker -config "$var/pkgfleet.gcfg" sandbox check 2>&1); then
  echo "run: ==================================================================" >&2
  echo "run: THE BUILD SANDBOX DOES NOT WORK ON THIS MACHINE" >&2
  sed 's/^/run:   /' <<<"$check" | grep -v 'level=INFO' >&2 || true
  echo "run: Remedy: fix what the lines above name; for user namespaces see docs/sandbox.md," >&2
  echo "run: \"Enabling user namespaces\" (user.max_user_namespaces > 0; on Ubuntu 24.04 also" >&2
  echo "run: kernel.apparmor_restrict_unprivileged_userns = 0)" >&2
  if [ -n "${PKGFLEET_RUN_UNSANDBOXED:-}" ]; then
    echo "run: PKGFLEET_RUN_UNSANDBOXED is set: building WITHOUT the sandbox (Git.AllowUnsandboxedGitBuilds)." >&2
    echo "run: ==================================================================" >&2
    printf '\n[Git]\nAllowUnsandboxedGitBuilds = true\n' >>"$var/pkgfleet.gcfg"
  else
    echo "run: or, for a demo only, build without it: PKGFLEET_RUN_UNSANDBOXED=1 make run" >&2
    echo "run: ==================================================================" >&2
    exit 1
  fi
fi

setsid bin/pkgfleet-api -config "$var/pkgfleet.gcfg" >"$var/log/api.log" 2>&1 </dev/null &
api_pid=$!
setsid bin/pkgfleet-worker -config "$var/pkgfleet.gcfg" >"$var/log/worker.log" 2>&1 </dev/null &
worker_pid=$!

api=http://127.0.0.1:$port
for _ in $(seq 100); do curl -fsS "$api/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$api/readyz" >/dev/null || { echo "run: the API did not come up; see $var/log/api.log" >&2; exit 1; }
# The worker detects R and Python in the sandbox before it takes builds.
for _ in $(seq 600); do
  curl -fsS "$api/api/v1/workers" 2>/dev/null | grep -q '"name"' && break
  kill -0 "$worker_pid" 2>/dev/null || { echo "run: the worker exited; see $var/log/worker.log" >&2; exit 1; }
  sleep 0.1
done

# The example packages become git repos with two tagged versions each.
make_repo() { # name src version-file...
  local name=$1 src=$2 repo=$var/repos/$1
  shift 2
  [ -d "$repo/.git" ] && return 0
  mkdir -p "$repo" && cp -r "$src"/. "$repo"/
  git -C "$repo" init -q --initial-branch=main
  git -C "$repo" -c user.name=demo -c user.email=demo@invalid add -A
  git -C "$repo" -c user.name=demo -c user.email=demo@invalid commit -qm "version 0.1.0"
  git -C "$repo" tag v0.1.0
  for f in "$@"; do sed -i 's/0\.1\.0/0.2.0/' "$repo/$f"; done
  git -C "$repo" -c user.name=demo -c user.email=demo@invalid commit -qam "version 0.2.0"
  git -C "$repo" tag v0.2.0
}
make_repo hellofleet examples/r/hellofleet DESCRIPTION
make_repo hellofleet-py examples/python/hellofleet-py pyproject.toml src/hellofleet_py/__init__.py

# Sources and builders are created once; a second make run finds them
# (and the builds of the same commits) in Redis.
post() { curl -sS -o /dev/null -X POST -H 'Content-Type: application/json' -d "$2" "$api$1"; }
post /api/v1/sources '{"name":"r-demo","type":"git"}'
post /api/v1/sources '{"name":"py-demo","type":"git-python"}'
post /api/v1/sources/r-demo/git-builders "{\"url\":\"file://$var/repos/hellofleet\",\"branch\":\"main\"}"
post /api/v1/sources/py-demo/git-builders "{\"name\":\"hellofleet-py\",\"url\":\"file://$var/repos/hellofleet-py\",\"build_trigger\":\"tags\",\"tag_pattern\":\"v*\"}"

# Build the examples and follow them with the CLI's --wait lines (plain
# lines, one per change, since its output is a pipe here).
echo "run: building the examples"
export PKGFLEET_ADDRESS=$api
follow() { # source builder
  setsid bin/pkgfleet run git-builder --source "$1" --name "$2" </dev/null 2>&1 | sed -u 's/^/  /' &
  follow_pids+=($!)
}
follow r-demo hellofleet
follow py-demo hellofleet-py
failed=0
for p in "${follow_pids[@]}"; do wait "$p" || failed=1; done
follow_pids=()
if [ "$failed" -ne 0 ]; then
  echo "run: an example build failed: its log is on the builds page below, or: bin/pkgfleet logs --build-id N" >&2
fi

metrics=http://127.0.0.1:${PKGFLEET_WORKER_METRICS_PORT:-9464}/metrics
cat <<MSG

pkgfleet is running (Ctrl-C stops it):
  builds page  $api/
  dashboard    $api/dashboard/
  metrics      $api/metrics (API)   $metrics (worker)
  API          $api/api/v1/builds   CLI: PKGFLEET_ADDRESS=$api bin/pkgfleet list git-builds
  logs         $var/log/{api,worker,redis}.log
  artifacts    $var/data/packages
  repos        $var/repos/hellofleet, $var/repos/hellofleet-py (commit or tag there, then run/rerun)
MSG
set +e
wait -n $worker_pid $api_pid ${redis_pid:+$redis_pid}
for pair in "worker:$worker_pid" "API:$api_pid" "Redis:$redis_pid"; do
  pid=${pair#*:}
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    echo "run: the ${pair%%:*} exited by itself; see $var/log" >&2
  fi
done
exit 1
