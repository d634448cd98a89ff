"""
Kopf's status storages and a finalizer of the operator's own, byte-exact with Kopf, on the real plane.

One operator file, run unchanged by real Kopf 1.45.2 (from PyPI, in ~/.cache/operon/venv-kopf) and
by this package's ``kopf run`` (with the ``operon`` core), one after the other, each on its own
object (the same name, in the same fresh namespace). In ``@kopf.on.startup`` it sets
``StatusDiffBaseStorage(name='myop')``, ``StatusProgressStorage(name='myop')`` and the finalizer
``example.com/my-finalizer``. Its handlers: an index of the namespace's ConfigMaps by a label, a
create/update handler whose ``when=`` consults that index, a create handler that fails temporarily
once (so that a progress record is written, then completes), a field handler, and a delete handler
that fails temporarily once too (so that the deletion has a progress record to compare as well).

Both runtimes are driven through the same steps; at each, the object is taken when it has reached
the same state, and the two are compared whole, after normalising what must differ (uid,
resourceVersion, creationTimestamp, managedFields, the namespace; the *values* of timestamps, whose
format must still be the same):

1. ``creating``: the create handlers ran, one is delayed (its progress record in
   ``status.myop.progress``, no diff-base yet);
2. ``created``: the cycle is complete (the essence in ``status.myop.last-handled-configuration``,
   the progress purged);
3. ``updated``: ``spec.field`` changed and handled (the update and field handlers);
4. ``deleting``: deleted, the delete handler delayed, the finalizer held.

And the handlers' executions (which handler, which retry) must be the same.

Skipped, with the reason, only when the plane, the core or Kopf's venv are not available.
"""
import collections
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest


pytestmark = pytest.mark.e2e

DELAY = 5            # seconds: the TemporaryError delays; a mid-way state is taken within them
LABEL = 'e2e-storages'
NAME = 'kex-storages'
FINALIZER = 'example.com/my-finalizer'

OPERATOR = f'''
import json
import os

import kopf

LOG = os.environ['STORAGES_LOG']
DELAY = float(os.environ['STORAGES_DELAY'])


def record(handler, retry, **extra):
    with open(LOG, 'a', encoding='utf-8') as f:
        f.write(json.dumps({{'handler': handler, 'retry': retry, **extra}}) + '\\n')


@kopf.on.startup()
def configure(settings, **_):
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(name='myop')
    settings.persistence.progress_storage = kopf.StatusProgressStorage(name='myop')
    settings.persistence.finalizer = '{FINALIZER}'


@kopf.index('configmaps', labels={{'{LABEL}': kopf.PRESENT}})
def by_app(name, labels, **_):
    return {{labels['{LABEL}']: name}}


def app_is_indexed(spec, by_app, **_):
    return spec.get('app') in by_app


@kopf.on.create('kopfexamples', when=app_is_indexed)
@kopf.on.update('kopfexamples', when=app_is_indexed)
def seen(spec, by_app, retry, reason, **_):
    record('seen', retry, reason=str(getattr(reason, 'value', reason)))
    return {{'configmaps': sorted(by_app.get(spec.get('app'), []))}}


@kopf.on.create('kopfexamples')
def flaky(retry, **_):
    record('flaky', retry)
    if retry == 0:
        raise kopf.TemporaryError("Not ready yet.", delay=DELAY)
    return {{'retries': retry}}


@kopf.on.field('kopfexamples', field='spec.field')
def field_changed(old, new, retry, **_):
    record('field_changed', retry, old=old, new=new)
    return {{'old': old, 'new': new}}


@kopf.on.delete('kopfexamples')
def gone(retry, **_):
    record('gone', retry)
    if retry == 0:
        raise kopf.TemporaryError("Not gone yet.", delay=DELAY)
'''

