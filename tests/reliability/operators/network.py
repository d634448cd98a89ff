"""
The network scenario's operator: a creation handler and an update handler of ``spec.n``, each
appending a ledger line per call (``RELIABILITY_LEDGER``, the fields of the kill -9 operator's,
and the ``spec.n`` that the call saw), so that the scenario can count lost changes and repeated
successes.

``RELIABILITY_SILENCE`` (seconds), when set, becomes ``settings.watching.inactivity_timeout`` — the
core's ``--watch-silence-timeout``: how long a watch may stay silent before it is restarted.
Handlers sleep a little (the creation handler ``spec.sleep`` seconds when it is set), so that a cut
lands inside calls as well as between them.
"""
import os
import random
import time
from typing import Any

import kopf
from ledgerline import ledger_append, persisted

LEDGER = os.environ['RELIABILITY_LEDGER']
SILENCE = os.environ.get('RELIABILITY_SILENCE')


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    if SILENCE:
        settings.watching.inactivity_timeout = float(SILENCE)



def call(handler_id: str, body: Any, reason: str, retry: int, sleep: float | None = None, **extra: Any) -> None:
    started = time.time()
    time.sleep(random.uniform(0, 0.05) if sleep is None else sleep)
    ledger_append(LEDGER, handler=handler_id, name=body['metadata']['name'], uid=body['metadata']['uid'],
                  reason=reason, retry=retry, outcome='success', started=started, ended=time.time(),
                  persisted=persisted(body, handler_id, reason), **extra)


@kopf.on.create('kopf.dev', 'v1', 'kopfexamples')
def created(body: Any, spec: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    n = spec.get('n', 0)  # an object first seen already changed needs no update handler
    call('created', body, reason, retry, sleep=spec.get('sleep'), n=n)
    return {'ok': True, 'n': n}


@kopf.on.update('kopf.dev', 'v1', 'kopfexamples', field='spec.n')
def counted(body: Any, new: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    call('counted/spec.n', body, reason, retry, n=new)
    return {'n': new}
