"""
The Operon core as a child process: found, started, supervised, stopped.

``kopf run`` starts the core next to its handler service, exactly as the core is started by hand::

    operon --log-format json run --handler http://127.0.0.1:PORT -A --http 127.0.0.1:PORT

The core inherits the environment (``KUBECONFIG`` etc.), runs in its own session (so that a
terminal's Ctrl+C reaches only this process, which then stops the core in order), and dies
with this process if this process dies (Linux: ``PR_SET_PDEATHSIG``).
"""
import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

ENV_BINARY = 'OPERON_BIN'
ENV_HTTP = 'OPERON_HTTP'
BINARY_NAME = 'operon'


class CoreNotFoundError(FileNotFoundError):
    """ The ``operon`` binary is neither in ``$OPERON_BIN``, nor in the wheel, nor on ``$PATH``. """


class CoreExitedError(RuntimeError):
    """ The core has exited while it was expected to run. """

    def __init__(self, message: str, *, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def bundled_binary() -> pathlib.Path:
    """ Where a wheel of operon-kopf carries the core (``kopf/_bin/operon``; absent otherwise). """
    return pathlib.Path(__file__).resolve().parent.parent / '_bin' / BINARY_NAME


def find_binary(environ: Mapping[str, str] | None = None, bundled: pathlib.Path | None = None) -> str:
    """
    The core's binary: ``$OPERON_BIN`` if set (an explicit choice wins), else the core that the
    installed wheel carries, else ``operon`` from ``$PATH``.

    # Errors
    :class:`CoreNotFoundError` with a message that says how to fix it.
    """
    environ = os.environ if environ is None else environ
    bundled = bundled_binary() if bundled is None else bundled
    explicit = environ.get(ENV_BINARY)
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise CoreNotFoundError(f"${ENV_BINARY} is set to {explicit!r}, which is not an executable file.")
    if bundled.is_file():
        if not os.access(bundled, os.X_OK):
            raise CoreNotFoundError(f"The Operon core that came with operon-kopf ({bundled}) is not "
                                    f"executable: reinstall the wheel, or set ${ENV_BINARY}.")
        return str(bundled)
    found = shutil.which(BINARY_NAME, path=environ.get('PATH'))
    if found:
        return found
    raise CoreNotFoundError(
        f"The Operon core ({BINARY_NAME!r}) is not found: put it on $PATH "
        f"or set ${ENV_BINARY} to its path (build it with `cargo build -p operon`), or install "
        f"operon-kopf from a wheel, which carries it (`pip wheel ./sdk-python-compat`).")


def describe_binary(environ: Mapping[str, str] | None = None) -> str:
    """ Which core ``kopf run`` would start, and its version, in one line (for ``kopf --version``). """
    try:
        binary = find_binary(environ)
    except CoreNotFoundError as e:
        return f"core: not found ({e})"
    try:
        done = subprocess.run([binary, '--version'], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"core: {binary} does not answer --version ({e})"
    if done.returncode != 0:
        return f"core: {binary} --version exited with {done.returncode}: {done.stderr.strip()}"
    return f"core: {done.stdout.strip()} ({binary})"


def free_port(host: str = '127.0.0.1') -> int:
    """ A port that is free right now (there is a small race until someone binds it). """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith('linux'):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    except OSError:
        return None


# Loaded here, not in the child: between fork & exec, only already-loaded code is safe to call.
_LIBC = _load_libc()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover -- runs in the child between fork & exec.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class CoreProcess:
    """
    One run of the core. Every line of its stderr and stdout goes to ``on_line``.
    """

    def __init__(
            self,
            argv: Sequence[str],
            *,
            on_line: Callable[[str], None],
            env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self._on_line = on_line
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=16 * 1024 * 1024,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self._process.stderr), name='operon core stderr'),
            asyncio.create_task(self._read(self._process.stdout), name='operon core stdout'),
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the limit: skip the rest of it.
                raw = b'(a line of the core is too long to be forwarded)\n'
            if not raw:
                break
            try:
                self._on_line(raw.decode('utf-8', errors='replace'))
            except Exception:  # forwarding must never stop the reading.
                pass

    async def wait(self) -> int:
        """ Until the core exits (and its output is fully forwarded); returns the exit code. """
        if self._process is None:
            raise RuntimeError("The core is not started.")
        code = await self._process.wait()
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def stop(self, timeout: float = 30.0) -> int | None:
        """ SIGTERM (the core finishes the cycles in flight), then SIGKILL after ``timeout``. """
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        return await self.wait()
