#!/usr/bin/env bash
# Runs every fuzz target briefly; the seed corpora in testdata/fuzz also run
# as plain tests in `go test`.
#
# Each target runs for a count of inputs (a few seconds each here), not for a
# duration: Go 1.26's fuzz coordinator can fail a target with a bare "context
# deadline exceeded" when a -fuzztime duration ends while a worker is busy
# (golang/go#75804, fixed in Go 1.27). A count has no wall-clock deadline.
# FUZZTIME (for example 60s or 1000000x) overrides every target's budget.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in \
  internal/api:FuzzDecode:30000x \
  internal/git:FuzzValidateURL:50000x \
  internal/git:FuzzMatchTag:100000x \
  internal/git:FuzzHostPatternMatch:50000x \
  internal/git:FuzzReadAdvertisement:100000x \
  internal/netpolicy:FuzzCheckHost:50000x \
  internal/version:FuzzCompare:300000x \
  internal/config:FuzzLoad:20000x \
  internal/pkgmeta:FuzzParseDCF:100000x; do
  IFS=: read -r pkg name budget <<<"$target"
  budget=${FUZZTIME:-$budget}
  echo "fuzz: $name ($pkg, $budget)"
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$budget" "./$pkg" >"$log" 2>&1 ||
    { cat "$log"; exit 1; }
done
