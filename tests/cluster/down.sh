#!/usr/bin/env bash
# Stops the local control plane started by up.sh and removes its state (data, certificates, logs).
set -euo pipefail
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
DIR=${OPERON_CLUSTER_DIR:-$CACHE/cluster}
log() { echo "[cluster/down] $*" >&2; }
PROCS=$DIR
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"
[ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; exit 0; }
# A node on this plane (node-up.sh) goes first: its mounts live under $DIR/node.
if [ -d "$DIR/node" ]; then "$(dirname "$0")/node-down.sh"; fi
# Reverse order: the controller manager and the API server go before etcd.
for name in kube-controller-manager kube-apiserver etcd; do stop_process "$name"; done
rm -rf "$DIR"
log "stopped"
