"""
The bad-input scenario's operator: one creation handler per kind of bad input, chosen by the
object's ``badinput`` label, and ``plain`` (label ``plain``) for the control objects, the
oversized ones and those with malformed progress annotations.

Every call appends a ledger line (``RELIABILITY_LEDGER``) when it starts and when it ends
(``phase``: ``start``, ``end``), with the time left until the core's call deadline as the
handler sees it (``remaining``): how the hanging and the late calls are bounded, and whether a
call cut off by its deadline still finished in the background.
"""
import os
import time
from typing import Any

import kopf
import kubernetes
from kopf._core.reactor import wire
from ledgerline import ledger_append

LEDGER = os.environ['RELIABILITY_LEDGER']
G, V, P = 'kopf.dev', 'v1', 'kopfexamples'
LABEL = 'badinput'
MiB = 1024 * 1024


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # A sync handler that never answers holds the process after SIGTERM (threads cannot be
    # cancelled): as in Kopf, it SIGKILLs itself this long after the signal.
    settings.process.ultimate_exiting_timeout = 20


def note(handler: str, body: Any, retry: int, phase: str, **extra: Any) -> None:
    try:
        remaining = wire.call_var.get().time_remaining()
    except LookupError:
        remaining = None
    ledger_append(LEDGER, handler=handler, name=body['metadata']['name'], retry=retry, phase=phase,
                  time=time.time(), remaining=remaining, **extra)


@kopf.on.create(G, V, P, labels={LABEL: 'plain'})
def plain(body: Any, retry: int, **_: Any) -> dict[str, Any]:
    note('plain', body, retry, 'start')
    return {'ok': True}


# --- 3. handlers answering junk ---------------------------------------------------------------
@kopf.on.create(G, V, P, labels={LABEL: 'junk-result'}, retries=2, backoff=1)
def junk_set(body: Any, retry: int, **_: Any) -> Any:
    note('junk_set', body, retry, 'start')
    return {'members': {1, 2, 3}}  # a set: not JSON


@kopf.on.create(G, V, P, labels={LABEL: 'junk-result'}, retries=2, backoff=1)
def junk_nan(body: Any, retry: int, **_: Any) -> Any:
    note('junk_nan', body, retry, 'start')
    return {'ratio': float('nan')}  # JSON has no NaN


@kopf.on.create(G, V, P, labels={LABEL: 'patch-identity'}, retries=2, backoff=1)
def patch_identity(body: Any, retry: int, patch: Any, **_: Any) -> Any:
    note('patch_identity', body, retry, 'start')
    patch.spec['applied'] = 'must-not-be-applied'
    patch.metadata['namespace'] = 'elsewhere'
    return {'ok': True}


@kopf.on.create(G, V, P, labels={LABEL: 'patch-invalid'}, retries=2, backoff=1)
def patch_invalid(body: Any, retry: int, patch: Any, **_: Any) -> Any:
    note('patch_invalid', body, retry, 'start')
    patch.spec['applied'] = 'must-not-be-applied'
    patch.metadata.setdefault('labels', {})['bad'] = 'not a valid label value!'
    return {'ok': True}


# --- 4. a child in another namespace ------------------------------------------------------------
@kopf.on.create(G, V, P, labels={LABEL: 'adopt'}, retries=2, backoff=1)
def adopt_elsewhere(body: Any, spec: Any, retry: int, **_: Any) -> dict[str, Any]:
    note('adopt_elsewhere', body, retry, 'start')
    child: dict[str, Any] = {'apiVersion': 'v1', 'kind': 'ConfigMap',
             'metadata': {'name': f"child-of-{body['metadata']['name']}", 'namespace': spec['other']},
             'data': {'made': 'by adopt_elsewhere'}}
    kopf.adopt(child)
    kubernetes.config.load_kube_config()
    kubernetes.client.CoreV1Api().create_namespaced_config_map(spec['other'], child)  # type: ignore[arg-type]  # a dict is fine
    return {'namespace': child['metadata']['namespace'],
            'owners': [ref['uid'] for ref in child['metadata']['ownerReferences']]}


# --- 5. too big, too slow, never ------------------------------------------------------------------
@kopf.on.create(G, V, P, labels={LABEL: 'huge'}, retries=2, backoff=1)
def huge(body: Any, retry: int, **_: Any) -> str:
    note('huge', body, retry, 'start')
    return 'x' * (100 * MiB)


@kopf.on.create(G, V, P, labels={LABEL: 'hang'})
def hang(body: Any, retry: int, **_: Any) -> None:
    note('hang', body, retry, 'start')
    time.sleep(3600)
    note('hang', body, retry, 'end')


@kopf.on.create(G, V, P, labels={LABEL: 'hang-timeout'}, timeout=3, backoff=1)
def hang_timeout(body: Any, retry: int, **_: Any) -> None:
    note('hang_timeout', body, retry, 'start')
    time.sleep(3600)
    note('hang_timeout', body, retry, 'end')


@kopf.on.create(G, V, P, labels={LABEL: 'late'}, timeout=2, backoff=1)
def late(body: Any, retry: int, **_: Any) -> dict[str, Any]:
    note('late', body, retry, 'start')
    time.sleep(2.5)
    note('late', body, retry, 'end')
    return {'ok': True}
