"""
Running an operator: Kopf's ``kopf.run()`` / ``kopf.operator()``, on Operon.

An operator here is two processes: this one serves the handlers over gRPC (and runs the
activities: login, startup, cleanup, probes), and the Operon core (``operon``), started as a
child, watches the cluster, calls the handlers, and takes part in Kopf's peering (the options
and ``settings.peering`` as Kopf reads them become the core's ``--peering`` & co.:
:func:`peering_options`). Both stop together: on SIGINT/SIGTERM or the
stop-flag, the core is stopped first (it finishes the cycles in flight), then the handler
service, then the cleanup handlers run. If the core dies, the operator stops with an error.

``serve()`` is the same without the core: only the handler service, on a given address, for
a core that runs elsewhere (a sidecar, another Deployment). ``touch_peering()`` is ``kopf freeze``
and ``kopf resume``: the login handlers, then one peer record written or removed.

The handler server answers the standard gRPC health service (``grpc.health.v1.Health``): NOT_SERVING
while the operator starts, SERVING once the startup handlers have run and the handlers are served,
NOT_SERVING from the stop request on, while it drains (see :mod:`kopf._transport.health`). With
``health_listen``, a second, plaintext listener serves the health service alone, from the very
start, for the kubelet's ``grpc:`` probes.
"""
import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import threading
import warnings
from collections.abc import Collection, Coroutine, Sequence
from typing import Any

