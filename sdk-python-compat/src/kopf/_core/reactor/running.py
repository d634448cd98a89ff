"""
Running an operator: Kopf's ``kopf.run()`` / ``kopf.operator()``, on Operon.

An operator here is two processes: this one serves the handlers over gRPC (and runs the
activities: login, startup, cleanup, probes), and the Operon core (``operon``), started as a
child, watches the cluster and calls the handlers. Both stop together: on SIGINT/SIGTERM or the
stop-flag, the core is stopped first (it finishes the cycles in flight), then the handler
service, then the cleanup handlers run. If the core dies, the operator stops with an error.

``serve()`` is the same without the core: only the handler service, on a given address, for
a core that runs elsewhere (a sidecar, another Deployment).
"""
import asyncio
import contextlib
import logging
import os
import re
import signal
import threading
import warnings
from collections.abc import Collection, Coroutine, Sequence
from typing import Any

from kopf._cogs import credentials, process, refs, settings as settings_, storages, views
from kopf._core import activities, indexing, model, posting, registry as registries
from kopf._core.reactor import handling, manifests
from kopf._transport import core as corep
from kopf._transport import corelogs, server, tracing

logger = logging.getLogger(__name__)

# How long the core may take to stop after SIGTERM before it is killed (its own grace is 30 s).
CORE_STOP_TIMEOUT = 40.0


class OperatorError(Exception):
    """ The operator cannot start or has failed; the message says why. """


def run(
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        lifecycle: model.LifeCycleFn | None = None,
        indexers: object | None = None,
        registry: registries.OperatorRegistry | None = None,
        settings: settings_.OperatorSettings | None = None,
        memories: object | None = None,
        insights: object | None = None,
        identity: object | None = None,
        standalone: bool | None = None,
        priority: int | None = None,
        peering_name: str | None = None,
        liveness_endpoint: str | None = None,
        clusterwide: bool = False,
        namespaces: Collection[refs.NamespacePattern] = (),
        namespace: refs.NamespacePattern | None = None,  # deprecated
        stop_flag: process.Flag | None = None,
        ready_flag: process.Flag | None = None,
        vault: object | None = None,
        memo: object | None = None,
        _command: Coroutine[None, None, None] | None = None,
) -> None:
    """
    Run the whole operator synchronously: the handler service and the Operon core.

    If the loop is not specified, the operator runs in a new event loop (``asyncio.run``).
    """
    refuse_kopf_internals('kopf.run', indexers=indexers, memories=memories, insights=insights,
                          identity=identity, vault=vault, peering_name=peering_name, priority=priority)
    coro = operator(
        lifecycle=lifecycle, indexers=indexers, registry=registry, settings=settings,
        memories=memories, insights=insights, identity=identity, standalone=standalone,
        priority=priority, peering_name=peering_name, liveness_endpoint=liveness_endpoint,
        clusterwide=clusterwide, namespaces=namespaces, namespace=namespace,
        stop_flag=stop_flag, ready_flag=ready_flag, vault=vault, memo=memo, _command=_command,
    )
    try:
        if loop is not None:
            loop.run_until_complete(coro)
        else:
            asyncio.run(coro)
    except asyncio.CancelledError:
        pass
    finally:
        # The operator and its loop are done: as Kopf's timer dies with its loop, this one must
        # not kill a program that goes on after `kopf.run()`.
        while _ULTIMATE_TIMERS:
            _ULTIMATE_TIMERS.pop().cancel()


