#!/usr/bin/env bash
# Installs what the deployment checks (go test ./deploy) need, when it is
# missing: promtool from Debian's prometheus package; apparmor_parser from
# Debian's apparmor package (AppArmor 3 on Debian 12) and an AppArmor 4
# parser in ~/.cache/pkgfleet/tools/apparmor-4/ (below); helm, built once
# from the Go module proxy at the version pinned in deploy/tools_test.go
# into the user cache (~/.cache/pkgfleet/tools/helm-<version>/helm), where
# the tests find it; and for the chart's admission test, kube-apiserver and
# kubectl (deploy/tools/kube/go.mod pins k8s.io/kubernetes) and etcd
# (deploy/tools/etcd/go.mod pins go.etcd.io/etcd/server/v3), built once into
# ~/.cache/pkgfleet/tools/<name>-<version>/ (Kubernetes takes about ten
# minutes cold on two cores); for the cluster phase's node, kube-scheduler,
# kube-controller-manager and kubelet from the same module, CoreDNS with
# the plugins it uses (deploy/tools/coredns), and Debian's containerd, runc,
# containernetworking-plugins and iptables. Safe to run again: it does nothing when all
# are there.
# With --print-helm it prints that helm's path on stdout (for PKGFLEET_HELM);
# with --packages it installs only the Debian packages and the AppArmor 4
# parser, the quick part, and builds none of the Go tools.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt.sh
tools_who=deploy-deps
source scripts/tools.sh # mod_version, own_main_key, build_tools; sets cache

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# apparmor_parser, to compile (never load) deploy/profiles/pkgfleet-worker.apparmor:
# Debian's apparmor package (AppArmor 3 on Debian 12), and an AppArmor 4 parser below.
if ! command -v apparmor_parser >/dev/null && [ ! -x /usr/sbin/apparmor_parser ] && [ ! -x /sbin/apparmor_parser ]; then
  apt_install deploy-deps apparmor # for apparmor_parser; nothing is loaded
fi

# An AppArmor 4 parser (it knows the userns rule; Debian 12 ships 3.0):
# Debian 13's apparmor and libc6 packages, unpacked, run with their own
# loader. Fetched from the mirror this machine's apt already uses, with
# private package lists: the host's apt configuration is not touched.
aa4=$cache/pkgfleet/tools/apparmor-4
if [ ! -x "$aa4/apparmor_parser" ]; then
  mirror=$(debian_mirror)
  if [ -z "$mirror" ] || ! command -v apt-get >/dev/null; then
    echo "deploy-deps: no Debian mirror in /etc/apt/sources.list* (or no apt-get): cannot fetch an AppArmor 4 parser" >&2
    exit 1
  fi
  echo "deploy-deps: unpacking Debian 13's apparmor_parser (AppArmor 4) into $aa4 (once)" >&2
  mkdir -p "$aa4"
  tmp=$(mktemp -d "$aa4/fetch-XXXXXX")
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs"
  echo "deb $mirror trixie main" >"$tmp/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$tmp/lists"
    -o "Dir::Cache=$tmp/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  # stdout stays clean: callers may capture this script's output.
  apt-get "${apt_opts[@]}" update -qq >&2
  (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download -qq apparmor/trixie libc6/trixie) >&2
  rm -rf "$aa4/root"
  for deb in "$tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$aa4/root"; done
  rm -rf "$tmp"
  loader=$(cd "$aa4/root" && ls usr/lib/*-linux-gnu/ld-linux*.so.* | head -n1)
  {
    echo '#!/bin/sh'
    echo '# Debian 13'"'"'s apparmor_parser with its own libc; includes resolve in its own /etc/apparmor.d.'
    echo 'root=$(dirname "$0")/root'
    echo "exec \"\$root/$loader\" --library-path \"\$root/$(dirname "$loader")\" \"\$root/usr/sbin/apparmor_parser\" --base \"\$root/etc/apparmor.d\" \"\$@\""
  } >"$aa4/apparmor_parser.new"
  chmod +x "$aa4/apparmor_parser.new"
  "$aa4/apparmor_parser.new" --version | head -n1 >&2
  mv "$aa4/apparmor_parser.new" "$aa4/apparmor_parser"
fi

# The cluster phase's node (scripts/test-cluster.sh): a second containerd
# with runc, the CNI plugins (/usr/lib/cni), iptables.
missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install deploy-deps "${missing[@]}"
fi

if ! command -v promtool >/dev/null; then
  apt_install deploy-deps prometheus # for promtool
  # Only the binaries are wanted: keep the packaged service from starting
  # where an init system would start it.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# --packages: the Debian packages (and the AppArmor 4 parser) only, not
# the Go tools below (make test builds those in the background).
if [ "${1:-}" = --packages ]; then
  exit 0
fi

helm_version=$(sed -n 's/^const helmVersion = "\(v[0-9.]*\)"$/\1/p' deploy/tools_test.go)
if [ -z "$helm_version" ]; then
  echo "deploy-deps: no helmVersion in deploy/tools_test.go" >&2
  exit 1
fi

helm_dir=$cache/pkgfleet/tools/helm-$helm_version
if [ ! -x "$helm_dir/helm" ]; then
  echo "deploy-deps: building helm $helm_version into $helm_dir (once; a few minutes)" >&2
  mkdir -p "$helm_dir"
  tmp=$(mktemp -d "$helm_dir/build-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && GOBIN=$tmp GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
    go install "-ldflags=-X helm.sh/helm/v3/internal/version.version=$helm_version" \
    "helm.sh/helm/v3/cmd/helm@$helm_version")
  mv "$tmp/helm" "$helm_dir/helm"
fi

kube_version=$(mod_version deploy/tools/kube k8s.io/kubernetes)
etcd_version=$(mod_version deploy/tools/etcd go.etcd.io/etcd/server/v3)
if [ -z "$kube_version" ] || [ -z "$etcd_version" ]; then
  echo "deploy-deps: no k8s.io/kubernetes in deploy/tools/kube/go.mod or etcd in deploy/tools/etcd/go.mod" >&2
  exit 1
fi
# Without these the binaries report v0.0.0-master, which helm's kubeVersion
# check and the apiserver's own compatibility version would take literally.
kube_minor=${kube_version#v1.}
kube_minor=${kube_minor%%.*}
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kube_minor"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$kube_version"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"
# The scheduler, controller manager and kubelet are the cluster phase's
# single node (scripts/test-cluster.sh); one build, so what they share with
# the apiserver compiles once.
build_tools deploy/tools/kube "$kube_version" "$kube_ldflags" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver kubectl=k8s.io/kubernetes/cmd/kubectl \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kubelet=k8s.io/kubernetes/cmd/kubelet
build_tools deploy/tools/etcd "$etcd_version" "" etcd=.
# The cluster phase's DNS: CoreDNS with only the plugins its Corefile uses
# (deploy/tools/coredns/main.go; go.mod pins the version).
if ! coredns_key=$(own_main_key deploy/tools/coredns github.com/coredns/coredns); then
  echo "deploy-deps: no github.com/coredns/coredns in deploy/tools/coredns/go.mod" >&2
  exit 1
fi
build_tools deploy/tools/coredns "$coredns_key" "" coredns=.

if [ "${1:-}" = --print-helm ]; then
  echo "$helm_dir/helm"
fi
