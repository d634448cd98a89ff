"""Kopf's public surface: every name, the layering, and the behaviour of the basic types."""
import pathlib
import subprocess
import sys

import pytest

import kopf

# Kopf 1.45.2's `kopf.__all__`, verbatim.
KOPF_ALL = [
    'on', 'lifecycles', 'subhandler', 'register', 'execute', 'daemon', 'timer', 'index',
    'configure', 'LogFormat', 'login_via_pykube', 'login_via_client', 'login_via_async_client',
    'login_with_kubeconfig', 'login_with_service_account', 'LoginError', 'ConnectionInfo',
    'AiohttpSession', 'event', 'info', 'warn', 'exception', 'spawn_tasks', 'run_tasks',
    'operator', 'run', 'adopt', 'label', 'not_', 'all_', 'any_', 'none_',
    'get_default_lifecycle', 'set_default_lifecycle', 'build_object_reference',
    'build_owner_reference', 'append_owner_reference', 'remove_owner_reference', 'ErrorsMode',
    'AdmissionError', 'WebhookClientConfigService', 'WebhookClientConfig', 'Operation',
    'UserInfo', 'Headers', 'SSLPeer', 'WebhookFn', 'WebhookServerProtocol', 'WebhookServer',
    'WebhookK3dServer', 'WebhookMinikubeServer', 'WebhookDockerDesktopServer',
    'WebhookNgrokTunnel', 'WebhookAutoServer', 'WebhookAutoTunnel', 'PermanentError',
    'TemporaryError', 'HandlerTimeoutError', 'HandlerRetriesError', 'OperatorRegistry',
    'get_default_registry', 'set_default_registry', 'PRESENT', 'ABSENT', 'OperatorSettings',
    'DiffBaseStorage', 'AnnotationsDiffBaseStorage', 'StatusDiffBaseStorage',
    'MultiDiffBaseStorage', 'ProgressRecord', 'ProgressStorage', 'AnnotationsProgressStorage',
    'StatusProgressStorage', 'MultiProgressStorage', 'SmartProgressStorage', 'RawEventType',
    'RawEvent', 'RawBody', 'Status', 'Spec', 'Meta', 'Body', 'BodyEssence', 'Labels',
    'Annotations', 'ObjectReference', 'OwnerReference', 'Memo', 'Index', 'Store', 'Logger',
    'ObjectLogger', 'LocalObjectLogger', 'FieldSpec', 'FieldPath', 'Diff', 'DiffItem',
    'DiffOperation', 'HandlerId', 'Reason', 'Patch', 'PatchFn', 'DaemonStopped',
    'DaemonStoppingReason', 'SyncDaemonStopperChecker', 'AsyncDaemonStopperChecker', 'Resource',
    'EVERYTHING',]

SDK = pathlib.Path(__file__).resolve().parent.parent


def test_every_public_name_of_kopf_is_here():
    missing = [name for name in KOPF_ALL if not hasattr(kopf, name)]
    assert not missing
    assert set(KOPF_ALL) <= set(kopf.__all__)


@pytest.mark.parametrize('name', [
    'create', 'update', 'delete', 'resume', 'field', 'event', 'startup', 'cleanup', 'login', 'probe',
    'validate', 'mutate',
])
def test_kopf_on_has_every_decorator(name):
    assert callable(getattr(kopf.on, name))


def test_exceptions_hierarchy():
    assert issubclass(kopf.HandlerTimeoutError, kopf.PermanentError)
    assert issubclass(kopf.HandlerRetriesError, kopf.PermanentError)
    assert issubclass(kopf.AdmissionError, kopf.PermanentError)
    assert kopf.TemporaryError("x").delay == 60
    assert kopf.TemporaryError("x", delay=5).delay == 5
    assert kopf.AdmissionError("x", code=403).code == 403
    assert kopf.HandlerRetryError is kopf.TemporaryError and kopf.HandlerFatalError is kopf.PermanentError
    assert {m.name for m in kopf.ErrorsMode} == {'IGNORED', 'TEMPORARY', 'PERMANENT'}


def test_memo_is_an_attribute_dict():
    memo = kopf.Memo()
    memo.x = 1
    assert memo['x'] == 1 and dict(memo) == {'x': 1}
    with pytest.raises(AttributeError):
        memo.y


def test_patch_views():
    patch = kopf.Patch()
    assert not patch
    patch.spec['a'] = 1
    patch.meta.labels['l'] = 'v'
    patch.metadata.annotations['n'] = None
    patch.status['s'] = {'x': 1}
    assert patch == {'spec': {'a': 1}, 'metadata': {'labels': {'l': 'v'}, 'annotations': {'n': None}},
                     'status': {'s': {'x': 1}}}
    patch.fns.append(lambda body: None)
    assert len(patch.fns) == 1


def test_body_views_are_live_and_lenient():
    body = kopf.Body({'metadata': {'name': 'n'}})
    assert dict(body.spec) == {} and dict(body.status) == {}
    assert body.meta.name == 'n' and body.metadata.namespace is None and dict(body.meta.labels) == {}


def test_diff_items():
    diff = kopf.Diff([('add', ('spec', 'x'), None, 1)])
    assert diff == [('add', ('spec', 'x'), None, 1)]
    assert diff[0].op == kopf.DiffOperation.ADD and diff[0].field == ('spec', 'x')


def test_lifecycles_are_kopfs():
    assert kopf.get_default_lifecycle() is kopf.lifecycles.asap
    assert kopf.lifecycles.all_at_once([1, 2]) == [1, 2]  # type: ignore[list-item]


def test_settings_fields():
    settings = kopf.OperatorSettings()
    assert settings.persistence.finalizer == 'kopf.zalando.org/KopfFinalizerMarker'
    assert settings.execution.default_backoff == 60
    assert settings.posting.enabled and settings.posting.level == 20
    settings.watching.server_timeout = 10  # no effect on Operon: warned at start-up (tests/test_accounting.py)
    assert isinstance(settings.persistence.progress_storage, kopf.SmartProgressStorage)


def test_hierarchy_helpers():
    owner = kopf.Body({'apiVersion': 'v1', 'kind': 'Owner', 'metadata': {
        'name': 'o', 'namespace': 'ns', 'uid': 'u', 'labels': {'app': 'x'}}})
    child: dict = {}
    kopf.adopt(child, owner=owner)
    assert child['metadata']['namespace'] == 'ns' and child['metadata']['generateName'] == 'o-'
    kopf.label(child, {'extra': 'y'})
    assert child['metadata']['labels'] == {'app': 'x', 'extra': 'y'}
    assert kopf.build_owner_reference(owner)['uid'] == 'u'
    other: dict = {'metadata': {'name': 'fixed'}}
    kopf.harmonize_naming(other, name='o', strict=True)
    kopf.adjust_namespace(other, namespace='ns')
    kopf.append_owner_reference(other, owner=owner)
    assert other['metadata']['namespace'] == 'ns' and other['metadata']['ownerReferences'][0]['name'] == 'o'


def test_the_layering_is_one_way_and_acyclic():
    """
    The import contracts of pyproject.toml (``[tool.importlinter]``: the layers, one-way, and no
    import cycles), checked by import-linter (``lint-imports``; ./tests/run.sh runs it too) --- in
    a process of its own: it re-configures logging, which disables the loggers of this one.
    """
    pytest.importorskip('importlinter', reason="import-linter is not installed (it is in the [test] extra)")
    check = 'import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))'
    done = subprocess.run([sys.executable, '-c', check], cwd=SDK, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
