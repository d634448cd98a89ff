"""
Kopf's ``kopf._core.reactor.inventory``: the in-memory state of the objects. On Operon the core
keeps it (the queue, the "handled once" marks); the handler service keeps only each object's
``memo`` (:class:`ObjectMemos`). :class:`ResourceMemories` is that, by object uid, for code that
builds one.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from kopf._cogs import views

# How many memos of objects that are gone are still kept, in case a call for them comes after all.
GONE_MEMOS = 10_000


def object_key(body: Mapping[str, Any]) -> str:
    """ An object's uid; for bodies without one, its kind, namespace and name. """
    meta = body.get('metadata') or {}
    return str(meta.get('uid') or repr((body.get('kind'), meta.get('namespace'), meta.get('name'))))


class ObjectMemos:
    """
    The per-object memos of the handler service, as Kopf keeps them: an object's memo is a shallow
    copy of the operator's memo made at the object's first call, and the same memo for all its
    later calls, for as long as the object exists --- however many objects there are.

    When this process learns that an object is gone (:meth:`forget`), its memo is let go: it joins
    the memos of the last :data:`GONE_MEMOS` gone objects, from which it comes back if the object
    is called after all (which the signals of goneness the service gets cannot rule out: e.g. the
    object's other deletion handlers, or the event handlers of its DELETED watch event).
    """

    def __init__(self, *, gone_limit: int = GONE_MEMOS) -> None:
        super().__init__()
        self._live: dict[str, Any] = {}
        self._gone: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._gone_limit = gone_limit

    def __len__(self) -> int:
        return len(self._live)

    def recall(self, body: Mapping[str, Any], base: Any) -> Any:
        """ The object's memo (the gone object's, or a new copy of ``base``). """
        key = object_key(body)
        memo = self._live.get(key)
        if memo is None:
            memo = self._gone.pop(key, None)
            self._live[key] = memo = copy.copy(base) if memo is None else memo
        return memo

    def remembers(self, body: Mapping[str, Any]) -> bool:
        """ Whether the object's memo is kept as that of an existing object. """
        return object_key(body) in self._live

    def forget(self, body: Mapping[str, Any]) -> None:
        """ The object is gone: let its memo go (the oldest of the gone ones go for good). """
        key = object_key(body)
        if key in self._live:
            self._gone[key] = self._live.pop(key)
            while len(self._gone) > self._gone_limit:
                self._gone.popitem(last=False)


@dataclasses.dataclass
class ResourceMemory:
    """What this process remembers of one object: its memo."""
    memo: views.Memo = dataclasses.field(default_factory=views.Memo)


class ResourceMemories:
    """The memories of all objects, by uid (created on first sight, forgotten on request)."""

    def __init__(self) -> None:
        super().__init__()
        self._items: dict[str, ResourceMemory] = {}

    def recall(self, raw_body: Mapping[str, Any], *, memo: Any = None) -> ResourceMemory:
        uid = str((raw_body.get('metadata') or {}).get('uid'))
        if uid not in self._items:
            fresh = ResourceMemory()
            if memo is not None:
                fresh.memo = views.Memo(memo)  # a shallow copy per object, as Kopf makes
            self._items[uid] = fresh
        return self._items[uid]

    def forget(self, raw_body: Mapping[str, Any]) -> None:
        self._items.pop(str((raw_body.get('metadata') or {}).get('uid')), None)


__all__ = ['ResourceMemories', 'ResourceMemory']
