#!/usr/bin/env bash
# Stops what deploy/local/up.sh started: the core, the example handlers and (unless --keep-plane)
# the local control plane.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
STATE="${OPERON_CACHE:-$HOME/.cache/operon}/local"
for name in core handler python; do
  pidfile="$STATE/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
done
if [ "${1:-}" != "--keep-plane" ]; then
  "$root/tests/cluster/down.sh"
fi
