#!/usr/bin/env python3
"""The benchmark driver behind tests/bench/run.sh (Python standard library only).

For each contender (today: the Operon core with the Rust example handler service) and each mode it
creates a fresh namespace; "live" starts the contender's processes, then creates N objects as fast
as the API server takes them; "backlog" creates the objects first, then starts the processes. It
polls until every object is fully handled and measures what tests/bench/README.md describes. It prints one markdown table and exits 0 -- a figure, not a test: it never fails on a
timing. It exits 1 only when the run could not complete (objects never finished, a process died).

Every process it starts is recorded in WORKDIR/pids and every namespace in WORKDIR/namespaces
before anything else happens to them, so run.sh's trap can clean up even if this driver is killed.
This driver cleans up by itself on normal exit, on an exception, and on SIGTERM/SIGINT/SIGHUP.
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
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

# The driver's own requests carry this User-Agent, so the audit log tells them apart from the
# contender's (which run as the same user, operon-admin, from the same kubeconfig).
USER_AGENT = "operon-bench/1"
WRITE_VERBS = ("create", "patch", "update", "delete", "deletecollection")
POLL_INTERVAL = 0.5
CREATE_THREADS = 16


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


class Proc:
    """A process this driver started: its log file, and its pid recorded for run.sh's trap."""

    def __init__(self, name: str, argv: list[str], ctx: "Context", stdout_pipe: bool = False):
        workdir = ctx.workdir
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log_file = open(self.log_path, "wb")
        env = dict(os.environ, NO_COLOR="1", KUBECONFIG=ctx.kubeconfig)
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self.log_file,
            stderr=self.log_file,
            env=env,
            start_new_session=True,  # a Ctrl-C reaches the driver, which stops us in order
        )
        self.pid = self.popen.pid
        with open(os.path.join(workdir, "pids"), "a") as f:
            f.write(f"{self.pid} {argv[0]}\n")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def status(self) -> dict[str, int]:
        """VmHWM/VmRSS (KiB) from /proc/PID/status."""
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0])
        return out

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self, grace: float = 15.0) -> None:
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


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


# --- contenders ----------------------------------------------------------------------------------


class Contender:
    """One way of running the handlers. Issue 10 adds Kopf, Operon + the Python SDK, a plain kube-rs
    controller and a raw PATCH loop as further subclasses."""

    slug = "?"
    title = "?"
    procs: dict[str, Proc]
    metrics_url: str | None = None
    log_prefix = ""  # of the processes' log files in the work directory; set per run

    def start(self, ctx: "Context", namespace: str) -> None:
        raise NotImplementedError

    def own_request(self, event: dict) -> bool:
        """Whether an audit event (already known to be in this contender's namespace) is the
        contender's own request: not the driver's (USER_AGENT) and not kubectl's."""
        agent = event.get("userAgent", "")
        return not agent.startswith(USER_AGENT) and not agent.startswith("kubectl/")

    def stop(self) -> None:
        # The component that talks to the API server first, the handler service after it.
        for proc in reversed(list(self.procs.values())):
            proc.stop()


