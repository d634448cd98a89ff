"""
Selectors, namespaces and events outside handlers (issue 15, item 4), on the real plane with the
real core:

- ``kopf.EVERYTHING``, ``category=`` and a callable selector see the objects of the resources
  they match, including a CRD installed after the start (the core re-discovers the resources);
  the ones they do not match stay unseen; a deleted CRD is no longer watched, the rest goes on.
- ``kopf run -n 'PREFIX-app-*,!*-skip'`` handles objects in a matching namespace created after
  the start and ignores the others (an excluded one, one that does not match); so does
  ``kopf.run(namespaces=[re.compile(...)])`` for whole names.
- ``kopf.info()`` from a daemon thread reaches the cluster through the core, without the
  ``kubernetes`` or ``pykube-ng`` packages.
- A login handler's revoked token gets a 401, after which the core logs in again; credentials
  with a short ``expiration`` are renewed before it, under the running watches.
"""
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from kopf.testing import KopfRunner

pytestmark = pytest.mark.e2e


def _apply(kubectl: str, manifest: dict[str, Any]) -> None:
    subprocess.run([kubectl, 'apply', '-f', '-'], input=json.dumps(manifest).encode(),
                   check=True, capture_output=True, timeout=30)


def _until(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    return None


def _crd(group: str, categories: list[str]) -> dict[str, Any]:
    return {
        'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
        'metadata': {'name': f'selthings.{group}'},
        'spec': {
            'scope': 'Namespaced', 'group': group,
            'names': {'kind': 'SelThing', 'plural': 'selthings', 'singular': 'selthing',
                      'categories': categories},
            'versions': [{'name': 'v1', 'served': True, 'storage': True, 'schema': {'openAPIV3Schema': {
                'type': 'object', 'x-kubernetes-preserve-unknown-fields': True}}}],
        },
    }


SELECTORS = '''
import kopf

RUN = {run!r}
GROUP = {group!r}

@kopf.on.event(kopf.EVERYTHING, labels={{'sel-e2e': RUN}}, id='everything')
def everything(resource, name, type, logger, **_):
    logger.info(f"EVERYTHING saw {{resource.plural}}/{{name}} {{type}}")

@kopf.on.event(category='seltest', labels={{'sel-e2e': RUN}}, id='category')
def category(resource, name, logger, **_):
    logger.info(f"CATEGORY saw {{resource.plural}}/{{name}}")

@kopf.on.event(lambda resource: resource.group == GROUP, labels={{'sel-e2e': RUN}}, id='callable')
def by_callable(resource, name, logger, **_):
    logger.info(f"CALLABLE saw {{resource.plural}}/{{name}}")
'''


def test_everything_category_and_callable_selectors_see_matching_resources(
        plane, namespace, tmp_path, registry, caplog, monkeypatch):
    kubectl = plane[0]
    run = uuid.uuid4().hex[:8]
    group = f'sel-{run}.example.com'
    monkeypatch.setenv('OPERON_RESCAN_INTERVAL', '2')
    operator_py = tmp_path / 'selectors.py'
    operator_py.write_text(SELECTORS.format(run=run, group=group))
    labels = {'sel-e2e': run}
    seen = lambda text: any(text in m for m in list(caplog.messages))
    try:
        with KopfRunner(['run', '-n', namespace, '--standalone', '--verbose', str(operator_py)],
                        registry=registry, timeout=180) as runner:
            assert _until(lambda: seen('Serving the resource')), "the core never served anything"
            _apply(kubectl, {'apiVersion': 'v1', 'kind': 'ConfigMap',
                             'metadata': {'name': 'cm-1', 'namespace': namespace, 'labels': labels}})
            assert _until(lambda: seen('EVERYTHING saw configmaps/cm-1')), "EVERYTHING did not see a ConfigMap"

            # A CRD installed after the start: the core finds it and all three selectors see it.
            _apply(kubectl, _crd(group, ['seltest']))
            subprocess.run([kubectl, 'wait', '--for=condition=Established', f'crd/selthings.{group}',
                            '--timeout=30s'], check=True, capture_output=True, timeout=40)
            assert _until(lambda: seen('Serving a newly discovered resource')), "the new CRD was not served"
            _apply(kubectl, {'apiVersion': f'{group}/v1', 'kind': 'SelThing',
                             'metadata': {'name': 'thing-1', 'namespace': namespace, 'labels': labels}})
            for who in ('EVERYTHING', 'CATEGORY', 'CALLABLE'):
                assert _until(lambda: seen(f'{who} saw selthings/thing-1')), f"{who} did not see the new CRD's object"
            # A CRD deleted: its resource is no longer watched; the others go on.
            subprocess.run([kubectl, 'delete', 'crd', f'selthings.{group}'], check=True, capture_output=True, timeout=60)
            assert _until(lambda: seen('A resource is no longer served')), "the deleted CRD is still watched"
            _apply(kubectl, {'apiVersion': 'v1', 'kind': 'ConfigMap',
                             'metadata': {'name': 'cm-2', 'namespace': namespace, 'labels': labels}})
            assert _until(lambda: seen('EVERYTHING saw configmaps/cm-2')), "EVERYTHING stopped after the CRD went"
        assert runner.exception is None, runner.output
        output = runner.output
        # The ConfigMap is neither in the category nor accepted by the callable.
        assert 'CATEGORY saw configmaps' not in output
        assert 'CALLABLE saw configmaps' not in output
        # Core Events are never served through EVERYTHING (handling posts them).
        assert 'EVERYTHING saw events/' not in output
    finally:
        subprocess.run([kubectl, 'delete', 'crd', f'selthings.{group}', '--wait=false'],
                       capture_output=True, timeout=30)


NAMESPACED = '''
import kopf

@kopf.on.create('configmaps', labels={{'ns-e2e': {run!r}}})
def created(namespace, name, logger, **_):
    logger.info(f"CREATED {{namespace}}/{{name}}")
'''


def test_namespace_globs_serve_namespaces_created_after_the_start(plane, tmp_path, registry, caplog, monkeypatch):
    kubectl, operon, kubeconfig = plane
    monkeypatch.setenv('KUBECONFIG', kubeconfig)
    monkeypatch.setenv('OPERON_BIN', operon)
    run = uuid.uuid4().hex[:8]
    prefix = f'sel-ns-{run}'
    operator_py = tmp_path / 'namespaced.py'
    operator_py.write_text(NAMESPACED.format(run=run))
    served, skipped, other = f'{prefix}-app-1', f'{prefix}-app-2-skip', f'{prefix}-other'
    seen = lambda text: any(text in m for m in list(caplog.messages))
    try:
        with KopfRunner(['run', '-n', f'{prefix}-app-*, !*-skip', '--standalone', '--verbose', str(operator_py)],
                        registry=registry, timeout=180) as runner:
            assert _until(lambda: seen('Serving the resource')), "the core never served anything"
            for ns in (served, skipped, other):
                subprocess.run([kubectl, 'create', 'namespace', ns], check=True, capture_output=True, timeout=30)
                _apply(kubectl, {'apiVersion': 'v1', 'kind': 'ConfigMap',
                                 'metadata': {'name': 'cm', 'namespace': ns, 'labels': {'ns-e2e': run}}})
            assert _until(lambda: seen(f'CREATED {served}/cm')), "the matching namespace was not served"
            time.sleep(3)  # room for the others, if they were served
        assert runner.exception is None, runner.output
        assert f'CREATED {skipped}/cm' not in runner.output
        assert f'CREATED {other}/cm' not in runner.output
        annotations = json.loads(subprocess.run(
            [kubectl, 'get', '-n', other, 'configmap/cm', '-o', 'json'],
            check=True, capture_output=True, timeout=30).stdout)['metadata'].get('annotations') or {}
        assert not any(k.startswith('kopf.zalando.org/') for k in annotations), annotations
    finally:
        for ns in (served, skipped, other):
            subprocess.run([kubectl, 'delete', 'namespace', ns, '--wait=false'], capture_output=True, timeout=30)


OUTSIDE = '''
import threading
import kopf

@kopf.on.startup()
def start(logger, **_):
    def post():
        obj = {{'apiVersion': 'v1', 'kind': 'ConfigMap',
                'metadata': {{'name': 'target', 'namespace': {namespace!r}, 'uid': 'u-target'}}}}
        kopf.info(obj, reason='FromThread', message='Posted from a daemon thread.')
    threading.Thread(target=post, daemon=True).start()

@kopf.on.event('configmaps', labels={{'never': 'matches'}})
def nothing(**_):
    pass
'''


def test_events_from_a_daemon_thread_reach_the_cluster_through_the_core(
        plane, namespace, tmp_path, registry, monkeypatch):
    kubectl = plane[0]
    # Neither client is importable: the only way to the cluster is the core.
    monkeypatch.setitem(sys.modules, 'kubernetes', None)
    monkeypatch.setitem(sys.modules, 'pykube', None)
    operator_py = tmp_path / 'outside.py'
    operator_py.write_text(OUTSIDE.format(namespace=namespace))

    def posted() -> list[Any]:
        got = subprocess.run([kubectl, 'get', '-n', namespace, 'events', '-o', 'json'],
                             check=True, capture_output=True, timeout=30)
        return [e for e in json.loads(got.stdout)['items'] if e['reason'] == 'FromThread']

    with KopfRunner(['run', '-n', namespace, '--standalone', '--verbose', str(operator_py)],
                    registry=registry, timeout=120) as runner:
        events = _until(posted, timeout=45)
    assert runner.exception is None, runner.output
    assert events, f"no Event from the thread; the output:\n{runner.output}"
    involved = events[0]['involvedObject']
    assert (involved['kind'], involved['name'], involved['namespace']) == ('ConfigMap', 'target', namespace)
    assert events[0]['message'] == 'Posted from a daemon thread.'
    assert 'neither `kubernetes` nor `pykube-ng`' not in runner.output


LOGIN = '''
import dataclasses
import datetime
import kopf

CALLS = []

@kopf.on.login()
def login(logger, **_):
    CALLS.append(1)
    real = kopf.login_with_kubeconfig()
    logger.info(f"LOGIN {{len(CALLS)}}")
    if len(CALLS) == 1:
        # A token the API server does not know (revoked): every request gets a 401.
        return dataclasses.replace(real, token='revoked-token')
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=6)
    return dataclasses.replace(real, expiration=expires)

@kopf.on.create('configmaps', labels={{'login-e2e': {run!r}}})
def created(name, logger, **_):
    logger.info(f"CREATED {{name}}")
'''


def test_login_is_renewed_on_401_and_before_expiration(plane, namespace, tmp_path, registry, caplog):
    kubectl = plane[0]
    run = uuid.uuid4().hex[:8]
    operator_py = tmp_path / 'login.py'
    operator_py.write_text(LOGIN.format(run=run))
    seen = lambda text: any(text in m for m in list(caplog.messages))

    def configmap(name: str) -> None:
        _apply(kubectl, {'apiVersion': 'v1', 'kind': 'ConfigMap',
                         'metadata': {'name': name, 'namespace': namespace, 'labels': {'login-e2e': run}}})

    with KopfRunner(['run', '-n', namespace, '--standalone', '--verbose', str(operator_py)],
                    registry=registry, timeout=180) as runner:
        # The revoked token of the first login is answered 401; the core logs in again.
        assert _until(lambda: seen('LOGIN 2')), "no re-login after the 401"
        assert _until(lambda: seen('Serving the resource')), "the core never served anything"
        configmap('before')
        assert _until(lambda: seen('CREATED before')), "not handled with the second login's credentials"
        # The second login expires in 6 s: the core logs in again before, and goes on serving.
        assert _until(lambda: seen('LOGIN 3'), timeout=30), "no re-login before the expiration"
        configmap('after')
        assert _until(lambda: seen('CREATED after')), "not handled after the renewal"
    assert runner.exception is None, runner.output
    output = runner.output
    assert '401 Unauthorized' in output
    assert 'Re-authentication has finished.' in output
    # Renewed under the running watches: the resource was served once, never restarted.
    assert output.count('Serving the resource') == 1, output


def test_namespace_regexes_of_kopf_run_serve_whole_names(plane, registry, monkeypatch):
    import re
    import threading

    import kopf
    kubectl, operon, kubeconfig = plane
    monkeypatch.setenv('KUBECONFIG', kubeconfig)
    monkeypatch.setenv('OPERON_BIN', operon)
    run = uuid.uuid4().hex[:8]
    prefix = f'sel-re-{run}'
    created: list[str] = []

    @kopf.on.create('configmaps', labels={'re-e2e': run}, registry=registry)
    def on_create(namespace: str, **_: Any) -> None:
        created.append(namespace)

    stop = threading.Event()
    thread = threading.Thread(target=kopf.run, kwargs=dict(
        registry=registry, standalone=True, stop_flag=stop,
        namespaces=[re.compile(rf'{prefix}-(one|TWO)', re.IGNORECASE)]))
    served, also, ignored = f'{prefix}-one', f'{prefix}-two', f'{prefix}-one-more'
    thread.start()
    try:
        for ns in (served, also, ignored):
            subprocess.run([kubectl, 'create', 'namespace', ns], check=True, capture_output=True, timeout=30)
            _apply(kubectl, {'apiVersion': 'v1', 'kind': 'ConfigMap',
                             'metadata': {'name': 'cm', 'namespace': ns, 'labels': {'re-e2e': run}}})
        assert _until(lambda: {served, also} <= set(created)), f"served: {created}"
        time.sleep(3)
        assert ignored not in created, "a namespace that only starts with the expression's match"
    finally:
        stop.set()
        thread.join(timeout=60)
        for ns in (served, also, ignored):
            subprocess.run([kubectl, 'delete', 'namespace', ns, '--wait=false'], capture_output=True, timeout=30)
