#!/usr/bin/env python3
"""The benchmark driver behind tests/bench/run.sh (Python standard library only).

For each size N and each contender -- Kopf, Operon + the Python SDK, Operon + the Rust example
handler, a plain kube-rs controller (the floor), a raw PATCH loop (the ceiling) -- it creates a
fresh namespace and runs four phases (tests/bench/README.md says exactly what each one measures):

  create   N objects exist, then the contender starts: objects fully handled per second;
  update   the contender runs; min(N, 1000) objects get a new spec.value: watch event -> handler call;
  resume   the contender is stopped, the same min(N, 1000) objects get a new spec.value, the
           contender starts again: time until every change is handled;
  delete   all objects are deleted at once (above 1000 objects: the same 1000, one DELETE each; the
           rest is released by the load tool after the contender stops): time until every delete
           handler ran and every deleted object is gone.

Three more modes (README: what each measures and how):

  --steady   after the create phase, instead of update and resume: spec.value changed at steady
             rates (open loop, round-robin): watch event -> handler call and -> progress persisted
             per rate, p50/p99/max, and changes handled vs sent;
  --scale N  N objects, then start-up (-> ready, -> every object handled, -> idle), memory per
             watched object, a restart with no change, its peak; the time budget as it goes;
  --pin      the plane and this driver on one CPU, every contender process on another (taskset).

Every mode samples each contender process's CPU (children included) at every phase boundary and
prints the operator's CPU per handled change.

It prints one markdown table and exits 0 -- a figure, not a test: it never fails on a timing. It exits
1 when a run could not complete (objects never finished, a process died, a handler call is
missing), and, with --check (the smoke test: tests/run.sh runs `run.sh --debug`, which passes it),
when an Operon contender breaks a promise of the README: a handler called again for a change it
had handled ("+k" in the table), or more API writes than promised (PROMISED_WRITES: 2 per created
object, the finalizer first; 1 per update, resume and delete). Without --check a broken promise is
printed under the table, as a figure.

Every process it starts is recorded in WORKDIR/pids and every namespace in WORKDIR/namespaces
before anything else happens to them, so run.sh's trap can clean up even if this driver is killed.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import contextlib
import datetime
import glob
import http.client
import io
import json
import math
import os
import platform
import random
import re
import signal
import socket
import statistics
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

PREFIX = "kopf.zalando.org"
DIFFBASE = f"{PREFIX}/last-handled-configuration"
# Annotations under the prefix that are not per-handler progress records.
NOT_PROGRESS = {DIFFBASE, f"{PREFIX}/touch-dummy", f"{PREFIX}/kopf-managed"}

GROUP, VERSION, PLURAL, KIND = "bench.operon.dev", "v1", "benchobjects", "BenchObject"
RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
HERE = os.path.dirname(os.path.abspath(__file__))
OPERATOR_PY = os.path.join(HERE, "handlers.py")

# The driver's own requests (this script's and the load tool's) carry this User-Agent prefix, so
# the audit log tells them apart from the contender's (all run as the same user).
USER_AGENT = "operon-bench/1"
WRITE_VERBS = ("create", "patch", "update", "delete", "deletecollection")
UPDATED_OBJECTS = 1000  # objects changed in the live update phase (the latency sample)
PHASES = ("create", "update", "resume", "delete")
# The README's promise, in API writes per object and phase: creation 2 (the finalizer in a write
# of its own, then the handlers' outcome and the diff-base in one merge patch), every later change
# cycle 1. Held to for the contenders whose `promise` is True (Operon's); the others are figures.
PROMISED_WRITES = {"create": 2, "update": 1, "resume": 1, "delete": 1}
# --steady: the rates (changes per second) and how long each one lasts, by default; the load
# tool's requests in flight at most; the objects when no --objects is given.
STEADY_RATES = (20.0, 100.0, 300.0)
STEADY_SECONDS = 60.0
STEADY_IN_FLIGHT = 64
STEADY_OBJECTS = 1000


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Failed(Exception):
    """The run could not complete; the message says why."""


# --- the API server ------------------------------------------------------------------------------


class Kube:
    """A tiny HTTPS client with the kubeconfig's credential; one keep-alive connection per thread."""

    def __init__(self, kubectl: str, kubeconfig: str):
        raw = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "config", "view", "--raw", "--minify", "-o", "json"],
            check=True, capture_output=True, text=True,
        ).stdout
        config = json.loads(raw)
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        if "token" not in user:
            raise Failed("the kubeconfig's current user has no bearer token")
        self.token = user["token"]
        server = cluster["server"]
        m = re.fullmatch(r"https://([^:/]+):(\d+)/?", server)
        if not m:
            raise Failed(f"unsupported API server address {server!r} (want https://HOST:PORT)")
        self.host, self.port = m.group(1), int(m.group(2))
        self.context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=60)
            self.local.conn = conn
        return conn

    def request(self, method: str, path: str, body=None, accept: str = "application/json",
                timeout: float | None = None):
        """Returns (status, parsed JSON body or text). Retries once on a dropped connection or a
        time-out, a GET (which changes nothing) up to 5 times, 2 s apart: a contender can keep
        the API server too busy to answer a page of a LIST within a minute (the floor at 100,000
        objects did). With `timeout`, on a connection of its own that waits that long (a
        deletecollection of 100,000 objects takes minutes)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": accept,
            "User-Agent": USER_AGENT,
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempts = 5 if method == "GET" else 2
        for attempt in range(1, attempts + 1):
            conn = self._conn() if timeout is None else http.client.HTTPSConnection(
                self.host, self.port, context=self.context, timeout=timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if timeout is not None:
                    conn.close()
                break
            except (http.client.HTTPException, OSError) as err:
                conn.close()
                if timeout is None:
                    self.local.conn = None
                if attempt == attempts:
                    raise
                if method == "GET":
                    log(f"{method} {path[:120]}: {type(err).__name__} {err}; asking again "
                        f"({attempt}/{attempts})")
                    time.sleep(2.0)
        try:
            return response.status, json.loads(payload)
        except ValueError:
            return response.status, payload.decode(errors="replace")

# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM/VmRSS (KiB) from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def proc_affinity(pid: int) -> str:
    """The CPUs a process may run on (`Cpus_allowed_list`, e.g. `0-1`), or `?` once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def proc_cpu_seconds(pid: int, reaped: bool = False) -> float:
    """utime + stime of a process, in seconds; with `reaped`, plus those of its children that
    have exited and been waited for (cutime + cstime: a probe the process ran, say)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children of any of its threads, and theirs)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in glob.glob(f"/proc/{parent}/task/*/children"):
            try:
                with open(task) as f:
                    found = [int(p) for p in f.read().split()]
            except OSError:
                continue
            out.extend(found)
            todo.extend(found)
    return out


def tree_cpu_seconds(pid: int, skip: set[int]) -> float:
    """CPU-seconds of a process and of its descendants but those in `skip` (processes counted
    under a role of their own, as the core under `kopf run`)."""
    total = proc_cpu_seconds(pid, reaped=True)
    for child in descendants(pid):
        if child in skip:
            continue
        try:
            total += proc_cpu_seconds(child, reaped=True)
        except OSError:
            pass  # gone between listing and reading
    return total


def record_pid(ctx: "Context", pid: int, exe: str) -> None:
    with open(os.path.join(ctx.workdir, "pids"), "a") as f:
        f.write(f"{pid} {exe}\n")


class Proc:
    """A process this driver started: its log file, and its pid recorded for run.sh's trap. With
    --pin, it runs on the contenders' CPU (`taskset -c CPU` execs it: same pid, same binary)."""

    def __init__(self, name: str, argv: list[str], ctx: "Context", env: dict | None = None,
                 stdout_pipe: bool = False):
        self.name = name
        self.log_path = os.path.join(ctx.workdir, f"{name}.log")
        self.log_file = open(self.log_path, "ab")
        pin = ["taskset", "-c", str(ctx.pin.contender_cpu)] if ctx.pin else []
        self.popen = subprocess.Popen(
            [*pin, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self.log_file,
            stderr=self.log_file,
            env=dict(os.environ, NO_COLOR="1", KUBECONFIG=ctx.kubeconfig, **(env or {})),
            start_new_session=True,  # a Ctrl-C reaches the driver, which stops us in order
        )
        self.pid = self.popen.pid
        record_pid(ctx, self.pid, argv[0])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 30.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored SIGTERM for {grace:.0f}s; killing it")
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()

    def tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class Child:
    """A process started by one of ours (the core under `kopf run`): watched, not stopped."""

    def __init__(self, name: str, pid: int, log_path: str):
        self.name, self.pid, self.log_path = name, pid, log_path

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def stop(self, grace: float = 30.0) -> None:
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def tail(self, lines: int = 30) -> str:
        return ""


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def runs(pid: int, binary: str) -> bool:
    """Whether process `pid` runs `binary` (False once it has exited: a short-lived child of the
    SDK, e.g. the core's version probe, may be gone between listing and looking)."""
    try:
        return os.path.realpath(f"/proc/{pid}/exe", strict=True) == os.path.realpath(binary)
    except OSError:
        return False


def read_line(proc: Proc, timeout: float) -> str:
    """The first line the process prints on stdout, within `timeout` seconds."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.popen.stdout.readline().decode()))
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        raise Failed(f"{proc.name} printed no line within {timeout:.0f}s; its log:\n{proc.tail()}")
    return result[0].strip()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_http(url: str, procs: dict, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for role, proc in procs.items():
            if not proc.alive():
                raise Failed(f"the {role} exited during start-up; its log:\n{proc.tail()}")
        try:
            if http_get(url, 2)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Failed(f"{url} did not answer 200 within {timeout:.0f}s")
        time.sleep(0.1)


# --- contenders ----------------------------------------------------------------------------------


class Contender:
    """One way of running the three handlers. `start()` launches its processes into `self.procs`
    (role -> Proc/Child, in start order); a start after a stop is the restart of the resume phase.
    Every handler call is recorded in the ledger file (`KIND NAME TIME` lines; the Rust example
    handler writes JSON lines)."""

    slug = "?"
    title = "?"
    metrics_url: str | None = None
    promise = False  # whether the README's promises (PROMISED_WRITES, no repeated call) are its

    def __init__(self, ctx: "Context", namespace: str):
        self.ctx, self.namespace = ctx, namespace
        self.ledger = os.path.join(ctx.workdir, f"{namespace}.ledger")
        self.procs: dict[str, Proc | Child] = {}
        self.runs = 0
        self.peak: dict[str, int] = {}  # role -> max VmHWM (KiB) over every run of it
        self.cpu: dict[str, float] = collections.defaultdict(float)  # role -> CPU-s of ended runs
        self.affinity: dict[str, str] = {}  # role -> Cpus_allowed_list, as last seen
        # /readyz of every core (Operon's); the others have no readiness endpoint.
        self.ready_urls: list[str] = []
        self.audit: AuditReader | None = None  # polled while the driver waits

    def proc_name(self, role: str) -> str:
        return f"{self.namespace}-{role.replace(' ', '-')}"

    def start(self) -> None:
        raise NotImplementedError

    def live_cpu(self) -> dict[str, float]:
        """CPU-seconds of each running role: the process, its exited children and its live
        descendants that are not a role of their own."""
        roles = {proc.pid for proc in self.procs.values()}
        out = {}
        for role, proc in self.procs.items():
            try:
                out[role] = tree_cpu_seconds(proc.pid, roles)
            except OSError:
                continue
        return out

    def cpu_mark(self) -> dict[str, float]:
        """CPU-seconds of each role since the contender first started (ended runs + this one)."""
        live = self.live_cpu()
        roles = list(dict.fromkeys([*self.cpu, *live]))
        return {role: self.cpu.get(role, 0.0) + live.get(role, 0.0) for role in roles}

    def usage(self) -> dict[str, dict[str, int]]:
        """VmRSS and VmHWM (KiB) of each running role, now."""
        out = {}
        for role, proc in self.procs.items():
            try:
                out[role] = proc_status(proc.pid)
            except OSError:
                continue
            self.affinity[role] = proc_affinity(proc.pid)
        return out

    def sample(self) -> None:
        """Peak RSS and CPU of the running processes (called before every stop)."""
        cpu = self.live_cpu()
        for role, use in self.usage().items():
            self.cpu[role] += cpu.get(role, 0.0)
            self.peak[role] = max(self.peak.get(role, 0), use.get("VmHWM", 0))

    def stop(self) -> None:
        self.sample()
        # The component that talks to the API server first, the handler service after it.
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs = {}

    def own_request(self, event: dict) -> bool:
        agent = event.get("userAgent", "")
        return not agent.startswith(USER_AGENT) and not agent.startswith("kubectl/")

    def calls(self) -> list[tuple[str, str, float]]:
        """(kind, object name, time) of every handler call so far."""
        return [(kind, name, ts) for kind, name, ts, _ in self.ledger_entries()]

    def ledger_entries(self) -> list[tuple[str, str, float, int | None]]:
        """(kind, object name, time, generation seen) of every handler call so far."""
        try:
            with open(self.ledger) as f:
                return [call for line in f if (call := ledger_entry(line)) is not None]
        except OSError:
            return []


def ledger_entry(line: str) -> tuple[str, str, float, int | None] | None:
    """One ledger line as (kind, object name, time, the object's metadata.generation as the call
    saw it, if recorded): `KIND NAME TIME [GENERATION]` (handlers.py, the floor) or a JSON line
    (the Rust example handler); None for an empty line."""
    if line.startswith("{"):
        entry = json.loads(line)
        # An update handler with a field has the field in its id (as Kopf).
        kind = {"created": "create", "value_changed/spec.value": "update",
                "deleted": "delete"}.get(entry.get("handler"), "?")
        generation = entry.get("generation")
        return (kind, entry.get("name"), float(entry["ts"]),
                int(generation) if generation is not None else None)
    fields = line.split()
    if len(fields) >= 3:
        return fields[0], fields[1], float(fields[2]), int(fields[3]) if len(fields) > 3 else None
    return None


class Kopf(Contender):
    slug = "kopf"
    title = "Kopf 1.45.2"

    def start(self) -> None:
        self.runs += 1
        self.procs["kopf"] = Proc(
            self.proc_name("kopf"),
            [self.ctx.kopf_python, "-m", "kopf", "run", "--standalone", "-n", self.namespace, OPERATOR_PY],
            self.ctx, env={"BENCH_LEDGER": self.ledger},
        )


class OperonPython(Contender):
    slug = "operon-py"
    title = "Operon + Python SDK"
    promise = True

    def start(self) -> None:
        self.runs += 1
        port = free_port()
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.ready_urls = [f"http://127.0.0.1:{port}/readyz"]
        sdk = Proc(
            self.proc_name("handlers"),
            [self.ctx.sdk_python, "-m", "kopf", "run", "--standalone", "-n", self.namespace,
             *self.ctx.sdk_args, OPERATOR_PY],
            self.ctx,
            env={"BENCH_LEDGER": self.ledger, "OPERON_BIN": self.ctx.core_bin,
                 "OPERON_HTTP": f"127.0.0.1:{port}", "PYTHONPATH": self.ctx.sdk_src},
        )
        self.procs["handlers (Python)"] = sdk
        # The core is the SDK's child; found for its memory and CPU figures.
        deadline = time.monotonic() + 60
        while True:
            found = [p for p in children(sdk.pid) if runs(p, self.ctx.core_bin)]
            if found:
                break
            if not sdk.alive() or time.monotonic() > deadline:
                raise Failed(f"`kopf run` started no core; its log:\n{sdk.tail()}")
            time.sleep(0.05)
        record_pid(self.ctx, found[0], self.ctx.core_bin)
        # Stopped in reverse order: `kopf run` first, which stops its core; then its core is
        # waited for.
        self.procs = {"core": Child("core", found[0], sdk.log_path), "handlers (Python)": sdk}


class OperonRust(Contender):
    slug = "operon-rust"
    title = "Operon + Rust handler"
    promise = True

    def start_handler(self) -> str:
        """Starts the Rust handler service; returns its URL."""
        handler = Proc(
            self.proc_name("handlers"),
            [self.ctx.handler_bin, "--listen", "127.0.0.1:0", "--resource", RESOURCE,
             "--ledger", self.ledger, "--handler", "create:created",
             "--handler", "update:value_changed=spec.value", "--handler", "delete:deleted"],
            self.ctx, stdout_pipe=True,
        )
        self.procs["handlers (Rust)"] = handler
        line = read_line(handler, 30)
        m = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)", line)
        if not m:
            raise Failed(f"the handler service printed {line!r}, not `listening on 127.0.0.1:PORT`")
        return f"http://{m.group(1)}"

    def start_core(self, role: str, handler: str, *extra: str) -> None:
        port = free_port()
        self.procs[role] = Proc(
            self.proc_name(role),
            [self.ctx.core_bin, "run", "--handler", handler, "-n", self.namespace,
             "--http", f"127.0.0.1:{port}", *extra, *self.ctx.core_args],
            self.ctx,
        )
        self.metrics_url = self.metrics_url or f"http://127.0.0.1:{port}/metrics"
        self.ready_urls.append(f"http://127.0.0.1:{port}/readyz")

    def start(self) -> None:
        self.runs += 1
        self.metrics_url = None
        self.ready_urls = []
        self.start_core("core", self.start_handler())


class OperonShards(OperonRust):
    """`operon run --shards-ring`: SHARDS cores share the objects (and one Rust handler service).
    Each shard labels the objects it claims (one more write per created object than one core),
    so the README's write promises are not its."""

    slug = "operon-shards"
    title = "Operon, 3 shards + Rust handler"
    promise = False
    SHARDS = 3

    def start(self) -> None:
        self.runs += 1
        self.metrics_url = None
        self.ready_urls = []
        handler = self.start_handler()
        for i in range(self.SHARDS):
            self.start_core(f"shard {i}", handler, "--shards-ring", "bench",
                            "--identity", f"shard-{i}", "--lease-namespace", self.namespace)


class Floor(Contender):
    slug = "floor"
    title = "kube-rs controller (floor)"

    def start(self) -> None:
        self.runs += 1
        self.procs["controller"] = Proc(
            self.proc_name("controller"),
            [self.ctx.floor_bin, "-n", self.namespace, "controller", "--ledger", self.ledger],
            self.ctx,
        )


class Ceiling(Contender):
    """The ceiling: no watch, no handler -- one PATCH per object in a loop, 64 at a time. It has
    only the create phase (the objects exist, the loop starts: t0 -> its last patch)."""

    slug = "ceiling"
    title = "PATCH loop (ceiling)"

    def start(self) -> None:
        self.runs += 1
        self.procs["patch loop"] = Proc(
            self.proc_name("patch-loop"),
            [self.ctx.floor_bin, "-n", self.namespace, "patch-loop"], self.ctx, stdout_pipe=True,
        )

    def wait(self) -> None:
        """Until the loop is done; its peak RSS and CPU time come from its own report."""
        proc = self.procs["patch loop"]
        out = proc.popen.stdout.read().decode()
        proc.popen.wait()
        if proc.popen.returncode != 0:
            raise Failed(f"the PATCH loop failed; its log:\n{proc.tail()}")
        report = json.loads(out)
        self.peak["patch loop"] = report["vm_hwm_kib"]
        self.cpu["patch loop"] = report["cpu_seconds"]

    def sample(self) -> None:
        pass


CONTENDERS = {c.slug: c for c in (Kopf, OperonPython, OperonRust, OperonShards, Floor, Ceiling)}


# --- the objects -----------------------------------------------------------------------------------


def load(ctx: "Context", namespace: str, what: list[str], out: str) -> dict[str, float]:
    """Runs the load tool (tests/bench/floor); returns object name -> time its write was answered."""
    argv = [ctx.floor_bin, "-n", namespace, *what, "--out", out]
    done = subprocess.run(argv, capture_output=True, text=True,
                          env=dict(os.environ, KUBECONFIG=ctx.kubeconfig))
    if done.returncode != 0:
        raise Failed(f"{' '.join(what)} failed: {done.stderr[-2000:]}")
    times = {}
    with open(out) as f:
        for line in f:
            name, ts = line.split()
            times[name] = float(ts)
    return times


def handled_value(meta: dict) -> int | None:
    """The spec.value in the object's diff-base when no handler is in progress, else None."""
    annotations = meta.get("annotations") or {}
    if any(k.startswith(PREFIX + "/") and k not in NOT_PROGRESS for k in annotations):
        return None
    try:
        return json.loads(annotations[DIFFBASE])["spec"]["value"]
    except (KeyError, ValueError, TypeError):
        return None


def list_objects(ctx: "Context", namespace: str) -> list[dict]:
    """Every object's metadata (see metadata_pages)."""
    return [meta for page in metadata_pages(ctx, namespace) for meta in page]


def wait_until(ctx: "Context", contender: Contender, what: str, done) -> float:
    """Polls the objects' metadata until `done(metas) -> (count done, total wanted)` says all;
    returns when. Fails when a process dies or nothing progresses for --stall seconds."""
    interval = max(0.5, ctx.objects / 5000)  # a metadata LIST of 10,000 objects costs ~0.5 s
    last, last_progress = -1, time.monotonic()
    while True:
        try:
            metas = list_objects(ctx, contender.namespace)
        except (TimeoutError, OSError, http.client.HTTPException) as e:
            # An API server swamped by the contender can be slower than a poll's timeout: that is
            # no answer yet, not a failure (the stall check below still ends a real hang).
            log(f"{contender.title}, {what}: listing the objects: {e!r}; again")
            if time.monotonic() - last_progress > ctx.stall:
                raise Failed(f"{contender.title}, {what}: no answer to a LIST for {ctx.stall:.0f}s") from e
            continue
        now = time.time()
        count, total = done(metas)
        for role, proc in contender.procs.items():
            if not proc.alive():
                raise Failed(f"{contender.title}: the {role} exited; its log:\n{proc.tail()}")
        if count != last:
            last, last_progress = count, time.monotonic()
            log(f"{contender.title}, {what}: {count}/{total}")
        if count >= total:
            return now
        if contender.audit is not None:
            contender.audit.poll()  # ahead of the log's rotation
        if time.monotonic() - last_progress > ctx.stall:
            sample = [{"name": m.get("name"), "annotations": {
                k: v for k, v in (m.get("annotations") or {}).items() if k.startswith(PREFIX)}}
                for m in metas if handled_value(m) is None][:2]
            raise Failed(f"{contender.title}, {what}: no progress for {ctx.stall:.0f}s at "
                         f"{count}/{total}; e.g. {json.dumps(sample)[:1500]}")
        time.sleep(interval)


def with_value(value: int, names: set[str] | None = None):
    def done(metas: list[dict]) -> tuple[int, int]:
        wanted = [m for m in metas if names is None or m.get("name") in names]
        total = len(names) if names is not None else len(metas)
        return sum(1 for m in wanted if handled_value(m) == value), total
    return done


def none_left(metas: list[dict]) -> tuple[int, int]:
    return 0 if metas else 1, 1


def none_of(names: set[str]):
    def done(metas: list[dict]) -> tuple[int, int]:
        left = sum(1 for meta in metas if meta.get("name") in names)
        return len(names) - left, len(names)
    return done


def delete_all(ctx: "Context", namespace: str, timeout: float | None = None) -> None:
    """One deletecollection, sent again while it is cut off: the API server ends a request after
    its own time-out (60 s), which a deletecollection of 100,000 objects outlasts (what it deleted
    stays deleted; the next one goes on from there)."""
    deadline = time.time() + (timeout or 600.0)
    while True:
        try:
            status, body = ctx.kube.request(
                "DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
                timeout=timeout)
        except (http.client.HTTPException, OSError) as err:
            status, body = 0, repr(err)
        if status == 200:
            return
        if (status and status < 500 and status != 429) or time.time() > deadline:
            raise Failed(f"deleting the objects: {status} {str(body)[:300]}")
        log(f"deleting the objects in {namespace}: {status or ''} {str(body)[:200]}; sending it again")
        time.sleep(1.0)


def metadata_pages(ctx: "Context", namespace: str, limit: int = 5000):
    """The objects' metadata, a page at a time (a single LIST of 100,000 objects would be a
    response of ~100 MB)."""
    token = ""
    while True:
        query = f"?limit={limit}" + (f"&continue={urllib.parse.quote(token)}" if token else "")
        status, body = ctx.kube.request(
            "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}{query}",
            accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
        )
        if status != 200:
            raise Failed(f"listing the objects: {status} {str(body)[:300]}")
        yield [item.get("metadata", {}) for item in body.get("items") or []]
        token = (body.get("metadata") or {}).get("continue") or ""
        if not token:
            return


def object_count(ctx: "Context", namespace: str) -> int:
    status, body = ctx.kube.request(
        "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}?limit=1",
        accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json")
    if status != 200:
        raise Failed(f"counting the objects: {status} {str(body)[:300]}")
    meta = body.get("metadata") or {}
    return len(body.get("items") or []) + int(meta.get("remainingItemCount") or 0)


# --- the steady rate (--steady) ------------------------------------------------------------------


def steady_key(rate: float) -> str:
    return f"steady {rate:g}/s"


def load_steady(ctx: "Context", c: Contender, rate: float, first_value: int,
                out: str) -> tuple[dict, dict[str, list[tuple[int, int]]]]:
    """Runs the load tool's open loop (`set-value --rate R --duration D`) over the N objects,
    reading the audit log as it goes; returns its report (sent, seconds, late, max_lag_ms) and
    per object the (value, generation) of each of its writes, in order."""
    argv = [ctx.floor_bin, "-n", c.namespace, "set-value", "--count", str(ctx.objects),
            "--value", str(first_value), "--rate", f"{rate:g}",
            "--duration", f"{ctx.steady_seconds:g}", "--concurrency", str(STEADY_IN_FLIGHT),
            "--out", out]
    with open(f"{out}.log", "w+") as errors, open(f"{out}.report", "w+") as printed:
        tool = subprocess.Popen(argv, stdout=printed, stderr=errors,
                                env=dict(os.environ, KUBECONFIG=ctx.kubeconfig))
        while tool.poll() is None:
            if c.audit is not None:
                c.audit.poll()  # ahead of the log's rotation
            check_alive(c)
            time.sleep(2.0)
        if tool.returncode != 0:
            errors.seek(0)
            raise Failed(f"set-value --rate {rate:g} failed: {errors.read()[-2000:]}")
        printed.seek(0)
        stdout = printed.read()
    try:
        report = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise Failed(f"set-value --rate {rate:g} printed no report: {stdout[-500:]!r}") from e
    written: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    with open(out) as f:
        for line in f:
            name, value, _, generation = line.split()
            written[name].append((int(value), int(generation)))
    for changes in written.values():
        changes.sort()  # one write per object at a time: values and generations rise together
    return report, dict(written)


def with_values(values: dict[str, int]):
    """Done when every object named in `values` has handled its value (and no other object
    counts)."""
    def done(metas: list[dict]) -> tuple[int, int]:
        return sum(1 for m in metas if m.get("name") in values
                   and handled_value(m) == values[m["name"]]), len(values)
    return done


def match_generations(writes: dict[str, dict[int, float]], calls: dict[str, list[tuple[float, int]]]
                      ) -> tuple[list[tuple[str, float, float]], dict[str, int]]:
    """Each handler call matched to the write that made the generation it saw (`writes`: per
    object, generation -> the API server's receipt of the write; `calls`: per object, (time,
    generation seen), by time): the call handled that change and every earlier one not handled
    yet (latest state wins: the writes it passes over were coalesced, not missed). A call that
    saw no newer generation than an earlier call of its object, or one this window did not make,
    is a handler called again for a change it had handled. Returns (object, write, call) per
    matched call and the repeated calls per object."""
    matched: list[tuple[str, float, float]] = []
    extra: dict[str, int] = {}
    for name, times in calls.items():
        made = writes.get(name, {})
        handled = 0  # the newest generation a call has seen
        for call, generation in times:
            if generation <= handled or generation not in made:
                extra[name] = extra.get(name, 0) + 1
                continue
            matched.append((name, made[generation], call))
            handled = generation
    return matched, extra


def match_calls(writes: dict[str, list[float]], calls: dict[str, list[float]]
                ) -> tuple[list[tuple[str, float, float]], dict[str, int]]:
    """Each handler call matched to the latest write of its object before it that no earlier call
    was matched to: a call covers every change since the object's previous call (latest state
    wins), so the writes it skips over are coalesced, not missed. `writes` and `calls` are times
    per object, sorted. Returns (object, write, call) per matched call, and per object the number
    of calls that found no new write before them (a handler called again for a change it had
    handled). By time alone, for ledgers that do not say which generation a call saw: a call
    that read the object just before a newer write landed is matched to that newer write, and
    the call that follows for it counts as repeated (match_generations has no such error)."""
    matched: list[tuple[str, float, float]] = []
    extra: dict[str, int] = {}
    for name, times in calls.items():
        ws = writes.get(name, [])
        lo = 0  # the writes before `lo` are covered by an earlier call
        for call in times:
            j = bisect.bisect_right(ws, call, lo) - 1
            if j < lo:
                extra[name] = extra.get(name, 0) + 1
                continue
            matched.append((name, ws[j], call))
            lo = j + 1
    return matched, extra


def steady_figures(c: Contender, s: dict, events: list[dict],
                   entries: list[tuple[str, str, float, int | None]]) -> None:
    """The figures of one steady rate `s` (see steady_phase), from the audit log (the receipts of
    the load tool's PATCHes, the contender's writes), the load tool's record (the generation each
    write made) and the ledger (the update calls, with the generation each one saw). Fails when
    an object's last change was never handled or the audit log lacks the load's writes."""
    t0, t1 = s["window"]
    writes: dict[str, list[float]] = collections.defaultdict(list)
    persisted: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    s["writes"] = 0
    for e in events:
        ref = e["objectRef"]
        if ref.get("resource") != PLURAL or e["verb"] not in WRITE_VERBS:
            continue
        received = parse_time(e["requestReceivedTimestamp"])
        if not t0 <= received <= t1 + 1.0:
            continue
        ok = (e.get("responseStatus") or {}).get("code", 0) < 300
        if e.get("userAgent", "").startswith(USER_AGENT):
            if e["verb"] == "patch" and not ref.get("subresource") and received <= t1 and ok:
                writes[ref["name"]].append(received)
        elif c.own_request(e):
            s["writes"] += 1
            if ok:
                stage = parse_time(e.get("stageTimestamp") or e["requestReceivedTimestamp"])
                persisted[ref["name"]].append((received, stage))
    for ws in writes.values():
        ws.sort()
    for ps in persisted.values():
        ps.sort()
    sent = s["report"]["sent"]
    if sum(map(len, writes.values())) < sent:
        raise Failed(f"{c.title}, {s['key']}: the audit log holds "
                     f"{sum(map(len, writes.values()))} of the load tool's {sent} PATCHes")
    calls = sorted((ts, name, generation) for kind, name, ts, generation in entries
                   if kind == "update" and t0 <= ts <= t1)
    matched, s["extra"], s["by"] = match_steady(writes, s["written"], calls)
    handled = {(name, w) for name, w, _ in matched}
    unhandled = sorted(name for name, ws in writes.items() if (name, ws[-1]) not in handled)
    if unhandled:
        raise Failed(f"{c.title}, {s['key']}: the last change of {len(unhandled)} objects matched "
                     f"no update call (e.g. {', '.join(unhandled[:5])}); ledger {c.ledger}")
    s["sent"], s["handled"] = sent, len(matched)
    s["call"] = [call - w for _, w, call in matched]
    # Progress persisted: the contender's first successful write to the object after the call
    # (its outcome and diff-base; no contender writes before its handler ran).
    s["persist"] = []
    for name, w, call in matched:
        after = persisted.get(name, [])
        i = bisect.bisect_left(after, (call, 0.0))
        if i < len(after):
            s["persist"].append(after[i][1] - w)
    s["unpersisted"] = len(matched) - len(s["persist"])
    del s["written"]  # per change; not needed in the figures


def match_steady(writes: dict[str, list[float]], written: dict[str, list[tuple[int, int]]],
                 calls: list[tuple[float, str, int | None]]
                 ) -> tuple[list[tuple[str, float, float]], dict[str, int], str]:
    """Matches the calls to the writes: by the generation each call saw (match_generations) when
    every call says it and every object's audited writes pair one to one, in order, with the
    load tool's (each made one generation); else by time (match_calls). Returns the matches, the
    repeated calls, and `generation` or `time`."""
    by_object: dict[str, list[tuple[float, int | None]]] = collections.defaultdict(list)
    for ts, name, generation in calls:
        by_object[name].append((ts, generation))
    paired = all(len(writes.get(name, [])) == len(changes) for name, changes in written.items())
    if paired and all(g is not None for _, _, g in calls):
        made = {name: {generation: received for (_, generation), received
                       in zip(written[name], writes.get(name, []))} for name in written}
        seen = {name: [(ts, g) for ts, g in times if g is not None]
                for name, times in by_object.items()}
        return (*match_generations(made, seen), "generation")
    times_only = {name: [ts for ts, _ in times] for name, times in by_object.items()}
    return (*match_calls(writes, times_only), "time")


# --- size (--scale) ------------------------------------------------------------------------------

SCALE_CONCURRENCY = 128  # the load tool's requests in flight when creating and releasing
SCALE_TIMEOUT = 3600.0  # a contender's start-up (and its restart) at one size, at most
# A contender is idle once its processes have used less than IDLE_SHARE of one CPU over
# IDLE_QUIET seconds in a row (sampled every IDLE_STEP seconds).
IDLE_SHARE, IDLE_QUIET, IDLE_STEP = 0.05, 3.0, 0.5
EMPTY_TIMEOUT = 120.0  # start-up on an empty namespace, at most


class AuditTail:
    """The contender's requests in one namespace, from the audit log as it grows (LogFollower),
    its writes reduced to what the scale figures need; read after every step and every few
    seconds while the driver waits (at 100,000 objects a start-up writes more than the plane's
    one rotated audit file holds)."""

    def __init__(self, audit_dir: str, namespace: str, contender: Contender):
        self.follower = LogFollower(os.path.join(audit_dir, "audit.log"))
        self.namespace, self.contender = namespace, contender
        self.needle = f'"namespace":"{namespace}"'
        self.watches: set[str] = set()  # a watch is logged when it starts and when it ends
        # (verb, resource[/subresource], received, stage, code) of every write of the contender
        self.writes: list[tuple[str, str, str, str, int]] = []
        self.requests = 0

    def skip_to_end(self) -> None:
        """Forget what is in the log so far (the load tool's bulk writes); follow from here."""
        self.follower.skip_to_end()

    def poll(self) -> None:
        for line in self.follower.lines():
            if self.needle in line:
                self._take(line)

    def drain(self) -> list[tuple[str, str, str, str, int]]:
        """The contender's writes since the last drain."""
        self.poll()
        out, self.writes = self.writes, []
        return out

    def _take(self, line: str) -> None:
        try:
            e = json.loads(line)
        except ValueError:
            return
        ref = e.get("objectRef") or {}
        if ref.get("namespace") != self.namespace or not self.contender.own_request(e):
            return
        if e["verb"] == "watch":
            if e["auditID"] in self.watches:
                return
            self.watches.add(e["auditID"])
        self.requests += 1
        if e["verb"] in WRITE_VERBS:
            resource = ref.get("resource", "?") + (f'/{ref["subresource"]}'
                                                   if ref.get("subresource") else "")
            received = e["requestReceivedTimestamp"]
            self.writes.append((e["verb"], resource, received, e.get("stageTimestamp") or received,
                                (e.get("responseStatus") or {}).get("code", 0)))


class LedgerCount:
    """The handler calls in a ledger by kind, read as the file grows (at 100,000 objects,
    re-reading the whole file at every poll would cost the driver seconds of CPU)."""

    def __init__(self, path: str):
        self.path, self.offset, self.partial = path, 0, b""
        self.kinds: collections.Counter[str] = collections.Counter()

    def poll(self) -> collections.Counter[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return self.kinds
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            call = ledger_entry(line.decode(errors="replace"))
            if call is not None:
                self.kinds[call[0]] += 1
        return self.kinds


def all_ready(c: Contender) -> bool:
    """Whether every /readyz of the contender answers 200."""
    for url in c.ready_urls:
        try:
            if http_get(url, 1)[0] != 200:
                return False
        except OSError:
            return False
    return True


def check_alive(c: Contender) -> None:
    for role, proc in c.procs.items():
        if not proc.alive():
            raise Failed(f"{c.title}: the {role} exited; its log:\n{proc.tail()}")


def wait_idle(c: Contender, timeout: float) -> float | None:
    """Until the contender's processes have used less than IDLE_SHARE of a CPU for IDLE_QUIET
    seconds; returns when its last busy sample ended (None: still busy after `timeout`)."""
    deadline = time.time() + timeout
    before, cpu_before = time.time(), sum(c.live_cpu().values())
    last_busy = before
    while time.time() < deadline:
        time.sleep(IDLE_STEP)
        check_alive(c)
        now, cpu = time.time(), sum(c.live_cpu().values())
        if cpu - cpu_before > IDLE_SHARE * (now - before):
            last_busy = now
        before, cpu_before = now, cpu
        if now - last_busy >= IDLE_QUIET:
            return last_busy
    return None


def count_handled(ctx: "Context", namespace: str, value: int) -> tuple[int, int]:
    """(objects whose diff-base holds `value` with no handler in progress, objects), by pages."""
    handled = total = 0
    for page in metadata_pages(ctx, namespace):
        total += len(page)
        handled += sum(1 for meta in page if handled_value(meta) == value)
    return handled, total


def wait_all_handled(ctx: "Context", c: Contender, n: int) -> None:
    """Polls until a LIST shows all `n` objects handled (after the ledger said so)."""
    last, last_progress = -1, time.monotonic()
    while True:
        check_alive(c)
        handled, _ = count_handled(ctx, c.namespace, 0)
        if handled >= n:
            return
        if handled != last:
            last, last_progress = handled, time.monotonic()
        elif time.monotonic() - last_progress > ctx.stall:
            raise Failed(f"{c.title}: {handled}/{n} objects handled and no progress for "
                         f"{ctx.stall:.0f}s")
        time.sleep(2.0)


def start_and_settle(ctx: "Context", c: Contender, tail: AuditTail, ledger: LedgerCount,
                     handled: int, timeout: float) -> dict:
    """Starts the contender (t0) and follows it until it is idle: t0 -> every /readyz answers
    200 (Operon's cores), t0 -> `handled` more create calls in the ledger, confirmed by a LIST
    (0: none wanted), t0 -> idle; then its RSS and peak (VmRSS, VmHWM per role), its writes (from
    the audit log) and handler calls. Past `timeout` it returns what it has, `timed_out` set."""
    calls0 = sum(ledger.poll().values())
    creates0 = ledger.kinds["create"]
    requests0 = tail.requests
    out: dict = {"ready": None, "handled": None, "idle": None, "timed_out": False}
    t0 = time.time()
    c.start()
    deadline = t0 + timeout
    last, last_progress, next_log, next_tail = 0, time.monotonic(), t0 + 10, t0 + 5
    while True:
        check_alive(c)
        now = time.time()
        if out["ready"] is None and c.ready_urls and all_ready(c):
            out["ready"] = now - t0
            log(f"{c.title}: /readyz ready {out['ready']:.1f} s after the start")
        count = ledger.poll()["create"] - creates0
        if count != last:
            last, last_progress = count, time.monotonic()
        if now >= next_log:
            log(f"{c.title}: {count:,}/{handled:,} create calls, {now - t0:.0f} s after the start")
            next_log = now + 10
        if now >= next_tail:
            tail.poll()  # keeps ahead of the log's rotation
            next_tail = now + 5
        if count >= handled and (out["ready"] is not None or not c.ready_urls):
            break
        if now > deadline:
            out["timed_out"], out["progress"], out["usage"] = True, count, c.usage()
            log(f"{c.title}: gave up {timeout:.0f} s after the start, at {count:,}/{handled:,}")
            return out
        # The initial listing of 100,000 objects alone can take minutes on a busy API server.
        stall = max(ctx.stall, handled / 500)
        if handled and time.monotonic() - last_progress > stall:
            raise Failed(f"{c.title}: no handler call for {stall:.0f}s at {count:,}/{handled:,}")
        time.sleep(0.2)
    if handled:
        wait_all_handled(ctx, c, handled)
        out["handled_polled"] = time.time() - t0
    idle = wait_idle(c, max(deadline - time.time(), 10.0))
    out["idle"] = None if idle is None else idle - t0
    out["usage"] = c.usage()
    time.sleep(0.5)  # the audit log is written asynchronously
    writes = tail.drain()
    out["writes"] = dict(collections.Counter(f"{verb} {res}" for verb, res, *_ in writes))
    stages = [parse_time(stage) for _, res, _, stage, _ in writes if res.split("/")[0] == PLURAL]
    if handled:
        out["handled"] = (max(stages) if stages else t0 + out["handled_polled"]) - t0
    out["calls"] = sum(ledger.poll().values()) - calls0
    out["requests"] = tail.requests - requests0
    return out


def object_bytes(ctx: "Context", namespace: str) -> int | None:
    """The size of one object as the API server serves it (JSON, managedFields included)."""
    status, body = ctx.kube.request(
        "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{object_name(0)}")
    return len(json.dumps(body, separators=(",", ":"))) if status == 200 else None


def object_name(i: int) -> str:
    return f"obj-{i:05}"


def human(seconds: float) -> str:
    """A duration for the time budget: `42 s`, `6 min 05 s`, `1 h 02 min`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02} min"


class Budget:
    """The scale mode's time budget, printed as it goes: each step's duration, the run so far,
    and an estimate of what is left from the rates measured so far (first guesses before)."""

    # Objects per second of each step on this machine, before anything is measured.
    GUESS = {"create": 1000.0, "start-up": 250.0, "restart": 2000.0, "clean-up": 600.0}

    def __init__(self, sizes: list[int], slugs: list[str], timeout: float):
        self.started = time.time()
        self.plan = [(n, slug) for n in sizes for slug in slugs]
        self.timeout = timeout
        self.rates: dict[tuple[str, str], float] = {}

    def rate(self, step: str, slug: str) -> float:
        measured = [rate for (name, who), rate in self.rates.items() if name == step]
        return self.rates.get((step, slug)) or (statistics.median(measured) if measured
                                                 else self.GUESS[step])

    def expected(self, n: int, slug: str) -> float:
        seconds = sum(n / self.rate(step, slug) for step in self.GUESS)
        return 20.0 + min(seconds, 2 * self.timeout + n / self.rate("create", slug))

    def announce(self, done: int) -> None:
        left = sum(self.expected(n, slug) for n, slug in self.plan[done:])
        log(f"time budget: {human(time.time() - self.started)} so far; {len(self.plan) - done} "
            f"contender run(s) left, ~{human(left)} by the rates measured so far (a start-up or "
            f"restart is given up after {human(self.timeout)})")

    @contextlib.contextmanager
    def step(self, r: dict, name: str):
        n = r["n"]
        expect = f" (expected ~{human(n / self.rate(name, r['slug']))})" if name in self.GUESS else ""
        log(f"{r['title']}, N={n:,}: {name}{expect}; {human(time.time() - self.started)} so far")
        t = time.time()
        try:
            yield
        finally:
            took = time.time() - t
            r["steps"][name] = took
            if name in self.GUESS and took > 0:
                self.rates[(name, r["slug"])] = n / took
            log(f"{r['title']}, N={n:,}: {name} took {human(took)}")


def run_scale(ctx: "Context", cls: type[Contender], budget: Budget) -> dict:
    """The scale figures of one contender at one size, in a fresh namespace: its memory on the
    empty namespace, then N objects created, then start-up (t0 -> ready -> every object handled
    -> idle: peak and steady RSS), then a restart with no change (t0 -> ready -> idle: its peak);
    then the objects are released and deleted."""
    n = ctx.objects
    namespace = ctx.create_namespace(cls.slug)
    c = cls(ctx, namespace)
    r: dict = {"title": c.title, "slug": c.slug, "namespace": namespace, "promise": c.promise,
               "ledger": c.ledger, "n": n, "steps": {}, "phase_cpu": {}}
    tail = AuditTail(ctx.audit_dir, namespace, c)
    ledger = LedgerCount(c.ledger)
    plane = plane_pids(ctx.plane_dir)
    created = False

    def cpu_since(before: dict[str, float]) -> dict[str, float]:
        now = c.cpu_mark()
        return {role: now[role] - before.get(role, 0.0) for role in now}

    try:
        log(f"{c.title}, N={n:,}: namespace {namespace}")
        with budget.step(r, "empty namespace"):
            r["empty"] = start_and_settle(ctx, c, tail, ledger, 0, EMPTY_TIMEOUT)
            c.stop()
        created = True
        with budget.step(r, "create"):
            load(ctx, namespace, ["create", "--count", str(n), "--concurrency",
                                  str(SCALE_CONCURRENCY)], os.path.join(ctx.workdir, f"{namespace}.created"))
        r["object_bytes"] = object_bytes(ctx, namespace)
        tail.skip_to_end()
        cpu0, before = plane_cpu(plane), c.cpu_mark()
        with budget.step(r, "start-up"):
            r["start"] = start_and_settle(ctx, c, tail, ledger, n, ctx.scale_timeout)
        r["phase_cpu"]["start-up"] = cpu_since(before)
        if not r["start"]["timed_out"]:
            c.stop()
            before = c.cpu_mark()
            with budget.step(r, "restart"):
                r["restart"] = start_and_settle(ctx, c, tail, ledger, 0, ctx.scale_timeout)
            r["phase_cpu"]["restart"] = cpu_since(before)
        r["plane_cpu_by"] = plane_cpu_delta(plane, cpu0)
        c.stop()
        r["peak"], r["cpu"], r["affinity"] = dict(c.peak), dict(c.cpu), dict(c.affinity)
    except Exception:
        if c.procs:
            c.stop()
        if created:
            log(f"{c.title}: releasing and deleting the objects after the failure")
            with contextlib.suppress(Exception):
                release_all(ctx, namespace, n)
        raise
    finally:
        if c.procs:
            c.stop()
    try:
        with budget.step(r, "clean-up"):
            release_all(ctx, namespace, n)
    except Failed as err:
        # The figures are taken; losing them to a clean-up that went wrong would waste the run.
        log(f"{c.title}, N={n:,}: the clean-up failed ({err}); the next contender shares the API "
            f"server with what is left")
    return r


def release_all(ctx: "Context", namespace: str, n: int) -> None:
    """With no contender running: every finalizer off, every object deleted, and waits until
    they are gone (so that the next contender does not share the API server with the deletion)."""
    load(ctx, namespace, ["release", "--from", "0", "--count", str(n), "--concurrency",
                          str(SCALE_CONCURRENCY)], os.path.join(ctx.workdir, f"{namespace}.released"))
    delete_all(ctx, namespace, timeout=max(600.0, n / 100))
    deadline = time.time() + max(600.0, n / 100)
    while (left := object_count(ctx, namespace)) > 0:
        if time.time() > deadline:
            raise Failed(f"{left} objects still in {namespace} after the deletion")
        time.sleep(1.0)


# --- one contender, one size ---------------------------------------------------------------------


def run_contender(ctx: "Context", cls: type[Contender]) -> dict:
    """All phases of one contender at one size, in a fresh namespace; returns its figures."""
    n = ctx.objects
    namespace = ctx.create_namespace(cls.slug)
    c = cls(ctx, namespace)
    r: dict = {"title": c.title, "slug": c.slug, "namespace": namespace, "windows": {},
               "promise": c.promise, "ledger": c.ledger}
    plane = plane_pids(ctx.plane_dir)
    c.audit = AuditReader(ctx.audit_dir, namespace)

    def window(phase: str, t0: float, t1: float) -> None:
        r["windows"][phase] = (t0, t1)

    # The contender's CPU-seconds per role at each phase boundary: a phase's CPU is what its
    # processes (and their children) spent since the previous boundary.
    r["phase_cpu"] = {}
    last_mark: dict[str, float] = {}

    def mark(phase: str) -> None:
        nonlocal last_mark
        now = c.cpu_mark()
        r["phase_cpu"][phase] = {role: now[role] - last_mark.get(role, 0.0) for role in now}
        last_mark = now

    try:
        log(f"{c.title}, N={n}: namespace {namespace}; creating the objects")
        load(ctx, namespace, ["create", "--count", str(n)], os.path.join(ctx.workdir, f"{namespace}.created"))

        # create: the objects exist; the contender starts (t0) and handles every one.
        cpu0 = plane_cpu(plane)
        t0 = time.time()
        c.start()
        if isinstance(c, Ceiling):
            c.wait()
            t1 = time.time()
            window("create", t0, t1)
            c.stop()
            mark("create")
            r["plane_cpu_by"] = plane_cpu_delta(plane, cpu0)
            return finish(ctx, c, r)
        t1 = wait_until(ctx, c, "create", with_value(0))
        window("create", t0, t1)
        time.sleep(1.0)  # trailing writes (Events) land in the window of the phase that made them
        mark("create")

        m = min(n, UPDATED_OBJECTS)
        if ctx.steady_rates:
            # --steady: instead of the update and resume phases, changes at steady rates.
            r["steady"] = {}
            value = 1
            for rate in ctx.steady_rates:
                value = steady_phase(ctx, c, r, rate, value, window, mark)
        else:
            update_and_resume(ctx, c, r, window, mark)

        # delete: every object at once (one deletecollection); the delete handlers run, the
        # finalizers go. Above UPDATED_OBJECTS, the same sample as above, one DELETE each; the
        # rest is released by the load tool once the contender has stopped (not measured).
        t0 = time.time()
        if n > m:
            deleted = set(load(ctx, namespace, ["delete", "--count", str(m)],
                               os.path.join(ctx.workdir, f"{namespace}.deleted")))
            t1 = wait_until(ctx, c, "delete", none_of(deleted))
        else:
            delete_all(ctx, namespace)
            t1 = wait_until(ctx, c, "delete", none_left)
        window("delete", t0, t1)
        time.sleep(1.0)
        mark("delete")
        r["plane_cpu_by"] = plane_cpu_delta(plane, cpu0)
        if c.metrics_url:
            try:
                r["metrics"] = parse_metrics(http_get(c.metrics_url)[1])
            except OSError as e:
                log(f"cannot read {c.metrics_url}: {e}")
        c.stop()
        if n > m:
            log(f"{c.title}: stopped; releasing the {n - m} objects left")
            load(ctx, namespace, ["release", "--from", str(m), "--count", str(n)],
                 os.path.join(ctx.workdir, f"{namespace}.released"))
            delete_all(ctx, namespace)
        return finish(ctx, c, r)
    finally:
        if c.procs:
            c.stop()


def update_and_resume(ctx: "Context", c: Contender, r: dict, window, mark) -> None:
    """The update (live) and resume phases (see run_contender)."""
    namespace, m = c.namespace, min(ctx.objects, UPDATED_OBJECTS)
    # update (live): the contender runs; a sample of objects gets spec.value = 1.
    t0 = time.time()
    r["update_written"] = load(ctx, namespace, ["set-value", "--count", str(m), "--value", "1"],
                               os.path.join(ctx.workdir, f"{namespace}.updated"))
    t1 = wait_until(ctx, c, "update", with_value(1, set(r["update_written"])))
    window("update", t0, t1)
    time.sleep(1.0)
    mark("update")

    # resume: stopped; the same sample gets spec.value = 2; started again (t0). Every object
    # is listed and looked at again; the changed ones are handled.
    c.stop()
    log(f"{c.title}: stopped; changing {m} objects while it is down")
    resumed = load(ctx, namespace, ["set-value", "--count", str(m), "--value", "2"],
                   os.path.join(ctx.workdir, f"{namespace}.resumed"))
    t0 = time.time()
    c.start()
    t1 = wait_until(ctx, c, "resume", with_value(2, set(resumed)))
    window("resume", t0, t1)
    time.sleep(1.0)
    mark("resume")


def steady_phase(ctx: "Context", c: Contender, r: dict, rate: float, first_value: int,
                 window, mark) -> int:
    """One steady rate: the load tool changes spec.value at `rate` changes per second for
    --steady-seconds (open loop, round-robin over the objects, each change a value never written
    before, starting at `first_value`), then every object's last change must be handled.
    Returns the next unused value."""
    key = steady_key(rate)
    out = os.path.join(ctx.workdir, f"{c.namespace}.steady-{rate:g}")
    log(f"{c.title}: {rate:g} changes/s for {ctx.steady_seconds:g} s")
    t0 = time.time()
    report, written = load_steady(ctx, c, rate, first_value, out)
    log(f"{c.title}, {key}: {report['sent']:,} changes sent in {report['seconds']:.1f} s "
        f"({report['late']:,} started late, by up to {report['max_lag_ms']:,.0f} ms)")
    last = {name: changes[-1][0] for name, changes in written.items()}
    t1 = wait_until(ctx, c, key, with_values(last))
    window(key, t0, t1)
    time.sleep(1.0)
    mark(key)
    r["steady"][rate] = {"key": key, "report": report, "window": (t0, t1), "written": written}
    return first_value + report["sent"]


def finish(ctx: "Context", c: Contender, r: dict) -> dict:
    """Reads the audit log and the ledger into the figures; checks every handler call happened."""
    n = ctx.objects
    r["peak"], r["cpu"], r["runs"] = dict(c.peak), dict(c.cpu), c.runs
    r["affinity"] = dict(c.affinity)
    r["logs"] = {}
    time.sleep(0.5)  # the audit log is written asynchronously
    t_end = max(t1 for _, t1 in r["windows"].values())
    everything = c.audit.poll() if c.audit else []
    events = [e for e in everything
              if c.own_request(e) and parse_time(e["requestReceivedTimestamp"]) <= t_end]
    r["requests"] = len(events)
    r["requesters"] = dict(collections.Counter(
        f'{e["user"]["username"]} {e.get("userAgent", "(no User-Agent)")[:40]}' for e in events))
    r["phases"] = {}
    for phase, (t0, t1) in r["windows"].items():
        inside = [e for e in events if t0 <= parse_time(e["requestReceivedTimestamp"]) <= t1 + 1.0]
        writes = [e for e in inside if e["verb"] in WRITE_VERBS]
        obj_writes = [parse_time(e.get("stageTimestamp") or e["requestReceivedTimestamp"])
                      for e in writes if e["objectRef"].get("resource") == PLURAL]
        r["phases"][phase] = {
            "t": (max(obj_writes) if obj_writes else t1) - t0,  # t0 -> the last write to an object
            "t_polled": t1 - t0,
            "requests": len(inside),
            "writes": len(writes),
            "by": dict(collections.Counter(
                f'{e["verb"]} {e["objectRef"].get("resource")}'
                + (f'/{e["objectRef"]["subresource"]}' if e["objectRef"].get("subresource") else "")
                for e in writes)),
        }
    if isinstance(c, Ceiling):
        return r
    calls = c.calls()
    r["calls"] = dict(collections.Counter(kind for kind, _, _ in calls))
    m = min(n, UPDATED_OBJECTS)
    expected = {"create": n, "delete": m}
    due = {"create": lambda name: 1, "delete": lambda name: 1}
    r["repeated"] = {}
    if "update" in r["windows"]:
        update_latency(c, r, everything, calls)
        # Each changed object: one update call for the live change, one for the change while down.
        sample = set(r["update_written"])
        expected["update"] = 2 * len(sample)
        due["update"] = lambda name: 2 if name in sample else 0
    for s in r.get("steady", {}).values():
        steady_figures(c, s, everything, c.ledger_entries())
        for name, extra in s["extra"].items():
            r["repeated"][("update", name)] = r["repeated"].get(("update", name), 0) + extra
    missing = {k: (r["calls"].get(k, 0), v) for k, v in expected.items() if r["calls"].get(k, 0) < v}
    if missing:
        raise Failed(f"{c.title}: handler calls missing (made, expected): {missing}; "
                     f"ledger {c.ledger}")
    # Calls beyond the one due per object and change: create 1 for every object; update 2 (the
    # live change, the change while down) for each changed object, or, at a steady rate, one per
    # change at most (steady_figures); delete 1 for each.
    per_object = collections.Counter((kind, name) for kind, name, _ in calls)
    r["repeated"].update({(kind, name): made - due[kind](name)
                          for (kind, name), made in sorted(per_object.items())
                          if kind in due and made > due[kind](name)})
    r["extra_calls"] = dict(collections.Counter(
        kind for (kind, _), extra in r["repeated"].items() for _ in range(extra)))
    return r


def update_latency(c: Contender, r: dict, everything: list[dict],
                   calls: list[tuple[str, str, float]]) -> None:
    """Latency of the update phase: the API server's receipt of the load tool's PATCH of
    spec.value (audit log) -> the first `update` handler call for that object after it (the
    handler's own clock; same host)."""
    t0, t1 = r["windows"]["update"]
    received: dict[str, float] = {}
    for e in everything:
        ref = e["objectRef"]
        t = parse_time(e["requestReceivedTimestamp"])
        if (e["verb"] == "patch" and e.get("userAgent", "").startswith(USER_AGENT)
                and ref.get("resource") == PLURAL and not ref.get("subresource") and t0 <= t <= t1):
            received[ref["name"]] = t
    first: dict[str, float] = {}
    for kind, name, ts in calls:
        if kind == "update" and name in received and ts >= received[name]:
            first[name] = min(ts, first.get(name, ts))
    r["latency"] = [first[name] - received[name] for name in first]
    if len(r["latency"]) < len(r["update_written"]):
        raise Failed(f"{c.title}: {len(r['latency'])} update calls matched to "
                     f"{len(r['update_written'])} writes in the audit log; ledger {c.ledger}")


def broken_promises(n: int, r: dict) -> list[str]:
    """What one contender's run broke of the README's promises (PROMISED_WRITES, every handler
    called once per object and change), one line each; empty when it kept them all."""
    out = []
    for phase, promised in PROMISED_WRITES.items():
        p = r.get("phases", {}).get(phase)
        if p is None:
            continue
        count = n if phase == "create" else min(n, UPDATED_OBJECTS)
        if p["writes"] > promised * count:
            by = ", ".join(f"{k} {v}" for k, v in sorted(p["by"].items()))
            out.append(f"{r['title']}, N={n}, {phase}: {p['writes']} API writes for {count} "
                       f"objects ({p['writes'] / count:.2f} per object; {by}), the README "
                       f"promises {promised} per object")
    if r.get("repeated"):
        shown = ", ".join(f"{kind} {name} +{extra}"
                          for (kind, name), extra in list(r["repeated"].items())[:10])
        more = len(r["repeated"]) - 10
        out.append(f"{r['title']}, N={n}: a handler called again for a change it had handled "
                   f"(kind, object, calls beyond the one due): {shown}"
                   + (f" and {more} more" if more > 0 else "") + f"; ledger {r['ledger']}")
    return out


# --- the control plane ---------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace, pin: "Pinning | None" = None):
        self.objects: int = args.objects
        self.steady_rates: list[float] = args.steady_rates
        self.steady_seconds: float = args.steady_seconds
        self.scale_timeout: float = args.scale_timeout
        self.pin = pin
        self.workdir: str = args.workdir
        self.kubeconfig: str = args.kubeconfig
        self.core_bin: str = args.core_bin
        self.handler_bin: str = args.handler_bin
        self.floor_bin: str = args.floor_bin
        self.kopf_python: str = args.kopf_python
        self.sdk_python: str = args.sdk_python
        self.sdk_src: str = args.sdk_src
        self.sdk_args: list[str] = args.sdk_arg or []
        self.core_args: list[str] = args.core_arg or []
        self.audit_dir: str = args.audit_dir
        self.plane_dir: str = args.plane_dir
        self.stall: float = args.stall
        self.kube = Kube(args.kubectl, args.kubeconfig)
        self.namespaces: list[str] = []

    def create_namespace(self, slug: str) -> str:
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"bench-{slug}-{self.objects}-{time.strftime('%H%M%S')}-{suffix}"
        with open(os.path.join(self.workdir, "namespaces"), "a") as f:
            f.write(name + "\n")
        self.namespaces.append(name)
        status, body = self.kube.request(
            "POST", "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        if status != 201:
            raise Failed(f"cannot create namespace {name}: {status} {body}")
        return name

    def delete_namespaces(self) -> None:
        for name in self.namespaces:
            try:
                status, body = self.kube.request("DELETE", f"/api/v1/namespaces/{name}")
                if status not in (200, 202, 404):
                    log(f"deleting namespace {name}: {status} {body}")
            except Exception as e:  # noqa: BLE001 -- cleanup goes on; run.sh's trap retries
                log(f"deleting namespace {name}: {e}")
        self.namespaces = []


PLANE = ("kube-apiserver", "etcd", "kube-controller-manager")


def plane_pids(plane_dir: str, names: tuple[str, ...] = PLANE) -> dict[str, int]:
    pids = {}
    for name in names:
        try:
            with open(os.path.join(plane_dir, f"{name}.pid")) as f:
                pids[name] = int(f.read().strip())
        except (OSError, ValueError):
            pass
    return pids


def plane_cpu(plane: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in plane.items():
        try:
            out[name] = proc_cpu_seconds(pid)
        except OSError:
            pass
    return out


def plane_cpu_delta(plane: dict[str, int], before: dict[str, float]) -> dict[str, float] | None:
    """CPU-seconds of each process of the plane since `before`."""
    after = plane_cpu(plane)
    if plane and before.keys() == after.keys() == plane.keys():
        return {k: after[k] - before[k] for k in plane}
    return None  # a test running alongside restarted the API server: no figure


class Pinning:
    """--pin: the plane (kube-apiserver, etcd, kube-controller-manager), this driver and its load
    tool on one CPU, every process of the contenders on another (`taskset`), so that what a
    contender costs is not hidden in the CPU it takes from a shared API server. The plane's
    CPUs are put back at the end (run.sh does it too, from WORKDIR/affinity, if the driver dies)."""

    def __init__(self, plane_dir: str, workdir: str):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise Failed(f"--pin needs 2 CPUs; this process may use {cpus}")
        self.plane_cpu, self.contender_cpu = cpus[0], cpus[1]
        self.plane = plane_pids(plane_dir)
        if set(self.plane) != set(PLANE):
            raise Failed(f"--pin: the plane's pid files in {plane_dir} name only {sorted(self.plane)}")
        self.before = {name: proc_affinity(pid) for name, pid in self.plane.items()}
        with open(os.path.join(workdir, "affinity"), "a") as f:
            for name, pid in self.plane.items():
                f.write(f"{pid} {self.before[name]}\n")
        for pid in self.plane.values():
            self._taskset(pid, str(self.plane_cpu))
        os.sched_setaffinity(0, {self.plane_cpu})
        self.pinned = {name: proc_affinity(pid) for name, pid in self.plane.items()}

    @staticmethod
    def _taskset(pid: int, cpus: str) -> None:
        # -a: every thread (the plane's Go runtimes have dozens; new ones inherit the mask).
        done = subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise Failed(f"taskset -a -p -c {cpus} {pid}: {done.stderr.strip()}")

    def restore(self) -> None:
        for name, pid in self.plane.items():
            with contextlib.suppress(Failed):
                self._taskset(pid, self.before[name])

    def describe(self, sizes: dict[int, dict[str, dict]]) -> str:
        """The pinning line: each plane process with the CPUs it was pinned to (as read back),
        and the CPUs each contender process was seen on."""
        plane = ", ".join(f"{name} (pid {pid}) on CPU {self.pinned[name]}"
                          for name, pid in self.plane.items())
        seen = "; ".join(f"N={n} {r['title']}: " + ", ".join(
            f"{role} {cpus}" for role, cpus in r["affinity"].items())
            for n, res in sizes.items() for r in res.values() if r.get("affinity"))
        return (f"pinning: {plane}, with this driver and its load tool; every contender process "
                f"on CPU {self.contender_cpu} (`taskset -c {self.contender_cpu}`)"
                + (f", as sampled (Cpus_allowed_list): {seen}" if seen else "")
                + "; the plane's CPUs before, given back at the end: "
                + ", ".join(f"{k} {v}" for k, v in self.before.items()))


class LogFollower:
    """The lines appended to a log file since the last read, across rotations (the file is renamed
    and a new one begun). The plane keeps one rotated audit file of 200 MB, so a reader that waits
    until the end of a long run (--steady for minutes, --scale) would find its first lines gone:
    the driver reads as the run goes (every few seconds while it waits)."""

    def __init__(self, path: str):
        self.path = path
        self.file: io.TextIOWrapper | None = None
        self.partial = ""
        self.skip_to_end()

    def skip_to_end(self) -> None:
        """Forget what the file holds so far: follow from here."""
        if self.file is not None:
            self.file.close()
        try:
            self.file = open(self.path, errors="replace")
            self.file.seek(0, os.SEEK_END)
        except OSError:
            self.file = None
        self.partial = ""

    def lines(self) -> list[str]:
        """The complete lines written since the last call (the rest of a rotated file first)."""
        if self.file is None:
            return []
        out = self._take(self.file.read())
        while True:
            try:
                rotated = os.stat(self.path).st_ino != os.fstat(self.file.fileno()).st_ino
            except OSError:
                return out
            if not rotated:
                return out
            out += self._take(self.file.read())
            self.file.close()
            self.file = open(self.path, errors="replace")
            out += self._take(self.file.read())

    def _take(self, chunk: str) -> list[str]:
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        return lines


class AuditReader:
    """Every request in one namespace since the reader was made, from the audit log as it grows
    (LogFollower), once per auditID (watches log ResponseStarted and ResponseComplete: the first
    one seen is kept), reduced to the fields the figures use."""

    def __init__(self, audit_dir: str, namespace: str):
        self.follower = LogFollower(os.path.join(audit_dir, "audit.log"))
        self.namespace = namespace
        self.needle = f'"namespace":"{namespace}"'
        self.events: dict[str, dict] = {}

    def poll(self) -> list[dict]:
        """Reads what is new; returns every request so far."""
        for line in self.follower.lines():
            if self.needle not in line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            ref = e.get("objectRef") or {}
            if ref.get("namespace") != self.namespace or e.get("auditID") in self.events:
                continue
            self.events[e["auditID"]] = {
                "verb": e["verb"], "userAgent": e.get("userAgent", ""),
                "user": {"username": (e.get("user") or {}).get("username", "?")},
                "objectRef": {k: ref[k] for k in ("resource", "subresource", "name") if k in ref},
                "requestReceivedTimestamp": e["requestReceivedTimestamp"],
                "stageTimestamp": e.get("stageTimestamp"),
                "responseStatus": {"code": (e.get("responseStatus") or {}).get("code", 0)},
            }
        return list(self.events.values())


def parse_time(value: str) -> float:
    value = value.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in value else "%Y-%m-%dT%H:%M:%S"
    return datetime.datetime.strptime(value, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list] = collections.defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        try:
            out[m.group(1)].append((labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def log_findings(paths: list[str]) -> tuple[int, list[str]]:
    """(WARN/ERROR lines, the most frequent of them) in the processes' logs (any of the formats:
    tracing's, Kopf's, the SDK's)."""
    count = 0
    messages: collections.Counter[str] = collections.Counter()
    level = re.compile(r"\b(WARN|WARNING|ERROR)\b\s*\]?\s*(.*)$")
    for path in paths:
        try:
            f = open(path, errors="replace")
        except OSError:
            continue
        with f:
            for line in f:
                m = level.search(line)
                if not m:
                    continue
                count += 1
                shape = re.sub(r"obj-\d+", "obj-N", m.group(2))
                shape = re.sub(r"bench-[\w-]+", "NS", shape)
                shape = re.sub(r"\d+(\.\d+)?", "N", shape)
                messages[f"{m.group(1)} {shape[:200]}"] += 1
    return count, [f"{k}x {msg}" for msg, k in messages.most_common(3)]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


# --- the table -----------------------------------------------------------------------------------


def machine() -> str:
    mem = ""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Linux {platform.release()}"


def mib(kib: float) -> str:
    if kib >= 1024 * 1024:
        return f"{kib / 1024 / 1024:.2f} GiB"
    return f"{kib / 1024:.0f} MiB" if kib >= 10240 else f"{kib / 1024:.1f} MiB"


def throughput(r: dict) -> float:
    return r["n"] / r["phases"]["create"]["t"]


def memory(r: dict) -> float:
    return sum(r["peak"].values())


def table(sizes: dict[int, dict[str, dict]], order: list[str]) -> list[str]:
    """One markdown table: a column per contender, the rows of every size one after the other."""
    titles = [CONTENDERS[s].title for s in order]
    lines = ["| figure | " + " | ".join(titles) + " |", "|---|" + "---|" * len(order)]

    def row(name: str, fn) -> None:
        lines.append(table_row(name, fn, res, order))

    for n, res in sizes.items():
        kopf, floor, ceiling = res.get("kopf"), res.get("floor"), res.get("ceiling")
        ran = {phase for r in res.values() for phase in r.get("windows", {})}

        def ratios(r: dict) -> str:
            t = throughput(r)
            parts = [f"{t / throughput(other):.2f}× {label}" for label, other in
                     (("Kopf", kopf), ("floor", floor), ("ceiling", ceiling))
                     if other is not None and other is not r]
            return f"**{t:,.0f}/s**" + (f" ({'; '.join(parts)})" if parts else "")

        def per_object(phase: str, key: str = "writes"):
            def cell(r: dict) -> str:
                p = r["phases"][phase]
                count = min(n, UPDATED_OBJECTS) if phase != "create" else n
                by = ", ".join(f"{k} {v / count:.2f}" for k, v in sorted(p["by"].items()))
                return f"{p[key] / count:.2f}" + (f" ({by})" if by and key == "writes" else "")
            return cell

        def secs(phase: str):
            m = min(n, UPDATED_OBJECTS)
            return lambda r: f"{r['phases'][phase]['t']:.1f} s ({m / r['phases'][phase]['t']:,.0f}/s)"

        def mem_cell(r: dict) -> str:
            total = memory(r)
            text = " + ".join(f"{role} {mib(kib)}" for role, kib in r["peak"].items())
            if len(r["peak"]) > 1:
                text += f" = **{mib(total)}**"
            against = [f"{total / memory(other):.2f}× {label}" for label, other in
                       (("Kopf", kopf), ("floor", floor)) if other is not None and other is not r]
            return text + (f" ({'; '.join(against)})" if against else "")

        def changes(phase: str) -> int:
            """The changes a phase handled: every object created, the sample's changes, or
            (a steady rate) the changes matched to a handler call."""
            if phase.startswith("steady "):
                return 0
            return n if phase == "create" else min(n, UPDATED_OBJECTS)

        def phase_cpu(phase: str):
            def cell(r: dict) -> str:
                count = changes(phase) or next(s["handled"] for s in r["steady"].values()
                                               if s["key"] == phase)
                return cpu_per_change(r["phase_cpu"][phase], count)
            return cell

        def cpu_total(r: dict) -> str:
            handled = sum(changes(p) for p in r["phase_cpu"] if not p.startswith("steady "))
            handled += sum(s["handled"] for s in r.get("steady", {}).values())
            total = sum(r["cpu"].values())
            return f"{total:.1f} CPU-s, {total * 1000 / handled:.2f} ms per handled change"

        lines.append(f"| **N = {n:,}** |" + " |" * len(order))
        row("objects fully handled per second (create phase: start → last write)", ratios)
        row("create: API writes per object", per_object("create"))
        if "update" in ran:
            row("update (live, {:,} objects): watch event → handler call, p50 / p99".format(
                min(n, UPDATED_OBJECTS)),
                lambda r: " / ".join(f"{percentile(r['latency'], p) * 1000:,.0f} ms" for p in (50, 99)))
            row("update: API writes per object", per_object("update"))
        if any(phase.startswith("steady ") for phase in ran):
            row("steady rates (tables below): changes handled / sent", lambda r: "; ".join(
                f"{rate:g}/s {s['handled']:,} / {s['sent']:,}" for rate, s in r["steady"].items()))
        if "resume" in ran:
            row("resume ({:,} of {:,} objects changed while down): restart → every change handled".format(
                min(n, UPDATED_OBJECTS), n), lambda r: f"{r['phases']['resume']['t']:.1f} s")
            row("resume: API writes per object", per_object("resume"))
        row("delete: all deleted → every object gone" if n <= UPDATED_OBJECTS else
            "delete ({:,} of {:,} objects deleted, one DELETE each): → every one gone".format(
                UPDATED_OBJECTS, n), secs("delete"))
        row("delete: API writes per object", per_object("delete"))
        row("API requests per object, all phases (reads, watches, Events included)",
            lambda r: f"{r['requests'] / n:.2f}")
        row("peak RSS (VmHWM), every process", mem_cell)
        row("peak RSS ÷ N, every process", lambda r: f"{memory(r) / n:,.1f} KiB per object")
        row("CPU time (user + system), every process", lambda r: " + ".join(
            f"{role} {s:.1f} s" for role, s in r["cpu"].items()))
        for phase in sorted(ran, key=phase_order):
            row(f"operator CPU per handled change, {phase}", phase_cpu(phase))
        row("operator CPU, all phases (per handled change)", cpu_total)
        row("CPU time, the control plane (kube-apiserver, etcd, kube-controller-manager)",
            lambda r: plane_cell(r["plane_cpu_by"]))
        row("handler calls: create / update / delete (beyond the one due)", lambda r: " / ".join(
            f"{r['calls'].get(k, 0):,}" + (f" (+{r['extra_calls'][k]})" if k in r["extra_calls"] else "")
            for k in ("create", "update", "delete")))
        row("WARN/ERROR log lines", lambda r: str(r["log_count"]))
    return lines


def table_row(name: str, fn, res: dict[str, dict], order: list[str]) -> str:
    """One markdown row: `fn` of each contender's figures, `–` where it has none."""
    cells = []
    for slug in order:
        try:
            cells.append(fn(res[slug]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError, StopIteration):
            cells.append("–")
    return f"| {name} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def phase_order(phase: str) -> tuple[int, float]:
    if phase.startswith("steady "):
        return 1, float(phase.split()[1].removesuffix("/s"))
    return {"create": 0, "update": 2, "resume": 3, "delete": 4}.get(phase, 5), 0.0


def cpu_per_change(cpu: dict[str, float], changes: int, unit: str = "changes") -> str:
    """CPU-ms per handled change (or object), per role and (with several) their sum."""
    parts = [f"{role} {s * 1000 / changes:.2f}" for role, s in cpu.items()]
    total = sum(cpu.values()) * 1000 / changes
    if len(parts) == 1:
        return f"**{total:.2f} ms** ({changes:,} {unit})"
    return f"{' + '.join(parts)} = **{total:.2f} ms** ({changes:,} {unit})"


def plane_cell(by: dict[str, float]) -> str:
    return " + ".join(f"{name} {s:.1f} s" for name, s in by.items()) + f" = {sum(by.values()):.1f} s"


def summary(sizes: dict[int, dict[str, dict]]) -> list[str]:
    """The closing lines, from the largest size that has both Kopf and Operon + Python: throughput,
    memory and CPU against Kopf; memory against the floor too (Kopf's own peak moves a lot from
    run to run)."""
    for n in sorted(sizes, reverse=True):
        res = sizes[n]
        if "kopf" in res and "operon-py" in res:
            ours, kopf, floor = res["operon-py"], res["kopf"], res.get("floor")
            lines = [f"throughput vs Kopf: {throughput(ours) / throughput(kopf):.1f}x",
                     f"memory vs Kopf: {memory(ours) / memory(kopf):.2f}x (peak RSS, N = {n:,}: "
                     f"Operon + Python SDK {mib(memory(ours))}, Kopf {mib(memory(kopf))})"]
            if floor is not None:
                lines.append(f"memory vs floor: {memory(ours) / memory(floor):.2f}x (the floor "
                             f"{mib(memory(floor))}; peak RSS ÷ N: Operon + Python SDK "
                             f"{memory(ours) / n:,.1f} KiB, Kopf {memory(kopf) / n:,.1f} KiB, "
                             f"the floor {memory(floor) / n:,.1f} KiB per object)")
            lines.append(f"cpu vs Kopf: {sum(kopf['cpu'].values()) / sum(ours['cpu'].values()):.1f}x "
                         f"(Kopf's CPU-seconds ÷ Operon + Python SDK's, all phases, N = {n:,}: "
                         f"{sum(kopf['cpu'].values()):.1f} s ÷ {sum(ours['cpu'].values()):.1f} s)")
            return lines
    return ["throughput vs Kopf: – (Kopf or Operon + Python SDK not run)",
            "memory vs Kopf: – (Kopf or Operon + Python SDK not run)",
            "cpu vs Kopf: – (Kopf or Operon + Python SDK not run)"]


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def latencies(values: list[float]) -> str:
    """p50 / p99 / max in ms."""
    if not values:
        return "–"
    return " / ".join(ms(v) for v in (percentile(values, 50), percentile(values, 99), max(values))) + " ms"


def steady_tables(sizes: dict[int, dict[str, dict]], order: list[str], seconds: float) -> list[str]:
    """--steady: per size a table with, per rate and contender, the two latencies, the changes
    handled against those sent, the contender's writes and CPU per handled change."""
    lines: list[str] = []
    for n, res in sizes.items():
        rates = sorted({rate for r in res.values() for rate in r.get("steady", {})})
        if not rates:
            continue
        lines += ["", f"Steady rate, N = {n:,}: each rate for {seconds:g} s, open loop, round-robin "
                      "over the objects, each change a new spec.value", "",
                  "| figure | " + " | ".join(CONTENDERS[s].title for s in order) + " |",
                  "|---|" + "---|" * len(order)]
        for rate in rates:
            def get(r: dict, rate: float = rate) -> dict:
                return r["steady"][rate]

            lines.append(f"| **{rate:g} changes/s** |" + " |" * len(order))
            lines.append(table_row("watch event → handler call, p50 / p99 / max",
                                   lambda r: latencies(get(r)["call"]), res, order))
            lines.append(table_row(
                "watch event → progress persisted, p50 / p99 / max",
                lambda r: latencies(get(r)["persist"]) + (
                    f" (no write after {get(r)['unpersisted']:,} of the calls)"
                    if get(r)["unpersisted"] else ""), res, order))
            lines.append(table_row(
                "changes handled / sent (the rest coalesced: latest state wins)",
                lambda r: f"{get(r)['handled']:,} / {get(r)['sent']:,} (sent in "
                          f"{get(r)['report']['seconds']:.1f} s, {get(r)['report']['late']:,} late"
                          + ("; calls matched by time: no generation in the ledger)"
                             if get(r)["by"] == "time" else ")"),
                res, order))
            lines.append(table_row("API writes per handled change", lambda r: (
                f"{get(r)['writes'] / get(r)['handled']:.2f}"), res, order))
            lines.append(table_row("operator CPU per handled change", lambda r: cpu_per_change(
                r["phase_cpu"][get(r)["key"]], get(r)["handled"]), res, order))
            lines.append(table_row("handler called again for a handled change", lambda r: str(
                sum(get(r)["extra"].values())), res, order))
    return lines


def usage_total(usage: dict[str, dict[str, int]], key: str) -> int:
    return sum(u.get(key, 0) for u in usage.values())


def usage_cell(usage: dict[str, dict[str, int]], key: str) -> str:
    parts = [f"{role} {mib(u[key])}" for role, u in usage.items()]
    if not parts:
        raise KeyError("no process was sampled")
    if len(parts) == 1:
        return parts[0]
    return " + ".join(parts) + f" = **{mib(usage_total(usage, key))}**"


def per_watched_object(r: dict) -> dict[str, float]:
    """KiB per watched object and role: (steady RSS − RSS on the empty namespace) ÷ N."""
    steady, empty = r["start"]["usage"], r["empty"]["usage"]
    return {role: (u["VmRSS"] - empty.get(role, {}).get("VmRSS", 0)) / r["n"]
            for role, u in steady.items()}


def seconds_cell(value: float | None) -> str:
    if value is None:
        raise KeyError("no figure")
    return f"{value:,.1f} s"


def scale_table(sizes: dict[int, dict[str, dict]], order: list[str], timeout: float) -> list[str]:
    """--scale: one table, a column per contender, the rows of every size one after the other."""
    lines = ["| figure | " + " | ".join(CONTENDERS[s].title for s in order) + " |",
             "|---|" + "---|" * len(order)]
    for n, res in sizes.items():
        size = next((r["object_bytes"] for r in res.values() if r.get("object_bytes")), None)
        lines.append(f"| **N = {n:,}**" + (f" (an object: {size:,} bytes of JSON as served)"
                                          if size else "") + " |" + " |" * len(order))

        def row(name: str, fn) -> None:
            lines.append(table_row(name, fn, res, order))

        def handled(r: dict) -> str:
            if r.get("skipped"):
                return r["skipped"]
            start = r["start"]
            if start["timed_out"]:
                return f"gave up after {timeout:,.0f} s, at {start['progress']:,} of {n:,}"
            return f"{start['handled']:,.1f} s ({n / start['handled']:,.0f}/s)"

        def idle(phase: str):
            def cell(r: dict) -> str:
                value = r[phase]["idle"]
                return "not idle before the time-out" if value is None else f"{value:,.1f} s"
            return cell

        def per_object(r: dict) -> str:
            per = per_watched_object(r)
            text = " + ".join(f"{role} {kib:,.2f} KiB" for role, kib in per.items())
            return text + (f" = **{sum(per.values()):,.2f} KiB**" if len(per) > 1 else "")

        def restart_peak(r: dict) -> str:
            peak = usage_total(r["restart"]["usage"], "VmHWM")
            steady = usage_total(r["start"]["usage"], "VmRSS")
            return f"{usage_cell(r['restart']['usage'], 'VmHWM')} ({peak / steady:.2f}× steady)"

        def writes(step: str, per: int):
            def cell(r: dict) -> str:
                w = r[step]["writes"]
                total = sum(w.values())
                by = ", ".join(f"{k} {v / per:.2f}" for k, v in sorted(w.items()))
                return f"{total / per:.2f}" + (f" ({by})" if by else "")
            return cell

        row("start-up: start → /readyz (Operon's cores)", lambda r: seconds_cell(r["start"]["ready"]))
        row("start-up: start → every object handled (its last write)", handled)
        row("start-up: start → idle", idle("start"))
        row("start-up: API writes per object", writes("start", n))
        row("start-up: peak RSS (VmHWM)", lambda r: usage_cell(r["start"]["usage"], "VmHWM"))
        row("steady RSS (VmRSS, idle after start-up)", lambda r: usage_cell(r["start"]["usage"], "VmRSS"))
        row("RSS on an empty namespace (VmRSS, idle)", lambda r: usage_cell(r["empty"]["usage"], "VmRSS"))
        row("memory per watched object: (steady − empty) ÷ N", per_object)
        row("restart, no change: start → /readyz", lambda r: seconds_cell(r["restart"]["ready"]))
        row("restart: start → idle", idle("restart"))
        row("restart: peak RSS (VmHWM)", restart_peak)
        row("restart: API writes / handler calls", lambda r: (
            f"{sum(r['restart']['writes'].values()):,} / {r['restart']['calls']:,}"))
        row("operator CPU, start-up (per object)", lambda r: cpu_per_change(
            r["phase_cpu"]["start-up"], n, "objects"))
        row("operator CPU, restart (per object)", lambda r: cpu_per_change(
            r["phase_cpu"]["restart"], n, "objects"))
        row("CPU time, the control plane (start-up + restart)", lambda r: plane_cell(r["plane_cpu_by"]))
        row("time spent: empty namespace / create / start-up / restart / clean-up", lambda r: " / ".join(
            human(r["steps"][k]) if k in r["steps"] else "–"
            for k in ("empty namespace", "create", "start-up", "restart", "clean-up")))
    return lines


def finished(r: dict) -> bool:
    return not r.get("skipped") and "start" in r and not r["start"]["timed_out"]


def scale_growth(sizes: dict[int, dict[str, dict]], order: list[str]) -> list[str]:
    """How each figure grows with N, per contender (with two sizes or more), as the value at each
    size and the exponent k of N^k between the smallest and the largest."""
    figures = (
        ("start → every object handled", lambda r: r["start"]["handled"], lambda v: f"{v:,.1f} s"),
        ("start → idle", lambda r: r["start"]["idle"], lambda v: f"{v:,.1f} s"),
        ("peak RSS", lambda r: usage_total(r["start"]["usage"], "VmHWM"), mib),
        ("steady RSS", lambda r: usage_total(r["start"]["usage"], "VmRSS"), mib),
        ("memory per watched object", lambda r: sum(per_watched_object(r).values()),
         lambda v: f"{v:,.2f} KiB"),
        ("restart → idle", lambda r: r["restart"]["idle"], lambda v: f"{v:,.1f} s"),
        ("restart peak RSS", lambda r: usage_total(r["restart"]["usage"], "VmHWM"), mib),
        ("operator CPU, start-up", lambda r: sum(r["phase_cpu"]["start-up"].values()),
         lambda v: f"{v:,.1f} CPU-s"),
    )
    lines = []
    for slug in order:
        runs = [(n, sizes[n][slug]) for n in sorted(sizes) if slug in sizes[n]
                and finished(sizes[n][slug])]
        if len(runs) < 2:
            continue
        for name, fn, fmt in figures:
            try:
                values = [(n, fn(r)) for n, r in runs]
            except (KeyError, TypeError):
                continue
            if any(v is None or v <= 0 for _, v in values):
                continue
            (n0, v0), (n1, v1) = values[0], values[-1]
            k = math.log(v1 / v0) / math.log(n1 / n0)
            lines.append(f"  {CONTENDERS[slug].title}: {name} "
                         + " → ".join(f"{fmt(v)} (N={n:,})" for n, v in values) + f": ~N^{k:.2f}")
    return (["How the figures grow with N (the value at each size; k in N^k from the smallest "
             "to the largest size):"] + lines) if lines else []


def scale_summary(sizes: dict[int, dict[str, dict]], order: list[str], timeout: float) -> list[str]:
    """The closing lines of --scale: memory per watched object and the relist peak against the
    goals (README), an extrapolation to 1,000,000 objects, and the contenders that gave up."""
    lines = []
    for slug in order:
        runs = [(n, sizes[n][slug]) for n in sorted(sizes) if slug in sizes[n]]
        done = [(n, r) for n, r in runs if finished(r)]
        title = CONTENDERS[slug].title
        given_up = [n for n, r in runs if not finished(r)]
        if given_up:
            largest = f"its figures are at N = {done[-1][0]:,}, the largest it finished" if done else \
                "no smaller size in this run"
            lines.append(f"{title}: did not finish N = {', '.join(f'{n:,}' for n in given_up)} "
                         f"within {timeout:,.0f} s; {largest}")
        if not done:
            continue
        n, r = done[-1]
        per = per_watched_object(r)
        size = (r.get("object_bytes") or 0) / 1024
        steady = usage_total(r["start"]["usage"], "VmRSS")
        empty = usage_total(r["empty"]["usage"], "VmRSS")
        peak = usage_total(r["restart"]["usage"], "VmHWM") if "restart" in r else None
        core = per.get("core")
        text = (f"{title} (N = {n:,}): {sum(per.values()):,.2f} KiB per watched object"
                + (f", the core {core:,.2f} KiB (the object is {size:,.2f} KiB of JSON: "
                   f"{core - size:+,.2f} KiB beyond it; goal ≤ 1 KiB)" if core is not None else "")
                + (f"; relist peak {peak / steady:.2f}× steady RSS (goal ≤ 1.5×)" if peak else "")
                + f"; at 1,000,000 objects by linear extrapolation: steady RSS ≈ "
                  f"{mib(empty + sum(per.values()) * 1_000_000)}, start-up ≈ "
                  f"{human(r['start']['handled'] * 1_000_000 / n)}")
        lines.append(text)
    return lines


def scale_broken(n: int, r: dict) -> list[str]:
    """What an Operon contender broke at --scale: more than 2 writes per created object in its
    start-up, or any write or handler call in a restart with no change."""
    out: list[str] = []
    if not finished(r):
        return out
    start = sum(r["start"]["writes"].values())
    if start > PROMISED_WRITES["create"] * n:
        out.append(f"{r['title']}, N={n}, start-up: {start} API writes for {n} objects")
    restart = r.get("restart")
    if restart and (restart["writes"] or restart["calls"]):
        out.append(f"{r['title']}, N={n}, restart with no change: API writes {restart['writes']}, "
                   f"handler calls {restart['calls']}; ledger {r['ledger']}")
    return out


def sharding_summary(sizes: dict[int, dict[str, dict]]) -> list[str]:
    """Per size: each shard's peak memory against one core's, and the throughputs."""
    lines = []
    for n, res in sizes.items():
        one, sharded = res.get("operon-rust"), res.get("operon-shards")
        if one is None or sharded is None or "core" not in one["peak"]:
            continue
        single = one["peak"]["core"]
        shards = {role: kib for role, kib in sharded["peak"].items() if role.startswith("shard")}
        per = ", ".join(f"{role} {mib(kib)} ({kib / single:.2f}×)" for role, kib in shards.items())
        lines.append(f"N = {n:,}: peak RSS per shard vs one core ({mib(single)}): {per}; "
                     f"throughput {throughput(sharded):,.0f}/s vs {throughput(one):,.0f}/s "
                     f"({throughput(sharded) / throughput(one):.2f}×)")
    return lines


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, action="append",
                   help="a size (repeatable; default: 1000 and 10000, with --steady 1000)")
    p.add_argument("--contender", action="append", choices=list(CONTENDERS),
                   help="run only these (repeatable; default: all; --steady: all but the ceiling; "
                        "--scale: kopf, operon-py, operon-rust, floor)")
    p.add_argument("--stall", type=float, default=120, help="give up after this long without progress")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when an Operon contender breaks a promise (more API writes than "
                        "PROMISED_WRITES, a handler called again): the smoke test")
    p.add_argument("--steady", action="store_true",
                   help="after the create phase, changes at steady rates instead of the update "
                        "and resume phases")
    p.add_argument("--steady-rate", type=float, action="append",
                   help="changes per second (repeatable; implies --steady; default: 20, 100, 300)")
    p.add_argument("--steady-seconds", type=float,
                   help=f"how long each rate lasts (implies --steady; default {STEADY_SECONDS:g})")
    p.add_argument("--scale", type=int, action="append",
                   help="the size mode at N objects (repeatable): start-up, memory, restart")
    p.add_argument("--scale-timeout", type=float, default=SCALE_TIMEOUT,
                   help="give a contender's start-up (and restart) at one size up after this long")
    p.add_argument("--pin", action="store_true",
                   help="the plane on one CPU, each contender on the other (taskset)")
    p.add_argument("--core-arg", action="append", help="an extra argument for `operon run`")
    p.add_argument("--sdk-arg", action="append", help="an extra argument for the SDK's `kopf run`")
    p.add_argument("--workdir", required=True)
    for name in ("core-bin", "handler-bin", "floor-bin", "kopf-python", "sdk-python", "sdk-src",
                 "kubectl", "kubeconfig", "audit-dir", "plane-dir", "commit"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args()
    args.steady = bool(args.steady or args.steady_rate or args.steady_seconds is not None)
    args.steady_rates = (args.steady_rate or list(STEADY_RATES)) if args.steady else []
    args.steady_seconds = args.steady_seconds if args.steady_seconds is not None else STEADY_SECONDS
    if args.scale and (args.objects or args.steady):
        p.error("--scale is a mode of its own: not with --objects or --steady")
    if any(n < 1 for n in args.objects or args.scale or []):
        p.error("sizes must be at least 1")
    if any(r <= 0 for r in args.steady_rates) or args.steady_seconds <= 0:
        p.error("--steady-rate and --steady-seconds must be positive")
    if args.scale and "ceiling" in (args.contender or []):
        p.error("--scale: the ceiling has no watch, hence no start-up to measure")
    if args.scale:
        args.sizes = sorted(set(args.scale))
        args.order = args.contender or ["kopf", "operon-py", "operon-rust", "floor"]
    else:
        args.sizes = args.objects or ([STEADY_OBJECTS] if args.steady else [1000, 10000])
        args.order = args.contender or [c for c in CONTENDERS if not args.steady or c != "ceiling"]
    return args


def run_sizes(args: argparse.Namespace, pin: Pinning | None) -> tuple[dict, Context | None]:
    """Every size, every contender: the phases (with --steady, its rates) or --scale's steps.
    Returns the figures and the last context."""
    sizes: dict[int, dict[str, dict]] = {}
    budget = Budget(args.sizes, args.order, args.scale_timeout) if args.scale else None
    gave_up: dict[str, int] = {}  # --scale: contender -> the size it did not finish
    ctx = None
    try:
        for n in args.sizes:
            args.objects = n
            ctx = Context(args, pin)
            sizes[n] = {}
            for i, slug in enumerate(args.order):
                cls = CONTENDERS[slug]
                if budget is not None:
                    budget.announce(args.sizes.index(n) * len(args.order) + i)
                    if slug in gave_up:
                        sizes[n][slug] = {"title": cls.title, "slug": slug, "promise": cls.promise,
                                          "n": n, "skipped": f"not run: gave up at N = "
                                          f"{gave_up[slug]:,}", "log_top": []}
                        continue
                    r = run_scale(ctx, cls, budget)
                    if not finished(r):
                        gave_up[slug] = n
                else:
                    r = run_contender(ctx, cls)
                r["n"] = n
                r["log_count"], r["log_top"] = log_findings(
                    [os.path.join(args.workdir, f) for f in os.listdir(args.workdir)
                     if f.startswith(r["namespace"]) and f.endswith(".log")])
                sizes[n][slug] = r
                ctx.delete_namespaces()
                write_tables(args, sizes)
            log(f"N={n} done; the table so far: {os.path.join(args.workdir, 'table.md')}")
    finally:
        if ctx is not None:
            ctx.delete_namespaces()
    return sizes, ctx


def tables(args: argparse.Namespace, sizes: dict[int, dict[str, dict]]) -> list[str]:
    if args.scale:
        return scale_table(sizes, args.order, args.scale_timeout)
    return table(sizes, args.order) + steady_tables(sizes, args.order, args.steady_seconds)


def write_tables(args: argparse.Namespace, sizes: dict[int, dict[str, dict]]) -> None:
    """What is measured so far, in case a later size cannot complete."""
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write("\n".join(tables(args, sizes)) + "\n")


def main() -> int:
    args = parse_args()

    def on_signal(signum, _frame):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        log(f"{signal.Signals(signum).name}: stopping what was started, deleting the namespaces")
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    started = time.time()
    with open("/proc/loadavg") as f:
        load_avg = f.read().split()[0]
    pin = None
    try:
        if args.pin:
            pin = Pinning(args.plane_dir, args.workdir)
            log(pin.describe({}))
        sizes, ctx = run_sizes(args, pin)
    except Failed as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        if pin is not None:
            pin.restore()

    status, version = ctx.kube.request("GET", "/version") if ctx else (0, {})
    plane = (f"kube-apiserver {version.get('gitVersion')} + etcd on 127.0.0.1 (etcd without fsync)"
             if status == 200 else "?")
    print()
    for line in tables(args, sizes):
        print(line)
    print()
    print(f"machine: {machine()}; load average at the start: {load_avg}; control plane: {plane}; "
          f"commit {args.commit}; whole run {time.time() - started:.0f} s")
    if pin is not None:
        print(pin.describe(sizes))
    for n, res in sizes.items():
        for slug, r in res.items():
            for line in r["log_top"]:
                print(f"  N={n} {r['title']}: {line}")
    print(f"logs: {args.workdir}")
    check = scale_broken if args.scale else broken_promises
    broken = [line for n, res in sizes.items() for r in res.values() if r["promise"]
              for line in check(n, r)]
    if broken:
        print()
        print("promises broken (README: 2 API writes per created object, 1 per later change, "
              "none in a restart with no change, no handler called twice):")
        for line in broken:
            print(f"  {line}")
    print()
    if args.scale:
        for line in scale_growth(sizes, args.order) + scale_summary(sizes, args.order,
                                                                  args.scale_timeout):
            print(line)
    else:
        for line in summary(sizes) + sharding_summary(sizes):
            print(line)
    if broken and args.check:
        for line in broken:
            log(f"FAILED (--check): {line}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
