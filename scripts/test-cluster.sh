#!/usr/bin/env bash
# make test's cluster phase: the Helm chart on a real single-node Kubernetes
# (issue 29). Brings up, as processes of its own: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler (built once into
# ~/.cache/pkgfleet/tools by scripts/deploy-deps.sh), a second containerd
# (Debian's, with its own config, socket, root and state, the CRI plugin
# and runc), CoreDNS on the node's bridge address, and a kubelet on cgroup
# v1 with the cgroupfs driver; pods get addresses from Debian's CNI plugins
# on a bridge of its own. There is no kube-proxy: Service cluster IPs do
# not route, headless Services, DNS and pod IPs do. The images of make
# images are imported into that containerd under the chart's default
# names; then go test -tags cluster ./internal/clustertest/ installs the
# chart on the node.
#
# Everything it starts or creates is removed on exit (trap): processes,
# pods' network namespaces, mounts, cgroups, the bridge, the iptables
# chains the kubelet and the CNI plugins add, the kernel settings the
# kubelet changes. One thing is kept, as the tools are: its containerd's
# root in ~/.cache/pkgfleet/cluster/containerd, with the imported images
# and no containers. The host's Docker Engine and its containerd are only
# read from (docker save). Each step's time is logged.
#
# PKGFLEET_CLUSTER_HOLD=SECONDS keeps the node up that long before the
# teardown (to look at it by hand); PKGFLEET_CLUSTER_RUN=REGEXP runs only
# those tests.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export CI=${CI:-}

t0=$SECONDS
step_start=$SECONDS
step() { # logs the time of the step that ended and names the next
  local now=$SECONDS
  if [ -n "${step_name:-}" ]; then
    printf 'cluster: %-40s %4ds\n' "$step_name" $((now - step_start))
  fi
  step_name=$1 step_start=$now
  echo "cluster: ${step_name} ..."
}

source scripts/tools.sh # mod_version, own_main_key; sets cache
if [ "$(id -u)" -ne 0 ]; then
  echo "cluster: a kubelet and containerd need root" >&2
  exit 1
fi

step "tools (deploy-deps.sh) and images (make images)"
PKGFLEET_HELM=$(bash scripts/deploy-deps.sh --print-helm)
export PKGFLEET_HELM
# make test's containers phase has just built the images from this checkout;
# alone, the phase builds them when one is missing (PKGFLEET_CLUSTER_IMAGES=build
# rebuilds them anyway).
if [ "${PKGFLEET_CLUSTER_IMAGES:-}" = build ] || ! bash scripts/dockerd.sh ||
  ! docker image inspect pkgfleet-api:local pkgfleet-worker:local pkgfleet-redis:local >/dev/null 2>&1; then
  bash scripts/images.sh
fi
kube_version=$(mod_version deploy/tools/kube k8s.io/kubernetes)
etcd_version=$(mod_version deploy/tools/etcd go.etcd.io/etcd/server/v3)
coredns_key=$(own_main_key deploy/tools/coredns github.com/coredns/coredns)
bin() { echo "$cache/pkgfleet/tools/$1-$2/$1"; }
etcd=$(bin etcd "$etcd_version")
apiserver=$(bin kube-apiserver "$kube_version")
kubectl=$(bin kubectl "$kube_version")
scheduler=$(bin kube-scheduler "$kube_version")
controller=$(bin kube-controller-manager "$kube_version")
kubelet=$(bin kubelet "$kube_version")
coredns=$(bin coredns "$coredns_key")
for b in "$etcd" "$apiserver" "$kubectl" "$scheduler" "$controller" "$kubelet" "$coredns"; do
  [ -x "$b" ] || { echo "cluster: $b is missing (scripts/deploy-deps.sh builds it)" >&2; exit 1; }
done
for c in containerd runc ctr iptables ip openssl; do
  command -v "$c" >/dev/null || { echo "cluster: $c is missing (scripts/deploy-deps.sh installs it)" >&2; exit 1; }
