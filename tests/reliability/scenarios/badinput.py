"""
Bad input: objects, stored records and handler answers that are wrong in every way we could think
of, each one next to a healthy control object in the same namespace. For every case the row says
where the error shows (a Kubernetes Event on the object, the object's status or progress record,
the core's log, the dashboard's ``/api/v1/objects``), and after every case a control object is
created and must be handled: the core stayed up and kept serving.

Two operators, each with its core: ``operators/badinput.py`` under ``kopf run`` (the Kopf SDK in
front of the core), and ``operators/rawservice.py``, a service that speaks the operon.v1 contract
itself (nothing in between to catch the junk before the core sees it), with the core as its child.

The cases (one object each unless said):

1. Size (Kopf issue #1087): a spec of 250 KiB (its diff-base annotation still fits in the API
   server's 256 KiB for all annotations: handled) and one of 270 KiB (the diff-base does not fit:
   the core's PATCH is refused with 422). Checked: a ``PatchFailed`` Event and a log line on the
   big one; the PATCHes of it over the 20 s after its creation are few (the API server's audit
   log when the plane has one, else the core's ``operon_api_requests_total{code="422"}``), not a
   hot loop; the dashboard must not call it handled.
2. Malformed progress records: ``kopf.zalando.org/plain`` set to non-JSON, and to JSON of the wrong
   shape (``{"retries": "x"}``): an ``InvalidObject`` Event, a log line, no handler call; once the
   annotation is removed, the object is handled.
3. Junk answers: results that are not JSON (a set, NaN); a handler patch that changes
   ``metadata.namespace`` (refused by the core); a handler patch that the API server refuses (an
   invalid label value). Checked: the Events say why, ``retries=2`` gives 2 calls, nothing of the
   refused patches is applied; for the API-refused patch, what of it reached the object (the
   core writes the status first) is a figure, and the dashboard must not call it handled.
4. ``kopf.adopt(child)`` of a child in another namespace: Kopf keeps the child's namespace and
   raises nothing (``adjust_namespace`` sets it only when absent); the SDK must do the same. The
   Kubernetes garbage collector then deletes the child and says so (``OwnerRefInvalidNamespace``
   Event in the child's namespace): checked, as it is the only place the mistake shows.
5. A 100 MiB result (over the 64 MiB gRPC message limit: the SDK's send limit, and through the raw
   service the core's receive limit), a handler that never answers (with ``timeout=3``; and
   without: bounded by the core's ``--call-timeout``, 600 s by default, which the handler sees as
   its call's remaining time), a handler that returns 0.5 s after its ``timeout=2`` (Kopf checks
   the timeout only before a call and would record a success; the figure says what Operon does),
   and the raw service's non-JSON result, hanging and late answers (``call_timeout`` 2 s).
   Checked: the Events say why, the retries follow the options, the core stays up.

At the end both operators get SIGTERM: they must exit within 45 s (the core's own grace is 30 s,
and a call of the never-answering handler is still in flight). A thread cannot be cancelled, so
`kopf run` ends as Kopf does: SIGKILLed by itself after ``settings.process.ultimate_exiting_timeout``
(the operator sets 20 s); the raw service exits 0.
"""
import calendar
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from kubernetes.client.rest import ApiException

from harness import (GROUP, HERE, PLURAL, PREFIX, VERSION, Context, Operator, Process, Row,
                     ScenarioFailed, diff_base, free_port, http_get, metric, settled, wait_until)

LABEL = 'badinput'
KiB = 1024
NEAR, OVER = 250 * KiB, 270 * KiB  # spec sizes around the 256 KiB limit of all annotations together
WINDOW = 20.0  # seconds after the oversized object's creation in which its PATCHes are counted


def soon(predicate: Callable[[], Any], timeout: float) -> Any:
    """ ``wait_until`` that answers ``None`` instead of raising: every case is checked. """
    try:
        return wait_until(predicate, timeout=timeout, what='')
    except ScenarioFailed:
        return None


