#!/usr/bin/env bash
# Operon as its users install it, tried for real on the local plane (tests/cluster/up.sh):
#
# 1. the wheel: `pip wheel --no-deps ./sdk-python-compat` gives a platform wheel that carries a
#    static core; its tag, its size and the binary (readelf, ldd) are checked, not assumed;
# 2. the source distribution carries the core's sources, and building it without a Rust toolchain
#    stops and says what is missing (a build with one was tried by hand: see the issue's note);
# 3. in a fresh venv, with a PATH that has no cargo, rustc or operon, the installed wheel's
#    `kopf run` handles an example object (and `kopf --version` names the bundled core);
# 4. the images: deploy/docker/build.sh builds localhost/operon and localhost/operon-kopf;
# 5. both images run with podman against the plane as the Helm chart runs them — user 65532,
#    read-only root filesystem, all capabilities dropped, no new privileges, /tmp the only
#    writable place of the handler — with mutual TLS between them: /healthz and /readyz answer,
#    the handler's gRPC health service (--health-listen, what the chart's grpc probes ask) is
#    SERVING, objects are handled, and SIGTERM stops both with exit code 0.
#
#   tests/packaging/run.sh               all of it
#   tests/packaging/run.sh --no-images   1-3 only
#
# Objects live in namespaces of their own, removed at the end. Listens on 127.0.0.1 only.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
images=1
for arg in "$@"; do
  case "$arg" in
    --no-images) images=0 ;;
    *) echo "usage: $0 [--no-images]" >&2; exit 2 ;;
  esac
