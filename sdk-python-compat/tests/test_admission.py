"""
Admission handlers (``@kopf.on.validate``/``@kopf.on.mutate``) called as the core calls them: an
``Invoke`` with the review in ``admission``. The kwargs are Kopf's webhook kwargs; raising denies
(``kopf.AdmissionError`` with its code); ``warnings`` and ``patch`` go back; and the webhook
servers become the core's ``--admission-*`` options (tunnels are refused).
"""
import asyncio
import json
from typing import Any

import pytest

import kopf
from kopf._core.reactor import running
from kopf._proto.operon.v1 import handler_pb2 as pb

from conftest import OBJ, invoke, which

WEBHOOK_KWARGS = {'body', 'spec', 'meta', 'status', 'uid', 'name', 'namespace', 'labels', 'annotations',
                  'patch', 'logger', 'memo', 'resource', 'dryrun', 'headers', 'sslpeer', 'userinfo',
                  'warnings', 'operation', 'subresource', 'old', 'new', 'diff',
                  'param', 'retry', 'started', 'runtime'}


def review_request(handler_id: str, *, operation: str = 'CREATE', obj: Any = OBJ, old: Any = None,
                   subresource: str | None = None, dry_run: bool = False) -> pb.InvokeRequest:
    review = {
        'uid': 'review-1', 'operation': operation, 'dryRun': dry_run,
        'kind': {'group': 'kopf.dev', 'version': 'v1', 'kind': 'KopfExample'},
        'resource': {'group': 'kopf.dev', 'version': 'v1', 'resource': 'kopfexamples'},
        'userInfo': {'username': 'admin', 'groups': ['system:masters']},
        'object': obj, 'oldObject': old,
    }
    if subresource is not None:
        review['subResource'] = subresource
    request = pb.InvokeRequest(
        handler_id=handler_id,
        body_json=json.dumps(obj if obj is not None else old).encode(),
        diff_json=b'[]',
        admission=pb.AdmissionCall(request_json=json.dumps(review).encode(),
                                   headers={'user-agent': 'kube-apiserver-admission'}),
    )
    if obj is not None:
        request.new_json = json.dumps(obj).encode()
    if old is not None:
        request.old_json = json.dumps(old).encode()
    return request


def test_validating_handlers_get_kopfs_webhook_kwargs(registry, backend):
    seen: dict[str, Any] = {}

    @kopf.on.validate('kopfexamples', param='p')
    def fn(**kwargs: Any) -> None:
        seen.update(kwargs)

    old = dict(OBJ, spec={'field': 'old'})
    response = invoke(backend, review_request(fn.__qualname__, operation='UPDATE', old=old,
                                              subresource='status', dry_run=True))
    assert which(response.outcome) == 'success'
    assert set(seen) == WEBHOOK_KWARGS
    assert seen['operation'] == 'UPDATE' and seen['subresource'] == 'status' and seen['dryrun'] is True
    assert seen['userinfo'] == {'username': 'admin', 'groups': ['system:masters']}
    assert seen['headers'] == {'User-Agent': 'kube-apiserver-admission'}  # as the API server sends it
    assert seen['sslpeer'] == {}
    assert seen['warnings'] == []
    assert isinstance(seen['old'], kopf.Body) and seen['old']['spec'] == {'field': 'old'}
    assert isinstance(seen['new'], kopf.Body) and seen['new']['spec']['field'] == 'value'
    assert isinstance(seen['diff'], kopf.Diff)
    assert seen['param'] == 'p' and seen['retry'] == 0
    assert seen['name'] == 'kopf-example-1' and isinstance(seen['patch'], kopf.Patch)
    assert not response.warnings and not response.patch_json and not response.HasField('admission_code')


def test_a_creation_has_no_old_body_and_no_subresource(registry, backend):
    seen: dict[str, Any] = {}

    @kopf.on.validate('kopfexamples')
    def fn(**kwargs: Any) -> None:
        seen.update(kwargs)

    assert which(invoke(backend, review_request(fn.__qualname__)).outcome) == 'success'
    assert seen['old'] is None and seen['subresource'] is None and seen['dryrun'] is False


