"""
The handler service: Describe and Invoke of the operon.v1 contract, in Kopf's terms.

The core decides *when* a handler runs (causes, declarative filters, progress, retries) and
records what happened. Here, one ``Invoke`` is one call of one handler for one object, made as
Kopf makes it: the kwargs per handler type, the sub-handlers (their records come with the call,
their outcomes go back with the answer), the callback filters (``when=`` & co.), the patch, the
result, the k8s-events --- and the exception, translated into the outcome the core understands:

==========================================  ==================================================
the handler                                  the outcome
==========================================  ==================================================
returns a value                              ``success`` (the value as JSON, into status.<id>)
raises ``kopf.TemporaryError(delay=…)``      ``temporary_error`` with the delay (default 60 s)
raises ``kopf.PermanentError`` (& subclasses) ``permanent_error``
raises anything else                         ``arbitrary_error`` (``str(e)``, the class name)
has unfinished sub-handlers                  ``subhandlers_pending`` (Kopf's HandlerChildrenRetry)
is filtered out by a callback filter         ``not_matched``
==========================================  ==================================================

# Guarantees
A handler's error never fails the call or the server: it is an outcome. The answer comes
before the call's deadline: a handler still running by then is answered as an arbitrary error
(an async handler is cancelled; a sync handler's thread cannot be, and finishes in the background).
"""
import asyncio
import collections
import copy
import dataclasses
import datetime
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from google.protobuf import timestamp_pb2

from kopf._cogs import refs, settings as settings_, views
from kopf._core import calls, logs, model, posting
from kopf._core.reactor import manifests
from kopf._core.registry import OperatorRegistry
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._transport import server, tracing

logger = logging.getLogger('kopf._core.reactor.handling')

# The answer must reach the core before its deadline: stop waiting for the handler this early.
DEADLINE_MARGIN = 0.5

# Per-object memos (Kopf keeps them in the per-object memory); the least recently used go first.
MAX_MEMOS = 10_000

# The current call of the core (its metadata, e.g. the W3C `traceparent`, and its deadline),
# for whatever runs within it: the handler, its sub-handlers, their helpers.
call_var: ContextVar[server.CallInfo] = ContextVar('call_var')

_REASONS: Mapping[int, model.Reason] = {
    pb.REASON_CREATE: model.Reason.CREATE,
    pb.REASON_UPDATE: model.Reason.UPDATE,
    pb.REASON_DELETE: model.Reason.DELETE,
    pb.REASON_RESUME: model.Reason.RESUME,
}

# Which handler kinds serve which reason, for ids registered under several kinds.
_KINDS_OF_REASON: Mapping[model.Reason, tuple[str, ...]] = {
    model.Reason.CREATE: ('create',), model.Reason.UPDATE: ('update', 'field'),
    model.Reason.DELETE: ('delete',), model.Reason.RESUME: ('resume',),
}


def indices_of(registry: OperatorRegistry) -> dict[str, model.Index[Any, Any]]:
    """ Indexers do not run on Operon yet: every index kwarg is an empty index. """
    return {handler.id: model.Index() for handler in registry.of_kinds('index')}


def timestamp(ts: timestamp_pb2.Timestamp) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=datetime.timezone.utc)


def records_of(request: pb.InvokeRequest) -> dict[str, calls.Progress]:
    """ The sub-handlers' progress as the core read it from the object. """
    now = calls.utcnow()
    return {
        record.id: calls.Progress(
            started=timestamp(record.started) if record.HasField('started') else now,
            delayed=timestamp(record.delayed) if record.HasField('delayed') else None,
            retries=record.retries,
            success=record.success,
            failure=record.failure,
            message=record.message or None,
        )
        for record in request.subhandlers
    }


def _pluralize(word: str) -> str:
    if word.endswith(('s', 'x', 'z', 'ch', 'sh')):
        return word + 'es'
    if word.endswith('y') and word[-2:-1] not in ('a', 'e', 'i', 'o', 'u'):
        return word[:-1] + 'ies'
    return word + 's'


def resource_of(request: pb.InvokeRequest, body: Mapping[str, Any], selector: refs.Selector | None) -> refs.Resource:
    """ The ``resource`` kwarg: as the core resolved it, or (from older cores) a guess. """
    if request.HasField('resource') and request.resource.plural:
        r = request.resource
        kind = r.kind or body.get('kind') or None
        return refs.Resource(group=r.group, version=r.version, plural=r.plural, kind=kind,
                             singular=kind.lower() if kind else None, namespaced=r.namespaced)
    return guess_resource(body, selector)


