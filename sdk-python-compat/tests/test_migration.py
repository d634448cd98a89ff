"""
Migration, mid-flight, between real Kopf and Operon --- both ways --- on the real plane.

One operator file, run unchanged by Kopf 1.45.2 (from PyPI, in ~/.cache/operon/venv-kopf, created
if missing) and by this package's ``kopf run`` (with the ``operon`` core). Its create handlers:
two that succeed at once (one sync, one async), one that fails temporarily on its first attempt
with a delay of several seconds, and a parent with two sub-handlers (one succeeds at once, one
fails temporarily like the other). Every execution is recorded in a file from inside the handlers.

Phase A, Kopf → Operon: objects are created while Kopf runs; Kopf is stopped (SIGTERM) as soon
as the annotations show the cycle mid-way (the quick handlers and the quick sub-handler succeeded,
the slow ones delayed, no diff-base yet); then Operon runs the same file: it must not run again
anything that succeeded, and it completes the cycle (the delayed ones succeed on their 2nd attempt,
the progress records are purged, the diff-base is written). Phase B is the same with new objects,
from Operon to Kopf. Neither runtime may re-run anything for the objects of the other phase.

The whole migration runs twice: with Kopf's default storages (the progress and the diff-base in
annotations), and with the status storages that an operator sets in ``@kopf.on.startup``
(``StatusProgressStorage(name='myop')``, ``StatusDiffBaseStorage(name='myop')``: the records in
``status.myop.progress``, the diff-base in ``status.myop.last-handled-configuration``, nothing in
annotations).

Skipped, with the reason, only when the plane, the core or Kopf's venv are not available.
"""
import collections
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

import realkopf
from realkopf import Operator

pytestmark = pytest.mark.e2e

PREFIX = 'kopf.zalando.org'
DIFFBASE = f'{PREFIX}/last-handled-configuration'
DELAY = 12  # seconds: the slow handlers' TemporaryError delay; the switch-over happens within it

OPERATOR = '''
import json
import os

import kopf

LOG = os.environ['MIGRATION_LOG']
RUNTIME = os.environ['MIGRATION_RUNTIME']
DELAY = float(os.environ['MIGRATION_DELAY'])


@kopf.on.startup()
def storages(settings, **_):
    if os.environ['MIGRATION_STORAGE'] == 'status':
        settings.persistence.progress_storage = kopf.StatusProgressStorage(name='myop')
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(name='myop')


def record(handler, name, retry):
    with open(LOG, 'a', encoding='utf-8') as f:
        f.write(json.dumps({'runtime': RUNTIME, 'handler': handler, 'object': name, 'retry': retry}) + '\\n')


@kopf.on.create('kopfexamples')
def quick_a(name, retry, **_):
    record('quick_a', name, retry)
    return {'runtime': RUNTIME}


@kopf.on.create('kopfexamples')
async def quick_b(name, retry, **_):
    record('quick_b', name, retry)
    return {'runtime': RUNTIME}


@kopf.on.create('kopfexamples')
def slow(name, retry, **_):
    record('slow', name, retry)
    if retry == 0:
        raise kopf.TemporaryError("Not ready yet.", delay=DELAY)
    return {'runtime': RUNTIME}


@kopf.on.create('kopfexamples')
def parent(name, retry, **_):
    record('parent', name, retry)

    @kopf.subhandler(id='sub_ok')
    def sub_ok(retry, **_):
        record('parent/sub_ok', name, retry)
        return {'runtime': RUNTIME}

    @kopf.subhandler(id='sub_slow')
    def sub_slow(retry, **_):
        record('parent/sub_slow', name, retry)
        if retry == 0:
            raise kopf.TemporaryError("Not ready yet.", delay=DELAY)
        return {'runtime': RUNTIME}
'''

QUICK = ('quick_a', 'quick_b', 'parent/sub_ok')  # succeed at the first attempt
SLOW = ('slow', 'parent/sub_slow')                # delayed at the first attempt, succeed at the 2nd
OURS = {'quick_a', 'quick_b', 'slow', 'parent', 'parent/sub_ok', 'parent/sub_slow'}


