"""
Calling handlers as Kopf calls them, and running sub-handlers within their parent's call.

A :class:`Cause` is everything one call knows (the object, the reason, the diff, the patch…);
:func:`kwargs_of` turns it into the handler's keyword arguments. :func:`run_one` runs one
handler once and judges the result with the handler's options the way Kopf does --- that
judgement decides whether the parent's sub-handlers are all finished; the core judges the raw
outcomes itself for what it stores and logs.
"""
from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from kopf._cogs import refs, settings as settings_, views
from kopf._core import model, registry as registry_

_MISSING = object()


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass
class Cause:
    """What one call of a handler is about."""
    logger: Any
    memo: Any
    indices: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    body: views.Body | None = None
    patch: views.Patch | None = None
    resource: refs.Resource | None = None
    reason: model.Reason | None = None        # change handlers
    initial: bool = False
    diff: views.Diff | None = None
    old: Any = None
    new: Any = None
    event_type: str | None = None             # event handlers
    activity: model.Activity | None = None    # activity handlers
    settings: settings_.OperatorSettings | None = None
    stopped: model.DaemonStopped | None = None  # timers & daemons
    indexing: bool = False                      # index functions (no type/event, unlike event handlers)
    admission: Mapping[str, Any] | None = None  # validate/mutate: the webhook kwargs (dryrun, warnings…)

    @property
    def is_change(self) -> bool:
        return self.reason is not None


def kwargs_of(cause: Cause) -> dict[str, Any]:
    """The keyword arguments Kopf passes for this cause (without retry/started/runtime/param)."""
    kwargs: dict[str, Any] = {'logger': cause.logger, 'memo': cause.memo}
    if cause.activity is not None:
        kwargs.update(activity=cause.activity, settings=cause.settings)
    if cause.body is not None:
        meta = cause.body.meta
        kwargs.update(resource=cause.resource, patch=cause.patch, body=cause.body,
                      spec=cause.body.spec, meta=meta, status=cause.body.status,
                      uid=meta.uid, name=meta.name, namespace=meta.namespace,
                      labels=meta.labels, annotations=meta.annotations)
    if cause.reason is not None:
        kwargs.update(reason=cause.reason, diff=cause.diff, old=cause.old, new=cause.new)
    if cause.stopped is not None:
        kwargs.update(stopped=cause.stopped)
    elif cause.admission is not None:
        kwargs.update(cause.admission)
    elif cause.indexing:
        pass
    elif cause.event_type is not None or (cause.body is not None and cause.reason is None and cause.activity is None):
        kwargs.update(type=cause.event_type, event={'type': cause.event_type, 'object': cause.body})
    kwargs.update(cause.indices)  # the indices' names win over Kopf's own kwargs, as in Kopf
    return kwargs


# -- filters --------------------------------------------------------------------------------------

def _meta_ok(pattern: Mapping[str, Any] | None, actual: Mapping[str, Any], kwargs: dict[str, Any]) -> bool:
    for key, expected in (pattern or {}).items():
        present = key in actual
        if expected is model.ABSENT:
            ok = not present
        elif expected is model.PRESENT or expected is None:
            ok = present
        elif callable(expected):
            ok = bool(expected(actual.get(key), **kwargs))
        else:
            ok = present and actual[key] == expected
        if not ok:
            return False
    return True


def _value_ok(expected: Any, value: Any, kwargs: dict[str, Any]) -> bool:
    if expected is None:
        return True
    if expected is model.PRESENT:
        return value is not _MISSING
    if expected is model.ABSENT:
        return value is _MISSING
    if callable(expected):
        return bool(expected(None if value is _MISSING else value, **kwargs))
    return bool(expected == value)


