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
import collections
import datetime
import glob
import http.client
import json
import os
import platform
import random
import re
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.error
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

    def request(self, method: str, path: str, body=None, accept: str = "application/json"):
        """Returns (status, parsed JSON body or text). Retries once on a dropped connection."""
        data = None if body is None else json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": accept,
            "User-Agent": USER_AGENT,
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
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


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def record_pid(ctx: "Context", pid: int, exe: str) -> None:
    with open(os.path.join(ctx.workdir, "pids"), "a") as f:
        f.write(f"{pid} {exe}\n")


class Proc:
    """A process this driver started: its log file, and its pid recorded for run.sh's trap."""

    def __init__(self, name: str, argv: list[str], ctx: "Context", env: dict | None = None,
                 stdout_pipe: bool = False):
        self.name = name
        self.log_path = os.path.join(ctx.workdir, f"{name}.log")
        self.log_file = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            argv,
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
        self.cpu: dict[str, float] = collections.defaultdict(float)

    def proc_name(self, role: str) -> str:
        return f"{self.namespace}-{role.replace(' ', '-')}"

    def start(self) -> None:
        raise NotImplementedError

    def sample(self) -> None:
        """Peak RSS and CPU of the running processes (called before every stop)."""
        for role, proc in self.procs.items():
            try:
                hwm = proc_status(proc.pid).get("VmHWM", 0)
                self.cpu[role] += proc_cpu_seconds(proc.pid)
            except OSError:
                continue
            self.peak[role] = max(self.peak.get(role, 0), hwm)

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
        out = []
        try:
            with open(self.ledger) as f:
                for line in f:
                    if line.startswith("{"):
                        entry = json.loads(line)
                        # An update handler with a field has the field in its id (as Kopf).
                        kind = {"created": "create", "value_changed/spec.value": "update",
                                "deleted": "delete"}.get(entry.get("handler"), "?")
                        out.append((kind, entry.get("name"), float(entry["ts"])))
                    elif line.strip():
                        kind, name, ts = line.split()
                        out.append((kind, name, float(ts)))
        except OSError:
            pass
        return out


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

    def start(self) -> None:
        self.runs += 1
        self.metrics_url = None
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
    status, body = ctx.kube.request(
        "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
    )
    if status != 200:
        raise Failed(f"listing the objects: {status} {str(body)[:300]}")
    return [item.get("metadata", {}) for item in body.get("items") or []]


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


