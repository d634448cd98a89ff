#!/usr/bin/env bash
# The benchmark: Kopf, Operon + the Python SDK, Operon + the Rust example handler, a plain kube-rs
# controller (the floor) and a raw PATCH loop (the ceiling), side by side on the real local control
# plane, with the same three handlers (create, an update of spec.value, delete). Prints one
# markdown table (tests/bench/README.md says what each figure means), ending with the lines
# `throughput vs Kopf: …x`, `memory vs Kopf: …x`, `memory vs floor: …x` and `cpu vs Kopf: …x`.
# A figure, not a test: it never fails on a timing; it exits non-zero when a run cannot complete
# (then it says why), and with --check when an Operon contender breaks the README's promises: a
# handler called twice for one change, or more API writes than 2 per created object and 1 per
# update, resume and delete.
#
#   tests/bench/run.sh [--objects N]... [--contender NAME]... [--core-arg ARG]... [--sdk-arg ARG]...
#                      [--debug]         debug binaries: the smoke test (implies --check), not for
#                                        figures
#                      [--check]         fail on a broken promise (above), not only print it
#                      [--steady]        after the create phase, changes at steady rates (20, 100
#                                        and 300/s) instead of the update and resume phases:
#                                        latency tables per rate (default 1,000 objects)
#                      [--steady-rate R]... [--steady-seconds D]   other rates (changes/s), or
#                                        D seconds per rate (default 60; both imply --steady)
#                      [--scale N]...    the size mode: N objects, start-up, memory per object,
#                                        restart; prints its time budget as it goes
#                      [--scale-timeout S]  give a start-up or restart up after S s (default 3600)
#                      [--pin]           the plane on CPU 0, each contender on CPU 1 (taskset)
#                      [--shared-plane]  the shared plane (~/.cache/operon/cluster) instead of the
#                                        benchmark's own (~/.cache/operon/cluster-bench)
#                      [--keep-plane]    leave the benchmark's own plane running afterwards
#                      [--musl]          run the core as it ships in the images and the wheels:
#                                        built for Rust's musl target, static (needs the target and
#                                        musl-gcc: deploy/local/prereqs.sh installs both)
#
# Default sizes: 1,000 and 10,000 objects. Contenders: kopf, operon-py, operon-rust, operon-shards,
# floor, ceiling (--steady: all but the ceiling; --scale: kopf, operon-py, operon-rust, floor).
# Builds the release binaries, installs Kopf 1.45.2 (~/.cache/operon/venv-kopf) and the SDK's
# dependencies (~/.cache/operon/venv-bench) when missing, starts the plane with tests/cluster/up.sh
# (idempotent), installs the bench CRD (left installed) and runs tests/bench/bench.py, which makes
# a fresh namespace per contender and size. Everything it started is stopped/deleted on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

driver_args=() profile=release shared_plane=0 keep_plane=0 check=0 pin=0 musl=0
while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;  # --opt=value → --opt value
    --objects)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "--objects must be a positive integer" >&2; exit 2; }
      driver_args+=(--objects "$2"); shift 2 ;;
    --debug) profile=debug check=1; shift ;;  # the smoke test in tests/run.sh: no release build
    --steady) driver_args+=(--steady); shift ;;
    --steady-rate)
      [[ ${2:-} =~ ^[0-9]+(\.[0-9]+)?$ ]] && [[ ! $2 =~ ^0*(\.0*)?$ ]] || { echo "--steady-rate must be a positive number (changes per second)" >&2; exit 2; }
      driver_args+=(--steady-rate "$2"); shift 2 ;;
    --steady-seconds)
      [[ ${2:-} =~ ^[0-9]+(\.[0-9]+)?$ ]] && [[ ! $2 =~ ^0*(\.0*)?$ ]] || { echo "--steady-seconds must be a positive number" >&2; exit 2; }
      driver_args+=(--steady-seconds "$2"); shift 2 ;;
    --scale)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "--scale must be a positive integer" >&2; exit 2; }
      driver_args+=(--scale "$2"); shift 2 ;;
    --scale-timeout)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "--scale-timeout must be a positive number of seconds" >&2; exit 2; }
      driver_args+=(--scale-timeout "$2"); shift 2 ;;
    --pin) pin=1; driver_args+=(--pin); shift ;;
    --check) check=1; shift ;;
    --shared-plane) shared_plane=1; shift ;;
    --keep-plane) keep_plane=1; shift ;;
    --musl) musl=1; shift ;;
    --contender) driver_args+=(--contender "${2:?--contender needs a name}"); shift 2 ;;
    --core-arg) driver_args+=(--core-arg="${2:?--core-arg needs a value}"); shift 2 ;;
    --sdk-arg) driver_args+=(--sdk-arg="${2:?--sdk-arg needs a value}"); shift 2 ;;
    -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--objects N | --steady | --scale N]... [--pin] [--contender NAME]... (--help for all)" >&2; exit 2 ;;
  esac