from kopf._cogs import credentials, kubeapi, process, refs, settings as settings_, storages, views
from kopf._core import activities, indexing, model, peering, posting, registry as registries
from kopf._core.reactor import handling, manifests
from kopf._transport import core as corep
from kopf._transport import corelogs, health as healthp, server, tracing

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
        health_listen: str | None = None,
) -> None:
    """
    Run the whole operator synchronously: the handler service and the Operon core.

    If the loop is not specified, the operator runs in a new event loop (``asyncio.run``).
    ``health_listen`` (Operon's, not Kopf's): see :func:`operator`.
    """
    refuse_kopf_internals('kopf.run', indexers=indexers, memories=memories, insights=insights,
                          vault=vault)
    coro = operator(
        lifecycle=lifecycle, indexers=indexers, registry=registry, settings=settings,
        memories=memories, insights=insights, identity=identity, standalone=standalone,
        priority=priority, peering_name=peering_name, liveness_endpoint=liveness_endpoint,
        clusterwide=clusterwide, namespaces=namespaces, namespace=namespace,
        stop_flag=stop_flag, ready_flag=ready_flag, vault=vault, memo=memo, _command=_command,
        health_listen=health_listen,
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
        health_listen: str | None = None,
) -> None:
    """
    Run the whole operator asynchronously: the handler service and the Operon core.

    ``health_listen`` (``HOST:PORT``; Operon's, not Kopf's): also serve the gRPC health service
    alone there, in plaintext, from the start on (for the kubelet's ``grpc:`` probes; the handler
    server itself listens on a free port of the loopback).

    # Errors
    :class:`OperatorError` if the core cannot be found or started, or exits unexpectedly;
    :class:`kopf._core.engines.activities.ActivityError` if the startup handlers fail.

    :class:`NotImplementedError` for Kopf's internals (``indexers``, ``memories``, ``insights``,
    ``vault``) and its private ``_command``, when given; :class:`OperatorError` when the
    settings, as the startup handlers left them, ask for what Operon does not do (see
    :func:`kopf._cogs.settings.audit`), or for a peering the core cannot do (see
    :func:`peering_options`).

    The peering, as in Kopf: ``peering_name`` sets ``settings.peering.name`` and makes the peering
    mandatory; ``standalone`` and ``priority`` set theirs; ``settings.peering.clusterwide`` follows
    ``clusterwide``; ``identity`` is the operator's in the peering (Kopf's by default: ``$POD_ID``,
    else ``user@host/time/random``). The startup handlers may change the settings after that; the
    core is given what they leave.
    """
    if _command is not None:
        _command.close()
        raise NotImplementedError("kopf.operator(_command=…) is not supported on Operon: it is Kopf's "
                                  "private hook for its CLI's commands; `kopf freeze`/`kopf resume` "
                                  "are done without it.")
    refuse_kopf_internals('kopf.operator', indexers=indexers, memories=memories, insights=insights,
                          vault=vault)
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

    # Kopf's mapping of the options into the settings (its `spawn_tasks`), before the startup handlers.
    settings = settings if settings is not None else settings_.OperatorSettings()
    settings.peering.clusterwide = clusterwide
    if peering_name is not None:
        settings.peering.mandatory = True
        settings.peering.name = peering_name
    if standalone is not None:
        settings.peering.standalone = standalone
    if priority is not None:
        settings.peering.priority = priority
    identity = str(identity) if identity is not None else peering.detect_own_id(manual=False)

    async with _Operator(
        lifecycle=lifecycle, registry=registry, settings=settings, memo=memo,
        liveness_endpoint=liveness_endpoint, stop_flag=stop_flag, ready_flag=ready_flag,
        health_listen=health_listen,
    ) as op:
        await op.run(core_args=dict(clusterwide=clusterwide, namespaces=list(namespaces), identity=identity))


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
        health_listen: str | None = None,
) -> None:
    """
    Serve the handlers only (no core) on ``listen`` (``HOST:PORT``), until stopped.

    ``health_listen`` (``HOST:PORT``): also serve the gRPC health service alone there, in
    plaintext, from the start on — for the kubelet's ``grpc:`` probes, which reach neither a
    loopback ``listen`` nor one with ``tls``.
    """
    async with _Operator(
        lifecycle=lifecycle, registry=registry, settings=settings, memo=memo,
        liveness_endpoint=liveness_endpoint, stop_flag=stop_flag, ready_flag=ready_flag,
        listen=listen, tls=tls, health_listen=health_listen,
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
            health_listen: str | None = None,
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
        self.health_listen = health_listen
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
        # The health service tells the phases from the first moment on: a probe of a starting
        # operator (login and startup handlers may take long) sees NOT_SERVING, not a refused port.
        health = await healthp.Health.starting()
        health_server = healthp.HealthServer(health, self.health_listen) if self.health_listen else None
        if health_server is not None:
            try:
                await health_server.start()
            except (OSError, RuntimeError) as e:  # grpc: RuntimeError("Failed to bind to address …")
                raise OperatorError(f"Cannot serve the health service on {self.health_listen}: {e}") from e
            logger.debug(f"Serving the health service at {health_server.address} (grpc.health.v1, plaintext).")
        try:
            await self._run(core_args=core_args, stopping=stopping, health=health)
        finally:
            if health_server is not None:
                await health_server.stop(grace=None)

    async def _run(self, *, core_args: dict[str, Any] | None, stopping: asyncio.Future[str],
                   health: healthp.Health) -> None:
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
        if tracing.setup(process.operator_name()):
            logger.debug("Tracing handler runs over OTLP (OpenTelemetry).")
        grpc_server = server.HandlerServer(backend, self.listen, tls=self.tls, health=health)
        await grpc_server.start()
        await health.enter(healthp.Phase.SERVING)
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
            # Draining: NOT_SERVING for good, while the core finishes its cycles and the handler
            # server its calls (a probe or the core sees it before the server goes away).
            await health.enter(healthp.Phase.DRAINING)
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
            identity: str,
    ) -> corep.CoreProcess:
        try:
            binary = corep.find_binary()
        except corep.CoreNotFoundError as e:
            raise OperatorError(str(e)) from e
        argv = core_argv(binary=binary, address=address, settings=self.settings,
                         clusterwide=clusterwide, namespaces=namespaces, identity=identity)
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
        identity: str,
        http: str | None = None,
) -> list[str]:
    """
    The core's command line for this operator's settings.

    # Errors
    :class:`OperatorError` for what the core cannot be given: a custom storage, an admission
    server it cannot be, a peering it cannot do (:func:`peering_options`).
    """
    http = http or os.environ.get(corep.ENV_HTTP) or f'127.0.0.1:{corep.free_port()}'
    argv = [binary, '--log-format', 'json', 'run', '--handler', f'http://{address}']
    if clusterwide:
        argv += ['-A']
    for ns in namespaces:
        argv += ['--namespace-regex', regex_for_core(ns)] if isinstance(ns, re.Pattern) else ['-n', ns]
    argv += ['--http', http]
    argv += peering_options(settings, clusterwide=clusterwide, namespaces=namespaces, identity=identity)
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


