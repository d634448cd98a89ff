"""
Kopf 1.45.2 itself, from PyPI, in a venv of its own --- for the tests that compare with it.

The venv is ``~/.cache/operon/venv-kopf`` (``$OPERON_CACHE/venv-kopf``; ``tests/run.sh`` creates it
in CI), or ``$OPERON_KOPF_VENV``; it is created and Kopf installed into it when missing.
"""
import os
import pathlib
import subprocess
import sys

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