done
log() { echo "[packaging] $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
t_all=$(date +%s)
plane_env=$(tests/cluster/up.sh) || exit $?
eval "$plane_env"
# shellcheck disable=SC1091
. "$(dirname "$KUBECONFIG")/env"  # BIN: the plane's binaries, kubectl among them
kubectl() { "$BIN/kubectl" "$@"; }
kubectl apply -f deploy/local/crd.yaml >/dev/null
kubectl wait --for condition=established --timeout=60s crd/kopfexamples.kopf.dev >/dev/null

work=$(mktemp -d)
namespaces=()
containers=()
cleanup() {
  local rc=$?
  set +e
  for c in "${containers[@]}"; do
    if [ "$rc" != 0 ]; then log "--- logs of $c:"; pm logs --tail 60 "$c" >&2; fi
    pm rm -f -t 0 "$c" >/dev/null 2>&1
  done
  for ns in "${namespaces[@]}"; do kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1; done
  if [ "$rc" != 0 ] && [ -f "$work/kopf-run.log" ]; then log "--- kopf run's log:"; tail -60 "$work/kopf-run.log" >&2; fi
  [ -n "${kopf_pid:-}" ] && kill "$kopf_pid" 2>/dev/null
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
# shellcheck source=deploy/docker/podman.sh
. deploy/docker/podman.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Waits until COMMAND… succeeds (every second, up to SECONDS).
wait_for() { # SECONDS WHAT COMMAND…
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  fail "$what: not within ${seconds}s"
}
new_namespace() {
  local ns="operon-packaging-$1-$$"
  kubectl create namespace "$ns" >/dev/null
  namespaces+=("$ns")
  echo "$ns"
}
# The gRPC health status (grpc.health.v1, the overall health) at ADDRESS, asked with the wheel's
# own venv (step 3): grpcio-health-checking comes with the wheel as its dependency.
grpc_health() { # ADDRESS
  "$work/venv/bin/python" - "$1" <<'EOF'
import sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
print(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
EOF
}
serving() { [ "$(grpc_health "$1" 2>/dev/null)" = SERVING ]; }
example() { # NS NAME FIELD: an example object
  kubectl apply -n "$1" -f - >/dev/null <<EOF
apiVersion: kopf.dev/v1
kind: KopfExample
metadata: {name: $2}
spec: {field: $3, items: [a, b]}
EOF
}
greeted() { # NS NAME: the example operator's create handler has run and its result is stored
  [ "$(kubectl get -n "$1" kopfexample "$2" -o jsonpath='{.status.greet.message}')" = "hello from Python, $2" ]
}
field_changed() { # NS NAME TO: the update handler (id field_changed/spec.field) has run
  kubectl get -n "$1" kopfexample "$2" -o json \
    | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["status"]["field_changed/spec.field"]["to"] != sys.argv[1])' "$3"
}

# --- 1. the wheel --------------------------------------------------------------------------------
t=$(date +%s)
# The static core first, with cargo's progress in sight (cold: ~10 minutes on 2 cores); the
# wheel's build then finds it built.
log "building the static core: cargo build --release --locked -p operon --target $(uname -m)-unknown-linux-musl"
cargo build --release --locked -p operon --bin operon --target "$(uname -m)-unknown-linux-musl"
log "the static core built in $(( $(date +%s) - t ))s"
t=$(date +%s)
log "building the wheel: pip wheel --no-deps ./sdk-python-compat -w $work/dist"
python3 -m pip wheel -q --no-deps --disable-pip-version-check ./sdk-python-compat -w "$work/dist"
wheel=$(ls "$work"/dist/*.whl)
name=$(basename "$wheel")
arch=$(uname -m)
want="py3-none-manylinux_2_17_$arch.manylinux2014_$arch.musllinux_1_1_$arch"
log "wheel: $name ($(du -k "$wheel" | cut -f1) KiB), built in $(( $(date +%s) - t ))s"
[[ "$name" == operon_kopf-*-"$want.whl" ]] || fail "the wheel's tag is not $want: $name"
mkdir "$work/unpacked"
python3 - "$wheel" "$work/unpacked" <<'EOF' || fail "the wheel does not carry an executable core"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    info = wheel.getinfo('kopf/_bin/operon')
    assert (info.external_attr >> 16) & 0o111, f"kopf/_bin/operon is not executable: {oct(info.external_attr >> 16)}"
    wheel.extractall(sys.argv[2])
    tags = wheel.read(next(n for n in wheel.namelist() if n.endswith('.dist-info/WHEEL'))).decode()
    assert 'Root-Is-Purelib: false' in tags, tags
EOF
core="$work/unpacked/kopf/_bin/operon"
log "core in the wheel: $(du -k "$core" | cut -f1) KiB; $(file -b "$core" 2>/dev/null | cut -d, -f1-2 || true)"
if readelf -lW "$core" | grep -q 'Requesting program interpreter'; then fail "the core names a program interpreter"; fi
if readelf -dW "$core" | grep -q '(NEEDED)'; then fail "the core needs shared libraries: $(readelf -dW "$core" | grep NEEDED)"; fi
ldd_says=$(ldd "$core" 2>&1 || true)
case "$ldd_says" in *"not a dynamic executable"*|*"statically linked"*) ;; *) fail "ldd: $ldd_says" ;; esac
log "ldd: ${ldd_says//$'\n'/ }"

# --- 2. the source distribution, and a build of it without Rust ---------------------------------
t=$(date +%s)
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q --disable-pip-version-check build
"$work/tools/bin/python" -m build -q --sdist ./sdk-python-compat -o "$work/sdist" >/dev/null
sdist=$(ls "$work"/sdist/operon_kopf-*.tar.gz)
tar -xzf "$sdist" -C "$work/sdist"
members=$(grep '^members' "$work"/sdist/operon_kopf-*/core-src/Cargo.toml)
[ "$members" = 'members = ["proto", "operator/core", "operator", "dashboard"]' ] \
  || fail "the sdist's workspace is not the core's: $members"
log "sdist: $(basename "$sdist") ($(du -k "$sdist" | cut -f1) KiB, the core's sources in core-src/), made in $(( $(date +%s) - t ))s"
scrubbed="/usr/local/bin:/usr/bin:/bin"
for tool in cargo rustc operon; do
  if PATH=$scrubbed command -v "$tool" >/dev/null; then fail "the scrubbed PATH ($scrubbed) still has $tool"; fi
done
python=$(python3 -c 'import sys; print(sys.executable)')
if out=$(PATH=$scrubbed "$python" -m pip wheel -q --no-deps --disable-pip-version-check "$sdist" -w "$work/nodist" 2>&1); then
  fail "a wheel was built from the sdist without cargo"
fi
grep -q "needs 'cargo'; it is not on \$PATH" <<<"$out" || fail "no clear error without cargo: $out"
log "the sdist without cargo: $(grep -o "error: Building operon-kopf.*PATH\." <<<"$out" | head -1)"

# --- 3. the installed wheel runs an operator -----------------------------------------------------
t=$(date +%s)
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "$wheel"
log "installed into a fresh venv in $(( $(date +%s) - t ))s"
run_env=(env -i HOME="$HOME" PATH="$work/venv/bin:$scrubbed" KUBECONFIG="$KUBECONFIG")
version_out=$("${run_env[@]}" kopf --version)
log "kopf --version: ${version_out//$'\n'/ | }"
grep -q "^core: operon .* (handler contract revision [0-9]*) ($work/venv/lib/python.*/site-packages/kopf/_bin/operon)$" <<<"$version_out" \
  || fail "kopf --version does not name the bundled core"
ns=$(new_namespace wheel)
health_address="127.0.0.1:$(free_port)"
"${run_env[@]}" kopf run -n "$ns" --log-format plain --health-listen "$health_address" \
  deploy/example/operator.py >"$work/kopf-run.log" 2>&1 &
kopf_pid=$!
example "$ns" from-wheel one
wait_for 60 "the wheel's kopf run handles an object" greeted "$ns" from-wheel
serving "$health_address" || fail "the wheel's kopf run: the gRPC health service at $health_address says $(grpc_health "$health_address" 2>&1)"
kubectl delete -n "$ns" kopfexample from-wheel --wait=true --timeout=60s >/dev/null
kill -TERM "$kopf_pid"
rc=0; wait "$kopf_pid" || rc=$?
kopf_pid=
[ "$rc" = 0 ] || fail "kopf run exited with $rc after SIGTERM"
log "the wheel's kopf run handled an object and stopped cleanly (step 3)"

if [ "$images" = 0 ]; then
  log "all passed (without the images) in $(( $(date +%s) - t_all ))s"
  exit 0
fi

# --- 4. the images -------------------------------------------------------------------------------
deploy/docker/build.sh --wheel "$wheel"
version=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version/{print $2; exit}' Cargo.toml)

# --- 5. the images run as the chart runs them ----------------------------------------------------
# The chart's Secret (ca.crt, tls.crt, tls.key; mode 0440, group 65532 through fsGroup) and a
# kubeconfig with everything inline (the pod's ServiceAccount, here).
secrets="$work/secrets"
mkdir -p "$secrets/tls" "$secrets/kube"
(
  cd "$secrets/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=operon-ca \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=operon-handler \
    -keyout tls.key -out tls.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >ext
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out tls.crt 2>/dev/null
  rm -f ca.key ca.srl tls.csr ext
)
kubectl config view --raw --minify --flatten >"$secrets/kube/config"
chown -R root:65532 "$secrets"
chmod 0750 "$secrets/tls" "$secrets/kube"
chmod 0440 "$secrets"/tls/* "$secrets/kube/config"

ns=$(new_namespace images)
grpc=$(free_port); grpc_health_port=$(free_port); health=$(free_port); http=$(free_port)
# The chart's securityContext (values.yaml: podSecurityContext + securityContext).
hardened=(--network host --user 65532:65532 --group-add 65532 --read-only --cap-drop ALL
          --security-opt no-new-privileges "${pm_limits[@]}"
          -v "$secrets/tls:/etc/operon/tls:ro" -v "$secrets/kube:/etc/operon/kube:ro"
          -e KUBECONFIG=/etc/operon/kube/config)
handler="operon-packaging-kopf-$$"
core_c="operon-packaging-core-$$"
# The chart's handler container: args [serve, /app/operator.py] + --listen, --health-listen,
# --liveness, TLS; /tmp is an emptyDir, PYTHONDONTWRITEBYTECODE=1.
containers+=("$handler")
pm run -d --name "$handler" "${hardened[@]}" --tmpfs /tmp -e PYTHONDONTWRITEBYTECODE=1 \
  "localhost/operon-kopf:$version" serve /app/operator.py --listen="127.0.0.1:$grpc" \
  --health-listen="127.0.0.1:$grpc_health_port" --liveness="http://127.0.0.1:$health/healthz" --tls-cert=/etc/operon/tls/tls.crt \
  --tls-key=/etc/operon/tls/tls.key --tls-client-ca=/etc/operon/tls/ca.crt >/dev/null
# The chart's core container (separate topology): run, the namespace, --http, JSON logs, the
# handler over https, the TLS files through OPERON_TLS_*; no writable place at all.
containers+=("$core_c")
pm run -d --name "$core_c" "${hardened[@]}" \
  -e OPERON_TLS_CA=/etc/operon/tls/ca.crt -e OPERON_TLS_CERT=/etc/operon/tls/tls.crt \
  -e OPERON_TLS_KEY=/etc/operon/tls/tls.key \
  "localhost/operon:$version" run --namespace="$ns" --http="127.0.0.1:$http" --log-format=json \
  --handler="https://127.0.0.1:$grpc" >/dev/null
wait_for 60 "the handler image's /healthz" curl -fsS "http://127.0.0.1:$health/healthz"
wait_for 60 "the core image's /healthz" curl -fsS "http://127.0.0.1:$http/healthz"
wait_for 60 "the core image's /readyz (Describe over mTLS, watches listed)" curl -fsS "http://127.0.0.1:$http/readyz"
wait_for 60 "the handler image's gRPC health service (the chart's grpc probes) SERVING" \
  serving "127.0.0.1:$grpc_health_port"
log "both images answer /healthz, the handler's gRPC health is SERVING, and the core is ready"
example "$ns" in-images one
wait_for 60 "the images handle a new object" greeted "$ns" in-images
kubectl patch -n "$ns" kopfexample in-images --type merge -p '{"spec": {"field": "two"}}' >/dev/null
wait_for 60 "the images handle a change" field_changed "$ns" in-images two
kubectl delete -n "$ns" kopfexample in-images --wait=true --timeout=60s >/dev/null
# (The example's delete handler is optional: it holds no finalizer, so the object goes at once.)
wait_for 30 "the core image sees the deletion" \
  sh -c "podman ${_pm_flags[*]} logs '$core_c' 2>&1 | grep -q 'Deleted, really deleted, and we are notified.'"
log "the images handled a creation, a change and a deletion over mTLS"

for c in "$core_c" "$handler"; do
  t=$(date +%s)
  pm stop -t 30 "$c" >/dev/null
  code=$(pm inspect --format '{{.State.ExitCode}}' "$c")
  [ "$code" = 0 ] || fail "$c exited with $code after SIGTERM (in $(( $(date +%s) - t ))s)"
  log "$c stopped on SIGTERM with exit code 0 in $(( $(date +%s) - t ))s"
done
log "all passed in $(( $(date +%s) - t_all ))s"
