"""
What the decorators produce and what handlers raise: reasons, error modes, exceptions, filter
markers, the handler record, lifecycles, and the small public types of daemons, indices and
admission (which Operon accepts, but does not serve yet).
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import random
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypedDict, TypeVar

from kopf._cogs import refs, views


class Reason(str, enum.Enum):
    """Why a change handler is called."""
    CREATE = 'create'
    UPDATE = 'update'
    DELETE = 'delete'
    RESUME = 'resume'
    NOOP = 'noop'
    FREE = 'free'
    GONE = 'gone'

    def __str__(self) -> str:
        return self.value


class Activity(str, enum.Enum):
    """The operator-level handler kinds."""
    STARTUP = 'startup'
    CLEANUP = 'cleanup'
    AUTHENTICATION = 'authentication'
    PROBE = 'probe'


class ErrorsMode(enum.Enum):
    """What an arbitrary exception of a handler means: retry, give up, or pretend success."""
    IGNORED = enum.auto()
    TEMPORARY = enum.auto()
    PERMANENT = enum.auto()


class PermanentError(Exception):
    """The handler failed for good: it is not retried."""


class TemporaryError(Exception):
    """The handler failed for now: it is retried after ``delay`` seconds."""

    def __init__(self, __msg: str | None = None, delay: float | None = 60) -> None:
        super().__init__(__msg)
        self.delay = delay


class HandlerTimeoutError(PermanentError):
    """The handler has run out of its ``timeout`` (counted from its first attempt)."""


class HandlerRetriesError(PermanentError):
    """The handler has run out of its ``retries``."""


class HandlerChildrenRetry(TemporaryError):
    """Internal: some sub-handlers are not finished; the parent is called again after ``delay``."""


class AdmissionError(PermanentError):
    """Rejects an admission request, with an HTTP ``code``."""

    def __init__(self, message: str | None = '', code: int | None = 500) -> None:
        super().__init__(message)
        self.code = code


HandlerRetryError = TemporaryError
HandlerFatalError = PermanentError


# -- filter markers & combinators -----------------------------------------------------------------

class MetaFilterToken(enum.Enum):
    """``kopf.PRESENT`` / ``kopf.ABSENT`` for label, annotation and field filters."""
    PRESENT = enum.auto()
    ABSENT = enum.auto()

    def __repr__(self) -> str:
        return f'kopf.{self.name}'


PRESENT = MetaFilterToken.PRESENT
ABSENT = MetaFilterToken.ABSENT

Predicate: TypeAlias = Callable[..., bool]


def not_(fn: Predicate) -> Predicate:
    """A ``when=`` callback that is true when ``fn`` is false."""
    return lambda **kwargs: not fn(**kwargs)


def all_(fns: Collection[Predicate]) -> Predicate:
    """A ``when=`` callback that is true when every one of ``fns`` is."""
    return lambda **kwargs: all(fn(**kwargs) for fn in fns)


def any_(fns: Collection[Predicate]) -> Predicate:
    """A ``when=`` callback that is true when at least one of ``fns`` is."""
    return lambda **kwargs: any(fn(**kwargs) for fn in fns)


def none_(fns: Collection[Predicate]) -> Predicate:
    """A ``when=`` callback that is true when none of ``fns`` is."""
    return lambda **kwargs: not any(fn(**kwargs) for fn in fns)


# -- handlers -------------------------------------------------------------------------------------

# What a handler is for: the change kinds (create…field), the raw kinds (event, timer, daemon,
# index, validate, mutate), a sub-handler ('sub'), and the operator's activities.
Kind = Literal['create', 'update', 'delete', 'resume', 'field', 'event', 'timer', 'daemon', 'index',
               'validate', 'mutate', 'sub', 'startup', 'cleanup', 'login', 'probe']

CHANGE_KINDS: Mapping[str, Reason | None] = {
    'create': Reason.CREATE, 'update': Reason.UPDATE, 'delete': Reason.DELETE,
    'resume': None, 'field': None, 'sub': None,
}
ACTIVITY_KINDS: Mapping[str, Activity] = {
    'startup': Activity.STARTUP, 'cleanup': Activity.CLEANUP,
    'login': Activity.AUTHENTICATION, 'probe': Activity.PROBE,
}


@dataclasses.dataclass
class Handler:
    """One registration: the function, its id and kind, what selects it, and how it is retried."""
    fn: Callable[..., Any]
    id: str
    kind: Kind
    param: Any = None
    errors: ErrorsMode | None = None
    timeout: float | None = None
    retries: int | None = None
    backoff: float | None = None
    selector: refs.Selector | None = None
    labels: Mapping[str, Any] | None = None
    annotations: Mapping[str, Any] | None = None
    when: Callable[..., bool] | None = None
    field: views.FieldPath | None = None
    value: Any = None
    old: Any = None
    new: Any = None
    field_needs_change: bool = False
    deleted: bool | None = None
    requires_finalizer: bool = False
    initial_delay: float | None = None
    interval: float | None = None
    idle: float | None = None
    sharp: bool | None = None
    cancellation_timeout: float | None = None
    cancellation_backoff: float | None = None
    cancellation_polling: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # webhooks' own options
    fallback: bool = False  # Kopf's implicit login handlers, used only when there are no others

    def __str__(self) -> str:
        title = {'timer': 'Timer', 'daemon': 'Daemon'}.get(self.kind, 'Handler')  # as Kopf names them
        return f"{title} {self.id!r}"

    @property
    def reason(self) -> Reason | None:
        return CHANGE_KINDS.get(self.kind)

    @property
    def activity(self) -> Activity | None:
        return ACTIVITY_KINDS.get(self.kind)

    @property
    def is_changing(self) -> bool:
        return self.kind in CHANGE_KINDS


# -- lifecycles -----------------------------------------------------------------------------------

class _HasRetries(Protocol):
    retries: int


LifeCycleFn: TypeAlias = Callable[..., Sequence[Handler]]


def all_at_once(handlers: Sequence[Handler], **_: Any) -> Sequence[Handler]:
    """Every pending handler, in one go."""
    return list(handlers)


def one_by_one(handlers: Sequence[Handler], **_: Any) -> Sequence[Handler]:
    """The first pending handler, in the order of registration."""
    return list(handlers)[:1]


def randomized(handlers: Sequence[Handler], **_: Any) -> Sequence[Handler]:
    """One pending handler, chosen at random."""
    return [random.choice(list(handlers))] if handlers else []


def shuffled(handlers: Sequence[Handler], **_: Any) -> Sequence[Handler]:
    """Every pending handler, in a random order."""
    return random.sample(list(handlers), k=len(handlers))


def asap(handlers: Sequence[Handler], *, state: Mapping[str, _HasRetries], **_: Any) -> Sequence[Handler]:
    """The pending handler with the fewest retries (Kopf's default)."""
    ranked = sorted(handlers, key=lambda handler: state[handler.id].retries)
    return ranked[:1]


_lifecycle: LifeCycleFn | None = None


def get_default_lifecycle() -> LifeCycleFn:
    return _lifecycle if _lifecycle is not None else asap


def set_default_lifecycle(lifecycle: LifeCycleFn | None) -> None:
    global _lifecycle
    _lifecycle = lifecycle


# -- timers and daemons (the stopped flag) --------------------------------------------------------

class DaemonStoppingReason(enum.Flag):
    NONE = 0
    DONE = enum.auto()
    FILTERS_MISMATCH = enum.auto()
    RESOURCE_DELETED = enum.auto()
    OPERATOR_PAUSING = enum.auto()
    OPERATOR_EXITING = enum.auto()
    DAEMON_SIGNALLED = enum.auto()
    DAEMON_CANCELLED = enum.auto()
    DAEMON_ABANDONED = enum.auto()


class DaemonStopped:
    """A daemon's ``stopped`` kwarg: true once the daemon is asked to stop; ``.wait()`` for it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: DaemonStoppingReason | None = None

    def __bool__(self) -> bool:
        return self._event.is_set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, reason: DaemonStoppingReason = DaemonStoppingReason.NONE) -> None:
        # The reasons accumulate (e.g. RESOURCE_DELETED, then DAEMON_CANCELLED), as in Kopf.
        self.reason = reason if self.reason is None else self.reason | reason
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def __repr__(self) -> str:
        return f"<DaemonStopped: {'stopped' if self else 'running'}>"


class AsyncDaemonStopped(DaemonStopped):
    # Kopf's API: an async daemon awaits `stopped.wait()`, a sync one calls it (so not substitutable).
    async def wait(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        return await asyncio.get_running_loop().run_in_executor(None, self._event.wait, timeout)


SyncDaemonStopperChecker = DaemonStopped
AsyncDaemonStopperChecker = AsyncDaemonStopped


# -- indices (the read-only interfaces; filled by kopf._core.indexing) ------------------------------

_K = TypeVar('_K')
_V = TypeVar('_V')


class Store(Collection[_V], Generic[_V]):
    """
    ``kopf.Store``: the values that the objects put under one key of an index (read-only).

    An interface: the stores that handlers get are :class:`kopf._core.indexing.Store`.
    """


class Index(Mapping[_K, Store[_V]], Generic[_K, _V]):
    """
    ``kopf.Index``: an ``@kopf.index`` handler's index, keys to stores of values (read-only).

    An interface: the indices that handlers get are :class:`kopf._core.indexing.Index`.
    """


# -- admission (accepted, not served yet) ---------------------------------------------------------

Operation = Literal['CREATE', 'UPDATE', 'DELETE', 'CONNECT']
Headers = Mapping[str, str]
SSLPeer = Mapping[str, Any]


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]


class WebhookClientConfigService(TypedDict, total=False):
    namespace: str | None
    name: str | None
    path: str | None
    port: int | None


class WebhookClientConfig(TypedDict, total=False):
    caBundle: str | None
    url: str | None
    service: WebhookClientConfigService | None


WebhookFn = Callable[..., Any]


class WebhookServerProtocol(Protocol):
    def __call__(self, fn: WebhookFn) -> Any: ...