class Plane:
    """ The objects, Events and audit records of the scenario's namespaces. """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.audit = pathlib.Path(os.environ['KUBECONFIG']).parent / 'logs' / 'audit.log'
        self.audit_from = self.audit.stat().st_size if self.audit.exists() else None

    def make(self, namespace: str, name: str, case: str, spec: dict[str, Any] | None = None,
             annotations: dict[str, str] | None = None) -> float:
        body = {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'KopfExample',
                'metadata': {'name': name, 'labels': {LABEL: case}, 'annotations': annotations or {}},
                'spec': spec or {}}
        self.ctx.api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        return time.time()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.ctx.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def events(self, namespace: str, name: str, reason: str, *words: str) -> list[str]:
        """ The messages of the Events about ``name`` with this reason and all these words. """
        return [e.message or '' for e in self.ctx.events(namespace)
                if e.involved_object.name == name and e.reason == reason
                and all(w.lower() in (e.message or '').lower() for w in words)]

    def patches(self, namespace: str, name: str, since: float, until: float) -> list[int] | None:
        """ The response codes of the PATCHes of the object itself (not /status) between the two
        times, from the API server's audit log; ``None`` without one. """
        if self.audit_from is None or not self.audit.exists() or self.audit.stat().st_size < self.audit_from:
            return None  # none, or rotated meanwhile
        codes = []
        with self.audit.open('rb') as f:
            f.seek(self.audit_from)
            for raw in f:
                if b'"verb":"patch"' not in raw or f'"name":"{name}"'.encode() not in raw:
                    continue
                entry = json.loads(raw)
                ref = entry.get('objectRef', {})
                if (entry.get('stage') != 'ResponseComplete' or ref.get('namespace') != namespace
                        or ref.get('resource') != PLURAL or ref.get('subresource')):
                    continue
                when = calendar.timegm(time.strptime(entry['requestReceivedTimestamp'][:19], '%Y-%m-%dT%H:%M:%S'))
                if since - 1 <= when <= until:
                    codes.append(entry['responseStatus']['code'])
        return codes


def logged(path: pathlib.Path, name: str, *words: str) -> bool:
    """ A line of the log names the object and has all the words. """
    return any(name in line and all(w in line for w in words)
               for line in path.read_text(errors='replace').splitlines())


def excerpt(messages: list[str], word: str, width: int = 70) -> str:
    """ The part of the first message from ``word`` on, shortened: for the table. """
    for message in messages:
        at = message.lower().find(word.lower())
        if at >= 0:
            text = message[at:at + width]
            return f"'…{text}{'…' if len(message) > at + width else ''}'"
    return 'no such message'


def calls(entries: list[dict[str, Any]], name: str, handler: str) -> list[dict[str, Any]]:
    return [e for e in entries if e['name'] == name and e['handler'] == handler and e['phase'] == 'start']


def dashboard(base: str) -> dict[str, dict[str, Any]]:
    status, text = http_get(base + '/api/v1/objects')
    return {o['name']: o for o in json.loads(text)['objects']} if status == 200 else {}


