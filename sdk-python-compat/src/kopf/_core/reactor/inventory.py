"""
Kopf's ``kopf._core.reactor.inventory``: the in-memory state of the objects. On Operon the core
keeps it (the queue, the "handled once" marks); the handler service keeps only each object's
``memo``. :class:`ResourceMemories` is that, by object uid, for code that builds one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kopf._cogs import views


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
