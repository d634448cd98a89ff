"""
The API server dies under load: kube-apiserver is SIGKILLed and started again several times
(:data:`RESTARTS`, :data:`RESTARTS_LONG` in the long mode; each down for a random 1–8 s, then up
for a random 3–6 s) while objects are created and their ``spec.n`` changed, then a 410 Gone is
forced on the core's watch. The operator is the network scenario's (``operators/network.py``,
``kopf run``); etcd and kube-controller-manager keep running. ``restart-apiserver.sh`` stops
and starts the API server, so the scenario holds the plane's lock exclusively for its whole run
(a ``flock`` on ``<state dir>.e2e.lock``, the lock of ``tests/src/cluster.rs``), and starts the
API server again on every way out.

**The load.** A thread creates objects and changes their ``spec.n`` every 0.1–0.3 s, each time
to a value never used before (one counter for all objects, so a later value is a greater one),
and sends every write again until the API server answers it (an unanswered creation answered
409 AlreadyExists later got through): every write it records was made, and each object's last
recorded value is its final ``spec.n``.

**The forced 410.** The core is frozen (SIGSTOP), the API server is stopped, etcd's revision
(all the core can know) is noted and moved on, the API server started again (its watch cache now
begins after that revision), an object is changed and another one created, and etcd is compacted
up to its current revision through its v3 JSON gateway; the scenario's own watch from the noted
revision must be answered 410 (the proof that a resumed watch cannot see these changes); then
the core goes on (SIGCONT): its watch resumes from an old revision, meets the 410, and only a
new listing can show it the two changes.

Checks:

- ``lost`` — every object ends fully handled (no progress left, the diff-base holds its spec),
  with the final value written, and a handler call saw that value (a ledger line with it): must
  be 0. Both post-compaction changes are handled (their own check, within :data:`SETTLE` s).
- ``repeated successes`` — the same handler, object, reason and value succeeding twice: must be
  0. Nothing is killed but the API server: the core resends a write that got no answer (the
  README's "Reliability"; ``runtime/calls.rs``), never the handler. One window remains by
  design, as in Kopf, and is not excused: a creation cycle during which a newer event of the
  object arrives, whose PATCH is answered just before the kill, and whose own write then does
  not come back through the watch within ``consistency_timeout`` (5 s): the core handles the
  newer body, which lacks the stored success, and calls the creation handler again. It takes a
  change during the creation cycle and a kill within milliseconds after the PATCH's answer; it
  has not been seen (the failure message shows the pair if it is).
- ``persisted re-runs`` — calls made with the handler's own success already stored on the object
  they were called with (must be 0).
- The core lives through it: the same process (pid) under ``kopf run`` at every sample (every
  0.5 s, except while it is frozen on purpose), with ``/healthz`` 200; ``/healthz`` 200 after
  each restart and ``/readyz`` 200 at the end; no panic in its log; ``kopf run`` exits 0 on
  SIGTERM.
- The core logged its broken watch (``The watch failed``) after every kill, and after the SIGCONT
  the 410: the line ``The watch failed; its resource version expired (410): listing again now.``
  with the error the API server sent (kube-runtime's ``error returned by apiserver during watch: too old resource version: …
  (…): Expired``, see ``operator/src/runtime/watching.rs``).
- The plane is left as it was found: the API server's ``/readyz`` is 200 after the scenario,
  however it ended.
- After each restart, every write answered before the API server was ready again, and a change
  made right then, is seen by a handler call within :data:`RECOVER` s (``handled after a restart
  s``, the figure: the largest such delay, from /readyz 200 — the watch's backoff, which starts
  over with every event and caps at 15 s, and a 410 lists again at once; with kube's default
  backoff, grown during the outage and reset only after two quiet minutes, it was up to 30 s).

Figures besides: ``410s logged`` counts every 410 in the core's log — a restarted API server's
watch cache begins at its start, so a watch resumed from before it is often answered 410 after
an ordinary restart too; ``writes sent again`` counts the load's attempts by their failure (no
answer, 5xx/429, 404 while the CRD is not served yet); ``PATCHes failed`` counts the core's
``Patching failed`` lines (each followed by the same write sent again).
"""
import base64
import collections
import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import random
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from harness import (GROUP, HERE, PLURAL, ROOT, VERSION, Context, Ledger, Loop, Operator, Row,
                     ScenarioFailed, descendants, free_port, gone, http_get, log, settled,
                     wait_until)

