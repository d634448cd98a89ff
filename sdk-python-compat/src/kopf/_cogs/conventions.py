"""How Kopf forms annotation keys from handler ids (Kopf's ``kopf._cogs.configs.conventions``).

Annotation names are limited to 63 characters; longer ids are cut and suffixed with a short hash,
byte-for-byte as Kopf does, so that Kopf and Operon read and write the same keys.
"""

from __future__ import annotations

import base64
import hashlib
import warnings
from collections.abc import Mapping
from typing import Any


class StorageKeyFormingConvention:
    """Forms the annotation keys of handler progress records.

    ``v1=True`` (Kopf's default) also writes the older key form, in which the whole key, prefix
    included, fits into 63 characters.
    """

    def __init__(self, *, prefix: str = "kopf.zalando.org", v1: bool = True) -> None:
        if not prefix:
            raise ValueError("Annotations storages must be prefixed.")
        if len(prefix) > 253 - 63 - 1:
            warnings.warn("The annotations prefix is too long. It can cause errors when PATCHing.")
        self.prefix = prefix
        self.v1 = v1

    def mark_key(self, key: str, *, body: Mapping[str, Any]) -> str:
        """ReplicaSets owned by a Deployment get ``-ofDRS``: Kubernetes copies annotations down."""
        owners = body.get("metadata", {}).get("ownerReferences", [])
        if body.get("kind") == "ReplicaSet" and any(o["kind"] == "Deployment" for o in owners):
            return f"{key}-ofDRS"
        return key

    def make_keys(self, key: str, *, body: Mapping[str, Any] | None = None) -> list[str]:
        """All keys under which the record for ``key`` is stored: V2 first, then V1 if different."""
        key = key if body is None else self.mark_key(key, body=body)
        v2_keys = [self.make_v2_key(key)]
        v1_keys = [self.make_v1_key(key)] if self.v1 else []
        return v2_keys + list(set(v1_keys) - set(v2_keys))

    @staticmethod
    def make_safe_key(key: str) -> str:
        for old, new in {"/": ".", "<": "_", ">": "_"}.items():
            key = key.replace(old, new)
        return key

    def make_v1_key(self, key: str, max_length: int = 63) -> str:
        """The whole key, prefix included, is limited to ``max_length``."""
        safe_key = self.make_safe_key(key)
        prefix = f"{self.prefix}/"
        suffix = "" if len(safe_key) <= max_length - len(prefix) else self.make_suffix(safe_key)
        return f"{prefix}{safe_key[:max_length - len(prefix) - len(suffix)]}{suffix}"

    def make_v2_key(self, key: str, max_length: int = 63) -> str:
        """The name part alone is limited to ``max_length``; a hash suffix marks a cut."""
        prefix = f"{self.prefix}/"
        suffix = self.make_suffix(key) if len(key) > max_length else ""
        key_limit = max(0, max_length - len(suffix))
        return f"{prefix}{self.make_safe_key(key)[:key_limit]}{suffix}"

    @staticmethod
    def make_suffix(key: str) -> str:
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest()
        alnums = base64.b64encode(digest, altchars=b"-.").decode("ascii")
        return f"-{alnums}".rstrip("=-.")
