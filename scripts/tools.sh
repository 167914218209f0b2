# shellcheck shell=bash
# Builds pinned Go tools from the module proxy into the user cache, for
# scripts that source this file (deploy-deps.sh, versitygw.sh): each tool
# module in deploy/tools/<dir>/go.mod pins one upstream module, and its
# binaries go to $cache/pkgfleet/tools/<name>-<version>/<name>, where the
# tests (and make run) find them.

cache=${XDG_CACHE_HOME:-$HOME/.cache}

# mod_version MODDIR MODULE prints the version MODDIR/go.mod requires of
# MODULE (a tool's module is "// indirect" to go mod tidy).
mod_version() {
  sed -n -E "s#^(require)?[[:space:]]*$2 (v[^ ]+)( // indirect)?\$#\\2#p" "$1/go.mod"
}

# own_main_key MODDIR MODULE prints the key (the directory suffix) of a
# binary built from MODDIR's own main package (deploy/tools/coredns: CoreDNS
# with a plugin list of ours): MODULE's pinned version and a digest of
# main.go and go.mod, so that a changed plugin list or module builds anew,
# under a new directory, on every machine, and none keeps an older build.
own_main_key() {
  local version digest
  version=$(mod_version "$1" "$2")
  [ -n "$version" ] || return 1
  digest=$(cat "$1/main.go" "$1/go.mod" | sha256sum)
  echo "$version-${digest:0:8}"
}

# build_tools MODDIR VERSION LDFLAGS NAME=PACKAGE... builds each PACKAGE of
# the tool module MODDIR into $cache/pkgfleet/tools/NAME-VERSION/NAME,
# unless it is there; all in one go build, so shared packages compile once.
# Messages start with $tools_who (the calling script's name).
build_tools() {
  local moddir=$1 version=$2 ldflags=$3
  shift 3
  local names=() pkgs=() spec
  for spec in "$@"; do
    if [ ! -x "$cache/pkgfleet/tools/${spec%%=*}-$version/${spec%%=*}" ]; then
      names+=("${spec%%=*}")
      pkgs+=("${spec#*=}")
    fi
  done
  [ ${#pkgs[@]} -gt 0 ] || return 0
  echo "${tools_who:-tools}: building ${names[*]} $version into $cache/pkgfleet/tools/ (once)" >&2
  mkdir -p "$cache/pkgfleet/tools"
  local tmp
  tmp=$(mktemp -d "$cache/pkgfleet/tools/build-XXXXXX")
  (cd "$moddir" && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
    go build -trimpath "-ldflags=-s -w $ldflags" -o "$tmp/" "${pkgs[@]}") || { rm -rf "$tmp"; return 1; }
  local name
  for name in "${names[@]}"; do
    mkdir -p "$cache/pkgfleet/tools/$name-$version"
    mv "$tmp/$name" "$cache/pkgfleet/tools/$name-$version/$name"
  done
  rm -rf "$tmp"
}
