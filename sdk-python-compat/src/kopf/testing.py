"""``kopf.testing``: run an operator in a test, as with Kopf."""
from kopf._kits.runner import KopfRunner

__all__ = ["KopfRunner"]