async def operator(
        *,
        lifecycle: model.LifeCycleFn | None = None,
        indexers: object | None = None,
        registry: registries.OperatorRegistry | None = None,
        settings: settings_.OperatorSettings | None = None,
        memories: object | None = None,
        insights: object | None = None,
        identity: object | None = None,
        standalone: bool | None = None,
        priority: int | None = None,
        peering_name: str | None = None,
        liveness_endpoint: str | None = None,
        clusterwide: bool = False,
        namespaces: Collection[refs.NamespacePattern] = (),
        namespace: refs.NamespacePattern | None = None,  # deprecated
        stop_flag: process.Flag | None = None,
        ready_flag: process.Flag | None = None,
        vault: object | None = None,
        memo: object | None = None,
        _command: Coroutine[None, None, None] | None = None,
) -> None:
    """
    Run the whole operator asynchronously: the handler service and the Operon core.

    # Errors
    :class:`OperatorError` if the core cannot be found or started, or exits unexpectedly;
    :class:`kopf._core.engines.activities.ActivityError` if the startup handlers fail.

    :class:`NotImplementedError` for Kopf's peering options (``priority``, ``peering_name``;
    the core runs standalone) and Kopf's internals (``indexers``, ``memories``, ``insights``,
    ``identity``, ``vault``), when given; :class:`OperatorError` when the settings, as the
    startup handlers left them, ask for what Operon does not do (see
    :func:`kopf._cogs.settings.audit`).
    """
    if _command is not None:
        _command.close()
        raise OperatorError("`kopf freeze`/`kopf resume` (peering) are not supported on Operon.")
    refuse_kopf_internals('kopf.operator', indexers=indexers, memories=memories, insights=insights,
                          identity=identity, vault=vault, peering_name=peering_name, priority=priority)
    if namespaces and namespace:
        raise TypeError("Either namespaces= or namespace= can be passed. Got both.")
    elif namespace:
        warnings.warn("namespace= is deprecated; use namespaces=[...]", DeprecationWarning)
        namespaces = [namespace]
    if clusterwide and namespaces:
        raise TypeError("The operator can be either cluster-wide or namespaced, not both.")
    if not clusterwide and not namespaces:
        warnings.warn("Absence of either namespaces or cluster-wide flag will become an error soon."
                      " For now, switching to the cluster-wide mode for backward compatibility.",
                      FutureWarning)
        clusterwide = True
    for pattern in namespaces:
        if not isinstance(pattern, (str, re.Pattern)):
            raise TypeError(f"A namespace must be a name, a pattern or a regular expression, not {pattern!r}.")

    async with _Operator(
        lifecycle=lifecycle, registry=registry, settings=settings, memo=memo,
        liveness_endpoint=liveness_endpoint, stop_flag=stop_flag, ready_flag=ready_flag,
    ) as op:
        await op.run(core_args=dict(
            clusterwide=clusterwide, namespaces=list(namespaces), standalone=bool(standalone)))


async def serve(
        *,
        listen: str,
        tls: server.ServerTls | None = None,
        lifecycle: model.LifeCycleFn | None = None,
        registry: registries.OperatorRegistry | None = None,
        settings: settings_.OperatorSettings | None = None,
        memo: object | None = None,
        liveness_endpoint: str | None = None,
        stop_flag: process.Flag | None = None,
        ready_flag: process.Flag | None = None,
) -> None:
    """
    Serve the handlers only (no core) on ``listen`` (``HOST:PORT``), until stopped.
    """
    async with _Operator(
        lifecycle=lifecycle, registry=registry, settings=settings, memo=memo,
        liveness_endpoint=liveness_endpoint, stop_flag=stop_flag, ready_flag=ready_flag,
        listen=listen, tls=tls,
    ) as op:
        await op.run(core_args=None)


