# pkgfleet-worker: takes build jobs from Redis and builds R and Python
# packages in its user-namespace sandbox. Build from the repository root:
#
#   docker build -f docker/worker.Dockerfile -t pkgfleet-worker .
#
# That pulls golang and debian:bookworm-slim and installs PACKAGES from
# Debian. Without a registry, make images (scripts/images.sh) builds this
# same file with base images made locally (scripts/base-image.sh, which
# already holds PACKAGES) and binaries built outside (PREBUILT).
#
# Run it as a non-root user with --cap-drop ALL and no-new-privileges, never
# --privileged; the sandbox's tier depends on seccomp, AppArmor and the /proc
# masks (docs/sandbox.md, "Measured in Docker"; docker/compose.yaml and
# charts/pkgfleet). Same uid, paths and config location as the API image;
# /metrics, /healthz and /readyz on port 9464 (Worker.MetricsListen).

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
      cp "$PREBUILT/pkgfleet-worker" /out/; \
    else \
      CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/pkgfleet-worker ./cmd/worker; \
    fi

FROM ${BASE_IMAGE} AS runtime
# What a typical R or Python package needs to build: R with its headers and
# the compilers R was built with (r-base-dev: gcc, g++, gfortran, make and
# the BLAS/LAPACK, zlib, bzip2, lzma, PCRE, ICU and readline headers),
# Python's build module with the common PEP 517 backends Debian has
# (setuptools, wheel, hatchling, hatch-vcs, flit's flit_core, poetry-core,
# setuptools-scm, meson-python), so that offline --no-isolation builds of
# most packages work without a door (Git.PythonIndexURL); python3-dev for C
# extensions, venv and pip for isolated builds through the door; git and
# ssh to clone. Debian's backends can be older than a package asks for
# (flit_core>=3.12, say): those builds need the door. EXTRA_PACKAGES adds what your packages'
# system requirements are (e.g. libcurl4-openssl-dev libxml2-dev pandoc).
ARG PACKAGES="ca-certificates git openssh-client r-base-core r-base-dev build-essential python3 python3-dev python3-build python3-setuptools python3-wheel python3-hatchling python3-hatch-vcs flit python3-poetry-core python3-setuptools-scm python3-mesonpy python3-venv python3-pip"
ARG EXTRA_PACKAGES=""
# Packages the base image already holds are skipped, so that a base image
# made with them builds without a network; the rest come from Debian.
RUN missing=""; \
    for p in $PACKAGES $EXTRA_PACKAGES; do \
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
COPY --from=build /out/pkgfleet-worker /usr/local/bin/
ENV PKGFLEET_CONFIG=/etc/pkgfleet/pkgfleet.gcfg \
    HOME=/var/lib/pkgfleet
USER 10001:10001
WORKDIR /var/lib/pkgfleet
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/pkgfleet-worker"]