def run(ctx: Context) -> Row:
    row = Row('bad input: oversized, malformed records, junk answers, huge/hanging/late calls')
    plane = Plane(ctx)
    ns, other, raw_ns = ctx.namespace('badinput'), ctx.namespace('badinput-other'), ctx.namespace('badinput-raw')
    ledger, raw_ledger = ctx.ledger('badinput'), ctx.ledger('badinput-raw')
    http, raw_http = f'127.0.0.1:{free_port()}', f'127.0.0.1:{free_port()}'
    operator = ctx.operator(HERE / 'operators' / 'badinput.py', ns, name='badinput',
                            env={'RELIABILITY_LEDGER': str(ledger.path), 'OPERON_HTTP': http})
    raw = Process(ctx, [sys.executable, str(HERE / 'operators' / 'rawservice.py'), raw_ns, raw_http],
                  name='badinput-raw', env={**ctx.base_env, 'RELIABILITY_LEDGER': str(raw_ledger.path)})
    base, raw_base = f'http://{http}', f'http://{raw_http}'
    controls: dict[str, bool] = {}

    def control(case: str, namespace: str = ns) -> None:
        """ A healthy object after the case: handled, by a core that is up. """
        name = f'ctl-{case}'
        plane.make(namespace, name, 'raw-plain' if namespace == raw_ns else 'plain')
        done = soon(lambda: (o := plane.get(namespace, name)) is not None and settled(o), 30)
        running = raw if namespace == raw_ns else operator
        up = running.process is not None and running.process.poll() is None
        healthy = http_get((raw_base if namespace == raw_ns else base) + '/healthz')[0] == 200
        controls[case] = bool(done and up and healthy)
        row.check(controls[case], f"{case}: the control object {name} not handled within 30 s, or the "
                                  f"operator down (running: {up}, /healthz 200: {healthy})")

    operator.start()
    raw.start()
    plane.make(ns, 'ctl-start', 'plain')
    plane.make(raw_ns, 'ctl-start', 'raw-plain')
    for namespace in (ns, raw_ns):
        wait_until(lambda: (o := plane.get(namespace, 'ctl-start')) is not None and settled(o), timeout=60,
                   what=f"the first control object in {namespace} handled (the operator is up)")

    # Everything bad at once (but the 100 MiB answer of the Kopf handler: making it holds the SDK's
    # event loop for seconds, which would cut the late and hanging calls before they start);
    # then each case is looked at in turn.
    created = {'adopt': plane.make(ns, 'adopt', 'adopt', {'other': other})}  # the slowest to show
    created['near'] = plane.make(ns, 'near', 'plain', {'pad': 'n' * NEAR})
    created['over'] = plane.make(ns, 'over', 'plain', {'pad': 'o' * OVER})
    for name, record in (('mal-junk', 'not json {'), ('mal-shape', '{"retries": "x"}')):
        created[name] = plane.make(ns, name, 'plain', annotations={f'{PREFIX}/plain': record})
    for case in ('junk-result', 'patch-identity', 'patch-invalid', 'hang', 'hang-timeout', 'late'):
        created[case] = plane.make(ns, case, case)
    for case in ('raw-huge', 'raw-junk', 'raw-hang', 'raw-late'):
        created[case] = plane.make(raw_ns, case, case)
    stops: dict[str, str] = {}
    try:
        size(row, plane, operator, ns, base)
        control('size')
        records(row, plane, operator, ledger.read, ns)
        control('records')
        junk(row, plane, operator, ledger.read, ns, base)
        control('junk')
        slow(row, plane, operator, ledger.read, ns)
        created['huge'] = plane.make(ns, 'huge', 'huge')
        huge(row, plane, ledger.read, ns)
        control('slow')
        raw_answers(row, plane, raw, raw_ledger.read, raw_ns)
        control('raw', raw_ns)
        owner_uid = adopted(row, plane, ns, other)
        control('adopt')
        # The oversized object's PATCHes, over the window after its creation (by now mostly gone).
        time.sleep(max(0.0, created['over'] + WINDOW - time.time()))
        codes = plane.patches(ns, 'over', created['over'], created['over'] + WINDOW)
        if codes is None:  # no audit log: the core's count of refused PATCHes (all objects)
            refused = int(metric(http_get(base + '/metrics')[1], 'operon_api_requests_total', verb='patch', code='422'))
            source = 'core /metrics, 422 of all objects'
        else:
            refused, source = sum(1 for c in codes if c == 422), 'audit log'
        said = len(plane.events(ns, 'over', 'PatchFailed'))
        row.figures['over: in 20 s'] = f"{refused} PATCHes refused ({source}), {said} PatchFailed Events"
        row.check(1 <= refused <= 5, f"size: {refused} refused PATCHes of the oversized object in "
                                     f"{WINDOW:.0f} s ({source}): expected a few, neither none nor a hot loop")
        # The operators stop while the garbage collector gets to the adopted child.
        stopping = [threading.Thread(target=stop, args=(row, name, running, stops, expected))
                    for name, running, expected in (('kopf run', operator, -signal.SIGKILL),
                                                    ('raw service', raw, 0))]
        for thread in stopping:
            thread.start()
        collected(row, plane, other, owner_uid)
        for thread in stopping:
            thread.join()
    finally:
        row.figures['controls handled'] = f"{sum(controls.values())}/{len(controls)}"
        row.figures['SIGTERM'] = ', '.join(f"{k}: {v}" for k, v in stops.items())
    return row


