"""
Kopf's indices (``@kopf.index``): kept in this process, fed by the core's calls.

The core tells each index function about every watch event of its resource, in watch order, and
after every complete listing of a watch scope, which objects of that scope exist
(:mod:`kopf._core.reactor.handling` unpacks those calls). Each object's contribution to an index
is kept apart from the others', so that its next event replaces it, and its deletion, a mismatch
of the function's filters or its absence from a listing removes it.

What a result or an error of an index function does to the object's contribution (Kopf 1.45.2):

=================================================  ===============================================
the index function                                  the object's values in the index
=================================================  ===============================================
returns a mapping (any ``Mapping``)                 its items: each value under its key
returns anything else but ``None``                  that value under the key ``None``
returns ``None``                                    kept as they were
raises, with ``errors=IGNORED`` (the default)       kept as they were; the traceback is logged
raises ``TemporaryError``, or raises with           removed; the function is called again on a
``errors=TEMPORARY``                                later event after the delay (``backoff=``),
                                                    within ``retries=`` and ``timeout=``
raises ``PermanentError``, or raises with           removed; the function is not called for the
``errors=PERMANENT``                                object again until the object is deleted
does not match its filters                          removed (the function is not called)
=================================================  ===============================================

Handlers get the indices as kwargs from :class:`OperatorIndices`: a live read-only view, in
which every index is one and the same :class:`Index` for the operator's lifetime.

# Caveats
- An index is only as complete as the calls this process gets: several replicas of one handler
  service behind one address would each hold a part of it.
- Objects are told apart by resource, namespace and name (as the listings name them), not by uid.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Collection, Iterator, Mapping
from typing import Any, TypeVar

from kopf._cogs import settings as settings_
from kopf._core import calls, model
from kopf._core.registry import OperatorRegistry

_K = TypeVar('_K')
_V = TypeVar('_V')

# An object as the indices know it: (resource, namespace, name). Never shown to the handlers.
ObjectKey = tuple[str, str | None, str]


class Store(model.Store[_V]):
    """
    The values under one key of an index: one per object that has put a value there, in the
    order in which the objects first did so (a changed value keeps its object's place).
    """

    def __init__(self) -> None:
        super().__init__()
        self._by_object: dict[ObjectKey, _V] = {}

    def __repr__(self) -> str:
        return repr(list(self._by_object.values()))

    def __len__(self) -> int:
        return len(self._by_object)

    def __iter__(self) -> Iterator[_V]:
        return iter(self._by_object.values())

    def __contains__(self, value: object) -> bool:
        return any(held == value for held in self._by_object.values())


class Index(model.Index[_K, _V]):
    """
    One index function's index: its keys (in the order of their first appearance) and their
    stores. A store that loses its last value leaves the index with its key.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stores: dict[_K, Store[_V]] = {}
        self._placed: dict[ObjectKey, set[_K]] = {}  # under which keys each object has values

    def __repr__(self) -> str:
        return repr(self._stores)

    def __len__(self) -> int:
        return len(self._stores)

    def __iter__(self) -> Iterator[_K]:
        return iter(self._stores)

    def __getitem__(self, key: _K) -> Store[_V]:
        return self._stores[key]

    def __contains__(self, key: object) -> bool:
        return key in self._stores

    def _objects(self) -> list[ObjectKey]:
        return list(self._placed)

    def _put(self, obj: ObjectKey, values: Mapping[_K, _V]) -> None:
        """ The object's values are these now, and no others. """
        keys = set(values)  # unhashable keys fail here, before anything has changed
        self._withdraw(obj, keep=keys)
        for key, value in values.items():
            if key not in self._stores:
                self._stores[key] = Store()
            self._stores[key]._by_object[obj] = value
        if keys:
            self._placed[obj] = keys

    def _withdraw(self, obj: ObjectKey, keep: Collection[_K] = ()) -> None:
        """ Remove the object's values (but those under the keys to keep). """
        for key in self._placed.pop(obj, set()):
            if key in keep:
                continue
            store = self._stores[key]
            store._by_object.pop(obj, None)
            if not store._by_object:
                del self._stores[key]


class OperatorIndices(Mapping[str, Index[Any, Any]]):
    """
    The operator's indices by the ids of its index functions, as every handler, filter callback,
    daemon, timer and activity gets them: read-only and live (a later ``@kopf.index`` shows up).
    """

    def __init__(self, indexers: OperatorIndexers, registry: OperatorRegistry) -> None:
        super().__init__()
        self._indexers = indexers
        self._registry = registry

    def _ids(self) -> list[str]:
        return list(dict.fromkeys(handler.id for handler in self._registry.of_kinds('index')))

    def __len__(self) -> int:
        return len(self._ids())

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids())

    def __contains__(self, handler_id: object) -> bool:
        return handler_id in self._ids()

    def __getitem__(self, handler_id: str) -> Index[Any, Any]:
        if handler_id not in self._ids():
            raise KeyError(handler_id)
        return self._indexers.index(handler_id)


