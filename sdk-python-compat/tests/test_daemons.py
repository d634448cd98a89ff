"""@kopf.daemon served over the real gRPC transport: one Daemon call is one run of the daemon."""
import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
import pytest

import kopf
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from kopf._transport import server

from conftest import OBJ


class Core:
    """The core's side of one Daemon call: a queue of requests and the responses so far."""

    def __init__(self, stub: pb_grpc.HandlerServiceStub, handler_id: str, body: dict[str, Any], retry: int = 0):
        self.requests: asyncio.Queue[pb.DaemonRequest | None] = asyncio.Queue()
        start = pb.DaemonStart(handler_id=handler_id, body_json=json.dumps(body).encode(), retry=retry)
        self.requests.put_nowait(pb.DaemonRequest(start=start))
        self.call = stub.Daemon(self._requests())
        self.responses: list[pb.DaemonResponse] = []

    async def _requests(self) -> AsyncIterator[pb.DaemonRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    def send_body(self, body: dict[str, Any]) -> None:
        self.requests.put_nowait(pb.DaemonRequest(body_json=json.dumps(body).encode()))

    def stop(self, *, force: bool = False, reason: int = pb.DAEMON_STOP_REASON_RESOURCE_DELETED) -> None:
        self.requests.put_nowait(pb.DaemonRequest(stop=pb.DaemonStop(reason=reason, force=force)))

    async def until_exit(self, timeout: float = 10) -> pb.DaemonResponse | None:
        async def read() -> pb.DaemonResponse | None:
            async for response in self.call:
                self.responses.append(response)
                if response.HasField('exit'):
                    return response
            return None
        return await asyncio.wait_for(read(), timeout)


async def wait_for_flag(flag: threading.Event, timeout: float = 5) -> bool:
    for _ in range(int(timeout / 0.05)):
        if flag.is_set():
            return True
        await asyncio.sleep(0.05)
    return flag.is_set()


async def _serve(backend: Any, body: Any) -> None:
    srv = server.HandlerServer(backend)
    port = await srv.start()
    try:
        async with grpc.aio.insecure_channel(f'127.0.0.1:{port}') as channel:
            await body(pb_grpc.HandlerServiceStub(channel))
    finally:
        await srv.stop(0)


def run(backend: Any, body: Any) -> None:
    asyncio.run(_serve(backend, body))


def test_a_sync_daemon_sees_live_bodies_and_exits_on_stop_with_its_patch(registry, backend):
    seen: list[Any] = []
    reasons: list[Any] = []
    updated = threading.Event()

    @kopf.daemon('kopfexamples', id='fn')
    def fn(stopped: kopf.DaemonStopped, spec: kopf.Spec, patch: kopf.Patch, retry: int, **_: Any) -> str:
        while not stopped:
            seen.append(spec.get('field'))
            if spec.get('field') == 'changed':
                updated.set()
            stopped.wait(0.05)
        reasons.append(stopped.reason)
        patch.status['message'] = f"finished at retry {retry}"
        return 'done'

    async def scenario(stub: pb_grpc.HandlerServiceStub) -> None:
        core = Core(stub, 'fn', OBJ, retry=2)
        await asyncio.sleep(0.2)
        core.send_body({**OBJ, 'spec': {'field': 'changed'}})
        assert await wait_for_flag(updated)
        core.stop()
        last = await core.until_exit()
        assert last is not None
        assert last.exit.WhichOneof('result') == 'success'
        assert json.loads(last.exit.success.result_json) == 'done'
        assert json.loads(last.patch_json) == {'status': {'message': 'finished at retry 2'}}

    run(backend, scenario)
    assert seen[0] == 'value' and seen[-1] == 'changed'
    assert reasons[0] & kopf.DaemonStoppingReason.RESOURCE_DELETED


def test_an_async_daemon_is_cancelled_by_a_forced_stop(registry, backend, caplog):
    cancelled = []

    @kopf.daemon('kopfexamples', id='fn')
    async def fn(stopped: kopf.DaemonStopped, **_: Any) -> None:
        try:
            while True:
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            cancelled.append(stopped.reason)
            raise

    async def scenario(stub: pb_grpc.HandlerServiceStub) -> None:
        core = Core(stub, 'fn', OBJ)
        await asyncio.sleep(0.2)
        core.stop()  # graceful: the async daemon ignores its flag
        await asyncio.sleep(0.2)
        assert not cancelled
        core.stop(force=True)
        assert await core.until_exit() is None  # cancelled: the call ends without an outcome

    run(backend, scenario)
    assert cancelled and cancelled[0] & kopf.DaemonStoppingReason.DAEMON_CANCELLED
    assert "Daemon 'fn' is cancelled. Will escalate." in caplog.text


@pytest.mark.parametrize('exc, which', [
    (kopf.TemporaryError("later", delay=3), 'temporary_error'),
    (kopf.PermanentError("never"), 'permanent_error'),
    (ValueError("boom"), 'arbitrary_error'),
])
def test_errors_are_exit_outcomes(registry, backend, exc, which):

    @kopf.daemon('kopfexamples', id='fn')
    def fn(patch: kopf.Patch, **_: Any) -> None:
        patch.status['attempted'] = True
        raise exc

    async def scenario(stub: pb_grpc.HandlerServiceStub) -> None:
        last = await Core(stub, 'fn', OBJ).until_exit()
        assert last is not None
        assert last.exit.WhichOneof('result') == which
        assert json.loads(last.patch_json) == {'status': {'attempted': True}}
        if which == 'temporary_error':
            assert last.exit.temporary_error.delay.seconds == 3

    run(backend, scenario)


def test_a_cancelled_call_stops_the_daemon(registry, backend):
    flags: list[Any] = []
    done = threading.Event()

    @kopf.daemon('kopfexamples', id='fn')
    def fn(stopped: kopf.DaemonStopped, **_: Any) -> None:
        stopped.wait(10)
        flags.append(bool(stopped))
        done.set()

    async def scenario(stub: pb_grpc.HandlerServiceStub) -> None:
        core = Core(stub, 'fn', OBJ)
        await asyncio.sleep(0.3)
        core.call.cancel()
        assert await wait_for_flag(done)

    run(backend, scenario)
    assert flags == [True]


def test_events_are_sent_while_the_daemon_runs(registry, backend):

    @kopf.daemon('kopfexamples', id='fn')
    async def fn(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        kopf.info(body, reason='Started', message='The daemon runs.')
        await stopped.wait()

    async def scenario(stub: pb_grpc.HandlerServiceStub) -> None:
        core = Core(stub, 'fn', OBJ)
        await asyncio.sleep(1.0)  # longer than the flush interval
        core.stop()
        last = await core.until_exit()
        assert last is not None and last.exit.WhichOneof('result') == 'success'
        first = core.responses[0]
        assert [(e.reason, e.message) for e in first.events] == [('Started', 'The daemon runs.')]
        assert not first.HasField('exit'), "the events came before the exit"

    run(backend, scenario)


def test_callback_filters_that_say_no_answer_not_matched(registry, backend):

    @kopf.daemon('kopfexamples', id='fn', when=lambda **_: False)
    def fn(**_: Any) -> None:
        raise AssertionError("must not run")

    async def scenario(stub: pb_grpc.HandlerServiceStub) -> None:
        last = await Core(stub, 'fn', OBJ).until_exit()
        assert last is not None and last.exit.WhichOneof('result') == 'not_matched'

    run(backend, scenario)


def test_the_manifest_carries_the_cancellation_options(registry, backend):

    @kopf.daemon('kopfexamples', id='fn', cancellation_backoff=1.5, cancellation_timeout=0.5, initial_delay=2)
    def fn(**_: Any) -> None:
        pass

    manifest = asyncio.run(backend.describe(pb.DescribeRequest(), server.CallInfo()))
    [handler] = manifest.handlers
    assert handler.kind == pb.HANDLER_KIND_DAEMON
    assert handler.options.cancellation_backoff.seconds == 1
    assert handler.options.cancellation_backoff.nanos == 500_000_000
    assert handler.options.cancellation_timeout.nanos == 500_000_000
    assert handler.options.initial_delay.seconds == 2
