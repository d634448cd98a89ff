"""
Daemons: one open ``Daemon`` call of the core is one run of a ``@kopf.daemon`` for one object.

The core decides when a daemon starts, restarts (after a temporary or arbitrary error, with
``retry`` one higher) and stops; here, the daemon's function runs as Kopf runs it:

* the ``body`` (and ``spec``, ``meta``, ``status``) it gets is live: every new version of the
  object that the core sends replaces the contents of the same body;
* a sync daemon runs in a thread and must watch its ``stopped`` flag (``stopped.wait(…)``);
  an async one is a task that is also cancelled when the core forces the stop (after the
  handler's ``cancellation_backoff``, if it has a ``cancellation_timeout``) or cancels the call;
* ``stopped.reason`` says why (:class:`kopf.DaemonStoppingReason`);
* what it puts into ``patch`` is sent when it exits (as Kopf applies a daemon's patch after each
  run), the Kubernetes events it posts (``kopf.info()``, the logger's lines) as they come.

The last message carries the exit's outcome, as for Invoke; a daemon that was cancelled ends the
call without one.
"""
import asyncio
import dataclasses
import datetime
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from kopf._cogs import settings as settings_
from kopf._core import calls, model, posting
from kopf._core.reactor import wire
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._transport import server

logger = logging.getLogger('kopf._core.reactor.daemons')

# How often the events a running daemon posts are sent to the core.
EVENTS_FLUSH_INTERVAL = 0.5

_STOP_REASONS: Mapping[int, model.DaemonStoppingReason] = {
    pb.DAEMON_STOP_REASON_RESOURCE_DELETED: model.DaemonStoppingReason.RESOURCE_DELETED,
    pb.DAEMON_STOP_REASON_FILTERS_MISMATCH: model.DaemonStoppingReason.FILTERS_MISMATCH,
    pb.DAEMON_STOP_REASON_OPERATOR_EXITING: model.DaemonStoppingReason.OPERATOR_EXITING,
}


class Host(Protocol):
    """
    What a daemon's run needs of the handler service that serves the call
    (:class:`kopf._core.reactor.handling.OperatorBackend`): the handler, its cause and filters
    as for an ``Invoke``, the operator's settings, and to let an object's memo go.
    """
    settings: settings_.OperatorSettings
    lifecycle: model.LifeCycleFn | None

    def find_handler(self, handler_id: str, reason: model.Reason | None,
                     resource: pb.ResolvedResource | None = None) -> model.Handler: ...

    def build_cause(self, handler: model.Handler, request: pb.InvokeRequest,
                    raw_body: dict[str, Any]) -> calls.Cause: ...

    def matches(self, handler: model.Handler, cause: calls.Cause, request: pb.InvokeRequest) -> bool: ...

    def forget(self, body: Mapping[str, Any]) -> None: ...


@dataclasses.dataclass
class _Run:
    """One run of one daemon: its function's task and what the core has told it."""
    handler: model.Handler
    cause: calls.Cause
    raw_body: dict[str, Any]
    stopped: model.DaemonStopped
    task: 'asyncio.Task[Any] | None' = None
    deleted: bool = False  # stopped because the object is deleted (or gone)

    def refresh(self, body_json: bytes) -> None:
        fresh = json.loads(body_json) if body_json else None
        if isinstance(fresh, dict):
            self.raw_body.clear()
            self.raw_body.update(fresh)

    def stop(self, reason: model.DaemonStoppingReason, *, force: bool) -> None:
        self.deleted = self.deleted or reason == model.DaemonStoppingReason.RESOURCE_DELETED
        if not self.stopped:
            self.stopped.set(reason)
        if force:
            self.stopped.set(model.DaemonStoppingReason.DAEMON_CANCELLED)
            if self.task is not None and not self.task.done():
                self.task.cancel()


async def _listen(run: _Run, requests: AsyncIterator[pb.DaemonRequest]) -> None:
    """Applies the core's later messages: new bodies and stops."""
    try:
        async for request in requests:
            which = request.WhichOneof('message')
            if which == 'body_json':
                run.refresh(request.body_json)
            elif which == 'stop':
                reason = _STOP_REASONS.get(request.stop.reason, model.DaemonStoppingReason.NONE)
                run.stop(reason, force=request.stop.force)
    except asyncio.CancelledError:
        raise
    except Exception:  # the call is broken: as if it were cancelled.
        run.stop(model.DaemonStoppingReason.OPERATOR_EXITING, force=True)


