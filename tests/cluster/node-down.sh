#!/usr/bin/env bash
# Stops the node started by node-up.sh — kube-scheduler, the kubelet, every container and pod
# sandbox, containerd — and removes everything it made: mounts (the kubelet's pod volumes, its root
# dir's bind mount, containerd's rootfs and shm mounts), pod network namespaces and the bridge,
# the cgroups under /operon-node-<id>, and <plane dir>/node and /run/operon-node-<id>. Leaves the plane
# running (tests/cluster/down.sh stops it). Checks at the end that no process, mount or device is
# left, and fails if one is.
set -euo pipefail
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
DIR=${OPERON_CLUSTER_DIR:-$CACHE/cluster}
NODE="$DIR/node"
log() { echo "[cluster/node-down] $*" >&2; }
PROCS=$NODE
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"
[ -d "$NODE" ] || { log "nothing to stop ($NODE does not exist)"; exit 0; }
ID=$(printf '%s' "$DIR" | sha256sum | cut -c1-8)
STATE=$(cat "$NODE/state-dir" 2>/dev/null || echo "/run/operon-node-$ID")
BRIDGE=$(cat "$NODE/bridge" 2>/dev/null || echo "opbr$ID")
CGROUP=$(cat "$NODE/cgroup" 2>/dev/null || echo "operon-node-$ID")
SOCK="$STATE/containerd.sock"

stop_process kube-scheduler
stop_process kubelet

# Every container and sandbox containerd runs for the node, and the network namespaces of the
# sandboxes (their paths are in the sandboxes' specs). containerd does not stop its shims when it
# exits, so this happens while it still runs.
netns=()
killed=()
if [ -S "$SOCK" ] && ctr --address "$SOCK" version >/dev/null 2>&1; then
  ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }
  for c in $(ctr_ containers ls -q); do
    ns=$(ctr_ containers info "$c" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
for n in (spec.get("linux") or {}).get("namespaces") or []:
    if n.get("type") == "network" and n.get("path"):
        print(n["path"])' || true)
    [ -z "$ns" ] || netns+=("$ns")
    killed+=("$c")
    ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
  done
  sleep 1
  for c in $(ctr_ containers ls -q); do
    ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true
    ctr_ containers delete "$c" >/dev/null 2>&1 || true
  done
fi
stop_process containerd
# Shims outlive containerd when a task could not be deleted: those of this containerd name its socket.
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCK" || true); do
  log "killing a leftover shim (pid $pid)"; kill -KILL "$pid" 2>/dev/null || true
done

# Mounts under the node's directories (deepest first), then the pod network namespaces.
umount_under() { # dir
  local m
  findmnt -rn -o TARGET | awk -v p="$1" 'index($0, p) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
  done
}
umount_under "$NODE/"
umount_under "$NODE"
umount_under "$STATE"
for ns in "${netns[@]}"; do
  if findmnt -rn "$ns" >/dev/null; then umount "$ns" 2>/dev/null || umount -l "$ns" || true; fi
  rm -f "$ns"
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" && log "deleted the bridge $BRIDGE"

# The node's cgroups, deepest first (empty now that every task is gone).
for ctl in /sys/fs/cgroup/*/; do
  [ -d "$ctl$CGROUP" ] && find "$ctl$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

# /var/log/containers/ is the kubelet's fixed place for its symlinks to the pods' logs.
find /var/log/containers -maxdepth 1 -type l -lname "$NODE/*" -delete 2>/dev/null || true
rmdir /var/log/containers 2>/dev/null || true   # the kubelet made it; kept when anything else is in it
rm -rf "$NODE" "$STATE"
# Fixed paths the kubelet and containerd use whatever their root: the device-plugin socket dir
# (/var/lib/kubelet/device-plugins), libcni's cache (/var/lib/cni), the pod network namespaces'
# dir (/run/netns). Emptied of the node's files, then removed when empty (and no other kubelet).
if ! pgrep -x kubelet >/dev/null; then
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
fi
# libcni's cache for the sandboxes killed here rather than stopped by the kubelet
# (<network>-<sandbox id>-<interface>).
for c in "${killed[@]}"; do rm -f /var/lib/cni/results/*-"$c"-*; done
rmdir /var/lib/cni/results /var/lib/cni /run/netns 2>/dev/null || true
# containerd 1.6 keeps shim sockets and ctr's fifos under the fixed /run/containerd: remove what is
# left there when it is empty and no other containerd runs.
if ! pgrep -x containerd >/dev/null; then
  find /run/containerd -depth -type d -empty -delete 2>/dev/null || true
fi

# Nothing left?
left=0
if pgrep -f "$NODE/|$STATE/" >/dev/null; then log "processes left: $(pgrep -af "$NODE/|$STATE/")"; left=1; fi
if findmnt -rn -o TARGET | grep -qE "^($NODE|$STATE)"; then log "mounts left: $(findmnt -rn -o TARGET | grep -E "^($NODE|$STATE)")"; left=1; fi
if ip link show "$BRIDGE" >/dev/null 2>&1; then log "the bridge $BRIDGE is left"; left=1; fi
for ctl in /sys/fs/cgroup/*/; do [ -d "$ctl$CGROUP" ] && { log "cgroup left: $ctl$CGROUP"; left=1; }; done
[ "$left" = 0 ] || exit 1
log "stopped; no process, mount, network device or cgroup of the node is left"
