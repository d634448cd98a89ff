"""
End-to-end tests of the indices (``@kopf.index``): `kopf run`, the real `operon` core, the real plane.

1. An operator of our own: an index of the ConfigMaps of the test namespace by a label, and a
   handler of KopfExamples that consults it in its ``when=`` callback and returns what it sees;
   probes served by ``--liveness``.
2. Kopf's own ``examples/16-indexing/example.py`` (from Kopf's source distribution, run as it is)
   on Pods of the test namespace, with an observer file of ours next to it.

Skipped, with the reason, when the local control plane or the `operon` binary is not available
(the fixtures `plane` and `namespace` of conftest.py: a fresh namespace per test, deleted after).
"""
import ast
import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import kopf
from kopf.testing import KopfRunner

pytestmark = pytest.mark.e2e

SDK = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = pathlib.Path('examples') / '16-indexing' / 'example.py'
LABEL = 'e2e-app'

OPERATOR = f'''
import time
import kopf

@kopf.index('configmaps', labels={{'{LABEL}': kopf.PRESENT}})
def by_app(name, labels, **_):
    time.sleep(0.3)  # slow indexing: a handler that did not wait for the first listing would see less
    return {{labels['{LABEL}']: name}}

def needed_is_indexed(spec, by_app, **_):
    needs = spec.get('needs')
    return needs is None or any(needs in store for store in by_app.values())

@kopf.on.create('kopfexamples', when=needed_is_indexed)
@kopf.on.update('kopfexamples', when=needed_is_indexed)
def seen(spec, by_app, **_):
    return {{'names': sorted(by_app.get(spec.get('app'), [])), 'keys': sorted(by_app), 'size': len(by_app)}}

@kopf.on.probe()
def apps(by_app, **_):
    return len(by_app)

@kopf.on.probe()
def contents(by_app, **_):
    return {{key: sorted(store) for key, store in by_app.items()}}
'''

# Next to Kopf's example (which is run as it is): what its `is_running` index says about each pod,
# which its own probes do not show and its timer writes only for `kube-system` and `default`.
OBSERVER = '''
import kopf

@kopf.on.probe()
def running_pods(is_running, **_):
    return sorted(name for (_, name), store in is_running.items() if any(store))
'''


# -- helpers ---------------------------------------------------------------------------------------

