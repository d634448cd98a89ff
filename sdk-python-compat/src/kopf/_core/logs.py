"""
Logging as Kopf users see it: the per-object logger (``logger`` kwarg, name ``kopf.objects``)
whose records carry the object's reference, and formatters that print it as ``[ns/name] …``
(or put it into JSON lines under ``object``). The core's own per-object lines are forwarded
into the same logger (:mod:`kopf._transport.corelogs`), so both read alike.
"""
from __future__ import annotations

import copy
import datetime
import enum
import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

OBJECTS_LOGGER = logging.getLogger('kopf.objects')
JSON_REFKEY = 'object'
_OWN_EXTRAS = frozenset({'k8s_skip', 'k8s_ref', 'settings'})
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord('', 0, '', 0, '', (), None))) | {'message', 'asctime'}


class LogFormat(enum.Enum):
    """``kopf run --log-format``: plain messages, Kopf's full lines, or JSON lines."""
    PLAIN = '%(message)s'
    FULL = '[%(asctime)s] %(name)-20.20s [%(levelname)-8.8s] %(message)s'
    JSON = '-json-'


def object_ref(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get('metadata') or {}
    return {'apiVersion': body.get('apiVersion'), 'kind': body.get('kind'), 'name': meta.get('name'),
            'uid': meta.get('uid'), 'namespace': meta.get('namespace')}


class ObjectLogger(logging.LoggerAdapter[Any]):
    """The ``logger`` kwarg: logs into ``kopf.objects`` with the object's reference attached."""

    def __init__(self, *, body: Mapping[str, Any], settings: Any = None) -> None:
        super().__init__(OBJECTS_LOGGER, {'settings': settings, 'k8s_skip': False, 'k8s_ref': object_ref(body)})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs['extra'] = {**(self.extra or {}), **(kwargs.get('extra') or {})}
        return msg, kwargs


class LocalObjectLogger(ObjectLogger):
    """An object logger whose lines are never posted as Kubernetes events."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        kwargs['extra'] = {**(kwargs.get('extra') or {}), 'k8s_skip': True}
        super().log(level, msg, *args, **kwargs)


class TerseObjectLogger(LocalObjectLogger):
    """
    The index functions' logger (Kopf's, for the many and frequent index calls): warnings and
    errors as usual; below that, a line is written only if the level one step lower is enabled,
    i.e. infos with ``--verbose``/``--debug`` and debug lines never.
    """

    def isEnabledFor(self, level: int) -> bool:
        quieter = level if level >= logging.WARNING else level - logging.DEBUG
        return super().isEnabledFor(quieter)


def _prefix(record: logging.LogRecord) -> str | None:
    ref = getattr(record, 'k8s_ref', None)
    if not isinstance(ref, Mapping):
        return None
    name, namespace = ref.get('name', ''), ref.get('namespace', '')
    return f"[{namespace}/{name}]" if namespace else f"[{name}]"


class ObjectTextFormatter(logging.Formatter):
    """Text lines; with ``prefixed``, per-object records begin with ``[ns/name]``."""

    def __init__(self, fmt: str, *, prefixed: bool) -> None:
        super().__init__(fmt)
        self.prefixed = prefixed

    def format(self, record: logging.LogRecord) -> str:
        prefix = _prefix(record) if self.prefixed else None
        if prefix is not None:
            record = copy.copy(record)
            record.msg = f"{prefix} {record.msg}"
        return super().format(record)


def _severity(level: int) -> str:
    for limit, name in ((logging.DEBUG, 'debug'), (logging.INFO, 'info'),
                        (logging.WARNING, 'warn'), (logging.ERROR, 'error')):
        if level <= limit:
            return name
    return 'fatal'


class ObjectJsonFormatter(logging.Formatter):
    """JSON lines: message, extras, timestamp, severity, and the object's reference."""

    def __init__(self, *, refkey: str | None = None, prefixed: bool = False) -> None:
        super().__init__()
        self.refkey = refkey or JSON_REFKEY
        self.prefixed = prefixed

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        prefix = _prefix(record) if self.prefixed else None
        line: dict[str, Any] = {'message': f"{prefix} {message}" if prefix else message}
        line.update({key: value for key, value in vars(record).items()
                     if key not in _STANDARD_ATTRS and key not in _OWN_EXTRAS and not key.startswith('_')})
        line['timestamp'] = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc).isoformat()
        ref = getattr(record, 'k8s_ref', None)
        if ref is not None:
            line[self.refkey] = ref
        line.setdefault('severity', _severity(record.levelno))
        if record.exc_info:
            line['exc_info'] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def make_formatter(log_format: LogFormat | str = LogFormat.FULL, log_prefix: bool | None = False,
                   log_refkey: str | None = None) -> logging.Formatter:
    """A formatter for a ``--log-format``; ``log_prefix=None`` means "prefix unless JSON"."""
    is_json = log_format is LogFormat.JSON
    prefixed = (not is_json) if log_prefix is None else bool(log_prefix)
    if is_json:
        return ObjectJsonFormatter(refkey=log_refkey, prefixed=prefixed)
    if isinstance(log_format, LogFormat):
        return ObjectTextFormatter(log_format.value, prefixed=prefixed)
    if isinstance(log_format, str):
        return ObjectTextFormatter(log_format, prefixed=prefixed)
    raise ValueError(f"Unsupported log format: {log_format!r}")


class _OperatorStreamHandler(logging.StreamHandler[TextIO]):
    """Ours, so that a re-configuration replaces it rather than adding another."""


def configure(debug: bool | None = None, verbose: bool | None = None, quiet: bool | None = None,
              log_format: LogFormat | str = LogFormat.FULL, log_prefix: bool | None = False,
              log_refkey: str | None = None) -> None:
    """Kopf's logging set-up for ``kopf run``: one stream handler on the root logger."""
    stream = _OperatorStreamHandler()
    stream.setFormatter(make_formatter(log_format, log_prefix=log_prefix, log_refkey=log_refkey))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _OperatorStreamHandler)] + [stream]
    root.setLevel(logging.DEBUG if debug or verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ('asyncio', 'grpc'):  # keep the libraries quiet unless debugging
        lib = logging.getLogger(noisy)
        lib.propagate = bool(debug)
        if not debug:
            lib.handlers[:] = [logging.NullHandler()]
