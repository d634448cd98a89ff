"""
``kopf.event``/``info``/``warn``/``exception``: Kubernetes Events about objects.

Inside a handler's call (its task, its sync thread, its sub-handlers) an event goes into the call's
collector and travels back to the core in the response; the core posts it. Outside of any call
(startup handlers, daemon threads, background tasks) while the operator runs, it goes into the
:data:`OUTBOX`, which the core reads through its ``Outbox`` call and posts (kept until a core
connects, at most the last 1,000). With no operator running in this process (a script, a test),
it is posted from a background thread with the ``kubernetes`` client or ``pykube-ng``, whichever
is installed, or else dropped with a warning.
Log lines are never posted as events (``settings.posting.loggers=True`` is refused at start-up).
"""
from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, NamedTuple

from kopf._cogs import settings as settings_

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 1024
_ELLIPSIS = '...'


class K8sEvent(NamedTuple):
    ref: Mapping[str, Any]
    type: str
    reason: str
    message: str


class EventSink:
    """The events of one handler call; after :meth:`close`, late ones are posted directly."""

    def __init__(self) -> None:
        self._events: list[K8sEvent] = []
        self._closed = False
        self._lock = threading.Lock()

    def add(self, event: K8sEvent) -> bool:
        with self._lock:
            if not self._closed:
                self._events.append(event)
            return not self._closed

    def drain(self) -> list[K8sEvent]:
        """The events so far (they are taken out); later ones are still collected."""
        with self._lock:
            events, self._events = self._events, []
            return events

    def close(self) -> list[K8sEvent]:
        with self._lock:
            self._closed = True
            return list(self._events)


class Outbox:
    """
    The events made outside handler calls, for the core (``Outbox`` in the contract). Filled from
    any thread; read by the core's call(s) on the event loop. Active while an operator runs here.
    """

    def __init__(self, limit: int = 1000) -> None:
        self._pending: collections.deque[K8sEvent] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()
        self._readers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.active = False

    def put(self, event: K8sEvent) -> None:
        with self._lock:
            self._pending.append(event)
            readers = list(self._readers)
        for loop, wakeup in readers:
            try:
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:  # the loop is closed
                pass

    async def events(self) -> AsyncIterator[K8sEvent]:
        """ The events as they come (those waiting first), until the reader is cancelled. """
        reader = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._readers.add(reader)
        try:
            while True:
                with self._lock:
                    taken = self._pending.popleft() if self._pending else None
                if taken is not None:
                    yield taken
                    continue
                await reader[1].wait()
                reader[1].clear()
        finally:
            with self._lock:
                self._readers.discard(reader)


OUTBOX = Outbox()

event_sink_var: ContextVar[EventSink] = ContextVar('event_sink_var')
settings_var: ContextVar[settings_.OperatorSettings] = ContextVar('settings_var')
_fallback_settings: settings_.OperatorSettings | None = None


def set_default_settings(settings: settings_.OperatorSettings | None) -> None:
    """The settings for events made outside of any call (e.g. in the operator's own threads)."""
    global _fallback_settings
    _fallback_settings = settings


def current_settings() -> settings_.OperatorSettings:
    found = settings_var.get(None) or _fallback_settings
    return found if found is not None else settings_.OperatorSettings()


def reference_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get('metadata') or {}
    return {'apiVersion': obj.get('apiVersion'), 'kind': obj.get('kind'), 'name': meta.get('name'),
            'uid': meta.get('uid'), 'namespace': meta.get('namespace')}