class _Operator:
    """ One run of an operator: activities, the handler service, the core, the shutdown. """

    def __init__(
            self,
            *,
            lifecycle: model.LifeCycleFn | None,
            registry: registries.OperatorRegistry | None,
            settings: settings_.OperatorSettings | None,
            memo: object | None,
            liveness_endpoint: str | None,
            stop_flag: process.Flag | None,
            ready_flag: process.Flag | None,
            listen: str = '127.0.0.1:0',
            tls: server.ServerTls | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry if registry is not None else registries.get_default_registry()
        self.settings = settings if settings is not None else settings_.OperatorSettings()
        self.memo = memo if memo is not None else views.Memo()
        self.lifecycle = lifecycle
        self.liveness_endpoint = liveness_endpoint
        self.stop_flag = stop_flag
        self.ready_flag = ready_flag
        self.listen = listen
        self.tls = tls
        self.indexers = indexing.OperatorIndexers()  # fed through the handler service, read by all
        self.indices = self.indexers.view(self.registry)
        self.credentials: credentials.ConnectionInfo | None = None  # the login handlers' best
        self.custom_login = False  # a user's login handler (not Kopf's fallbacks) gave them
        self._login_lock = asyncio.Lock()
        self._stopping: asyncio.Future[str] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._signals: list[signal.Signals] = []

    async def __aenter__(self) -> "_Operator":
        posting.set_default_settings(self.settings)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        for signum in self._signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        posting.set_default_settings(None)

    # -- stopping ---------------------------------------------------------------------------------

    def _install_stoppers(self) -> asyncio.Future[str]:
        loop = asyncio.get_running_loop()
        stopping: asyncio.Future[str] = loop.create_future()

        def stop(why: str) -> None:
            if not stopping.done():
                stopping.set_result(why)

        def stop_by_signal(why: str) -> None:
            if not stopping.done():
                _ultimate_termination(self.settings.process.ultimate_exiting_timeout)
            stop(why)

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(signum, stop_by_signal, f"Signal {signum.name!s} is received.")
                    self._signals.append(signum)
                except (NotImplementedError, RuntimeError, ValueError):
                    logger.warning("OS signals are ignored: can't add signal handler.")
        else:
            logger.warning("OS signals are ignored: running not in the main thread.")

        if self.stop_flag is not None:
            async def wait_stop_flag() -> None:
                assert self.stop_flag is not None
                result = await process.wait_flag(self.stop_flag)
                stop("Stop-flag is raised." if result is None else f"Stop-flag is set to {result!r}.")
            self._tasks.append(asyncio.create_task(wait_stop_flag(), name='stop-flag waiter'))
        self._stopping = stopping
        return stopping

    # -- the run ----------------------------------------------------------------------------------

    async def run(self, *, core_args: dict[str, Any] | None) -> None:
        stopping = self._install_stoppers()
        logger.debug("Starting Kopf's API on Operon.")
        build = manifests.build_manifest(self.registry)
        manifests.warn_skipped(build)
        if core_args is None and self.registry.of_kinds('index'):
            logger.info("The indexes (@kopf.index) are kept in this process, fed by the core's calls: "
                        "run one replica of this handler service per core (or use `kopf run`); "
                        "several replicas behind one address would each hold a part of every index.")

        posting.OUTBOX.active = True  # events outside handlers wait for the core from now on
        await self._authenticate()
        await self._activity(model.Activity.STARTUP)
        audit = settings_.audit(self.settings, with_core=core_args is not None)
        for warning in audit.warnings:
            logger.warning(warning)
        if core_args is not None and self.registry.of_kinds('validate', 'mutate') and self.settings.admission.server is None:
            raise OperatorError("Admission handlers exist, but no admission server/tunnel is configured "
                                "in `settings.admission.server`. "
                                "More: https://docs.kopf.dev/en/stable/admission/")
        if audit.errors:
            raise OperatorError("\n  ".join(["Kopf's settings ask for what Operon does not do "
                                              "(set them back to Kopf's defaults):", *audit.errors]))

        backend = handling.OperatorBackend(
            registry=self.registry, settings=self.settings, memo=self.memo, lifecycle=self.lifecycle,
            service_name=_service_name(), indexers=self.indexers, login_fn=self._login)
        if tracing.setup():
            logger.debug("Tracing handler runs over OTLP (OpenTelemetry).")
        grpc_server = server.HandlerServer(backend, self.listen, tls=self.tls)
        await grpc_server.start()
        core_process: corep.CoreProcess | None = None
        core_exit: asyncio.Task[int] | None = None
        failure: BaseException | None = None
        try:
            logger.debug(f"Serving the handlers at {grpc_server.address} (operon.v1 gRPC).")
            if self.liveness_endpoint:
                self._tasks.append(asyncio.create_task(activities.health_reporter(
                    self.liveness_endpoint, memo=self.memo, indices=self.indices,
                    registry=self.registry, settings=self.settings), name='health reporter'))
            if core_args is not None:
                core_process = self._core_process(grpc_server.address, **core_args)
                logger.debug(f"Starting the Operon core: {' '.join(core_process.argv)}")
                try:
                    await core_process.start()
                except OSError as e:
                    raise OperatorError(f"Cannot start the Operon core ({core_process.argv[0]}): {e}") from e
                core_exit = asyncio.create_task(core_process.wait(), name='operon core')

            await process.raise_flag(self.ready_flag)

            waited: set[asyncio.Future[Any]] = {stopping}
            if core_exit is not None:
                waited.add(core_exit)
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                logger.info(f"{stopping.result()} Operator is stopping.")
            elif core_exit is not None and core_exit.done():
                code = core_exit.result()
                failure = OperatorError(f"The Operon core has exited unexpectedly with exit code {code}.")
                logger.error(str(failure))
        except BaseException as e:
            failure = e
            raise
        finally:
            if core_process is not None and core_process.returncode is None:
                await asyncio.shield(core_process.stop(timeout=CORE_STOP_TIMEOUT))
            await grpc_server.stop(grace=1.0)
            tracing.shutdown()
            posting.OUTBOX.active = False
            if not isinstance(failure, asyncio.CancelledError):
                await self._activity(model.Activity.CLEANUP, raise_errors=failure is None)
        if failure is not None:
            raise failure

    async def _activity(self, activity: model.Activity, raise_errors: bool = True) -> dict[Any, Any]:
        try:
            return await activities.run_activity(
                lifecycle=model.all_at_once,
                registry=self.registry,
                settings=self.settings,
                activity=activity,
                indices=self.indices,
                memo=self.memo,
            )
        except activities.ActivityError:
            if raise_errors:
                raise
            logger.exception(f"The {activity.value} activity has failed.")
            return {}

    async def _authenticate(self, *, again: bool = False) -> None:
        """
        Kopf's authentication: the login handlers run at start, and again when the core asks
        (:meth:`_login`: a 401 from the API server, or credentials about to expire).

        With no ``@kopf.on.login`` handlers, Kopf's fallbacks configure the ``kubernetes`` and
        ``pykube-ng`` clients (if installed) from the kubeconfig, as handler code expects, and the
        core reads the kubeconfig itself. When a user's login handler returns credentials, the
        core is started with ``--login`` and takes them (and their renewals) through ``Login``.
        """
        authenticators = self.registry.activity_handlers(model.Activity.AUTHENTICATION)
        if not authenticators:
            return
        what = "Re-authentication" if again else "Initial authentication"
        logger_ = logging.getLogger('kopf._core.engines.activities')
        logger_.info(f"{what} has been initiated.")
        try:
            results = await self._activity(model.Activity.AUTHENTICATION)
        except activities.ActivityError as e:
            logger_.warning(f"{what} has failed: {e}")
            return
        if results:
            logger_.info(f"{what} has finished.")
        else:
            logger_.warning(f"{what} has failed: no credentials were retrieved from the login handlers.")
        fallback_ids = {h.id for h in authenticators if h.fallback}
        found = [(handler_id not in fallback_ids, info) for handler_id, info in results.items()
                 if isinstance(info, credentials.ConnectionInfo)]
        if found:
            self.custom_login = self.custom_login or any(custom for custom, _ in found)
            self.credentials = max((info for _, info in found), key=lambda info: info.priority)

    async def _login(self, reason: str) -> credentials.ConnectionInfo | None:
        """
        The credentials for the core's ``Login``: at its start, those of the start-up login if
        they have not expired; else the login handlers run again (one run for concurrent asks).
        """
        async with self._login_lock:
            current = self.credentials
            if reason == 'start' and current is not None and not credentials.is_expired(current):
                return current
            await self._authenticate(again=True)
            return self.credentials

    def _core_process(
            self,
            address: str,
            *,
            clusterwide: bool,
            namespaces: Sequence[str | re.Pattern[str]],
            standalone: bool,
    ) -> corep.CoreProcess:
        try:
            binary = corep.find_binary()
        except corep.CoreNotFoundError as e:
            raise OperatorError(str(e)) from e
        argv = core_argv(binary=binary, address=address, settings=self.settings,
                         clusterwide=clusterwide, namespaces=namespaces, standalone=standalone)
        env = dict(os.environ)
        env.setdefault('OPERON_LOG', corelogs.core_filter())  # an explicit OPERON_LOG wins.
        if self.custom_login:
            argv.append('--login')
        return corep.CoreProcess(argv, env=env, on_line=corelogs.forward)


def _ultimate_termination(timeout: float | None) -> None:
    """
    Kopf's ``ultimate_termination``: SIGKILL this process ``timeout`` seconds after a stop signal,
    whatever its stopping routines still wait for (a sync handler's thread cannot be cancelled).
    A daemon thread's timer, so that it fires even while the event loop waits for the executor's
    threads (``asyncio.run``'s shutdown); ``run()`` cancels it once its loop is closed, as Kopf's
    timer dies with its loop.
    """
    if timeout is None:
        return
    timer = threading.Timer(timeout, os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
    _ULTIMATE_TIMERS.append(timer)


# The armed ultimate-termination timers; `run()` cancels them once its loop is closed.
_ULTIMATE_TIMERS: list[threading.Timer] = []


def storage_prefix(settings: settings_.OperatorSettings) -> str:
    """
    The core's ``--prefix``: the first annotations prefix of the progress storage, else of the
    diff-base storage, else Kopf's. (The storages' own prefixes are in their specs; the core
    uses this one for what is its own, such as the finalizers of its tasks.)
    """
    persistence = settings.persistence
    found = storages.first_prefix(persistence.progress_storage, persistence.diffbase_storage)
    return found if found is not None else storages.KOPF_PREFIX


def storage_options(settings: settings_.OperatorSettings) -> list[str]:
    """
    ``--progress-storage SPEC --diffbase-storage SPEC``: the storages of the settings, always
    explicit (Kopf's defaults too), so that the core does what the operator has set.

    # Errors
    :class:`OperatorError` for a storage that the core cannot be given: a custom one (a subclass
    that overrides Kopf's storage methods), naming its class, or a malformed option.
    """
    persistence = settings.persistence
    try:
        progress = storages.progress_spec(persistence.progress_storage)
        diffbase = storages.diffbase_spec(persistence.diffbase_storage)
    except (storages.CustomStorageError, ValueError, TypeError, AttributeError) as e:
        raise OperatorError(f"The storages cannot be given to the Operon core: {e}.") from e
    return ['--progress-storage', storages.core_option(progress),
            '--diffbase-storage', storages.core_option(diffbase)]


def core_argv(
        *,
        binary: str,
        address: str,
        settings: settings_.OperatorSettings,
        clusterwide: bool,
        namespaces: Sequence[str | re.Pattern[str]],
        standalone: bool,
        http: str | None = None,
) -> list[str]:
    """ The core's command line for this operator's settings. """
    http = http or os.environ.get(corep.ENV_HTTP) or f'127.0.0.1:{corep.free_port()}'
    argv = [binary, '--log-format', 'json', 'run', '--handler', f'http://{address}']
    if clusterwide:
        argv += ['-A']
    for ns in namespaces:
        argv += ['--namespace-regex', regex_for_core(ns)] if isinstance(ns, re.Pattern) else ['-n', ns]
    argv += ['--http', http]
    if standalone:
        argv += ['--standalone']
    argv += ['--prefix', storage_prefix(settings)]
    argv += storage_options(settings)
    argv += ['--finalizer', settings.persistence.finalizer]
    argv += ['--default-backoff', _seconds(settings.execution.default_backoff)]
    argv += ['--consistency-timeout', _seconds(settings.persistence.consistency_timeout)]
    if settings.queueing.worker_limit:
        argv += ['--workers', str(int(settings.queueing.worker_limit))]
    if settings.watching.inactivity_timeout != settings_.WatchingSettings().inactivity_timeout:
        argv += ['--watch-silence-timeout', _seconds(settings.watching.inactivity_timeout)]
    try:
        argv += admission_options(settings.admission.server, settings.admission.managed)
    except settings_.WebhookNotSupportedError as e:
        raise OperatorError(str(e)) from e
    return argv


def admission_options(server: Any, managed: str | None) -> list[str]:
    """
    The core's admission options for ``settings.admission.server`` and ``.managed``: the
    server's own (:class:`settings_.AdmissionServer`, e.g. ``kopf.WebhookServer``), and
    ``--admission-managed``.

    # Errors
    :class:`settings_.WebhookNotSupportedError` for a tunnel, a custom server, or ``managed``
    without a server.
    """
    if server is None:
        if managed:
            raise settings_.WebhookNotSupportedError(
                f"settings.admission.managed={managed!r} needs settings.admission.server: the core "
                f"must serve the webhooks that the configurations point to.")
        return []
    if isinstance(server, type) or not isinstance(server, settings_.AdmissionServer):
        raise settings_.WebhookNotSupportedError(
            f"settings.admission.server={server!r} is not supported on Operon: the core serves the "
            f"admission webhooks itself; use kopf.WebhookServer & co. to say how.")
    options = server.core_options()
    if managed:
        options += ['--admission-managed', managed]
    return options


_REGEX_FLAGS = ((re.IGNORECASE, 'i'), (re.MULTILINE, 'm'), (re.DOTALL, 's'), (re.VERBOSE, 'x'))


def regex_for_core(pattern: re.Pattern[str]) -> str:
    """
    A Python regular expression (Kopf's ``namespaces=[re.compile(...)]``) for the core's
    ``--namespace-regex``, its flags inline. The core matches whole names (Python's
    ``fullmatch``) with Rust's ``regex`` syntax, which has the common constructs but no
    look-around or back-references: the core refuses those at start, naming the expression.
    """
    if isinstance(pattern.pattern, bytes):
        raise TypeError(f"A namespace regular expression must be of str, not bytes: {pattern!r}.")
    flags = ''.join(letter for flag, letter in _REGEX_FLAGS if pattern.flags & flag)
    return f'(?{flags}){pattern.pattern}' if flags else pattern.pattern


_KOPF_INTERNALS = {
    'indexers': "it is Kopf's own container of indexes; there is none to pass in on Operon",
    'memories': "it is Kopf's own memory of the objects; the core keeps the objects' state",
    'insights': "it is Kopf's own view of the cluster; the core resolves the resources",
    'identity': "it is a peering identity; " + settings_.NO_PEERING,
    'vault': "it is Kopf's own credentials vault; on Operon the credentials come from "
             "@kopf.on.login handlers or the kubeconfig",
    'peering_name': settings_.NO_PEERING,
    'priority': settings_.NO_PEERING,
}


def refuse_kopf_internals(function: str, **given: object) -> None:
    """
    Refuse the arguments of ``kopf.run()`` & co. that Operon cannot honour, when they are given.

    # Errors
    :class:`NotImplementedError` naming the first such argument and why.
    """
    for name, value in given.items():
        if value is not None:
            raise NotImplementedError(f"{function}({name}={value!r}) is not supported on Operon: "
                                      f"{_KOPF_INTERNALS[name]}.")


def _seconds(value: float) -> str:
    return repr(float(value))


def _service_name() -> str:
    return f'kopf (pid {os.getpid()})'


async def spawn_tasks(**kwargs: Any) -> list[asyncio.Task[None]]:
    """ Kopf's manual orchestration: here, one task that runs the whole operator. """
    refuse_kopf_internals('kopf.spawn_tasks', **{key: kwargs.get(key) for key in _KOPF_INTERNALS})
    return [asyncio.create_task(operator(**kwargs), name='kopf operator')]


async def run_tasks(
        root_tasks: Collection[asyncio.Task[Any]],
        *,
        ignored: Collection[asyncio.Task[Any]] = frozenset(),
) -> None:
    """ Await the tasks of :func:`spawn_tasks`; re-raise their errors. """
    for task in root_tasks:
        await task


__all__ = ['run', 'operator', 'serve', 'spawn_tasks', 'run_tasks', 'OperatorError',
           'core_argv', 'storage_prefix', 'storage_options', 'refuse_kopf_internals']