def matches(handler: model.Handler, cause: Cause) -> bool:
    """Kopf's filters of a handler (labels, annotations, field & its values, ``when=``), in Kopf's order."""
    kwargs = kwargs_of(cause)
    body: Mapping[str, Any] = cause.body if cause.body is not None else {}
    meta = body.get('metadata') or {}
    if not _meta_ok(handler.labels, meta.get('labels') or {}, kwargs):
        return False
    if not _meta_ok(handler.annotations, meta.get('annotations') or {}, kwargs):
        return False
    if handler.field:
        if cause.is_change:
            candidates = [views.dig(cause.new, handler.field, _MISSING), views.dig(cause.old, handler.field, _MISSING)]
        else:
            candidates = [views.dig(body, handler.field, _MISSING)]
        if handler.value is None:
            if all(c is _MISSING for c in candidates):
                return False
        elif not any(_value_ok(handler.value, c, kwargs) for c in candidates):
            return False
        if handler.is_changing and cause.is_change:
            old, new = candidates[1], candidates[0]
            if handler.field_needs_change and old == new:
                return False
            if not (_value_ok(handler.old, old, kwargs) and _value_ok(handler.new, new, kwargs)):
                return False
    return handler.when is None or bool(handler.when(**kwargs))


# -- invocation -----------------------------------------------------------------------------------

def is_coroutine_fn(fn: Any) -> bool:
    while True:
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, '__wrapped__'):
            fn = fn.__wrapped__
        else:
            return inspect.iscoroutinefunction(fn)


async def call_fn(fn: Callable[..., Any], kwargs: Mapping[str, Any],
                  settings: settings_.OperatorSettings | None = None,
                  on_cancel: Callable[[], None] | None = None) -> Any:
    """
    Await an async function; run a sync one in the executor, in a copy of this context.

    When the call is cancelled, ``on_cancel`` runs first (e.g. it sets a timer's ``stopped``
    flag): an async function is then cancelled; a sync one's thread cannot be, so it is awaited.
    """
    if is_coroutine_fn(fn):
        try:
            return await fn(**kwargs)
        except asyncio.CancelledError:
            if on_cancel is not None:
                on_cancel()
            raise
    context = contextvars.copy_context()
    executor = settings.execution.executor if settings is not None else None
    future = asyncio.get_running_loop().run_in_executor(executor, lambda: context.run(fn, **kwargs))
    cancelled: asyncio.CancelledError | None = None
    while not future.done():  # a thread cannot be cancelled: let it finish, then re-raise.
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as e:
            if cancelled is None and on_cancel is not None:
                on_cancel()
            cancelled = e
    if cancelled is not None:
        raise cancelled
    return future.result()


# -- progress and outcomes ------------------------------------------------------------------------

@dataclasses.dataclass
class Progress:
    """What is known of one (sub-)handler from its record on the object."""
    started: datetime.datetime = dataclasses.field(default_factory=utcnow)
    delayed: datetime.datetime | None = None
    retries: int = 0
    success: bool = False
    failure: bool = False
    message: str | None = None

    @property
    def finished(self) -> bool:
        return self.success or self.failure

    @property
    def sleeping(self) -> bool:
        return not self.finished and self.delayed is not None and self.delayed > utcnow()

    @property
    def runnable(self) -> bool:
        return not self.finished and not self.sleeping


@dataclasses.dataclass
class Outcome:
    """One run of one handler: the raw result or error, and Kopf's verdict on it."""
    final: bool
    result: Any = None
    exception: BaseException | None = None  # as raised (the core judges it again, with the options)
    delay: float | None = None
    failed: bool = False                    # final and not a success, in Kopf's terms


current_handler_var: ContextVar[model.Handler] = ContextVar('current_handler_var')
current_cause_var: ContextVar[Cause] = ContextVar('current_cause_var')
settings_var: ContextVar[settings_.OperatorSettings] = ContextVar('kopf_settings_var')
lifecycle_var: ContextVar[model.LifeCycleFn | None] = ContextVar('lifecycle_var', default=None)


