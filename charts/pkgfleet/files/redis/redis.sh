#!/bin/sh
# The redis-server of a pod of the chart's Redis with Sentinel: the master
# if discover.sh finds this pod is, else a replica of the master. Beyond
# discover.sh's environment: APPENDFSYNC, MIN_REPLICAS, MAX_LAG,
# REDIS_PASSWORD (may be empty), BIND (empty on Kubernetes: every address).
set -eu
. "$(dirname "$0")/discover.sh"
# The queue and the build records survive a restart (AOF) and are never
# evicted. A master with fewer than MIN_REPLICAS replicas within MAX_LAG
# seconds refuses writes: cut off from its replicas, an old master stops
# acknowledging what a failover would lose. Protected mode is off: clients
# come over the pod network (the NetworkPolicy limits who).
set -- --port "$REDIS_PORT" --dir "$DATA_DIR" \
  --appendonly yes --appendfsync "$APPENDFSYNC" \
  --maxmemory-policy noeviction --protected-mode no \
  --replica-announce-ip "$ME" --replica-announce-port "$REDIS_PORT" \
  --min-replicas-to-write "$MIN_REPLICAS" --min-replicas-max-lag "$MAX_LAG"
[ -z "${BIND:-}" ] || set -- "$@" --bind "$BIND"
[ -z "${REDIS_PASSWORD:-}" ] || set -- "$@" --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"
[ "$master" = "$ME" ] || set -- "$@" --replicaof "$master" "$REDIS_PORT"
exec redis-server "$@"
