"""
The security scenario's operator: handlers that put hostile strings everywhere a user of the
dashboard sees them, and handlers of Secrets that do nothing (so that the core reads, diffs and
stores them as it would any object).

``hostile(channel)`` is the string of one channel: the channel's name, then every payload of
``RELIABILITY_PAYLOADS`` (a JSON list, set by the scenario), so that the scenario knows where a
string it finds came from. The channels:

- ``message``: a TemporaryError's message (label ``security: message``; retried in an hour, so
  it stays on the object as the handler's last message);
- ``result``: a handler's result (label ``security: shown``; lands in ``status.hostile_result``);
- ``info``, ``warning``: Events posted with ``kopf.info`` and ``kopf.event`` (type Warning);
- ``logger``: a line of the handler's ``logger`` (the SDK never posts log lines as Events: it
  only reaches the operator's log);
- ``permanent``: a PermanentError's message of the update handler (the scenario changes the
  object's annotations and spec, which are hostile too and so land in the diff).
"""
import json
import os
from typing import Any

import kopf

G, V, P = 'kopf.dev', 'v1', 'kopfexamples'
PAYLOADS: list[str] = json.loads(os.environ['RELIABILITY_PAYLOADS'])


def hostile(channel: str) -> str:
    return f"{channel}: " + ' '.join(PAYLOADS)


@kopf.on.create(G, V, P, labels={'security': 'message'})
def stuck(**_: Any) -> None:
    raise kopf.TemporaryError(hostile('message'), delay=3600)


@kopf.on.create(G, V, P, labels={'security': 'shown'})
def hostile_result(body: Any, logger: Any, **_: Any) -> dict[str, Any]:
    kopf.info(body, reason='Hostile', message=hostile('info'))
    kopf.event(body, type='Warning', reason='Hostile', message=hostile('warning'))
    logger.info(hostile('logger'))
    return {'shown': hostile('result')}


@kopf.on.update(G, V, P, labels={'security': 'shown'})
def hostile_failure(**_: Any) -> None:
    raise kopf.PermanentError(hostile('permanent'))


@kopf.on.create('', 'v1', 'secrets')
def secret_created(**_: Any) -> None:
    return None


@kopf.on.update('', 'v1', 'secrets')
def secret_updated(**_: Any) -> None:
    return None