done
[ "$check" = 0 ] || driver_args+=(--check)
triple="$(uname -m)-unknown-linux-musl"
if [ "$musl" = 1 ] && { ! rustup target list --installed 2>/dev/null | grep -qx "$triple" || ! command -v musl-gcc >/dev/null; }; then
  echo "--musl needs Rust's $triple target and musl-gcc (deploy/local/prereqs.sh installs both)" >&2; exit 2
fi
if [ "$pin" = 1 ] && [ "$shared_plane" = 1 ]; then
  echo "--pin moves the plane's processes to one CPU: not on the shared plane, which other tests use" >&2; exit 2
fi

CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
PLANE_DIR=$CACHE/cluster
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
  if [ -z "$work" ]; then
    if declare -F stop_plane >/dev/null; then stop_plane; fi
    exit "$rc"
  fi
  touch "$work/pids" "$work/namespaces" 2>/dev/null || true
  local pid exe cpus
  # --pin: the plane's processes get their CPUs back (the driver does it too, unless it died).
  if [ -f "$work/affinity" ]; then
    while read -r pid cpus; do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && taskset -a -p -c "$cpus" "$pid" >/dev/null 2>&1 || true
    done < "$work/affinity"
  fi
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
  if declare -F stop_plane >/dev/null; then stop_plane; fi
  [ "$rc" = 0 ] || log "exit code $rc; logs of the run: $work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- build and install ---------------------------------------------------------------------------
started=$(date +%s)
build_args=(--locked -p operon -p operon-example-handler -p operon-bench-floor)
[ "$profile" = debug ] || build_args+=(--release)
# On a fresh machine the control plane (Go) and the binaries (Rust) are both built here: at once,
# so that one's module downloads and links overlap the other's compiling (each is cached after).
tests/cluster/build.sh >/dev/null &
plane_build=$!
log "building the binaries (cargo build ${build_args[*]})"
cargo build "${build_args[@]}" >&2
wait "$plane_build" || { log "building the control plane failed (tests/cluster/build.sh; its log is above)"; exit 1; }
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
core_bin="$target/$profile/operon" built_for=""
if [ "$musl" = 1 ]; then
  musl_args=(--locked -p operon --target "$triple")
  [ "$profile" = debug ] || musl_args+=(--release)
  log "building the core as it ships (cargo build ${musl_args[*]})"
  cargo build "${musl_args[@]}" >&2
  core_bin="$target/$triple/$profile/operon" built_for=", the core built for $triple"
fi

KOPF_VERSION=1.45.2
kopf_venv=$CACHE/venv-kopf   # shared with sdk-python-compat/tests/test_migration.py
if [ "$("$kopf_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kopf"))' 2>/dev/null)" != "$KOPF_VERSION" ]; then
  log "installing Kopf $KOPF_VERSION into $kopf_venv"
  [ -x "$kopf_venv/bin/python" ] || python3 -m venv "$kopf_venv"
  "$kopf_venv/bin/pip" install -q --disable-pip-version-check "kopf==$KOPF_VERSION" >&2
