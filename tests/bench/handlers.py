"""The benchmark's operator: three handlers, run unchanged by Kopf 1.45.2 and by Operon's
sdk-python-compat (`kopf run tests/bench/handlers.py`).

Each handler does no work but record its call: one line `KIND NAME UNIX-TIME GENERATION` appended
to the file in $BENCH_LEDGER (line-buffered, so a stopped process loses nothing; GENERATION is the
object's metadata.generation as the handler saw it, which tells which change it handled).
tests/bench/bench.py joins these lines with the audit log to measure watch-event → handler-call
latency and to check that every object was handled. Handlers return nothing, so nothing is
written to `status`.
"""
import os
import time

import kopf

GROUP, VERSION, PLURAL = 'bench.operon.dev', 'v1', 'benchobjects'
_LEDGER = open(os.environ.get('BENCH_LEDGER', os.devnull), 'a', buffering=1)


def _record(kind: str, name: str, meta) -> None:
    _LEDGER.write(f'{kind} {name} {time.time():.6f} {meta.get("generation", "")}\n')


@kopf.on.create(GROUP, VERSION, PLURAL)
def created(name, meta, **_):
    _record('create', name, meta)


@kopf.on.update(GROUP, VERSION, PLURAL, field='spec.value')
def value_changed(name, meta, **_):
    _record('update', name, meta)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def deleted(name, meta, **_):
    _record('delete', name, meta)