async def _invoke(run: _Run, backend: Host, retry: int, started: datetime.datetime) -> Any:
    try:
        return await calls.invoke(run.handler, run.cause, retry=retry, started=started,
                                  settings=backend.settings, with_subhandlers=False)
    except asyncio.CancelledError:
        run.cause.logger.warning(f"{run.handler} is cancelled. Will escalate.")
        raise


def _response(run: _Run, sink: posting.EventSink, *, final: bool,
              outcome: pb.Outcome | None = None) -> pb.DaemonResponse | None:
    events = sink.close() if final else sink.drain()
    response = pb.DaemonResponse(events=wire.event_messages(events, run.raw_body))
    if final:
        try:
            response.patch_json = wire.patch_json(run.cause)
        except Exception as e:
            run.cause.logger.error(f"{run.handler}'s patch cannot be applied: {e!r}")
            outcome = wire.arbitrary_outcome(e)
        if outcome is not None:
            response.exit.CopyFrom(outcome)
    if not final and not response.events:
        return None
    return response


async def serve(backend: Host, requests: AsyncIterator[pb.DaemonRequest],
                call: server.CallInfo) -> AsyncIterator[pb.DaemonResponse]:
    """Runs one daemon for one object for the duration of the call."""
    first = await anext(aiter(requests), None)
    if first is None:
        return
    if first.WhichOneof('message') != 'start':
        raise ValueError("The first message of a Daemon call must be `start`.")
    start = first.start
    handler = backend.find_handler(start.handler_id, None, start.resource)
    if handler.kind != 'daemon':
        raise LookupError(f"Handler {handler.id!r} is not a daemon.")
    raw_body = json.loads(start.body_json) if start.body_json else {}
    if not isinstance(raw_body, dict):
        raise ValueError(f"The body of the daemon {handler.id!r} is not a JSON object.")
    request = pb.InvokeRequest(handler_id=start.handler_id, body_json=start.body_json,
                               resource=start.resource, retry=start.retry)
    cause = backend.build_cause(handler, request, raw_body)
    assert cause.stopped is not None
    run = _Run(handler=handler, cause=cause, raw_body=raw_body, stopped=cause.stopped)
    started = wire.timestamp(start.started) if start.HasField('started') else calls.utcnow()

    sink = posting.EventSink()
    bindings: list[tuple[Any, Any]] = [
        (posting.event_sink_var, sink), (posting.settings_var, backend.settings),
        (calls.lifecycle_var, backend.lifecycle), (wire.call_var, call)]
    tokens = [(var, var.set(value)) for var, value in bindings]
    try:
        try:
            matched = backend.matches(handler, cause, request)
        except Exception as e:
            cause.logger.error(f"Filters of {handler} failed: {e!r}")
            yield pb.DaemonResponse(exit=wire.arbitrary_outcome(e))
            return
        if not matched:
            yield pb.DaemonResponse(exit=pb.Outcome(not_matched=pb.NotMatched()))
            return
        run.task = asyncio.create_task(_invoke(run, backend, start.retry, started))
    finally:
        for var, token in reversed(tokens):
            var.reset(token)

    listener = asyncio.create_task(_listen(run, requests))
    try:
        while not run.task.done():
            await asyncio.wait([run.task], timeout=EVENTS_FLUSH_INTERVAL)
            update = _response(run, sink, final=False)
            if update is not None:
                yield update
        if run.task.cancelled():
            final = _response(run, sink, final=True)
        else:
            exc = run.task.exception()
            if exc is None:
                try:
                    outcome = wire.success_outcome(run.task.result())
                except (TypeError, ValueError) as e:
                    outcome = wire.arbitrary_outcome(e)
            elif isinstance(exc, (model.TemporaryError, model.PermanentError)):
                outcome = wire.outcome_of_exception(exc)
            else:
                calls.log_traceback(cause.logger, handler, exc)
                outcome = wire.arbitrary_outcome(exc)
            final = _response(run, sink, final=True, outcome=outcome)
        if final is not None:
            yield final
    finally:
        # The call ends (or the core cancelled it): the daemon must not outlive it.
        if not run.task.done():
            run.stop(model.DaemonStoppingReason.OPERATOR_EXITING, force=True)
        listener.cancel()
        run.stopped.set(model.DaemonStoppingReason.DONE)
        if run.deleted:  # the object's end: its memo is let go (after the daemon is done with it).
            backend.forget(run.raw_body)
