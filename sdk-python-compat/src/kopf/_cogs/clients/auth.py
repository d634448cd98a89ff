"""Kopf's ``kopf._cogs.clients.auth`` by name: on Operon, the core owns the API connection."""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from kopf._cogs.structs import credentials

vault_var: ContextVar[credentials.Vault] = ContextVar('vault_var')


class APIContext:
    """Kopf's per-credentials API session: importable and patchable here, but never usable."""

    def __init__(self, info: credentials.ConnectionInfo, *args: Any, **kwargs: Any) -> None:
        self.info = info

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"APIContext.{name}: this process has no API session on Operon; "
                                  f"the core connects to the cluster.")


__all__ = ['APIContext', 'vault_var']
