#!/usr/bin/env bash
# The benchmark: N objects × H create handlers, handled by the Operon core and the Rust example
# handler service, on the real local control plane. Prints one markdown table (see README.md next
# to this script for what each figure means). A figure, not a test: it never fails on a timing; it
# exits non-zero only when the run cannot complete.
#
#   tests/bench/run.sh [--objects N] [--handlers H] [--mode live|backlog]... [--core-arg ARG]...
#
# Builds the release binaries (cargo waits for the shared target dir's lock), starts the plane with
# tests/cluster/up.sh (idempotent), installs the bench CRD (left installed), and runs
# tests/bench/bench.py, which creates a fresh namespace per mode and starts the processes. Everything it
# started — processes and namespace — is stopped/deleted on exit, also on failure or Ctrl-C.
# Logs of the run stay in a temporary directory (printed at the end).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

objects=1000 handlers=3 driver_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;  # --opt=value → --opt value
    --objects) objects=${2:?--objects needs a number}; shift 2 ;;
    --handlers) handlers=${2:?--handlers needs a number}; shift 2 ;;
    --core-arg) driver_args+=(--core-arg="${2:?--core-arg needs a value}"); shift 2 ;;
    --mode) driver_args+=(--mode "${2:?--mode needs live or backlog}"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--objects N] [--handlers H] [--mode live|backlog]... [--core-arg ARG]..." >&2; exit 2 ;;
  esac
done
[[ $objects =~ ^[1-9][0-9]*$ ]] || { echo "--objects must be a positive integer" >&2; exit 2; }
[[ $handlers =~ ^[1-9][0-9]*$ ]] || { echo "--handlers must be a positive integer" >&2; exit 2; }

CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
PLANE_DIR=${OPERON_CLUSTER_DIR:-$CACHE/cluster}
work="" driver=""

# --- cleanup, whatever happens -------------------------------------------------------------------
# The driver stops its processes and deletes its namespace itself; this trap is the safety net for
# when the driver itself dies: it ends only the pids the driver recorded (if they still run the
# binary recorded with them) and deletes only the namespaces it recorded.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    wait "$driver" 2>/dev/null || true
  fi
  if [ -z "$work" ]; then exit "$rc"; fi
  touch "$work/pids" "$work/namespaces" 2>/dev/null || true
  local pid exe
  ours() { # pid exe: the process still runs the binary we started it with
    [ "$(readlink "/proc/$1/exe" 2>/dev/null | sed 's/ (deleted)$//')" = "$(readlink -f "$2")" ]
  }
  while read -r pid exe; do
    [ -n "$pid" ] || continue
    if ours "$pid" "$exe"; then
      log "stopping leftover process $pid ($exe)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do ours "$pid" "$exe" || break; sleep 0.1; done
      if ours "$pid" "$exe"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
  done < <(tac "$work/pids")  # the core before the handler service it calls
  local ns
  while read -r ns; do
    [ -n "$ns" ] || continue
    if [ -n "${KUBECTL:-}" ] && "$KUBECTL" get namespace "$ns" -o name >/dev/null 2>&1; then
      phase=$("$KUBECTL" get namespace "$ns" -o jsonpath='{.status.phase}' 2>/dev/null || true)
      if [ "$phase" != "Terminating" ]; then
        log "deleting leftover namespace $ns"
        "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
      fi
    fi
  done < "$work/namespaces"
  [ "$rc" = 0 ] || log "exit code $rc; logs of the run: $work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- build ---------------------------------------------------------------------------------------
log "building release binaries (cargo build --release -p operon -p operon-example-handler)"
cargo build --release -p operon -p operon-example-handler >&2
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
core_bin="$target/release/operon"
handler_bin="$target/release/operon-example-handler"

# --- the plane and the CRD -----------------------------------------------------------------------
log "starting the local control plane (tests/cluster/up.sh)"
eval "$(tests/cluster/up.sh)"
# shellcheck disable=SC1091
. "$PLANE_DIR/env"   # BIN (kube binaries), APISERVER_PORT
KUBECTL="$BIN/kubectl"
"$KUBECTL" apply -f tests/bench/crd.yaml >&2
"$KUBECTL" wait --for condition=Established --timeout 60s crd/benchobjects.bench.operon.dev >&2

# --- the run -------------------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit (+ uncommitted changes)"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/operon-bench.XXXXXX")
: > "$work/pids"; : > "$work/namespaces"
python3 tests/bench/bench.py --objects "$objects" --handlers "$handlers" \
  --workdir "$work" --core-bin "$core_bin" --handler-bin "$handler_bin" \
  --kubectl "$KUBECTL" --kubeconfig "$KUBECONFIG" \
  --audit-dir "$PLANE_DIR/logs" --plane-dir "$PLANE_DIR" --commit "$commit" \
  "${driver_args[@]}" &
driver=$!
wait "$driver"
