"""Sub-handlers run within their parent's call, from the core's records, as Kopf runs them."""
import datetime
import json
from typing import Any

import pytest

import kopf
from kopf._core.reactor import handling, wire
from kopf._proto.operon.v1 import handler_pb2 as pb

from conftest import invoke, make_request, ts, which

NOW = datetime.datetime.now(datetime.timezone.utc)


def record(id: str, *, retries: int = 1, success: bool = False, failure: bool = False,
           delayed: datetime.datetime | None = None, started: datetime.datetime | None = None,
           message: str = '') -> pb.Record:
    rec = pb.Record(id=id, retries=retries, success=success, failure=failure, message=message)
    rec.started.CopyFrom(ts(started or NOW - datetime.timedelta(seconds=10)))
    if delayed is not None:
        rec.delayed.CopyFrom(ts(delayed))
    return rec


def subs(response: pb.InvokeResponse) -> list[tuple[str, str]]:
    return [(s.id, which(s.outcome)) for s in response.subhandlers]


@pytest.fixture()
def parent(registry):
    calls: list[str] = []

    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        calls.append('fn')

        @kopf.subhandler(id='a')
        def sub_a(**_: Any) -> Any:
            calls.append('a')
            return {'a': 1}

        @kopf.subhandler(id='b')
        def sub_b(**_: Any) -> None:
            calls.append('b')

    return calls


def test_one_subhandler_per_call_then_pending(backend, parent):
    response = invoke(backend, make_request('fn'))
    assert parent == ['fn', 'a']
    assert which(response.outcome) == 'subhandlers_pending'
    assert response.outcome.subhandlers_pending.delay.seconds == 0
    assert subs(response) == [('fn/a', 'success'), ('fn/b', '')]  # b: selected, not run (recorded as Kopf does)
    assert not response.subhandlers[1].HasField('outcome')
    assert json.loads(response.subhandlers[0].outcome.success.result_json) == {'a': 1}


def test_finished_subhandlers_are_skipped_and_the_parent_succeeds_when_all_are_done(backend, parent):
    response = invoke(backend, make_request('fn', records=[record('fn/a', success=True)]))
    assert parent == ['fn', 'b']
    assert which(response.outcome) == 'success'
    assert subs(response) == [('fn/b', 'success')]


def test_all_done_already_means_success_without_calls(backend, parent):
    records = [record('fn/a', success=True), record('fn/b', failure=True, message='x')]
    response = invoke(backend, make_request('fn', records=records))
    assert parent == ['fn']
    assert which(response.outcome) == 'success'
    assert subs(response) == []


def test_sleeping_subhandlers_are_skipped_and_their_delay_is_reported(backend, parent):
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)
    records = [record('fn/a', delayed=later)]
    response = invoke(backend, make_request('fn', records=records))
    assert parent == ['fn', 'b']
    assert subs(response) == [('fn/b', 'success'), ('fn/a', '')]
    assert which(response.outcome) == 'subhandlers_pending'
    assert 25 <= response.outcome.subhandlers_pending.delay.seconds <= 30


def test_retry_and_started_of_subhandlers_come_from_their_records(registry, backend):
    seen: dict[str, Any] = {}
    started = NOW - datetime.timedelta(minutes=5)

    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        @kopf.subhandler(id='a')
        def sub_a(retry: int, started: datetime.datetime, runtime: datetime.timedelta, **_: Any) -> None:
            seen.update(retry=retry, started=started, runtime=runtime)

    invoke(backend, make_request('fn', retry=7, records=[record('fn/a', retries=3, started=started)]))
    assert seen['retry'] == 3
    assert abs((seen['started'] - started).total_seconds()) < 0.001
    assert seen['runtime'] >= datetime.timedelta(minutes=5)


def test_subhandlers_with_default_options_report_raw_outcomes(registry, backend):
    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        @kopf.subhandler(id='tmp')
        def tmp(**_: Any) -> None:
            raise kopf.TemporaryError("later", delay=5)

        @kopf.subhandler(id='arb')
        def arb(**_: Any) -> None:
            raise ValueError("boom")

        @kopf.subhandler(id='perm')
        def perm(**_: Any) -> None:
            raise kopf.PermanentError("never")

    backend.lifecycle = kopf.lifecycles.all_at_once
    response = invoke(backend, make_request('fn'))
    assert subs(response) == [('fn/tmp', 'temporary_error'), ('fn/arb', 'arbitrary_error'), ('fn/perm', 'permanent_error')]
    assert response.subhandlers[0].outcome.temporary_error.delay.seconds == 5
    assert response.subhandlers[1].outcome.arbitrary_error.error_type == 'ValueError'
    assert response.subhandlers[2].outcome.permanent_error.message == 'never'
    assert which(response.outcome) == 'subhandlers_pending'
    delay = response.outcome.subhandlers_pending.delay
    assert 4 <= delay.seconds + delay.nanos / 1e9 <= 5  # ~5 s, minus the time spent