done
cni_bin=/usr/lib/cni
for p in bridge host-local loopback firewall; do
  [ -x "$cni_bin/$p" ] || { echo "cluster: $cni_bin/$p is missing (containernetworking-plugins)" >&2; exit 1; }
done

# The node's names and addresses. The bridge's /24 must be free on this host.
node=pkgfleet-node
bridge=pkgfl-cni0
net=pkgfleet-cluster
subnet=10.229.0.0/24
host_ip=10.229.0.1
service_cidr=10.230.0.0/24
cgroup_root=/pkgfleet-cluster
run_parent=${TMPDIR:-/tmp}

# One cluster phase at a time on a host: two would share the bridge's
# subnet and the kept containerd root. A second one waits for the first.
# The lock is on an open file, so it ends with this script however it ends
# (kill -9 included); the daemons below do not inherit it.
lock=/run/lock/pkgfleet-cluster.lock
[ -d /run/lock ] || lock=$run_parent/pkgfleet-cluster.lock
exec {lock_fd}>"$lock"
if ! flock -n "$lock_fd"; then
  echo "cluster: another cluster phase is running on this host ($lock); waiting for it, at most 30 min"
  flock -w 1800 "$lock_fd" || { echo "cluster: another cluster phase still holds $lock after 30 min" >&2; exit 1; }
fi

