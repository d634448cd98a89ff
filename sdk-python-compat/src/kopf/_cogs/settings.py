"""
``kopf.OperatorSettings``: every section and field Kopf has, with Kopf's defaults, so that
operators that tune them in ``@kopf.on.startup`` keep importing and starting. On Operon, the core
does the watching, the persistence and the retries; the fields it honours are passed to it on its
command line (see :func:`kopf._core.reactor.running.core_argv`). A field that Operon cannot honour
is never silently accepted: after the startup handlers, :func:`audit` finds every field set away
from Kopf's default that is refused (the operator does not start, and says which and why) or has
no effect (a warning). The README's "Compatibility reference" lists every field.
The storages (:mod:`kopf._cogs.storages`) are descriptions of where and how the core keeps the
state, given to it as its ``--progress-storage`` and ``--diffbase-storage``; custom storages (code)
are refused by :func:`audit`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import warnings
from collections.abc import Callable
from typing import Any, Protocol, TypedDict, runtime_checkable

from kopf._cogs import storages
from kopf._cogs.storages import (
    KOPF_PREFIX, AnnotationsDiffBaseStorage, DiffBaseStorage, ProgressStorage, SmartProgressStorage,
)


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


# The sections. Every field of Kopf's is here, with Kopf's default, so that operators that set it
# keep importing; what Operon does with a field is said by how it is declared:
# - plainly: honoured here, or its purpose is served by the core as it is (see the docstrings);
# - `_core(…)`: passed to the core as that option of `operon run` (see `running.core_argv`);
# - `_unused(…)`: not used, and said so at start-up (a warning) when it is not Kopf's default;
# - `_refused(…)`: when it is not Kopf's default, the operator does not start (see `audit()`).
# Their reasons are the words users read, in the log and in the README's compatibility table.

class Support(enum.Enum):
    """How Operon treats a field that is set away from Kopf's default."""
    REFUSED = 'refused'     # the operator does not start
    UNUSED = 'unused'       # a warning: it has no effect
    CORE_OPTION = 'core'    # given to the core (`kopf run`), or a warning (`kopf serve`)


@dataclasses.dataclass(frozen=True)
class Declared:
    """A field's treatment, and the words for it: the reason, or the core's option."""
    support: Support
    text: str


_META = 'operon'


def _declared(default: Any, how: Declared | None) -> Any:
    meta = {_META: how} if how else {}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _refused(default: Any, why: str) -> Any:
    return _declared(default, Declared(Support.REFUSED, why))


def _unused(default: Any, why: str) -> Any:
    return _declared(default, Declared(Support.UNUSED, why))


def _core(default: Any, option: str) -> Any:
    return _declared(default, Declared(Support.CORE_OPTION, option))


def declared(field: dataclasses.Field[Any]) -> Declared | None:
    """How a section's field is treated (``None``: honoured, or served by the core as it is)."""
    how = field.metadata.get(_META)
    return how if isinstance(how, Declared) else None


_OWN_WATCH = "the core does its own watching"
_NO_SELECTORS = (_OWN_WATCH + " and has no server-side selectors or shards; "
                 "filter in the handlers (labels=, field=, value=, when=)")
_WATCH_ENDS = ("the core's watch requests end after 290 s (server-side) and are renewed, and a silent "
               "watch is restarted after settings.watching.inactivity_timeout")
_OWN_CLIENT = ("the core makes the API requests with its own client (kube-rs), "
               "configured from the kubeconfig alone")
_CORE_POSTS = ("the core posts the handlers' events with Kopf's defaults "
               "(reportingComponent 'kopf', reportingInstance 'dev', generateName 'kopf-event-')")


@dataclasses.dataclass
class ProcessSettings:
    """The operator's process."""
    # As in Kopf: after a stop signal (not the stop-flag), the process is SIGKILLed this many
    # seconds later if it has not exited by then (a sync handler that never returns holds it:
    # threads cannot be cancelled); None: never.
    ultimate_exiting_timeout: float | None = 10 * 60