class OperonRust(Contender):
    slug = "operon-rust"
    title = "Operon + Rust handler"

    def start(self, ctx: "Context", namespace: str) -> None:
        self.procs = {}
        handler_args = []
        for i in range(1, ctx.handlers + 1):
            handler_args += ["--handler", f"create:h{i}"]
        handler = Proc(
            f"{self.log_prefix}handler",
            [ctx.handler_bin, "--listen", "127.0.0.1:0", "--resource", RESOURCE, *handler_args],
            ctx, stdout_pipe=True,
        )
        self.procs["handler service"] = handler
        line = read_line(handler, 30)
        m = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)", line)
        if not m:
            raise Failed(f"the handler service printed {line!r}, not `listening on 127.0.0.1:PORT`")
        port = free_port()
        core = Proc(
            f"{self.log_prefix}core",
            [ctx.core_bin, "run", "--handler", f"http://{m.group(1)}", "-n", namespace,
             "--http", f"127.0.0.1:{port}", *ctx.core_args],
            ctx,
        )
        self.procs["core"] = core
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 120
        while True:
            if not core.alive():
                raise Failed(f"the core exited during start-up; its log:\n{core.tail()}")
            if not handler.alive():
                raise Failed(f"the handler service exited; its log:\n{handler.tail()}")
            try:
                if http_get(f"http://127.0.0.1:{port}/readyz", 2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Failed(f"the core was not ready within 120s; its log:\n{core.tail()}")
            time.sleep(0.2)


CONTENDERS = {c.slug: c for c in (OperonRust,)}


# --- one run -------------------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace):
        self.objects: int = args.objects
        self.handlers: int = args.handlers
        self.workdir: str = args.workdir
        self.kubeconfig: str = args.kubeconfig
        self.core_bin: str = args.core_bin
        self.handler_bin: str = args.handler_bin
        self.core_args: list[str] = args.core_arg or []
        self.audit_dir: str = args.audit_dir
        self.plane_dir: str = args.plane_dir
        self.timeout: float = args.timeout
        self.stall: float = args.stall
        self.kube = Kube(args.kubectl, args.kubeconfig)
        self.namespaces: list[str] = []
        with open("/proc/loadavg") as f:
            self.load_at_start = f.read().split()[0]

    def create_namespace(self, slug: str) -> str:
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"bench-{slug}-{time.strftime('%H%M%S')}-{suffix}"
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


def is_done(meta: dict) -> bool:
    annotations = meta.get("annotations") or {}
    if DIFFBASE not in annotations:
        return False
    return not any(k.startswith(PREFIX + "/") and k not in NOT_PROGRESS for k in annotations)


def create_objects(ctx: Context, namespace: str, created: dict[str, float], errors: list[str]) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    def one(i: int) -> None:
        name = f"obj-{i:05d}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                "metadata": {"name": name}, "spec": {"index": i}}
        for _ in range(5):
            status, answer = ctx.kube.request("POST", path, body)
            if status == 201:
                created[name] = time.time()
                return
            if status == 429 or status >= 500:
                time.sleep(0.2)
                continue
            break
        errors.append(f"{name}: {status} {str(answer)[:200]}")

    with concurrent.futures.ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(one, range(ctx.objects)))


def list_done(ctx: Context, namespace: str) -> tuple[int, int, list[dict]]:
    """(objects listed, objects fully handled, metadata of the unfinished ones)."""
    status, body = ctx.kube.request(
        "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
    )
    if status != 200:
        raise Failed(f"listing the objects: {status} {str(body)[:300]}")
    items = body.get("items") or []
    unfinished = [item.get("metadata", {}) for item in items if not is_done(item.get("metadata", {}))]
    return len(items), len(items) - len(unfinished), unfinished


