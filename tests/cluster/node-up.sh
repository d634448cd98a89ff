#!/usr/bin/env bash
# Adds a real node to a local plane started with `OPERON_PLANE_PROFILE=node tests/cluster/up.sh`:
# containerd (Debian's, with runc and cgroupfs), a kubelet registered as the node `operon-node`
# (InternalIP 127.0.0.1) and kube-scheduler — kubelet and scheduler built from the same Kubernetes
# module graph as the plane (`tests/cluster/build.sh kubelet kube-scheduler`). The pod sandbox
# image is built here from Kubernetes' own pause.c, and the images of deploy/docker/build.sh
# (localhost/operon, localhost/operon-kopf) are imported from podman into containerd's store: no
# registry is used.
# Idempotent: when the node is up and Ready it only re-imports images that podman has rebuilt.
# Prints on stdout:
#
#   export KUBECONFIG=<plane dir>/kubeconfig
#
# Pods: host-network pods work (the node's address is 127.0.0.1, where the plane listens). Other
# pods get a network namespace on a bridge with no address on the host and no route out (CNI
# bridge + host-local from Debian's containernetworking-plugins): they reach each other, not the
# plane. Everything this node creates lives under <plane dir>/node, /run/operon-node-<id>, the
# cgroup /operon-node-<id> of each controller, /run/netns/cni-* (pod network namespaces) and the bridge
# `opbr<id>`; tests/cluster/node-down.sh removes all of it.
#
# Environment: OPERON_CLUSTER_DIR, OPERON_CACHE (as up.sh), OPERON_NODE_IMAGES (the podman images
# to import; default "localhost/operon:<version> localhost/operon-kopf:<version>"; missing ones
# are reported and skipped). Logs: <plane dir>/node/logs/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
DIR=${OPERON_CLUSTER_DIR:-$CACHE/cluster}
NODE="$DIR/node"
NODE_NAME=operon-node
t0=$(date +%s)
log() { echo "[cluster/node-up] $*" >&2; }
PROCS=$NODE
# shellcheck source=tests/cluster/lib.sh
. "$here/lib.sh"
step_t=$t0
step() { local now; now=$(date +%s); log "$* (+$(( now - step_t ))s)"; step_t=$now; }

[ -f "$DIR/env" ] || { log "no plane in $DIR: start one first with OPERON_PLANE_PROFILE=node tests/cluster/up.sh"; exit 1; }
# shellcheck disable=SC1091
. "$DIR/env"
if [ "${PLANE_PROFILE:-plain}" != node ]; then
  log "the plane in $DIR has profile '${PLANE_PROFILE:-plain}'; a node needs OPERON_PLANE_PROFILE=node tests/cluster/up.sh"
  log "(the plain plane has no Node authorizer, no ServiceAccount admission and no Deployment controllers)"
  exit 1
fi
exec 8>"$DIR.node.lock"
flock -w 900 8 || { log "another node-up.sh has held $DIR.node.lock for 15 minutes"; exit 1; }

ID=$(printf '%s' "$DIR" | sha256sum | cut -c1-8)
STATE="/run/operon-node-$ID"          # short: containerd's sockets live here
BRIDGE="opbr$ID"                       # 15 characters at most
CGROUP="operon-node-$ID"              # this node's cgroup root in every controller
KUBECTL=("$BIN/kubectl" --kubeconfig "$DIR/kubeconfig")
SOCK="$STATE/containerd.sock"
ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }
# shellcheck source=deploy/docker/podman.sh
. "$root/deploy/docker/podman.sh"
version=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version/{print $2; exit}' "$root/Cargo.toml")
read -r -a images <<<"${OPERON_NODE_IMAGES:-localhost/operon:$version localhost/operon-kopf:$version}"
PAUSE_IMAGE=localhost/operon-pause:3.10

