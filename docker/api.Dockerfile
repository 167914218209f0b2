# pkgfleet-api: REST API, poller, webhooks and package indexes, plus the
# pkgfleet CLI. Build from the repository root:
#
#   docker build -f docker/api.Dockerfile -t pkgfleet-api .
#
# That pulls golang and debian:bookworm-slim and installs PACKAGES from
# Debian. Without a registry, make images (scripts/images.sh) builds this
# same file with base images made locally (scripts/base-image.sh, which
# already holds PACKAGES) and binaries built outside (PREBUILT).
#
# The chart (charts/pkgfleet) and docker/compose.yaml rely on: uid/gid 10001,
# port 4242, config at /etc/pkgfleet/pkgfleet.gcfg, data in /var/lib/pkgfleet,
# artifacts in /srv/pkgfleet/packages.

# No "# syntax=" line: the builder's own Dockerfile frontend is used, and
# nothing is pulled to parse this file.
ARG BUILDER_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
# PREBUILT: a directory in the build context with static binaries built
# outside (CGO_ENABLED=0 go build), for builders that have no Go image.
ARG PREBUILT=""
WORKDIR /src
COPY go.mod go.sum ./
RUN [ -n "$PREBUILT" ] || go mod download
COPY . .
RUN mkdir -p /out \
 && if [ -n "$PREBUILT" ]; then \
      cp "$PREBUILT/pkgfleet-api" "$PREBUILT/pkgfleet" /out/; \
    else \
      CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/pkgfleet-api ./cmd/api \
      && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/pkgfleet ./cmd/pkgfleet; \
    fi

FROM ${BASE_IMAGE} AS runtime
# git and ssh: the poller lists remote refs (ls-remote) over https and ssh.
ARG PACKAGES="ca-certificates git openssh-client"
# Packages the base image already holds are skipped, so that a base image
# made with them builds without a network; the rest come from Debian.
RUN missing=""; \
    for p in $PACKAGES; do \
      dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $missing \
      && rm -rf /var/lib/apt/lists/*; \
    fi
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
