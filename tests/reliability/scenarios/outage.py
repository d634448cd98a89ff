"""
A handler service outage: the handlers run in a service of their own (``kopf serve``), apart from
the core (``operon run --handler …``); the service is SIGKILLed at a random moment just after a
burst of new objects (so that calls are in flight), stays down while objects keep being created
and changed, and is started again on the same port. The core runs on the whole time.

The outage lasts 60 s in the long mode and 20 s in the short one (the short mode may shorten it
to 15 s; 20 s keeps one of the core's 15-second re-descriptions of the service inside the outage,
which is what the dashboard's "not answering" badge comes from). The core retries failed calls
after ``--default-backoff 2`` seconds (Kopf's default is 60; the recovery figure then measures the
outage, not the backoff).

Checks:

- ``lost`` — every object ends fully handled with its final ``spec.v``, and a handler call saw
  that final value (a success line in the ledger with it): must be 0.
- ``persisted re-runs`` — calls made with the handler's own success already stored on the object
  (must be 0).
- ``in-flight re-runs`` — a success repeated because its call was in flight when the service was
  killed. The rule, precisely: the earlier success line was written by the killed process (its
  ``pid``), and the core's verdict on that very call — its first "Handler '…' succeeded/failed"
  line for that object and handler after the call started (an object has one cycle at a time) —
  was a failure: the handler wrote its line, the service died before the answer reached the core,
  the core said so and called again. A success that the core received is stored and never re-run
  (``persisted`` says so if it is). ``unexplained re-runs`` — any other repeated success (must
  be 0). Successes are keyed by object and handler, and for the update handler also by value:
  a call of the update handler in flight at the kill may be repeated with a newer ``spec.v``.
- The error is visible where a user looks: every object that the core logged a failed call for
  has a Warning Event (``HandlerRetrying``); the objects still pending at the end of the outage
  carry the error in their progress record's ``message``; ``operon_handler_outcomes_total``
  counted the failed calls (the figure says under which ``outcome``); the core's log has the
  failures at ERROR level; the dashboard's overview page says the service is "not answering".
- Figures only: ``first call after restart s`` (the core reconnecting on its own) and ``all
  handled after restart s`` (the writes go on for 3 s after the restart).
- The core stays up: one and the same process (its pid) at every sample (every 0.5 s) through
  the whole run, with ``/healthz`` 200, and it exits 0 on SIGTERM at the end. ``/readyz`` means
  "every watch has its initial listing" (``operator/src/runtime/watching.rs``, ``Readiness``): it
  does not follow the handler services, so it is a figure during the outage, and checked to be
  200 after the recovery.
"""
import collections
import contextlib
import dataclasses
import datetime
import json
import pathlib
import threading
import time
from typing import Any

from harness import (CORE_READY, HERE, Context, Loop, Process, Row, ScenarioFailed, free_port, http_get, log,
                     metric, progress, settled, wait_until)

BACKOFF = 2
FAILED_OUTCOMES = ('retry', 'error', 'failure')


def running(process: Process) -> int | None:
    """ The process's pid while it runs. """
    if process.process is None or process.process.poll() is not None:
        return None
    return process.process.pid


