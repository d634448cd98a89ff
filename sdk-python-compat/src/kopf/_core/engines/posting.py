"""Kopf's ``kopf._core.engines.posting``: the events API and its settings context variable."""
from kopf._core.posting import event, exception, info, settings_var, warn

__all__ = ['event', 'exception', 'info', 'settings_var', 'warn']
