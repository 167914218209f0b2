#!/usr/bin/env bash
# make images: builds pkgfleet-api:local, pkgfleet-worker:local and
# pkgfleet-redis:local from docker/*.Dockerfile with the machine's Docker
# Engine (started by scripts/dockerd.sh), pulling nothing:
#   - each runtime base image is made locally by scripts/base-image.sh with
#     the Dockerfile's own PACKAGES (read from its ARG), so its install step
#     finds them all present and needs no network;
#   - the Go binaries are built here (CGO_ENABLED=0) into bin/static and
#     handed to the build stage with PREBUILT, as no Go image exists;
#   - the classic builder (DOCKER_BUILDKIT=0): no frontend image, no buildx.
# The same Dockerfiles build unchanged with their registry defaults elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/dockerd.sh

# packages FILE: the default of ARG PACKAGES in a Dockerfile.
packages() {
  local p
  p=$(sed -n 's/^ARG PACKAGES="\(.*\)"$/\1/p' "$1")
  if [ -z "$p" ]; then
    echo "images: no ARG PACKAGES=\"…\" in $1" >&2
    exit 1
  fi
  echo "$p"
}
# shellcheck disable=SC2046 # one word per package
api_base=$(bash scripts/base-image.sh $(packages docker/api.Dockerfile))
# shellcheck disable=SC2046
worker_base=$(bash scripts/base-image.sh $(packages docker/worker.Dockerfile))
# shellcheck disable=SC2046
redis_base=$(bash scripts/base-image.sh $(packages docker/redis.Dockerfile))

mkdir -p bin/static
for cmd in api worker pkgfleet; do
  out=pkgfleet-$cmd
  [ "$cmd" = pkgfleet ] && out=pkgfleet
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "bin/static/$out" "./cmd/$cmd"
done

export DOCKER_BUILDKIT=0
build() { # tag dockerfile context base
  echo "images: $1 (on $4)" >&2
  # The image id goes nowhere; stderr keeps the errors but not the notice
  # that the classic builder is deprecated.
  docker build -q -f "$2" -t "$1" \
    --build-arg BUILDER_IMAGE="$4" --build-arg BASE_IMAGE="$4" --build-arg PREBUILT=bin/static "$3" 2>&1 >/dev/null |
    { grep -v -e '^DEPRECATED: The legacy builder' -e 'BuildKit is currently disabled' -e 'DOCKER_BUILDKIT=0' -e 'environment-variable' -e '^$' >&2 || true; }
}
build pkgfleet-api:local docker/api.Dockerfile . "$api_base"
build pkgfleet-worker:local docker/worker.Dockerfile . "$worker_base"
build pkgfleet-redis:local docker/redis.Dockerfile docker "$redis_base"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^pkgfleet-(api|worker|redis):local ' >&2