def test_admission_error_denies_with_its_message_and_code(registry, backend):
    @kopf.on.validate('kopfexamples')
    def fn(warnings: list[str], **_: Any) -> None:
        warnings.append("before the denial")
        raise kopf.AdmissionError("I'm too lazy anyway. Go away!", code=555)

    response = invoke(backend, review_request(fn.__qualname__))
    assert which(response.outcome) == 'permanent_error'
    assert response.outcome.permanent_error.message == "I'm too lazy anyway. Go away!"
    assert response.HasField('admission_code') and response.admission_code == 555
    assert list(response.warnings) == ["before the denial"]


def test_admission_error_without_a_code_is_still_an_admission_error(registry, backend):
    @kopf.on.validate('kopfexamples')
    def fn(**_: Any) -> None:
        raise kopf.AdmissionError("no code", code=None)

    response = invoke(backend, review_request(fn.__qualname__))
    assert response.HasField('admission_code') and response.admission_code == 0


@pytest.mark.parametrize('error, outcome, message', [
    (kopf.PermanentError("perm"), 'permanent_error', 'perm'),
    (kopf.TemporaryError("temp", delay=5), 'temporary_error', 'temp'),
    (ZeroDivisionError("boom"), 'arbitrary_error', 'boom'),
    (RuntimeError(), 'arbitrary_error', 'RuntimeError()'),  # Kopf: str(e) or repr(e)
])
def test_other_exceptions_deny_too(registry, backend, error, outcome, message):
    @kopf.on.validate('kopfexamples')
    def fn(**_: Any) -> None:
        raise error

    response = invoke(backend, review_request(fn.__qualname__))
    assert which(response.outcome) == outcome
    assert getattr(response.outcome, outcome).message == message
    assert not response.HasField('admission_code')


def test_mutating_handlers_send_their_patch_and_warnings(registry, backend):
    @kopf.on.mutate('kopfexamples', labels={'somelabel': 'somevalue'})
    def fn(patch: kopf.Patch, warnings: list[str], **_: Any) -> None:
        patch.spec['injected'] = 123
        patch.metadata.labels['somelabel'] = None
        warnings.append("mutated")

    response = invoke(backend, review_request(fn.__qualname__))
    assert which(response.outcome) == 'success'
    assert json.loads(response.patch_json) == {'spec': {'injected': 123}, 'metadata': {'labels': {'somelabel': None}}}
    assert list(response.warnings) == ["mutated"]


def test_events_of_a_webhook_go_to_the_core(registry, backend):
    @kopf.on.validate('kopfexamples')
    def fn(body: kopf.Body, **_: Any) -> None:
        kopf.info(body, reason='Checked', message='Looked at it.')
        kopf.warn({'apiVersion': 'v1', 'kind': 'ConfigMap',
                   'metadata': {'name': 'other', 'namespace': 'ns1', 'uid': 'u2'}},
                  reason='Other', message='About another object.')
        raise kopf.AdmissionError("No.", code=400)

    response = invoke(backend, review_request(fn.__qualname__))
    assert which(response.outcome) == 'permanent_error'
    assert [(e.type, e.reason, e.message) for e in response.events] == [
        ('Normal', 'Checked', 'Looked at it.'), ('Warning', 'Other', 'About another object.')]
    assert response.events[0].involved_object_json == b''  # the reviewed object
    assert json.loads(response.events[1].involved_object_json)['name'] == 'other'


def test_a_denying_mutation_sends_no_patch(registry, backend):
    @kopf.on.mutate('kopfexamples')
    def fn(patch: kopf.Patch, **_: Any) -> None:
        patch.spec['injected'] = 123
        raise kopf.AdmissionError("no")

    response = invoke(backend, review_request(fn.__qualname__))
    assert which(response.outcome) == 'permanent_error' and not response.patch_json


def test_callback_filters_answer_not_matched(registry, backend):
    @kopf.on.validate('kopfexamples', when=lambda operation, **_: operation == 'DELETE')
    def fn(**_: Any) -> None:
        raise kopf.AdmissionError("never")

    response = invoke(backend, review_request(fn.__qualname__))
    assert which(response.outcome) == 'not_matched'
    response = invoke(backend, review_request(fn.__qualname__, operation='DELETE', obj=None, old=OBJ))
    assert which(response.outcome) == 'permanent_error'


def test_async_handlers_and_deadline(registry, backend):
    @kopf.on.validate('kopfexamples')
    async def fn(warnings: list[str], **_: Any) -> None:
        warnings.append("async")

    response = invoke(backend, review_request(fn.__qualname__))
    assert which(response.outcome) == 'success' and list(response.warnings) == ["async"]


