#!/usr/bin/env bash
# What the binaries link, and where the CLI builds. Admins run pkgfleet from
# their laptops, so it builds for macOS and Windows and links neither Redis
# nor the sandbox (it shares only internal/apiv1 with the API); the API links
# no sandbox. Run by scripts/test.sh after go vet.
set -euo pipefail
cd "$(dirname "$0")/.."
module=$(go list -m)
refuse() { # package pattern why: none of its dependencies may match
  local hits
  hits=$(go list -deps "./$1" | grep -vx "$module/$1" | grep -E "$2" || true)
  if [ -n "$hits" ]; then
    echo "$1 links $hits: $3" >&2
    exit 1
  fi
}
# apiv1 is a leaf (the standard library only), so whatever links it stays lean.
refuse internal/apiv1 "^[^/]*\\.[^/]*/" "internal/apiv1 must import only the standard library"
refuse cmd/pkgfleet "^$module/internal/sandbox\$|^github.com/redis/go-redis" "the CLI must link neither the sandbox nor Redis"
refuse cmd/api "^$module/internal/sandbox\$" "the API must not link the sandbox"
for os in darwin windows; do
  GOOS=$os GOARCH=amd64 go build -o /dev/null ./cmd/pkgfleet
done
