# Sourced by redis.sh and sentinel.sh, the two containers of each pod of the
# chart's Redis with Sentinel (redis.mode sentinel). Sets master to the host
# of the current master: what a live sentinel of another pod says; else the
# master this pod's sentinel last knew (its config, on the pod's claim, which
# sentinel rewrites after each failover); else the first pod, on a fresh
# install. From the environment: ME (this pod's host name), PEERS (every
# pod's host name, first pod first), REDIS_PORT, SENTINEL_PORT, MASTER_NAME,
# DATA_DIR, SENTINEL_PASSWORD (may be empty).

# until_resolves HOST: a pod's DNS name appears a moment after the pod
# (the headless Service publishes pods before they are ready).
until_resolves() {
  case $1 in *[!0-9.]*) ;; *) return 0 ;; esac # an IPv4 address
  i=0
  until getent hosts "$1" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
      echo "redis: $1 does not resolve after 120s" >&2
      exit 1
    fi
    sleep 1
  done
}

# ask_sentinel HOST prints the master host a sentinel reports, or nothing.
# The password goes through the environment, never the argument list.
ask_sentinel() (
  if [ -n "${SENTINEL_PASSWORD:-}" ]; then
    REDISCLI_AUTH=$SENTINEL_PASSWORD
    export REDISCLI_AUTH
  fi
  timeout 3 redis-cli -h "$1" -p "$SENTINEL_PORT" sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1
)

until_resolves "$ME"
master=""
for peer in $PEERS; do
  [ "$peer" != "$ME" ] || continue
  master=$(ask_sentinel "$peer" || true)
  case $master in
    *[!A-Za-z0-9.-]*) master="" ;; # an error (NOAUTH …), not a host
  esac
  [ -z "$master" ] || break
done
if [ -z "$master" ] && [ -f "$DATA_DIR/sentinel.conf" ]; then
  master=$(sed -n "s/^sentinel monitor $MASTER_NAME \([^ ]*\) .*/\1/p" "$DATA_DIR/sentinel.conf")
fi
if [ -z "$master" ]; then
  set -- $PEERS
  master=$1
fi
until_resolves "$master"
echo "redis: $ME: the master is $master" >&2
