# Sourced by the scripts that install what a run or a test needs: one way
# to install Debian packages, and one way to find this machine's Debian
# mirror (never written down anywhere: read from apt's own sources).

# apt_install WHO PKG… installs PKGs with apt-get (through sudo unless
# root), saying so on stderr as WHO; without apt-get it says what to
# install by hand and fails. stdout stays clean for callers that capture it.
apt_install() {
  local who=$1
  shift
  if ! command -v apt-get >/dev/null; then
    echo "$who: missing $* and no apt-get to install them; install them by hand" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "$who: installing $*" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# debian_mirror prints the Debian mirror apt uses here (deb822 or one-line
# sources), or nothing.
debian_mirror() {
  local mirror
  mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "$mirror"
}
