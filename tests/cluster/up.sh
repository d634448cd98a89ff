#!/usr/bin/env bash
# Starts a real local control plane on 127.0.0.1: etcd, kube-apiserver (TLS, RBAC, token auth) and
# kube-controller-manager (garbage collector + namespace controllers), built from Go modules by
# build.sh. Idempotent: when the plane is already up it returns at once. Prints on stdout:
#
#   export KUBECONFIG=/root/.cache/operon/cluster/kubeconfig
#
# The kubeconfig has two contexts: `operon` (admin, the current one) and `operon-user` (an
# authenticated user with no permissions, for RBAC tests). Use with: env=$(tests/cluster/up.sh) || exit; eval "$env" (not eval "$(…)", which drops the exit code)
#
# Environment: OPERON_CLUSTER_DIR (state, logs; default ~/.cache/operon/cluster),
#              OPERON_CACHE (binaries; default ~/.cache/operon),
#              OPERON_PLANE_PROFILE=node: a plane for a kubelet (tests/cluster/node-up.sh): the Node
#                authorizer and NodeRestriction, the ServiceAccount admission plugin (token volumes),
#                a client certificate for the API server's calls to the kubelet, and the
#                controllers that Deployments, PDBs and ServiceAccounts need. Without it (the
#                default) the plane is exactly the plain one the other tests use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
DIR=${OPERON_CLUSTER_DIR:-$CACHE/cluster}
PROFILE=${OPERON_PLANE_PROFILE:-plain}
case "$PROFILE" in plain|node) ;; *) echo "[cluster/up] OPERON_PLANE_PROFILE=$PROFILE: expected plain or node" >&2; exit 2 ;; esac
KUBECONFIG_OUT="$DIR/kubeconfig"

# One up.sh at a time (helpers and tests call it concurrently): the next one waits, then finds the
# plane up. Without the lock, two starts tear each other's half-started plane down. The started
# processes do not inherit the lock (see start()).
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.up.lock"
if ! flock -w 900 9; then
  echo "[cluster/up] another tests/cluster/up.sh has held $DIR.up.lock for 15 minutes" >&2
  exit 1
fi
log() { echo "[cluster/up] $*" >&2; }
PROCS=$DIR
# shellcheck source=tests/cluster/lib.sh
. "$here/lib.sh"

# --- already up? -------------------------------------------------------------------------------
ready() { # [max-seconds]
  [ -f "$DIR/env" ] || return 1
  # shellcheck disable=SC1091
  . "$DIR/env"
  curl -fsS --max-time "${1:-2}" --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1
}
# A plane of the other profile is not "up" for this caller: it is replaced.
running_profile() { [ -f "$DIR/env" ] && sed -n 's/^PLANE_PROFILE=//p' "$DIR/env" | grep -qx "${1:-plain}" ; }
if alive etcd && alive kube-apiserver && alive kube-controller-manager && \
   { running_profile "$PROFILE" || { [ "$PROFILE" = plain ] && ! grep -q '^PLANE_PROFILE=' "$DIR/env" 2>/dev/null; }; }; then
  # Busy is not stale: an API server under load (a benchmark, parallel tests on 2 cores) can take
  # seconds to answer, and restarting it would break everyone using it. Up to ~1 minute.
  for attempt in 1 2 3 4 5; do
    if ready 10; then
      log "already up (API server https://127.0.0.1:$APISERVER_PORT)"
      echo "export KUBECONFIG=$KUBECONFIG_OUT"
      exit 0
    fi
    log "the API server is running but not ready (attempt $attempt of 5); waiting"
    sleep 2
  done
fi
if [ -d "$DIR" ]; then
  log "found a stale or partial plane in $DIR; stopping it first"
  "$here/down.sh" >&2
fi

BIN=$("$here/build.sh")
mkdir -p "$DIR"/{pki,logs,etcd}

# --- ports ---------------------------------------------------------------------------------------
ETCD_PORT=$(free_port); ETCD_PEER_PORT=$(free_port); APISERVER_PORT=$(free_port)

# --- credentials ---------------------------------------------------------------------------------
log "generating certificates and tokens"
pki="$DIR/pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" -subj "/CN=operon-local-ca" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$pki/apiserver.ext"
openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 30 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
ADMIN_TOKEN=$(openssl rand -hex 24); USER_TOKEN=$(openssl rand -hex 24); KCM_TOKEN=$(openssl rand -hex 24)
{
  echo "$ADMIN_TOKEN,operon-admin,operon-admin,\"system:masters\""
  echo "$KCM_TOKEN,system:kube-controller-manager,kcm,\"system:masters\""
  echo "$USER_TOKEN,operon-user,operon-user"
} > "$pki/tokens.csv"
if [ "$PROFILE" = node ]; then
  # The API server's client certificate for its calls to the kubelet (logs, exec, port-forward).
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/kubelet-client.key" \
    -out "$pki/kubelet-client.csr" -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > "$pki/client.ext"
  openssl x509 -req -in "$pki/kubelet-client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$pki/client.ext" -out "$pki/kubelet-client.crt" 2>/dev/null
