#!/usr/bin/env bash
# Builds the S3 server that the tests (internal/testenv's S3) and
# PKGFLEET_STORAGE=s3 make run start: Versity's versitygw (Apache-2.0), at
# the version deploy/tools/versitygw/go.mod pins, once from the Go module
# proxy into ~/.cache/pkgfleet/tools/versitygw-<version>/versitygw (about
# four minutes cold on two cores). Never the MinIO server (AGPL). Safe to
# run again: it does nothing when the binary is there.
# With --print it prints the binary's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
tools_who=versitygw
source scripts/tools.sh

version=$(mod_version deploy/tools/versitygw github.com/versity/versitygw)
if [ -z "$version" ]; then
  echo "versitygw: no github.com/versity/versitygw in deploy/tools/versitygw/go.mod" >&2
  exit 1
fi
build_tools deploy/tools/versitygw "$version" "-X main.Version=$version" \
  versitygw=github.com/versity/versitygw/cmd/versitygw

if [ "${1:-}" = --print ]; then
  echo "$cache/pkgfleet/tools/versitygw-$version/versitygw"
fi
