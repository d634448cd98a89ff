"""
Kopf's ``kopf._core.actions.loggers``: the object loggers, Kopf's formatter classes by their names
(the "prefixing" ones put ``[ns/name]`` before per-object messages), and :func:`configure`.
"""
from __future__ import annotations

import logging

from kopf._core.logs import (
    LocalObjectLogger, LogFormat, ObjectJsonFormatter, ObjectLogger, ObjectTextFormatter, TerseObjectLogger,
    configure, make_formatter,
)

logger = logging.getLogger('kopf.objects')


class ObjectPrefixingTextFormatter(ObjectTextFormatter):
    """Text lines with ``[ns/name]`` before the messages of per-object records."""

    def __init__(self, fmt: str | None = None, *args: object, **kwargs: object) -> None:
        super().__init__(fmt or '%(message)s', prefixed=True)


class ObjectPrefixingJsonFormatter(ObjectJsonFormatter):
    """JSON lines whose per-object messages begin with ``[ns/name]``."""

    def __init__(self, *args: object, refkey: str | None = None, **kwargs: object) -> None:
        super().__init__(refkey=refkey, prefixed=True)


__all__ = ['LocalObjectLogger', 'LogFormat', 'ObjectJsonFormatter', 'ObjectLogger',
           'ObjectPrefixingJsonFormatter', 'ObjectPrefixingTextFormatter', 'ObjectTextFormatter',
           'TerseObjectLogger', 'configure', 'logger', 'make_formatter']