RESTARTS, RESTARTS_LONG = 3, 10
DOWN = (1.0, 8.0)      # seconds the API server stays down (random, from ctx.random)
UP = (3.0, 6.0)        # seconds under load after a recovery before the next kill
RECOVER = 90.0         # after a restart: every earlier write seen by a handler within
SETTLE = 60.0          # after the load / the SIGCONT: everything handled within
WRITE_TIMEOUT = 5.0    # one attempt of a write of the load
WRITE_GIVE_UP = 180.0  # a write not answered for this long fails the scenario
WATCH_FAILED = 'The watch failed'
GONE = 'too old resource version'  # the API server's 410 Expired, in the core's WATCH_FAILED line
PATCH_FAILED = 'Patching failed'
BUMP_KEY = '/operon-reliability/bump'  # outside Kubernetes' /registry


# --- the plane: its lock, its API server, its etcd -----------------------------------------------
def cluster_dir() -> pathlib.Path:
    """ The plane's state directory, as ``tests/src/cluster.rs`` finds it. """
    if os.environ.get('OPERON_CLUSTER_DIR'):
        return pathlib.Path(os.environ['OPERON_CLUSTER_DIR'])
    cache = os.environ.get('OPERON_CACHE') or str(pathlib.Path(os.environ.get('HOME', '/root')) / '.cache/operon')
    return pathlib.Path(cache) / 'cluster'


def plane_env() -> dict[str, str]:
    """ The plane's ``env`` file (``ETCD_PORT``, ``APISERVER_PORT``, ``ADMIN_TOKEN``, …). """
    text = (cluster_dir() / 'env').read_text()
    return {k.strip(): v.strip() for k, _, v in (line.partition('=') for line in text.splitlines()) if _}


@contextlib.contextmanager
def exclusive_plane() -> Iterator[None]:
    """ The plane's lock, exclusively (as ``PlaneLock::exclusive``): no test that holds it, shared
    or exclusive, runs meanwhile. Next to the state directory, which up.sh and down.sh remove. """
    directory = cluster_dir()
    path = directory.with_name(directory.name + '.e2e.lock')
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('a') as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"apiserver: waiting for the plane's lock {path} (held by other tests)")
            fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def apiserver(action: str) -> None:
    """ ``tests/cluster/restart-apiserver.sh stop|start`` (``start`` returns once /readyz is 200);
    in a session of its own, so that a Ctrl-C of the suite never reaches the API server. """
    script = ROOT / 'tests' / 'cluster' / 'restart-apiserver.sh'
    done = subprocess.run([str(script), action], capture_output=True, text=True, timeout=180,
                          start_new_session=True, check=False)
    if done.returncode != 0:
        raise ScenarioFailed(f"restart-apiserver.sh {action} failed ({done.returncode}): "
                             f"{(done.stdout + done.stderr)[-1500:]}")


class Etcd:
    """ The plane's etcd through its v3 JSON gateway (plain HTTP on 127.0.0.1), as ``cluster.rs``. """

    def __init__(self, port: str) -> None:
        self.base = f'http://127.0.0.1:{port}'

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), method='POST',
                                         headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)  # type: ignore[no-any-return]

    @staticmethod
    def _b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    def revision(self) -> int:
        return int(self._call('/v3/kv/range', {'key': self._b64('/operon-reliability/none')})['header']['revision'])

    def put(self, key: str, value: str) -> int:
        return int(self._call('/v3/kv/put', {'key': self._b64(key), 'value': self._b64(value)})['header']['revision'])

    def compact(self, revision: int) -> None:
        """ Physically: any watch from an older revision is answered 410 Gone from then on. """
        self._call('/v3/kv/compaction', {'revision': str(revision), 'physical': True})


