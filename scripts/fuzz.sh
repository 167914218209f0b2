#!/usr/bin/env bash
# Runs every fuzz target briefly (FUZZTIME each, default 5s); the seed
# corpora in testdata/fuzz also run as plain tests in `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in \
  internal/api:FuzzDecode \
  internal/git:FuzzValidateURL \
  internal/git:FuzzMatchTag \
  internal/version:FuzzCompare \
  internal/config:FuzzLoad \
  internal/pkgmeta:FuzzParseDCF; do
  pkg=${target%%:*} name=${target#*:}
  echo "fuzz: $name ($pkg, $fuzztime)"
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "./$pkg" >"$log" 2>&1 ||
    { cat "$log"; exit 1; }
done
