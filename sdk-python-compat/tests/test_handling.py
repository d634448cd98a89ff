"""Invoke: the kwargs Kopf passes per handler type, and the outcomes of what handlers do."""
import asyncio
import datetime
import json
import logging
import threading
import time
from typing import Any

import pytest

import kopf
from kopf._core.reactor import handling, wire
from kopf._transport import server

from conftest import OBJ, invoke, make_request, which

CHANGING_KWARGS = {'body', 'spec', 'meta', 'status', 'uid', 'name', 'namespace', 'labels', 'annotations',
                   'patch', 'logger', 'memo', 'resource', 'reason', 'diff', 'old', 'new',
                   'param', 'retry', 'started', 'runtime'}
EVENT_KWARGS = {'body', 'spec', 'meta', 'status', 'uid', 'name', 'namespace', 'labels', 'annotations',
                'patch', 'logger', 'memo', 'resource', 'type', 'event', 'param', 'retry', 'started', 'runtime'}


def test_changing_handlers_get_kopfs_kwargs_exactly(registry, backend):
    seen: dict[str, Any] = {}

    @kopf.on.update('kopfexamples', param=123)
    def fn(**kwargs: Any) -> None:
        seen.update(kwargs)

    started = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    diff = [['change', ['spec', 'field'], 'old', 'value']]
    response = invoke(backend, make_request(fn.__qualname__, reason='update', old={'spec': {'field': 'old'}},
                                            new={'spec': {'field': 'value'}}, diff=diff, retry=2, started=started))
    assert which(response.outcome) == 'success'
    assert set(seen) == CHANGING_KWARGS
    assert seen['reason'] == 'update' and isinstance(seen['reason'], kopf.Reason)
    assert seen['param'] == 123 and seen['retry'] == 2 and seen['started'] == started
    assert isinstance(seen['runtime'], datetime.timedelta) and seen['runtime'] > datetime.timedelta(days=1)
    assert isinstance(seen['body'], kopf.Body) and seen['body']['metadata']['name'] == 'kopf-example-1'
    assert isinstance(seen['spec'], kopf.Spec) and seen['spec']['field'] == 'value'
    assert isinstance(seen['meta'], kopf.Meta) and isinstance(seen['status'], kopf.Status)
    assert dict(seen['status']) == {}
    assert seen['name'] == 'kopf-example-1' and seen['namespace'] == 'default' and seen['uid'] == 'uid-1'
    assert dict(seen['labels']) == {'somelabel': 'somevalue'}
    assert dict(seen['annotations']) == {'someannotation': 'somevalue'}
    assert isinstance(seen['patch'], kopf.Patch)
    assert isinstance(seen['memo'], kopf.Memo)
    assert isinstance(seen['resource'], kopf.Resource)
    assert (seen['resource'].group, seen['resource'].version, seen['resource'].plural) == ('kopf.dev', 'v1', 'kopfexamples')
    assert isinstance(seen['diff'], kopf.Diff)
    assert seen['diff'] == [('change', ('spec', 'field'), 'old', 'value')]
    assert seen['diff'][0].op == 'change' and isinstance(seen['diff'][0], kopf.DiffItem)
    assert seen['old'] == {'spec': {'field': 'old'}} and seen['new'] == {'spec': {'field': 'value'}}
    assert isinstance(seen['logger'], kopf.ObjectLogger)


def test_body_views_are_read_only(registry, backend):
    @kopf.on.create('kopfexamples')
    def fn(body: kopf.Body, spec: kopf.Spec, **_: Any) -> None:
        with pytest.raises(TypeError):
            body['spec'] = {}  # type: ignore[index]
        with pytest.raises(TypeError):
            spec['field'] = 'x'  # type: ignore[index]

    assert which(invoke(backend, make_request(fn.__qualname__)).outcome) == 'success'


def test_event_handlers_get_type_and_event(registry, backend):
    seen: dict[str, Any] = {}

    @kopf.on.event('kopfexamples')
    def fn(**kwargs: Any) -> None:
        seen.update(kwargs)

    response = invoke(backend, make_request(fn.__qualname__, reason=None, event_type='MODIFIED'))
    assert which(response.outcome) == 'success'
    assert set(seen) == EVENT_KWARGS
    assert seen['type'] == 'MODIFIED'
    assert seen['event'] == {'type': 'MODIFIED', 'object': OBJ}
    assert seen['retry'] == 0