def stop(row: Row, name: str, running: Operator | Process, stops: dict[str, str], expected: int) -> None:
    """ SIGTERM; the exit code, or SIGKILL after 45 s (the core's own grace is 30 s). """
    started = time.monotonic()
    try:
        code: int | str = running.stop(timeout=45)
    except subprocess.TimeoutExpired:
        code = 'still running'
        running.kill9()
    stops[name] = f"{code} after {time.monotonic() - started:.0f}s"
    row.check(code == expected, f"{name} after SIGTERM: {code} within 45 s, not {expected} (a call of a "
                                f"handler that never answers was in flight)")


def size(row: Row, plane: Plane, operator: Operator, ns: str, base: str) -> None:
    near = soon(lambda: (o := plane.get(ns, 'near')) is not None and settled(o) and o, 30)
    row.check(bool(near), f"size: the {NEAR // KiB} KiB spec is not handled (its diff-base fits)")
    events = soon(lambda: plane.events(ns, 'over', 'PatchFailed', 'Too long'), 30) or []
    row.check(bool(events), "size: no PatchFailed Event saying 'Too long' on the oversized object")
    in_log = bool(soon(lambda: logged(operator.log_path, f'{ns}/over', 'Patching failed', 'Too long'), 10))
    row.check(in_log, "size: no 'Patching failed … Too long' line about the oversized object in the log")
    over = plane.get(ns, 'over') or {}
    row.check(diff_base(over) is None, "size: the oversized object has a diff-base: the limit was not hit")
    shown = dashboard(base).get('over', {})
    row.check(shown.get('phase') != 'handled',
              f"size: the dashboard says the oversized object is {shown.get('phase')!r}, "
              f"handlers {[(h['id'], h['state']) for h in shown.get('handlers', [])]}: its PATCH was refused")
    row.figures[f'{NEAR // KiB} KiB spec'] = 'handled' if near else 'NOT handled'
    row.figures[f'{OVER // KiB} KiB spec'] = (
        f"PatchFailed Event + log ({excerpt(events, 'Too long')}), no diff-base, "
        f"status {sorted(over.get('status') or {})} stored, dashboard {shown.get('phase')!r}")


def records(row: Row, plane: Plane, operator: Operator, entries: Callable[[], list[dict[str, Any]]],
            ns: str) -> None:
    said = []
    for name, words in (('mal-junk', 'not valid JSON'), ('mal-shape', 'malformed')):
        events = soon(lambda: plane.events(ns, name, 'InvalidObject', words), 30) or []
        in_log = bool(soon(lambda: logged(operator.log_path, f'{ns}/{name}', words, 'left alone'), 10))
        obj = plane.get(ns, name) or {}
        untouched = diff_base(obj) is None and not calls(entries(), name, 'plain')
        row.check(bool(events), f"records: no InvalidObject Event saying {words!r} on {name}")
        row.check(in_log, f"records: no log line about {name} saying {words!r} and 'left alone'")
        row.check(untouched, f"records: {name} was handled with its record unreadable")
        # Fixed by the user: handled then.
        plane.ctx.patch(ns, name, {'metadata': {'annotations': {f'{PREFIX}/plain': None}}})
        fixed = soon(lambda: (o := plane.get(ns, name)) is not None and settled(o), 30)
        row.check(bool(fixed), f"records: {name} not handled within 30 s after its record was removed")
        said.append(f"{name}: InvalidObject ({excerpt(events, words)}), "
                    f"{'handled' if fixed else 'NOT handled'} once removed")
    row.figures['malformed records'] = '; '.join(said)


