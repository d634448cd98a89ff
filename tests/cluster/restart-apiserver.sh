#!/usr/bin/env bash
# Kills (SIGKILL) and/or starts only the kube-apiserver of the local plane (tests/cluster/up.sh),
# with the exact command line up.sh started it with, for tests of watch resilience. etcd and
# kube-controller-manager keep running; clients see connection errors while it is down.
#
#   restart-apiserver.sh [restart|stop|start]     (default: restart)
#
# `start` and `restart` return once /readyz answers. The command line comes from
# $DIR/kube-apiserver.cmdline (NUL-separated, written by up.sh); for a plane started by an older
# up.sh it is taken from /proc/<pid>/cmdline of the running API server and saved there.
#
# Environment: OPERON_CLUSTER_DIR (default ~/.cache/operon/cluster), OPERON_CACHE.
set -euo pipefail
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
DIR=${OPERON_CLUSTER_DIR:-$CACHE/cluster}
action=${1:-restart}
log() { echo "[cluster/restart-apiserver] $*" >&2; }
pidfile="$DIR/kube-apiserver.pid"
cmdline="$DIR/kube-apiserver.cmdline"
[ -f "$DIR/env" ] || { log "no plane in $DIR (run tests/cluster/up.sh)"; exit 1; }
# shellcheck disable=SC1091
. "$DIR/env"

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

save_cmdline() {
  [ -s "$cmdline" ] && return 0
  local pid
  if pid=$(running_pid); then
    cp "/proc/$pid/cmdline" "$cmdline"
    log "saved the command line of pid $pid to $cmdline"
  else
    log "no saved command line ($cmdline) and no running API server to take it from"
    exit 1
  fi
}

ready() {
  curl -fsS --max-time 2 --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

stop() {
  save_cmdline
  local pid
  if ! pid=$(running_pid); then log "not running"; return 0; fi
  # SIGKILL: an abrupt end (connections reset, no goodbye to watchers), and quick — a SIGTERMed
  # API server drains requests for up to a minute.
  log "killing kube-apiserver (pid $pid)"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "pid $pid is still there after 10s"; exit 1; fi
  # Until the port is free again, a new API server cannot bind it.
  for _ in $(seq 1 100); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$APISERVER_PORT") 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "stopped"
}

start() {
  save_cmdline
  if running_pid >/dev/null; then log "already running"; else
    local -a args
    mapfile -d '' args < "$cmdline"
    log "starting kube-apiserver"
    echo "==== [restart-apiserver] $(date -u +%FT%TZ) start" >> "$DIR/logs/kube-apiserver.log"
    # A session of its own, as up.sh starts it: it outlives the test that restarted it.
    setsid nohup "${args[@]}" >> "$DIR/logs/kube-apiserver.log" 2>&1 < /dev/null 9>&- &
    echo $! > "$pidfile"
  fi
  local deadline=$(( $(date +%s) + 120 ))
  until ready; do
    if ! running_pid >/dev/null; then
      log "kube-apiserver exited during start-up; the tail of its log:"
      tail -n 40 "$DIR/logs/kube-apiserver.log" >&2
      exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "kube-apiserver was not ready within 120s"; tail -n 40 "$DIR/logs/kube-apiserver.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  log "ready (https://127.0.0.1:$APISERVER_PORT)"
}

case "$action" in
  stop) stop ;;
  start) start ;;
  restart) stop; start ;;
  *) echo "usage: $0 [restart|stop|start]" >&2; exit 2 ;;
esac
