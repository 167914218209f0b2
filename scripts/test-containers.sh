#!/usr/bin/env bash
# make test-containers (and make test): the images and the stack under a
# real Docker Engine, tests in internal/containertest (build tag
# containers). Installs and starts what they need: the engine
# (scripts/dockerd.sh), compose (Debian's docker-compose when no compose
# plugin answers), helm (scripts/deploy-deps.sh), R and Python on the host
# (scripts/deps.sh) to install what the stack serves; then make images.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI=${CI:-}
bash scripts/deps.sh
bash scripts/dockerd.sh
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  source scripts/apt.sh
  apt_install test-containers docker-compose
fi
PKGFLEET_HELM=$(bash scripts/deploy-deps.sh --print-helm)
export PKGFLEET_HELM
bash scripts/images.sh

# The tests are built only with the tag: vet and staticcheck them with it.
go vet -tags containers ./internal/containertest/
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags containers ./internal/containertest/
go test -tags containers -count=1 -timeout 45m -v ./internal/containertest/