def test_index_kwargs_are_empty_indices(registry, backend):
    seen: dict[str, Any] = {}

    @kopf.index('pods', id='pods_idx')
    def pods_idx(**_: Any) -> None:
        pass

    @kopf.on.create('kopfexamples')
    def fn(pods_idx: kopf.Index, **_: Any) -> None:  # type: ignore[type-arg]
        seen['idx'] = pods_idx

    invoke(backend, make_request(fn.__qualname__))
    assert isinstance(seen['idx'], kopf.Index) and dict(seen['idx']) == {}


def test_field_handlers_get_the_fields_values(registry, backend):
    seen: dict[str, Any] = {}

    @kopf.on.field('kopfexamples', field='spec.field')
    def fn(old: Any, new: Any, diff: Any, **_: Any) -> None:
        seen.update(old=old, new=new, diff=diff)

    response = invoke(backend, make_request(fn.__qualname__ + '/spec.field', reason='update', old='a', new='b',
                                            diff=[['change', [], 'a', 'b']]))
    assert which(response.outcome) == 'success'
    assert seen == {'old': 'a', 'new': 'b', 'diff': [('change', (), 'a', 'b')]}


@pytest.mark.parametrize('result, expected', [
    (None, b''),
    ({'message': 'hello'}, b'{"message":"hello"}'),
    (123, b'123'),
    ('text', b'"text"'),
])
def test_results_go_to_success(registry, backend, result, expected):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> Any:
        return result

    response = invoke(backend, make_request(fn.__qualname__))
    assert response.outcome.success.result_json == expected


def test_a_result_that_is_not_json_is_an_arbitrary_error(registry, backend):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> Any:
        return {'when': datetime.datetime.now()}

    response = invoke(backend, make_request(fn.__qualname__))
    assert which(response.outcome) == 'arbitrary_error'
    assert 'cannot be stored' in response.outcome.arbitrary_error.message


def test_temporary_errors_send_their_delay(registry, backend):
    @kopf.on.create('kopfexamples', id='default')
    def fn1(**_: Any) -> None:
        raise kopf.TemporaryError("later")

    @kopf.on.create('kopfexamples', id='explicit')
    def fn2(**_: Any) -> None:
        raise kopf.TemporaryError("soon", delay=1.5)

    @kopf.on.create('kopfexamples', id='none')
    def fn3(**_: Any) -> None:
        raise kopf.TemporaryError("now", delay=None)

    default = invoke(backend, make_request('default')).outcome.temporary_error
    assert default.message == 'later' and default.delay.seconds == 60 and default.HasField('delay')
    explicit = invoke(backend, make_request('explicit')).outcome.temporary_error
    assert explicit.delay.seconds == 1 and explicit.delay.nanos == 500_000_000
    none = invoke(backend, make_request('none')).outcome.temporary_error
    assert none.message == 'now' and not none.HasField('delay')


@pytest.mark.parametrize('exc', [
    kopf.PermanentError("final"),
    kopf.HandlerTimeoutError("final"),
    kopf.HandlerRetriesError("final"),
    kopf.AdmissionError("final", code=400),
])
def test_permanent_errors_and_their_subclasses(registry, backend, exc):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        raise exc

    response = invoke(backend, make_request(fn.__qualname__))
    assert which(response.outcome) == 'permanent_error'
    assert response.outcome.permanent_error.message == 'final'


def test_other_exceptions_are_arbitrary_errors_with_a_traceback_in_the_log(registry, backend, caplog):
    class MyError(Exception):
        pass

    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        raise MyError("boom")

    caplog.set_level(logging.DEBUG)
    response = invoke(backend, make_request(fn.__qualname__))
    assert response.outcome.arbitrary_error.message == 'boom'
    assert response.outcome.arbitrary_error.error_type == 'MyError'
    assert "raised MyError; the traceback:" in caplog.text
    assert 'Traceback (most recent call last)' in caplog.text