def _objects(objs: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(objs, Mapping):
        yield objs
    elif isinstance(objs, Iterable) and not isinstance(objs, (str, bytes)):
        for item in objs:
            yield from _objects(item)


def _submit(objs: Any, *, type: str, reason: str, message: str, level: int) -> None:
    settings = current_settings()
    if not settings.posting.enabled or level < settings.posting.level:
        return
    sink = event_sink_var.get(None)
    for obj in _objects(objs):
        event = K8sEvent(ref=reference_of(obj), type=type, reason=reason, message=message)
        if sink is None or not sink.add(event):
            post_directly(event, settings=settings)


def event(objs: Any, *, type: str, reason: str, message: str = '') -> None:
    """An event of any type about one object or several."""
    _submit(objs, type=type, reason=reason, message=message, level=logging.INFO)


def info(objs: Any, *, reason: str, message: str = '') -> None:
    """A ``Normal`` event (posted if ``settings.posting.level`` allows INFO)."""
    _submit(objs, type='Normal', reason=reason, message=message, level=logging.INFO)


def warn(objs: Any, *, reason: str, message: str = '') -> None:
    """A ``Warning`` event."""
    _submit(objs, type='Warning', reason=reason, message=message, level=logging.WARNING)


def exception(objs: Any, *, reason: str = '', message: str = '', exc: BaseException | None = None) -> None:
    """An ``Error`` event about an exception (the one being handled, if not given)."""
    exc = exc if exc is not None else sys.exc_info()[1]
    reason = reason or (type(exc).__name__ if exc is not None else '')
    if exc is not None:
        message = f"{message} {exc}" if message else str(exc)
    _submit(objs, type='Error', reason=reason, message=message, level=logging.ERROR)


def shorten_message(message: str) -> str:
    """Messages over the API's limit lose their middle."""
    if len(message) <= MESSAGE_LIMIT:
        return message
    head = MESSAGE_LIMIT // 2 - len(_ELLIPSIS) // 2
    tail = MESSAGE_LIMIT - head - len(_ELLIPSIS)
    return message[:head] + _ELLIPSIS + message[-tail:]


def build_event_body(event: K8sEvent, *, settings: settings_.OperatorSettings,
                     default_namespace: str = 'default') -> dict[str, Any]:
    """The core/v1 Event to create, with Kopf's naming and reporting fields."""
    namespace = event.ref.get('namespace') or default_namespace
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
    posting = settings.posting
    return {
        'apiVersion': 'v1', 'kind': 'Event',
        'metadata': {'namespace': namespace, 'generateName': posting.event_name_prefix},
        'action': 'Action?', 'type': event.type, 'reason': event.reason,
        'message': shorten_message(event.message),
        'reportingComponent': posting.reporting_component, 'reportingInstance': posting.reporting_instance,
        'source': {'component': posting.reporting_component},
        'involvedObject': {**event.ref, 'namespace': namespace},
        'firstTimestamp': stamp, 'lastTimestamp': stamp, 'eventTime': stamp,
    }


def post_directly(event: K8sEvent, *, settings: settings_.OperatorSettings) -> None:
    """
    Through the core while an operator runs here (:data:`OUTBOX`), else in a daemon thread;
    events about events are never posted.
    """
    if (event.ref.get('apiVersion'), event.ref.get('kind')) == ('v1', 'Event'):
        return
    if OUTBOX.active:
        OUTBOX.put(event)
        return
    body = build_event_body(event, settings=settings)
    threading.Thread(target=_post_body, args=(body,), daemon=True, name='kopf-event-poster').start()


def _post_body(body: dict[str, Any]) -> None:
    summary = f"type={body['type']!r}, reason={body['reason']!r}, message={body['message']!r}"
    try:
        if _post_with_kubernetes(body) or _post_with_pykube(body):
            return
    except Exception as e:
        logger.warning(f"Failed to post an event. Ignoring and continuing. {e}. Event: {summary}.")
        return
    logger.warning(f"Cannot post an event outside of a handler: neither `kubernetes` nor `pykube-ng` "
                   f"is installed. Event: {summary}.")


def _post_with_kubernetes(body: dict[str, Any]) -> bool:
    try:
        import kubernetes.client
    except ImportError:
        return False
    kubernetes.client.CoreV1Api().create_namespaced_event(body['metadata']['namespace'], body)
    return True


def _post_with_pykube(body: dict[str, Any]) -> bool:
    try:
        import pykube
    except ImportError:
        return False
    api = pykube.HTTPClient(pykube.KubeConfig.from_env())
    try:
        pykube.Event(api, body).create()
    finally:
        api.session.close()
    return True
