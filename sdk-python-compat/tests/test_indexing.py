"""Indexes (``@kopf.index``): fed by the core's index calls, seen by every handler as Kopf shows them."""
import asyncio
import datetime
import json
import logging
import textwrap
import urllib.request
from typing import Any

import grpc
import pytest

import kopf
from kopf._core import activities, model
from kopf._core.reactor import handling, manifests
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from kopf._transport import core as corep
from kopf.testing import KopfRunner

from conftest import OBJ, invoke, make_request, which
from test_daemons import Core, run as run_daemons

PODS = pb.ResolvedResource(group='', version='v1', plural='pods', kind='Pod', namespaced=True)
SERVICES = pb.ResolvedResource(group='', version='v1', plural='services', kind='Service', namespaced=True)
NODES = pb.ResolvedResource(group='', version='v1', plural='nodes', kind='Node', namespaced=False)

INDEX_KWARGS = {'body', 'spec', 'meta', 'status', 'uid', 'name', 'namespace', 'labels', 'annotations',
                'patch', 'logger', 'memo', 'resource', 'param', 'retry', 'started', 'runtime'}


def pod(name: str, namespace: str | None = 'default', *, labels: dict[str, str] | None = None,
        phase: str | None = None, kind: str = 'Pod', uid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {'name': name, 'uid': uid or f'uid-{namespace}-{name}'}
    if namespace is not None:
        meta['namespace'] = namespace
    if labels is not None:
        meta['labels'] = labels
    body: dict[str, Any] = {'apiVersion': 'v1', 'kind': kind, 'metadata': meta, 'spec': {}}
    if phase is not None:
        body['status'] = {'phase': phase}
    return body


def event(handler_id: str, event_type: str, body: dict[str, Any],
          resource: pb.ResolvedResource = PODS) -> pb.InvokeRequest:
    return pb.InvokeRequest(handler_id=handler_id, event_type=event_type, body_json=json.dumps(body).encode(),
                            resource=resource)


def listed(handler_id: str, namespace: str | None, objects: list[list[str | None]],
           resource: pb.ResolvedResource = PODS) -> pb.InvokeRequest:
    body = {'namespace': namespace, 'objects': objects}
    return pb.InvokeRequest(handler_id=handler_id, event_type='LISTED', body_json=json.dumps(body).encode(),
                            resource=resource)


def feed(backend: handling.OperatorBackend, *requests: pb.InvokeRequest) -> list[pb.InvokeResponse]:
    return [invoke(backend, request) for request in requests]


def contents(index: Any) -> dict[Any, list[Any]]:
    return {key: list(store) for key, store in index.items()}


def indices(backend: handling.OperatorBackend) -> dict[str, Any]:
    """ The indices as a handler sees them: through a real call of a change handler. """
    seen: dict[str, Any] = {}

    def peek(**kwargs: Any) -> None:
        seen.update(kwargs)

    kopf.on.create('kopfexamples', id='peek', registry=backend.registry)(peek)
    try:
        assert which(invoke(backend, make_request('peek')).outcome) == 'success'
    finally:
        backend.registry.handlers[:] = [h for h in backend.registry.handlers if h.id != 'peek']
    return {h.id: seen[h.id] for h in backend.registry.of_kinds('index')}


# -- the manifest ---------------------------------------------------------------------------------

def test_index_handlers_are_in_the_manifest_with_their_filters_and_options(registry):
    @kopf.index('pods', labels={'app': 'x'}, errors=kopf.ErrorsMode.PERMANENT, retries=3, backoff=5)
    def by_name(name: str, **_: Any) -> Any:
        return name

    build = manifests.build_manifest(registry)
    assert not build.skipped
    [handler] = build.manifest.handlers
    assert handler.id == by_name.__qualname__
    assert handler.kind == pb.HANDLER_KIND_INDEX
    assert handler.resource == pb.ResourceSelector(group='', version='', name='pods')
    assert handler.filters.labels['app'].equals_json == b'"x"'
    assert not handler.filters.has_callback_filters
    assert handler.options.errors == pb.ERRORS_MODE_PERMANENT
    assert handler.options.retries == 3 and handler.options.backoff.seconds == 5


def module_level_index(**_: Any) -> Any:
    return None


def test_an_index_id_has_no_field_suffix_as_in_kopf(registry):
    kopf.index('pods', field='status.phase')(module_level_index)
    kopf.timer('pods', field='status.phase')(module_level_index)
    assert [h.id for h in registry] == ['module_level_index', 'module_level_index/status.phase']


# -- kopf.Index and kopf.Store --------------------------------------------------------------------

def test_the_public_classes_are_read_only_interfaces():
    with pytest.raises(TypeError):
        kopf.Index()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        kopf.Store()  # type: ignore[abstract]


def test_index_and_store_behave_as_kopfs(registry, backend):
    @kopf.index('pods', id='by_label')
    def by_label(labels: kopf.Labels, name: str, **_: Any) -> Any:
        return {(label, value): name for label, value in labels.items()}

    feed(backend,
         event('by_label', 'ADDED', pod('p1', labels={'app': 'a', 'tier': 'web'})),
         event('by_label', 'ADDED', pod('p2', labels={'app': 'b'})),
         event('by_label', 'ADDED', pod('p3', labels={'app': 'a'})))
    index = indices(backend)['by_label']
    assert isinstance(index, kopf.Index)
    assert list(index) == [('app', 'a'), ('tier', 'web'), ('app', 'b')]  # in the order of first sight
    assert len(index) == 3 and bool(index)
    assert ('app', 'a') in index and ('app', 'c') not in index
    store = index[('app', 'a')]
    assert isinstance(store, kopf.Store)
    assert list(store) == ['p1', 'p3'] and len(store) == 2 and 'p3' in store and 'p2' not in store
    assert repr(store) == "['p1', 'p3']"
    assert repr(index) == "{('app', 'a'): ['p1', 'p3'], ('tier', 'web'): ['p1'], ('app', 'b'): ['p2']}"
    assert index.get(('app', 'c')) is None
    with pytest.raises(KeyError):
        index[('app', 'c')]
    with pytest.raises(TypeError):
        index[('app', 'a')] = store  # type: ignore[index]
    assert not hasattr(store, 'add') and not hasattr(store, 'append')
    assert store != ['p1', 'p3'] and store == store  # stores compare by identity, as Kopf's
    assert index != {} and indices(backend)['by_label'] == index

    # A changed object keeps its place in a store; a store left empty disappears with its key.
    feed(backend, event('by_label', 'MODIFIED', pod('p1', labels={'app': 'a'})))
    assert list(index) == [('app', 'a'), ('app', 'b')]
    assert list(index[('app', 'a')]) == ['p1', 'p3'] and index[('app', 'a')] is store
    feed(backend, event('by_label', 'MODIFIED', pod('p1', labels={'app': 'b', 'tier': 'web'})))
    assert contents(index) == {('app', 'a'): ['p3'], ('app', 'b'): ['p2', 'p1'], ('tier', 'web'): ['p1']}
    feed(backend, event('by_label', 'DELETED', pod('p3', labels={'app': 'a'})))
    assert contents(index) == {('app', 'b'): ['p2', 'p1'], ('tier', 'web'): ['p1']}
    assert list(store) == []  # the held store is empty, and no more in the index


def test_an_index_is_empty_before_any_event_and_the_same_object_everywhere(registry, backend):
    @kopf.index('pods', id='pods_idx')
    def pods_idx(**_: Any) -> Any:
        return 1

    first = indices(backend)['pods_idx']
    assert isinstance(first, kopf.Index) and dict(first) == {} and not first
    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    assert indices(backend)['pods_idx'] is first and contents(first) == {None: [1]}


# -- the events -----------------------------------------------------------------------------------

def test_contents_after_added_modified_deleted(registry, backend):
    @kopf.index('pods', id='phases')
    def phases(name: str, status: kopf.Status, **_: Any) -> Any:
        return {name: status.get('phase')}

    responses = feed(backend,
                     event('phases', 'ADDED', pod('p1', phase='Pending')),
                     event('phases', 'ADDED', pod('p2', phase='Running')))
    assert [which(r.outcome) for r in responses] == ['success', 'success']
    assert contents(indices(backend)['phases']) == {'p1': ['Pending'], 'p2': ['Running']}
    feed(backend, event('phases', 'MODIFIED', pod('p1', phase='Running')))
    assert contents(indices(backend)['phases']) == {'p1': ['Running'], 'p2': ['Running']}
    [response] = feed(backend, event('phases', 'DELETED', pod('p2', phase='Running')))
    assert which(response.outcome) == 'success'
    assert contents(indices(backend)['phases']) == {'p1': ['Running']}


def test_a_listing_drops_the_objects_of_its_scope_that_are_not_listed(registry, backend):
    @kopf.index('pods', id='names')
    def names(namespace: str | None, name: str, **_: Any) -> Any:
        return f'{namespace}/{name}'

    feed(backend, *(event('names', 'ADDED', pod(n, ns)) for ns in ('ns1', 'ns2') for n in ('a', 'b')))
    [response] = feed(backend, listed('names', 'ns1', [['ns1', 'b'], ['ns1', 'c']]))
    assert which(response.outcome) == 'success'
    assert contents(indices(backend)['names']) == {None: ['ns1/b', 'ns2/a', 'ns2/b']}
    feed(backend, listed('names', None, [['ns2', 'b']]))
    assert contents(indices(backend)['names']) == {None: ['ns2/b']}
    feed(backend, listed('names', None, []))
    assert contents(indices(backend)['names']) == {}


def test_a_listing_of_cluster_scoped_objects(registry, backend):
    @kopf.index('nodes', id='node_names')
    def node_names(name: str, **_: Any) -> Any:
        return name

    feed(backend, *(event('node_names', 'ADDED', pod(n, None, kind='Node'), NODES) for n in ('n1', 'n2', 'n3')))
    feed(backend, listed('node_names', None, [['', 'n1'], [None, 'n3']], NODES))  # the core sends "" or null
    assert contents(indices(backend)['node_names']) == {None: ['n1', 'n3']}


def test_a_listing_drops_only_its_own_resources_contributions(registry, backend):
    @kopf.index('pods', id='things')
    @kopf.index('services', id='things')
    def things(name: str, resource: kopf.Resource, **_: Any) -> Any:
        return {resource.plural: name}

    feed(backend, event('things', 'ADDED', pod('x'), PODS),
         event('things', 'ADDED', pod('x', kind='Service'), SERVICES))
    assert contents(indices(backend)['things']) == {'pods': ['x'], 'services': ['x']}
    feed(backend, listed('things', None, [], PODS))
    assert contents(indices(backend)['things']) == {'services': ['x']}


def test_handlers_and_when_callbacks_see_the_live_contents(registry, backend):
    seen: list[dict[Any, list[Any]]] = []
    held: list[Any] = []

    @kopf.index('pods', id='by_ns')
    def by_ns(namespace: str | None, name: str, **_: Any) -> Any:
        return {namespace: name}

    def when(by_ns: kopf.Index, **_: Any) -> bool:  # type: ignore[type-arg]
        seen.append(contents(by_ns))
        return 'default' in by_ns

    @kopf.on.create('kopfexamples', when=when)
    def fn(by_ns: kopf.Index, **_: Any) -> None:  # type: ignore[type-arg]
        held.append(by_ns)

    assert which(invoke(backend, make_request(fn.__qualname__)).outcome) == 'not_matched'
    feed(backend, event('by_ns', 'ADDED', pod('p1')), event('by_ns', 'ADDED', pod('p2', 'other')))
    assert which(invoke(backend, make_request(fn.__qualname__)).outcome) == 'success'
    assert seen == [{}, {'default': ['p1'], 'other': ['p2']}]
    feed(backend, event('by_ns', 'DELETED', pod('p1')))
    assert contents(held[0]) == {'other': ['p2']}  # the index a handler got is updated live
    feed(backend, listed('by_ns', None, []))
    assert contents(held[0]) == {}


def test_label_and_field_callbacks_get_the_indices(registry, backend):
    seen: list[Any] = []

    @kopf.index('pods', id='pods_idx')
    def pods_idx(name: str, **_: Any) -> Any:
        return name

    def check(value: Any, pods_idx: kopf.Index, **_: Any) -> bool:  # type: ignore[type-arg]
        seen.append(contents(pods_idx))
        return True

    @kopf.on.event('kopfexamples', id='fn', labels={'somelabel': check}, field='spec.field', value=check)
    def fn(**_: Any) -> None:
        pass

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    assert which(invoke(backend, make_request('fn/spec.field', reason=None, event_type='ADDED')).outcome) == 'success'
    assert seen == [{None: ['p1']}, {None: ['p1']}]


# -- what the index functions get, and what their results mean ------------------------------------

def test_index_functions_get_kopfs_kwargs_and_the_objects_memo(registry, backend):
    seen: dict[str, Any] = {}

    @kopf.index('pods', id='pods_idx', param='p')
    def pods_idx(**kwargs: Any) -> Any:
        seen.update(kwargs)
        kwargs['memo'].counter = kwargs['memo'].get('counter', 0) + 1

    @kopf.on.event('pods', id='on_event')
    def on_event(memo: kopf.Memo, **_: Any) -> None:
        seen['event_memo'] = memo

    body = pod('p1', labels={'app': 'a'})
    feed(backend, event('pods_idx', 'ADDED', body))
    assert set(seen) == INDEX_KWARGS | {'pods_idx'}
    assert isinstance(seen['body'], kopf.Body) and seen['body']['metadata']['name'] == 'p1'
    assert isinstance(seen['spec'], kopf.Spec) and isinstance(seen['status'], kopf.Status)
    assert isinstance(seen['meta'], kopf.Meta) and dict(seen['labels']) == {'app': 'a'}
    assert seen['name'] == 'p1' and seen['namespace'] == 'default' and seen['uid'] == 'uid-default-p1'
    assert isinstance(seen['patch'], kopf.Patch) and isinstance(seen['memo'], kopf.Memo)
    assert (seen['resource'].group, seen['resource'].version, seen['resource'].plural) == ('', 'v1', 'pods')
    assert isinstance(seen['logger'], kopf.LocalObjectLogger)  # Kopf's terse logger: no k8s events
    assert seen['param'] == 'p' and seen['retry'] == 0
    assert isinstance(seen['started'], datetime.datetime) and isinstance(seen['runtime'], datetime.timedelta)
    assert isinstance(seen['pods_idx'], kopf.Index)  # its own index too, as in Kopf
    feed(backend, event('pods_idx', 'MODIFIED', body))
    invoke(backend, make_request('on_event', body=body, reason=None, event_type='MODIFIED'))
    assert seen['event_memo'] is seen['memo'] and seen['memo'].counter == 2


def test_the_index_functions_logger_is_terse_as_kopfs(registry, backend, caplog):
    @kopf.index('pods', id='pods_idx')
    def pods_idx(logger: Any, **_: Any) -> Any:
        logger.debug("a debug line")
        logger.info("an info line")
        logger.warning("a warning line")

    caplog.set_level(logging.INFO)
    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    assert [r.getMessage() for r in caplog.records if r.name == 'kopf.objects'] == ["a warning line"]
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    assert [r.getMessage() for r in caplog.records if r.name == 'kopf.objects'] == [
        "an info line", "a warning line", "Handler 'pods_idx' succeeded."]


def test_the_index_functions_patch_is_not_applied(registry, backend):
    @kopf.index('pods', id='pods_idx')
    def pods_idx(patch: kopf.Patch, **_: Any) -> Any:
        patch.status['x'] = 1
        return 1

    [response] = feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    assert which(response.outcome) == 'success' and not response.patch_json


@pytest.mark.parametrize('result, expected', [
    ('name', {None: ['name']}),
    (('ns', 'name'), {None: [('ns', 'name')]}),
    ({'k1': 'v1', 'k2': 'v2'}, {'k1': ['v1'], 'k2': ['v2']}),
    ({'k': {'nested': 1}}, {'k': [{'nested': 1}]}),
    ({'k': None}, {'k': [None]}),
    (kopf.Memo(a=1), {'a': [1]}),  # any mapping, as Kopf 1.45.2's code does (its docs say: only dicts)
    ({}, {}),
    ([1, 2], {None: [[1, 2]]}),
])
def test_results_are_indexed_as_kopf_does(registry, backend, result, expected):
    @kopf.index('pods', id='pods_idx')
    def pods_idx(**_: Any) -> Any:
        return result

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    assert contents(indices(backend)['pods_idx']) == expected


def test_a_none_result_keeps_the_previous_values(registry, backend):
    results = iter(['first', None])

    @kopf.index('pods', id='pods_idx')
    def pods_idx(**_: Any) -> Any:
        return next(results)

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    feed(backend, event('pods_idx', 'MODIFIED', pod('p1')))
    assert contents(indices(backend)['pods_idx']) == {None: ['first']}


def test_an_empty_dict_removes_the_previous_values(registry, backend):
    results = iter([{'a': 1}, {}])

    @kopf.index('pods', id='pods_idx')
    def pods_idx(**_: Any) -> Any:
        return next(results)

    feed(backend, event('pods_idx', 'ADDED', pod('p1')), event('pods_idx', 'MODIFIED', pod('p1')))
    assert contents(indices(backend)['pods_idx']) == {}


def test_async_index_functions(registry, backend):
    @kopf.index('pods', id='pods_idx')
    async def pods_idx(name: str, **_: Any) -> Any:
        await asyncio.sleep(0)
        return name

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    assert contents(indices(backend)['pods_idx']) == {None: ['p1']}


# -- filters --------------------------------------------------------------------------------------

def test_filters_select_the_objects_and_a_mismatch_drops_the_values(registry, backend):
    calls: list[str] = []

    @kopf.index('pods', id='running_web', labels={'app': 'web'}, field='status.phase', value='Running')
    def running_web(name: str, **_: Any) -> Any:
        calls.append(name)
        return name

    feed(backend,
         event('running_web', 'ADDED', pod('p1', labels={'app': 'web'}, phase='Running')),
         event('running_web', 'ADDED', pod('p2', labels={'app': 'db'}, phase='Running')),
         event('running_web', 'ADDED', pod('p3', labels={'app': 'web'}, phase='Pending')))
    assert calls == ['p1']
    assert contents(indices(backend)['running_web']) == {None: ['p1']}
    [response] = feed(backend, event('running_web', 'MODIFIED',
                                     pod('p1', labels={'app': 'web'}, phase='Succeeded')))
    assert which(response.outcome) == 'success'
    assert calls == ['p1'] and contents(indices(backend)['running_web']) == {}


def test_when_and_callback_filters_of_the_index_itself(registry, backend):
    @kopf.index('pods', id='pods_idx', when=lambda name, **_: name != 'skip', annotations={'a': lambda v, **_: v == 'yes'})
    def pods_idx(name: str, **_: Any) -> Any:
        return name

    def annotated(name: str, value: str) -> dict[str, Any]:
        body = pod(name)
        body['metadata']['annotations'] = {'a': value}
        return body

    feed(backend, event('pods_idx', 'ADDED', annotated('p1', 'yes')),
         event('pods_idx', 'ADDED', annotated('skip', 'yes')),
         event('pods_idx', 'ADDED', annotated('p2', 'no')))
    assert contents(indices(backend)['pods_idx']) == {None: ['p1']}
    feed(backend, event('pods_idx', 'MODIFIED', annotated('p1', 'no')))
    assert contents(indices(backend)['pods_idx']) == {}


def test_a_failing_filter_keeps_the_index_and_is_an_error(registry, backend, caplog):
    flag = {'fail': False}

    def when(**_: Any) -> bool:
        if flag['fail']:
            raise ValueError("the filter is broken")
        return True

    @kopf.index('pods', id='pods_idx', when=when)
    def pods_idx(name: str, **_: Any) -> Any:
        return name

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    flag['fail'] = True
    [response] = feed(backend, event('pods_idx', 'MODIFIED', pod('p1')))
    assert which(response.outcome) == 'arbitrary_error'
    assert contents(indices(backend)['pods_idx']) == {None: ['p1']}
    assert "Filters of Handler 'pods_idx' failed" in caplog.text


# -- errors ---------------------------------------------------------------------------------------

def test_arbitrary_errors_are_ignored_by_default_and_keep_the_values(registry, backend, caplog):
    results: list[Any] = ['first', ValueError("boo")]

    @kopf.index('pods', id='pods_idx')
    def pods_idx(**_: Any) -> Any:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    [response] = feed(backend, event('pods_idx', 'MODIFIED', pod('p1')))
    assert which(response.outcome) == 'success'  # an ignored error is a success, in Kopf's terms
    assert contents(indices(backend)['pods_idx']) == {None: ['first']}
    assert "Handler 'pods_idx' failed with an exception and will ignore it: boo" in caplog.text
    assert 'Traceback (most recent call last)' in caplog.text
    assert any(r.name == 'kopf.objects' and r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


def test_permanent_errors_drop_the_values_and_exclude_the_object(registry, backend, caplog):
    calls: list[str] = []

    @kopf.index('pods', id='pods_idx')
    def pods_idx(name: str, **_: Any) -> Any:
        calls.append(name)
        if len(calls) == 2:
            raise kopf.PermanentError("no more")
        return name

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    [response] = feed(backend, event('pods_idx', 'MODIFIED', pod('p1')))
    assert which(response.outcome) == 'permanent_error' and response.outcome.permanent_error.message == 'no more'
    assert contents(indices(backend)['pods_idx']) == {}
    assert "Handler 'pods_idx' failed permanently: no more" in caplog.text
    feed(backend, event('pods_idx', 'MODIFIED', pod('p1')))
    assert calls == ['p1', 'p1'] and contents(indices(backend)['pods_idx']) == {}  # excluded
    # Once the object is gone, it is forgotten: a new one of the same name is indexed again.
    feed(backend, event('pods_idx', 'DELETED', pod('p1')), event('pods_idx', 'ADDED', pod('p1', uid='new')))
    assert calls == ['p1', 'p1', 'p1'] and contents(indices(backend)['pods_idx']) == {None: ['p1']}


def test_errors_mode_permanent(registry, backend, caplog):
    @kopf.index('pods', id='pods_idx', errors=kopf.ErrorsMode.PERMANENT)
    def pods_idx(**_: Any) -> Any:
        raise ValueError("boo")

    [response] = feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    assert which(response.outcome) == 'arbitrary_error'
    assert "Handler 'pods_idx' failed with an exception and will stop now: boo" in caplog.text


@pytest.mark.parametrize('delay, rerun', [(None, True), (0, True), (60, False)])
def test_temporary_errors_drop_the_values_and_retry_on_a_later_event(registry, backend, caplog, delay, rerun):
    calls: list[int] = []

    @kopf.index('pods', id='pods_idx')
    def pods_idx(retry: int, started: datetime.datetime, **_: Any) -> Any:
        calls.append(retry)
        if len(calls) == 2:
            raise kopf.TemporaryError("later", delay=delay)
        return 'value'

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    [response] = feed(backend, event('pods_idx', 'MODIFIED', pod('p1')))
    assert which(response.outcome) == 'temporary_error'
    assert contents(indices(backend)['pods_idx']) == {}
    assert "Handler 'pods_idx' failed temporarily: later" in caplog.text
    feed(backend, event('pods_idx', 'MODIFIED', pod('p1')))
    if rerun:
        assert calls == [0, 0, 1] and contents(indices(backend)['pods_idx']) == {None: ['value']}
    else:
        assert calls == [0, 0] and contents(indices(backend)['pods_idx']) == {}


def test_errors_mode_temporary_with_retries(registry, backend, caplog):
    calls: list[int] = []

    @kopf.index('pods', id='pods_idx', errors=kopf.ErrorsMode.TEMPORARY, backoff=0, retries=2)
    def pods_idx(retry: int, **_: Any) -> Any:
        calls.append(retry)
        raise ValueError("boo")

    feed(backend, *(event('pods_idx', 'MODIFIED', pod('p1')) for _ in range(4)))
    assert calls == [0, 1]  # then it has used up its retries: excluded
    assert "Handler 'pods_idx' failed with an exception and will try again in 0 seconds: boo" in caplog.text
    assert ("Handler 'pods_idx' failed with an exception and will stop now "
            "(it would exceed 2 retries on the next attempt): boo") in caplog.text


def test_an_index_error_does_not_affect_other_objects_or_indexes(registry, backend):
    @kopf.index('pods', id='broken')
    def broken(name: str, **_: Any) -> Any:
        if name == 'bad':
            raise kopf.PermanentError("bad")
        return name

    @kopf.index('pods', id='fine')
    def fine(name: str, **_: Any) -> Any:
        return name

    for handler_id in ('broken', 'fine'):
        feed(backend, event(handler_id, 'ADDED', pod('good')), event(handler_id, 'ADDED', pod('bad')))
    assert contents(indices(backend)['broken']) == {None: ['good']}
    assert contents(indices(backend)['fine']) == {None: ['good', 'bad']}


# -- where the indices are injected ---------------------------------------------------------------

def test_timers_and_activities_get_the_same_live_indices(registry, backend):
    seen: dict[str, Any] = {}

    @kopf.index('pods', id='pods_idx')
    def pods_idx(name: str, **_: Any) -> Any:
        return name

    @kopf.timer('kopfexamples', id='tick', interval=1)
    def tick(pods_idx: kopf.Index, **_: Any) -> None:  # type: ignore[type-arg]
        seen['timer'] = pods_idx

    for kind in ('startup', 'cleanup', 'login', 'probe'):
        getattr(kopf.on, kind)(id=kind)(lambda pods_idx, _kind=kind, **_: seen.__setitem__(_kind, pods_idx))

    feed(backend, event('pods_idx', 'ADDED', pod('p1')))
    invoke(backend, make_request('tick', reason=None))
    for activity in model.Activity:
        asyncio.run(activities.run_activity(registry=registry, settings=backend.settings, activity=activity,
                                            memo=kopf.Memo(), indices=backend.indexers.view(registry)))
    assert {name: contents(idx) for name, idx in seen.items()} == {
        name: {None: ['p1']} for name in ('timer', 'startup', 'cleanup', 'login', 'probe')}
    assert all(idx is seen['timer'] for idx in seen.values())


def test_a_running_daemon_sees_the_index_change(registry, backend):
    @kopf.index('pods', id='pods_idx')
    def pods_idx(name: str, **_: Any) -> Any:
        return name

    @kopf.daemon('kopfexamples', id='watcher')
    async def watcher(pods_idx: kopf.Index, **_: Any) -> Any:  # type: ignore[type-arg]
        while 'p2' not in pods_idx.get(None, []):
            await asyncio.sleep(0.01)
        return list(pods_idx[None])

    async def scenario(stub: pb_grpc.HandlerServiceStub) -> None:
        await stub.Invoke(event('pods_idx', 'ADDED', pod('p1')), timeout=5)
        core = Core(stub, 'watcher', OBJ)
        await asyncio.sleep(0.2)
        await stub.Invoke(event('pods_idx', 'ADDED', pod('p2')), timeout=5)
        final = await core.until_exit()
        assert final is not None and json.loads(final.exit.success.result_json) == ['p1', 'p2']

    run_daemons(backend, scenario)


def test_kopf_example_16_over_kopf_serve(tmp_path, registry):
    """ Kopf's examples/16-indexing, served by `kopf serve`, fed by a core (here: the test). """
    path = tmp_path / 'example.py'
    path.write_text(textwrap.dedent('''
        from typing import Any
        import kopf

        @kopf.index('pods')
        def is_running(*, namespace, name, status, **_):
            return {(namespace, name): status.get('phase') == 'Running'}

        @kopf.index('pods')
        def by_label(labels, name, **_):
            return {(label, value): name for label, value in labels.items()}

        @kopf.on.probe()
        def pod_count(is_running: kopf.Index, **_):
            return len(is_running)

        @kopf.on.probe()
        def pod_names(is_running: kopf.Index, **_):
            return [name for _, name in is_running]

        @kopf.timer('kex', interval=5)
        def intervalled(is_running: kopf.Index, by_label: kopf.Index, patch: kopf.Patch, **_):
            patch.status['by-label'] = {f"{k}={v}": list(names) for (k, v), names in by_label.items()}
            patch.status['running-pods'] = [
                f"{ns}::{name}"
                for (ns, name), is_running in is_running.items()
                if ns in ['kube-system', 'default']
                if is_running
            ]
    '''))
    port, http_port = corep.free_port(), corep.free_port()
    pods = [pod('web-1', labels={'app': 'web'}, phase='Running'),
            pod('web-2', labels={'app': 'web'}, phase='Pending'),
            pod('dns', 'kube-system', labels={'app': 'dns'}, phase='Running'),
            pod('job', 'other', labels={'app': 'job'}, phase='Running')]
    with KopfRunner(['serve', '--listen', f'127.0.0.1:{port}', '--liveness', f'http://127.0.0.1:{http_port}/healthz',
                     str(path)], registry=registry, timeout=30) as runner:
        with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
            grpc.channel_ready_future(channel).result(timeout=15)
            stub = pb_grpc.HandlerServiceStub(channel)
            manifest = stub.Describe(pb.DescribeRequest(), timeout=5)
            answers = []
            for index_id in ('is_running', 'by_label'):
                for body in pods:
                    answers.append(stub.Invoke(event(index_id, 'ADDED', body), timeout=5))
                answers.append(stub.Invoke(event(index_id, 'MODIFIED', pod('web-2', labels={'app': 'web'},
                                                                          phase='Running')), timeout=5))
                answers.append(stub.Invoke(event(index_id, 'DELETED', pods[3]), timeout=5))
                answers.append(stub.Invoke(listed(index_id, 'default', [['default', 'web-2']]), timeout=5))
            timer = stub.Invoke(pb.InvokeRequest(handler_id='intervalled', body_json=json.dumps(
                {'apiVersion': 'kopf.dev/v1', 'kind': 'KopfExample', 'metadata': {'name': 'kex1', 'namespace': 'default'}}
            ).encode()), timeout=5)
        with urllib.request.urlopen(f'http://127.0.0.1:{http_port}/healthz', timeout=5) as http:
            health = json.loads(http.read())
    assert [(h.id, h.kind) for h in manifest.handlers] == [
        ('is_running', pb.HANDLER_KIND_INDEX), ('by_label', pb.HANDLER_KIND_INDEX), ('intervalled', pb.HANDLER_KIND_TIMER)]
    assert all(which(answer.outcome) == 'success' for answer in answers)
    assert which(timer.outcome) == 'success'
    assert json.loads(timer.patch_json) == {'status': {
        'by-label': {'app=web': ['web-2'], 'app=dns': ['dns']},
        'running-pods': ['default::web-2', 'kube-system::dns']}}
    assert health == {'pod_count': 2, 'pod_names': ['web-2', 'dns']}
    assert runner.exit_code == 0
    assert "one replica" in runner.output  # the start-up line on indexes under `kopf serve`