@dataclasses.dataclass
class PeeringSettings:
    """
    Kopf's peering: the core takes part in it, as these say (``running.peering_options``): with
    ``kopf run`` (and ``kopf.run()``), Kopf's options are mapped into them before the startup
    handlers, as in Kopf, and what the handlers leave is given to the core. ``clusterwide`` follows
    the operator's ``-A``/``-n``; another scope stops the start (the core's peering follows its own).
    """
    name: str = _core('default', '--peering')
    stealth: bool = _core(False, '--peering-stealth')
    priority: int = _core(0, '--priority')
    lifetime: int = _core(60, '--peering-lifetime')
    mandatory: bool = _core(False, '--peering-mandatory')
    standalone: bool = _core(False, '--standalone')
    clusterwide: bool = _core(False, '-A (its peering in ClusterKopfPeering objects; with -n, in KopfPeering ones)')

    @property
    def namespaced(self) -> bool:
        """The inverse of ``clusterwide``, as in Kopf."""
        return not self.clusterwide

    @namespaced.setter
    def namespaced(self, value: bool) -> None:
        self.clusterwide = not value


@dataclasses.dataclass
class WatchingSettings:
    """Kopf's watch streams: the core watches the cluster itself."""
    server_timeout: float | None = _unused(None, _WATCH_ENDS)
    client_timeout: float | None = _unused(None, _WATCH_ENDS)
    connect_timeout: float | None = _unused(None, _WATCH_ENDS)
    reconnect_backoff: float = _refused(0.1, _OWN_WATCH + ": it re-watches after a failure with "
                                             "growing delays of its own")
    inactivity_timeout: float = _core(70.0, '--watch-silence-timeout')
    chunk_size: int | None = _refused(None, _OWN_WATCH + ": it lists the objects in pages of its own size")
    initial_streaming: bool = _refused(False, _OWN_WATCH + ": it lists the objects, then watches "
                                              "(no sendInitialEvents streaming)")
    label_selectors: dict[Any, str] = _refused({}, _NO_SELECTORS)
    field_selectors: dict[Any, str] = _refused({}, _NO_SELECTORS)
    shard_selectors: dict[Any, str] = _refused({}, _NO_SELECTORS)


@dataclasses.dataclass
class ScanningSettings:
    """Kopf's scanning of namespaces and CRDs: the core resolves each resource once, at start
    (waiting until it exists), and serves the namespaces it is given --- as with ``disabled=True``."""
    disabled: bool = False


class WebhookNotSupportedError(NotImplementedError):
    """ A webhook server or tunnel (or one of its arguments) that the core cannot be asked for. """


@runtime_checkable
class AdmissionServer(Protocol):
    """
    What ``settings.admission.server`` must be on Operon: a description of how the core serves the
    admission webhooks (``kopf.WebhookServer`` & co., :mod:`kopf._kits.webhooks`), not a server
    that serves them itself (Kopf's ``kopf.WebhookServerProtocol``, which is refused at start-up).
    """

    def core_options(self) -> list[str]:
        """
        The core's ``--admission-*`` options.

        # Errors
        :class:`WebhookNotSupportedError` for what the core cannot do.
        """
        ...


@dataclasses.dataclass
class AdmissionSettings:
    """Kopf's admission webhooks: served by the core, as its ``--admission-*`` options
    (``kopf._kits.webhooks``)."""
    server: Any = _core(None, '--admission-listen & co. (from the kopf.Webhook*Server)')
    managed: str | None = _core(None, '--admission-managed')


@dataclasses.dataclass
class NetworkingSettings:
    """Kopf's API client: the core has its own."""
    request_timeout: float | None = _refused(300.0, _OWN_CLIENT)
    connect_timeout: float | None = _refused(None, _OWN_CLIENT)
    error_backoffs: Any = _refused((1, 1, 2, 3, 5, 8, 13, 21), _OWN_CLIENT)
    enforce_retry_after: bool = _refused(False, _OWN_CLIENT)
    trust_env: bool = _refused(False, _OWN_CLIENT)