def junk(row: Row, plane: Plane, operator: Operator, entries: Callable[[], list[dict[str, Any]]],
         ns: str, base: str) -> None:
    said: list[str] = []
    for handler, words in (('junk_set', 'not JSON serializable'), ('junk_nan', 'not JSON compliant')):
        events = soon(lambda: plane.events(ns, 'junk-result', 'HandlerFailed', handler, words), 30) or []
        said += events
        n = len(calls(entries(), 'junk-result', handler))
        row.check(bool(events), f"junk: no HandlerFailed Event for {handler} saying {words!r}")
        row.check(n == 2, f"junk: {handler} called {n} times; retries=2 allows 2")
    obj = soon(lambda: (o := plane.get(ns, 'junk-result')) is not None and settled(o) and o, 30) or {}
    row.check(not any(k.startswith('junk') for k in obj.get('status') or {}),
              f"junk: a result that is not JSON reached the status: {obj.get('status')}")
    n = len(calls(entries(), 'junk-result', 'junk_set'))
    row.figures['non-JSON results'] = f"HandlerFailed after {n} calls ({excerpt(said, 'cannot be stored')})"

    events = soon(lambda: plane.events(ns, 'patch-identity', 'HandlerFailed', 'metadata.namespace'), 30) or []
    obj = soon(lambda: (o := plane.get(ns, 'patch-identity')) is not None and settled(o) and o, 30) or {}
    n = len(calls(entries(), 'patch-identity', 'patch_identity'))
    row.check(bool(events), "junk: no HandlerFailed Event saying the patch changes metadata.namespace")
    row.check(n == 2, f"junk: patch_identity called {n} times; retries=2 allows 2")
    row.check(bool(obj) and 'applied' not in obj['spec'] and 'patch_identity' not in (obj.get('status') or {}),
              f"junk: the refused patch (or its result) was applied: spec {obj.get('spec')}, "
              f"status {obj.get('status')}")
    row.figures['patch of metadata.namespace'] = (f"HandlerFailed after {n} calls ({excerpt(events, 'refused')}), "
                                                  f"nothing applied")

    events = soon(lambda: plane.events(ns, 'patch-invalid', 'PatchFailed', 'metadata.labels'), 30) or []
    time.sleep(1)  # the second cycle (after the status write) comes a moment later
    obj = plane.get(ns, 'patch-invalid') or {'metadata': {}}
    labels = obj['metadata'].get('labels') or {}
    n = len(calls(entries(), 'patch-invalid', 'patch_invalid'))
    row.check(bool(events), "junk: no PatchFailed Event saying metadata.labels is invalid")
    row.check('spec' in obj and 'applied' not in obj['spec'] and 'bad' not in labels,
              f"junk: part of the API-refused patch was applied: spec {obj.get('spec')}, labels {labels}")
    shown = dashboard(base).get('patch-invalid', {})
    row.check(shown.get('phase') != 'handled',
              f"junk: the dashboard says patch-invalid is {shown.get('phase')!r}, handlers "
              f"{[(h['id'], h['state']) for h in shown.get('handlers', [])]}: its PATCH was refused")
    row.figures['API-refused patch'] = (
        f"{len(events)}x PatchFailed ({excerpt(events, 'metadata.labels')}), {n} calls, spec/labels untouched, "
        f"status {obj.get('status')} stored, diff-base {'yes' if diff_base(obj) else 'no'}, "
        f"dashboard {shown.get('phase')!r}")


def slow(row: Row, plane: Plane, operator: Operator, entries: Callable[[], list[dict[str, Any]]], ns: str) -> None:
    events = soon(lambda: plane.events(ns, 'hang-timeout', 'HandlerFailed', 'timed out'), 30) or []
    n = len(calls(entries(), 'hang-timeout', 'hang_timeout'))
    row.check(bool(events), "slow: no HandlerFailed Event saying hang_timeout (timeout=3) timed out")
    row.check(n == 1, f"slow: hang_timeout called {n} times; its 3 s are used up by the first call")
    row.figures['never answers, timeout=3'] = f"{n} call, HandlerFailed ({excerpt(events, 'timed out')})"

    started = soon(lambda: calls(entries(), 'hang', 'hang'), 10) or [{}]
    remaining = started[0].get('remaining') or 0
    obj = plane.get(ns, 'hang') or {'metadata': {}}
    row.check(590 <= remaining <= 600, f"slow: the never-answering call without timeout= has {remaining:.0f} s "
                                       f"left; the core's --call-timeout (600 s) should bound it")
    stored = sorted(obj['metadata'].get('annotations') or {}) or 'nothing'
    row.figures['never answers, no timeout'] = (f"call deadline {remaining:.0f} s (--call-timeout), "
                                                f"meanwhile on the object: {stored}")

    events = soon(lambda: plane.events(ns, 'late', 'HandlerFailed', 'timed out'), 30) or []
    obj = plane.get(ns, 'late') or {}
    ended = [e for e in entries() if e['name'] == 'late' and e['phase'] == 'end']
    row.check(bool(events), "slow: no HandlerFailed Event saying late (timeout=2, returns after 2.5 s) timed out")
    row.check('late' not in (obj.get('status') or {}), f"slow: the late result reached the status: {obj.get('status')}")
    row.figures['returns 0.5 s after timeout=2'] = (
        f"HandlerFailed ({excerpt(events, 'timed out')}); the handler returned anyway {len(ended)}x, result "
        f"dropped (Kopf 1.45.2 checks timeout= before a call only: a success)")


