# shellcheck shell=bash
# Shared by the cluster scripts (up.sh, node-up.sh, down.sh, node-down.sh): processes started in a
# directory of their own. The sourcing script sets PROCS (the directory holding <name>.pid and
# logs/<name>.log) and defines log().

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Whether the process NAME (its pid file in $PROCS) runs.
alive() { [ -f "$PROCS/$1.pid" ] && kill -0 "$(cat "$PROCS/$1.pid")" 2>/dev/null; }

# Waits until COMMAND succeeds; exits 1 with the tail of NAME's log when NAME exits first or the
# time-out passes.
wait_for() { # name timeout-seconds command...
  local name=$1 timeout=$2 deadline; shift 2
  deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      log "$name exited during start-up; the tail of $PROCS/logs/$name.log:"
      tail -n 40 "$PROCS/logs/$name.log" >&2; exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name was not ready within ${timeout}s; the tail of $PROCS/logs/$name.log:"
      tail -n 40 "$PROCS/logs/$name.log" >&2; exit 1
    fi
    sleep 0.5
  done
}

# Stops the process NAME: SIGTERM, SIGKILL after 10 s; removes its pid file.
stop_process() { # name
  local pidfile="$PROCS/$1.pid" pid t; t=$(date +%s)
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$1 did not stop in 10s; killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "$1 stopped in $(( $(date +%s) - t ))s"
  fi
  rm -f "$pidfile"
}
