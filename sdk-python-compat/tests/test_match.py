"""Match: the callback filters of a handler, evaluated without running it, over the real gRPC transport."""
import asyncio
import copy
import json
import logging
from typing import Any

import grpc
import grpc.aio
import pytest

import kopf
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from kopf._transport import server

from conftest import OBJ, invoke, make_request, which


def body_with(**changes: Any) -> dict[str, Any]:
    """ The sample object with some of its parts (``spec``, ``labels``, …) replaced. """
    body = copy.deepcopy(OBJ)
    for key, value in changes.items():
        if key in ('labels', 'annotations', 'deletionTimestamp', 'finalizers'):
            body['metadata'][key] = value
        else:
            body[key] = value
    return body


def match_request(handler_id: str, body: dict[str, Any], reason: int = pb.REASON_UNSPECIFIED) -> pb.InvokeRequest:
    """ What the core sends: the handler, the reason (DELETE or none), the object, the resource. """
    resource = pb.ResolvedResource(group='kopf.dev', version='v1', plural='kopfexamples', kind='KopfExample',
                                   namespaced=True)
    return pb.InvokeRequest(handler_id=handler_id, reason=reason, body_json=json.dumps(body).encode(),
                            resource=resource)


def match(backend: Any, *requests: pb.InvokeRequest) -> list[Any]:
    """ Each request sent as `Match` to the real server: `matched`, or the gRPC error's (code, details). """
    async def scenario() -> list[Any]:
        srv = server.HandlerServer(backend)
        port = await srv.start()
        answers: list[Any] = []
        try:
            async with grpc.aio.insecure_channel(f'127.0.0.1:{port}') as channel:
                stub = pb_grpc.HandlerServiceStub(channel)
                for request in requests:
                    try:
                        response = await stub.Match(request, timeout=5)
                    except grpc.aio.AioRpcError as e:
                        answers.append((e.code(), e.details()))
                    else:
                        answers.append(response.matched)
        finally:
            await srv.stop(0)
        return answers
    return asyncio.run(scenario())


def test_a_timers_when_filter_answers_per_body(registry, backend):
    ran: list[Any] = []

    @kopf.timer('kopfexamples', id='tick', interval=1, when=lambda body, **_: body['spec'].get('on'))
    def tick(**_: Any) -> None:
        ran.append('tick')

    answers = match(backend,
                    match_request('tick', body_with(spec={'on': True})),
                    match_request('tick', body_with(spec={'on': False})),
                    match_request('tick', body_with(spec={})))
    assert answers == [True, False, False]
    assert ran == [], "Match never runs the handler"


def test_a_daemons_when_filter_answers_per_body(registry, backend):
    ran: list[Any] = []

    @kopf.daemon('kopfexamples', id='loop', when=lambda spec, **_: spec.get('on') == 'yes')
    def loop(**_: Any) -> None:
        ran.append('loop')

    answers = match(backend,
                    match_request('loop', body_with(spec={'on': 'yes'})),
                    match_request('loop', body_with(spec={'on': 'no'})))
    assert answers == [True, False]
    assert ran == []


def test_a_delete_handlers_label_callable_answers_per_body(registry, backend):
    ran: list[Any] = []

    @kopf.on.delete('kopfexamples', id='cleanup', labels={'somelabel': lambda value, **_: value == 'somevalue'})
    def cleanup(**_: Any) -> None:
        ran.append('cleanup')

    answers = match(backend,
                    match_request('cleanup', body_with(labels={'somelabel': 'somevalue'}), pb.REASON_DELETE),
                    match_request('cleanup', body_with(labels={'somelabel': 'other'}), pb.REASON_DELETE),
                    match_request('cleanup', body_with(labels={}), pb.REASON_DELETE))
    assert answers == [True, False, False]
    assert ran == []