def peering_options(
        settings: settings_.OperatorSettings,
        *,
        clusterwide: bool,
        namespaces: Sequence[str | re.Pattern[str]] = (),
        identity: str,
) -> list[str]:
    """
    The core's peering options from ``settings.peering``, as Kopf 1.45.2 decides from them (after
    ``kopf run``'s and ``kopf.run()``'s options are mapped into them, and the startup handlers ran):

    - ``standalone``: ``--standalone`` (no peering, and no leader election either);
    - else ``--peering NAME`` (Kopf's default: ``default``, auto-detected), ``--peering-mandatory``
      when ``mandatory`` (``--peering NAME`` in Kopf sets it: the core stays paused while the
      peering CRD is missing; without it, the core runs standalone with a warning then),
      ``--priority``, ``--peering-lifetime``, ``--peering-stealth`` when ``stealth``, and
      ``--identity`` (Kopf's identity of this operator: :func:`kopf._core.peering.detect_own_id`).

    The peering's scope follows the operator's, as Kopf sets it: ``ClusterKopfPeering`` with
    ``-A``, a ``KopfPeering`` in every served namespace with ``-n``. The core's peering needs the
    namespaces by name: with namespace patterns or regular expressions (where Kopf peers in every
    namespace they match), Kopf's auto-detected peering (all of ``settings.peering`` at Kopf's
    defaults) becomes ``--standalone`` with a warning, and any other peering is refused.

    # Errors
    :class:`OperatorError`, naming the setting: a scope other than the operator's
    (``settings.peering.clusterwide``/``namespaced``: the core's peering follows ``-A``/``-n``);
    ``standalone`` with a mandatory peering (Kopf 1.45.2 stays paused for ever in it: "peering CRD
    is missing"); a peering asked for (any ``settings.peering`` field but ``standalone`` away from
    Kopf's default) with namespace patterns; a name that is not a non-empty string; a priority or
    lifetime that is not an integer, or a lifetime below 1 s.
    """
    options = settings.peering
    if options.standalone:
        if options.mandatory:
            raise OperatorError(
                "settings.peering.standalone=True with settings.peering.mandatory=True (e.g. `kopf run "
                "--standalone --peering NAME`) is not supported on Operon: Kopf 1.45.2 stays paused for "
                "ever in it (\"peering CRD is missing\"); choose either --standalone or a mandatory peering.")
        return ['--standalone']
    if bool(options.clusterwide) != bool(clusterwide):
        what = (f"settings.peering.clusterwide={options.clusterwide!r} (settings.peering.namespaced="
                f"{options.namespaced!r})")
        mode = "cluster-wide (-A)" if clusterwide else "namespaced (-n)"
        raise OperatorError(
            f"{what} is not supported on Operon for a {mode} operator: the core's peering follows the "
            f"operator's scope (ClusterKopfPeering with -A, KopfPeering in the served namespaces with -n); "
            f"leave the setting as Kopf sets it, or run with --standalone.")
    patterns = [ns.pattern if isinstance(ns, re.Pattern) else ns for ns in namespaces
                if isinstance(ns, re.Pattern) or not refs.select_specific_namespaces([ns])]
    if patterns:
        asked = [f"settings.peering.{field.name}={getattr(options, field.name)!r}"
                 for field in dataclasses.fields(options) if field.name not in ('standalone', 'clusterwide')
                 if getattr(options, field.name) != field.default]
        if asked:
            raise OperatorError(
                f"{', '.join(asked)} with the namespace patterns {patterns!r} is not supported on Operon: "
                f"the core's peering needs the namespaces by name (-n NS) or -A (Kopf peers in every "
                f"namespace that the patterns match); name the namespaces, or run with --standalone.")
        logger.warning(f"Kopf's auto-detected peering ({options.name!r}) is not done with the namespace "
                       f"patterns {patterns!r} on Operon: the core's peering needs the namespaces by name "
                       f"(-n NS) or -A; the operator runs standalone (say --standalone to silence this).")
        return ['--standalone']
    for field, minimum in (('priority', None), ('lifetime', 1)):
        value = getattr(options, field)
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            need = "an integer" if minimum is None else f"an integer of at least {minimum}"
            raise OperatorError(f"settings.peering.{field}={value!r} is not supported on Operon: "
                                f"the core needs {need}.")
    if not isinstance(options.name, str) or not options.name:
        raise OperatorError(f"settings.peering.name={options.name!r} is not supported on Operon: "
                            f"the peering object's name must be a non-empty string.")
    argv = ['--peering', options.name]
    if options.mandatory:
        argv += ['--peering-mandatory']
    argv += ['--priority', str(options.priority), '--peering-lifetime', str(options.lifetime)]
    if options.stealth:
        argv += ['--peering-stealth']
    argv += ['--identity', identity]
    return argv


