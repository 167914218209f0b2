#!/usr/bin/env bash
# make run: a whole local pkgfleet — Redis, the API and one worker — with
# the bundled example packages turned into git repositories, built once.
# It prints one line per example build as it changes state, then where to
# look. What you look at lives under ./var (logs, artifacts, the example
# repositories, Redis's data); the builds' work directories live in one of
# their own under /var/tmp, which the build user can reach wherever the
# checkout is (a 0700 home, a path with spaces). Ctrl-C stops the worker,
# then the API, then Redis, and removes that directory.
#
# Builds run in the sandbox. Where it does not work, make run stops and
# says why; PKGFLEET_RUN_UNSANDBOXED=1 make run builds without it instead
# (Git.AllowUnsandboxedGitBuilds, for a demo on such a machine only).
#
# Artifacts go to the filesystem (Storage.Default = file) unless
# PKGFLEET_STORAGE=s3: then a local S3 server (versitygw, built once into
# ~/.cache/pkgfleet/tools/ by scripts/versitygw.sh) serves a bucket from
# ./var/s3 on 127.0.0.1:${PKGFLEET_S3_PORT:-7070}, and the API and the worker
# reach it with the AWS default chain's environment variables (the config
# file holds no credential). Ctrl-C stops it last.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
var=$root/var
storage=${PKGFLEET_STORAGE:-file}
case $storage in
  file | s3) ;;
  *) echo "run: PKGFLEET_STORAGE is file (the default) or s3, not \"$storage\"" >&2; exit 1 ;;
esac
bash scripts/deps.sh
mkdir -p "$var"/{data,log,redis,repos}

# Builds run as the build user (the pkgfleet account when root), which
# must traverse every directory down to the build's checkout and TMPDIR.
# A checkout's own path may not let it (/root and home directories are
# 0700 or 0750), and widening a home directory is no fix; so the temp and
# checkout roots go in a directory of this user's own under /var/tmp,
# 0711, keyed by the checkout so that two checkouts do not collide. The
# worker checks the whole path again (pkgfleet-worker sandbox check).
work=/var/tmp/pkgfleet-run-$(id -u)-$(printf %s "$root" | sha256sum | cut -c1-12)
if [ -L "$work" ] || { [ -e "$work" ] && { [ ! -d "$work" ] || [ ! -O "$work" ]; }; }; then
  echo "run: $work is not a directory of this user's own; remove it and run again" >&2
  exit 1
fi
mkdir -p -m 0711 "$work" && chmod 0711 "$work"
mkdir -p "$work"/{tmp,builder,run}

# gcfg_value quotes a path for the config file: an unquoted ';' or '#'
# would start a comment.
gcfg_value() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