# Holding the lock, whatever an earlier run left is stale: a run killed
# with -9 (or with its session) never reached its trap's teardown. Its
# processes, mounts, cgroups, run directory and bridge go now; a host
# address in the subnet that is not that bridge is someone else's and
# stops the phase below.
sweep_stale() {
  local old m c p
  for old in "$run_parent"/pkgfleet-cluster-*; do
    [ -d "$old" ] || continue
    echo "cluster: removing what a run that did not end left: $old"
    for p in $(pgrep -f -- "$old/" || true); do
      pkill -KILL -P "$p" 2>/dev/null || true
      kill -KILL "$p" 2>/dev/null || true
    done
    { grep -o " $old/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$old" 2>/dev/null || true
  done
  for c in /sys/fs/cgroup/*/; do
    [ -d "$c${cgroup_root#/}" ] || continue
    find "$c${cgroup_root#/}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if ip link show "$bridge" >/dev/null 2>&1; then
    echo "cluster: removing the bridge $bridge a run that did not end left"
    ip link delete "$bridge" 2>/dev/null || true
  fi
}
sweep_stale
if ip -o addr show | grep -q " ${host_ip%.*}\."; then
  echo "cluster: ${subnet} is in use on this host, not by a cluster phase:" >&2
  ip -o addr show | grep " ${host_ip%.*}\." >&2
  exit 1
fi

run=$(mktemp -d "$run_parent/pkgfleet-cluster-XXXXXX")
chmod 0755 "$run"
mkdir -p "$run/logs"
echo "cluster: state in $run"
pids=()
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
saved_sysctls=()
for s in "${sysctls[@]}"; do
  if v=$(sysctl -n "$s" 2>/dev/null); then saved_sysctls+=("$s=$v"); fi
done
iptables-save >"$run/iptables.before" 2>/dev/null || true
ip6tables-save >"$run/ip6tables.before" 2>/dev/null || true
netns_before=$(ls /var/run/netns 2>/dev/null || true)
netns_dir_existed=$([ -d /var/run/netns ] && echo yes || true)
# Host paths the kubelet creates whatever its flags say (device plugins'
# socket, /var/log/containers): removed at the end unless they were there.
host_dirs=()
for d in /var/lib/kubelet /var/log/containers /usr/libexec/kubernetes; do
  [ -e "$d" ] || host_dirs+=("$d")
done

# new_chains TOOL TABLE: the kubelet's and the CNI plugins' chains (KUBE-*,
# CNI-*) of TABLE that were not there before this run; never another's (a
# Docker Engine started meanwhile adds its own).
new_chains() {
  local before=$run/${1%-save}.before
  comm -13 <(awk -v t="*$2" '/^\*/{in_t=($0==t)} in_t && /^:/{sub(/^:/,""); print $1}' "$before" | sort -u) \
    <("$1" -t "$2" 2>/dev/null | awk '/^:/{sub(/^:/,""); print $1}' | sort -u) | grep -E '^(KUBE|CNI)-'
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Every step of the teardown runs, whatever the one before it did.
  set +e +o pipefail
  if [ -n "${PKGFLEET_CLUSTER_HOLD:-}" ]; then
    echo "cluster: PKGFLEET_CLUSTER_HOLD: the node stays up for $PKGFLEET_CLUSTER_HOLD s (KUBECONFIG=$kubeconfig); kill $BASHPID's sleep to tear it down now"
    sleep "$PKGFLEET_CLUSTER_HOLD" &
    wait $!
  fi
  step "teardown"
  # A step still running (go test): it and what it started.
  if [ -n "${fg_pid:-}" ] && kill -0 "$fg_pid" 2>/dev/null; then
    pkill -TERM -P "$fg_pid" 2>/dev/null
    kill -TERM "$fg_pid" 2>/dev/null
    wait "$fg_pid" 2>/dev/null
  fi
  # The pods first, through the kubelet: each sandbox's CNI DEL releases
  # its address and rules, and containerd removes its network namespace.
  if [ -n "${kubeconfig:-}" ] && [ -f "$kubeconfig" ] && kill -0 "${kubelet_pid:-0}" 2>/dev/null; then
    "$kubectl" --kubeconfig "$kubeconfig" delete namespaces -l pkgfleet.cluster/test --wait=false >/dev/null 2>&1 || true
    "$kubectl" --kubeconfig "$kubeconfig" delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      [ -z "$(ctr --address "$run/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null)" ] && break
      "$kubectl" --kubeconfig "$kubeconfig" delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
      sleep 1
    done
  fi
  # The containers left in the kept containerd root (their snapshots go
  # with them).
  if [ -S "$run/containerd.sock" ]; then
    local cs
    cs=$(ctr --address "$run/containerd.sock" -n k8s.io containers ls -q 2>/dev/null)
    # shellcheck disable=SC2086 # one id a word
    [ -z "$cs" ] || ctr --address "$run/containerd.sock" -n k8s.io containers rm $cs >/dev/null 2>&1
  fi
  # Then every process of this run, newest first.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    for _ in $(seq 1 100); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${pids[i]}" 2>/dev/null || true
  done
  # What the kubelet left running (the pods' shims and containers).
  local shim
  for shim in $(pgrep -f -- "-address $run/containerd.sock" || true); do
    pkill -KILL -P "$shim" 2>/dev/null || true
    kill -KILL "$shim" 2>/dev/null || true
  done
  # Network namespaces the pods left (never one that was there before).
  local ns
  for ns in $(comm -13 <(echo "$netns_before" | sort) <(ls /var/run/netns 2>/dev/null | sort)); do
    case $ns in cni-*) ip netns delete "$ns" 2>/dev/null || { umount "/var/run/netns/$ns" 2>/dev/null; rm -f "/var/run/netns/$ns"; } ;; esac
  done
  [ -n "$netns_dir_existed" ] || rmdir /var/run/netns 2>/dev/null
  local d
  for d in "${host_dirs[@]}"; do rm -rf "$d"; done
  # Mounts under the run directory (secrets' tmpfs, rootfs overlays, shm).
  grep -o " $run/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # The kubelet's cgroups (cgroupfs driver under $cgroup_root), deepest first.
  local c
  for c in /sys/fs/cgroup/*/; do
    [ -d "$c${cgroup_root#/}" ] || continue
    find "$c${cgroup_root#/}" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  ip link delete "$bridge" 2>/dev/null || true
  # What the CRI plugin kept of those containers in the kept root.
  if [ -n "${images:-}" ]; then
    rm -rf "$images"/io.containerd.grpc.v1.cri/sandboxes/* "$images"/io.containerd.grpc.v1.cri/containers/*
  fi
  # iptables chains the kubelet and the CNI plugins added: rules that jump
  # to them first, then the chains.
  local tool table chain
  for tool in iptables-save ip6tables-save; do
    local ipt=${tool%-save}
    for table in filter nat mangle; do
      for chain in $(new_chains "$tool" "$table"); do
        "$tool" -t "$table" | grep -E -- "-j $chain( |$)" | sed 's/^-A /-D /' | while read -r rule; do
          # iptables-save quotes what has spaces (comments): eval reads it back.
          eval "$ipt -t $table $rule" 2>/dev/null || true
        done
      done
      for chain in $(new_chains "$tool" "$table"); do "$ipt" -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in $(new_chains "$tool" "$table"); do "$ipt" -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
  rm -f /var/lib/cni/results/"$net"-* 2>/dev/null || true
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  find /var/log/containers -maxdepth 1 -lname "$run/*" -delete 2>/dev/null || true
  local s
  for s in "${saved_sysctls[@]}"; do sysctl -q -w "$s" >/dev/null 2>&1 || true; done
  if [ "$rc" -ne 0 ]; then
    for l in "$run"/logs/*.log; do
      echo "---- the end of $(basename "$l")"
      tail -n 25 "$l"
    done
  fi
  rm -rf "$run" 2>/dev/null || { sleep 1; rm -rf "$run" || true; }
  step "done"
  echo "cluster: ${SECONDS}s in all, teardown included; exit $rc"
  return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: a daemon of this run, its output in logs/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$run/logs/$name.log" 2>&1 </dev/null {lock_fd}>&- &
  pids+=($!)
  last_pid=$!
}
# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  echo "cluster: $what: not within ${secs}s" >&2
  return 1
}
# fg CMD...: a long step in the background, waited for, so that a signal
# to this script reaches its trap at once (bash runs traps only between
# foreground commands) and the trap's teardown ends the step's processes.
fg() {
  "$@" {lock_fd}>&- &
  fg_pid=$!
  wait "$fg_pid"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "network: bridge $bridge $subnet"
ip link add "$bridge" type bridge
ip addr add "$host_ip/24" dev "$bridge"
ip link set "$bridge" up
sysctl -q -w net.ipv4.ip_forward=1
mkdir -p "$run/cni/net.d"
cat >"$run/cni/net.d/10-$net.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$net",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$run/cni/ipam",
              "ranges": [[{"subnet": "$subnet", "gateway": "$host_ip"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "firewall", "backend": "iptables"}
  ]
}
EOF

step "containerd (own config, socket, root, state) and the images"
# The one thing kept between runs: this containerd's root, with the images
# it imported (unpacking make images' ~1.3 GB takes minutes on two busy
# cores). Its containers are removed at the teardown; a run whose images
# are those of Docker's (by image id) imports nothing.
images=${XDG_CACHE_HOME:-$HOME/.cache}/pkgfleet/cluster/containerd
mkdir -p "$images"
# The pod sandbox image (deploy/cluster/pause, built below) under a name of
# its own: no registry is asked for it.
pause_ref=localhost/pkgfleet-pause:3.10
cat >"$run/containerd.toml" <<EOF
version = 2
root = "$images"
state = "$run/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$run/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_ref"
  # This root lacks CAP_SYS_RESOURCE: without it every pod fails with runc's
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$run/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
# What a run that did not end left in the kept root: the CRI plugin's
# records now, its containers once containerd answers (a run that ends
# removes both at its teardown).
rm -rf "$images"/io.containerd.grpc.v1.cri/sandboxes/* "$images"/io.containerd.grpc.v1.cri/containers/*
start containerd containerd --config "$run/containerd.toml"
wait_for "containerd answers" 30 ctr --address "$run/containerd.sock" version
ctr_() { ctr --address "$run/containerd.sock" -n k8s.io "$@"; }
stale=$(ctr_ containers ls -q)
# shellcheck disable=SC2086 # one id a word
[ -z "$stale" ] || { echo "cluster: removing containers a run that did not end left"; ctr_ containers rm $stale >/dev/null; }

# The pause image: a static Go binary in a one-layer image in docker save's
# format, which ctr imports.
img=$run/pause-image
mkdir -p "$img/rootfs"
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$img/rootfs/pause" ./deploy/cluster/pause
# Reproducible (Go's build is, and the tars are made so): the same pause
# image each run, which the kept containerd root then already holds.
tar -C "$img/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$img/layer.tar" pause
layer_sha=$(sha256sum "$img/layer.tar" | cut -d' ' -f1)
cat >"$img/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_sha"]}}
EOF
echo '[{"Config":"config.json","RepoTags":["'"$pause_ref"'"],"Layers":["layer.tar"]}]' >"$img/manifest.json"
tar -C "$img" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$run/pause.tar" manifest.json config.json layer.tar
pause_id=$(sha256sum "$run/pause.tar" | cut -d' ' -f1)

# make images' images, under the names the chart's defaults ask for, so
# that helm install with default values finds them (no registry here).
app_version=$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' charts/pkgfleet/Chart.yaml)
redis_tag=$(sed -n '/^redis:/,/^[a-z]/s/^    tag: "\(.*\)"$/\1/p' charts/pkgfleet/values.yaml)
local_images=(pkgfleet-api:local pkgfleet-worker:local pkgfleet-redis:local)
# The chart's default references, in the same order; ctr's import gives
# them their registry's full names, as a kubelet asks for them.
chart_images=("pkgfleet/pkgfleet-api:$app_version" "pkgfleet/pkgfleet-worker:$app_version" "redis:$redis_tag")
want="pause $pause_ref $pause_id app $app_version redis $redis_tag $(docker image inspect -f '{{.Id}}' "${local_images[@]}" | tr '\n' ' ')"
if [ "$(cat "$images/pkgfleet-imported" 2>/dev/null)" = "$want" ]; then
  echo "cluster: the images are those imported before (${local_images[*]}, pause)"
else
  rm -f "$images/pkgfleet-imported"
  ctr_ images import "$run/pause.tar" >/dev/null
  # Tagged under the chart's names in Docker only for the save, then
  # untagged: the host's Docker keeps just make images' names.
  for i in "${!local_images[@]}"; do docker tag "${local_images[$i]}" "${chart_images[$i]}"; done
  rc=0
  docker save "${chart_images[@]}" | ctr_ images import - >/dev/null || rc=$?
  docker rmi "${chart_images[@]}" >/dev/null
  [ "$rc" -eq 0 ] || { echo "cluster: importing the images failed" >&2; exit 1; }
  echo "$want" >"$images/pkgfleet-imported"
fi
ctr_ images ls -q | grep -v '^sha256:' | sed 's/^/cluster: image /'

step "etcd and kube-apiserver"
pki=$run/pki
mkdir -p "$pki"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
admin_token=$(openssl rand -hex 16)
node_token=$(openssl rand -hex 16)
{
  echo "$admin_token,admin,admin,system:masters"
  echo "$node_token,system:node:$node,node,system:nodes"
} >"$pki/tokens.csv"
etcd_port=$(free_port)
peer_port=$(free_port)
api_port=$(free_port)
start etcd "$etcd" --name=node --data-dir="$run/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="node=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn
start kube-apiserver "$apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
  --cert-dir="$pki/apiserver" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.key" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range="$service_cidr" \
  --token-auth-file="$pki/tokens.csv" --authorization-mode=AlwaysAllow --anonymous-auth=false \
  --allow-privileged=true --endpoint-reconciler-type=none \
  --kubelet-preferred-address-types=InternalIP \
  --enable-priority-and-fairness=false --profiling=false
kubeconfig() { # FILE TOKEN
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: node
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/apiserver/apiserver.crt
users:
- name: user
  user:
    token: $2
contexts:
- name: node
  context: {cluster: node, user: user}
current-context: node
EOF
  chmod 0600 "$1"
}
kubeconfig=$run/admin.kubeconfig
wait_for "the apiserver's certificate" 60 test -s "$pki/apiserver/apiserver.crt"
kubeconfig "$kubeconfig" "$admin_token"
kubeconfig "$run/kubelet.kubeconfig" "$node_token"
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }
wait_for "the apiserver is ready" 120 k get --raw /readyz

step "controller-manager, scheduler, CoreDNS"
start kube-controller-manager "$controller" --kubeconfig="$kubeconfig" \
  --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$(free_port)" \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/apiserver/apiserver.crt" \
  --use-service-account-credentials=false --leader-elect=false \
  --profiling=false
start kube-scheduler "$scheduler" --kubeconfig="$kubeconfig" \
  --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$(free_port)" --leader-elect=false --profiling=false
# CoreDNS as a host process on the bridge address: the pods' nameserver
# (no kube-proxy would route a cluster IP to a CoreDNS pod).
cat >"$run/Corefile" <<EOF
.:53 {
    bind $host_ip
    errors
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $kubeconfig node
        pods insecure
        fallthrough in-addr.arpa
    }
    forward . /etc/resolv.conf
    cache 5
}
EOF
start coredns "$coredns" -conf "$run/Corefile"

step "kubelet (cgroup v1, cgroupfs) until the node is Ready"
kubelet_port=$(free_port)
mkdir -p "$run/kubelet" "$run/pod-logs"
cat >"$run/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
containerRuntimeEndpoint: unix://$run/containerd.sock
address: $host_ip
port: $kubelet_port
readOnlyPort: 0
volumePluginDir: $run/kubelet/volume-plugins
healthzPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDNS: [$host_ip]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
failSwapOn: false
podLogsDir: $run/pod-logs
protectKernelDefaults: false
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%", nodefs.inodesFree: "2%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 30
EOF
# The kubelet's cgroup root must exist in every hierarchy (cgroup v1).
for c in /sys/fs/cgroup/*/; do
  mkdir -p "$c${cgroup_root#/}"
done
start kubelet "$kubelet" --config="$run/kubelet.yaml" --kubeconfig="$run/kubelet.kubeconfig" \
  --root-dir="$run/kubelet" --cert-dir="$run/kubelet/pki" --hostname-override="$node" --node-ip="$host_ip" -v=1
kubelet_pid=$last_pid
node_registered() { kill -0 "$kubelet_pid" && k get node "$node"; }
wait_for "the node registers" 120 node_registered || { kill -0 "$kubelet_pid" 2>/dev/null || echo "cluster: the kubelet exited" >&2; exit 1; }
k wait --for=condition=Ready "node/$node" --timeout=120s
k get nodes -o wide

# The chart's claims: hostPath volumes on the node, no class (no
# provisioner here). Redis's (ReadWriteOnce) and the artifacts'
# (ReadWriteMany) of the tests' releases; each test binds its own.
step "go test -tags cluster ./internal/clustertest/"
export KUBECONFIG=$kubeconfig PKGFLEET_KUBECTL=$kubectl
export PKGFLEET_CLUSTER_DIR=$run PKGFLEET_CLUSTER_HOST_IP=$host_ip PKGFLEET_CLUSTER_KUBELET_ROOT=$run/kubelet
go vet -tags cluster ./internal/clustertest/
fg go test -tags cluster -count=1 -timeout 30m -v ./internal/clustertest/ ${PKGFLEET_CLUSTER_RUN:+-run "$PKGFLEET_CLUSTER_RUN"}
step "cluster phase passed"
echo "cluster: $((SECONDS - t0))s before teardown"
