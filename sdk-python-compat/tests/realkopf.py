"""
Kopf 1.45.2 itself, from PyPI, in a venv of its own --- for the tests that compare with it.

The venv is ``~/.cache/operon/venv-kopf`` (``$OPERON_CACHE/venv-kopf``; ``tests/run.sh`` creates it
in CI), or ``$OPERON_KOPF_VENV``; it is created and Kopf installed into it when missing.
"""
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

KOPF_VERSION = '1.45.2'
KOPF_VENV = pathlib.Path(
    os.environ.get('OPERON_KOPF_VENV')
    or pathlib.Path(os.environ.get('OPERON_CACHE', pathlib.Path.home() / '.cache' / 'operon')) / 'venv-kopf')


class KopfUnavailable(Exception):
    """ Kopf is not in its venv and cannot be installed there; the message says why. """


def kopf_venv() -> pathlib.Path:
    """
    The venv's ``bin`` folder, with Kopf 1.45.2 installed (installed now if it is not).

    # Errors
    :class:`KopfUnavailable` if it is not there and cannot be installed (no network, no venv module).
    """
    python = KOPF_VENV / 'bin' / 'python'
    check = [str(python), '-c', "import importlib.metadata as m; print(m.version('kopf'))"]
    installed = python.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip()
    if installed != KOPF_VERSION:
        try:
            if not python.exists():
                subprocess.run([sys.executable, '-m', 'venv', str(KOPF_VENV)], check=True,
                               capture_output=True, timeout=120)
            subprocess.run([str(python), '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                            f'kopf=={KOPF_VERSION}'], check=True, capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            raise KopfUnavailable(f"Kopf {KOPF_VERSION} is not available in {KOPF_VENV} "
                                  f"and cannot be installed: {e}") from e
    return KOPF_VENV / 'bin'


class Operator:
    """ One runtime's ``kopf run`` (Kopf's or ours) as a process, its output in a file. """

    def __init__(self, runtime: str, argv: Sequence[str], env: Mapping[str, str], log: pathlib.Path) -> None:
        self.runtime = runtime
        self.log = log
        self._file = open(log, 'w', encoding='utf-8')
        self.process = subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL,
                                        stdout=self._file, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(encoding='utf-8', errors='replace')

    def tail(self, lines: int = 50) -> str:
        return '\n'.join(self.output().splitlines()[-lines:])

    def mark(self) -> int:
        """ Where the output is now: lines after it are new. """
        return len(self.output())

    def wait_for(self, text: str, *, since: int, timeout: float = 60) -> str:
        """ The first new line with ``text``. """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output()[since:].splitlines():
                if text in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{self.runtime}: {text!r} is not logged within {timeout} s "
                             f"(exit code {self.process.poll()}):\n{self.tail()}")

    def stop(self) -> int:
        """ SIGTERM, as Kubernetes stops a pod: both runtimes stop gracefully on it. """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.runtime} did not stop within 60 s:\n{self.tail()}")
        finally:
            self._file.close()