@dataclasses.dataclass
class _Verdict:
    """ One run of an index function, judged: its result, or the error that counts. """
    result: Any = None
    error: BaseException | None = None  # None for a success and for an ignored error
    final: bool = True
    delay: float | None = None


class OperatorIndexers:
    """
    The writing side of the indices: every index by its function's id, and the failures of the
    index functions per object (for their retries and exclusions; successes are not kept).
    """

    def __init__(self) -> None:
        super().__init__()
        self._indices: dict[str, Index[Any, Any]] = {}
        self._failures: dict[tuple[str, ObjectKey], calls.Progress] = {}

    def index(self, handler_id: str) -> Index[Any, Any]:
        found = self._indices.get(handler_id)
        if found is None:
            found = self._indices[handler_id] = Index()
        return found

    def view(self, registry: OperatorRegistry) -> OperatorIndices:
        return OperatorIndices(self, registry)

    def forget(self, handler_id: str, obj: ObjectKey) -> None:
        """ The object is gone: its values and its failures are forgotten. """
        self.index(handler_id)._withdraw(obj)
        self._failures.pop((handler_id, obj), None)

    def relist(self, handler_id: str, resource: str, namespace: str | None,
               existing: Collection[tuple[str | None, str]]) -> None:
        """
        A complete listing of the resource in a namespace (``None``: in all namespaces, or a
        cluster-scoped resource): the objects there that are not in it are gone.
        """
        def gone(obj: ObjectKey) -> bool:
            res, ns, name = obj
            return res == resource and (namespace is None or ns == namespace) and (ns, name) not in existing

        known = self.index(handler_id)._objects() + [obj for hid, obj in self._failures if hid == handler_id]
        for obj in known:
            if gone(obj):
                self.forget(handler_id, obj)

    async def index_object(self, handler: model.Handler, cause: calls.Cause, obj: ObjectKey, *,
                           settings: settings_.OperatorSettings, timeout: float | None = None) -> BaseException | None:
        """
        Index the object as it is now (its ``cause``); return the error to report, if any.

        # Errors
        Errors of the handler's own filters (e.g. of its ``when=`` callback) propagate, and
        the index is left as it was.
        """
        index = self.index(handler.id)
        if not calls.matches(handler, cause):
            index._withdraw(obj)
            return None
        previous = self._failures.get((handler.id, obj))
        if previous is not None and not previous.runnable:
            index._withdraw(obj)  # failed for good, or waiting for its retry: nothing to show
            return None
        progress = previous if previous is not None else calls.Progress()
        verdict = await _run(handler, cause, progress, settings, timeout)
        if verdict.error is not None:
            index._withdraw(obj)
            progress.retries += 1
            progress.message = str(verdict.error)
            progress.failure = verdict.final
            progress.delayed = None if verdict.delay is None else (
                calls.utcnow() + datetime.timedelta(seconds=verdict.delay))
            self._failures[handler.id, obj] = progress
            return verdict.error
        self._failures.pop((handler.id, obj), None)
        if verdict.result is None:
            return None
        values = verdict.result if isinstance(verdict.result, Mapping) else {None: verdict.result}
        try:
            index._put(obj, values)
        except TypeError as e:  # e.g. a key that is not hashable
            cause.logger.error(f"{handler}'s result cannot be indexed: {e!r}")
            index._withdraw(obj)
            return e
        return None


def _text(exc: BaseException) -> str:
    return str(exc) or repr(exc)


