#!/usr/bin/env bash
# The deployment checks alone: promtool check and unit tests of the alert
# rules, helm lint and helm template of charts/pkgfleet for every value set
# with strict decoding, the dashboard, the Dockerfiles and compose.yaml.
# Installs promtool and helm first when missing (scripts/deploy-deps.sh).
# Extra arguments go to go test, e.g. -run Chart -v.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deploy-deps.sh
go test -count=1 "$@" ./deploy/
