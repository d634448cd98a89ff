"""
Admission webhooks end to end: Kopf's own example 17 (``examples/17-admission/example.py``,
unchanged) run by ``kopf run`` with the real ``operon`` core on the real plane. Its startup
handler sets ``settings.admission.server = kopf.WebhookAutoServer()`` and
``settings.admission.managed = 'auto.kopf.dev'``: the core listens on 127.0.0.1 with a generated
certificate, writes the two webhook configurations, and the API server calls it for every
``kubectl`` request on KopfExamples.

The webhook configurations are cluster-wide: run it on a plane of its own (or one where nothing
else manages ``auto.kopf.dev``). They are removed at the end, whatever happens.
"""
import json
import re
import subprocess
import time
from typing import Any

import pytest

import kopf
from kopf.testing import KopfRunner

pytestmark = pytest.mark.e2e

NAME = 'auto.kopf.dev'
KINDS = ('validatingwebhookconfiguration', 'mutatingwebhookconfiguration')


def _wait_for(caplog: pytest.LogCaptureFixture, pattern: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(re.search(pattern, message) for message in list(caplog.messages)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} is not logged within {timeout} s:\n" + '\n'.join(caplog.messages[-30:]))


def _kex(name: str, field: str, namespace: str) -> str:
    return json.dumps({
        'apiVersion': 'kopf.dev/v1', 'kind': 'KopfExample',
        'metadata': {'name': name, 'namespace': namespace, 'labels': {'somelabel': 'somevalue'}},
        'spec': {'field': field},
    })


def _apply(kubectl: str, manifest: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl, 'apply', '-f', '-', *extra], input=manifest, text=True,
                          capture_output=True, timeout=30)


def _configuration(kubectl: str, kind: str) -> dict[str, Any] | None:
    got = subprocess.run([kubectl, 'get', kind, NAME, '-o', 'json'], capture_output=True, text=True, timeout=30)
    return json.loads(got.stdout) if got.returncode == 0 else None


def _wait_configured(kubectl: str, timeout: float = 60) -> tuple[dict[str, Any], dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        validating, mutating = (_configuration(kubectl, kind) for kind in KINDS)
        if validating and mutating and len(validating.get('webhooks') or []) == 4 and mutating.get('webhooks'):
            return validating, mutating
        if time.monotonic() > deadline:
            raise AssertionError(f"The webhook configurations are not made: {validating}, {mutating}")
        time.sleep(0.5)


def test_kopfs_admission_example_on_the_real_plane(plane, namespace, kopf_examples, registry, caplog):
    kubectl = plane[0]
    example = kopf_examples / '17-admission' / 'example.py'
    try:
        with KopfRunner(['run', '-n', namespace, '--standalone', '--verbose', str(example)],
                        registry=registry, settings=kopf.OperatorSettings(), timeout=120) as runner:
            validating, mutating = _wait_configured(kubectl)
            _wait_for(caplog, r'Admission webhooks are served\.')

            # The configurations, as Kopf's configuration manager makes them.
            names = sorted(w['name'] for w in validating['webhooks'])
            assert names == sorted(f'{n}.{NAME}' for n in ('authhook', 'validate1', 'validate2.spec.field',
                                                          'validate-subresources'))
            (mutate1,) = mutating['webhooks']
            assert mutate1['name'] == f'mutate1.{NAME}'
            assert mutate1['clientConfig']['url'].startswith('https://127.0.0.1:')
            assert mutate1['clientConfig']['url'].endswith('/mutate1')
            assert mutate1['clientConfig']['caBundle']
            assert mutate1['failurePolicy'] == 'Fail' and mutate1['sideEffects'] == 'None'
            assert mutate1['timeoutSeconds'] == 30
            assert mutate1['objectSelector'] == {'matchExpressions': [
                {'key': 'somelabel', 'operator': 'In', 'values': ['somevalue']}]}
            assert mutate1['rules'][0]['apiGroups'] == ['kopf.dev']
            assert mutate1['rules'][0]['resources'] == ['kopfexamples']

            # Invalid objects are refused by the API server with the handlers' messages.
            refused = _apply(kubectl, _kex('kopf-example-bad', 'not-allowed', namespace))
            assert refused.returncode != 0
            assert "I'm too lazy anyway. Go away!" in refused.stderr, refused.stderr
            refused = _apply(kubectl, _kex('kopf-example-bad', 'wrong', namespace))
            assert refused.returncode != 0
            assert "Meh! I don't like it. Change the field." in refused.stderr, refused.stderr
            got = subprocess.run([kubectl, 'get', 'kex', '-n', namespace, 'kopf-example-bad'],
                                 capture_output=True, timeout=30)
            assert got.returncode != 0, "a refused object must not exist"

            # `dryrun` reaches the handler: validate1 lets a dry run of 'wrong' pass.
            dry = _apply(kubectl, _kex('kopf-example-bad', 'wrong', namespace), '--dry-run=server')
            assert dry.returncode == 0, dry.stderr

            # A valid object is admitted, with the handlers' warnings, and mutated.
            admitted = _apply(kubectl, _kex('kopf-example-1', 'value', namespace))
            assert admitted.returncode == 0, admitted.stderr
            assert 'Accessing as user-agent: kube-apiserver-admission' in admitted.stderr, admitted.stderr
            assert 'SSL peer is not identified.' in admitted.stderr
            assert "Also update status.field to match spec.field: 'value' != None" in admitted.stderr
            got = subprocess.run([kubectl, 'get', 'kex', '-n', namespace, 'kopf-example-1', '-o', 'json'],
                                 check=True, capture_output=True, text=True, timeout=30)
            assert json.loads(got.stdout)['spec'] == {'field': 'value', 'injected': 123}

            # The status subresource goes through `validate_subresources` (subresource='*').
            status = subprocess.run(
                [kubectl, 'patch', 'kex', '-n', namespace, 'kopf-example-1', '--subresource=status',
                 '--type=merge', '-p', '{"status": {"field": "other"}}'],
                capture_output=True, text=True, timeout=30)
            assert status.returncode != 0
            assert 'status.field MUST be equal to spec.field!' in status.stderr, status.stderr

            subprocess.run([kubectl, 'delete', 'kex', '-n', namespace, 'kopf-example-1'],
                           check=True, capture_output=True, timeout=30)
        assert runner.exception is None
        assert runner.exit_code == 0
        # On exit, the non-persistent webhooks are removed (as Kopf does).
        for kind in KINDS:
            assert not (_configuration(kubectl, kind) or {}).get('webhooks')
    finally:
        for kind in KINDS:
            subprocess.run([kubectl, 'delete', kind, NAME, '--ignore-not-found'], capture_output=True, timeout=30)