@dataclasses.dataclass
class BackgroundSettings:
    """Kopf's polling of stopping daemons and timers: the core sees their exit at once."""
    cancellation_polling: float = 60
    instant_exit_timeout: float | None = None
    instant_exit_zero_time_cycles: int | None = 10


@dataclasses.dataclass
class PostingSettings:
    """Which ``kopf.event()`` & co. are posted, and how."""
    enabled: bool = True
    level: int = 20  # logging.INFO
    loggers: bool = _refused(False, "log lines are never posted as Kubernetes Events; post them "
                                    "with kopf.event()/info()/warn()/exception()")
    default_backoffs: Any = _refused((1, 1, 2, 3, 5, 8, 13, 21),
                                     "events are posted once, without retries (by the core for the "
                                     "handlers' events)")
    logging_backoffs: Any = (1, 1, 2, 3, 5)  # for log lines as events, which are never posted
    worker_limit: int | None = _refused(None, "the core posts the handlers' events in the objects' "
                                              "own cycles; there is no pool of posting workers")
    idle_timeout: float = 1.0  # no posting workers to expire
    reporting_component: str = _refused('kopf', _CORE_POSTS)
    reporting_instance: str = _refused('dev', _CORE_POSTS)
    event_name_prefix: str = _refused('kopf-event-', _CORE_POSTS)


@dataclasses.dataclass
class QueueingSettings:
    """The core's queue: ``worker_limit`` is its ``--workers`` (64 when not set)."""
    worker_limit: int | None = _core(None, '--workers')
    idle_timeout: float = 5.0  # the core keeps no per-object worker tasks to expire
    exit_timeout: float = _refused(2.0, "when the operator stops, the core lets the cycles in flight "
                                        "finish for up to 30 s (its --shutdown-grace)")
    error_delays: Any = _refused((1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610),
                                 "unexpected errors of the runtime are the core's own, retried its own way")
    _batch_window: float = 0.1  # Kopf's deprecated time-based batching: no effect, as in Kopf

    @property
    def batch_window(self) -> float:
        """Deprecated in Kopf and without effect there, as here."""
        warnings.warn("Time-based event batching was removed. Please stop configuring it.",
                      DeprecationWarning)
        return self._batch_window

    @batch_window.setter
    def batch_window(self, value: float) -> None:
        warnings.warn("Time-based event batching was removed. Please stop configuring it.",
                      DeprecationWarning)
        self._batch_window = value


def _thread_pool() -> concurrent.futures.Executor:
    return concurrent.futures.ThreadPoolExecutor()


@dataclasses.dataclass
class ExecutionSettings:
    """``default_backoff`` → the core's ``--default-backoff``; ``executor`` runs sync handlers here."""
    default_backoff: float = _core(60, '--default-backoff')
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


def _storage(factory: Callable[[], Any], option: str) -> Any:
    return dataclasses.field(default_factory=factory,
                             metadata={_META: Declared(Support.CORE_OPTION, option)})


@dataclasses.dataclass
class PersistenceSettings:
    """Where and how the core keeps the state: the finalizer, the storages, the consistency wait."""
    finalizer: str = _core(f'{KOPF_PREFIX}/KopfFinalizerMarker', '--finalizer')
    progress_storage: ProgressStorage = _storage(SmartProgressStorage, '--progress-storage')
    diffbase_storage: DiffBaseStorage = _storage(AnnotationsDiffBaseStorage, '--diffbase-storage')
    consistency_timeout: float = _core(5.0, '--consistency-timeout')


def _part(section: Callable[[], Any]) -> Any:
    return dataclasses.field(default_factory=section)


