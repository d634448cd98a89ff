"""
Kopf's ``kopf._cogs.structs.credentials`` by name: :class:`ConnectionInfo` & co. (from
:mod:`kopf._cogs.credentials`), plus a minimal keyed store of them, the :class:`Vault`, for code
that builds one. The Operon core itself connects with a kubeconfig (see :mod:`kopf._cogs.credentials`).
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import NewType

from kopf._cogs.credentials import AccessError, ConnectionInfo, LoginError

VaultKey = NewType('VaultKey', str)


@dataclasses.dataclass
class VaultItem:
    """An entry of the vault: one connection's credentials."""
    info: ConnectionInfo


class Vault:
    """ConnectionInfos by key; :meth:`select` picks the one of the highest priority."""

    def __init__(self, __src: Mapping[str, ConnectionInfo] | None = None) -> None:
        self._guard = asyncio.Condition()  # Kopf's waiting for (re-)authentication; not used here
        self._items = {VaultKey(str(k)): VaultItem(info=v) for k, v in (__src or {}).items()}

    def populate(self, __src: Mapping[str, ConnectionInfo]) -> None:
        self._items.update({VaultKey(str(k)): VaultItem(info=v) for k, v in __src.items()})

    def select(self) -> tuple[VaultKey, VaultItem]:
        if not self._items:
            raise LoginError("No credentials are in the vault (install an API client library "
                             "or add a login handler).")
        return max(self._items.items(), key=lambda kv: kv[1].info.priority)

    async def __aiter__(self) -> AsyncIterator[tuple[VaultKey, ConnectionInfo]]:
        for key, item in list(self._items.items()):
            yield key, item.info

    async def close(self) -> None:
        self._items = {}


__all__ = ['AccessError', 'ConnectionInfo', 'LoginError', 'Vault', 'VaultItem', 'VaultKey']
