"""
One end-to-end smoke test: `kopf run` on a tiny operator, the real `operon` core, the real plane.

Skipped, with the reason, only when the local control plane or the `operon` binary is not
available (the fixtures `plane` and `namespace` of conftest.py: a fresh namespace per test).
"""
import collections
import json
import pathlib
import re
import subprocess
import time

import pytest

import kopf
from kopf.testing import KopfRunner

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / 'examples'

pytestmark = pytest.mark.e2e

OPERATOR = '''
import kopf

@kopf.on.create('kopfexamples')
def create_fn(spec, logger, body, **kwargs):
    logger.info(f"And here we are! Creating: {spec}")
    kopf.info(body, reason='SdkE2E', message='Created by the SDK smoke test.')
    return {'message': 'hello world'}

@kopf.on.create('kopfexamples')
def create_items(spec, **_):
    for item in spec.get('items', []):
        @kopf.subhandler(id=item)
        def create_item(item=item, retry=0, **_):
            if retry < 1:
                raise kopf.TemporaryError(f"{item} is not ready yet.", delay=1)
            return {'item': item}

@kopf.on.update('kopfexamples', field='spec.field')
def update_field(old, new, **_):
    return {'old': old, 'new': new}

@kopf.on.delete('kopfexamples')
def delete_fn(logger, **_):
    logger.info("Deleting it.")
'''


def _wait_for(caplog: pytest.LogCaptureFixture, pattern: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(re.search(pattern, message) for message in list(caplog.messages)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} is not logged within {timeout} s:\n" + '\n'.join(caplog.messages[-30:]))


def test_kopf_run_handles_an_object_on_the_real_plane(plane, namespace, tmp_path, registry, caplog):
    kubectl = plane[0]
    operator_py = tmp_path / 'example.py'
    operator_py.write_text(OPERATOR)
    settings = kopf.OperatorSettings()
    settings.execution.default_backoff = 1
    settings.watching.server_timeout = 10  # as Kopf's e2e tests set it: no effect here (warned at start-up).
    obj = ['-n', namespace, '-f', str(EXAMPLES / 'obj.yaml')]
    ref = f'[{namespace}/kopf-example-1]'

    with KopfRunner(['run', '-n', namespace, '--standalone', '--verbose', str(operator_py)],
                    registry=registry, settings=settings, timeout=90) as runner:
        _wait_for(caplog, r'Serving the resource\.')
        subprocess.run([kubectl, 'apply', *obj], check=True, capture_output=True, timeout=30)
        _wait_for(caplog, r'Creation is processed:')
        got = subprocess.run([kubectl, 'get', *obj, '-o', 'json'], check=True, capture_output=True, timeout=30)
        status = json.loads(got.stdout).get('status', {})
        subprocess.run([kubectl, 'patch', *obj, '--type=merge', '-p', '{"spec": {"field": "changed"}}'],
                       check=True, capture_output=True, timeout=30)
        _wait_for(caplog, r'Updating is processed:')
        got = subprocess.run([kubectl, 'get', *obj, '-o', 'json'], check=True, capture_output=True, timeout=30)
        status_after_update = json.loads(got.stdout).get('status', {})
        events = subprocess.run([kubectl, 'get', 'events', '-n', namespace, '-o', 'json'],
                                check=True, capture_output=True, timeout=30)
        subprocess.run([kubectl, 'delete', *obj, '--wait=false'], check=True, capture_output=True, timeout=30)
        _wait_for(caplog, r'Deleted, really deleted')

    assert runner.exception is None
    assert runner.exit_code == 0
    output = runner.output
    assert f'{ref} Adding the finalizer' in output
    assert f'{ref} Creation is in progress:' in output
    assert f'{ref} And here we are! Creating:' in output
    assert f"{ref} Handler 'create_items/item1' failed temporarily: item1 is not ready yet." in output
    assert f'{ref} Deletion is in progress:' in output
    assert f'{ref} Deleting it.' in output
    assert f'{ref} Deleted, really deleted' in output
    assert 'Traceback (most recent call last):' not in output
    succeeded = collections.Counter(re.findall(r"'(.+?)' succeeded", output))
    assert succeeded == {'create_fn': 1, 'create_items/item1': 1, 'create_items/item2': 1, 'create_items': 1,
                         'update_field/spec.field': 1, 'delete_fn': 1}
    assert status['create_fn'] == {'message': 'hello world'}
    assert status['create_items/item1'] == {'item': 'item1'}
    assert status_after_update['update_field/spec.field'] == {'old': 'value', 'new': 'changed'}
    reasons = {item['reason'] for item in json.loads(events.stdout)['items']}
    assert 'SdkE2E' in reasons
