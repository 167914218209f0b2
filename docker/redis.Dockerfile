# Redis for docker/compose.yaml, from Debian's redis-server, for machines
# that cannot pull a Redis image; with Debian's redis-sentinel too, so that
# the chart's Redis with Sentinel (redis.mode sentinel) runs on it. Build from this directory:
#
#   docker build -f docker/redis.Dockerfile -t pkgfleet-redis docker
#
# make images (scripts/images.sh) builds it on a base image made locally
# that already holds PACKAGES. Runs as uid 999 with its data in /data, as
# the compose file expects.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE}
ARG PACKAGES="redis-server redis-sentinel"
# Packages the base image already holds are skipped (no network needed).
RUN missing=""; \
    for p in $PACKAGES; do \
      dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $missing \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN install -d -o 999 -g 999 -m 0750 /data
USER 999:999
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