def huge(row: Row, plane: Plane, entries: Callable[[], list[dict[str, Any]]], ns: str) -> None:
    events = soon(lambda: plane.events(ns, 'huge', 'HandlerFailed', 'larger than max'), 30) or []
    n = len(calls(entries(), 'huge', 'huge'))
    row.check(bool(events), "slow: no HandlerFailed Event saying the 100 MiB answer is larger than the maximum")
    row.check(n == 2, f"slow: huge called {n} times; retries=2 allows 2")
    row.figures['100 MiB result'] = f"HandlerFailed after {n} calls ({excerpt(events, 'larger than max')})"


def raw_answers(row: Row, plane: Plane, raw: Process, entries: Callable[[], list[dict[str, Any]]], raw_ns: str) -> None:
    said = []
    for name, words in (('raw-huge', 'decoded message length too large'), ('raw-junk', 'not valid JSON'),
                        ('raw-hang', 'did not finish within 2s'), ('raw-late', 'did not finish within 2s')):
        events = soon(lambda: plane.events(raw_ns, name, 'HandlerFailed', words), 30) or []
        n = len(calls(entries(), name, name))
        obj = plane.get(raw_ns, name) or {}
        row.check(bool(events), f"raw: no HandlerFailed Event on {name} saying {words!r}")
        row.check(bool(soon(lambda: logged(raw.log_path, f'{raw_ns}/{name}', words), 10)),
                  f"raw: no log line about {name} saying {words!r}")
        row.check(n == 2, f"raw: {name} called {n} times; retries=2 allows 2")
        row.check(name not in (obj.get('status') or {}), f"raw: {name}'s answer reached the status: {obj.get('status')}")
        said.append(f"{name}: {n} calls, HandlerFailed ({excerpt(events, words)})")
    row.figures['raw service'] = '; '.join(said)


def adopted(row: Row, plane: Plane, ns: str, other: str) -> str:
    """ The owner's handler made a child in another namespace: as Kopf, no error; the owner's uid. """
    obj = soon(lambda: (o := plane.get(ns, 'adopt')) is not None and settled(o) and o, 30) or {}
    uid = str(obj.get('metadata', {}).get('uid', ''))
    result = (obj.get('status') or {}).get('adopt_elsewhere') or {}
    row.check(result.get('namespace') == other and result.get('owners') == [uid],
              f"adopt: Kopf keeps the child's namespace {other} and adds the owner reference without an error; "
              f"the handler says {result or obj.get('status')}")
    return uid


def collected(row: Row, plane: Plane, other: str, owner_uid: str) -> None:
    """ The garbage collector deletes the child and says why (the only place the mistake shows). """
    child = 'child-of-adopt'

    def gone_with_event() -> Any:
        try:
            plane.ctx.core_api.read_namespaced_config_map(child, other)
            return None
        except ApiException as e:
            return e.status == 404 and plane.events(other, child, 'OwnerRefInvalidNamespace', owner_uid)
    events = soon(gone_with_event, 90) or []
    row.check(bool(events), f"adopt: the child in {other} was not deleted by the garbage collector with an "
                            f"OwnerRefInvalidNamespace Event within 90 s")
    row.figures['adopt() across namespaces'] = (
        f"no error (as Kopf), the child kept its namespace; the garbage collector deleted it"
        f"{' with an OwnerRefInvalidNamespace Event there' if events else ': NO Event'}")
