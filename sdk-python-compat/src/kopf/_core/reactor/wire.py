"""
A call's answer as operon.v1 messages: what a handler's run (an ``Invoke``, a ``Daemon`` run, an
index or admission call) comes to --- its outcome, its Kubernetes events, its patch --- and the
wire's JSON and timestamps; and the call of the core that the code runs within (:data:`call_var`).

The handler service (:mod:`kopf._core.reactor.handling`) and the daemons
(:mod:`kopf._core.reactor.daemons`) both answer with these.
"""
import datetime
import json
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from google.protobuf import timestamp_pb2

from kopf._core import calls, model, posting
from kopf._core.reactor import manifests
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._transport import server

# The current call of the core (its metadata, e.g. the W3C `traceparent`, and its deadline),
# for whatever runs within it: the handler, its sub-handlers, their helpers.
call_var: ContextVar[server.CallInfo] = ContextVar('call_var')


def timestamp(ts: timestamp_pb2.Timestamp) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=datetime.timezone.utc)


def dumps(value: Any) -> bytes:
    """ A value as the wire's JSON (compact; no NaN or infinities: the core's JSON has none). """
    return json.dumps(value, separators=(',', ':'), allow_nan=False).encode('utf-8')


def loads(data: bytes) -> Any:
    """ The wire's JSON; empty bytes are ``None``. """
    return json.loads(data) if data else None


def patch_json(cause: calls.Cause) -> bytes:
    """
    The handler's ``patch`` as a JSON merge patch (empty when there is none).

    # Errors
    Whatever the patch cannot be turned into a merge patch for (or as JSON) with.
    """
    merge_patch = cause.patch.as_merge_patch(cause.body) if cause.patch else {}
    return dumps(merge_patch) if merge_patch else b''


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


def arbitrary_outcome(exc: BaseException) -> pb.Outcome:
    """ Any other error: its message and its class's name. """
    return pb.Outcome(arbitrary_error=pb.ArbitraryError(message=str(exc), error_type=type(exc).__name__))


def success_outcome(result: Any) -> pb.Outcome:
    """
    A success with the handler's result (as JSON; none for ``None``).

    # Errors
    :class:`TypeError` or :class:`ValueError` for a result that is not JSON-serializable.
    """
    return pb.Outcome(success=pb.Success(result_json=b'' if result is None else dumps(result)))


def outcome_of_exception(exc: BaseException) -> pb.Outcome:
    """ A handler's exception as a raw outcome; the core judges it with the handler's options. """
    if isinstance(exc, model.HandlerChildrenRetry):
        return _outcome_pending(exc.delay)
    if isinstance(exc, model.TemporaryError):
        return _outcome_temporary(str(exc), exc.delay)
    if isinstance(exc, model.PermanentError):
        return pb.Outcome(permanent_error=pb.PermanentError(message=str(exc)))
    return arbitrary_outcome(exc)


def outcome_of_subhandler(outcome: calls.Outcome) -> pb.Outcome:
    """
    A sub-handler's raw outcome: its result or its exception as it was raised (or, when its
    retries or time were used up before the call, the permanent error that Kopf raises then).
    The core judges it with the sub-handler's own options, sent along
    (:func:`kopf._core.reactor.handling.subhandler_options`).
    """
    if outcome.exception is None:
        return success_outcome(outcome.result)
    return outcome_of_exception(outcome.exception)


def _same_object(ref: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    meta = body.get('metadata', {})
    if ref.get('uid') or meta.get('uid'):
        return bool(ref.get('uid') == meta.get('uid'))
    return bool(ref.get('name') == meta.get('name') and ref.get('namespace') == meta.get('namespace')
                and ref.get('kind') == body.get('kind'))


def event_messages(events: Sequence[posting.K8sEvent], body: Mapping[str, Any]) -> list[pb.Event]:
    """
    The events a call collected, for the core to post: about the call's object (``body``) unless
    they name another one; events about Events are dropped (as Kopf does).
    """
    return [
        pb.Event(
            type=event.type,
            reason=event.reason,
            message=posting.shorten_message(event.message),
            involved_object_json=b'' if _same_object(event.ref, body) else dumps(dict(event.ref)),
        )
        for event in events
        if not (event.ref.get('apiVersion') == 'v1' and event.ref.get('kind') == 'Event')
    ]