fi
chmod 600 "$pki"/*.key "$pki/tokens.csv"

cat > "$DIR/env" <<ENV
ETCD_PORT=$ETCD_PORT
APISERVER_PORT=$APISERVER_PORT
ADMIN_TOKEN=$ADMIN_TOKEN
USER_TOKEN=$USER_TOKEN
BIN=$BIN
PLANE_PROFILE=$PROFILE
ENV

ca_b64=$(base64 -w0 < "$pki/ca.crt")
kubeconfig() { # name token cluster-server
  cat <<KC
apiVersion: v1
kind: Config
clusters:
- name: operon-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $ca_b64
users:
- name: operon-admin
  user:
    token: $ADMIN_TOKEN
- name: operon-user
  user:
    token: $USER_TOKEN
- name: kcm
  user:
    token: $KCM_TOKEN
contexts:
- name: operon
  context: {cluster: operon-local, user: operon-admin}
- name: operon-user
  context: {cluster: operon-local, user: operon-user}
- name: kcm
  context: {cluster: operon-local, user: kcm}
current-context: $1
KC
}
kubeconfig operon > "$KUBECONFIG_OUT"
kubeconfig kcm > "$DIR/kcm.kubeconfig"
chmod 600 "$KUBECONFIG_OUT" "$DIR/kcm.kubeconfig"

# --- start ---------------------------------------------------------------------------------------
start() { # name args...
  local name=$1; shift
  log "starting $name"
  # The exact command line, NUL-separated, for restart-apiserver.sh (tests restart components).
  printf '%s\0' "$BIN/$name" "$@" > "$DIR/$name.cmdline"
  # A session of its own: the plane outlives the process group that started it (a test job, a
  # shell killed with its children), as jaeger-up.sh's Jaeger does.
  setsid nohup "$BIN/$name" "$@" > "$DIR/logs/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$DIR/$name.pid"
}

start etcd --name operon-local --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "operon-local=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true --quota-backend-bytes=4294967296 \
  --listen-metrics-urls "http://127.0.0.1:$(free_port)"
wait_for etcd 30 curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

# The profiles' differences (see the header).
if [ "$PROFILE" = node ]; then
  apiserver_profile=(--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction
    --kubelet-client-certificate "$pki/kubelet-client.crt" --kubelet-client-key "$pki/kubelet-client.key"
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP)
  kcm_profile=(--controllers garbage-collector-controller,namespace-controller,deployment-controller,replicaset-controller,disruption-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,pod-garbage-collector-controller,node-lifecycle-controller
    --root-ca-file "$pki/ca.crt")
else
  apiserver_profile=(--authorization-mode RBAC --disable-admission-plugins ServiceAccount)
  kcm_profile=(--controllers garbage-collector-controller,namespace-controller)
fi

# --etcd-compaction-interval: short by default, so tests can provoke 410 Gone in reasonable time;
# OPERON_ETCD_COMPACTION_INTERVAL sets it (the benchmark's own plane uses the API server's default,
# 5m: a paginated list of 100,000 objects takes longer than 60 s, and every compaction during it
# invalidates its continue token).
start kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
  "${apiserver_profile[@]}" --anonymous-auth=false \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
  --service-account-issuer "https://127.0.0.1:$APISERVER_PORT" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --endpoint-reconciler-type none --enable-priority-and-fairness=false \
  --etcd-compaction-interval "${OPERON_ETCD_COMPACTION_INTERVAL:-60s}" \
  --audit-log-path "$DIR/logs/audit.log" --audit-policy-file "$here/audit-policy.yaml" \
  --audit-log-maxsize 200 --audit-log-maxbackup 1
wait_for kube-apiserver 120 curl -fsS --max-time 2 --cacert "$pki/ca.crt" \
  -H "Authorization: Bearer $ADMIN_TOKEN" "https://127.0.0.1:$APISERVER_PORT/readyz"

start kube-controller-manager --kubeconfig "$DIR/kcm.kubeconfig" \
  --authentication-kubeconfig "$DIR/kcm.kubeconfig" --authorization-kubeconfig "$DIR/kcm.kubeconfig" \
  --leader-elect=false --use-service-account-credentials=false \
  "${kcm_profile[@]}" --bind-address 127.0.0.1 --secure-port 0
# The controller manager has no port of its own here; it is ready once it has started its
# controllers (it logs that) and is still alive.
wait_for kube-controller-manager 60 grep -q 'Started controller' "$DIR/logs/kube-controller-manager.log"

log "up: API server https://127.0.0.1:$APISERVER_PORT, logs in $DIR/logs"
echo "export KUBECONFIG=$KUBECONFIG_OUT"