def guess_resource(body: Mapping[str, Any], selector: refs.Selector | None) -> refs.Resource:
    """
    The ``resource`` kwarg when the core does not send it: group, version & kind from the object.

    # Caveats
    The plural name is not in the object: it is taken from the handler's selector when the
    selector names the plural, or else derived from the kind (``KopfExample`` → ``kopfexamples``),
    which is right for nearly all resources, but not for all.
    """
    api_version = str(body.get('apiVersion') or '')
    group, _, version = api_version.rpartition('/')
    kind = body.get('kind')
    kind = kind if isinstance(kind, str) else None
    plural: str | None = selector.plural if selector is not None else None
    if plural is None and selector is not None and isinstance(selector.any_name, str) and kind:
        name, lower = selector.any_name, kind.lower()
        if name.startswith(lower) or (lower.endswith('y') and name.startswith(lower[:-1]) and len(name) > len(lower)):
            plural = name
    if plural is None:
        plural = _pluralize(kind.lower()) if kind else ''
    namespaced = bool(body.get('metadata', {}).get('namespace'))
    return refs.Resource(
        group=group, version=version, plural=plural,
        kind=kind, singular=kind.lower() if kind else None, namespaced=namespaced,
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(',', ':'), allow_nan=False).encode('utf-8')


def _loads(data: bytes) -> Any:
    return json.loads(data) if data else None


def _outcome_temporary(message: str, delay: float | None) -> pb.Outcome:
    error = pb.TemporaryError(message=message)
    if delay is not None:
        error.delay.CopyFrom(manifests.duration(delay))
    return pb.Outcome(temporary_error=error)


def _outcome_pending(delay: float | None) -> pb.Outcome:
    pending = pb.SubhandlersPending()
    if delay is not None:
        pending.delay.CopyFrom(manifests.duration(delay))
    return pb.Outcome(subhandlers_pending=pending)


def _outcome_arbitrary(exc: BaseException) -> pb.Outcome:
    return pb.Outcome(arbitrary_error=pb.ArbitraryError(message=str(exc), error_type=type(exc).__name__))


def _outcome_success(result: Any) -> pb.Outcome:
    return pb.Outcome(success=pb.Success(result_json=b'' if result is None else _json(result)))


def outcome_of_exception(exc: BaseException) -> pb.Outcome:
    """ A handler's exception as a raw outcome; the core judges it with the handler's options. """
    if isinstance(exc, model.HandlerChildrenRetry):
        return _outcome_pending(exc.delay)
    if isinstance(exc, model.TemporaryError):
        return _outcome_temporary(str(exc), exc.delay)
    if isinstance(exc, model.PermanentError):
        return pb.Outcome(permanent_error=pb.PermanentError(message=str(exc)))
    return _outcome_arbitrary(exc)


def outcome_of_subhandler(outcome: calls.Outcome) -> pb.Outcome:
    """
    A sub-handler's raw outcome: its result or its exception as it was raised (or, when its
    retries or time were used up before the call, the permanent error that Kopf raises then).
    The core judges it with the sub-handler's own options, sent along (:func:`subhandler_options`).
    """
    if outcome.exception is None:
        return _outcome_success(outcome.result)
    return outcome_of_exception(outcome.exception)


def subhandler_options(handler: model.Handler) -> pb.Options | None:
    """ The options the core needs to judge a sub-handler's outcomes; ``None`` if all are defaults. """
    if handler.errors is None and handler.backoff is None and handler.retries is None and handler.timeout is None:
        return None
    return manifests.build_options(handler)


