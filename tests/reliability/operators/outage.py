"""
The outage scenario's handlers, served by ``kopf serve`` (no core of their own): a creation
handler (``retries=2``: the outage must not use them up) and an update handler of ``spec.v``.

Every call appends a ledger line (``RELIABILITY_LEDGER``) with the handler process's ``pid`` (so
that a line written by the process that was later SIGKILLed can be told apart) and ``persisted``:
whether the call's own success was already stored on the object it was called with (see
``operators/kill9.py``). A call sleeps a little before its line and a little after it, so that
the kill lands inside calls both before the line is written (the call is simply repeated) and
after it but before the answer reaches the core (the repeat then shows as a second success line:
the at-least-once window that the scenario's rule accounts for).
"""
import os
import random
import time
from typing import Any

import kopf
from ledgerline import ledger_append, persisted

LEDGER = os.environ['RELIABILITY_LEDGER']



def call(handler_id: str, body: Any, reason: str, retry: int, v: Any) -> None:
    started = time.time()
    time.sleep(random.uniform(0, 0.2))
    ledger_append(LEDGER, handler=handler_id, name=body['metadata']['name'], uid=body['metadata']['uid'],
                  reason=reason, retry=retry, outcome='success', started=started, ended=time.time(),
                  pid=os.getpid(), persisted=persisted(body, handler_id, reason), v=v)
    time.sleep(random.uniform(0, 0.2))


# retries=2: a call that never reached the service (it was down) is no attempt, so the outage
# must not use these up and fail the handler.
@kopf.on.create('kopf.dev', 'v1', 'kopfexamples', retries=2)
def created(body: Any, spec: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    call('created', body, reason, retry, spec.get('v'))
    return {'ok': True}


@kopf.on.update('kopf.dev', 'v1', 'kopfexamples', field='spec.v')
def changed(body: Any, new: Any, reason: str, retry: int, **_: Any) -> dict[str, Any]:
    call('changed/spec.v', body, reason, retry, new)
    return {'v': new}
