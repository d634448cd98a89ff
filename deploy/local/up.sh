#!/usr/bin/env bash
# The one-command local environment: the real local control plane, the Operon core, two example
# handler services (the Rust example handler and the example Python, Kopf-style operator
# deploy/example/operator.py served by the SDK's `kopf serve`) and the dashboard, with example
# objects applied. Idempotent: a second run
# restarts the core and the handler. Stop everything with deploy/local/down.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
STATE="$CACHE/local"
HTTP=${OPERON_HTTP:-127.0.0.1:8080}
log() { echo "[local/up] $*" >&2; }
mkdir -p "$STATE"

"$root/deploy/local/prereqs.sh"
log "starting the local control plane (first run builds it: ~12 minutes)"
plane_env=$("$root/tests/cluster/up.sh") || exit $?; eval "$plane_env"
kubectl="$(awk -F= '$1=="BIN"{print $2}' "${OPERON_CLUSTER_DIR:-$CACHE/cluster}/env")/kubectl"

# --- tracing: a real Jaeger (tests/cluster/jaeger-up.sh; first run builds it: ~10 minutes) ------
# The core and the handler read these (OPERON_NO_JAEGER=1 skips it); the dashboard shows each
# attempt's trace from the query API (OPERON_JAEGER_QUERY; this Jaeger has no UI to link to).
if [ "${OPERON_NO_JAEGER:-0}" != 1 ]; then
  log "starting Jaeger (traces: http://127.0.0.1:16686)"
  plane_env=$("$root/tests/cluster/jaeger-up.sh") || exit $?; eval "$plane_env"
  export OTEL_EXPORTER_OTLP_ENDPOINT="$OPERON_JAEGER_OTLP" OPERON_JAEGER_QUERY
fi
# ---------------------------------------------------------------------------------------------------

log "building the core and the example handler (cargo build)"
(cd "$root" && cargo build -q -p operon -p operon-example-handler)
target=$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

"$root/deploy/local/down.sh" --keep-plane >/dev/null 2>&1 || true
log "applying the example CRD"
"$kubectl" apply -f "$root/deploy/local/crd.yaml" >/dev/null
"$kubectl" wait --for condition=established --timeout=60s crd/kopfexamples.kopf.dev >/dev/null

log "starting the example handler service"
"$target/debug/operon-example-handler" --listen 127.0.0.1:0 --ledger "$STATE/ledger.jsonl" \
  --resource kopf.dev/v1/kopfexamples --handler create:create_fn --handler update:update_fn \
  --handler delete:delete_fn > "$STATE/handler.out" 2> "$STATE/handler.log" &
echo $! > "$STATE/handler.pid"
for _ in $(seq 1 50); do grep -q '^listening on' "$STATE/handler.out" 2>/dev/null && break; sleep 0.1; done
handler_addr=$(sed -n 's/^listening on //p' "$STATE/handler.out")
[ -n "$handler_addr" ] || { log "the handler did not start:"; tail -n 20 "$STATE/handler.log" >&2; exit 1; }

VENV="$CACHE/venv-local"
if [ ! -x "$VENV/bin/kopf" ] || [ "$root/sdk-python-compat/pyproject.toml" -nt "$VENV/.installed" ]; then
  log "installing the Python SDK (kopf) into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$root/sdk-python-compat[kubernetes]"
  touch "$VENV/.installed"
fi
py_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
log "starting the example Python operator (kopf serve deploy/example/operator.py on 127.0.0.1:$py_port)"
KUBECONFIG="$KUBECONFIG" "$VENV/bin/kopf" serve "$root/deploy/example/operator.py" --listen "127.0.0.1:$py_port" \
  > "$STATE/python.log" 2>&1 &
echo $! > "$STATE/python.pid"

log "starting the core (operon run -A, HTTP on $HTTP)"
KUBECONFIG="$KUBECONFIG" "$target/debug/operon" run --handler "http://$handler_addr" \
  --handler "http://127.0.0.1:$py_port" -A --http "$HTTP" \
  --default-backoff 5 > "$STATE/core.log" 2>&1 &
echo $! > "$STATE/core.pid"
for _ in $(seq 1 150); do curl -fsS "http://$HTTP/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://$HTTP/readyz" >/dev/null || { log "the core did not become ready:"; tail -n 30 "$STATE/core.log" >&2; exit 1; }

log "applying example objects"
"$kubectl" apply -n default -f "$root/deploy/local/objects.yaml" >/dev/null

cat <<MSG

Operon is up.
  dashboard:       http://$HTTP/
  objects (JSON):  http://$HTTP/api/v1/objects
  metrics:         http://$HTTP/metrics
  kubectl:         export KUBECONFIG=$KUBECONFIG; $kubectl get kopfexamples -A
  logs:            $STATE/core.log, $STATE/handler.log, $STATE/python.log
Stop everything:   $root/deploy/local/down.sh
MSG
