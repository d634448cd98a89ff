#!/usr/bin/env bash
# Starts a real Jaeger v2 (built by build-jaeger.sh) on 127.0.0.1 only — OTLP/gRPC on 4317, the
# query API and UI on 16686 — with in-memory storage (jaeger.yaml). Idempotent: when it already
# answers, it returns at once. Prints on stdout:
#
#   export OPERON_JAEGER_OTLP=http://127.0.0.1:4317 OPERON_JAEGER_QUERY=http://127.0.0.1:16686
#
# Use with: env=$(tests/cluster/jaeger-up.sh) || exit; eval "$env" (not eval "$(…)", which drops the exit code). Stop it with tests/cluster/jaeger-down.sh.
# Environment: OPERON_JAEGER_DIR (pid, log; default ~/.cache/operon/jaeger), OPERON_CACHE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
DIR=${OPERON_JAEGER_DIR:-$CACHE/jaeger}
QUERY=http://127.0.0.1:16686
log() { echo "[cluster/jaeger] $*" >&2; }
answers() { curl -fsS --max-time 2 "$QUERY/api/services" >/dev/null 2>&1; }
say() { echo "export OPERON_JAEGER_OTLP=http://127.0.0.1:4317 OPERON_JAEGER_QUERY=$QUERY"; }

if answers; then log "already up ($QUERY)"; say; exit 0; fi
BIN=$("$here/build-jaeger.sh")
mkdir -p "$DIR"
if [ -f "$DIR/jaeger.pid" ] && kill -0 "$(cat "$DIR/jaeger.pid")" 2>/dev/null; then
  log "a Jaeger process is running but does not answer yet; waiting for it"
else
  log "starting $BIN (log: $DIR/jaeger.log)"
  setsid "$BIN" --config="$here/jaeger.yaml" >"$DIR/jaeger.log" 2>&1 < /dev/null &
  echo $! > "$DIR/jaeger.pid"
fi
for _ in $(seq 1 300); do
  if answers; then log "up ($QUERY, OTLP 127.0.0.1:4317)"; say; exit 0; fi
  if ! kill -0 "$(cat "$DIR/jaeger.pid")" 2>/dev/null; then
    log "Jaeger exited; its log:"; tail -n 30 "$DIR/jaeger.log" >&2; exit 1
  fi
  sleep 0.2
done
log "Jaeger does not answer at $QUERY within 60 s; its log:"; tail -n 30 "$DIR/jaeger.log" >&2
exit 1
