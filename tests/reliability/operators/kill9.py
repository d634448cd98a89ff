"""
The kill -9 scenario's operator: three creation handlers (``second`` with two sub-handlers,
``third`` retrying once on every other object) and an update handler of ``spec.n``.

Every call appends a ledger line (``RELIABILITY_LEDGER``) with ``persisted``: whether the call's
own success was already on the object it was called with (its progress record says success, or —
for creation — the diff-base is there: the cycle is complete). A call with ``persisted: true``
re-runs a success that was stored: the promise forbids it. Handlers sleep a little, so that kills
land inside calls as well as between them.
"""
import os
import random
import time
from typing import Any

import kopf
from ledgerline import ledger_append, persisted

LEDGER = os.environ['RELIABILITY_LEDGER']



def call(handler_id: str, body: Any, reason: str, retry: int, outcome: str = 'success', **extra: Any) -> None:
    started = time.time()
    time.sleep(random.uniform(0, 0.03))
    ledger_append(LEDGER, handler=handler_id, name=body['metadata']['name'], uid=body['metadata']['uid'],
                  reason=reason, retry=retry, outcome=outcome, started=started, ended=time.time(),
                  persisted=persisted(body, handler_id, reason), **extra)


@kopf.on.create('kopf.dev', 'v1', 'kopfexamples')
def first(body: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    call('first', body, reason, retry)
    return {'ok': True}


@kopf.on.create('kopf.dev', 'v1', 'kopfexamples')
def second(body: Any, reason: str, retry: int, **_: Any) -> None:
    @kopf.subhandler(id='a')
    def a(body: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
        call('second/a', body, reason, retry)
        return {'ok': True}

    @kopf.subhandler(id='b')
    def b(body: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
        call('second/b', body, reason, retry)
        return {'ok': True}

    call('second', body, reason, retry, outcome='subhandlers')


@kopf.on.create('kopf.dev', 'v1', 'kopfexamples')
def third(body: Any, spec: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    if spec.get('flaky') and retry == 0:
        call('third', body, reason, retry, outcome='temporary')
        raise kopf.TemporaryError("flaky: once", delay=0.3)
    call('third', body, reason, retry)
    return {'ok': True}


@kopf.on.update('kopf.dev', 'v1', 'kopfexamples', field='spec.n')
def counted(body: Any, new: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    call('counted/spec.n', body, reason, retry, n=new)
    return {'n': new}
