#!/usr/bin/env bash
# make test: vet, what the binaries link (scripts/binaries.sh), gofmt and
# staticcheck, then every test with the race detector. Tests start their
# own redis-server processes (one per test package, on unix sockets); the
# container tests (scripts/test-containers.sh) start a Docker Engine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI=${CI:-}
bash scripts/deploy-deps.sh
go vet ./...
bash scripts/binaries.sh
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed: $unformatted" >&2
  exit 1
fi
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
go test -race -count=1 -timeout 30m ./...
bash scripts/test-sandbox-unprivileged.sh
bash scripts/test-containers.sh
bash scripts/fuzz.sh