def test_even_system_exit_does_not_escape(registry, backend):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        raise SystemExit(3)

    assert which(invoke(backend, make_request(fn.__qualname__)).outcome) == 'arbitrary_error'


def test_sync_handlers_run_in_threads_async_ones_on_the_loop(registry, backend):
    threads: dict[str, threading.Thread] = {}

    @kopf.on.create('kopfexamples')
    def sync_fn(**_: Any) -> None:
        threads['sync'] = threading.current_thread()

    @kopf.on.create('kopfexamples')
    async def async_fn(**_: Any) -> None:
        threads['async'] = threading.current_thread()

    invoke(backend, make_request(sync_fn.__qualname__))
    invoke(backend, make_request(async_fn.__qualname__))
    assert threads['async'] is threading.current_thread()
    assert threads['sync'] is not threading.current_thread()


def test_the_patch_is_sent_as_a_merge_patch(registry, backend):
    @kopf.on.create('kopfexamples')
    def fn(patch: kopf.Patch, **_: Any) -> None:
        patch.metadata.labels['x'] = 'y'
        patch.status['phase'] = 'done'
        patch.spec['field'] = None

    response = invoke(backend, make_request(fn.__qualname__))
    assert json.loads(response.patch_json) == {
        'metadata': {'labels': {'x': 'y'}}, 'status': {'phase': 'done'}, 'spec': {'field': None}}


def test_patch_fns_become_part_of_the_merge_patch(registry, backend):
    @kopf.on.create('kopfexamples')
    def fn(patch: kopf.Patch, **_: Any) -> None:
        patch.spec['duration'] = '2m'

        def drop_second_item(body: Any) -> None:
            body['spec']['items'].remove('item2')
            del body['metadata']['annotations']['someannotation']
        patch.fns.append(drop_second_item)

    response = invoke(backend, make_request(fn.__qualname__))
    assert json.loads(response.patch_json) == {
        'spec': {'duration': '2m', 'items': ['item1']},
        'metadata': {'annotations': {'someannotation': None}},
    }


def test_no_patch_means_empty_patch_json(registry, backend):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        pass

    assert invoke(backend, make_request(fn.__qualname__)).patch_json == b''


def test_events_of_the_handled_and_other_objects(registry, backend):
    other = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'p', 'namespace': 'ns', 'uid': 'uid-2'}}

    @kopf.on.create('kopfexamples')
    def fn(body: kopf.Body, **_: Any) -> None:
        kopf.info(body, reason='Info', message='i')
        kopf.warn(body, reason='Warn', message='w')
        kopf.event([body, other], type='Custom', reason='Ev', message='e')
        try:
            raise ValueError("oops")
        except ValueError:
            kopf.exception(body, message='failed:')

    events = invoke(backend, make_request(fn.__qualname__)).events
    assert [(e.type, e.reason, e.message) for e in events] == [
        ('Normal', 'Info', 'i'), ('Warning', 'Warn', 'w'), ('Custom', 'Ev', 'e'), ('Custom', 'Ev', 'e'),
        ('Error', 'ValueError', 'failed: oops'),
    ]
    assert [e.involved_object_json for e in events if e.involved_object_json] == [
        json.dumps({'apiVersion': 'v1', 'kind': 'Pod', 'name': 'p', 'uid': 'uid-2', 'namespace': 'ns'},
                   separators=(',', ':')).encode()]


def test_events_from_sync_handlers_threads_are_collected(registry, backend, settings):
    @kopf.on.create('kopfexamples')
    def fn(body: kopf.Body, **_: Any) -> None:
        kopf.info(body, reason='FromThread')

    events = invoke(backend, make_request(fn.__qualname__)).events
    assert [e.reason for e in events] == ['FromThread']


def test_events_obey_the_posting_settings(registry, backend, settings):
    settings.posting.level = logging.WARNING

    @kopf.on.create('kopfexamples')
    def fn(body: kopf.Body, **_: Any) -> None:
        kopf.info(body, reason='Skipped')
        kopf.warn(body, reason='Posted')

    assert [e.reason for e in invoke(backend, make_request(fn.__qualname__)).events] == ['Posted']