def apiserver_ready(env: dict[str, str]) -> int | None:
    """ The status of the API server's ``/readyz`` (``None``: no answer). """
    tls = ssl.create_default_context(cafile=str(cluster_dir() / 'pki' / 'ca.crt'))
    request = urllib.request.Request(f"https://127.0.0.1:{env['APISERVER_PORT']}/readyz",
                                     headers={'Authorization': f"Bearer {env['ADMIN_TOKEN']}"})
    try:
        with urllib.request.urlopen(request, context=tls, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def watch_from(env: dict[str, str], namespace: str, revision: int) -> str:
    """ What the API server answers a watch of the namespace's objects from ``revision``: its
    first event (``410 Expired: …`` for an ERROR), or the HTTP error. """
    tls = ssl.create_default_context(cafile=str(cluster_dir() / 'pki' / 'ca.crt'))
    url = (f"https://127.0.0.1:{env['APISERVER_PORT']}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
           f"?watch=1&resourceVersion={revision}&timeoutSeconds=5")
    request = urllib.request.Request(url, headers={'Authorization': f"Bearer {env['ADMIN_TOKEN']}"})
    # Right after a start, the API server answers 429 "storage is (re)initializing" (Retry-After)
    # or a 5xx until its watch cache is up: asked again, for up to 30 s.
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(request, context=tls, timeout=20) as answer:
                line = answer.readline()
            break
        except urllib.error.HTTPError as e:
            text = f"{e.code} (HTTP): {e.read().decode(errors='replace')[:200]}"
            if (e.code == 429 or e.code >= 500) and time.monotonic() < deadline:
                retry_after = e.headers.get('Retry-After') or '1'
                time.sleep(float(retry_after) if retry_after.isdigit() else 1.0)
                continue
            return text
    if not line:
        return 'the stream ended without an event'
    event = json.loads(line)
    if event.get('type') == 'ERROR':
        status = event.get('object') or {}
        return f"{status.get('code')} {status.get('reason')}: {status.get('message')}"
    return f"an event: {event.get('type')} {event.get('object', {}).get('metadata', {}).get('name')}"


# --- the load ----------------------------------------------------------------------------------
class Writer(Loop):
    """ Creates objects and changes their ``spec.n`` at a steady pace in a thread (see the module's
    docstring), every write sent again until answered; ``expected`` is each object's last
    answered value, ``writes`` every answered write (when, name, value). """

    def __init__(self, ctx: Context, namespace: str, rng: random.Random, *, cap: int) -> None:
        self.ctx, self.namespace, self.rng, self.cap = ctx, namespace, rng, cap
        self.expected: dict[str, int] = {}
        self.writes: list[tuple[float, str, int]] = []
        self.changes = 0
        self.resent: collections.Counter[str] = collections.Counter()  # attempts sent again, by failure
        self._counter = 0
        self._made = 0
        self._lock = threading.Lock()
        super().__init__()

    def value(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def write(self, name: str, *, create: bool) -> int:
        """ Creates the object or changes its ``spec.n``, to a new value, until the API server
        answers; the value. """
        n = self.value()
        deadline = time.monotonic() + WRITE_GIVE_UP
        while True:
            try:
                if create:
                    body = {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'KopfExample',
                            'metadata': {'name': name}, 'spec': {'n': n}}
                    self.ctx.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body,
                                                                 _request_timeout=WRITE_TIMEOUT)
                else:
                    self.ctx.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                                {'spec': {'n': n}}, _request_timeout=WRITE_TIMEOUT)
                break
            except ApiException as e:
                if create and e.status == 409:
                    break  # an earlier attempt got through, unanswered
                failure = f'{e.status}'  # 5xx, 429, or a 404 while the CRD is not served yet
            except (urllib3.exceptions.HTTPError, OSError) as e:
                failure = type(e).__name__
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"the load: writing {name} was not answered for {WRITE_GIVE_UP:.0f} s "
                                     f"({failure})")
            with self._lock:
                self.resent[failure] += 1
            time.sleep(0.2)
        with self._lock:
            self.expected[name] = n
            self.writes.append((time.time(), name, n))
            self.changes += not create
        return n

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.rng.uniform(0.1, 0.3)):
                with self._lock:
                    names = sorted(self.expected)
                if self._made < self.cap and (not names or self.rng.random() < 0.3):
                    self.write(f'w-{self._made}', create=True)
                    self._made += 1
                else:
                    self.write(self.rng.choice(names), create=False)
        except BaseException as e:  # noqa: B036 — handed over to stop()
            self._errors.append(e)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.expected)


# --- the core under kopf run -------------------------------------------------------------------
def core_of(operator: Operator, binary: str) -> int | None:
    """ The pid of the core that ``kopf run`` started (its descendant running ``binary``). """
    if operator.process is None:
        return None
    for pid in descendants(operator.process.pid):
        with contextlib.suppress(OSError):
            argv0 = pathlib.Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0', 1)[0].decode()
            if argv0 == binary and not gone(pid):
                return pid
    return None


