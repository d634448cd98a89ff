"""
The operator's own handlers, run in this process: ``@kopf.on.startup``/``cleanup``/``login``
(until all succeed or fail for good, retrying as Kopf does) and ``@kopf.on.probe`` (behind the
``--liveness`` HTTP endpoint, cached for 10 seconds).
"""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any

from kopf._cogs import settings as settings_
from kopf._core import calls, model, registry as registry_

logger = logging.getLogger(__name__)
PROBE_CACHE = datetime.timedelta(seconds=10)


class ActivityError(Exception):
    """Some activity handlers have failed for good; ``outcomes`` has them all."""

    def __init__(self, msg: str, *, outcomes: Mapping[str, calls.Outcome]) -> None:
        super().__init__(msg)
        self.outcomes = dict(outcomes)


def _log_outcome(log: logging.Logger, handler: model.Handler, outcome: calls.Outcome) -> None:
    exc = outcome.exception
    if exc is None:
        log.info(f"{handler} succeeded.")
    elif not outcome.final:
        if isinstance(exc, model.TemporaryError):
            log.error(f"{handler} failed temporarily: {exc or '(no message)'}")
        else:
            log.exception(f"{handler} failed with an exception. Will retry.", exc_info=exc)
    elif calls.succeeded(handler, outcome):
        log.exception(f"{handler} failed with an exception. Will ignore.", exc_info=exc)
    elif isinstance(exc, model.PermanentError):
        log.error(f"{handler} failed permanently: {exc or '(no message)'}")
    else:
        log.exception(f"{handler} failed with an exception. Will stop.", exc_info=exc)


async def run_activity(*, registry: registry_.OperatorRegistry, settings: settings_.OperatorSettings,
                       activity: model.Activity, memo: Any, indices: Mapping[str, Any] | None = None,
                       lifecycle: model.LifeCycleFn | None = None) -> dict[str, Any]:
    """
    Run the activity's handlers until each has succeeded or failed for good.

    # Errors
    :class:`ActivityError` if any has failed for good (the first failure is its cause).
    """
    log = logging.getLogger(f'kopf.activities.{activity.value}')
    cause = calls.Cause(logger=log, memo=memo, indices=dict(indices or {}), activity=activity, settings=settings)
    handlers = registry.activity_handlers(activity)
    progress = {h.id: calls.Progress() for h in handlers}
    outcomes: dict[str, calls.Outcome] = {}
    choose = lifecycle or model.all_at_once
    while True:
        waiting = [h for h in handlers if not progress[h.id].finished]
        if not waiting:
            break
        awake = [h for h in waiting if progress[h.id].runnable]
        for handler in choose(awake, state=progress) if awake else []:
            outcome = await calls.run_one(handler, cause, progress[handler.id], settings, with_subhandlers=False)
            _log_outcome(log, handler, outcome)
            outcomes[handler.id] = outcome
            state = progress[handler.id]
            if outcome.final:
                state.success = calls.succeeded(handler, outcome)
                state.failure = not state.success
            else:
                state.retries += 1
                state.delayed = calls.utcnow() + datetime.timedelta(seconds=outcome.delay or 0)
        sleepers = [progress[h.id].delayed for h in handlers if progress[h.id].sleeping]
        if sleepers:
            await asyncio.sleep(max(0.0, (min(d for d in sleepers if d) - calls.utcnow()).total_seconds()))
    failures = [o.exception for h in handlers if progress[h.id].failure
                for o in [outcomes[h.id]] if o.exception is not None]
    if failures:
        raise ActivityError("One or more handlers failed.", outcomes=outcomes) from failures[0]
    return {hid: o.result for hid, o in outcomes.items() if o.result is not None}


async def health_reporter(endpoint: str, *, memo: Any, registry: registry_.OperatorRegistry,
                          settings: settings_.OperatorSettings, indices: Mapping[str, Any] | None = None,
                          ready_flag: asyncio.Event | None = None) -> None:
    """An HTTP endpoint answering GET with the probe handlers' results as JSON; runs until cancelled."""
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme != 'http':
        raise Exception(f"Unsupported scheme: {endpoint}")
    host, port, path = url.hostname or '0.0.0.0', url.port or 80, url.path or '/'
    cached: dict[str, Any] = {}
    fresh_until: datetime.datetime | None = None
    lock = asyncio.Lock()

    async def results() -> bytes:
        nonlocal fresh_until
        async with lock:
            if fresh_until is None or calls.utcnow() >= fresh_until:
                cached.clear()
                cached.update(await run_activity(registry=registry, settings=settings, memo=memo,
                                                 indices=indices, activity=model.Activity.PROBE))
                fresh_until = calls.utcnow() + PROBE_CACHE
        return json.dumps(cached, default=str).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = (await reader.readline()).decode('latin-1').split()
            while (await reader.readline()).strip():
                pass
            ok = len(first) >= 2 and first[0] == 'GET' and urllib.parse.urlsplit(first[1]).path == path
            status, payload = ('200 OK', await results()) if ok else ('404 Not Found', b'{}')
            head = (f'HTTP/1.1 {status}\r\nContent-Type: application/json\r\n'
                    f'Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n')
            writer.write(head.encode('latin-1') + payload)
            await writer.drain()
        except Exception as e:
            logger.warning(f"Failed to serve a health probe: {e!r}")
        finally:
            writer.close()

    server = await asyncio.start_server(answer, host, port)
    logger.debug(f"Serving health status at http://{host}:{port}{path}")
    if ready_flag is not None:
        ready_flag.set()
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