def _kubectl(kubectl: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([kubectl, *args], input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def _apply(kubectl: str, namespace: str, obj: dict[str, Any]) -> None:
    _kubectl(kubectl, 'apply', '-n', namespace, '-f', '-', stdin=json.dumps(obj))


def _configmap(name: str, app: str | None) -> dict[str, Any]:
    labels = {LABEL: app} if app else {}
    return {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': name, 'labels': labels},
            'data': {'x': 'y'}}


def _kopfexample(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {'apiVersion': 'kopf.dev/v1', 'kind': 'KopfExample', 'metadata': {'name': name}, 'spec': spec}


def _pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': name, 'labels': labels},
            'spec': {'containers': [{'name': 'main', 'image': 'busybox'}]}}


def _get(kubectl: str, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return json.loads(_kubectl(kubectl, 'get', '-n', namespace, kind, name, '-o', 'json'))


def _eventually(runner: KopfRunner, what: str, probe: Callable[[], Any], accept: Callable[[Any], bool],
                timeout: float = 40, pause: float = 0.5) -> Any:
    """
    Poll ``probe()`` until ``accept`` takes its value; return that value. Fails at once when the
    operator has stopped (the ``with`` block then raises the operator's own error).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if runner.future.done():
            raise AssertionError(f"{what}: the operator has stopped")
        with contextlib.suppress(OSError, ValueError):
            last = probe()
            if accept(last):
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not so within {timeout} s; the last value: {last!r}")
        time.sleep(pause)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def _health(url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    with opener.open(url, timeout=5) as response:
        return json.loads(response.read())


def _logged(caplog: pytest.LogCaptureFixture, name: str, message: str, since: float = 0) -> bool:
    """ Whether the message was logged for the object with this name (after ``since``, epoch). """
    for record in list(caplog.records):
        ref = getattr(record, 'k8s_ref', None) or {}
        if record.created >= since and ref.get('name') == name and message in record.getMessage():
            return True
    return False


def _printed_dicts(stdout: str) -> list[Any]:
    """ The Python literals printed by `pprint` (each begins at a line's start with `{`). """
    found, lines = [], stdout.splitlines()
    for start, line in enumerate(lines):
        if not line.startswith('{'):
            continue
        for end in range(start, min(start + 100, len(lines))):
            with contextlib.suppress(SyntaxError, ValueError):
                found.append(ast.literal_eval('\n'.join(lines[start:end + 1])))
                break
    return found


@pytest.fixture()
def released(plane: tuple[str, str, str], namespace: str) -> Iterator[None]:
    """
    After the test (before its namespace goes): the KopfExamples lose the operator's finalizer,
    if a failed test left one there with no operator to remove it (the namespace would hang).
    """
    yield
    kubectl = plane[0]
    names = subprocess.run([kubectl, 'get', '-n', namespace, 'kopfexamples', '-o', 'name'],
                           capture_output=True, text=True, timeout=30).stdout.split()
    for name in names:
        subprocess.run([kubectl, 'patch', '-n', namespace, name, '--type=merge',
                        '-p', '{"metadata": {"finalizers": null}}'], capture_output=True, timeout=30)


@pytest.fixture(scope='module')
def kopf_example(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """ Kopf's own example, as tests/test_originality.py finds Kopf's source (never copied here). """
    roots = [pathlib.Path(os.environ['KOPF_SOURCE'])] if os.environ.get('KOPF_SOURCE') else []
    roots.append(pathlib.Path('/tmp/kopfsrc'))
    for root in roots:
        for candidate in [root / EXAMPLE, *root.glob(f'*/{EXAMPLE}')]:
            if candidate.is_file():
                return candidate
    if os.environ.get('OPERON_NO_NETWORK') is None:
        into = tmp_path_factory.mktemp('kopf-sdist')
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps',
                            '--no-binary', ':all:', '-d', str(into), 'kopf==1.45.2'],
                           check=True, timeout=120, capture_output=True)
        for archive in into.glob('kopf-*.tar.gz'):
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter='data')
        for candidate in into.glob(f'*/{EXAMPLE}'):
            return candidate
    pytest.skip(f"Kopf's {EXAMPLE} is not available (no $KOPF_SOURCE, /tmp/kopfsrc, or network)")


# -- 1. our own operator ---------------------------------------------------------------------------

def test_index_of_configmaps_in_handlers_filters_and_probes(plane, namespace, released, tmp_path, registry, caplog):
    kubectl = plane[0]
    operator_py = tmp_path / 'indexing.py'
    operator_py.write_text(OPERATOR)
    settings = kopf.OperatorSettings()
    settings.execution.default_backoff = 1
    health = f'http://127.0.0.1:{_free_port()}/healthz'

    def kex(name: str) -> dict[str, Any]:
        return _get(kubectl, namespace, 'kopfexamples', name)

    def touched(name: str, touch: int | None = None) -> dict[str, Any]:
        """ Change the spec (if asked), wait until the core has processed the spec as it is now. """
        if touch is not None:
            _kubectl(kubectl, 'patch', '-n', namespace, 'kopfexamples', name, '--type=merge',
                     '-p', json.dumps({'spec': {'touch': touch}}))

        def processed(obj: dict[str, Any]) -> bool:
            # The core patches the status first, then the last-handled-configuration annotation.
            last = obj['metadata'].get('annotations', {}).get('kopf.zalando.org/last-handled-configuration')
            return last is not None and json.loads(last).get('spec') == obj['spec']
        return _eventually(runner, f"{name}'s spec is processed", lambda: kex(name), processed)

    def seen(obj: dict[str, Any]) -> Any:
        return obj.get('status', {}).get('seen')

    # Before the operator starts: three labelled ConfigMaps (and one that the index filters out),
    # and two KopfExamples: one that is handled at once, one that waits for a ConfigMap.
    for name, app in [('cm-a1', 'alpha'), ('cm-a2', 'alpha'), ('cm-b1', 'beta'), ('cm-plain', None)]:
        _apply(kubectl, namespace, _configmap(name, app))
    _apply(kubectl, namespace, _kopfexample('kex-early', {'app': 'alpha'}))
    _apply(kubectl, namespace, _kopfexample('kex-waiting', {'app': 'alpha', 'needs': 'cm-late'}))

    started = time.monotonic()
    with KopfRunner(['run', '-n', namespace, '--standalone', '--verbose', '--liveness', health, str(operator_py)],
                    registry=registry, settings=settings, timeout=90) as runner:
        # (a) the first call of the handler. (d) the probes: computed at the first request (then
        # cached for 10 s), which comes after that call, so after the initial listing.
        early = touched('kex-early')
        first_handled = time.monotonic() - started
        probed_initially = _eventually(runner, "the probes answer", lambda: _health(health), bool)
        # (b) kex-waiting's creation is processed without the handler (cm-late is not indexed yet)…
        waiting = touched('kex-waiting')
        # … and once cm-late is indexed, a change of the spec runs it (its when= sees cm-late).
        _apply(kubectl, namespace, _configmap('cm-late', 'alpha'))
        indexed = lambda: _logged(caplog, 'cm-late', "Handler 'by_app' succeeded")  # noqa: E731
        _eventually(runner, "cm-late is indexed", indexed, bool)
        waiting_after = touched('kex-waiting', 1)

        # (c) deleted ConfigMaps leave the index (and a key that is left without values, with them).
        _kubectl(kubectl, 'delete', '-n', namespace, 'configmap', 'cm-a1', 'cm-b1')
        probed_after_deletion = _eventually(
            runner, "the probes do not show the deleted ConfigMaps", lambda: _health(health),
            lambda answer: not {'cm-a1', 'cm-b1'} & {n for names in answer['contents'].values() for n in names})
        early_after = touched('kex-early', 1)

    assert runner.exception is None
    assert runner.exit_code == 0
    assert 'Traceback (most recent call last):' not in runner.output
    print(f"the first handler call is processed {first_handled:.1f} s after the start")

    # (a) the initial-listing gate: the three labelled ConfigMaps were indexed before the first call.
    assert seen(early) == {'names': ['cm-a1', 'cm-a2'], 'keys': ['alpha', 'beta'], 'size': 2}
    # (b) not handled at creation (its when= was false), handled after cm-late was indexed.
    assert seen(waiting) is None
    assert seen(waiting_after) == {'names': ['cm-a1', 'cm-a2', 'cm-late'], 'keys': ['alpha', 'beta'], 'size': 2}
    # (c) cm-a1 is gone from 'alpha', cm-b1 and with it 'beta' from the index.
    assert seen(early_after) == {'names': ['cm-a2', 'cm-late'], 'keys': ['alpha'], 'size': 1}
    # (d) the probes: `len(index)` and the contents (a probe's answer is cached for 10 s, as in Kopf).
    assert probed_initially == {'apps': 2, 'contents': {'alpha': ['cm-a1', 'cm-a2'], 'beta': ['cm-b1']}}
    assert probed_after_deletion == {'apps': 1, 'contents': {'alpha': ['cm-a2', 'cm-late']}}


# -- 2. Kopf's own example -------------------------------------------------------------------------

def test_kopf_example_16_indexing_on_pods(plane, namespace, released, tmp_path, registry, caplog, kopf_example):
    kubectl = plane[0]
    observer_py = tmp_path / 'observer.py'
    observer_py.write_text(OBSERVER)
    health = f'http://127.0.0.1:{_free_port()}/healthz'
    phase = lambda name: _get(kubectl, namespace, 'pod', name).get('status', {}).get('phase')  # noqa: E731

    def set_running(name: str) -> None:
        _kubectl(kubectl, 'patch', '-n', namespace, 'pod', name, '--subresource=status', '--type=merge',
                 '-p', json.dumps({'status': {'phase': 'Running'}}))

    def tick_after(moment: float) -> None:
        """ Wait for a tick of the example's timer that began after `moment` (epoch; a tick takes ms). """
        def ticked() -> bool:
            return _logged(caplog, 'kopf-example-1', "Timer 'intervalled' succeeded", since=moment + 0.2)
        _eventually(runner, "the timer ticks", ticked, bool, timeout=30)

    # Before the operator starts: two pods (there is no kubelet: they stay Pending unless told).
    _apply(kubectl, namespace, _pod('web-1', {'app': 'web', 'tier': 'front'}))
    _apply(kubectl, namespace, _pod('db-1', {'app': 'db', 'tier': 'back'}))
    set_running('db-1')
    _kubectl(kubectl, 'apply', '-n', namespace, '-f', str(SDK / 'examples' / 'obj.yaml'))

    with KopfRunner(['run', '-n', namespace, '--standalone', '--verbose', '--liveness', health,
                     str(kopf_example), str(observer_py)],
                    registry=registry, timeout=90) as runner:
        # No handler runs before the initial listing is indexed: after the timer's first tick, the
        # probes (computed at the first request, then cached for 10 s) answer about both pods.
        tick_after(0)
        first = _health(health)

        # One more pod; one more running (after web-2's creation in the watch: when the index
        # shows web-1 running, it has seen web-2 too).
        _apply(kubectl, namespace, _pod('web-2', {'app': 'web', 'tier': 'front'}))
        set_running('web-1')
        second = _eventually(runner, "the probes show web-1 running", lambda: _health(health),
                             lambda answer: 'web-1' in answer['running_pods'])
        tick_after(time.time())
        status_with_three = _get(kubectl, namespace, 'kopfexamples', 'kopf-example-1').get('status', {})

        # A pod deleted (an unscheduled pod goes at once).
        _kubectl(kubectl, 'delete', '-n', namespace, 'pod', 'web-2', '--wait=true')
        third = _eventually(runner, "the probes do not show web-2", lambda: _health(health),
                            lambda answer: 'web-2' not in answer['pod_names'])
        tick_after(time.time())
        phases = {name: phase(name) for name in ['web-1', 'db-1']}

        # The timer put the operator's finalizer on the KopfExample: it goes while the operator runs.
        _kubectl(kubectl, 'delete', '-n', namespace, 'kopfexamples', 'kopf-example-1', '--wait=false')
        _eventually(runner, "kopf-example-1 is deleted",
                    lambda: _kubectl(kubectl, 'get', '-n', namespace, 'kopfexamples', '-o', 'name'),
                    lambda names: not names.strip())

    assert runner.exception is None
    assert runner.exit_code == 0
    assert 'Traceback (most recent call last):' not in runner.output

    # The status subresource's phase sticks (nothing else writes it on this plane).
    assert phases == {'web-1': 'Running', 'db-1': 'Running'}
    # Its probes: `pod_count` (the keys of `is_running`) and `pod_names`; our `running_pods` (its values).
    for answer in (first, second, third):
        answer['pod_names'] = sorted(answer['pod_names'])
    assert first == {'pod_count': 2, 'pod_names': ['db-1', 'web-1'], 'running_pods': ['db-1']}
    assert second == {'pod_count': 3, 'pod_names': ['db-1', 'web-1', 'web-2'], 'running_pods': ['db-1', 'web-1']}
    assert third == {'pod_count': 2, 'pod_names': ['db-1', 'web-1'], 'running_pods': ['db-1', 'web-1']}
    # Its timer's `running-pods` names only pods of `kube-system` and `default`: none of this namespace.
    assert status_with_three.get('running-pods') == []
    # Its timer: `by_label` as printed (pprint) by every tick, in order, each state once: the one
    # of the listing at the first tick (the initial-listing gate), with web-2, without it. The
    # stores' values are in no particular order: compared sorted.
    printed = [{key: sorted(names) for key, names in each.items()} for each in _printed_dicts(runner.stdout)]
    states = [each for i, each in enumerate(printed) if i == 0 or each != printed[i - 1]]
    with_two = {('app', 'web'): ['web-1'], ('tier', 'front'): ['web-1'],
                ('app', 'db'): ['db-1'], ('tier', 'back'): ['db-1']}
    with_three = {('app', 'web'): ['web-1', 'web-2'], ('tier', 'front'): ['web-1', 'web-2'],
                  ('app', 'db'): ['db-1'], ('tier', 'back'): ['db-1']}
    assert states == [with_two, with_three, with_two]
