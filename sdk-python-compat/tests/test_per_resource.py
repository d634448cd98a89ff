"""
One id for several resources (handlers registered in a loop): each resource's registration is
served, and the core's calls reach the registration of the call's resource, as in Kopf.
"""
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

import kopf
from kopf._core.reactor import daemons, manifests
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._transport import server

from conftest import invoke, make_request, which

RESOURCES = {
    'foos': pb.ResolvedResource(group='example.com', version='v1', plural='foos', kind='Foo', namespaced=True),
    'bars': pb.ResolvedResource(group='example.com', version='v1', plural='bars', kind='Bar', namespaced=True),
}


def body_of(plural: str) -> dict[str, Any]:
    kind = RESOURCES[plural].kind
    return {'apiVersion': 'example.com/v1', 'kind': kind,
            'metadata': {'name': f'a-{plural}', 'namespace': 'ns', 'uid': f'uid-{plural}'}}


def request_for(plural: str, handler_id: str, **kwargs: Any) -> pb.InvokeRequest:
    request = make_request(handler_id, body=body_of(plural), **kwargs)
    request.resource.CopyFrom(RESOURCES[plural])
    return request


def test_every_resource_of_an_id_is_in_the_manifest(registry):
    for plural in ('foos', 'bars'):
        @kopf.on.create('example.com', 'v1', plural, id='create')
        @kopf.on.delete('example.com', 'v1', plural, id='delete')
        def fn(**_: Any) -> None:
            pass

    build = manifests.build_manifest(registry)
    assert [(h.id, h.kind, h.resource.name) for h in build.manifest.handlers] == [
        ('delete', pb.HANDLER_KIND_DELETE, 'foos'), ('create', pb.HANDLER_KIND_CREATE, 'foos'),
        ('delete', pb.HANDLER_KIND_DELETE, 'bars'), ('create', pb.HANDLER_KIND_CREATE, 'bars')]
    assert not build.skipped


OTHER_FOOS = pb.ResolvedResource(group='other.com', version='v1', plural='foos', kind='Foo', namespaced=True)


@pytest.mark.parametrize('called', ['first', 'second'])
@pytest.mark.parametrize('selectors, resources', [
    pytest.param([('example.com', 'v1', 'foos'), ('example.com', 'v1', 'bars')],
                 [RESOURCES['foos'], RESOURCES['bars']], id='plurals'),
    pytest.param([('Foo',), ('Bar',)], [RESOURCES['foos'], RESOURCES['bars']], id='kinds'),
    pytest.param([('foo.example.com',), ('bar.example.com',)], [RESOURCES['foos'], RESOURCES['bars']], id='singulars'),
    pytest.param([('example.com', 'foos'), ('other.com', 'foos')], [RESOURCES['foos'], OTHER_FOOS], id='groups'),
    pytest.param([('example.com', 'v2', 'foos'), ('example.com', 'v1', 'foos')],
                 [pb.ResolvedResource(group='example.com', version='v2', plural='foos', kind='Foo'), RESOURCES['foos']],
                 id='versions'),
])
def test_a_call_reaches_the_registration_of_its_resource(registry, backend, selectors, resources, called):
    calls: list[tuple[int, str, str]] = []
    for index, selector in enumerate(selectors):
        @kopf.on.create(*selector, id='create')
        @kopf.on.update(*selector, id='create')
        def fn(reason: kopf.Reason, resource: kopf.Resource, _index: int = index, **_: Any) -> None:
            calls.append((_index, reason, resource.group))

    index = ['first', 'second'].index(called)
    resource = resources[index]
    for reason in ('update', 'create'):
        request = make_request('create', body=body_of(resource.plural), reason=reason)
        request.resource.CopyFrom(resource)
        assert which(invoke(backend, request).outcome) == 'success'
    assert calls == [(index, 'update', resource.group), (index, 'create', resource.group)]


def test_event_handlers_and_timers_are_per_resource_too(registry, backend):
    calls: list[str] = []
    for plural in ('foos', 'bars'):
        @kopf.on.event('example.com', 'v1', plural, id='watch')
        @kopf.timer('example.com', 'v1', plural, id='tick', interval=1)
        def fn(_plural: str = plural, **_: Any) -> None:
            calls.append(_plural)

    invoke(backend, request_for('bars', 'watch', reason=None, event_type='ADDED'))
    invoke(backend, request_for('foos', 'watch', reason=None, event_type='ADDED'))
    invoke(backend, request_for('bars', 'tick', reason=None))
    assert calls == ['bars', 'foos', 'bars']


def test_without_a_resource_in_the_call_the_first_registration_serves(registry, backend):
    calls: list[str] = []
    for plural in ('foos', 'bars'):
        @kopf.on.create('example.com', 'v1', plural, id='create')
        def fn(_plural: str = plural, **_: Any) -> None:
            calls.append(_plural)

    invoke(backend, make_request('create', body=body_of('bars')))  # from a core that sends no resource
    assert calls == ['foos']


def test_a_daemon_runs_the_registration_of_its_resource(registry, backend):
    calls: list[str] = []
    for plural in ('foos', 'bars'):
        @kopf.daemon('example.com', 'v1', plural, id='daemon')
        async def fn(stopped: kopf.DaemonStopped, _plural: str = plural, **_: Any) -> None:
            calls.append(_plural)

    async def requests() -> AsyncIterator[pb.DaemonRequest]:
        start = pb.DaemonStart(handler_id='daemon', body_json=json.dumps(body_of('bars')).encode(),
                               resource=RESOURCES['bars'])
        yield pb.DaemonRequest(start=start)
        await asyncio.sleep(10)

    async def scenario() -> list[pb.DaemonResponse]:
        return [response async for response in daemons.serve(backend, requests(), server.CallInfo())]

    responses = asyncio.run(scenario())
    assert responses[-1].exit.WhichOneof('result') == 'success'
    assert calls == ['bars']