def _look_ahead(handler: model.Handler, progress: calls.Progress, runtime: datetime.timedelta,
                delay: float) -> str | None:
    """ Which limit one more attempt after ``delay`` would reach (Kopf's look-ahead), if any. """
    if handler.timeout is not None and runtime.total_seconds() + delay >= handler.timeout:
        return 'timeout'
    if handler.retries is not None and progress.retries + 1 >= handler.retries:
        return 'retries'
    return None


async def _call(handler: model.Handler, cause: calls.Cause, progress: calls.Progress,
                settings: settings_.OperatorSettings, timeout: float | None) -> Any:
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await calls.invoke(handler, cause, retry=progress.retries, started=progress.started,
                                      settings=settings, with_subhandlers=False)
    except TimeoutError as e:
        if not deadline.expired():
            raise
        raise TimeoutError(f"The call's deadline has passed after {timeout:.1f} seconds.") from e


async def _run(handler: model.Handler, cause: calls.Cause, progress: calls.Progress,
               settings: settings_.OperatorSettings, timeout: float | None) -> _Verdict:
    """ Run the index function once, and judge and log the outcome in Kopf's words. """
    log = cause.logger
    mode = handler.errors if handler.errors is not None else model.ErrorsMode.IGNORED
    backoff = handler.backoff if handler.backoff is not None else settings.execution.default_backoff
    runtime = calls.utcnow() - progress.started
    log.debug(f"{handler} is invoked.")
    try:
        if handler.timeout is not None and runtime.total_seconds() >= handler.timeout:
            raise model.HandlerTimeoutError(f"{handler} has timed out after {runtime}.")
        if handler.retries is not None and progress.retries >= handler.retries:
            raise model.HandlerRetriesError(f"{handler} has exceeded {progress.retries} retries.")
        result = await _call(handler, cause, progress, settings, timeout)
    except asyncio.CancelledError:
        log.warning(f"{handler} is cancelled. Will escalate.")
        raise
    except (model.HandlerTimeoutError, model.HandlerRetriesError) as e:
        log.error(_text(e))
        return _Verdict(error=e)
    except model.TemporaryError as e:
        limit = _look_ahead(handler, progress, runtime, e.delay or 0)
        if limit == 'timeout':
            why = f"{handler} failed temporarily but will time out after {handler.timeout} seconds: {_text(e)}"
            log.error(why)
            return _Verdict(error=model.HandlerTimeoutError(why))
        if limit == 'retries':
            why = f"{handler} failed temporarily but will exceed {handler.retries} retries: {_text(e)}"
            log.error(why)
            return _Verdict(error=model.HandlerRetriesError(why))
        log.error(f"{handler} failed temporarily: {_text(e)}")
        return _Verdict(error=e, final=False, delay=e.delay)
    except model.PermanentError as e:
        log.error(f"{handler} failed permanently: {_text(e)}")
        return _Verdict(error=e)
    except Exception as e:
        prefix = f"{handler} failed with an exception and will"
        if mode is model.ErrorsMode.IGNORED:
            log.error(f"{prefix} ignore it: {_text(e)}", exc_info=e)
            return _Verdict()
        if mode is model.ErrorsMode.PERMANENT:
            log.error(f"{prefix} stop now: {_text(e)}", exc_info=e)
            return _Verdict(error=e)
        limit = _look_ahead(handler, progress, runtime, backoff)
        if limit == 'timeout':
            why = (f"{prefix} stop now (it would time out in {handler.timeout} seconds "
                   f"on the next attempt): {_text(e)}")
            log.error(why, exc_info=e)
            return _Verdict(error=model.HandlerTimeoutError(why))
        if limit == 'retries':
            why = (f"{prefix} stop now (it would exceed {handler.retries} retries "
                   f"on the next attempt): {_text(e)}")
            log.error(why, exc_info=e)
            return _Verdict(error=model.HandlerRetriesError(why))
        log.error(f"{prefix} try again in {backoff} seconds: {_text(e)}", exc_info=e)
        return _Verdict(error=e, final=False, delay=backoff)
    log.info(f"{handler} succeeded.")
    return _Verdict(result=result)


__all__ = ['Index', 'ObjectKey', 'OperatorIndexers', 'OperatorIndices', 'Store']
