"""
The conflicts scenario's operator: a creation handler, an update handler of ``spec.v`` and a
deletion handler (so that the core holds its finalizer, next to the second writer's).

Every call appends a ledger line (``RELIABILITY_LEDGER``) with the value it saw and
``persisted``: whether the call's own success was already stored on the object it was called
with (see ``operators/kill9.py``). Nothing is killed in this scenario, so every success must be
in the ledger exactly once.
"""
import os
import time
from typing import Any

import kopf
from ledgerline import ledger_append, persisted

LEDGER = os.environ['RELIABILITY_LEDGER']



def call(handler_id: str, body: Any, reason: str, retry: int, v: Any) -> None:
    started = time.time()
    time.sleep(0.01)  # long enough for the second writer to change the object meanwhile
    ledger_append(LEDGER, handler=handler_id, name=body['metadata']['name'], uid=body['metadata']['uid'],
                  reason=reason, retry=retry, outcome='success', started=started, ended=time.time(),
                  persisted=persisted(body, handler_id, reason), v=v)


@kopf.on.create('kopf.dev', 'v1', 'kopfexamples')
def created(body: Any, spec: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    call('created', body, reason, retry, spec.get('v'))
    return {'ok': True}


@kopf.on.update('kopf.dev', 'v1', 'kopfexamples', field='spec.v')
def changed(body: Any, new: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    call('changed/spec.v', body, reason, retry, new)
    return {'v': new}


@kopf.on.delete('kopf.dev', 'v1', 'kopfexamples')
def deleted(body: Any, spec: Any, reason: str, retry: int, **_: Any) -> None:
    call('deleted', body, reason, retry, spec.get('v'))
