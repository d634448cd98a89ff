"""
Differences from Kopf that real operators hit (issue 15), each checked on the real plane with the
real core: one `kopf run` of one operator whose handlers are kept apart by a `case` label.

- Two selectors that name one resource (`'configmaps'` and `('v1', 'configmaps')`) are served as
  one resource with one watch (Kopf merges them), not as two processors that each handle it.
- A timer whose `when=` rejects an object does not put the finalizer on it (the core asks the
  service, `Match`), while one it accepts does.
- A retry's `delayed` counts from the failure, not from the cycle's start.
- A result the API server drops (ConfigMaps have no status) is logged as Kopf logs it:
  "Merge-patching finished with inconsistencies".
- `kopf.info()` about another object lands on that object (its namespace and name), not in
  `default` with an empty reference.
"""
import datetime
import json
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

import kopf
from kopf.testing import KopfRunner

pytestmark = pytest.mark.e2e

OPERATOR = '''
import time
import kopf

@kopf.on.create('configmaps', labels={'case': 'merge'}, id='by_plural')
def by_plural(**_):
    return None

@kopf.on.create('v1', 'configmaps', labels={'case': 'merge'}, id='by_version')
def by_version(**_):
    return None

@kopf.timer('configmaps', interval=1, labels={'case': 'timer'},
            when=lambda body, **_: body.get('data', {}).get('timed') == 'yes')
def tick(**_):
    pass

@kopf.on.create('configmaps', labels={'case': 'slow'})
def slow(retry, **_):
    if retry == 0:
        time.sleep(3)
        raise kopf.TemporaryError("Not yet.", delay=5)

@kopf.on.create('configmaps', labels={'case': 'dropped'})
def dropped(**_):
    return {'lost': True}

@kopf.on.create('configmaps', labels={'case': 'other'})
def about_other(namespace, **_):
    other = {'apiVersion': 'v1', 'kind': 'ConfigMap',
             'metadata': {'name': 'the-other', 'namespace': namespace, 'uid': 'u-other'}}
    kopf.info(other, reason='AboutOther', message='Posted about another object.')
'''


def _configmap(kubectl: str, namespace: str, name: str, case: str, **data: str) -> None:
    manifest = {'apiVersion': 'v1', 'kind': 'ConfigMap',
                'metadata': {'name': name, 'namespace': namespace, 'labels': {'case': case}},
                'data': data}
    subprocess.run([kubectl, 'apply', '-f', '-'], input=json.dumps(manifest).encode(),
                   check=True, capture_output=True, timeout=30)


def _get(kubectl: str, namespace: str, what: str) -> Any:
    got = subprocess.run([kubectl, 'get', '-n', namespace, what, '-o', 'json'],
                         check=True, capture_output=True, timeout=30)
    return json.loads(got.stdout)


def _until(check: Callable[[], Any], what: str, failures: list[str], timeout: float = 30) -> Any:
    """ The check's first truthy value; a timeout is recorded, so that every difference is seen. """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    failures.append(f"{what} did not happen within {timeout} s")
    return None


def _stamp(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def test_kopf_differences_on_the_real_plane(plane, namespace, tmp_path, registry, caplog):
    kubectl = plane[0]
    operator_py = tmp_path / 'differences.py'
    operator_py.write_text(OPERATOR)
    finalizer = 'kopf.zalando.org/KopfFinalizerMarker'

    failures: list[str] = []
    with KopfRunner(['run', '-n', namespace, '--standalone', '--verbose', str(operator_py)],
                    registry=registry, timeout=180) as runner:
        logged = lambda text: any(text in m for m in list(caplog.messages))
        _until(lambda: logged('Serving the resource'), "serving", failures)
        _configmap(kubectl, namespace, 'merged', 'merge')
        _configmap(kubectl, namespace, 'timed-yes', 'timer', timed='yes')
        _configmap(kubectl, namespace, 'timed-no', 'timer', timed='no')
        _configmap(kubectl, namespace, 'slow', 'slow')
        _configmap(kubectl, namespace, 'dropped', 'dropped')
        _configmap(kubectl, namespace, 'poster', 'other')

        def slow_record() -> Any:
            annotations = _get(kubectl, namespace, 'configmap/slow')['metadata'].get('annotations', {})
            record = json.loads(annotations.get('kopf.zalando.org/slow', '{}'))
            return record if record.get('delayed') else None

        # The timer the callback accepts holds the finalizer; then the rejected one has had time.
        _until(lambda: finalizer in (_get(kubectl, namespace, 'configmap/timed-yes')
                                     ['metadata'].get('finalizers') or []), "the finalizer", failures)
        record = _until(slow_record, "the slow handler's first failure", failures) or {}
        _until(lambda: logged('Merge-patching finished with inconsistencies'), "the inconsistency warning",
               failures)
        events = _until(lambda: [e for e in _get(kubectl, namespace, 'events')['items']
                                 if e['reason'] == 'AboutOther'], "an Event about the other object in its namespace",
                        failures) or []
        _until(lambda: logged("Handler 'by_version' succeeded"), "by_version", failures)
        time.sleep(2)  # room for a second processor's lines, if there were one
        timed_no = _get(kubectl, namespace, 'configmap/timed-no')
        for name in ('timed-yes', 'timed-no', 'slow', 'dropped', 'poster', 'merged'):
            subprocess.run([kubectl, 'delete', '-n', namespace, f'configmap/{name}', '--wait=false'],
                           capture_output=True, timeout=30)
        _until(lambda: all(i['metadata']['name'] == 'kube-root-ca.crt'
                           for i in _get(kubectl, namespace, 'configmaps')['items']),
               "the ConfigMaps' deletion (the timer's finalizer released)", failures)

    assert runner.exception is None, runner.output
    output = runner.output
    # One resource, one watch: each handler ran once, each line is there once.
    if output.count('Serving the resource') != 1:
        failures.append(f"served {output.count('Serving the resource')} times")
    for line in (r"/merged\] Handler 'by_plural' succeeded", r"/merged\] Handler 'by_version' succeeded",
                 r"/merged\] Creation is processed"):
        if len(re.findall(line, output)) != 1:
            failures.append(f"{line!r} is logged {len(re.findall(line, output))} times")
    # The rejected timer holds no finalizer.
    if finalizer in (timed_no['metadata'].get('finalizers') or []):
        failures.append(f"the rejected timer's object has the finalizer: {timed_no['metadata']}")
    # Delayed from the failure: 3 s of handler, then 5 s of delay.
    if record:
        gap = (_stamp(record['delayed']) - _stamp(record['started'])).total_seconds()
        if gap < 7.5:
            failures.append(f"delayed is {gap} s after started: {record}")
    # The dropped result is named.
    lines = [l for l in output.splitlines() if 'Merge-patching finished with inconsistencies' in l]
    if lines and not ('/dropped]' in lines[0] and 'lost' in lines[0]):
        failures.append(f"the inconsistency line does not name the object and field: {lines[0]}")
    # The Event is about the other object, in its namespace.
    if events:
        involved = events[0]['involvedObject']
        if (involved['kind'], involved.get('name'), involved.get('namespace')) != ('ConfigMap', 'the-other', namespace):
            failures.append(f"the Event is about {involved}")
    assert not failures, '\n'.join(failures)