def test_events_outside_of_handlers_warn_without_clients(monkeypatch, caplog):
    import builtins
    real_import = builtins.__import__

    def no_clients(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split('.')[0] in ('kubernetes', 'pykube'):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_clients)
    from kopf._core import posting
    posting._post_body(posting.build_event_body(
        posting.K8sEvent(ref={'name': 'x'}, type='Normal', reason='R', message='m'),
        settings=kopf.OperatorSettings()))
    assert "neither `kubernetes` nor `pykube-ng` is installed" in caplog.text


def test_events_outside_of_handlers_go_to_the_core_while_the_operator_runs(monkeypatch):
    from kopf._core import posting
    outbox = posting.Outbox()
    monkeypatch.setattr(posting, 'OUTBOX', outbox)
    outbox.active = True
    backend = handling.OperatorBackend(registry=kopf.OperatorRegistry(), settings=kopf.OperatorSettings())
    body = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'cm', 'namespace': 'ns', 'uid': 'u'}}
    kopf.info(body, reason='Early', message='before the core connected')

    async def read_two() -> list[Any]:
        stream = backend.outbox(handling.pb.OutboxRequest(), None)  # type: ignore[arg-type]
        first = await stream.__anext__()
        threading.Thread(target=lambda: kopf.warn(body, reason='Thread', message='from a thread')).start()
        second = await asyncio.wait_for(stream.__anext__(), timeout=5)
        await stream.aclose()
        return [first, second]

    first, second = asyncio.run(read_two())
    assert (first.event.type, first.event.reason) == ('Normal', 'Early')
    assert (second.event.type, second.event.reason, second.event.message) == ('Warning', 'Thread', 'from a thread')
    assert json.loads(first.event.involved_object_json) == {
        'apiVersion': 'v1', 'kind': 'ConfigMap', 'name': 'cm', 'uid': 'u', 'namespace': 'ns'}


def test_event_bodies_are_as_kopf_posts_them():
    from kopf._core import posting
    body = posting.build_event_body(
        posting.K8sEvent(ref={'apiVersion': 'v1', 'kind': 'Pod', 'name': 'p', 'uid': 'u'},
                         type='Normal', reason='R', message='x' * 2000),
        settings=kopf.OperatorSettings())
    assert body['metadata'] == {'namespace': 'default', 'generateName': 'kopf-event-'}
    assert body['involvedObject']['namespace'] == 'default'
    assert body['source'] == {'component': 'kopf'} and body['reportingInstance'] == 'dev'
    assert len(body['message']) == 1024 and '...' in body['message']


@pytest.mark.parametrize('when, expected', [
    (lambda **_: True, 'success'),
    (lambda **_: False, 'not_matched'),
    (lambda spec, **_: spec['field'] == 'value', 'success'),
    (kopf.not_(lambda **_: True), 'not_matched'),
    (kopf.all_([lambda **_: True, lambda **_: False]), 'not_matched'),
    (kopf.any_([lambda **_: True, lambda **_: False]), 'success'),
    (kopf.none_([lambda **_: False]), 'success'),
])
def test_when_filters_are_evaluated_at_call_time(registry, backend, when, expected):
    @kopf.on.create('kopfexamples', when=when)
    def fn(**_: Any) -> None:
        pass

    assert which(invoke(backend, make_request(fn.__qualname__)).outcome) == expected


@pytest.mark.parametrize('labels, expected', [
    ({'somelabel': lambda value, **_: value == 'somevalue'}, 'success'),
    ({'somelabel': lambda value, **_: value == 'other'}, 'not_matched'),
    ({'missing': lambda value, **_: value is None}, 'success'),
])
def test_callable_label_filters(registry, backend, labels, expected):
    @kopf.on.create('kopfexamples', labels=labels)
    def fn(**_: Any) -> None:
        pass

    assert which(invoke(backend, make_request(fn.__qualname__)).outcome) == expected


