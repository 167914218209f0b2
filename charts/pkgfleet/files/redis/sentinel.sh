#!/bin/sh
# The redis-sentinel of a pod of the chart's Redis with Sentinel: it
# monitors the master discover.sh found, announcing this pod by its DNS
# name. Beyond discover.sh's environment: QUORUM, DOWN_AFTER and
# FAILOVER_TIMEOUT (milliseconds), REDIS_PASSWORD (may be empty), BIND.
# Its config lives on the pod's claim, owner-only: sentinel rewrites it
# after a failover, and discover.sh reads the master back from it when no
# other sentinel answers (the whole set restarting).
set -eu
. "$(dirname "$0")/discover.sh"
conf=$DATA_DIR/sentinel.conf
umask 077
{
  echo "port $SENTINEL_PORT"
  [ -z "${BIND:-}" ] || echo "bind $BIND"
  echo "dir /tmp"
  echo "protected-mode no"
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip $ME"
  echo "sentinel announce-port $SENTINEL_PORT"
  echo "sentinel monitor $MASTER_NAME $master $REDIS_PORT $QUORUM"
  echo "sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER"
  echo "sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT"
  echo "sentinel parallel-syncs $MASTER_NAME 1"
  [ -z "${REDIS_PASSWORD:-}" ] || echo "sentinel auth-pass $MASTER_NAME $REDIS_PASSWORD"
  [ -z "${SENTINEL_PASSWORD:-}" ] || echo "requirepass $SENTINEL_PASSWORD"
} >"$conf.new"
mv "$conf.new" "$conf"
exec redis-sentinel "$conf"
