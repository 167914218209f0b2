#!/usr/bin/env bash
# make run: a whole local pkgfleet — Redis, the API and one worker — with
# the bundled example packages turned into git repositories, built once.
# Everything lives under ./var; Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
var=$root/var
bash scripts/deps.sh
mkdir -p "$var"/{data,tmp,run,log,redis,repos}
go build -o bin/pkgfleet-api ./cmd/api
go build -o bin/pkgfleet-worker ./cmd/worker
go build -o bin/pkgfleet ./cmd/pkgfleet

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping pkgfleet"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

redis_addr=${PKGFLEET_REDIS_ADDRESS:-}
if [ -z "$redis_addr" ]; then
  redis_addr=$var/redis/redis.sock
  redis-server --port 0 --unixsocket "$redis_addr" --unixsocketperm 700 --dir "$var/redis" \
    --appendonly yes --maxmemory-policy noeviction --save "" >"$var/log/redis.log" 2>&1 &
  pids+=($!)
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
# The demo falls back to unsandboxed builds (loudly logged) on a machine
# whose kernel refuses user namespaces; PKGFLEET_RUN_SANDBOX_ONLY=1 refuses.
if [ -z "${PKGFLEET_RUN_SANDBOX_ONLY:-}" ]; then
  printf '\n[Git]\nAllowUnsandboxedGitBuilds = true\n' >>"$var/pkgfleet.gcfg"
fi

bin/pkgfleet-api -config "$var/pkgfleet.gcfg" >"$var/log/api.log" 2>&1 &
pids+=($!)
bin/pkgfleet-worker -config "$var/pkgfleet.gcfg" >"$var/log/worker.log" 2>&1 &
pids+=($!)

api=http://127.0.0.1:$port
for _ in $(seq 100); do curl -fsS "$api/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$api/readyz" >/dev/null || { echo "run: the API did not come up; see $var/log/api.log" >&2; exit 1; }

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

post() { curl -sS -X POST -H 'Content-Type: application/json' -d "$2" "$api$1"; echo; }
post /api/v1/sources '{"name":"r-demo","type":"git"}' >/dev/null
post /api/v1/sources '{"name":"py-demo","type":"git-python"}' >/dev/null
post /api/v1/sources/r-demo/git-builders "{\"url\":\"file://$var/repos/hellofleet\",\"branch\":\"main\"}" >/dev/null
post /api/v1/sources/py-demo/git-builders "{\"name\":\"hellofleet-py\",\"url\":\"file://$var/repos/hellofleet-py\",\"build_trigger\":\"tags\",\"tag_pattern\":\"v*\"}" >/dev/null
echo "run: building the examples"
post /api/v1/sources/r-demo/git-builders/hellofleet/run '{}'
post /api/v1/sources/py-demo/git-builders/hellofleet-py/run '{}'

cat <<MSG

pkgfleet is running (Ctrl-C stops it):
  API        $api   (try: curl -s $api/api/v1/builds)
  dashboard  $api/dashboard/   metrics: $api/metrics and http://127.0.0.1:${PKGFLEET_WORKER_METRICS_PORT:-9464}/metrics
  logs       $var/log/{api,worker,redis}.log
  artifacts  $var/data/packages
  config     $var/pkgfleet.gcfg
  repos      $var/repos/hellofleet, $var/repos/hellofleet-py (commit or tag there, then run/rerun)
MSG
wait -n "${pids[@]}" || true
echo "run: a pkgfleet process exited; see $var/log" >&2
