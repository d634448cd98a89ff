"""How Kopf turns handler ids into annotation keys, byte for byte, so that Kopf and Operon share them.

Annotation names may have at most 63 characters. An id that does not fit is cut and ends with
a short hash of the whole id. Two key forms exist: V2 limits the name part alone (after
``<prefix>/``); the older V1 limits the whole key, prefix included. Kopf writes both by default.
"""
from __future__ import annotations

import base64
import hashlib
import warnings
from collections.abc import Mapping
from typing import Any

NAME_LIMIT = 63
_SAFE = str.maketrans({'/': '.', '<': '_', '>': '_'})


def hash_tail(text: str) -> str:
    """``-`` and 4 bytes of BLAKE2b in base64 (``-``/``.`` as extra characters), padding dropped."""
    digest = hashlib.blake2b(text.encode('utf-8'), digest_size=4).digest()
    return ('-' + base64.b64encode(digest, altchars=b'-.').decode('ascii')).rstrip('=-.')


def _fit(name: str, room: int, tail: str) -> str:
    return name[:max(0, room - len(tail))] + tail


class StorageKeyFormingConvention:
    """The annotation keys of handler progress records (``v1=True``: also the V1 form)."""

    def __init__(self, *, prefix: str = 'kopf.zalando.org', v1: bool = True) -> None:
        if not prefix:
            raise ValueError("Annotations storages must be prefixed.")
        if len(prefix) > 253 - NAME_LIMIT - 1:
            warnings.warn("The annotations prefix is too long. It can cause errors when PATCHing.")
        self.prefix, self.v1 = prefix, v1

    def mark_key(self, key: str, *, body: Mapping[str, Any]) -> str:
        """ReplicaSets of Deployments get ``-ofDRS``: Kubernetes copies a Deployment's annotations down."""
        owners = (body.get('metadata') or {}).get('ownerReferences') or []
        by_deployment = any(owner.get('kind') == 'Deployment' for owner in owners)
        return f'{key}-ofDRS' if body.get('kind') == 'ReplicaSet' and by_deployment else key

    def make_keys(self, key: str, *, body: Mapping[str, Any] | None = None) -> list[str]:
        """Every key of one record: the V2 key, then the V1 key when it differs."""
        marked = self.mark_key(key, body=body) if body is not None else key
        found = [self.make_v2_key(marked)]
        if self.v1 and self.make_v1_key(marked) not in found:
            found.append(self.make_v1_key(marked))
        return found

    @staticmethod
    def make_safe_key(key: str) -> str:
        return key.translate(_SAFE)

    def make_v2_key(self, key: str, max_length: int = NAME_LIMIT) -> str:
        tail = hash_tail(key) if len(key) > max_length else ''
        return f'{self.prefix}/' + _fit(self.make_safe_key(key), max_length, tail)

    def make_v1_key(self, key: str, max_length: int = NAME_LIMIT) -> str:
        head = f'{self.prefix}/'
        room = max_length - len(head)
        name = self.make_safe_key(key)
        tail = hash_tail(name) if len(name) > room else ''
        return head + _fit(name, room, tail)

    make_suffix = staticmethod(hash_tail)
