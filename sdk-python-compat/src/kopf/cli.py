"""
The ``kopf`` command line, as Kopf's (``kopf run``), plus ``kopf serve`` for Operon.

``kopf run FILE… [-m MODULE…] [-A | -n NS…] [--standalone | --peering NAME] [--priority N | --dev]
[-v] [-d] [-q] [--log-format …]`` imports the files (each file's folder first on ``sys.path``, as
Kopf does), runs the startup handlers, serves the handlers over gRPC on a free local port, and
starts the Operon core against it, which takes part in Kopf's peering as Kopf would (see
:func:`kopf._core.reactor.running.peering_options`); the core's log lines are forwarded into
Python's logging in Kopf's words.

``kopf serve FILE… --listen HOST:PORT`` only serves the handlers, for a core that runs elsewhere.

Both serve the standard gRPC health service and server reflection beside the handlers
(``grpcurl -plaintext HOST:PORT list``), and with ``--health-listen HOST:PORT`` the health service
alone on a plaintext port of its own, for the kubelet's ``grpc:`` probes (see
:mod:`kopf._transport.health`).

``kopf freeze --peering NAME --lifetime S [--priority N | --dev] [--id ID] [-A | -n NS…]`` and
``kopf resume --peering NAME [--id ID] [-A | -n NS…]`` are Kopf's: they write (or remove) a peer
record in the peering objects, which pauses the operators of a lower priority (or lets them go on).

Exit codes: 0 after a requested stop (SIGINT, SIGTERM, the stop-flag) or a done command; 1 when
the files cannot be loaded, the core cannot be found or exits unexpectedly, the startup handlers
fail, or ``freeze``/``resume`` cannot patch the peering objects; 2 for usage errors.
"""
import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Coroutine, Sequence
from typing import NoReturn

from kopf._cogs import credentials, kubeapi, process, settings as settings_
from kopf._core import activities, logs as loggers, peering, registry as registries
from kopf._core.reactor import running
from kopf._transport import core as corep, server

__version__ = '0.1.0'


@dataclasses.dataclass()
class CLIControls:
    """ :class:`KopfRunner` controls, which are impossible to pass via CLI. """
    ready_flag: process.Flag | None = None
    stop_flag: process.Flag | None = None
    vault: object | None = None
    registry: registries.OperatorRegistry | None = None
    settings: settings_.OperatorSettings | None = None
    loop: asyncio.AbstractEventLoop | None = None


class UsageError(Exception):
    """ A wrong command line (exit code 2). """


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


class _Version(argparse.Action):
    """ ``kopf --version``: this SDK's version, and which core ``kopf run`` would start. """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kwargs.get('help', '')))

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        print(f"kopf (operon-kopf) {__version__}\n{corep.describe_binary()}")
        parser.exit()


def _log_format(value: str) -> loggers.LogFormat:
    try:
        return loggers.LogFormat[value.upper()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from plain, full, json)")


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('-v', '--verbose', action='store_true')
    parser.add_argument('-d', '--debug', action='store_true')
    parser.add_argument('-q', '--quiet', action='store_true')
    parser.add_argument('--log-format', type=_log_format, default=loggers.LogFormat.FULL,
                        metavar='[plain|full|json]')
    parser.add_argument('--log-refkey', type=str)
    parser.add_argument('--log-prefix', dest='log_prefix', action='store_true', default=None)
    parser.add_argument('--no-log-prefix', dest='log_prefix', action='store_false')