async def run_one(handler: model.Handler, cause: Cause, progress: Progress,
                  settings: settings_.OperatorSettings, *, with_subhandlers: bool) -> Outcome:
    """Run a sub-handler once (unless its retries or time are used up) and judge it as Kopf does."""
    runtime = utcnow() - progress.started
    if handler.timeout is not None and runtime.total_seconds() > handler.timeout:
        return Outcome(final=True, failed=True,
                       exception=model.HandlerTimeoutError(f"{handler} has timed out after {runtime}."))
    if handler.retries is not None and progress.retries >= handler.retries:
        return Outcome(final=True, failed=True, exception=model.HandlerRetriesError(
            f"{handler} has exceeded {progress.retries} retries."))
    try:
        result = await invoke(handler, cause, retry=progress.retries, started=progress.started,
                              settings=settings, with_subhandlers=with_subhandlers)
    except model.HandlerChildrenRetry as e:
        return Outcome(final=False, exception=e, delay=e.delay)
    except model.PermanentError as e:
        return Outcome(final=True, failed=True, exception=e)
    except model.TemporaryError as e:
        return _retry_or_give_up(handler, progress, e, e.delay)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        mode = handler.errors or model.ErrorsMode.TEMPORARY
        if mode is model.ErrorsMode.IGNORED:
            return Outcome(final=True, exception=e)
        if mode is model.ErrorsMode.PERMANENT:
            return Outcome(final=True, failed=True, exception=e)
        backoff = handler.backoff if handler.backoff is not None else settings.execution.default_backoff
        return _retry_or_give_up(handler, progress, e, backoff)
    return Outcome(final=True, result=result)


def _retry_or_give_up(handler: model.Handler, progress: Progress, exc: Exception, delay: float | None) -> Outcome:
    if handler.retries is not None and progress.retries + 1 >= handler.retries:
        # Kopf gives up here (HandlerRetriesError); the raw error is reported, the verdict is kept.
        return Outcome(final=True, failed=True, exception=exc)
    return Outcome(final=False, exception=exc, delay=delay)


def succeeded(handler: model.Handler, outcome: Outcome) -> bool:
    """Whether a final outcome counts as a success (an ignored error does)."""
    return outcome.final and not outcome.failed


async def invoke(handler: model.Handler, cause: Cause, *, retry: int, started: datetime.datetime,
                 settings: settings_.OperatorSettings, with_subhandlers: bool) -> Any:
    """Call the handler with Kopf's kwargs; for change handlers, with their sub-handlers after it."""
    kwargs = kwargs_of(cause)
    kwargs.update(retry=retry, started=started, runtime=utcnow() - started, param=handler.param)
    tokens: list[tuple[ContextVar[Any], contextvars.Token[Any]]] = [
        (current_handler_var, current_handler_var.set(handler)),
        (current_cause_var, current_cause_var.set(cause)),
        (settings_var, settings_var.set(settings))]
    scope = SubhandlerScope(parent=handler) if with_subhandlers else None
    if scope is not None:
        tokens.append((scope_var, scope_var.set(scope)))
    try:
        stopped = cause.stopped
        on_cancel = None if stopped is None else lambda: stopped.set(model.DaemonStoppingReason.DAEMON_CANCELLED)
        result = await call_fn(handler.fn, kwargs, settings, on_cancel=on_cancel)
        if scope is not None and not scope.executed:
            await execute()
        return result
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def log_traceback(log: Any, handler: model.Handler, exc: BaseException) -> None:
    """
    The traceback of a handler's arbitrary exception. Kopf logs it with the outcome's line; on
    Operon, the core writes that line, and only this process has the traceback, so it goes apart.
    """
    log.error(f"{handler} raised {type(exc).__name__}; the traceback:", exc_info=(type(exc), exc, exc.__traceback__))


# -- sub-handlers ---------------------------------------------------------------------------------

@dataclasses.dataclass
class SubhandlerReport:
    """One sub-handler's part of the parent's answer: run (with an outcome) or only selected."""
    handler: model.Handler
    outcome: Outcome | None


@dataclasses.dataclass
class CallRecords:
    """The sub-handlers' records that came with the call, and the reports that go back."""
    progress: Mapping[str, Progress] = dataclasses.field(default_factory=dict)
    reports: list[SubhandlerReport] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SubhandlerScope:
    """The sub-handlers that one (sub-)handler's call registers with ``@kopf.subhandler``."""
    parent: model.Handler
    registry: registry_.OperatorRegistry = dataclasses.field(default_factory=registry_.OperatorRegistry)
    executed: bool = False