def test_subhandlers_options_are_sent_with_their_raw_outcomes(registry, backend, settings):
    settings.execution.default_backoff = 60

    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        @kopf.subhandler(id='retried', retries=2)
        def retried(**_: Any) -> None:
            raise kopf.TemporaryError("again", delay=1)

        @kopf.subhandler(id='backoff', backoff=3)
        def backoff(**_: Any) -> None:
            raise ValueError("boom")

        @kopf.subhandler(id='strict', errors=kopf.ErrorsMode.PERMANENT)
        def strict(**_: Any) -> None:
            raise ValueError("boom")

        @kopf.subhandler(id='lenient', errors=kopf.ErrorsMode.IGNORED)
        def lenient(**_: Any) -> None:
            raise ValueError("boom")

    backend.lifecycle = kopf.lifecycles.all_at_once
    response = invoke(backend, make_request('fn', records=[record('fn/retried', retries=1)]))
    sent = {s.id: s for s in response.subhandlers}
    assert sent['fn/retried'].outcome.temporary_error.message == 'again'
    assert sent['fn/retried'].outcome.temporary_error.delay.seconds == 1
    assert sent['fn/retried'].options.retries == 2
    assert sent['fn/backoff'].outcome.arbitrary_error.message == 'boom'
    assert sent['fn/backoff'].options.backoff.seconds == 3
    assert sent['fn/strict'].outcome.arbitrary_error.message == 'boom'
    assert sent['fn/strict'].options.errors == pb.ERRORS_MODE_PERMANENT
    assert sent['fn/lenient'].outcome.arbitrary_error.message == 'boom'
    assert sent['fn/lenient'].options.errors == pb.ERRORS_MODE_IGNORED


def test_subhandlers_options_are_applied_here_to_judge_the_parent(registry, backend, settings):
    """ Kopf's verdicts decide whether the parent is finished: only `backoff` is still retried (3 s). """
    settings.execution.default_backoff = 60

    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        @kopf.subhandler(id='retried', retries=2)
        def retried(**_: Any) -> None:
            raise kopf.TemporaryError("again", delay=1)

        @kopf.subhandler(id='backoff', backoff=3)
        def backoff(**_: Any) -> None:
            raise ValueError("boom")

        @kopf.subhandler(id='strict', errors=kopf.ErrorsMode.PERMANENT)
        def strict(**_: Any) -> None:
            raise ValueError("boom")

        @kopf.subhandler(id='lenient', errors=kopf.ErrorsMode.IGNORED)
        def lenient(**_: Any) -> None:
            raise ValueError("boom")

    backend.lifecycle = kopf.lifecycles.all_at_once
    response = invoke(backend, make_request('fn', records=[record('fn/retried', retries=1)]))
    assert which(response.outcome) == 'subhandlers_pending'
    delay = response.outcome.subhandlers_pending.delay
    assert 2 <= delay.seconds + delay.nanos / 1e9 <= 3
    response = invoke(backend, make_request('fn', records=[
        record('fn/retried', failure=True), record('fn/backoff', success=True),
        record('fn/strict', failure=True), record('fn/lenient', success=True)]))
    assert which(response.outcome) == 'success'


def test_exhausted_subhandlers_fail_before_the_call(registry, backend):
    calls: list[str] = []

    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        @kopf.subhandler(id='a', retries=3)
        def sub_a(**_: Any) -> None:
            calls.append('a')

    response = invoke(backend, make_request('fn', records=[record('fn/a', retries=3)]))
    assert calls == []
    assert response.subhandlers[0].outcome.permanent_error.message == "Handler 'fn/a' has exceeded 3 retries."
    assert which(response.outcome) == 'success'  # as in Kopf: all sub-handlers are finished.


def test_nested_subhandlers_are_reported_with_full_ids(registry, backend):
    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        @kopf.subhandler(id='s1')
        def s1(**_: Any) -> None:
            @kopf.subhandler(id='s1a')
            def s1a(**_: Any) -> None:
                pass

            @kopf.subhandler(id='s1b')
            def s1b(**_: Any) -> None:
                pass

    backend.lifecycle = kopf.lifecycles.all_at_once
    response = invoke(backend, make_request('fn'))
    assert subs(response) == [('fn/s1/s1a', 'success'), ('fn/s1/s1b', 'success'), ('fn/s1', 'success')]
    assert which(response.outcome) == 'success'


def test_nested_pending_subhandlers(registry, backend):
    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        @kopf.subhandler(id='s1')
        def s1(**_: Any) -> None:
            @kopf.subhandler(id='s1a')
            def s1a(**_: Any) -> None:
                pass

            @kopf.subhandler(id='s1b')
            def s1b(**_: Any) -> None:
                pass

    response = invoke(backend, make_request('fn'))
    assert subs(response) == [('fn/s1/s1a', 'success'), ('fn/s1/s1b', ''), ('fn/s1', 'subhandlers_pending')]
    assert which(response.outcome) == 'subhandlers_pending'
    response = invoke(backend, make_request('fn', records=[record('fn/s1'), record('fn/s1/s1a', success=True)]))
    assert subs(response) == [('fn/s1/s1b', 'success'), ('fn/s1', 'success')]
    assert which(response.outcome) == 'success'