def _add_loading_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('-m', '--module', dest='modules', action='append', default=[])
    parser.add_argument('paths', nargs='*')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='kopf', description="Kopf's operators on the Operon runtime.")
    parser.add_argument('--version', action=_Version, help="Print the SDK's and the core's versions.")
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=_Parser)

    run = commands.add_parser('run', help="Start an operator: the handlers and the Operon core.")
    _add_logging_options(run)
    run.add_argument('-A', '--all-namespaces', dest='clusterwide', action='store_true')
    run.add_argument('-n', '--namespace', dest='namespaces', action='append', default=[])
    run.add_argument('--standalone', action='store_true', default=None)
    run.add_argument('--dev', action='store_true')
    run.add_argument('-L', '--liveness', dest='liveness_endpoint', type=str)
    _add_health_option(run)
    run.add_argument('-P', '--peering', dest='peering_name', type=str,
                     default=os.environ.get('KOPF_RUN_PEERING'))
    run.add_argument('-p', '--priority', type=int)
    _add_loading_options(run)

    serve = commands.add_parser('serve', help="Serve the handlers only, for a core that runs elsewhere.")
    _add_logging_options(serve)
    serve.add_argument('--listen', default='0.0.0.0:50051', metavar='HOST:PORT',
                       help="The gRPC address to listen on (default: 0.0.0.0:50051).")
    serve.add_argument('-L', '--liveness', dest='liveness_endpoint', type=str)
    _add_health_option(serve)
    serve.add_argument('--tls-cert', metavar='FILE',
                       help="Serve TLS with this certificate (PEM); needs --tls-key.")
    serve.add_argument('--tls-key', metavar='FILE', help="The private key (PEM) of --tls-cert.")
    serve.add_argument('--tls-client-ca', metavar='FILE',
                       help="Require mutual TLS: clients must present a certificate signed by this CA.")
    _add_loading_options(serve)

    freeze = commands.add_parser('freeze', help="Pause the resource handling in the operator(s).")
    _add_logging_options(freeze)
    _add_peering_command_options(freeze, env='KOPF_FREEZE_PEERING')
    freeze.add_argument('--dev', action='store_true')
    freeze.add_argument('-p', '--priority', type=int, default=100)
    freeze.add_argument('-t', '--lifetime', type=int, required=True)
    freeze.add_argument('-m', '--message', type=str)  # as in Kopf: accepted, not used

    resume = commands.add_parser('resume', help="Resume the resource handling in the operator(s).")
    _add_logging_options(resume)
    _add_peering_command_options(resume, env='KOPF_RESUME_PEERING')
    return parser


def _add_health_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--health-listen', metavar='HOST:PORT',
                        help="Also serve the gRPC health service (grpc.health.v1) alone there, in plaintext, "
                             "from the start on: for Kubernetes' grpc probes (e.g. 0.0.0.0:50052).")


def _add_peering_command_options(parser: argparse.ArgumentParser, *, env: str) -> None:
    parser.add_argument('-n', '--namespace', dest='namespaces', action='append', default=[])
    parser.add_argument('-A', '--all-namespaces', dest='clusterwide', action='store_true')
    parser.add_argument('-i', '--id', type=str, default=None)
    parser.add_argument('-P', '--peering', dest='peering_name', type=str,
                        default=os.environ.get(env) or None, required=not os.environ.get(env))


def _configure_logging(args: argparse.Namespace) -> None:
    loggers.configure(debug=args.debug, verbose=args.verbose, quiet=args.quiet,
                      log_format=args.log_format, log_refkey=args.log_refkey, log_prefix=args.log_prefix)


def _preload(args: argparse.Namespace) -> None:
    if not args.paths and not args.modules:
        raise UsageError("kopf: error: no files or modules with handlers are given (FILE… or -m MODULE).")
    process.import_operator_code(args.paths, args.modules)


def execute(argv: Sequence[str], controls: CLIControls | None = None) -> None:
    """
    Run one command; returns normally for a requested stop, raises otherwise.

    # Errors
    :class:`UsageError` for a bad command line; loading errors of the user's files as they are
    (``SyntaxError``, ``ImportError``…); :class:`kopf._core.reactor.running.OperatorError` when
    the operator cannot run; :class:`kopf._core.activities.ActivityError` when the
    startup handlers fail; for ``freeze``/``resume``, :class:`kopf._core.peering.PeeringError`,
    :class:`kopf._cogs.kubeapi.APIError` or :class:`kopf._cogs.credentials.LoginError` when the
    peering objects cannot be patched.
    """
    controls = controls if controls is not None else CLIControls()
    args = build_parser().parse_args(list(argv))
    if args.command is None:
        raise UsageError("kopf: error: a command is required: run, serve, freeze or resume (see kopf --help).")
    _configure_logging(args)
    if controls.registry is not None:
        registries.set_default_registry(controls.registry)

    coro: Coroutine[None, None, object]
    if args.command == 'run':
        namespaces = list(args.namespaces)
        if os.environ.get('KOPF_RUN_NAMESPACE'):  # legacy for single-namespace mode
            namespaces.append(os.environ['KOPF_RUN_NAMESPACE'])
        if namespaces and args.clusterwide:
            raise UsageError("kopf run: error: either --namespace or --all-namespaces can be used, not both.")
        _preload(args)
        priority = 666 if args.dev else args.priority
        coro = running.operator(
            standalone=args.standalone,
            namespaces=namespaces,
            clusterwide=args.clusterwide,
            priority=priority,
            peering_name=args.peering_name,
            liveness_endpoint=args.liveness_endpoint,
            registry=controls.registry,
            settings=controls.settings,
            stop_flag=controls.stop_flag,
            ready_flag=controls.ready_flag,
            health_listen=args.health_listen,
        )
    elif args.command in ('freeze', 'resume'):
        coro = _peering_command(args, controls)
    else:
        if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
            raise UsageError("kopf serve: error: --tls-cert and --tls-key go together "
                             "(and --tls-client-ca needs them).")
        _preload(args)
        tls = server.ServerTls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
        coro = running.serve(
            listen=args.listen,
            tls=tls,
            liveness_endpoint=args.liveness_endpoint,
            registry=controls.registry,
            settings=controls.settings,
            stop_flag=controls.stop_flag,
            ready_flag=controls.ready_flag,
            health_listen=args.health_listen,
        )
    if controls.loop is not None:
        controls.loop.run_until_complete(coro)
    else:
        asyncio.run(coro)


