#!/usr/bin/env bash
# Stops the Jaeger of jaeger-up.sh (its traces are in memory: they go with it).
set -euo pipefail
DIR=${OPERON_JAEGER_DIR:-${OPERON_CACHE:-$HOME/.cache/operon}/jaeger}
if [ -f "$DIR/jaeger.pid" ]; then
  pid=$(cat "$DIR/jaeger.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$DIR/jaeger.pid"
fi
