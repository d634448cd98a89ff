"""
Per-object memos live as long as their objects (as in Kopf): none is evicted for the number of
objects; an object's memo is let go only when this process learns that the object is gone.
"""
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

import kopf
from kopf._core.reactor import daemons
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._transport import server

from conftest import OBJ, invoke, make_request, which

FINALIZER = 'kopf.zalando.org/KopfFinalizerMarker'


def body(n: int = 1, **meta: Any) -> dict[str, Any]:
    return dict(OBJ, metadata=dict(OBJ['metadata'], name=f'kex-{n}', uid=f'uid-{n}', **meta))


def deleted(n: int = 1, finalizers: tuple[str, ...] = (FINALIZER,)) -> dict[str, Any]:
    return body(n, deletionTimestamp='2026-01-01T00:00:00Z', finalizers=list(finalizers))


def test_more_than_10000_objects_keep_their_memos(registry, backend):
    @kopf.on.create('kopfexamples')
    def fn(memo: kopf.Memo, name: str, **_: Any) -> None:
        memo.seen = memo.get('seen', []) + [name]

    async def call(numbers: Any) -> list[str]:
        return [which((await backend.invoke(make_request(fn.__qualname__, body=body(n)), server.CallInfo())).outcome)
                for n in numbers]

    count = 10_100
    assert set(asyncio.run(call(range(count)))) == {'success'}
    asyncio.run(call([0, 1, count // 2, count - 1]))
    assert all(backend.memo_for(body(n)).seen == [f'kex-{n}'] for n in range(2, count - 1) if n != count // 2)
    for n in (0, 1, count // 2, count - 1):
        assert backend.memo_for(body(n)).seen == [f'kex-{n}'] * 2


def test_a_deleted_event_forgets_the_memo(registry, backend):
    @kopf.on.event('kopfexamples')
    def fn(memo: kopf.Memo, **_: Any) -> None:
        memo.events = memo.get('events', 0) + 1

    for event_type in ('ADDED', 'MODIFIED'):
        invoke(backend, make_request(fn.__qualname__, body=body(), reason=None, event_type=event_type))
    assert backend.memos.remembers(body())
    invoke(backend, make_request(fn.__qualname__, body=body(), reason=None, event_type='DELETED'))
    assert not backend.memos.remembers(body())


@pytest.mark.parametrize('finalizers, outcome, forgotten', [
    pytest.param((FINALIZER,), None, True, id='released'),
    pytest.param((FINALIZER,), kopf.PermanentError("no"), True, id='failed-for-good'),
    pytest.param((FINALIZER, 'example.com/other'), None, False, id='still-blocked-by-another-finalizer'),
    pytest.param((FINALIZER,), kopf.TemporaryError("again", delay=1), False, id='to-be-retried'),
    pytest.param((FINALIZER,), ValueError("again"), False, id='arbitrary-error'),
])
def test_a_finished_deletion_forgets_the_memo(registry, backend, finalizers, outcome, forgotten):
    @kopf.on.delete('kopfexamples')
    def fn(**_: Any) -> None:
        if outcome is not None:
            raise outcome

    backend.memo_for(body()).state = 'kept'
    invoke(backend, make_request(fn.__qualname__, body=deleted(finalizers=finalizers), reason='delete'))
    assert backend.memos.remembers(body()) is not forgotten


def test_other_reasons_do_not_forget_the_memo_of_an_object_being_deleted(registry, backend):
    @kopf.on.update('kopfexamples')
    def fn(**_: Any) -> None:
        pass

    backend.memo_for(body()).state = 'kept'
    invoke(backend, make_request(fn.__qualname__, body=deleted(), reason='update'))
    assert backend.memos.remembers(body())


def test_the_memo_of_an_object_thought_gone_is_there_for_its_later_calls(registry, backend):
    # Two delete handlers: the core releases the object after the last; this process cannot tell
    # which is the last, so the memo comes back for the later ones (and for DELETED events).
    seen: list[Any] = []

    @kopf.on.delete('kopfexamples', id='first')
    def first(memo: kopf.Memo, **_: Any) -> None:
        seen.append(memo.state)
        memo.state = 'first ran'

    @kopf.on.delete('kopfexamples', id='second')
    def second(memo: kopf.Memo, **_: Any) -> None:
        seen.append(memo.state)

    backend.memo_for(body()).state = 'created'
    invoke(backend, make_request('first', body=deleted(), reason='delete'))
    assert not backend.memos.remembers(body())
    invoke(backend, make_request('second', body=deleted(), reason='delete'))
    assert seen == ['created', 'first ran']


def test_the_memos_of_gone_objects_are_let_go_eventually(registry, backend):
    backend.memo_for(body(0)).state = 'kept'
    backend.forget(body(0))
    for n in range(1, 10_001):
        backend.memo_for(body(n))
        backend.forget(body(n))
    assert 'state' not in backend.memo_for(body(0))


@pytest.mark.parametrize('reason, forgotten', [
    (pb.DAEMON_STOP_REASON_RESOURCE_DELETED, True),
    (pb.DAEMON_STOP_REASON_FILTERS_MISMATCH, False),
    (pb.DAEMON_STOP_REASON_OPERATOR_EXITING, False),
])
def test_a_daemon_stopped_for_the_deletion_forgets_the_memo(registry, backend, reason, forgotten):
    @kopf.daemon('kopfexamples', id='daemon')
    async def fn(stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
        memo.state = 'running'
        await stopped.wait()

    async def requests() -> AsyncIterator[pb.DaemonRequest]:
        start = pb.DaemonStart(handler_id='daemon', body_json=json.dumps(body()).encode())
        yield pb.DaemonRequest(start=start)
        await asyncio.sleep(0.2)
        yield pb.DaemonRequest(stop=pb.DaemonStop(reason=reason))
        await asyncio.sleep(10)

    async def scenario() -> list[pb.DaemonResponse]:
        return [response async for response in daemons.serve(backend, requests(), server.CallInfo())]

    responses = asyncio.run(scenario())
    assert responses[-1].exit.WhichOneof('result') == 'success'
    assert backend.memos.remembers(body()) is not forgotten