async def touch_peering(
        *,
        name: str,
        identity: str,
        priority: int,
        lifetime: int,
        clusterwide: bool,
        namespaces: Collection[refs.NamespacePattern],
        registry: registries.OperatorRegistry | None = None,
        settings: settings_.OperatorSettings | None = None,
) -> int:
    """
    ``kopf freeze`` (``lifetime`` > 0) and ``kopf resume`` (``lifetime`` 0), as Kopf runs them: the
    login handlers (Kopf's implicit ones: of ``pykube-ng``/``kubernetes`` when installed), else
    Kopf's rudimentary logins (the pod's service account, the kubeconfig's current context); then
    the peer record of ``identity`` written or removed in the peering objects named ``name``
    (:func:`kopf._core.peering.touch_command`). Returns how many objects were patched.

    # Errors
    :class:`kopf._cogs.credentials.LoginError` without credentials;
    :class:`kopf._core.peering.PeeringError` when the peering CRDs are not installed;
    :class:`kopf._cogs.kubeapi.APIError` when a request fails.
    """
    op = _Operator(lifecycle=None, registry=registry, settings=settings, memo=None,
                   liveness_endpoint=None, stop_flag=None, ready_flag=None)
    await op._authenticate()
    info = op.credentials or credentials.login_with_service_account() or credentials.login_with_kubeconfig()
    if info is None:
        raise credentials.LoginError("Ran out of valid credentials. Consider installing an API client library "
                                     "or adding a login handler. See more: "
                                     "https://docs.kopf.dev/en/stable/authentication/")
    api = kubeapi.APIClient(info)
    touched = await asyncio.to_thread(
        peering.touch_command, api, name=name, identity=identity, priority=priority, lifetime=lifetime,
        clusterwide=clusterwide, namespaces=list(namespaces))
    if not touched:
        where = "cluster-wide" if clusterwide else f"in the namespaces {list(namespaces)!r}"
        logger.warning(f"No peering object {name!r} is found {where}: nothing is "
                       f"{'frozen' if lifetime > 0 else 'resumed'}.")
    return touched


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
    'vault': "it is Kopf's own credentials vault; on Operon the credentials come from "
             "@kopf.on.login handlers or the kubeconfig",
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
    return f'{process.operator_name()} (kopf, pid {os.getpid()})'


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


__all__ = ['run', 'operator', 'serve', 'spawn_tasks', 'run_tasks', 'touch_peering', 'OperatorError',
           'core_argv', 'peering_options', 'storage_prefix', 'storage_options', 'refuse_kopf_internals']