def test_the_declarative_filters_are_evaluated_too(registry, backend):

    @kopf.on.delete('kopfexamples', id='cleanup', labels={'kind': 'a'}, when=lambda **_: True)
    def cleanup(**_: Any) -> None:
        raise AssertionError("must not run")

    answers = match(backend,
                    match_request('cleanup', body_with(labels={'kind': 'a'}), pb.REASON_DELETE),
                    match_request('cleanup', body_with(labels={'kind': 'b'}), pb.REASON_DELETE))
    assert answers == [True, False]


def test_a_delete_handlers_field_value_callable_sees_the_objects_field(registry, backend):
    # The core sends no old/new with Match: the field is looked up in the object, as in Kopf.
    @kopf.on.delete('kopfexamples', id='cleanup', field='spec.field', value=lambda v, **_: v == 'value')
    def cleanup(**_: Any) -> None:
        raise AssertionError("must not run")

    answers = match(backend,
                    match_request('cleanup/spec.field', body_with(spec={'field': 'value'}), pb.REASON_DELETE),
                    match_request('cleanup/spec.field', body_with(spec={'field': 'other'}), pb.REASON_DELETE),
                    match_request('cleanup/spec.field', body_with(spec={}), pb.REASON_DELETE))
    assert answers == [True, False, False]


def test_a_filter_that_raises_answers_matched_and_is_logged(registry, backend, caplog):
    ran: list[Any] = []

    def bad(*_: Any, **__: Any) -> bool:
        raise RuntimeError("the filter is broken")

    @kopf.timer('kopfexamples', id='tick', interval=1, when=bad)
    def tick(**_: Any) -> None:
        ran.append('tick')

    @kopf.on.delete('kopfexamples', id='cleanup', annotations={'someannotation': bad})
    def cleanup(**_: Any) -> None:
        ran.append('cleanup')

    caplog.set_level(logging.DEBUG)
    answers = match(backend, match_request('tick', OBJ), match_request('cleanup', OBJ, pb.REASON_DELETE))
    assert answers == [True, True], "the finalizer is kept rather than lost"
    assert ran == []
    assert "Filters of Timer 'tick' failed: RuntimeError('the filter is broken')" in caplog.text
    assert "Filters of Handler 'cleanup' failed: RuntimeError('the filter is broken')" in caplog.text


def test_an_unknown_handler_is_not_found(registry, backend):
    [answer] = match(backend, match_request('nope', OBJ))
    assert answer == (grpc.StatusCode.NOT_FOUND, "No handler with id 'nope' is registered.")


@pytest.mark.parametrize('decorator, reason, invoke_reason', [
    (lambda fn: kopf.timer('kopfexamples', id='fn', interval=1, when=fn), pb.REASON_UNSPECIFIED, None),
    (lambda fn: kopf.on.delete('kopfexamples', id='fn', when=fn), pb.REASON_DELETE, 'delete'),
])
def test_the_filters_get_the_kwargs_of_invoke_and_the_objects_memo(registry, backend, decorator, reason,
                                                                     invoke_reason):
    seen: list[dict[str, Any]] = []

    @kopf.index('pods', id='pods_idx')
    def pods_idx(**_: Any) -> None:
        pass

    def when(**kwargs: Any) -> bool:
        seen.append(kwargs)
        return False

    @decorator(when)
    def fn(**_: Any) -> None:
        raise AssertionError("must not run")

    assert match(backend, match_request('fn', OBJ, reason)) == [False]
    assert which(invoke(backend, make_request('fn', reason=invoke_reason)).outcome) == 'not_matched'
    at_match, at_invoke = seen
    assert set(at_match) == set(at_invoke)
    assert {'body', 'spec', 'meta', 'memo', 'logger', 'resource', 'pods_idx'} <= set(at_match)
    assert isinstance(at_match['body'], kopf.Body) and at_match['body']['metadata']['name'] == 'kopf-example-1'
    assert isinstance(at_match['logger'], kopf.ObjectLogger)
    assert isinstance(at_match['pods_idx'], kopf.Index)
    assert at_match['resource'].plural == 'kopfexamples'
    assert at_match['memo'] is at_invoke['memo'], "the object's own memo, as in its calls"
    if invoke_reason:
        assert at_match['reason'] == 'delete'