def parse_time(value: str) -> float:
    value = value.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in value else "%Y-%m-%dT%H:%M:%S"
    return datetime.datetime.strptime(value, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


def audit_events(audit_dir: str, namespace: str) -> list[dict]:
    """Every request in `namespace` in the audit log (rotated files included), once per auditID."""
    seen: dict[str, dict] = {}
    needle = f'"namespace":"{namespace}"'
    for path in sorted(glob.glob(os.path.join(audit_dir, "audit*.log"))):
        try:
            f = open(path, errors="replace")
        except OSError as e:
            raise Failed(f"cannot read the audit log {path}: {e}") from e
        with f:
            for line in f:
                if needle not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if (event.get("objectRef") or {}).get("namespace") != namespace:
                    continue
                # Watches log ResponseStarted and later ResponseComplete: keep the first stage seen.
                seen.setdefault(event["auditID"], event)
    return list(seen.values())


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


def log_findings(path: str) -> tuple[int, int, list[str]]:
    """(WARN lines, ERROR lines, the most frequent of their messages) of a tracing-fmt log."""
    warns = errors = 0
    messages: collections.Counter[str] = collections.Counter()
    level = re.compile(r"^\S+\s+(WARN|ERROR)\s+(.*)$")
    with open(path, errors="replace") as f:
        for line in f:
            m = level.match(line)
            if not m:
                continue
            if m.group(1) == "WARN":
                warns += 1
            else:
                errors += 1
            # Group by message shape: drop object names and numbers.
            shape = re.sub(r"obj-\d+", "obj-N", m.group(2))
            shape = re.sub(r"\d+(\.\d+)?", "N", shape)
            messages[f"{m.group(1)} {shape[:300]}"] += 1
    return warns, errors, [f"{n}x {msg}" for msg, n in messages.most_common(5)]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def run_phase(ctx: Context, contender: Contender, mode: str) -> dict:
    """One measured run of one contender in a fresh namespace; returns its figures (with `failure`
    when the objects did not all finish).

    mode "live": start the contender, wait until it is ready, then create the objects (t0 = the
    first creation). mode "backlog": create the objects with nothing running, then start the
    contender (t0 = its start), as after an operator's downtime or first deployment."""
    r: dict = {"title": contender.title, "mode": mode}
    namespace = ctx.create_namespace(f"{contender.slug}-{mode}")
    r["namespace"] = namespace
    contender.log_prefix = f"{contender.slug}-{mode}-"
    plane = plane_pids(ctx.plane_dir)
    created: dict[str, float] = {}
    create_errors: list[str] = []
    creator = threading.Thread(target=create_objects, args=(ctx, namespace, created, create_errors))
    creator.daemon = True

    if mode == "backlog":
        log(f"{contender.title}, {mode}: namespace {namespace}; creating {ctx.objects} objects")
        creator.start()
        creator.join()
        if create_errors:
            raise Failed(f"{len(create_errors)} objects could not be created, e.g. {create_errors[:3]}")
        log(f"{contender.title}, {mode}: starting")
        plane_cpu0 = plane_cpu(plane)
        t0 = time.time()
        contender.start(ctx, namespace)
        r["t_ready"] = time.time() - t0
        t_created: float | None = t0
    else:
        log(f"{contender.title}, {mode}: namespace {namespace}; starting")
        contender.start(ctx, namespace)
        log(f"{contender.title}, {mode}: ready; creating {ctx.objects} objects "
            f"with {CREATE_THREADS} threads")
        plane_cpu0 = plane_cpu(plane)
        t0 = time.time()
        creator.start()
        t_created = None

    last_done, last_progress = -1, time.monotonic()
    deadline = time.monotonic() + ctx.timeout
    first = True
    while True:
        if not first:
            time.sleep(POLL_INTERVAL)
        first = False
        listed, done, unfinished = list_done(ctx, namespace)
        now = time.time()
        if t_created is None and not creator.is_alive():
            t_created = max(created.values(), default=now)
            log(f"created {len(created)} objects in {t_created - t0:.1f}s"
                + (f"; {len(create_errors)} creations failed" if create_errors else ""))
        if create_errors and t_created is not None:
            raise Failed(f"{len(create_errors)} objects could not be created, e.g. {create_errors[:3]}")
        for role, proc in contender.procs.items():
            if not proc.alive():
                raise Failed(f"the {role} exited (code {proc.popen.returncode}); its log:\n{proc.tail()}")
        if done != last_done:
            last_done, last_progress = done, time.monotonic()
            log(f"{done}/{ctx.objects} handled")
        if t_created is not None and done == ctx.objects:
            r["t_done"] = now - t0
            break
        stalled = time.monotonic() - last_progress > ctx.stall
        if stalled or time.monotonic() > deadline:
            why = f"no progress for {ctx.stall:.0f}s" if stalled else f"not done after {ctx.timeout:.0f}s"
            sample = [
                {"name": m.get("name"),
                 "annotations": {k: v for k, v in (m.get("annotations") or {}).items()
                                 if k.startswith(PREFIX + "/")}}
                for m in unfinished[:3]
            ]
            r["failure"] = (f"{why}: {done}/{ctx.objects} fully handled ({listed} listed); "
                            f"unfinished e.g. {json.dumps(sample)}")
            log(r["failure"])
            break
    r["t_created"] = (t_created or time.time()) - t0

    # Let trailing writes land (they count), then read everything before stopping anything.
    time.sleep(2.0)
    t_end = time.time()
    r["cpu"] = {role: p.cpu_seconds() for role, p in contender.procs.items()}
    plane_cpu1 = plane_cpu(plane)
    if plane and plane_cpu0.keys() == plane_cpu1.keys() == plane.keys():
        r["plane_cpu"] = sum(plane_cpu1[name] - plane_cpu0[name] for name in plane)
    else:  # not found, or a test running alongside restarted the API server: no figure
        log("cannot tell the CPU time of kube-apiserver + etcd (restarted during the run?)")
    r["rss"] = {role: p.status() for role, p in contender.procs.items()}
    if contender.metrics_url:
        try:
            r["metrics"] = parse_metrics(http_get(contender.metrics_url)[1])
        except OSError as e:
            log(f"cannot read {contender.metrics_url}: {e}")
    contender.stop()
    r["logs"] = {role: log_findings(p.log_path) for role, p in contender.procs.items()}
    r["log_paths"] = {role: p.log_path for role, p in contender.procs.items()}

    # The contender's requests, counted at the API server (audit log), up to t_end.
    time.sleep(0.5)
    events = [e for e in audit_events(ctx.audit_dir, namespace)
              if contender.own_request(e) and parse_time(e["requestReceivedTimestamp"]) <= t_end]
    users = collections.Counter(e["user"]["username"] for e in events)
    agents = collections.Counter(e.get("userAgent", "(none)") for e in events)
    r["requesters"] = f"{dict(users)} userAgent {dict(agents)}"
    r["verbs"] = collections.Counter(e["verb"] for e in events)
    r["write_resources"] = collections.Counter(
        f'{e["verb"]} {e["objectRef"].get("resource")}'
        + (f'/{e["objectRef"]["subresource"]}' if e["objectRef"].get("subresource") else "")
        for e in events if e["verb"] in WRITE_VERBS
    )
    r["codes"] = collections.Counter(
        (e.get("responseStatus") or {}).get("code", 0) for e in events if e["verb"] in WRITE_VERBS
    )
    # Create (client side, response received) -> the contender's last write to that object.
    last_write: dict[str, float] = {}
    for e in events:
        ref = e["objectRef"]
        if e["verb"] in WRITE_VERBS and ref.get("resource") == PLURAL and ref.get("name"):
            t = parse_time(e.get("stageTimestamp") or e["requestReceivedTimestamp"])
            last_write[ref["name"]] = max(t, last_write.get(ref["name"], 0.0))
    if mode == "live":
        r["latency"] = [last_write[n] - t for n, t in created.items() if n in last_write]
    if last_write:
        r["t_last_write"] = max(last_write.values()) - t0
    return r


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


def fmt_mib(kib: int | None) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f} MiB"


