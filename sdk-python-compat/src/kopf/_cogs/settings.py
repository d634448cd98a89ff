"""
``kopf.OperatorSettings``: every section and field Kopf has, so that operators that tune them in
``@kopf.on.startup`` keep working. On Operon, the core does the watching, the persistence and the
retries; the fields it honours are passed to it on its command line (see
:func:`kopf._core.reactor.running.core_argv`), the rest are accepted and have no effect.
The storages here are descriptions of where the core keeps the state, not code that keeps it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypedDict

KOPF_PREFIX = 'kopf.zalando.org'


class ProgressRecord(TypedDict, total=False):
    """One handler's progress as Kopf (and the Operon core) stores it on the object."""
    started: str | None
    stopped: str | None
    delayed: str | None
    purpose: str | None
    retries: int | None
    success: bool | None
    failure: bool | None
    message: str | None
    subrefs: list[str] | None


class ProgressStorage:
    """Where the handlers' progress is kept (base of all progress storages)."""


class AnnotationsProgressStorage(ProgressStorage):
    """Progress in annotations ``<prefix>/<handler id>`` (Operon's only progress storage)."""

    def __init__(self, *, prefix: str = KOPF_PREFIX, verbose: bool = False,
                 touch_key: str = 'touch-dummy', v1: bool = True) -> None:
        if not prefix:
            raise ValueError("Annotations storages must be prefixed.")
        self.prefix, self.verbose, self.touch_key, self.v1 = prefix, verbose, touch_key, v1


class StatusProgressStorage(ProgressStorage):
    """Progress in ``status.<name>.progress`` (not supported by the Operon core)."""

    def __init__(self, *, name: str = 'kopf', field: Any = 'status.{name}.progress',
                 touch_field: Any = 'status.{name}.dummy') -> None:
        self.name, self.field, self.touch_field = name, field, touch_field


class MultiProgressStorage(ProgressStorage):
    """Several progress storages; the first one that has a record wins."""

    def __init__(self, storages: Collection[ProgressStorage]) -> None:
        self.storages = list(storages)


class SmartProgressStorage(MultiProgressStorage):
    """Kopf's default: annotations first, then the status."""

    def __init__(self, *, name: str = 'kopf', field: Any = 'status.{name}.progress',
                 touch_key: str = 'touch-dummy', touch_field: Any = 'status.{name}.dummy',
                 prefix: str = KOPF_PREFIX, v1: bool = True, verbose: bool = False) -> None:
        super().__init__([
            AnnotationsProgressStorage(prefix=prefix, verbose=verbose, touch_key=touch_key, v1=v1),
            StatusProgressStorage(name=name, field=field, touch_field=touch_field),
        ])


class DiffBaseStorage:
    """Where the last handled state (the essence) is kept (base of all diff-base storages)."""

    def __init__(self, ignored_fields: Iterable[Any] | None = None) -> None:
        self.ignored_fields = list(ignored_fields or ())


class AnnotationsDiffBaseStorage(DiffBaseStorage):
    """The essence in annotation ``<prefix>/<key>`` (Kopf's default, and Operon's)."""

    def __init__(self, *, prefix: str = KOPF_PREFIX, key: str = 'last-handled-configuration',
                 ignored_fields: Iterable[Any] | None = None, v1: bool = True) -> None:
        super().__init__(ignored_fields=ignored_fields)
        if not prefix:
            raise ValueError("Annotations storages must be prefixed.")
        self.prefix, self.key, self.v1 = prefix, key, v1


class StatusDiffBaseStorage(DiffBaseStorage):
    """The essence in ``status.<name>.last-handled-configuration`` (not supported by the core)."""

    def __init__(self, *, name: str = 'kopf', field: Any = 'status.{name}.last-handled-configuration',
                 ignored_fields: Iterable[Any] | None = None) -> None:
        super().__init__(ignored_fields=ignored_fields)
        self.name, self.field = name, field


class MultiDiffBaseStorage(DiffBaseStorage):
    """Several diff-base storages."""

    def __init__(self, storages: Collection[DiffBaseStorage]) -> None:
        super().__init__()
        self.storages = list(storages)


# The sections. Those the core takes over entirely are "inert": they keep Kopf's fields and
# defaults, so that operators can set them, and nothing reads them. Each is made from a table.

def _inert(__cls: str, __doc: str, **defaults: Any) -> type:
    fields = [(key, Any, dataclasses.field(default_factory=dict) if isinstance(value, dict) else value)
              for key, value in defaults.items()]
    return dataclasses.make_dataclass(__cls, fields, namespace={'__doc__': __doc})


