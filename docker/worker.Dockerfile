# syntax=docker/dockerfile:1
# pkgfleet-worker: takes build jobs from Redis and builds R and Python
# packages in its user-namespace sandbox. Build from the repository root:
#
#   docker build -f docker/worker.Dockerfile -t pkgfleet-worker .
#
# Run it with seccomp and AppArmor unconfined (the sandbox clones namespaces
# and mounts), as a non-root user, never --privileged; see docker/compose.yaml
# and charts/pkgfleet. Same uid, paths and config location as the API image;
# /metrics, /healthz and /readyz on port 9464 (Worker.MetricsListen).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/pkgfleet-worker ./cmd/worker

FROM debian:bookworm-slim AS runtime
# R for R CMD build, Python's build module with setuptools and wheel (for
# --no-isolation builds without network), venv for isolated builds, git and
# ssh to clone. EXTRA_PACKAGES adds what your packages need to build
# (e.g. r-base-dev, build-essential, pandoc).
ARG EXTRA_PACKAGES=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates git openssh-client \
      r-base-core \
      python3 python3-build python3-setuptools python3-wheel python3-venv python3-pip \
      ${EXTRA_PACKAGES} \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 pkgfleet \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/pkgfleet --no-create-home \
      --shell /usr/sbin/nologin pkgfleet \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/pkgfleet /var/run/pkgfleet /srv/pkgfleet/packages \
 && install -d -m 0755 /etc/pkgfleet
COPY --from=build /out/pkgfleet-worker /usr/local/bin/
ENV PKGFLEET_CONFIG=/etc/pkgfleet/pkgfleet.gcfg \
    HOME=/var/lib/pkgfleet
USER 10001:10001
WORKDIR /var/lib/pkgfleet
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/pkgfleet-worker"]