def _peering_command(args: argparse.Namespace, controls: CLIControls) -> Coroutine[None, None, int]:
    """
    ``kopf freeze`` and ``kopf resume``, as Kopf's: the identity is ``--id``, else ``$POD_ID``, else
    ``user@host``; ``--dev`` is priority 666; resume is a record of lifetime 0 (removed); neither
    ``-A`` nor ``-n`` means cluster-wide, with Kopf's warning.
    """
    if args.namespaces and args.clusterwide:
        raise UsageError(f"kopf {args.command}: error: either --namespace or --all-namespaces can be used, not both.")
    clusterwide = args.clusterwide
    if not clusterwide and not args.namespaces:
        warnings.warn("Absence of either namespaces or cluster-wide flag will become an error soon."
                      " For now, switching to the cluster-wide mode for backward compatibility.",
                      FutureWarning)
        clusterwide = True
    freezing = args.command == 'freeze'
    return running.touch_peering(
        name=args.peering_name,
        identity=args.id or peering.detect_own_id(manual=True),
        priority=(666 if args.dev else args.priority) if freezing else 0,
        lifetime=args.lifetime if freezing else 0,
        clusterwide=clusterwide,
        namespaces=list(args.namespaces),
        registry=controls.registry,
    )


# The errors that stop a command with a message of their own (no traceback).
_EXPLAINED = (UsageError, SyntaxError, ImportError, running.OperatorError, corep.CoreNotFoundError,
              activities.ActivityError, peering.PeeringError, kubeapi.APIError, credentials.LoginError)


def explain(exc: BaseException) -> str:
    """ A one-paragraph message for an error that stops the command. """
    if isinstance(exc, UsageError):
        return str(exc)
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else "the handlers' code"
        return f"kopf: cannot load the handlers: a syntax error in {where}: {exc.msg}"
    if isinstance(exc, ImportError):
        return f"kopf: cannot load the handlers: {type(exc).__name__}: {exc}"
    if isinstance(exc, (running.OperatorError, corep.CoreNotFoundError, peering.PeeringError,
                        kubeapi.APIError, credentials.LoginError)):
        return f"kopf: {exc}"
    if isinstance(exc, activities.ActivityError):
        cause = exc.__cause__
        return f"kopf: the startup handlers have failed: {cause if cause is not None else exc}"
    return f"kopf: {type(exc).__name__}: {exc}"


def exit_code(exc: BaseException | None) -> int:
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 2 if isinstance(exc, UsageError) else 1


def main(argv: Sequence[str] | None = None) -> None:
    """ The ``kopf`` console script. """
    argv = sys.argv[1:] if argv is None else argv
    try:
        execute(argv)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        raise SystemExit(130)
    except BaseException as e:
        if isinstance(e, Exception) and not isinstance(e, _EXPLAINED):
            traceback.print_exc()
        elif isinstance(e, (SyntaxError, ImportError)) and logging.getLogger().isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        print(explain(e), file=sys.stderr)
        raise SystemExit(exit_code(e))


