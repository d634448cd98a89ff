"""
The core's log lines, forwarded into Python's logging as Kopf's loggers would have written them.

The core (``operon --log-format json``) writes one JSON object per line on stderr::

    {"timestamp": "...", "level": "DEBUG", "target": "kopf.objects",
     "fields": {"message": "Handler 'create_fn' succeeded.", "object": "default/kopf-example-1"}}

Per-object lines (target ``kopf.objects``) go to the ``kopf.objects`` logger with the object's
reference attached as Kopf's ``ObjectLogger`` attaches it (``k8s_ref``), so that Kopf's formatters
render them with the ``[namespace/name] `` prefix --- the words are Kopf's already. Other lines go
to ``kopf._core.engines.operon.<module>`` loggers, with their structured fields appended. Lines
that are not JSON (e.g. a fatal error before logging is set up) are logged as they are.

The core renders the object in ``Creation is in progress: {…}`` (and the diff in ``… diff: […]``,
the patches in ``Merge-patching the resource with: {…}`` and ``JSON-patching …``, the lost fields
in ``Merge-patching finished with inconsistencies: […]``) as JSON; Kopf renders them as Python's
``repr()``. They are re-rendered here as Kopf does, since
tools grep Kopf's output: e.g. Kopf's e2e tests count ``'(.+?)' failed permanently`` over the whole
output, and rely on ``repr()`` escaping the quotes of the handler messages inside the object.
"""
import datetime
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

OBJECTS_LOGGER = 'kopf.objects'
CORE_LOGGER = 'kopf._core.engines.operon'

LEVELS: Mapping[str, int] = {
    'TRACE': 5,
    'DEBUG': logging.DEBUG,
    'INFO': logging.INFO,
    'WARN': logging.WARNING,
    'WARNING': logging.WARNING,
    'ERROR': logging.ERROR,
}


_TITLES = r'(?:Creation|Updating|Deletion|Resuming)'


def _diff(items: Any) -> Any:
    """ Kopf's ``Diff`` as its ``repr()`` shows it: a tuple of ``(op, field, old, new)`` tuples. """
    return tuple((op, tuple(path), old, new) for op, path, old, new in items)


# Each per-object line whose JSON Kopf logs as a ``repr()``: (the text before it, the JSON), and
# how the decoded JSON becomes Kopf's value: the object, its diff, the patches, the lost fields.
_REPR_LINES: list[tuple[re.Pattern[str], Callable[[Any], Any]]] = [
    (re.compile(r'(' + _TITLES + r' is in progress: )(\{.*\})', re.DOTALL), lambda body: body),
    (re.compile(r'(' + _TITLES + r' diff: )(\[.*\])', re.DOTALL), _diff),
    (re.compile(r'((?:Merge|JSON)-patching the (?:resource|status) with: )([\[{].*)', re.DOTALL),
     lambda patch: patch),
    (re.compile(r'(Merge-patching finished with inconsistencies: )(\[.*\])', re.DOTALL), _diff),
]


def pythonize(message: str) -> str:
    """ Re-render the JSON of a per-object line (object, diff, patch) as Kopf's ``repr()``. """
    for pattern, convert in _REPR_LINES:
        match = pattern.fullmatch(message)
        if match:
            try:
                value = convert(json.loads(match.group(2)))
            except (ValueError, TypeError):
                return message
            return f'{match.group(1)}{value!r}'
    return message


def logger_name(target: str) -> str:
    """ ``kopf.objects`` stays as is; ``operon::runtime::engine`` → ``kopf._core.engines.operon.runtime.engine``. """
    if target == OBJECTS_LOGGER or target.startswith('kopf.'):
        return target
    parts = [part for part in target.split('::') if part]
    if parts and parts[0] == 'operon':
        parts = parts[1:]
    return '.'.join([CORE_LOGGER] + parts)


def object_ref(text: str) -> dict[str, Any]:
    """ ``"ns/name"`` → Kopf's ``k8s_ref`` shape; ``"name"`` for cluster-scoped objects. """
    namespace, _, name = text.rpartition('/')
    return {'namespace': namespace or None, 'name': name}


def core_filter() -> str:
    """
    The core's log filter (its ``OPERON_LOG``): only the lines Python's logging would show.

    The per-object DEBUG lines (``Creation is in progress: {…}`` with the whole body, the diff,
    ``Patching with…``) are most of what the core writes; when ``kopf.objects`` does not show
    DEBUG (no ``--verbose``/``--debug``), the core does not render them at all, and this process
    does not parse them. Computed when the core starts, after the startup handlers, so a level
    set there is honoured.
    """
    if logging.getLogger(OBJECTS_LOGGER).isEnabledFor(logging.DEBUG):
        return 'info,kopf.objects=debug'
    return 'info'


def make_record(line: str, *, enabled_only: bool = False) -> logging.LogRecord | None:
    """
    One log record for one line of the core's stderr; ``None`` for blank lines.

    With ``enabled_only``, also ``None`` for a line its logger would drop, decided before the
    costly part (re-rendering the object, making the record).
    """
    text = line.rstrip('\r\n')
    if not text.strip():
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get('fields'), dict):
            raise ValueError("not a log line of the core")
    except ValueError:
        level = logging.ERROR if text.startswith(('operon:', 'thread ', 'Error')) else logging.WARNING
        return logging.getLogger(CORE_LOGGER).makeRecord(CORE_LOGGER, level, '(operon)', 0, text, (), None)

    fields: dict[str, Any] = dict(data['fields'])
    message = str(fields.pop('message', ''))
    target = str(data.get('target') or 'operon')
    level = LEVELS.get(str(data.get('level', 'INFO')).upper(), logging.INFO)
    name = logger_name(target)
    if enabled_only and not logging.getLogger(name).isEnabledFor(level):
        return None
    extra: dict[str, Any] = {'operon_target': target}
    obj = fields.pop('object', None)
    if name == OBJECTS_LOGGER and isinstance(obj, str):
        message = pythonize(message)
        extra['k8s_ref'] = object_ref(obj)
        extra['k8s_skip'] = True  # never re-posted as a k8s-event: the core posts what it posts.
    elif obj is not None:
        fields['object'] = obj
    if fields:
        details = ', '.join(f'{key}={value}' for key, value in fields.items())
        message = f'{message} ({details})' if message else details
    record = logging.getLogger(name).makeRecord(name, level, '(operon)', 0, message, (), None, extra=extra)
    timestamp = data.get('timestamp')
    if isinstance(timestamp, str):
        try:
            moment = datetime.datetime.fromisoformat(timestamp.replace('Z', '+00:00'))
        except ValueError:
            pass
        else:
            record.created = moment.timestamp()
            record.msecs = (record.created - int(record.created)) * 1000
    return record


def forward(line: str) -> None:
    """ Log one line of the core's stderr through Python's logging. """
    record = make_record(line, enabled_only=True)
    if record is not None:
        logging.getLogger(record.name).handle(record)