scope_var: ContextVar[SubhandlerScope] = ContextVar('scope_var')
records_var: ContextVar[CallRecords] = ContextVar('records_var')


def sub_handler(fn: Callable[..., Any], *, id: str | None = None, **options: Any) -> model.Handler:
    """A sub-handler of the current handler, with a full id (``parent/sub[/field]``)."""
    scope = scope_var.get()  # LookupError outside of a handler, as in Kopf
    field = views.split_field(options.pop('field', None))
    handler_id = registry_.generate_id(fn, id, prefix=scope.parent.id, suffix='.'.join(field or ()))
    handler = model.Handler(fn=fn, id=handler_id, kind='sub', field=field, **options)
    scope.registry.append(handler)
    return handler


async def execute(*, fns: Any = None, handlers: Iterable[model.Handler] | None = None,
                  registry: registry_.OperatorRegistry | None = None,
                  lifecycle: model.LifeCycleFn | None = None, cause: Cause | None = None) -> None:
    """
    ``kopf.execute()``: run the sub-handlers (the ones given, or else those registered in the
    current handler) by the lifecycle; raise :class:`HandlerChildrenRetry` while some remain.
    """
    if sum(x is not None for x in (fns, handlers, registry)) > 1:
        raise TypeError("Only one of the fns, handlers, registry can be passed. Got more.")
    parent = current_handler_var.get(None)
    prefix = parent.id if parent is not None else None
    chosen: list[model.Handler]
    if isinstance(fns, Mapping):
        chosen = [model.Handler(fn=fn, id=registry_.generate_id(fn, key, prefix=prefix), kind='sub')
                  for key, fn in fns.items()]
    elif fns is not None and isinstance(fns, Iterable):
        chosen = [model.Handler(fn=fn, id=registry_.generate_id(fn, None, prefix=prefix), kind='sub')
                  for fn in fns]
    elif fns is not None:
        raise ValueError(f"fns must be a mapping or an iterable, got {fns.__class__}.")
    elif handlers is not None:
        chosen = list(handlers)
    elif registry is not None:
        chosen = list(registry)
    else:
        scope = scope_var.get()
        if scope.executed:
            return
        scope.executed = True
        chosen = list(scope.registry)

    cause = cause if cause is not None else current_cause_var.get()
    if not cause.is_change:
        raise RuntimeError("Sub-handlers of event-handlers are not supported and have "
                           "no practical use (there are no retries or state tracking).")
    settings = settings_var.get(None) or settings_.OperatorSettings()
    lifecycle = lifecycle or lifecycle_var.get() or model.get_default_lifecycle()
    calls = records_var.get(None) or CallRecords()

    selected = [h for h in chosen if matches(h, cause)]
    progress = {h.id: calls.progress.get(h.id) or Progress() for h in selected}
    pending = [h for h in selected if not progress[h.id].finished]
    runnable = [h for h in pending if progress[h.id].runnable]
    plan = list(lifecycle(runnable, state=progress, **kwargs_of(cause))) if runnable else []

    for handler in plan:
        outcome = await run_one(handler, cause, progress[handler.id], settings, with_subhandlers=True)
        calls.reports.append(SubhandlerReport(handler, outcome))
        state = progress[handler.id]
        if outcome.final:
            state.success, state.failure = succeeded(handler, outcome), not succeeded(handler, outcome)
        else:
            state.retries += 1
            state.delayed = utcnow() + datetime.timedelta(seconds=outcome.delay or 0)
    ran = {h.id for h in plan}
    calls.reports.extend(SubhandlerReport(h, None) for h in pending if h.id not in ran)

    unfinished = [progress[h.id] for h in pending if not progress[h.id].finished]
    if unfinished:
        now = utcnow()
        waits = [max(0.0, (p.delayed - now).total_seconds()) if p.delayed else 0.0 for p in unfinished]
        raise model.HandlerChildrenRetry(delay=min(waits))