fi
# The SDK runs from this checkout (PYTHONPATH=sdk-python-compat/src); the venv holds its
# dependencies only, so every checkout on the machine can share it.
# The dependencies are read from the SDK's pyproject.toml, so a new one reaches this venv too; pip
# returns at once when they are all satisfied.
sdk_venv=$CACHE/venv-bench
mapfile -t sdk_deps < <(python3 -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$root/sdk-python-compat/pyproject.toml")
[ "${#sdk_deps[@]}" -gt 0 ] || { log "no dependencies read from sdk-python-compat/pyproject.toml"; exit 1; }
[ -x "$sdk_venv/bin/python" ] || python3 -m venv "$sdk_venv"
log "the SDK's dependencies in $sdk_venv: ${sdk_deps[*]}"
"$sdk_venv/bin/pip" install -q --disable-pip-version-check "${sdk_deps[@]}" >&2

# --- the plane and the CRD -----------------------------------------------------------------------
# By default the benchmark runs on a plane of its own (the same tests/cluster/up.sh, another state
# directory, locked for the run, stopped at the end if this run started it): 10,000 objects keep
# an API server on 2 cores so busy that it answers health checks slowly, and other work on a shared
# plane would skew the figures. --shared-plane uses the shared one (the smoke test does).
if [ "$shared_plane" = 0 ]; then
  PLANE_DIR=${BENCH_CLUSTER_DIR:-$CACHE/cluster-bench}
  mkdir -p "$(dirname "$PLANE_DIR")"
  exec 8>"$PLANE_DIR.bench.lock"
  if ! flock -x -n 8; then
    log "waiting for another benchmark on $PLANE_DIR to finish"
    flock -x 8
  fi
  if [ -f "$PLANE_DIR/kube-apiserver.pid" ] && kill -0 "$(cat "$PLANE_DIR/kube-apiserver.pid")" 2>/dev/null; then
    keep_plane=1  # it was up before this run: leave it as found
  fi
  stop_plane() {
    if [ "$keep_plane" = 0 ]; then OPERON_CLUSTER_DIR="$PLANE_DIR" tests/cluster/down.sh >&2 || true; fi
  }
fi
log "starting the local control plane in $PLANE_DIR (tests/cluster/up.sh)"
# 8>&-: the plane's processes must not inherit the run's lock, or a plane kept running
# (--keep-plane) would hold it and the next run would wait for it forever.
# Its own plane compacts etcd every 5 minutes, as an API server does by default (the shared plane
# compacts every 60 s for the tests that provoke 410s; a 100,000-object paginated list outlasts
# that, and each compaction during it sends the list back to its first page).
[ "$shared_plane" = 1 ] || export OPERON_ETCD_COMPACTION_INTERVAL=${OPERON_ETCD_COMPACTION_INTERVAL:-5m}
plane_env=$(OPERON_CLUSTER_DIR="$PLANE_DIR" tests/cluster/up.sh 8>&-) || exit $?; eval "$plane_env"
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
python3 tests/bench/bench.py --workdir "$work" \
  --core-bin "$core_bin" --handler-bin "$target/$profile/operon-example-handler" \
  --floor-bin "$target/$profile/operon-bench-floor" \
  --kopf-python "$kopf_venv/bin/python" --sdk-python "$sdk_venv/bin/python" --sdk-src "$root/sdk-python-compat/src" \
  --kubectl "$KUBECTL" --kubeconfig "$KUBECONFIG" \
  --audit-dir "$PLANE_DIR/logs" --plane-dir "$PLANE_DIR" --commit "$commit$built_for" \
  "${driver_args[@]}" &
driver=$!
wait "$driver"
log "done in $(( $(date +%s) - started )) s (build and installation included)"
