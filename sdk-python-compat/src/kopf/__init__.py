"""Kopf's public API on the Operon runtime.

This package mirrors Kopf's module layout (``kopf/__init__.py`` re-exports the public surface), so
that the two can be compared side by side.
"""

from kopf._cogs.conventions import StorageKeyFormingConvention

__version__ = "0.1.0"

__all__ = [
    "StorageKeyFormingConvention",
    "__version__",
]