@dataclasses.dataclass
class OperatorSettings:
    """All of Kopf's settings; tune them in ``@kopf.on.startup(settings=…)``."""
    process: ProcessSettings = _part(ProcessSettings)
    posting: PostingSettings = _part(PostingSettings)
    peering: PeeringSettings = _part(PeeringSettings)
    watching: WatchingSettings = _part(WatchingSettings)
    queueing: QueueingSettings = _part(QueueingSettings)
    scanning: ScanningSettings = _part(ScanningSettings)
    admission: AdmissionSettings = _part(AdmissionSettings)
    execution: ExecutionSettings = _part(ExecutionSettings)
    background: BackgroundSettings = _part(BackgroundSettings)
    networking: NetworkingSettings = _part(NetworkingSettings)
    persistence: PersistenceSettings = _part(PersistenceSettings)

    @property
    def batching(self) -> QueueingSettings:
        """Kopf's old name of :attr:`queueing` (deprecated)."""
        warnings.warn("settings.batching is settings.queueing now; please rename it.", DeprecationWarning)
        return self.queueing


@dataclasses.dataclass(frozen=True)
class Audit:
    """What start-up makes of the settings (see :func:`audit`)."""
    errors: list[str] = dataclasses.field(default_factory=list)
    """Fields set to what Operon does not support: the operator must not start."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Fields set to what has no effect here, or that a separately run core must be told."""


_STORAGE_SPECS: dict[type, Callable[[object], dict[str, Any]]] = {
    ProgressStorage: storages.progress_spec, DiffBaseStorage: storages.diffbase_spec}


def _storage_option(value: Any) -> str:
    """ `` '<spec>'`` for a storage: the value of the core's option; empty for other fields. """
    for base, spec in _STORAGE_SPECS.items():
        if isinstance(value, base):
            return f" '{storages.core_option(spec(value))}'"
    return ''


def _unchanged(value: Any, default: Any) -> bool:
    for base, spec in _STORAGE_SPECS.items():
        if isinstance(default, base):  # the same storage as Kopf's default, said to the core
            try:
                return spec(value) == spec(default)
            except Exception:  # not a storage the core can be given: see `audit()`
                return False
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    try:
        return bool(value == default)
    except Exception:  # an odd value that cannot be compared is a change
        return False


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def audit(settings: OperatorSettings, *, with_core: bool = True) -> Audit:
    """
    Compare every declared field with Kopf's default, after the startup handlers have run.

    A refused field that is not at its default is an error, named with its value and the reason;
    an unused one is a warning. With ``with_core=False`` (``kopf serve``: the core runs elsewhere),
    the fields that are the core's options are warnings too: they must be given to that core.
    A storage that the core cannot be given (a custom one: code) is an error, naming its class.
    """
    result = Audit()
    refused: set[str] = set()
    for name, spec in [('progress_storage', storages.progress_spec),
                       ('diffbase_storage', storages.diffbase_spec)]:
        try:
            spec(getattr(settings.persistence, name))
        except (storages.CustomStorageError, ValueError, TypeError, AttributeError) as e:
            refused.add(f'persistence.{name}')
            result.errors.append(f"settings.persistence.{name} is not supported on Operon: {e}.")
    for part in dataclasses.fields(settings):
        section = getattr(settings, part.name)
        if not dataclasses.is_dataclass(section):
            continue
        for field in dataclasses.fields(section):
            how = declared(field)
            value = getattr(section, field.name)
            if how is None or f'{part.name}.{field.name}' in refused or _unchanged(value, _default_of(field)):
                continue
            where = f"settings.{part.name}.{field.name}={value!r}"
            match how.support:
                case Support.REFUSED:
                    result.errors.append(f"{where} is not supported on Operon: {how.text}.")
                case Support.UNUSED:
                    result.warnings.append(f"{where} has no effect on Operon: {how.text}.")
                case Support.CORE_OPTION if not with_core:
                    option = how.text + _storage_option(value)
                    result.warnings.append(f"{where} is the core's option {option} on Operon; "
                                           f"give it to the core that calls this service.")
                case Support.CORE_OPTION:
                    pass  # in the core's command line (`running.core_argv`)
    return result
