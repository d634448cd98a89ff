"""
For the suite's operators: one JSON line per handler call, appended in a single write (O_APPEND),
so that a SIGKILL never leaves half a line or interleaves two (``RELIABILITY_LEDGER`` names the
file), and whether a call re-runs a success that is already stored.
"""
import json
import os
from typing import Any

PREFIX = 'kopf.zalando.org'


def persisted(body: Any, handler_id: str, reason: str) -> bool:
    """ The call's own success was already stored on the object it was called with: its progress
    record says success, or — for creation — the diff-base is there (the cycle is complete). """
    annotations = body['metadata'].get('annotations', {})
    record = annotations.get(f"{PREFIX}/{handler_id.replace('/', '.')}")
    if record and json.loads(record).get('success'):
        return True
    return reason == 'create' and f'{PREFIX}/last-handled-configuration' in annotations


def ledger_append(path: str, **fields: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(fields, sort_keys=True) + '\n').encode())
    finally:
        os.close(fd)