# file_url is the file:// URL of an absolute path, percent-encoded byte by
# byte (spaces, '#', '?', '%', non-ASCII): the API refuses a raw space, and
# git decodes %XX in a file:// path itself.
file_url() {
  local LC_ALL=C path=$1 out= c i
  for ((i = 0; i < ${#path}; i++)); do
    c=${path:i:1}
    case $c in
      [A-Za-z0-9/._~-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf 'file://%s' "$out"
}
# -trimpath keeps the checkout's path out of the build cache's keys: a
# fresh checkout elsewhere (a second clone, the e2e test's copy) builds in
# seconds from what an earlier one compiled, instead of minutes.
go build -trimpath -o bin/pkgfleet-api ./cmd/api
go build -trimpath -o bin/pkgfleet-worker ./cmd/worker
go build -trimpath -o bin/pkgfleet ./cmd/pkgfleet

# Each daemon runs in a session of its own, so that Ctrl-C reaches only
# this script, which then stops them in order: the worker first (it may
# finish or requeue its builds, which needs Redis and the store), then the
# API, then Redis, then the S3 server.
redis_pid="" api_pid="" worker_pid="" s3_pid="" follow_pids=()
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
  [ -z "$s3_pid" ] || what+=("the S3 server")
  if [ ${#what[@]} -eq 0 ]; then
    rm -rf "$work"
    return 0
  fi
  echo
  echo "run: stopping $(IFS=,; echo "${what[*]}" | sed 's/,/, then /g')"
  for p in "${follow_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  stop "$worker_pid"
  stop "$api_pid"
  stop "$redis_pid"
  stop "$s3_pid"
  rm -rf "$work"
  echo "run: stopped"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

redis_addr=${PKGFLEET_REDIS_ADDRESS:-}
if [ -z "$redis_addr" ]; then
  # The socket goes in the work directory: a socket's path must be short
  # (108 bytes), and a checkout's path may be long.
  redis_addr=$work/redis.sock
  setsid redis-server --port 0 --unixsocket "$redis_addr" --unixsocketperm 700 --dir "$var/redis" \
    --appendonly yes --maxmemory-policy noeviction --save "" >"$var/log/redis.log" 2>&1 </dev/null &
  redis_pid=$!
  for _ in $(seq 100); do [ -S "$redis_addr" ] && break; sleep 0.1; done
fi

storage_cfg=""
if [ "$storage" = s3 ]; then
  vgw=$(bash scripts/versitygw.sh --print)
  s3_endpoint=http://127.0.0.1:${PKGFLEET_S3_PORT:-7070}
  s3_bucket=pkgfleet s3_region=us-east-1
  # The server's root credentials are made once and kept with its data
  # (owner-only), so that a second make run reads what the first stored.
  mkdir -p -m 0700 "$var/s3/data"
  if [ ! -s "$var/s3/credentials" ]; then
    (umask 077 && printf 'pkgfleet%s %s\n' "$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')" \
      "$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')" >"$var/s3/credentials")
  fi
  read -r s3_access s3_secret <"$var/s3/credentials"
  # The POSIX backend keeps object metadata in user xattrs; on a
  # filesystem without them it keeps it in a sidecar directory instead.
  meta=()
  if ! /usr/bin/python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.pkgfleet-probe", b"1"); os.removexattr(sys.argv[1], "user.pkgfleet-probe")' "$var/s3/data" 2>/dev/null; then
    mkdir -p -m 0700 "$var/s3/meta"
    meta=(--sidecar "$var/s3/meta")
  fi
  # Credentials go in the environment, never in an argument list that
  # any process can read.
  ROOT_ACCESS_KEY_ID=$s3_access ROOT_SECRET_ACCESS_KEY=$s3_secret VGW_PORT=${s3_endpoint#http://} VGW_REGION=$s3_region \
    setsid "$vgw" posix "${meta[@]}" "$var/s3/data" >"$var/log/s3.log" 2>&1 </dev/null &
  s3_pid=$!
  for _ in $(seq 100); do
    kill -0 "$s3_pid" 2>/dev/null || { echo "run: the S3 server exited; see $var/log/s3.log" >&2; s3_pid=""; exit 1; }
    curl -s -o /dev/null "$s3_endpoint/" && break
    sleep 0.1
  done
  # The bucket, once: 200 when made, 409 when a previous run made it. S3
  # wants the body's sha256 signed too (here the empty body's).
  code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT --aws-sigv4 "aws:amz:$s3_region:s3" -K - "$s3_endpoint/$s3_bucket" \
    -H "x-amz-content-sha256: $(sha256sum </dev/null | cut -d' ' -f1)" \
    <<<"user = \"$s3_access:$s3_secret\"") || code=000
  case $code in 200 | 409) ;; *)
    echo "run: the S3 server did not make bucket $s3_bucket at $s3_endpoint (HTTP $code); see $var/log/s3.log" >&2
    exit 1
    ;;
  esac
  export AWS_ACCESS_KEY_ID=$s3_access AWS_SECRET_ACCESS_KEY=$s3_secret AWS_REGION=$s3_region
  export AWS_EC2_METADATA_DISABLED=true
  storage_cfg="
[Storage]
Default = s3

[S3Storage]
Bucket = $s3_bucket
Region = $s3_region
Endpoint = $s3_endpoint
EnablePathStyle = true
"
fi

port=${PKGFLEET_PORT:-4242}
cat >"$var/pkgfleet.gcfg" <<CFG
; written by scripts/run.sh for a local demo
[Server]
DataDir = $(gcfg_value "$var/data")
TempDir = $(gcfg_value "$work/tmp")
SockFileDir = $(gcfg_value "$work/run")

[Git]
BuilderDir = $(gcfg_value "$work/builder")
AllowFileURLs = true
PollInterval = 1m
BuildRetries = 2

[Worker]
MetricsListen = 127.0.0.1:${PKGFLEET_WORKER_METRICS_PORT:-9464}

[Redis]
Address = $(gcfg_value "$redis_addr")

[HTTP]
Listen = 127.0.0.1:$port
$storage_cfg
CFG

# The sandbox is required: probe it as the worker will, and stop here with
# the reason and the remedy when it does not work. Exit status 3 is a
# precondition that is not the kernel's (a directory the build user cannot
# reach, the build user itself): its line names the fix, and user
# namespaces are not the cause.
check_status=0
check=$(bin/pkgfleet-worker -config "$var/pkgfleet.gcfg" sandbox check 2>&1) || check_status=$?
# Exit status 2 is a configuration that does not load (an unknown section
# or setting, a bad value): nothing was probed, so the sandbox is not blamed.
if [ "$check_status" -eq 2 ]; then
  echo "run: the configuration does not load, so nothing was started:" >&2
  sed 's/^/run:   /' <<<"$check" >&2
  echo "run: fix what it names: a PKGFLEET_ variable in your environment overrides $var/pkgfleet.gcfg" >&2
  exit 1
fi
if [ "$check_status" -ne 0 ]; then
  echo "run: ==================================================================" >&2
  echo "run: THE BUILD SANDBOX DOES NOT WORK ON THIS MACHINE" >&2
  sed 's/^/run:   /' <<<"$check" | grep -v 'level=INFO' >&2 || true
  if [ "$check_status" -eq 3 ]; then
    echo "run: Remedy: the line above names what blocks the build user and the setting that fixes it" >&2
    echo "run: (in $var/pkgfleet.gcfg, which scripts/run.sh writes)." >&2
  else
    echo "run: Remedy: fix what the lines above name; for user namespaces see docs/sandbox.md," >&2
    echo "run: \"Enabling user namespaces\" (user.max_user_namespaces > 0; on Ubuntu 24.04 also" >&2
    echo "run: kernel.apparmor_restrict_unprivileged_userns = 0)" >&2
  fi
  if [ -n "${PKGFLEET_RUN_UNSANDBOXED:-}" ]; then
    echo "run: PKGFLEET_RUN_UNSANDBOXED is set: building WITHOUT the sandbox (Git.AllowUnsandboxedGitBuilds)." >&2
    echo "run: ==================================================================" >&2
    printf '\n[Git]\nAllowUnsandboxedGitBuilds = true\n' >>"$var/pkgfleet.gcfg"
  else
    if [ "$check_status" -ne 3 ]; then
      echo "run: or, for a demo only, build without it: PKGFLEET_RUN_UNSANDBOXED=1 make run" >&2
    fi
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
# (and the builds of the same commits) in Redis: the API's 409 is fine.
# Any other refusal stops make run with the API's own error.
post() { # path json
  local out code
  out=$(curl -sS -X POST -H 'Content-Type: application/json' -d "$2" -w '\n%{http_code}' "$api$1") ||
    { echo "run: POST $1: the API did not answer; see $var/log/api.log" >&2; exit 1; }
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  case $code in 2?? | 409) return 0 ;; esac
  echo "run: the API refused POST $1 (HTTP $code): $(sed -E 's/^\{"error":"(.*)"\}$/\1/' <<<"$out")" >&2
  exit 1
}
post /api/v1/sources '{"name":"r-demo","type":"git"}'
post /api/v1/sources '{"name":"py-demo","type":"git-python"}'
post /api/v1/sources/r-demo/git-builders "{\"url\":\"$(file_url "$var/repos/hellofleet")\",\"branch\":\"main\"}"
post /api/v1/sources/py-demo/git-builders "{\"name\":\"hellofleet-py\",\"url\":\"$(file_url "$var/repos/hellofleet-py")\",\"build_trigger\":\"tags\",\"tag_pattern\":\"v*\"}"

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
artifacts=$var/data/packages
if [ "$storage" = s3 ]; then
  artifacts="s3://$s3_bucket at $s3_endpoint (versitygw; its files in $var/s3/data, its log $var/log/s3.log)"
fi
cat <<MSG

pkgfleet is running (Ctrl-C stops it):
  builds page  $api/
  dashboard    $api/dashboard/
  metrics      $api/metrics (API)   $metrics (worker)
  API          $api/api/v1/builds   CLI: PKGFLEET_ADDRESS=$api bin/pkgfleet list git-builds
  logs         $var/log/{api,worker,redis}.log
  artifacts    $artifacts
  build dirs   $work (removed when make run stops)
  repos        $var/repos/hellofleet, $var/repos/hellofleet-py (commit or tag there, then run/rerun)
MSG
set +e
wait -n $worker_pid $api_pid ${redis_pid:+$redis_pid} ${s3_pid:+$s3_pid}
for pair in "worker:$worker_pid" "API:$api_pid" "Redis:$redis_pid" "S3 server:$s3_pid"; do
  pid=${pair#*:}
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    echo "run: the ${pair%%:*} exited by itself; see $var/log" >&2
  fi
done
exit 1
