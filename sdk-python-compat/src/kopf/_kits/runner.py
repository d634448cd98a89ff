"""
``kopf.testing.KopfRunner``: run ``kopf run …`` in a thread, next to the tests, as Kopf does.

The command runs the real CLI (:func:`kopf.cli.execute`) in a thread with its own event loop;
the ``with`` block's end sets the stop-flag and waits for the operator to stop (the core too).
The output of the command (its stdout and stderr, incl. the log lines of the handlers and of
the core) is captured; ``output``, ``stdout``, ``stderr``, ``exit_code``, ``exception`` are as
in Click's ``Result``, which Kopf's runner proxies.

# Caveats
Like Click's runner, it replaces ``sys.stdout``/``sys.stderr`` process-wide while it runs.
"""
import asyncio
import concurrent.futures
import contextlib
import io
import os
import sys
import threading
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, TextIO, cast

from kopf import cli
from kopf._cogs import settings as settings_
from kopf._core import registry as registries

_ExcType = BaseException
_ExcInfo = tuple[type[_ExcType], _ExcType, types.TracebackType]


class _Capture:
    """ Both streams, separately and interleaved (Click's ``output``). """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.output: list[str] = []


class _CapturingStream(io.TextIOBase):
    encoding = 'utf-8'

    def __init__(self, capture: _Capture, which: Literal['stdout', 'stderr']) -> None:
        super().__init__()
        self._capture = capture
        self._which = which

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self._capture.lock:
            getattr(self._capture, self._which).append(s)
            self._capture.output.append(s)
        return len(s)

    def flush(self) -> None:
        pass


class Result:
    """ The result of one command, as Click's ``click.testing.Result``. """

    def __init__(
            self,
            *,
            capture: _Capture,
            exit_code: int,
            exception: BaseException | None,
            exc_info: _ExcInfo | None,
    ) -> None:
        super().__init__()
        self._capture = capture
        self.exit_code = exit_code
        self.exception = exception
        self.exc_info = exc_info

    @property
    def output(self) -> str:
        with self._capture.lock:
            return ''.join(self._capture.output)

    @property
    def stdout(self) -> str:
        with self._capture.lock:
            return ''.join(self._capture.stdout)

    @property
    def stderr(self) -> str:
        with self._capture.lock:
            return ''.join(self._capture.stderr)

    @property
    def stdout_bytes(self) -> bytes:
        return self.stdout.encode('utf-8')

    @property
    def stderr_bytes(self) -> bytes:
        return self.stderr.encode('utf-8')

    def __repr__(self) -> str:
        status = repr(self.exception) if self.exception else 'okay'
        return f"<Result {status}>"


ResultFuture = concurrent.futures.Future  # of Result


@contextlib.contextmanager
def _isolation(capture: _Capture, env: Mapping[str, str | None] | None) -> Iterator[None]:
    old_stdout, old_stderr = sys.stdout, sys.stderr
    old_env: dict[str, str | None] = {}
    sys.stdout = cast(TextIO, _CapturingStream(capture, 'stdout'))
    sys.stderr = cast(TextIO, _CapturingStream(capture, 'stderr'))
    try:
        for key, value in (env or {}).items():
            old_env[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.stdout, sys.stderr = old_stdout, old_stderr


class KopfRunner:
    """
    Runs a Kopf-based operator next to the tests, for the duration of a ``with`` block::

        from kopf.testing import KopfRunner

        def test_operator():
            with KopfRunner(['run', '-A', '--verbose', 'examples/01-minimal/example.py']) as runner:
                time.sleep(3)  # the operator handles things meanwhile
            assert runner.exit_code == 0
            assert runner.exception is None
            assert 'And here we are!' in runner.output

    The command line comes first; ``env={…}`` sets environment variables for the run; the
    remaining Click-specific arguments are accepted and ignored. ``reraise`` (default): an
    exception of the operator is raised at the block's end.
    """

    def __init__(self, *args: Any, reraise: bool = True, timeout: float | None = None,
                 registry: registries.OperatorRegistry | None = None,
                 settings: settings_.OperatorSettings | None = None, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs
        self.reraise, self.timeout = reraise, timeout
        self.registry, self.settings = registry, settings
        self._stop_requested = threading.Event()
        self._loop_ready = threading.Event()
        self._outcome: 'concurrent.futures.Future[Result]' = concurrent.futures.Future()
        self._worker = threading.Thread(target=self._run_in_thread, name='KopfRunner')

    def __enter__(self) -> 'KopfRunner':
        self._worker.start()
        self._loop_ready.wait()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: types.TracebackType | None) -> Literal[False]:
        self._stop_requested.set()  # the operator (and its core) stop; wait for that.
        self._worker.join(timeout=self.timeout)
        if self._worker.is_alive():
            raise Exception("The operator didn't stop, still running.")
        problem = self._outcome.exception()
        if problem is None and self.reraise:
            problem = self._outcome.result().exception
        if problem is not None:
            raise problem from exc_val
        return False

    def _command_line(self) -> Sequence[str]:
        given = self.args[0] if self.args else self.kwargs.get('args', ())
        if isinstance(given, str):
            import shlex
            return shlex.split(given)
        return [str(word) for word in given or ()]

    def _run_in_thread(self) -> None:
        loop = asyncio.new_event_loop()  # this thread's own loop for the operator
        asyncio.set_event_loop(loop)
        self._loop_ready.set()
        capture = _Capture()
        failure: BaseException | None = None
        failure_info: _ExcInfo | None = None
        try:
            controls = cli.CLIControls(registry=self.registry, settings=self.settings,
                                       stop_flag=self._stop_requested, loop=loop)
            with _isolation(capture, self.kwargs.get('env')):
                try:
                    cli.execute(self._command_line(), controls)
                except SystemExit as e:
                    if cli.exit_code(e) != 0:
                        failure, failure_info = e, cast(_ExcInfo, sys.exc_info())
                except BaseException as e:
                    failure, failure_info = e, cast(_ExcInfo, sys.exc_info())
                    print(cli.explain(e), file=sys.stderr)
            self._outcome.set_result(Result(capture=capture, exit_code=cli.exit_code(failure),
                                            exception=failure, exc_info=failure_info))
        except BaseException as e:
            self._outcome.set_exception(e)
        finally:
            for finish in (loop.shutdown_asyncgens, loop.shutdown_default_executor):
                with contextlib.suppress(Exception):
                    loop.run_until_complete(finish())
            loop.close()

    @property
    def future(self) -> 'concurrent.futures.Future[Result]':
        return self._outcome

    def _result(self) -> Result:
        return self._outcome.result()

    output = property(lambda self: self._result().output)
    stdout = property(lambda self: self._result().stdout)
    stderr = property(lambda self: self._result().stderr)
    stdout_bytes = property(lambda self: self._result().stdout_bytes)
    stderr_bytes = property(lambda self: self._result().stderr_bytes or b'')
    exit_code = property(lambda self: self._result().exit_code)
    exception = property(lambda self: self._result().exception)
    exc_info = property(lambda self: self._result().exc_info)