@pytest.mark.parametrize('old, new, has_old, expected', [
    ('a', 'b', True, 'success'),
    ('x', 'b', True, 'not_matched'),
    (None, 'b', False, 'not_matched'),
])
def test_callable_old_new_filters_see_the_fields_values(registry, backend, old, new, has_old, expected):
    @kopf.on.field('kopfexamples', field='spec.field', old=lambda v, **_: v == 'a', new='b')
    def fn(**_: Any) -> None:
        pass

    request = make_request(fn.__qualname__ + '/spec.field', reason='update', old=old, new=new, has_old=has_old)
    assert which(invoke(backend, request).outcome) == expected


def test_filters_that_fail_answer_an_arbitrary_error(registry, backend):
    def bad(**_: Any) -> bool:
        raise RuntimeError("no")

    @kopf.on.create('kopfexamples', when=bad)
    def fn(**_: Any) -> None:
        pass

    assert which(invoke(backend, make_request(fn.__qualname__)).outcome) == 'arbitrary_error'


def test_unknown_handlers_are_lookup_errors(registry, backend):
    with pytest.raises(LookupError):
        invoke(backend, make_request('nope'))


def test_same_id_registrations_are_picked_by_reason(registry, backend):
    calls: list[str] = []

    @kopf.on.create('kopfexamples', id='x')
    def on_create(**_: Any) -> None:
        calls.append('create')

    @kopf.on.delete('kopfexamples', id='x')
    def on_delete(**_: Any) -> None:
        calls.append('delete')

    invoke(backend, make_request('x', reason='delete'))
    invoke(backend, make_request('x', reason='create'))
    assert calls == ['delete', 'create']


def test_memo_is_per_object_and_copied_from_the_operators(registry, settings):
    base = kopf.Memo(shared='yes')
    backend = handling.OperatorBackend(registry=registry, settings=settings, memo=base)  # type: ignore[arg-type]
    seen: list[Any] = []

    @kopf.on.create('kopfexamples')
    def fn(memo: kopf.Memo, **_: Any) -> None:
        memo.counter = memo.get('counter', 0) + 1
        seen.append((memo.shared, memo.counter))

    other = dict(OBJ, metadata=dict(OBJ['metadata'], uid='uid-other'))
    invoke(backend, make_request(fn.__qualname__))
    invoke(backend, make_request(fn.__qualname__))
    invoke(backend, make_request(fn.__qualname__, body=other))
    assert seen == [('yes', 1), ('yes', 2), ('yes', 1)]
    assert 'counter' not in base


def test_the_deadline_is_honoured(registry, backend):
    @kopf.on.create('kopfexamples')
    async def fn(**_: Any) -> None:
        await asyncio.sleep(10)

    call = server.CallInfo(deadline=time.monotonic() + 0.8)
    started = time.monotonic()
    response = invoke(backend, make_request(fn.__qualname__), call)
    assert time.monotonic() - started < 2
    assert response.outcome.arbitrary_error.error_type == 'TimeoutError'
    assert "did not finish within the call's deadline" in response.outcome.arbitrary_error.message


def test_the_calls_metadata_is_accessible_within_the_call(registry, backend):
    seen: list[Any] = []

    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        seen.append(wire.call_var.get().traceparent)

    invoke(backend, make_request(fn.__qualname__), server.CallInfo(metadata={'traceparent': '00-t-s-01'}))
    assert seen == ['00-t-s-01']


def test_the_handlers_logger_prefixes_like_kopfs(registry, backend, caplog):
    @kopf.on.create('kopfexamples')
    def fn(logger: kopf.Logger, **_: Any) -> None:
        logger.info("Hello from the handler.")

    caplog.set_level(logging.INFO)
    invoke(backend, make_request(fn.__qualname__))
    record = next(r for r in caplog.records if r.getMessage() == "Hello from the handler.")
    assert record.name == 'kopf.objects'
    formatter = kopf._core.logs.make_formatter(kopf.LogFormat.PLAIN, log_prefix=None)
    assert formatter.format(record) == '[default/kopf-example-1] Hello from the handler.'