# What must differ between two objects of two runs: dropped before comparing.
VOLATILE_METADATA = ('uid', 'resourceVersion', 'creationTimestamp', 'managedFields', 'namespace', 'selfLink')
# Timestamps (ISO 8601, as Kopf and the API server write them): their digits are masked, their format kept.
TIMESTAMP = re.compile(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?')


# -- normalising and comparing ---------------------------------------------------------------------

def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return TIMESTAMP.sub(lambda m: re.sub(r'\d', 'D', m.group(0)), value)
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


def normalised(obj: dict[str, Any]) -> dict[str, Any]:
    """ The object without what must differ between two runs; timestamps' digits masked. """
    obj = json.loads(json.dumps(obj))
    for key in VOLATILE_METADATA:
        obj.get('metadata', {}).pop(key, None)
    return dict(_mask(obj))


def differences(kopf: Any, ours: Any, path: str = '') -> list[str]:
    """ Every leaf where the two differ: ``path: Kopf's value | ours``. """
    if isinstance(kopf, dict) and isinstance(ours, dict):
        found = []
        for key in sorted(set(kopf) | set(ours)):
            where = f'{path}.{key}' if path else key
            if key not in kopf:
                found.append(f"{where}: Kopf has none | ours {json.dumps(ours[key])}")
            elif key not in ours:
                found.append(f"{where}: Kopf {json.dumps(kopf[key])} | ours has none")
            else:
                found += differences(kopf[key], ours[key], where)
        return found
    if kopf != ours or type(kopf) is not type(ours):
        return [f"{path}: Kopf {json.dumps(kopf)} | ours {json.dumps(ours)}"]
    return []


# -- the runs --------------------------------------------------------------------------------------

class Run:
    """ One runtime's run of the operator file through the steps, in the namespace. """

    def __init__(self, runtime: str, argv: list[str], kubectl: str, namespace: str, env: dict[str, str],
                 tmp_path: pathlib.Path) -> None:
        self.runtime, self.kubectl, self.namespace = runtime, kubectl, namespace
        self.executions = tmp_path / f'{runtime}-executions.jsonl'
        self.executions.touch()
        self.log = tmp_path / f'{runtime}.log'
        self._file = open(self.log, 'w', encoding='utf-8')
        env = {**env, 'STORAGES_LOG': str(self.executions), 'STORAGES_DELAY': str(DELAY)}
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._file, stderr=subprocess.STDOUT)

    def kubectl_(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run([self.kubectl, '-n', self.namespace, *args], input=stdin,
                                capture_output=True, text=True, timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def get(self) -> dict[str, Any] | None:
        result = subprocess.run([self.kubectl, '-n', self.namespace, 'get', 'kopfexamples', NAME, '-o', 'json'],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0 and 'NotFound' in result.stderr:
            return None
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def tail(self, lines: int = 80) -> str:
        return '\n'.join(self.log.read_text(encoding='utf-8', errors='replace').splitlines()[-lines:])

    def until(self, what: str, condition: Callable[[dict[str, Any] | None], bool], timeout: float,
              settle: float = 0) -> dict[str, Any] | None:
        """ The object once ``condition`` holds (and still holds ``settle`` seconds later). """
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            obj = self.get()
            if condition(obj):
                if not settle:
                    return obj
                time.sleep(settle)
                obj = self.get()
                if condition(obj):
                    return obj
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.runtime}: {what}: not so within {timeout} s.\nthe object: "
                             f"{json.dumps(obj, indent=1)}\nexecutions: {self.executions.read_text()}\n"
                             f"{self.runtime}'s output (tail):\n{self.tail()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._file.close()

    def executed(self) -> list[tuple[Any, ...]]:
        """ The handlers' executions, in their order: ``(handler, retry, …)``. """
        lines = self.executions.read_text(encoding='utf-8').splitlines()
        return [tuple(entry.values()) for entry in map(json.loads, lines)]


def _myop(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict(((obj or {}).get('status') or {}).get('myop') or {})


def _progress(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict(_myop(obj).get('progress') or {})


def creating(obj: dict[str, Any] | None) -> bool:
    """ The quick create handlers succeeded; ``flaky`` failed once and is delayed; no diff-base yet. """
    progress = _progress(obj)
    flaky = progress.get('flaky') or {}
    return (all((progress.get(key) or {}).get('success') for key in ('seen', 'field_changed/spec.field'))
            and bool(flaky.get('delayed')) and flaky.get('retries') == 1 and not flaky.get('success')
            and 'last-handled-configuration' not in _myop(obj))


def handled(field: str) -> Callable[[dict[str, Any] | None], bool]:
    """ The cycle is complete for this ``spec.field``: the essence has it, no progress is left. """
    def condition(obj: dict[str, Any] | None) -> bool:
        essence = _myop(obj).get('last-handled-configuration')
        return (essence is not None and json.loads(essence).get('spec', {}).get('field') == field
                and not _progress(obj) and obj is not None and obj['spec'].get('field') == field)
    return condition


def deleting(obj: dict[str, Any] | None) -> bool:
    """ Deleted, the finalizer held: ``gone`` failed once and is delayed. """
    gone = _progress(obj).get('gone') or {}
    return (obj is not None and 'deletionTimestamp' in obj['metadata'] and bool(gone.get('delayed'))
            and gone.get('retries') == 1 and not gone.get('success'))


def scenario(run: Run) -> dict[str, dict[str, Any]]:
    """ Create, let the retry finish, change the field, delete: the object at each step. """
    snapshots: dict[str, dict[str, Any]] = {}
    manifest = {'apiVersion': 'kopf.dev/v1', 'kind': 'KopfExample',
                'metadata': {'name': NAME, 'labels': {'somelabel': 'somevalue'},
                             'annotations': {'someannotation': 'somevalue'}},
                'spec': {'app': 'alpha', 'field': 'value', 'items': ['item1', 'item2']}}
    run.kubectl_('create', '-f', '-', stdin=json.dumps(manifest))
    found = run.until("the create handlers ran, flaky is delayed", creating, timeout=DELAY * 0.8 + 30)
    assert found is not None
    snapshots['creating'] = found
    found = run.until("the creation is handled", handled('value'), timeout=DELAY + 30, settle=1.5)
    assert found is not None
    snapshots['created'] = found
    run.kubectl_('patch', 'kopfexamples', NAME, '--type=merge', '-p', json.dumps({'spec': {'field': 'changed'}}))
    found = run.until("the update is handled", handled('changed'), timeout=30, settle=1.5)
    assert found is not None
    snapshots['updated'] = found
    run.kubectl_('delete', 'kopfexamples', NAME, '--wait=false')
    found = run.until("the deletion is under way, gone is delayed", deleting, timeout=DELAY * 0.8 + 30)
    assert found is not None
    snapshots['deleting'] = found
    run.until("the object is gone", lambda obj: obj is None, timeout=DELAY + 30)
    return snapshots


@pytest.fixture()
def released(plane: tuple[str, str, str], namespace: str) -> Iterator[None]:
    """ After the test: the object loses its finalizer if a failure left it there (the namespace would hang). """
    yield
    subprocess.run([plane[0], '-n', namespace, 'patch', 'kopfexamples', NAME, '--type=merge',
                    '-p', '{"metadata": {"finalizers": null}}'], capture_output=True, timeout=30)


def test_status_storages_and_finalizer_as_kopf_writes_them(plane, namespace, released, real_kopf, tmp_path):
    kubectl, operon, kubeconfig = plane
    operator_py = tmp_path / 'operator.py'
    operator_py.write_text(OPERATOR)
    env = {**os.environ, 'KUBECONFIG': kubeconfig, 'OPERON_BIN': operon}
    common = ['run', '--standalone', '--verbose', '-n', namespace, str(operator_py)]
    argv = {'kopf': [real_kopf, *common], 'operon': [sys.executable, '-m', 'kopf', *common]}
    configmap = {'apiVersion': 'v1', 'kind': 'ConfigMap',
                 'metadata': {'name': 'cm-alpha', 'labels': {LABEL: 'alpha'}}, 'data': {'x': 'y'}}
    subprocess.run([kubectl, '-n', namespace, 'create', '-f', '-'], input=json.dumps(configmap), text=True,
                   check=True, capture_output=True, timeout=30)

    snapshots: dict[str, dict[str, dict[str, Any]]] = {}
    executed: dict[str, list[tuple[Any, ...]]] = {}
    for runtime in ('kopf', 'operon'):  # one after the other, the same object name in one namespace
        run = Run(runtime, argv[runtime], kubectl, namespace, env, tmp_path)
        try:
            snapshots[runtime] = scenario(run)
        finally:
            code = run.stop()
            (tmp_path / f'{runtime}-objects.json').write_text(json.dumps(snapshots.get(runtime), indent=1))
        assert code == 0, f"{runtime} exited with {code}:\n{run.tail()}"
        executed[runtime] = run.executed()

    # Kopf itself, as this test expects it to be (else the comparison would prove little).
    kopfs = snapshots['kopf']
    assert kopfs['creating']['metadata']['finalizers'] == [FINALIZER]
    assert set(kopfs['created']['metadata']['annotations']) == {'someannotation'}  # nothing in annotations
    assert set(_progress(kopfs['creating'])) == {'seen', 'flaky', 'field_changed/spec.field'}
    assert _myop(kopfs['created'])['last-handled-configuration'] == (
        '{"spec":{"app":"alpha","field":"value","items":["item1","item2"]},'
        '"metadata":{"labels":{"somelabel":"somevalue"},"annotations":{"someannotation":"somevalue"}}}')

    # Operon: the same objects, step by step, and the same executions.
    found = {step: differences(normalised(kopfs[step]), normalised(snapshots['operon'][step]))
             for step in kopfs}
    report = '\n'.join(f"  {step}: {line}" for step, lines in found.items() for line in lines)
    assert not report, (f"Operon's objects differ from Kopf's (field: Kopf's value | ours):\n{report}\n"
                        f"Kopf's objects: {json.dumps(kopfs, indent=1)}\n"
                        f"Operon's objects: {json.dumps(snapshots['operon'], indent=1)}")
    assert collections.Counter(executed['operon']) == collections.Counter(executed['kopf']), (
        "The handlers ran differently (handler, retry, …), in the order of the runs:\n"
        f"Kopf:  {executed['kopf']}\nOperon: {executed['operon']}")