node_ready() {
  [ "$("${KUBECTL[@]}" get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# Imports a podman image into containerd's k8s.io namespace, unless the same image ID is there.
import_image() { # podman-image
  local image=$1 id mark
  id=$(pm image inspect --format '{{.Id}}' "$image" 2>/dev/null) || {
    log "podman has no $image (build it with deploy/docker/build.sh); not imported"; return 0; }
  mark="$NODE/images/$(printf '%s' "$image" | tr '/:' '__').id"
  if [ -f "$mark" ] && [ "$(cat "$mark")" = "$id" ] && ctr_ images check "name==$image" 2>/dev/null | grep -q complete; then
    return 0
  fi
  local t; t=$(date +%s)
  mkdir -p "$NODE/images"
  pm save --quiet --format docker-archive -o "$NODE/images/image.tar" "$image"
  ctr_ images import --snapshotter overlayfs "$NODE/images/image.tar" >/dev/null
  rm -f "$NODE/images/image.tar"
  echo "$id" > "$mark"
  log "imported $image (${id:0:12}) into containerd in $(( $(date +%s) - t ))s"
}

if alive containerd && alive kubelet && alive kube-scheduler && node_ready; then
  for image in "${images[@]}"; do import_image "$image"; done
  log "already up (node $NODE_NAME Ready)"
  echo "export KUBECONFIG=$DIR/kubeconfig"
  exit 0
fi
if [ -d "$NODE" ]; then
  log "found a stale or partial node in $NODE; removing it first"
  "$here/node-down.sh" >&2
fi

# --- prerequisites -------------------------------------------------------------------------------
missing=()
for tool in containerd:containerd ctr:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
            musl-gcc:musl-tools podman:podman ip:iproute2 findmnt:util-linux; do
  command -v "${tool%%:*}" >/dev/null || [ -x "${tool%%:*}" ] || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "missing Debian packages: ${missing[*]} (deploy/local/prereqs.sh installs them)"
  exit 1
fi
BIN_NODE=$("$here/build.sh" kubelet kube-scheduler)
[ "$BIN_NODE" = "$BIN" ] || { log "the plane's binaries ($BIN) and the node's ($BIN_NODE) differ"; exit 1; }
step "binaries ready: kubelet $("$BIN/kubelet" --version | awk '{print $2}'), kube-scheduler, containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}')"

mkdir -p "$NODE"/{pki,logs,containerd,kubelet,cni/net.d,cni/ipam,pod-logs,images} "$STATE"
echo "$STATE" > "$NODE/state-dir"; echo "$BRIDGE" > "$NODE/bridge"; echo "$CGROUP" > "$NODE/cgroup"

# --- credentials: client and serving certificates signed by the plane's CA ----------------------
pki="$DIR/pki"
cert() { # name subject ext
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$NODE/pki/$1.key" \
    -out "$NODE/pki/$1.csr" -subj "$2" 2>/dev/null
  printf '%b' "$3" > "$NODE/pki/$1.ext"
  openssl x509 -req -in "$NODE/pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$NODE/pki/$1.ext" -out "$NODE/pki/$1.crt" 2>/dev/null
  chmod 600 "$NODE/pki/$1.key"
}
# The kubelet as the Node authorizer expects it: system:node:<name> in system:nodes.
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" 'extendedKeyUsage=clientAuth\n'
cert kubelet-serving "/CN=$NODE_NAME" "subjectAltName=IP:127.0.0.1,DNS:$NODE_NAME\nextendedKeyUsage=serverAuth\n"
cert scheduler "/CN=system:kube-scheduler" 'extendedKeyUsage=clientAuth\n'
kubeconfig() { # name
  cat <<KC
apiVersion: v1
kind: Config
clusters:
- name: operon-local
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$pki/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$NODE/pki/$1.crt", client-key: "$NODE/pki/$1.key"}
contexts:
- name: $1
  context: {cluster: operon-local, user: $1}
current-context: $1
KC
}
kubeconfig kubelet-client > "$NODE/kubelet.kubeconfig"
kubeconfig scheduler > "$NODE/scheduler.kubeconfig"
chmod 600 "$NODE"/*.kubeconfig

# --- start (as up.sh's: a session of their own, niced so every child is too) --------------------
start() { # name args...
  local name=$1; shift
  log "starting $name"
  setsid nohup nice -n 19 "$@" > "$NODE/logs/$name.log" 2>&1 < /dev/null 8>&- &
  echo $! > "$NODE/$name.pid"
}

# --- containerd ----------------------------------------------------------------------------------
# Pods: bridge + host-local on a bridge with no address on the host (isGateway false, no masquerade):
# pods that are not host-network get a namespace and an address, and no way off the machine.
cat > "$NODE/cni/net.d/10-operon.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "operon-node",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE/cni/ipam", "ranges": [[{"subnet": "10.88.$((16#${ID:0:2} % 200)).0/24"}]]}},
    {"type": "loopback"}
  ]
}
CNI
cat > "$NODE/containerd.toml" <<TOML
version = 2
root = "$NODE/containerd/root"
state = "$STATE"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$STATE/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # This machine's root lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj (runc:
  # "failed to update /proc/self/oom_score_adj: Permission denied" for the sandbox's -998):
  # containerd clamps the kubelet's values to its own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
        Root = "$STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/net.d"
TOML
start containerd containerd --config "$NODE/containerd.toml"
wait_for containerd 60 ctr --address "$SOCK" version
step "containerd is ready ($SOCK)"

# --- images: the sandbox (pause) image and Operon's ----------------------------------------------
if ! pm image exists "$PAUSE_IMAGE"; then
  src=$(cd "$here/kube-bins" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  work=$(mktemp -d)
  nice -n 19 musl-gcc -Os -static -Wall -Werror -DVERSION=v3.10-operon -o "$work/pause" "$src"
  strip "$work/pause"
  cp "$here/pause/Containerfile" "$work/"
  nice -n 19 bash -c '. "$1"; pm build --quiet --network none -f "$2/Containerfile" -t "$3" "$2" >/dev/null' _ \
    "$root/deploy/docker/podman.sh" "$work" "$PAUSE_IMAGE"
  rm -rf "$work"
  log "built $PAUSE_IMAGE from $src"
fi
for image in "$PAUSE_IMAGE" "${images[@]}"; do import_image "$image"; done
step "images in containerd: $(ctr_ images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

# --- the kubelet ---------------------------------------------------------------------------------
# Its own cgroup root in every controller (the hybrid v1 layout), so node-down.sh removes exactly
# what the node made. A new v1 cpuset starts empty: give it the parent's CPUs and memory nodes.
for ctl in /sys/fs/cgroup/*/; do
  [ -d "$ctl" ] || continue
  mkdir -p "$ctl$CGROUP"
  if [ -f "${ctl}cpuset.cpus" ]; then
    cat "${ctl}cpuset.cpus" > "$ctl$CGROUP/cpuset.cpus"
    cat "${ctl}cpuset.mems" > "$ctl$CGROUP/cpuset.mems"
  fi
done
KUBELET_PORT=$(free_port); KUBELET_HEALTHZ_PORT=$(free_port)
cat > "$NODE/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $NODE/pki/kubelet-serving.crt
tlsPrivateKeyFile: $NODE/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
failCgroupV1: false
failSwapOn: true
podLogsDir: $NODE/pod-logs
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
makeIPTablesUtilChains: false
protectKernelDefaults: false
serializeImagePulls: false
# Images come from podman, never from a registry: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Absolute thresholds: the node shares the machine's disk with builds (a clean clone's target dir
# alone is ~12 GB), and a percentage of a large disk (2% of 250 GB) tainted the node with
# disk-pressure mid-run, leaving every pod Pending.
evictionHard: {memory.available: 100Mi, nodefs.available: 512Mi, imagefs.available: 512Mi}
maxPods: 30
YAML
start kubelet "$BIN/kubelet" --config "$NODE/kubelet.yaml" --kubeconfig "$NODE/kubelet.kubeconfig" \
  --root-dir "$NODE/kubelet" --cert-dir "$NODE/pki" --hostname-override "$NODE_NAME" \
  --node-ip 127.0.0.1 --v 2
echo "$KUBELET_PORT" > "$NODE/kubelet.port"
wait_for kubelet 120 curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
step "kubelet is healthy (https://127.0.0.1:$KUBELET_PORT)"

# --- kube-scheduler ------------------------------------------------------------------------------
SCHED_PORT=$(free_port)
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$NODE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$NODE/scheduler.kubeconfig" --authorization-kubeconfig "$NODE/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$SCHED_PORT"
wait_for kube-scheduler 60 curl -fsSk --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz"
step "kube-scheduler is healthy"

# The node's address. The kubelet refuses a loopback --node-ip ("failed to validate nodeIP: nodeIP
# can't be loopback address", logged at every status update) and without one it would take eth0's
# address, where nothing of the plane listens. So the Node's status gets InternalIP 127.0.0.1 here;
# the kubelet keeps addresses it cannot set. Host-network pods' IP, the probes' target and the API
# server's way to the kubelet (logs, exec) all follow from it.
has_node() { "${KUBECTL[@]}" get node "$NODE_NAME" >/dev/null 2>&1; }
wait_for kubelet 60 has_node
"${KUBECTL[@]}" patch node "$NODE_NAME" --subresource=status --type=merge \
  -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"127.0.0.1\"},{\"type\":\"Hostname\",\"address\":\"$NODE_NAME\"}]}}" >/dev/null
# Ready, and schedulable: the node lifecycle controller lifts the not-ready taint the kubelet
# registers with.
schedulable() {
  node_ready && ! "${KUBECTL[@]}" get node "$NODE_NAME" -o 'jsonpath={.spec.taints[*].key}' | grep -q .
}
wait_for kubelet 120 schedulable
step "node $NODE_NAME is Ready and schedulable (InternalIP 127.0.0.1)"
log "up in $(( $(date +%s) - t0 ))s: node $NODE_NAME, logs in $NODE/logs"
echo "export KUBECONFIG=$DIR/kubeconfig"
