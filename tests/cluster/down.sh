#!/usr/bin/env bash
# Stops the local control plane started by up.sh and removes its state (data, certificates, logs).
set -euo pipefail
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
DIR=${OPERON_CLUSTER_DIR:-$CACHE/cluster}
log() { echo "[cluster/down] $*" >&2; }
[ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; exit 0; }
# A node on this plane (node-up.sh) goes first: its mounts live under $DIR/node.
if [ -d "$DIR/node" ]; then "$(dirname "$0")/node-down.sh"; fi
# Reverse order: the controller manager and the API server go before etcd.
for name in kube-controller-manager kube-apiserver etcd; do
  pidfile="$DIR/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 10s; killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
done
rm -rf "$DIR"
log "stopped"
