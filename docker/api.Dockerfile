# syntax=docker/dockerfile:1
# pkgfleet-api: REST API, poller, webhooks and package indexes, plus the
# pkgfleet CLI. Build from the repository root:
#
#   docker build -f docker/api.Dockerfile -t pkgfleet-api .
#
# The chart (charts/pkgfleet) and docker/compose.yaml rely on: uid/gid 10001,
# port 4242, config at /etc/pkgfleet/pkgfleet.gcfg, data in /var/lib/pkgfleet,
# artifacts in /srv/pkgfleet/packages.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/pkgfleet-api ./cmd/api \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/pkgfleet ./cmd/pkgfleet

FROM debian:bookworm-slim AS runtime
# git and ssh: the poller lists remote refs (ls-remote) over https and ssh.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 pkgfleet \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/pkgfleet --no-create-home \
      --shell /usr/sbin/nologin pkgfleet \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/pkgfleet /var/run/pkgfleet /srv/pkgfleet/packages \
 && install -d -m 0755 /etc/pkgfleet
COPY --from=build /out/pkgfleet-api /out/pkgfleet /usr/local/bin/
ENV PKGFLEET_CONFIG=/etc/pkgfleet/pkgfleet.gcfg \
    HOME=/var/lib/pkgfleet
USER 10001:10001
WORKDIR /var/lib/pkgfleet
EXPOSE 4242
ENTRYPOINT ["/usr/local/bin/pkgfleet-api"]
