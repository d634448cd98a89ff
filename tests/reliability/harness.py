"""
The reliability suite's harness: the plane, namespaces, operators to start and kill, ledgers, and
the table of figures. Scenarios (``scenarios/*.py``) use only this module and the plane.

Every scenario is a function ``run(ctx: Context) -> Row``: it does its work in namespaces of its
own (``ctx.namespace(...)``, removed at the end), with a seeded ``ctx.random``, and returns a row
of figures plus the failures it found (a row with failures fails the suite). Nothing here listens
anywhere but 127.0.0.1.
"""
import collections
import contextlib
import dataclasses
import itertools
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from ledgerline import ledger_append  # noqa: F401  (re-exported for scenarios)

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
GROUP, VERSION, PLURAL = 'kopf.dev', 'v1', 'kopfexamples'
PREFIX = 'kopf.zalando.org'
DIFF_BASE = f'{PREFIX}/last-handled-configuration'


class ScenarioFailed(AssertionError):
    """ A check of a scenario failed; the message says which and why. """


@dataclasses.dataclass
class Row:
    """ One scenario's line in the table: figures (name → value) and the failed checks. """
    scenario: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def check(self, ok: bool, failure: str) -> None:
        if not ok:
            self.failures.append(failure)


def log(message: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """ Polls until ``predicate()`` is truthy and returns it; :class:`ScenarioFailed` on timeout. """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


# What `operon run` logs once it runs, after it set its SIGTERM handler: a stop is judged after it.
CORE_READY = 'Handler service described.'

_NEXT_PORT = itertools.count()


def free_port() -> int:
    """ A free port on 127.0.0.1 for a process that binds it later, and again after each restart:
    from below the kernel's ephemeral range (a port from bind(0) is one any outgoing connection may
    take once released, and a restarted core then fails with "Address already in use"), at a spot
    that differs per process and call, checked free by binding it. """
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            ephemeral_start = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768
    low, span = 10000, max(2000, ephemeral_start - 10000)
    start = os.getpid() * 7919
    for _ in range(span):
        port = low + (start + next(_NEXT_PORT)) % span
        with socket.socket() as sock:
            try:
                sock.bind(('127.0.0.1', port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


class Ledger:
    """ A JSON-lines file that operators append to (``RELIABILITY_LEDGER``), read back whole. """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        path.touch()

    def read(self) -> list[dict[str, Any]]:
        with self.path.open() as f:
            return [json.loads(line) for line in f if line.endswith('\n')]


def descendants(pid: int) -> list[int]:
    """ The process's children, grandchildren… (from /proc), found before anything is killed. """
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(')', 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def later(delay: float, action: Callable[[], None]) -> Callable[[], None]:
    """ Runs ``action`` after ``delay`` seconds in a thread; the returned function waits for it
    and re-raises what it raised. """
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            action()
        except BaseException as e:  # noqa: B036 — handed over to the waiting thread
            errors.append(e)

    timer = threading.Timer(delay, guarded)
    timer.start()

    def join() -> None:
        timer.join()
        if errors:
            raise errors[0]
    return join


def gone(pid: int) -> bool:
    """ The process has exited (no /proc entry, or a zombie that nobody has reaped yet). """
    try:
        stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return True
    return stat.rsplit(')', 1)[1].split()[0] in ('Z', 'X')


class Operator:
    """ ``kopf run`` of an operator file (its own process group; the core is its child). """

    def __init__(self, ctx: 'Context', path: pathlib.Path, namespace: str, *, env: dict[str, str],
                 args: Sequence[str] = (), name: str = 'operator') -> None:
        self.ctx, self.path, self.namespace, self.env, self.args = ctx, path, namespace, env, args
        self.log_path = ctx.workdir / f'{name}.log'
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills: list[float] = []  # when each SIGKILL was sent (Unix seconds)

    def start(self) -> None:
        env = {**os.environ, **self.ctx.base_env, **self.env}
        argv = [str(self.ctx.kopf), 'run', '-n', self.namespace, '--log-format', 'plain', *self.args,
                str(self.path)]
        with self.log_path.open('ab') as out:
            out.write(f"--- start {self.starts + 1} at {time.time():.3f}\n".encode())
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.ctx.workdir)
        self.starts += 1

    def kill9(self) -> None:
        """ SIGKILL to kopf run and everything under it (the core runs in a session of its own). """
        assert self.process is not None
        pids = [self.process.pid, *descendants(self.process.pid)]
        self.kills.append(time.time())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        for pid in pids[1:]:  # no orphan may live on to write once more
            wait_until(lambda: gone(pid), timeout=10, what=f"process {pid} gone after SIGKILL")
        self.process = None

    def wait_ready(self, timeout: float = 60) -> None:
        """ Until this start's core serves (a SIGTERM before Python has set its handlers would
        end it as any Python process, with -15: a stop is only judged once it runs). """
        def serving() -> bool:
            text = self.log_path.read_text(errors='replace')
            return 'Serving the resource.' in text.rsplit(f"--- start {self.starts} at", 1)[-1]
        wait_until(serving, timeout=timeout, what=f"{self.log_path.name}: start {self.starts} serving")

    def stop(self, timeout: float = 40) -> int:
        """ SIGTERM, as a pod's stop, once the operator serves; the exit code. """
        assert self.process is not None
        self.wait_ready()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def tail(self, lines: int = 40) -> str:
        return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])


class Context:
    """ What a scenario gets: the plane's API, namespaces, operators, a seeded random, a workdir. """

    def __init__(self, *, workdir: pathlib.Path, seed: int, trials: int, long: bool, core: str,
                 kopf: pathlib.Path) -> None:
        kubernetes.config.load_kube_config()
        self.api = kubernetes.client.CustomObjectsApi()
        self.core_api = kubernetes.client.CoreV1Api()
        self.workdir, self.seed, self.trials, self.long = workdir, seed, trials, long
        self.random = random.Random(seed)
        self.kopf = kopf
        self.base_env = {'OPERON_BIN': core, 'PYTHONPATH': str(HERE),
                         'KUBECONFIG': os.environ['KUBECONFIG']}
        self._namespaces: list[str] = []
        self._operators: list[Operator] = []
        self._processes: list[Process] = []

    # --- namespaces & objects ------------------------------------------------------------------
    def namespace(self, label: str) -> str:
        name = f'operon-rel-{label}-{os.getpid()}'
        self.core_api.create_namespace({'metadata': {'name': name}})
        self._namespaces.append(name)
        return name

    def operator(self, path: pathlib.Path, namespace: str, *, env: dict[str, str],
                 args: Sequence[str] = (), name: str = 'operator') -> Operator:
        operator = Operator(self, path, namespace, env=env, args=args, name=name)
        self._operators.append(operator)
        return operator

    def ledger(self, name: str) -> Ledger:
        return Ledger(self.workdir / f'{name}.jsonl')

    def create(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'KopfExample',
                'metadata': {'name': name}, 'spec': spec}
        return self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)  # type: ignore[no-any-return]

    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)  # type: ignore[no-any-return]

    def delete(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def objects(self, namespace: str) -> list[dict[str, Any]]:
        answer = self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return answer['items']  # type: ignore[no-any-return]

    def events(self, namespace: str) -> list[Any]:
        return list(self.core_api.list_namespaced_event(namespace).items)

    def cleanup(self) -> None:
        for running in [*self._operators, *self._processes]:
            if running.process is not None:
                with contextlib.suppress(Exception):
                    running.kill9()
        for namespace in self._namespaces:
            with contextlib.suppress(ApiException):
                for item in self.objects(namespace):  # nothing may hold the namespace's deletion
                    if item['metadata'].get('finalizers'):
                        self.patch(namespace, item['metadata']['name'], {'metadata': {'finalizers': None}})
            with contextlib.suppress(ApiException):
                self.core_api.delete_namespace(namespace)


# --- what the Kopf format says about an object -------------------------------------------------
def annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj['metadata'].get('annotations') or {})