@dataclasses.dataclass
class Probe(Loop):
    """ Every 0.5 s in a thread (but while the core is frozen on purpose): when, the core's pid
    under ``kopf run`` (``None``: none), the status of its ``/healthz``. """
    operator: Operator
    binary: str
    base: str
    frozen: threading.Event = dataclasses.field(default_factory=threading.Event)
    samples: list[tuple[float, int | None, int | None]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        Loop.__init__(self)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if self.frozen.is_set():
                continue
            healthz, _ = http_get(self.base + '/healthz')
            if not self.frozen.is_set():
                self.samples.append((time.time(), core_of(self.operator, self.binary), healthz))


def handled(obj: dict[str, Any]) -> bool:
    """ Settled, created, and the current ``spec.n`` seen by the creation handler (an object first
    seen already changed) or by the update handler. """
    status = obj.get('status') or {}
    seen = (status.get('created', {}).get('n'), status.get('counted/spec.n', {}).get('n'))
    return settled(obj) and bool(status.get('created', {}).get('ok')) and obj['spec'].get('n', 0) in seen


def key(entry: dict[str, Any]) -> tuple[str, str, str, Any]:
    """ What a success is unique by: a creation once per object, an update once per value. """
    return (entry['uid'], entry['handler'], entry['reason'],
            entry.get('n') if entry['handler'] == 'counted/spec.n' else None)


def seen_through(entries: list[dict[str, Any]], snapshot: dict[str, int]) -> float | None:
    """ When every write of ``snapshot`` had been seen by a handler call: the latest end of each
    object's first call with that value or a later one (``None``: not yet). """
    first: dict[str, float] = {}
    for entry in entries:
        name = entry['name']
        if name in snapshot and entry['n'] >= snapshot[name]:
            first[name] = min(first.get(name, entry['ended']), entry['ended'])
    if len(first) < len(snapshot):
        return None
    return max(first.values(), default=0.0)


@dataclasses.dataclass
class Restart:
    """ One kill of the API server: how long it was down (as planned, and until /readyz), the
    core's WATCH_FAILED lines meanwhile, how soon the earlier writes were handled, /healthz. """
    down: float
    unavailable: float = 0.0
    watch_failures: int = 0
    handled_in: float | None = None
    healthz: int | None = None


class Run:
    """ The scenario's state, for the parts below and the checks at the end. """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.env = plane_env()
        self.etcd = Etcd(self.env['ETCD_PORT'])
        self.namespace = ctx.namespace('apiserver')
        self.ledger: Ledger = ctx.ledger('apiserver')
        self.http = f'127.0.0.1:{free_port()}'
        self.operator = ctx.operator(HERE / 'operators' / 'network.py', self.namespace, name='apiserver',
                                     env={'RELIABILITY_LEDGER': str(self.ledger.path), 'OPERON_HTTP': self.http})
        self.binary = ctx.base_env['OPERON_BIN']
        self.probe = Probe(self.operator, self.binary, f'http://{self.http}')
        self.writer = Writer(ctx, self.namespace, random.Random(ctx.random.getrandbits(32)),
                             cap=100 if ctx.long else 40)
        self.core: int | None = None
        self.restarts: list[Restart] = []
        self.stale_watch = '-'
        self.gone_lines = 0
        self.after_gone: str = '-'
        self.gone_changes: dict[str, int] = {}

    def log_size(self) -> int:
        return self.operator.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        return self.operator.log_path.read_bytes()[offset:].decode(errors='replace')


def restart_under_load(run: Run, down: float, up: float) -> None:
    """ One kill: SIGKILL, ``down`` s, start (until /readyz), then until every write answered
    before that, and a change made then, is seen by a handler call; then ``up`` s more of load. """
    restart = Restart(down)
    run.restarts.append(restart)
    offset = run.log_size()
    apiserver('stop')
    killed = time.time()
    time.sleep(down)
    apiserver('start')
    ready = time.time()
    restart.unavailable = ready - killed
    snapshot = run.writer.snapshot()
    snapshot['w-0'] = run.writer.write('w-0', create=False)  # a change the core can only see from now on
    try:
        at = wait_until(lambda: seen_through(run.ledger.read(), snapshot), timeout=RECOVER,
                        what=f"restart {len(run.restarts)}: the writes until it seen by a handler")
        restart.handled_in = max(0.0, at - ready)
    finally:
        restart.watch_failures = run.log_since(offset).count(WATCH_FAILED)
        restart.healthz = http_get(f'http://{run.http}/healthz')[0]
    log(f"apiserver: restart {len(run.restarts)}: down {down:.1f} s, ready after {restart.unavailable:.1f} s, "
        f"the writes until then handled {restart.handled_in:.1f} s later")
    time.sleep(up)


def forced_gone(run: Run) -> None:
    """ The forced 410 (see the module's docstring). """
    ctx = run.ctx
    assert run.core is not None
    os.kill(run.core, signal.SIGSTOP)
    run.probe.frozen.set()
    try:
        apiserver('stop')
        newest_known = run.etcd.revision()  # nothing reaches the core now: it knows at most this
        run.etcd.put(BUMP_KEY, str(newest_known))
        apiserver('start')
        run.gone_changes['w-0'] = run.writer.write('w-0', create=False)
        run.gone_changes['after-410'] = run.writer.write('after-410', create=True)
        run.etcd.compact(run.etcd.revision())
        run.stale_watch = watch_from(run.env, run.namespace, newest_known)
        offset = run.log_size()
    finally:
        os.kill(run.core, signal.SIGCONT)
        run.probe.frozen.clear()
    resumed = time.monotonic()
    log(f"apiserver: forced 410 — the core resumed; a watch from revision {newest_known}: {run.stale_watch}")

    def both_handled() -> bool:
        seen = {(e['name'], e['n']) for e in run.ledger.read()}
        objects = {o['metadata']['name']: o for o in ctx.objects(run.namespace)}
        return all((name, n) in seen and name in objects and handled(objects[name])
                   for name, n in run.gone_changes.items())
    try:
        wait_until(both_handled, timeout=SETTLE, what="after the forced 410: both changes handled")
        run.after_gone = f'{time.monotonic() - resumed:.1f} s'
    finally:
        run.gone_lines = sum(1 for line in run.log_since(offset).splitlines() if WATCH_FAILED in line and GONE in line)


def disturb(run: Run) -> None:
    """ The restarts under load, the settling, the forced 410. """
    ctx = run.ctx
    count = RESTARTS_LONG if ctx.long else RESTARTS
    plan = [(ctx.random.uniform(*DOWN), ctx.random.uniform(*UP)) for _ in range(count)]
    run.operator.start()
    run.operator.wait_ready()
    run.core = core_of(run.operator, run.binary)
    if run.core is None:
        raise ScenarioFailed(f"no core ({run.binary}) found under kopf run (pid {run.operator.process})")
    run.probe.start()
    run.writer.write('w-0', create=True)
    wait_until(lambda: all(handled(o) for o in ctx.objects(run.namespace)), timeout=60,
               what="the first object handled")
    run.writer.start()
    try:
        time.sleep(ctx.random.uniform(*UP))
        for down, up in plan:
            restart_under_load(run, down, up)
    finally:
        run.writer.stop()
    try:
        wait_until(lambda: all(handled(o) for o in ctx.objects(run.namespace)), timeout=SETTLE,
                   what="after the restarts: every object handled")
    except ScenarioFailed:
        pass  # counted as lost below
    forced_gone(run)


def run(ctx: Context) -> Row:
    count = RESTARTS_LONG if ctx.long else RESTARTS
    row = Row(f'apiserver: kube-apiserver SIGKILLed and restarted {count}x under load; a forced 410 Gone')
    with exclusive_plane():
        state = Run(ctx)
        host = ctx.api.api_client.configuration.host
        if not host.endswith(f":{state.env['APISERVER_PORT']}"):
            raise ScenarioFailed(f"KUBECONFIG's API server ({host}) is not the plane of {cluster_dir()} "
                                 f"(port {state.env['APISERVER_PORT']}): set OPERON_CLUSTER_DIR to its plane")
        try:
            disturb(state)
        except ScenarioFailed as e:  # the ledger is read all the same: what went wrong before this?
            row.failures.append(str(e))
        finally:
            if state.core is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state.core, signal.SIGCONT)
            state.probe.frozen.clear()
            try:
                apiserver('start')  # in every way out: the plane is shared
            except ScenarioFailed as e:
                row.failures.append(str(e))
        plane = apiserver_ready(state.env)
        if plane != 200:  # nothing more can be read; tests/cluster/restart-apiserver.sh start mends it
            row.failures.append(f"the API server's /readyz answered {plane} after the scenario: it must be "
                                "started again on every way out")
            log(f"apiserver: FAILED: {row.failures[-1]}")  # the namespaces' cleanup may fail next
            state.probe.stop()
            return row
        readyz = http_get(f'http://{state.http}/readyz')[0]
        time.sleep(1)  # one more probe sample
        state.probe.stop()
        if state.operator.process is not None:
            code = state.operator.stop()
            row.check(code == 0, f"kopf run exited with {code} after SIGTERM")
        check(state, row, readyz)
    return row