@dataclasses.dataclass
class Probe(Loop):
    """ The core's probes, sampled every half second in a thread while the scenario runs: when,
    the core's pid (``None``: not running), the status of ``/healthz`` and of ``/readyz``. """
    core: Process
    base: str
    samples: list[tuple[float, int | None, int | None, int | None]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        Loop.__init__(self)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            healthz, _ = http_get(self.base + '/healthz')
            readyz, _ = http_get(self.base + '/readyz')
            self.samples.append((time.time(), running(self.core), healthz, readyz))


class Workload(Loop):
    """ Creates objects and changes their ``spec.v`` (always a new value) at a steady pace in a
    thread; ``expected`` is each object's last written ``spec.v``. """

    def __init__(self, ctx: Context, namespace: str, *, cap: int) -> None:
        self.ctx, self.namespace, self.cap = ctx, namespace, cap
        self.expected: dict[str, int] = {}
        self.changes = 0
        self._counter = 0
        self._lock = threading.Lock()
        super().__init__()

    def create(self, name: str) -> None:
        with self._lock:
            self._counter += 1
            v = self._counter
        self.ctx.create(self.namespace, name, {'v': v})
        with self._lock:
            self.expected[name] = v

    def change(self, name: str) -> None:
        with self._lock:
            self._counter += 1
            v = self._counter
        self.ctx.patch(self.namespace, name, {'spec': {'v': v}})
        with self._lock:
            self.expected[name] = v
            self.changes += 1

    def _run(self) -> None:
        made = 0
        try:
            while not self._stop.wait(self.ctx.random.uniform(0.1, 0.3)):
                with self._lock:
                    names = sorted(self.expected)
                if made < self.cap and (not names or self.ctx.random.random() < 0.3):
                    self.create(f'w-{made}')
                    made += 1
                else:
                    self.change(self.ctx.random.choice(names))
        except BaseException as e:  # noqa: B036 — handed over to stop()
            self._errors.append(e)


def core_lines(path: pathlib.Path) -> list[dict[str, Any]]:
    """ The core's JSON log lines, with ``time`` in Unix seconds (other lines are skipped). """
    lines = []
    for text in path.read_text(errors='replace').splitlines():
        with contextlib.suppress(ValueError, KeyError):
            line = json.loads(text)
            line['time'] = datetime.datetime.fromisoformat(line['timestamp']).timestamp()
            line.setdefault('fields', {})
            lines.append(line)
    return lines


def handled(obj: dict[str, Any], expected: int) -> bool:
    """ Settled with the final value: created, and the last change (if any) seen and answered. """
    status = obj.get('status') or {}
    v = obj['spec'].get('v')
    changed = status.get('changed/spec.v', {}).get('v')
    return (settled(obj) and v == expected and bool(status.get('created', {}).get('ok'))
            and (changed is None or changed == v))


def run(ctx: Context) -> Row:
    outage = 60.0 if ctx.long else 20.0
    row = Row(f'handler service outage: `kopf serve` SIGKILLed, down {outage:.0f}s, core runs on')
    namespace = ctx.namespace('outage')
    ledger = ctx.ledger('outage')
    grpc, http = free_port(), free_port()
    base = f'http://127.0.0.1:{http}'
    env = {**ctx.base_env, 'RELIABILITY_LEDGER': str(ledger.path)}
    service = Process(ctx, [str(ctx.kopf), 'serve', '--listen', f'127.0.0.1:{grpc}', '--log-format', 'plain',
                            str(HERE / 'operators' / 'outage.py')], name='outage-service', env=env)
    core = Process(ctx, [ctx.base_env['OPERON_BIN'], '--log-format', 'json', 'run', '--handler',
                         f'http://127.0.0.1:{grpc}', '-n', namespace, '--http', f'127.0.0.1:{http}',
                         '--default-backoff', str(BACKOFF)], name='outage-core', env=env,
                   ready_line=CORE_READY)
    killed: set[int] = set()  # the pids of the service's killed instances
    probe = Probe(core, base)
    workload = Workload(ctx, namespace, cap=30)
    burst = [f'b-{i}' for i in range(10)]
    kill_at = restart_at = 0.0
    metrics_before = metrics_during = ''
    dashboard_said = False
    pending_at_end: list[dict[str, Any]] = []
    recovery = None
    try:
        service.start()
        core.start()
        wait_until(lambda: http_get(base + '/readyz')[0] == 200, timeout=60, what="the core ready")
        probe.start()
        workload.start()
        time.sleep(ctx.random.uniform(1.5, 3.0))
        metrics_before = http_get(base + '/metrics')[1]
        for name in burst:  # calls in flight when the kill comes
            workload.create(name)
        time.sleep(ctx.random.uniform(0.0, 0.6))
        assert service.process is not None
        killed.add(service.process.pid)
        service.kill9()
        kill_at = time.time()
        log(f"outage: handler service killed; down for {outage:.0f}s")
        while time.time() < kill_at + outage - 1:
            dashboard_said = dashboard_said or 'not answering' in http_get(base + '/')[1]
            time.sleep(1)
        metrics_during = http_get(base + '/metrics')[1]
        pending_at_end = [o for o in ctx.objects(namespace) if progress(o)]
        time.sleep(max(0.0, kill_at + outage - time.time()))
        service.start()
        restart_at = time.time()
        time.sleep(3)
        workload.stop()
        try:
            wait_until(lambda: all(handled(o, workload.expected[o['metadata']['name']])
                                   for o in ctx.objects(namespace)), timeout=120,
                       what="every object handled after the restart")
        except ScenarioFailed:
            pass  # counted as lost below
        recovery = time.time() - restart_at
        time.sleep(1)  # one more probe sample after the recovery
        probe.stop()
        code = core.stop()
        row.check(code == 0, f"the core exited with {code} after SIGTERM")
        row.check(service.process is not None and service.stop() == 0, "the handler service was not running "
                  "to the end or did not exit 0 on SIGTERM")
    except ScenarioFailed as failed:
        row.failures.append(str(failed))
        log(f"--- {core.log_path.name} (last lines):\n{core.tail(10)}")
    finally:
        probe.stop()
        with contextlib.suppress(Exception):
            workload.stop()
        for process in (core, service):
            if process.process is not None:
                process.kill9()

    objects = {o['metadata']['name']: o for o in ctx.objects(namespace)}
    entries = ledger.read()
    lines = core_lines(core.log_path)

    # Lost: an object not handled with its final value, or whose final value no call ever saw.
    successes: dict[tuple[Any, ...], list[dict[str, Any]]] = collections.defaultdict(list)
    seen = set()
    for entry in entries:
        seen.add((entry['uid'], entry['v']))
        key = ((entry['uid'], entry['handler']) if entry['handler'] == 'created'
               else (entry['uid'], entry['handler'], entry['v']))
        successes[key].append(entry)
    lost = [name for name, v in workload.expected.items()
            if name not in objects or not handled(objects[name], v)
            or (objects[name]['metadata']['uid'], v) not in seen]

    # Repeated successes: in flight at the kill (by the rule above) or unexplained. The core's
    # verdict on a call is its first verdict line for that object and handler after the call
    # started (one cycle at a time per object).
    verdicts = [(line['time'], line['fields']['object'], line['fields'].get('message', ''), line['level'])
                for line in lines if line['fields'].get('object')
                and line['fields'].get('message', '').startswith('Handler ')
                and line.get('level') in ('INFO', 'ERROR')]

    def verdict_on(call: dict[str, Any]) -> str:
        prefix = f"Handler '{call['handler']}' "
        obj = f"{namespace}/{call['name']}"
        return next((m for t, o, m, _ in verdicts
                     if o == obj and t >= call['started'] and m.startswith(prefix)), '')

    in_flight, unexplained = 0, []
    for calls in successes.values():
        calls.sort(key=lambda e: e['started'])
        for before, after in zip(calls, calls[1:]):
            if before['pid'] in killed and ' failed ' in verdict_on(before):
                in_flight += 1
            else:
                unexplained.append((before, after))
    persisted = [e for e in entries if e['persisted']]
    restarted = [e['started'] for e in entries if e['pid'] not in killed]

    # Visible where a user looks.
    affected = {o.split('/', 1)[1] for t, o, m, level in verdicts
                if kill_at <= t and (' failed ' in m or ' could not be called ' in m) and level == 'ERROR'}
    warned = {ev.involved_object.name for ev in ctx.events(namespace)
              if ev.type == 'Warning' and ev.reason in ('HandlerRetrying', 'HandlerFailed')}
    silent = sorted(affected - warned)
    # `created` has retries=2: calls that never reached the service are no attempts, so the
    # outage must fail no handler.
    failed_for_good = sorted({ev.involved_object.name for ev in ctx.events(namespace)
                              if ev.type == 'Warning' and ev.reason == 'HandlerFailed'})
    messages = [o['metadata']['name'] for o in pending_at_end
                if any(not r.get('success') and 'handler service' in (r.get('message') or '')
                       for r in progress(o).values())]
    counted = {outcome: metric(metrics_during, 'operon_handler_outcomes_total', outcome=outcome)
               - metric(metrics_before, 'operon_handler_outcomes_total', outcome=outcome)
               for outcome in FAILED_OUTCOMES}
    down = [s for s in probe.samples if kill_at <= s[0] <= restart_at]
    recovered = [s for s in probe.samples if recovery is not None and s[0] >= restart_at + recovery]
    unhealthy = [s for s in probe.samples if not s[1] or s[2] != 200]
    cores = {s[1] for s in probe.samples}
    panics = [text for text in core.log_path.read_text(errors='replace').splitlines() if 'panicked' in text]

    row.figures.update({
        'handlers failed by the outage': len(failed_for_good),
        'outage s': f"{outage:.0f}{'' if ctx.long else ' (short mode)'}",
        'objects': len(workload.expected), 'changes': workload.changes, 'calls': len(entries),
        'failed calls counted': ', '.join(f'{k} {v:.0f}' for k, v in counted.items() if v) or '0',
        'objects with a failed call': len(affected), 'of them with a Warning Event': len(affected) - len(silent),
        'pending with the error in progress': f"{len(messages)}/{len(pending_at_end)}",
        '/readyz 200 while down': f"{sum(1 for s in down if s[3] == 200)}/{len(down)}",
        '/healthz or process down': len(unhealthy), 'core processes': len(cores),
        'persisted re-runs': len(persisted), 'in-flight re-runs': in_flight,
        'unexplained re-runs': len(unexplained), 'lost': len(lost),
        'first call after restart s': f"{min(restarted) - restart_at:.1f}" if restarted else '-',
        'all handled after restart s': f"{recovery:.1f}" if recovery is not None else '-',
    })
    row.check(not lost, f"{len(lost)} objects lost (not handled with their final spec.v, or no call saw it), "
                        f"e.g. {lost[:5]}")
    row.check(not persisted, f"{len(persisted)} calls re-ran a persisted success, e.g. {persisted[:2]}")
    row.check(not unexplained, f"{len(unexplained)} successes repeated without a kill of their call, e.g. "
                               f"{unexplained[:1]}")
    row.check(bool(affected), "no handler call failed during the outage: the scenario proved nothing")
    row.check(not silent, f"{len(silent)} objects with failed calls have no Warning Event, e.g. {silent[:5]}")
    row.check(not failed_for_good, f"{len(failed_for_good)} objects' handlers failed for good (the outage used up "
                                   f"their retries=2), e.g. {failed_for_good[:5]}")
    row.check(bool(pending_at_end) and len(messages) == len(pending_at_end),
              f"{len(pending_at_end) - len(messages)} of {len(pending_at_end)} objects pending at the end of "
              f"the outage do not show the error in their progress record")
    row.check(sum(counted.values()) > 0, "operon_handler_outcomes_total counted no failed calls during the outage")
    row.check(dashboard_said, "the dashboard never said the handler service was not answering")
    row.check(len(cores) == 1, f"the core did not run as one process throughout: pids {cores}")
    row.check(not unhealthy and len(probe.samples) > 2 * outage,
              f"the core was down or unhealthy at {len(unhealthy)} of {len(probe.samples)} samples, "
              f"e.g. {unhealthy[:3]}")
    row.check(bool(recovered) and all(s[3] == 200 for s in recovered), "/readyz is not 200 after the recovery")
    row.check(not panics, f"the core panicked: {panics[:2]}")
    return row