class Migration:
    """ The namespace, the objects, the operator file, the execution log, and the two runtimes. """

    def __init__(self, kubectl: str, kubeconfig: str, operon: str, kopf: str, namespace: str,
                 tmp_path: pathlib.Path, storage: str = 'annotations') -> None:
        self.kubectl, self.namespace, self.tmp_path, self.storage = kubectl, namespace, tmp_path, storage
        self.operator_py = tmp_path / 'operator.py'
        self.operator_py.write_text(OPERATOR)
        self.executions = tmp_path / 'executions.jsonl'
        self.executions.touch()
        self.env = {**os.environ, 'KUBECONFIG': kubeconfig, 'OPERON_BIN': operon,
                    'MIGRATION_LOG': str(self.executions), 'MIGRATION_DELAY': str(DELAY),
                    'MIGRATION_STORAGE': storage}
        common = ['run', '--standalone', '--verbose', '-n', namespace, str(self.operator_py)]
        self.argv = {'kopf': [kopf, *common], 'operon': [sys.executable, '-m', 'kopf', *common]}
        self.runs = 0

    def start(self, runtime: str) -> Operator:
        self.runs += 1
        log = self.tmp_path / f'{self.runs}-{runtime}.log'
        return Operator(runtime, self.argv[runtime], {**self.env, 'MIGRATION_RUNTIME': runtime}, log)

    def create(self, *names: str) -> None:
        items = [{'apiVersion': 'kopf.dev/v1', 'kind': 'KopfExample',
                  'metadata': {'name': name, 'namespace': self.namespace},
                  'spec': {'field': 'value', 'items': ['item1', 'item2']}} for name in names]
        manifest = json.dumps({'apiVersion': 'v1', 'kind': 'List', 'items': items})
        subprocess.run([self.kubectl, 'apply', '-f', '-'], input=manifest, text=True, check=True,
                       capture_output=True, timeout=30)

    def get(self, name: str) -> dict[str, Any]:
        result = subprocess.run([self.kubectl, 'get', 'kopfexamples', name, '-n', self.namespace, '-o', 'json'],
                                check=True, capture_output=True, text=True, timeout=30)
        return dict(json.loads(result.stdout))

    def records(self, name: str) -> dict[str, Any]:
        """
        The progress records on the object by key (`parent.sub_ok`), the diff-base and the touch
        marker, from the annotations or the status (`status.myop`: by the same keys), as stored.
        """
        obj = self.get(name)
        annotations = obj['metadata'].get('annotations') or {}
        found: dict[str, Any] = {}
        for key, value in annotations.items():
            if key.startswith(f'{PREFIX}/'):
                short = key[len(PREFIX) + 1:]
                found[short] = value if short in ('last-handled-configuration', 'touch-dummy') else json.loads(value)
        if self.storage == 'status':
            assert not found, f"{name}: the status storages are set, yet there are annotations: {found}"
            myop = (obj.get('status') or {}).get('myop') or {}
            for key, record in (myop.get('progress') or {}).items():
                found[key.replace('/', '.')] = record
            for key, short in [('last-handled-configuration', 'last-handled-configuration'), ('dummy', 'touch-dummy')]:
                if key in myop:
                    found[short] = myop[key]
        foreign = set(found) - {k.replace('/', '.') for k in OURS} - {'last-handled-configuration', 'touch-dummy'}
        assert not foreign, (f"{name} carries progress records of handlers that are not this test's: "
                             f"{sorted(foreign)}; is another operator serving kopfexamples in all namespaces?")
        return found

    def executions_of(self, name: str) -> list[dict[str, Any]]:
        lines = self.executions.read_text(encoding='utf-8').splitlines()
        return [entry for entry in map(json.loads, lines) if entry['object'] == name]

    def wait(self, what: str, names: Sequence[str], condition: Callable[[dict[str, Any]], bool],
             operator: Operator, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(condition(self.records(name)) for name in names):
                return
            if operator.process.poll() is not None:
                break
            time.sleep(0.2)
        states = {name: self.records(name) for name in names}
        raise AssertionError(f"{what}: not reached within {timeout} s under {operator.runtime}.\n"
                             f"records: {json.dumps(states, indent=1)}\n"
                             f"executions: {self.executions.read_text()}\n"
                             f"{operator.runtime}'s output (tail):\n{operator.tail()}")


def mid_cycle(records: Mapping[str, Any]) -> bool:
    """ The quick (sub-)handlers succeeded, the slow ones are delayed, the cycle is not done. """
    quick_done = all(records.get(h.replace('/', '.'), {}).get('success') for h in QUICK)
    slow_delayed = all(
        (r := records.get(h.replace('/', '.'))) is not None and r.get('delayed') and r.get('retries', 0) >= 1
        and not r.get('success') and not r.get('failure')
        for h in SLOW)
    return quick_done and slow_delayed and 'last-handled-configuration' not in records


def done(records: Mapping[str, Any]) -> bool:
    """ The cycle is complete: the diff-base is written and every progress record is purged. """
    return 'last-handled-configuration' in records and set(records) <= {'last-handled-configuration', 'touch-dummy'}


def migrate(m: Migration, names: Sequence[str], first: str, second: str, untouched: Sequence[str]) -> None:
    # The first runtime: it runs the quick handlers and delays the slow ones; stopped mid-cycle.
    operator = m.start(first)
    try:
        m.create(*names)
        m.wait(f"the cycle mid-way under {first}", names, mid_cycle, operator, timeout=DELAY * 0.6 + 10)
    finally:
        code = operator.stop()
    assert code == 0, f"{first} exited with {code}:\n{operator.tail()}"
    for name in names:
        records = m.records(name)
        assert mid_cycle(records), f"{name} moved on while {first} was stopping: {records}\n{operator.tail()}"
        ran = collections.Counter((e['handler'], e['runtime'], e['retry']) for e in m.executions_of(name))
        for handler in (*QUICK, *SLOW):
            assert ran[(handler, first, 0)] == 1, f"{name}: {handler} under {first}: {ran}"
            assert sum(n for (h, _, _), n in ran.items() if h == handler) == 1, f"{name}: {handler}: {ran}"
    before = {name: len(m.executions_of(name)) for name in untouched}

    # The second runtime: it completes the cycle, running nothing that has succeeded.
    operator = m.start(second)
    try:
        m.wait(f"the cycle completed under {second}", names, done, operator, timeout=DELAY + 60)
    finally:
        code = operator.stop()
    assert code == 0, f"{second} exited with {code}:\n{operator.tail()}"
    for name in names:
        runs = m.executions_of(name)
        by_handler = collections.defaultdict(list)
        for entry in runs:
            by_handler[entry['handler']].append((entry['runtime'], entry['retry']))
        for handler in QUICK:
            assert by_handler[handler] == [(first, 0)], f"{name}: {handler} ran again: {by_handler[handler]}"
        for handler in SLOW:
            assert by_handler[handler] == [(first, 0), (second, 1)], f"{name}: {handler}: {by_handler[handler]}"
        assert any(runtime == second for runtime, _ in by_handler['parent']), f"{name}: {by_handler['parent']}"
        status = m.get(name).get('status') or {}
        for handler in QUICK:
            assert status.get(handler) == {'runtime': first}, f"{name}: status.{handler}: {status}"
        for handler in SLOW:
            assert status.get(handler) == {'runtime': second}, f"{name}: status.{handler}: {status}"
    for name, count in before.items():
        assert len(m.executions_of(name)) == count, f"{second} ran handlers for {name}: {m.executions_of(name)}"


@pytest.mark.parametrize('storage', ['annotations', 'status'])
def test_migration_from_kopf_to_operon_and_back(plane, namespace, real_kopf, tmp_path, storage):
    kubectl, operon, kubeconfig = plane
    m = Migration(kubectl, kubeconfig, operon, real_kopf, namespace, tmp_path, storage)
    phase_a, phase_b = ['mig-a-1', 'mig-a-2'], ['mig-b-1', 'mig-b-2']
    migrate(m, phase_a, first='kopf', second='operon', untouched=[])
    migrate(m, phase_b, first='operon', second='kopf', untouched=phase_a)