def test_adopt_uses_the_handled_object_as_the_owner(registry, backend):
    children: list[dict[str, Any]] = []

    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        child: dict[str, Any] = {'apiVersion': 'v1', 'kind': 'Pod'}
        kopf.adopt(child)
        children.append(child)

    invoke(backend, make_request(fn.__qualname__))
    meta = children[0]['metadata']
    assert meta['namespace'] == 'default' and meta['generateName'] == 'kopf-example-1-'
    assert meta['labels'] == {'somelabel': 'somevalue'}
    assert meta['ownerReferences'] == [{'controller': True, 'blockOwnerDeletion': True, 'apiVersion': 'kopf.dev/v1',
                                        'kind': 'KopfExample', 'name': 'kopf-example-1', 'uid': 'uid-1'}]


@pytest.mark.parametrize('selector, body, plural', [
    (('kopfexamples',), OBJ, 'kopfexamples'),
    (('kex',), OBJ, 'kopfexamples'),
    (('v1', 'pods'), {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'p'}}, 'pods'),
    (('policies',), {'apiVersion': 'x/v1', 'kind': 'Policy'}, 'policies'),
    (('Policy',), {'apiVersion': 'x/v1', 'kind': 'Policy'}, 'policies'),
])
def test_the_resource_kwarg(selector, body, plural):
    resource = handling.guess_resource(body, kopf._cogs.refs.Selector(*selector))
    assert resource.plural == plural
    assert resource.kind == body['kind']


TIMER_KWARGS = {'body', 'spec', 'meta', 'status', 'uid', 'name', 'namespace', 'labels', 'annotations',
                'patch', 'logger', 'memo', 'resource', 'stopped', 'param', 'retry', 'started', 'runtime'}


@pytest.mark.parametrize('is_async', [False, True])
def test_timers_are_called_without_a_reason_with_a_stopped_flag(registry, backend, is_async):
    seen: dict[str, Any] = {}

    if is_async:
        @kopf.timer('kopfexamples', interval=5, param='p')
        async def fn(**kwargs: Any) -> Any:
            seen.update(kwargs)
            kwargs['patch'].status['x'] = 1
            return {'ticks': 1}
    else:
        @kopf.timer('kopfexamples', interval=5, param='p')
        def fn(**kwargs: Any) -> Any:  # type: ignore[misc]
            seen.update(kwargs)
            kwargs['patch'].status['x'] = 1
            return {'ticks': 1}

    response = invoke(backend, make_request(fn.__qualname__, reason=None))
    assert which(response.outcome) == 'success'
    assert json.loads(response.outcome.success.result_json) == {'ticks': 1}
    assert json.loads(response.patch_json) == {'status': {'x': 1}}
    assert set(seen) == TIMER_KWARGS
    assert seen['param'] == 'p' and seen['retry'] == 0
    stopped = seen['stopped']
    assert isinstance(stopped, kopf.DaemonStopped) and not stopped and not stopped.is_set()
    assert isinstance(stopped, kopf.AsyncDaemonStopperChecker) == is_async


def test_a_timers_errors_are_outcomes_named_as_kopf_names_timers(registry, backend, caplog):
    @kopf.timer('kopfexamples', interval=5)
    def fn(**_: Any) -> None:
        raise ValueError("boom")

    response = invoke(backend, make_request(fn.__qualname__, reason=None))
    assert which(response.outcome) == 'arbitrary_error'
    assert response.outcome.arbitrary_error.error_type == 'ValueError'
    assert f"Timer '{fn.__qualname__}' raised ValueError; the traceback:" in caplog.messages


def test_a_cancelled_timer_call_sets_the_stopped_flag(registry, backend):
    entered = threading.Event()
    flags: list[Any] = []

    @kopf.timer('kopfexamples', interval=5)
    def fn(stopped: Any, **_: Any) -> str:
        flags.append(stopped)
        entered.set()
        return 'stopped' if stopped.wait(10) else 'not stopped'

    async def cancel_midway() -> None:
        call = asyncio.ensure_future(backend.invoke(make_request(fn.__qualname__, reason=None), server.CallInfo()))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
        call.cancel()  # as the core's cancellation of the call cancels the servicer
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert time.monotonic() - started < 5  # the thread saw the flag, not its 10 s timeout

    asyncio.run(cancel_midway())
    assert flags and flags[0].is_set()
    assert flags[0].reason == kopf.DaemonStoppingReason.DAEMON_CANCELLED