# -- settings.admission → the core's options -------------------------------------------------------

def test_servers_become_core_options(tmp_path):
    assert running.admission_options(None, None) == []
    assert running.admission_options(kopf.WebhookAutoServer(), 'auto.kopf.dev') == [
        '--admission-listen', '127.0.0.1:0', '--admission-managed', 'auto.kopf.dev']
    server = kopf.WebhookServer(addr='127.0.0.1', port=1234, path='/xyz/', host='webhooks.local',
                                certfile=tmp_path / 'c.pem', pkeyfile=tmp_path / 'k.pem',
                                cafile=tmp_path / 'ca.pem', cadump=tmp_path / 'dump.pem', extra_sans=['a', 'b'])
    assert server.core_options() == [
        '--admission-listen', '127.0.0.1:1234', '--admission-host', 'webhooks.local',
        '--admission-path', '/xyz', '--admission-cert', str(tmp_path / 'c.pem'),
        '--admission-key', str(tmp_path / 'k.pem'), '--admission-ca', str(tmp_path / 'ca.pem'),
        '--admission-ca-dump', str(tmp_path / 'dump.pem'), '--admission-san', 'a', '--admission-san', 'b']
    assert kopf.WebhookK3dServer(port=9443).core_options() == [
        '--admission-listen', '0.0.0.0:9443', '--admission-host', 'host.k3d.internal']
    assert kopf.WebhookMinikubeServer().core_options()[-1] == 'host.minikube.internal'
    options = kopf.WebhookServer(cadata=b'PEM').core_options()
    with open(options[options.index('--admission-ca') + 1], 'rb') as f:
        assert f.read() == b'PEM'
    with pytest.raises(TypeError):
        kopf.WebhookServer(nonsense=1)
    assert 'insecure=True' in repr(kopf.WebhookServer(insecure=True))  # a repr never raises


@pytest.mark.parametrize('server, words', [
    (kopf.WebhookNgrokTunnel(), 'WebhookNgrokTunnel is not supported'),
    (kopf.WebhookNgrokTunnel(binary='/usr/local/bin/ngrok', token='...'), 'WebhookNgrokTunnel'),
    (kopf.WebhookAutoTunnel(), 'WebhookAutoTunnel is not supported'),
    (kopf.WebhookServer(insecure=True), 'insecure=True'),
    (kopf.WebhookServer(context=object()), 'context='),
    (kopf.WebhookServer(certfile='c.pem'), 'certfile=/pkeyfile='),
    (kopf.WebhookServer(verify_cafile='ca.pem'), 'client certificates'),
    (lambda fn: None, 'the core serves the admission webhooks itself'),
])
def test_tunnels_and_what_the_core_cannot_do_are_refused_at_start_up(server, words):
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True  # as kopf.run(standalone=True) sets it
    settings.admission.server = server
    with pytest.raises(running.OperatorError, match=words):
        running.core_argv(binary='operon', address='127.0.0.1:1', settings=settings,
                          clusterwide=True, namespaces=(), identity='me', http='127.0.0.1:2')


def test_managed_needs_a_server():
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True  # as kopf.run(standalone=True) sets it
    settings.admission.managed = 'auto.kopf.dev'
    with pytest.raises(running.OperatorError, match='needs settings.admission.server'):
        running.core_argv(binary='operon', address='127.0.0.1:1', settings=settings,
                          clusterwide=True, namespaces=(), identity='me', http='127.0.0.1:2')
    settings.admission.server = kopf.WebhookServer(port=9443)
    argv = running.core_argv(binary='operon', address='127.0.0.1:1', settings=settings,
                             clusterwide=True, namespaces=(), identity='me', http='127.0.0.1:2')
    assert argv[-4:] == ['--admission-listen', '127.0.0.1:9443', '--admission-managed', 'auto.kopf.dev']


def test_admission_handlers_without_a_server_stop_the_start_as_in_kopf(registry, monkeypatch):
    monkeypatch.setenv('OPERON_BIN', '/nonexistent/operon')

    @kopf.on.validate('kopfexamples')
    def fn(**_: Any) -> None:
        pass

    with pytest.raises(running.OperatorError, match=r"Admission handlers exist, but no admission server"):
        asyncio.run(running.operator(registry=registry, clusterwide=True, stop_flag=asyncio.Event()))
