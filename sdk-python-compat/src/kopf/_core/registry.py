"""
The operator's registry: every handler the decorators register, in the order of registration.

There is one default registry per process (the decorators use it unless given ``registry=``).
It starts with Kopf's implicit login handlers for the client libraries that are installed; they
are used only when the operator has no ``@kopf.on.login`` handlers of its own.
"""
from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator
from typing import Any

from kopf._cogs import credentials
from kopf._core import model


def callable_id(fn: Callable[..., Any] | None) -> str:
    """A stable id of a function: its qualified name (lambdas: their file and line)."""
    if fn is None:
        raise ValueError("Cannot build a persistent id of None.")
    if isinstance(fn, functools.partial):
        return callable_id(fn.func)
    inner = getattr(fn, '__wrapped__', None)
    if inner is not None:
        return callable_id(inner)
    if isinstance(fn, types.FunctionType) and fn.__name__ == '<lambda>':
        return f'lambda:{fn.__code__.co_filename}:{fn.__code__.co_firstlineno}'
    if isinstance(fn, (types.FunctionType, types.MethodType)):
        return str(getattr(fn, '__qualname__', None) or getattr(fn, '__name__', None) or repr(fn))
    raise ValueError(f"Cannot get id of {fn!r}.")


def generate_id(fn: Callable[..., Any] | None, id: str | None,
                prefix: str | None = None, suffix: str | None = None) -> str:
    """Kopf's handler ids: ``[prefix/]<id or function name>[/suffix]``."""
    parts = [prefix or None, id if id is not None else callable_id(fn), suffix or None]
    return '/'.join(part for part in parts if part)


class OperatorRegistry:
    """All handlers of an operator (or, for sub-handlers, of one parent's call)."""

    def __init__(self) -> None:
        self.handlers: list[model.Handler] = []

    def append(self, handler: model.Handler) -> None:
        self.handlers.append(handler)

    def __iter__(self) -> Iterator[model.Handler]:
        return iter(list(self.handlers))

    def of_kinds(self, *kinds: str) -> list[model.Handler]:
        return [handler for handler in self.handlers if handler.kind in kinds]

    def activity_handlers(self, activity: model.Activity) -> list[model.Handler]:
        """The operator's own handlers of an activity; else, the implicit fallbacks."""
        found = [h for h in self.handlers if h.activity == activity]
        own = [h for h in found if not h.fallback]
        return own if own else found

    def has_activity_handlers(self, activity: model.Activity) -> bool:
        return any(h.activity == activity and not h.fallback for h in self.handlers)


class SmartOperatorRegistry(OperatorRegistry):
    """The default registry: with Kopf's implicit logins of the installed client libraries."""

    def __init__(self) -> None:
        super().__init__()
        implicit: list[tuple[str, Callable[..., Any]]] = []
        if credentials.installed('pykube'):
            implicit.append(('login_via_pykube', credentials.login_via_pykube))
        if credentials.installed('kubernetes'):
            implicit.append(('login_via_client', credentials.login_via_client))
        elif credentials.installed('kubernetes_asyncio'):
            implicit.append(('login_via_async_client', credentials.login_via_async_client))
        for handler_id, fn in implicit:
            self.append(model.Handler(fn=fn, id=handler_id, kind='login',
                                      errors=model.ErrorsMode.IGNORED, fallback=True))


_default: OperatorRegistry | None = None


def get_default_registry() -> OperatorRegistry:
    global _default
    if _default is None:
        _default = SmartOperatorRegistry()
    return _default


def set_default_registry(registry: OperatorRegistry) -> None:
    global _default
    _default = registry