def delete_all(ctx: "Context", namespace: str) -> None:
    status, body = ctx.kube.request(
        "DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
    if status != 200:
        raise Failed(f"deleting the objects: {status} {str(body)[:300]}")


# --- one contender, one size ---------------------------------------------------------------------


def run_contender(ctx: "Context", cls: type[Contender]) -> dict:
    """All phases of one contender at one size, in a fresh namespace; returns its figures."""
    n = ctx.objects
    namespace = ctx.create_namespace(cls.slug)
    c = cls(ctx, namespace)
    r: dict = {"title": c.title, "slug": c.slug, "namespace": namespace, "windows": {},
               "promise": c.promise, "ledger": c.ledger}
    plane = plane_pids(ctx.plane_dir)
    audit_mark = audit_position(ctx.audit_dir)

    def window(phase: str, t0: float, t1: float) -> None:
        r["windows"][phase] = (t0, t1)

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
            r["plane_cpu"] = plane_cpu_delta(plane, cpu0)
            return finish(ctx, c, r, audit_mark)
        t1 = wait_until(ctx, c, "create", with_value(0))
        window("create", t0, t1)
        time.sleep(1.0)  # trailing writes (Events) land in the window of the phase that made them

        # update (live): the contender runs; a sample of objects gets spec.value = 1.
        m = min(n, UPDATED_OBJECTS)
        t0 = time.time()
        r["update_written"] = load(ctx, namespace, ["set-value", "--count", str(m), "--value", "1"],
                                   os.path.join(ctx.workdir, f"{namespace}.updated"))
        t1 = wait_until(ctx, c, "update", with_value(1, set(r["update_written"])))
        window("update", t0, t1)
        time.sleep(1.0)

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
        r["plane_cpu"] = plane_cpu_delta(plane, cpu0)
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
        return finish(ctx, c, r, audit_mark)
    finally:
        if c.procs:
            c.stop()


def finish(ctx: "Context", c: Contender, r: dict, audit_mark) -> dict:
    """Reads the audit log and the ledger into the figures; checks every handler call happened."""
    n = ctx.objects
    r["peak"], r["cpu"], r["runs"] = dict(c.peak), dict(c.cpu), c.runs
    r["logs"] = {}
    time.sleep(0.5)  # the audit log is written asynchronously
    t_end = max(t1 for _, t1 in r["windows"].values())
    everything = audit_events(ctx.audit_dir, c.namespace, audit_mark)
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
    m = len(r["update_written"])
    expected = {"create": n, "update": 2 * m, "delete": m}  # m == n up to UPDATED_OBJECTS
    # Latency: the API server's receipt of the load tool's PATCH of spec.value (audit log) -> the
    # first `update` handler call for that object after it (the handler's own clock; same host).
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
    missing = {k: (r["calls"].get(k, 0), v) for k, v in expected.items() if r["calls"].get(k, 0) < v}
    if missing:
        raise Failed(f"{c.title}: handler calls missing (made, expected): {missing}; "
                     f"ledger {c.ledger}")
    # Calls beyond the one due per object and change: create 1 for every object; update 2 (the
    # live change, the change while down) for each changed object; delete 1 for each.
    sample = set(r["update_written"])
    due = {"create": lambda name: 1, "update": lambda name: 2 if name in sample else 0,
           "delete": lambda name: 1}
    per_object = collections.Counter((kind, name) for kind, name, _ in calls)
    r["repeated"] = {(kind, name): made - due[kind](name)
                     for (kind, name), made in sorted(per_object.items())
                     if kind in due and made > due[kind](name)}
    r["extra_calls"] = dict(collections.Counter(
        kind for (kind, _), extra in r["repeated"].items() for _ in range(extra)))
    return r


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
    def __init__(self, args: argparse.Namespace):
        self.objects: int = args.objects
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
        with open("/proc/loadavg") as f:
            self.load_at_start = f.read().split()[0]

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


def plane_pids(plane_dir: str) -> dict[str, int]:
    pids = {}
    for name in ("kube-apiserver", "etcd"):
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


def plane_cpu_delta(plane: dict[str, int], before: dict[str, float]) -> float | None:
    after = plane_cpu(plane)
    if plane and before.keys() == after.keys() == plane.keys():
        return sum(after[k] - before[k] for k in plane)
    return None  # a test running alongside restarted the API server: no figure


def audit_position(audit_dir: str) -> tuple[int, int] | None:
    """(inode, size) of the live audit log now: later reads start there."""
    try:
        st = os.stat(os.path.join(audit_dir, "audit.log"))
        return st.st_ino, st.st_size
    except OSError:
        return None


def audit_events(audit_dir: str, namespace: str, mark: tuple[int, int] | None) -> list[dict]:
    """Every request in `namespace` in the audit log since `mark` (a rotated file too), once per
    auditID (watches log ResponseStarted and ResponseComplete: the first one seen is kept)."""
    seen: dict[str, dict] = {}
    needle = f'"namespace":"{namespace}"'
    for path in sorted(glob.glob(os.path.join(audit_dir, "audit*.log"))):
        try:
            f = open(path, errors="replace")
        except OSError as e:
            raise Failed(f"cannot read the audit log {path}: {e}") from e
        with f:
            st = os.fstat(f.fileno())
            if mark and st.st_ino == mark[0] and st.st_size >= mark[1]:
                f.seek(mark[1])
            for line in f:
                if needle not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if (event.get("objectRef") or {}).get("namespace") != namespace:
                    continue
                seen.setdefault(event["auditID"], event)
    return list(seen.values())


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
        cells = []
        for slug in order:
            try:
                cells.append(fn(res[slug]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
                cells.append("–")
        lines.append(f"| {name} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    for n, res in sizes.items():
        kopf, floor, ceiling = res.get("kopf"), res.get("floor"), res.get("ceiling")

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
            if kopf is not None and r is not kopf:
                text += f" ({total / memory(kopf):.2f}× Kopf)"
            return text

        lines.append(f"| **N = {n:,}** |" + " |" * len(order))
        row("objects fully handled per second (create phase: start → last write)", ratios)
        row("create: API writes per object", per_object("create"))
        row("update (live, {:,} objects): watch event → handler call, p50 / p99".format(
            min(n, UPDATED_OBJECTS)),
            lambda r: " / ".join(f"{percentile(r['latency'], p) * 1000:,.0f} ms" for p in (50, 99)))
        row("update: API writes per object", per_object("update"))
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
        row("CPU time (user + system), every process", lambda r: " + ".join(
            f"{role} {s:.1f} s" for role, s in r["cpu"].items()))
        row("CPU time, kube-apiserver + etcd", lambda r: f"{r['plane_cpu']:.1f} s")
        row("handler calls: create / update / delete (beyond the one due)", lambda r: " / ".join(
            f"{r['calls'].get(k, 0):,}" + (f" (+{r['extra_calls'][k]})" if k in r["extra_calls"] else "")
            for k in ("create", "update", "delete")))
        row("WARN/ERROR log lines", lambda r: str(r["log_count"]))
    return lines


def summary(sizes: dict[int, dict[str, dict]]) -> list[str]:
    """The two closing lines, from the largest size that has both Kopf and Operon + Python."""
    for n in sorted(sizes, reverse=True):
        res = sizes[n]
        if "kopf" in res and "operon-py" in res:
            ours, kopf = res["operon-py"], res["kopf"]
            return [f"throughput vs Kopf: {throughput(ours) / throughput(kopf):.1f}x",
                    f"memory vs Kopf: {memory(ours) / memory(kopf):.2f}x"]
    return ["throughput vs Kopf: – (Kopf or Operon + Python SDK not run)",
            "memory vs Kopf: – (Kopf or Operon + Python SDK not run)"]


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, action="append",
                   help="a size (repeatable; default: 1000 and 10000)")
    p.add_argument("--contender", action="append", choices=list(CONTENDERS),
                   help="run only these (repeatable; default: all)")
    p.add_argument("--stall", type=float, default=120, help="give up after this long without progress")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when an Operon contender breaks a promise (more API writes than "
                        "PROMISED_WRITES, a handler called again): the smoke test")
    p.add_argument("--core-arg", action="append", help="an extra argument for `operon run`")
    p.add_argument("--sdk-arg", action="append", help="an extra argument for the SDK's `kopf run`")
    p.add_argument("--workdir", required=True)
    for name in ("core-bin", "handler-bin", "floor-bin", "kopf-python", "sdk-python", "sdk-src",
                 "kubectl", "kubeconfig", "audit-dir", "plane-dir", "commit"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args()
    sizes_wanted = args.objects or [1000, 10000]
    if any(n < 1 for n in sizes_wanted):
        p.error("--objects must be at least 1")

    def on_signal(signum, _frame):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        log(f"{signal.Signals(signum).name}: stopping what was started, deleting the namespaces")
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    order = args.contender or list(CONTENDERS)
    sizes: dict[int, dict[str, dict]] = {}
    started = time.time()
    ctx = None
    try:
        for n in sizes_wanted:
            args.objects = n
            ctx = Context(args)
            load_avg = ctx.load_at_start
            sizes[n] = {}
            for slug in order:
                r = run_contender(ctx, CONTENDERS[slug])
                r["n"] = n
                r["log_count"], r["log_top"] = log_findings(
                    [os.path.join(args.workdir, f) for f in os.listdir(args.workdir)
                     if f.startswith(r["namespace"]) and f.endswith(".log")])
                sizes[n][slug] = r
                ctx.delete_namespaces()
                with open(os.path.join(args.workdir, "table.md"), "w") as f:
                    f.write("\n".join(table(sizes, order)) + "\n")
            # What is measured so far, in case a later size cannot complete.
            with open(os.path.join(args.workdir, "table.md"), "w") as f:
                f.write("\n".join(table(sizes, order)) + "\n")
            log(f"N={n} done; the table so far: {os.path.join(args.workdir, 'table.md')}")
    except Failed as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        if ctx is not None:
            ctx.delete_namespaces()

    status, version = ctx.kube.request("GET", "/version")
    plane = (f"kube-apiserver {version.get('gitVersion')} + etcd on 127.0.0.1 (etcd without fsync)"
             if status == 200 else "?")
    print()
    for line in table(sizes, order):
        print(line)
    print()
    print(f"machine: {machine()}; load average at the start: {load_avg}; control plane: {plane}; "
          f"commit {args.commit}; whole run {time.time() - started:.0f} s")
    for n, res in sizes.items():
        for slug, r in res.items():
            for line in r["log_top"]:
                print(f"  N={n} {r['title']}: {line}")
    print(f"logs: {args.workdir}")
    broken = [line for n, res in sizes.items() for r in res.values() if r["promise"]
              for line in broken_promises(n, r)]
    if broken:
        print()
        print("promises broken (README: 2 API writes per created object, 1 per later change, "
              "no handler called twice):")
        for line in broken:
            print(f"  {line}")
    print()
    for line in summary(sizes):
        print(line)
    for line in sharding_summary(sizes):
        print(line)
    if broken and args.check:
        for line in broken:
            log(f"FAILED (--check): {line}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