def _same_object(ref: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    meta = body.get('metadata', {})
    if ref.get('uid') or meta.get('uid'):
        return bool(ref.get('uid') == meta.get('uid'))
    return bool(ref.get('name') == meta.get('name') and ref.get('namespace') == meta.get('namespace')
                and ref.get('kind') == body.get('kind'))


def _event_messages(events: Sequence[posting.K8sEvent], body: Mapping[str, Any]) -> list[pb.Event]:
    return [
        pb.Event(
            type=event.type,
            reason=event.reason,
            message=posting.shorten_message(event.message),
            involved_object_json=b'' if _same_object(event.ref, body) else _json(dict(event.ref)),
        )
        for event in events
        if not (event.ref.get('apiVersion') == 'v1' and event.ref.get('kind') == 'Event')
    ]


@dataclasses.dataclass
class OperatorBackend(server.Backend):
    """
    The operator's handlers as a handler service (implements the transport's backend).
    """
    registry: OperatorRegistry
    settings: settings_.OperatorSettings
    memo: Any = dataclasses.field(default_factory=views.Memo)
    service_name: str = 'kopf'
    lifecycle: model.LifeCycleFn | None = None
    _memos: 'collections.OrderedDict[str, Any]' = dataclasses.field(default_factory=collections.OrderedDict)

    # -- Describe ---------------------------------------------------------------------------------

    async def describe(self, request: pb.DescribeRequest, call: server.CallInfo) -> pb.Manifest:
        build = manifests.build_manifest(self.registry, service_name=self.service_name)
        logger.debug(f"Described {len(build.manifest.handlers)} handlers to the Operon core "
                     f"{request.core_version or '(unknown version)'}.")
        return build.manifest

    # -- Invoke -----------------------------------------------------------------------------------

    def find_handler(self, handler_id: str, reason: model.Reason | None) -> model.Handler:
        """
        The registered handler by id; among several registrations of one id, the one of the reason.

        # Errors
        :class:`LookupError` if there is none (a contract error: the core asked for a handler that
        the manifest did not have).
        """
        found = [handler for handler in manifests.served_handlers(self.registry) if handler.id == handler_id]
        if not found:
            raise LookupError(f"No handler with id {handler_id!r} is registered.")
        wanted = _KINDS_OF_REASON.get(reason, ()) if reason is not None else ()
        return next((handler for handler in found if handler.kind in wanted), found[0])

    def memo_for(self, body: Mapping[str, Any]) -> Any:
        """ Kopf's per-object memo: a shallow copy of the operator's memo, kept per object. """
        meta = body.get('metadata', {})
        uid = meta.get('uid') or repr((body.get('kind'), meta.get('namespace'), meta.get('name')))
        memo = self._memos.get(uid)
        if memo is None:
            memo = self._memos[uid] = copy.copy(self.memo)
            while len(self._memos) > MAX_MEMOS:
                self._memos.popitem(last=False)
        else:
            self._memos.move_to_end(uid)
        return memo

    def forget(self, body: Mapping[str, Any]) -> None:
        uid = body.get('metadata', {}).get('uid')
        if uid:
            self._memos.pop(uid, None)

    def build_cause(self, handler: model.Handler, request: pb.InvokeRequest, raw_body: dict[str, Any]) -> calls.Cause:
        body = views.Body(raw_body)
        cause = calls.Cause(
            logger=logs.ObjectLogger(body=body, settings=self.settings),
            memo=self.memo_for(raw_body),
            indices=indices_of(self.registry),
            body=body,
            patch=views.Patch(body=body),
            resource=resource_of(request, raw_body, handler.selector),
        )
        if handler.kind == 'event':
            cause.logger = logs.LocalObjectLogger(body=body, settings=self.settings)
            cause.event_type = request.event_type or None
            return cause
        if handler.kind in ('timer', 'daemon'):
            # One call is one run of a timer. Its `stopped` flag is set when the core cancels the
            # call: the object is deleted, the timer matches no more, or the operator stops.
            spawned = model.AsyncDaemonStopped if calls.is_coroutine_fn(handler.fn) else model.DaemonStopped
            cause.stopped = spawned()
            return cause
        reason = _REASONS.get(request.reason)
        if reason is None:
            raise LookupError(f"Handler {handler.id!r} is called without a reason.")
        cause.reason = reason
        cause.initial = reason == model.Reason.RESUME
        cause.diff = views.Diff(_loads(request.diff_json) or [])
        cause.old = _loads(request.old_json)
        cause.new = _loads(request.new_json)
        return cause

    def matches(self, handler: model.Handler, cause: calls.Cause, request: pb.InvokeRequest) -> bool:
        """
        Kopf's full filters of the handler (the core has checked the declarative ones already).

        For handlers with ``field=``, the core sends the field's old & new values rather than the
        whole essences; they are put back at the field's path for the field filters to find them.
        """
        if not manifests.build_filters(handler).has_callback_filters:
            return True  # all is declarative, and the core has checked it.
        if cause.is_change and handler.field:
            old: dict[str, Any] | None = None
            new: dict[str, Any] | None = None
            if request.old_json:
                old = {}
                views.plant(old, handler.field, cause.old)
            if request.new_json:
                new = {}
                views.plant(new, handler.field, cause.new)
            cause = dataclasses.replace(cause, old=old, new=new)
        return calls.matches(handler, cause)

    async def invoke(self, request: pb.InvokeRequest, call: server.CallInfo) -> pb.InvokeResponse:
        reason = _REASONS.get(request.reason)
        handler = self.find_handler(request.handler_id, reason)
        raw_body = _loads(request.body_json) or {}
        if not isinstance(raw_body, dict):
            raise ValueError(f"The body of the call of {handler.id!r} is not a JSON object.")
        cause = self.build_cause(handler, request, raw_body)

        sink = posting.EventSink()
        records = calls.CallRecords(progress=records_of(request))
        started = timestamp(request.started) if request.HasField('started') else calls.utcnow()
        outcome: pb.Outcome
        bindings: list[tuple[Any, Any]] = [
            (posting.event_sink_var, sink), (posting.settings_var, self.settings),
            (calls.records_var, records), (calls.lifecycle_var, self.lifecycle), (call_var, call)]
        tokens = [(var, var.set(value)) for var, value in bindings]
        try:
            try:
                matched = self.matches(handler, cause, request)
            except Exception as e:
                cause.logger.error(f"Filters of {handler} failed: {e!r}")
                return pb.InvokeResponse(outcome=_outcome_arbitrary(e))
            if not matched:
                return pb.InvokeResponse(outcome=pb.Outcome(not_matched=pb.NotMatched()))
            outcome = await self._call(handler, cause, request.retry, started, call)
        finally:
            for var, token in reversed(tokens):
                var.reset(token)

        response = pb.InvokeResponse(outcome=outcome)
        try:
            merge_patch = cause.patch.as_merge_patch(cause.body) if cause.patch else {}
            response.patch_json = _json(merge_patch) if merge_patch else b''
        except Exception as e:
            cause.logger.error(f"{handler}'s patch cannot be applied: {e!r}")
            response.outcome.CopyFrom(_outcome_arbitrary(e))
        for report in records.reports:
            response.subhandlers.append(self._subhandler_message(report, cause))
        response.events.extend(_event_messages(sink.close(), raw_body))
        if request.event_type == 'DELETED':
            self.forget(raw_body)
        return response

    def daemon(self, requests: AsyncIterator[pb.DaemonRequest],
               call: server.CallInfo) -> AsyncIterator[pb.DaemonResponse]:
        """One run of a daemon for one object, for as long as the core's call lasts."""
        from kopf._core.reactor import daemons
        return daemons.serve(self, requests, call)

    def _subhandler_message(self, report: calls.SubhandlerReport, cause: calls.Cause) -> pb.SubhandlerOutcome:
        message = pb.SubhandlerOutcome(id=report.handler.id)
        options = subhandler_options(report.handler)
        if options is not None:
            message.options.CopyFrom(options)
        if report.outcome is not None:
            try:
                message.outcome.CopyFrom(outcome_of_subhandler(report.outcome))
            except (TypeError, ValueError) as e:  # e.g. a result that is not JSON-serializable.
                message.outcome.CopyFrom(_outcome_arbitrary(e))
            exc = report.outcome.exception
            if exc is not None and not isinstance(exc, (model.TemporaryError, model.PermanentError)):
                log_traceback(cause.logger, report.handler, exc)
        return message

    async def _call(self, handler: model.Handler, cause: calls.Cause, retry: int,
                    started: datetime.datetime, call: server.CallInfo) -> pb.Outcome:
        with tracing.handler_span(handler.id, call.metadata, attempt=retry + 1) as span:
            outcome = await self._call_traced(handler, cause, retry, started, call, span)
            if span is not None:
                span.set_attribute('outcome', outcome.WhichOneof('result') or '')
            return outcome

    async def _call_traced(self, handler: model.Handler, cause: calls.Cause, retry: int,
                           started: datetime.datetime, call: server.CallInfo, span: Any) -> pb.Outcome:
        coro = calls.invoke(handler, cause, retry=retry, started=started, settings=self.settings,
                            with_subhandlers=cause.is_change)
        remaining = call.time_remaining()
        timeout = None if remaining is None else max(0.01, remaining - DEADLINE_MARGIN)
        try:
            result = await asyncio.wait_for(coro, timeout=timeout)
        except asyncio.TimeoutError as e:
            message = f"{handler} did not finish within the call's deadline ({timeout:.1f} seconds)."
            tracing.record_exception(span, e)
            cause.logger.error(message)
            return pb.Outcome(arbitrary_error=pb.ArbitraryError(message=message, error_type='TimeoutError'))
        except asyncio.CancelledError:
            raise
        except (model.TemporaryError, model.PermanentError) as e:
            tracing.record_exception(span, e, error=isinstance(e, model.PermanentError))
            return outcome_of_exception(e)
        except BaseException as e:  # never let a handler's error (or exit) crash the service.
            tracing.record_exception(span, e)
            log_traceback(cause.logger, handler, e)
            return _outcome_arbitrary(e)
        try:
            return _outcome_success(result)
        except (TypeError, ValueError) as e:
            message = f"{handler}'s result cannot be stored: {e}"
            cause.logger.error(message)
            return pb.Outcome(arbitrary_error=pb.ArbitraryError(message=message, error_type=type(e).__name__))


def log_traceback(log: Any, handler: model.Handler, exc: BaseException) -> None:
    """
    The traceback of a handler's arbitrary exception. Kopf logs it with the outcome's line; on
    Operon, the core writes that line, and only this process has the traceback, so it goes apart.
    """
    log.error(f"{handler} raised {type(exc).__name__}; the traceback:", exc_info=(type(exc), exc, exc.__traceback__))