def table(ctx: Context, results: list[dict[str, dict]], commit: str, plane_version: str) -> str:
    """One markdown table: a row per figure, a column per contender (each a dict mode -> figures)."""
    n, h = ctx.objects, ctx.handlers
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, mode: str, fn) -> None:
        if not any(mode in res for res in results):
            return
        cells = []
        for res in results:
            try:
                cells.append(fn(res[mode]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
                cells.append("–")
        rows.append((name, cells))

    def metric(r: dict, name: str) -> list[tuple[dict, float]]:
        return r["metrics"].get(name, [])

    def handled(r: dict) -> str:
        if "t_done" not in r:
            return f"**not finished**: {r['failure']}"
        return f"{r['t_done']:.1f} s (last write at {r['t_last_write']:.2f} s)"

    def writes(r: dict) -> str:
        return f"{sum(r['verbs'][v] for v in WRITE_VERBS) / n:.2f}"

    L, B = "live", "backlog"
    row("objects × handlers", L, lambda r: f"{n} × {h} (create handlers)")
    row("**live**: objects created in", L,
        lambda r: f"{r['t_created']:.1f} s ({n / r['t_created']:.0f} objects/s)")
    row("**live**: all objects fully handled after", L, handled)
    def throughput(r: dict) -> str:
        return (f"**{n / r['t_done']:.0f} objects/s** = {n * h / r['t_done']:.0f} handler calls/s "
                f"(by the last write: {n / r['t_last_write']:.0f} objects/s)")

    row("**live: throughput**", L, throughput)
    row("**live**: create → last write to the object, p50 / p99 / max", L,
        lambda r: " / ".join(f"{percentile(r['latency'], p):.2f} s" for p in (50, 99, 100)))
    row("**live: API writes per object** (audit log)", L, lambda r: f"**{writes(r)}**")
    row("… by verb and resource", L, lambda r: ", ".join(
        f"{k}: {v}" for k, v in sorted(r["write_resources"].items())) or "none")
    row("… answered with", L, lambda r: ", ".join(
        f"{code}: {c}" for code, c in sorted(r["codes"].items())) or "–")
    row("API reads (audit log)", L, lambda r: ", ".join(
        f"{v}: {r['verbs'][v]}" for v in ("get", "list", "watch") if r["verbs"][v]) or "none")
    row("requests counted as the contender's", L, lambda r: r["requesters"])
    row("operon_cycles_total", L, lambda r: (lambda c: f"{c:.0f} ({c / n:.2f}/object)")(
        sum(v for _, v in metric(r, "operon_cycles_total"))))
    row("operon_api_requests_total", L, lambda r: ", ".join(
        f"{lab.get('verb')} {lab.get('code')}: {v:.0f}"
        for lab, v in metric(r, "operon_api_requests_total")) or "none")
    row("operon_handler_outcomes_total", L, lambda r: ", ".join(
        f"{lab.get('handler')} {lab.get('outcome')}: {v:.0f}"
        for lab, v in metric(r, "operon_handler_outcomes_total")) or "none")
    for role in ("core", "handler service"):
        row(f"peak RSS, {role} (VmHWM)", L, lambda r, role=role: fmt_mib(r["rss"][role].get("VmHWM")))
    for role in ("core", "handler service"):
        row(f"CPU time, {role}", L, lambda r, role=role: f"{r['cpu'][role]:.1f} s")
    row("CPU time, kube-apiserver + etcd", L, lambda r: f"{r['plane_cpu']:.1f} s")
    row("**backlog**: start → ready (initial list)", B, lambda r: f"{r['t_ready']:.1f} s")
    row("**backlog**: start → all objects fully handled", B, handled)
    row("**backlog: throughput**", B, throughput)
    row("**backlog**: API writes per object; cycles per object", B, lambda r: "{}; {:.2f}".format(
        writes(r), sum(v for _, v in metric(r, "operon_cycles_total")) / n))
    row("**backlog**: peak RSS, core / handler service", B, lambda r: " / ".join(
        fmt_mib(r["rss"][role].get("VmHWM")) for role in ("core", "handler service")))
    row("**backlog**: CPU time, core / handler service / kube-apiserver + etcd", B,
        lambda r: " / ".join(f"{v:.1f} s" for v in (r["cpu"]["core"], r["cpu"]["handler service"], r["plane_cpu"])))
    for mode in (L, B):
        row(f"{mode}: WARN / ERROR lines in the logs", mode, lambda r: ", ".join(
            f"{role} {r['logs'][role][0]} / {r['logs'][role][1]}" for role in ("core", "handler service")))
    first = [""] * (len(results) - 1)
    rows.append(("machine", [machine()] + first))
    rows.append(("load average (1 min) at the start", [ctx.load_at_start] + first))
    rows.append(("control plane", [plane_version] + first))
    rows.append(("commit", [commit] + first))

    titles = [next(iter(res.values()))["title"] for res in results]
    lines = ["| figure | " + " | ".join(titles) + " |", "|---|" + "---|" * len(results)]
    for name, cells in rows:
        lines.append(f"| {name} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--handlers", type=int, default=3)
    p.add_argument("--contender", action="append", choices=sorted(CONTENDERS),
                   help="run only these (repeatable; default: all)")
    p.add_argument("--mode", action="append", choices=["live", "backlog"],
                   help="run only these modes (repeatable; default: live, then backlog)")
    p.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    p.add_argument("--stall", type=float, default=120, help="give up after this long without progress")
    p.add_argument("--core-arg", action="append", help="an extra argument for `operon run`")
    p.add_argument("--workdir", required=True)
    p.add_argument("--core-bin", required=True)
    p.add_argument("--handler-bin", required=True)
    p.add_argument("--kubectl", required=True)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--audit-dir", required=True)
    p.add_argument("--plane-dir", required=True)
    p.add_argument("--commit", required=True)
    args = p.parse_args()
    if args.objects < 1 or args.handlers < 1:
        p.error("--objects and --handlers must be at least 1")

    def on_signal(signum, _frame):
        # Once: a second signal (Ctrl-C reaches run.sh's trap and this process) must not cut the
        # clean-up short.
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        log(f"{signal.Signals(signum).name}: stopping what was started, deleting the namespaces")
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    ctx = Context(args)
    status, version = ctx.kube.request("GET", "/version")
    plane_version = (f"kube-apiserver {version.get('gitVersion')} on 127.0.0.1 (etcd without fsync)"
                     if status == 200 else "?")
    results: list[dict[str, dict]] = []
    contender: Contender | None = None
    try:
        for slug in args.contender or list(CONTENDERS):
            results.append({})
            for mode in args.mode or ["live", "backlog"]:
                contender = CONTENDERS[slug]()
                results[-1][mode] = run_phase(ctx, contender, mode)
                contender = None
    except Failed as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        if contender is not None and getattr(contender, "procs", None):
            contender.stop()
        ctx.delete_namespaces()

    print()
    print(table(ctx, results, args.commit, plane_version))
    print()
    failed = False
    for res in results:
        for mode, r in res.items():
            for role, (warns, errors, top) in r["logs"].items():
                if warns or errors:
                    print(f"{r['title']}, {mode}, {role} log ({r['log_paths'][role]}): "
                          f"{warns} WARN, {errors} ERROR lines; most frequent:")
                    for line in top:
                        print(f"    {line}")
            if "failure" in r:
                failed = True
                print(f"{r['title']}, {mode}: did not finish: {r['failure']}")
    print(f"logs: {args.workdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