@pytest.mark.parametrize('make_fns, ids', [
    (lambda a, b: {'x': a, 'y': b}, ['fn/x', 'fn/y']),
    (lambda a, b: [a, b], ['fn/named_a', 'fn/named_b']),
])
def test_execute_with_fns(registry, backend, make_fns, ids):
    def named_a(**_: Any) -> None:
        pass

    def named_b(**_: Any) -> None:
        pass
    named_a.__qualname__, named_b.__qualname__ = 'named_a', 'named_b'

    @kopf.on.create('kopfexamples', id='fn')
    async def fn(**_: Any) -> None:
        await kopf.execute(fns=make_fns(named_a, named_b))

    backend.lifecycle = kopf.lifecycles.all_at_once
    response = invoke(backend, make_request('fn'))
    assert [s.id for s in response.subhandlers] == ids
    assert which(response.outcome) == 'success'


def test_explicit_execute_prevents_the_implicit_one(registry, backend):
    calls: list[str] = []

    @kopf.on.create('kopfexamples', id='fn')
    async def fn(**_: Any) -> None:
        @kopf.subhandler(id='a')
        def sub_a(**_: Any) -> None:
            calls.append('a')
        await kopf.execute()
        calls.append('after')

    backend.lifecycle = kopf.lifecycles.all_at_once
    response = invoke(backend, make_request('fn'))
    assert calls == ['a', 'after']
    assert subs(response) == [('fn/a', 'success')]


def test_register_is_the_functional_subhandler(registry, backend):
    @kopf.on.create('kopfexamples', id='fn')
    def fn(spec: Any, **_: Any) -> None:
        for item in spec['items']:
            kopf.register(id=item, fn=lambda **_: None)

    backend.lifecycle = kopf.lifecycles.all_at_once
    response = invoke(backend, make_request('fn'))
    assert [s.id for s in response.subhandlers] == ['fn/item1', 'fn/item2']


def test_filtered_out_subhandlers_are_neither_run_nor_awaited(registry, backend):
    @kopf.on.create('kopfexamples', id='fn')
    def fn(**_: Any) -> None:
        @kopf.subhandler(id='yes', labels={'somelabel': 'somevalue'})
        def yes(**_: Any) -> None:
            pass

        @kopf.subhandler(id='no', when=lambda **_: False)
        def no(**_: Any) -> None:
            pass

    response = invoke(backend, make_request('fn'))
    assert subs(response) == [('fn/yes', 'success')]
    assert which(response.outcome) == 'success'


def test_subhandlers_patch_the_parents_patch(registry, backend):
    @kopf.on.create('kopfexamples', id='fn')
    def fn(patch: kopf.Patch, **_: Any) -> None:
        patch.status['parent'] = True

        @kopf.subhandler(id='a')
        def sub_a(patch: kopf.Patch, **_: Any) -> None:
            patch.status['child'] = True

    response = invoke(backend, make_request('fn'))
    assert json.loads(response.patch_json) == {'status': {'parent': True, 'child': True}}


def test_subhandlers_of_event_handlers_are_refused(registry, backend):
    @kopf.on.event('kopfexamples', id='ev')
    async def ev(**_: Any) -> None:
        await kopf.execute(fns={'x': lambda **_: None})

    response = invoke(backend, make_request('ev', reason=None, event_type='ADDED'))
    assert which(response.outcome) == 'arbitrary_error'


def test_subhandler_outside_of_handlers_is_a_lookup_error():
    with pytest.raises(LookupError):
        @kopf.subhandler(id='x')
        def fn(**_: Any) -> None:
            pass


def test_outcome_mapping_of_raw_outcomes():
    from kopf._core import calls
    o = calls.Outcome
    assert which(wire.outcome_of_subhandler(o(final=True, result=1))) == 'success'
    assert which(wire.outcome_of_subhandler(o(final=False, delay=1, exception=kopf.TemporaryError('x', delay=1)))) == 'temporary_error'
    assert which(wire.outcome_of_subhandler(o(final=False, delay=60, exception=ValueError('x')))) == 'arbitrary_error'
    assert which(wire.outcome_of_subhandler(o(final=True, exception=kopf.HandlerRetriesError('x')))) == 'permanent_error'
    plain = kopf._core.model.Handler(fn=lambda: None, id='x', kind='sub')
    tuned = kopf._core.model.Handler(fn=lambda: None, id='x', kind='sub', retries=5)
    assert handling.subhandler_options(plain) is None
    assert handling.subhandler_options(tuned).retries == 5