ProcessSettings = _inert('ProcessSettings', "Kopf's process settings (no effect on Operon).",
                         ultimate_exiting_timeout=600.0)
PeeringSettings = _inert('PeeringSettings', "Kopf's peering (no effect: the core runs alone or elects a leader).",
                         name='default', stealth=False, priority=0, lifetime=60, mandatory=False,
                         standalone=False, clusterwide=False)
WatchingSettings = _inert('WatchingSettings', "Kopf's watching (no effect: the core watches).",
                          server_timeout=None, client_timeout=None, connect_timeout=None,
                          reconnect_backoff=0.1, inactivity_timeout=70.0, chunk_size=None,
                          initial_streaming=False, label_selectors={}, field_selectors={},
                          shard_selectors={})
ScanningSettings = _inert('ScanningSettings', "Kopf's cluster scanning (no effect).", disabled=False)
AdmissionSettings = _inert('AdmissionSettings', "Kopf's admission (no effect: not served yet).",
                           server=None, managed=None)
NetworkingSettings = _inert('NetworkingSettings', "Kopf's API client settings (no effect: the core connects).",
                            request_timeout=300.0, connect_timeout=None,
                            error_backoffs=(1, 1, 2, 3, 5, 8, 13, 21), enforce_retry_after=False,
                            trust_env=False)
BackgroundSettings = _inert('BackgroundSettings', "Kopf's daemon settings (no effect: daemons are the core's).",
                            cancellation_polling=60, instant_exit_timeout=None, instant_exit_zero_time_cycles=10)


@dataclasses.dataclass
class PostingSettings:
    """Which ``kopf.event()`` & co. are posted (log lines are never posted on Operon)."""
    enabled: bool = True
    level: int = 20  # logging.INFO
    loggers: bool = False  # accepted, no effect
    reporting_component: str = 'kopf'  # of the Event objects
    reporting_instance: str = 'dev'    # of the Event objects
    event_name_prefix: str = 'kopf-event-'  # their generateName


@dataclasses.dataclass
class QueueingSettings:
    """``worker_limit`` becomes the core's ``--workers``; the rest is accepted, no effect."""
    worker_limit: int | None = None
    idle_timeout: float = 5.0
    exit_timeout: float = 2.0
    error_delays: Iterable[float] = tuple([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610])


def _thread_pool() -> concurrent.futures.Executor:
    return concurrent.futures.ThreadPoolExecutor()


@dataclasses.dataclass
class ExecutionSettings:
    """``default_backoff`` → the core's ``--default-backoff``; ``executor`` runs sync handlers here."""
    default_backoff: float = 60
    executor: concurrent.futures.Executor = dataclasses.field(default_factory=_thread_pool)

    @property
    def max_workers(self) -> int | None:
        """The executor's thread limit; raising it lets more sync handlers run at once."""
        return getattr(self.executor, '_max_workers', None)

    @max_workers.setter
    def max_workers(self, value: int) -> None:
        if not isinstance(self.executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("max_workers can be set only on a ThreadPoolExecutor.")
        self.executor._max_workers = value  # grows lazily with the load, never shrinks


@dataclasses.dataclass
class PersistenceSettings:
    """Where the core keeps the state: finalizer, prefix (from the storages), consistency wait."""
    finalizer: str = f'{KOPF_PREFIX}/KopfFinalizerMarker'
    progress_storage: ProgressStorage = dataclasses.field(default_factory=SmartProgressStorage)
    diffbase_storage: DiffBaseStorage = dataclasses.field(default_factory=AnnotationsDiffBaseStorage)
    consistency_timeout: float = 5.0


def _part(section: Callable[[], Any]) -> Any:
    return dataclasses.field(default_factory=section)


@dataclasses.dataclass
class OperatorSettings:
    """All of Kopf's settings; tune them in ``@kopf.on.startup(settings=…)``."""
    process: Any = _part(ProcessSettings)
    posting: PostingSettings = _part(PostingSettings)
    peering: Any = _part(PeeringSettings)
    watching: Any = _part(WatchingSettings)
    queueing: QueueingSettings = _part(QueueingSettings)
    scanning: Any = _part(ScanningSettings)
    admission: Any = _part(AdmissionSettings)
    execution: ExecutionSettings = _part(ExecutionSettings)
    background: Any = _part(BackgroundSettings)
    networking: Any = _part(NetworkingSettings)
    persistence: PersistenceSettings = _part(PersistenceSettings)
