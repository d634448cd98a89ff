"""Process-level helpers: stop/ready flags of any kind, and loading the operator's code."""
from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

Flag = asyncio.Future[Any] | asyncio.Event | concurrent.futures.Future[Any] | threading.Event


async def wait_flag(flag: Flag | None) -> Any:
    """Wait until the flag is raised; the result of a future flag is returned."""
    if flag is None:
        return None
    if isinstance(flag, asyncio.Future):
        return await flag
    if isinstance(flag, asyncio.Event):
        return await flag.wait()
    if isinstance(flag, (concurrent.futures.Future, threading.Event)):
        blocking = flag.result if isinstance(flag, concurrent.futures.Future) else flag.wait
        return await asyncio.get_running_loop().run_in_executor(None, blocking)
    raise TypeError(f"A flag must be an event or a future (asyncio or threading), got {flag!r}.")


async def raise_flag(flag: Flag | None) -> None:
    """Raise the flag (a future gets ``None`` as its result), if not raised yet."""
    if flag is None:
        return
    if isinstance(flag, (asyncio.Event, threading.Event)):
        flag.set()
    elif isinstance(flag, (asyncio.Future, concurrent.futures.Future)):
        if not flag.done():
            flag.set_result(None)
    else:
        raise TypeError(f"A flag must be an event or a future (asyncio or threading), got {flag!r}.")


def check_flag(flag: Flag | None) -> bool | None:
    """Whether the flag is raised now (``None`` if there is no flag)."""
    if flag is None:
        return None
    if isinstance(flag, (asyncio.Event, threading.Event)):
        return flag.is_set()
    if isinstance(flag, (asyncio.Future, concurrent.futures.Future)):
        return flag.done()
    raise TypeError(f"A flag must be an event or a future (asyncio or threading), got {flag!r}.")


_loaded_names: list[str] = []


def operator_name() -> str:
    """
    The operator's name, for its traces' ``service.name`` and its manifest: the first file's name
    without ``.py`` (``kopf run handlers.py`` → ``handlers``) or the first module's name
    (``-m my.operator``) of :func:`import_operator_code`, else the running script's, else ``kopf``.
    """
    if _loaded_names:
        return _loaded_names[0]
    script = os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ''))[0]
    return script if script and script not in {'kopf', '__main__', '-c', 'pytest'} else 'kopf'


def import_operator_code(paths: Iterable[str], modules: Iterable[str]) -> None:
    """
    Import the operator's files (each file's folder goes first on ``sys.path``, so that its
    siblings are importable) and modules; their decorators fill the default registry.
    """
    paths, modules = list(paths), list(modules)
    _loaded_names[:] = [os.path.splitext(os.path.basename(p))[0] for p in paths] + modules
    for number, path in enumerate(paths):
        sys.path.insert(0, os.path.abspath(os.path.dirname(path)))
        module_name = f'__kopf_script_{number}__{path}'
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"Failed loading {path}: no module or loader.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    for module_name in modules:
        importlib.import_module(module_name)