def progress(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ The progress records on the object (annotation storage), by handler id. """
    records = {}
    for key, value in annotations(obj).items():
        if key.startswith(f'{PREFIX}/') and key != DIFF_BASE:
            with contextlib.suppress(ValueError):
                records[key.split('/', 1)[1]] = json.loads(value)
    return records


def diff_base(obj: dict[str, Any]) -> dict[str, Any] | None:
    text = annotations(obj).get(DIFF_BASE)
    return json.loads(text) if text else None


def settled(obj: dict[str, Any]) -> bool:
    """ Fully handled: no progress left, and the diff-base holds the object's current spec. """
    base = diff_base(obj)
    return not progress(obj) and base is not None and base.get('spec') == obj.get('spec')


def print_table(rows: Sequence[Row], *, title: str) -> str:
    lines = [f"### {title}", "", "| scenario | figures | checks | time |", "|---|---|---|---|"]
    for row in rows:
        figures = ', '.join(f"{k}: {v}" for k, v in row.figures.items())
        checks = 'pass' if not row.failures else 'FAIL: ' + '; '.join(row.failures)
        lines.append(f"| {row.scenario} | {figures} | {checks} | {row.seconds:.0f}s |")
    return '\n'.join(lines)


def run_scenarios(scenarios: Sequence[tuple[str, Callable[[Context], Row]]], *, make: Callable[[], Context],
                  log_failure: Callable[[str], None] = log) -> list[Row]:
    rows = []
    for name, scenario in scenarios:
        ctx = make()
        started = time.monotonic()
        log(f"scenario {name}: starting (seed {ctx.seed})")
        try:
            row = scenario(ctx)
        except ScenarioFailed as e:
            row = Row(name, failures=[str(e)])
            for operator in ctx._operators:
                log_failure(f"--- {operator.log_path.name} (last lines):\n{operator.tail()}")
        except Exception as e:  # a broken scenario is a failure too, with its traceback
            import traceback
            row = Row(name, failures=[f"{type(e).__name__}: {e}"])
            log_failure(traceback.format_exc())
        finally:
            ctx.cleanup()
        row.seconds = time.monotonic() - started
        log(f"scenario {name}: {'pass' if not row.failures else 'FAIL'} in {row.seconds:.0f}s {row.figures}"
            + ''.join(f"\n  FAILED: {failure}" for failure in row.failures))
        rows.append(row)
    return rows


class Process:
    """ A process of the suite's own (a core, a handler service): its own process group, its output
    in a log file, SIGKILL or SIGTERM. """

    def __init__(self, ctx: 'Context', argv: Sequence[str], *, name: str, env: dict[str, str] | None = None,
                 ready_line: str | None = None) -> None:
        self.argv, self.name, self.env = list(argv), name, env or {}
        self.log_path = ctx.workdir / f'{name}.log'
        self.process: subprocess.Popen[bytes] | None = None
        self.kills: list[float] = []
        # What the process prints once it handles SIGTERM itself: a stop is judged only after it.
        self.ready_line = ready_line
        self.starts = 0
        ctx._processes.append(self)

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open('ab') as out:
            out.write(f"--- start {self.starts} at {time.time():.3f}: {' '.join(self.argv)}\n".encode())
            self.process = subprocess.Popen(self.argv, env={**os.environ, **self.env}, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        assert self.process is not None
        self.kills.append(time.time())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self, timeout: float = 40) -> int:
        """ SIGTERM, once the process says it is ready (when it was given a `ready_line`); the exit code. """
        assert self.process is not None
        if self.ready_line is not None:
            line, start = self.ready_line, f"--- start {self.starts} at"
            wait_until(lambda: line in self.log_path.read_text(errors='replace').rsplit(start, 1)[-1],
                       timeout=60, what=f"{self.name}: start {self.starts} printed {line!r}")
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def tail(self, lines: int = 40) -> str:
        return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])