def check(run: Run, row: Row, readyz: int | None) -> None:
    """ The figures and checks of the module's docstring, into ``row``. """
    ctx = run.ctx
    objects = {o['metadata']['name']: o for o in ctx.objects(run.namespace)}
    entries = run.ledger.read()
    seen = {(e['name'], e['n']) for e in entries}
    lost = sorted(name for name, n in run.writer.expected.items()
                  if name not in objects or not handled(objects[name]) or objects[name]['spec'].get('n') != n
                  or (name, n) not in seen)
    successes: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for entry in entries:
        successes.setdefault(key(entry), []).append(entry)
    repeated = [calls for calls in successes.values() if len(calls) > 1]
    persisted = [e for e in entries if e['persisted']]
    text = run.operator.log_path.read_text(errors='replace')
    lines = text.splitlines()
    gone_seen = sum(1 for line in lines if WATCH_FAILED in line and GONE in line)
    panics = [line for line in lines if 'panicked' in line]
    cores = {s[1] for s in run.probe.samples}
    unhealthy = [s for s in run.probe.samples if s[1] is None or s[2] != 200]
    restarts = run.restarts
    handled_in = [r.handled_in for r in restarts if r.handled_in is not None]
    row.figures.update({
        'restarts': len(restarts),
        'down s': ', '.join(f'{r.down:.1f}' for r in restarts) or '-',
        'until ready s (max)': f"{max((r.unavailable for r in restarts), default=0):.1f}",
        'objects': len(objects), 'changes': run.writer.changes,
        'writes sent again': ', '.join(f'{k} {v}' for k, v in run.writer.resent.most_common()) or '0',
        'calls': len(entries),
        'watch failures logged': sum(r.watch_failures for r in restarts),
        '410s logged': gone_seen, 'PATCHes failed': text.count(PATCH_FAILED),
        'handled after a restart s (max)': f'{max(handled_in):.1f}' if handled_in else '-',
        'core processes': len(cores - {None}), '/healthz or core down': f'{len(unhealthy)}/{len(run.probe.samples)}',
        'stale watch': run.stale_watch.split(':', 1)[0], 'after the 410: handled in': run.after_gone,
        'repeated successes': len(repeated), 'persisted re-runs': len(persisted), 'lost': len(lost),
    })
    row.check(not lost, f"{len(lost)} objects not fully handled with their final spec.n, or that value never "
                        f"seen by a handler (lost): {lost[:5]}")
    row.check(not repeated, f"{len(repeated)} successes repeated, e.g. {repeated[:1]}")
    row.check(not persisted, f"{len(persisted)} calls re-ran a persisted success, e.g. {persisted[:2]}")
    expected_restarts = RESTARTS_LONG if ctx.long else RESTARTS
    row.check(len(restarts) == expected_restarts and all(r.handled_in is not None for r in restarts),
              f"{sum(r.handled_in is not None for r in restarts)} of {expected_restarts} restarts were handled")
    quiet = [i + 1 for i, r in enumerate(restarts) if not r.watch_failures]
    row.check(not quiet, f"the core logged no broken watch ({WATCH_FAILED!r}) after restart(s) {quiet}")
    sick = [(i + 1, r.healthz) for i, r in enumerate(restarts) if r.healthz != 200]
    row.check(not sick, f"/healthz after restart (number, status): {sick}")
    row.check(len(cores) == 1 and None not in cores,
              f"the core did not run as one process under kopf run throughout: pids {cores}")
    row.check(not unhealthy and bool(run.probe.samples),
              f"the core was gone or /healthz not 200 at {len(unhealthy)} of {len(run.probe.samples)} samples, "
              f"e.g. {unhealthy[:3]}")
    row.check(readyz == 200, f"/readyz answered {readyz} at the end")
    row.check(not panics, f"the core panicked: {panics[:2]}")
    row.check(run.stale_watch.startswith('410'),
              f"a watch from the revision the frozen core knew was not answered 410 Gone but: {run.stale_watch}")
    row.check(run.gone_lines > 0, f"after the SIGCONT, the core did not log its watch's 410 ({WATCH_FAILED!r} "
                                  f"with {GONE!r})")
    row.check(run.after_gone != '-', f"after the forced 410, the changes {run.gone_changes} were not both "
                                     f"handled within {SETTLE:.0f} s")
