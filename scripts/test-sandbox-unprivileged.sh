#!/usr/bin/env bash
# The sandbox's escape suite again, as an unprivileged user (nobody), in the
# full and the masked-proc tier: the sandbox must hold without root too. Run by make test when it runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test-sandbox-unprivileged: already unprivileged; go test ./internal/sandbox covers it"
  exit 0
fi
dir=$(mktemp -d /tmp/pkgfleet-unpriv-XXXXXX)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
mkdir -m 1777 "$dir/tmp"
go test -c -o "$dir/sandbox.test" ./internal/sandbox/
(cd internal/sandbox && CGO_ENABLED=0 go build -o "$dir/probe" ./testdata/probe)
chmod 755 "$dir/sandbox.test" "$dir/probe"
# Both tiers: a worker in a container with a masked /proc runs unprivileged
# in masked-proc, so that is the pass that matters most there.
for tier in full masked-proc; do
  echo "sandbox escape suite as uid 65534, tier $tier:"
  setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/bin:/bin \
    TMPDIR="$dir/tmp" PKGFLEET_SANDBOX_PROBE="$dir/probe" CI=true PKGFLEET_TEST_UNPRIVILEGED=1 \
    PKGFLEET_TEST_TIER="$tier" "$dir/sandbox.test" -test.count=1
done