def repeated_successes(entries: Sequence[dict[str, Any]], kills: Sequence[float], *,
                       key: Callable[[dict[str, Any]], Any]) -> tuple[int, list[tuple[Any, Any]]]:
    """ Successes of one (object, handler, change) after the first: how many a kill explains (one
    came between the earlier call's end and the later one's start: its answer was never stored),
    and the pairs nothing explains (duplicates the promise does not allow). """
    groups: dict[Any, list[dict[str, Any]]] = {}
    for entry in entries:
        if entry['outcome'] == 'success':
            groups.setdefault(key(entry), []).append(entry)
    explained, unexplained = 0, []
    for calls in groups.values():
        calls.sort(key=lambda e: e['started'])
        for before, after in zip(calls, calls[1:]):
            if any(before['ended'] <= k <= after['started'] for k in kills):
                explained += 1
            else:
                unexplained.append((before, after))
    return explained, unexplained


# --- the core's HTTP listener ------------------------------------------------------------------
def http_get(url: str, timeout: float = 2) -> tuple[int | None, str]:
    """ The status and body of a GET (``None``: no answer at all, e.g. nothing listening). """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode(errors='replace')
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors='replace')
    except OSError:  # URLError, refused, timed out
        return None, ''


def metric(text: str, name: str, **labels: str) -> float:
    """ The sum of a metric's samples (OpenMetrics text, as ``/metrics`` serves it) whose labels
    include ``labels``; 0 when there is none. """
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + '{', name + ' ')):
            head, value = line.rsplit(' ', 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


def trial_work(ctx: 'Context', namespace: str, trial: int, generations: 'collections.deque[list[str]]',
               spec_of: Callable[[int], dict[str, Any]], per_trial: int = 50) -> int:
    """ The work of one kill trial, while the kill may come at any moment: ``per_trial`` new
    objects (``spec_of(i)``), a change of ``spec.n`` on each object of the trial before, the
    objects of two trials ago deleted. How many objects it created. """
    names = [f't{trial}-{i}' for i in range(per_trial)]
    for i, name in enumerate(names):
        ctx.create(namespace, name, spec_of(i))
    if generations:
        for name in generations[-1]:
            ctx.patch(namespace, name, {'spec': {'n': trial}})
    if len(generations) == 2:
        for name in generations.popleft():
            ctx.delete(namespace, name)
    generations.append(names)
    return len(names)


class Loop:
    """ A loop in a background thread (a workload, a second writer): the subclass's ``_run`` loops
    until ``self._stop`` is set and appends what broke it to ``self._errors``; :meth:`stop` ends
    it and re-raises that (once). """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """ Stops the loop after its current write; re-raises (once) what broke it. """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._errors:
            raise self._errors.pop()
