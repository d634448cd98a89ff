import asyncio
import datetime
import glob
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import pytest

import kopf
from kopf._core import registry as registries
from kopf._core.reactor import handling
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._transport import server

OBJ = {
    'apiVersion': 'kopf.dev/v1',
    'kind': 'KopfExample',
    'metadata': {
        'name': 'kopf-example-1', 'namespace': 'default', 'uid': 'uid-1',
        'labels': {'somelabel': 'somevalue'}, 'annotations': {'someannotation': 'somevalue'},
    },
    'spec': {'duration': '1m', 'field': 'value', 'items': ['item1', 'item2']},
}

REASONS = {'create': pb.REASON_CREATE, 'update': pb.REASON_UPDATE,
           'delete': pb.REASON_DELETE, 'resume': pb.REASON_RESUME, None: pb.REASON_UNSPECIFIED}


@pytest.fixture()
def registry() -> Iterator[registries.OperatorRegistry]:
    """ A fresh default registry for the decorators, restored afterwards. """
    old = registries._default
    new = registries.OperatorRegistry()
    registries.set_default_registry(new)
    try:
        yield new
    finally:
        registries._default = old


@pytest.fixture()
def settings() -> kopf.OperatorSettings:
    return kopf.OperatorSettings()


@pytest.fixture()
def backend(registry: registries.OperatorRegistry, settings: kopf.OperatorSettings) -> handling.OperatorBackend:
    return handling.OperatorBackend(registry=registry, settings=settings)


def ts(moment: datetime.datetime) -> Any:
    from google.protobuf import timestamp_pb2
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def make_request(
        handler_id: str,
        *,
        body: dict[str, Any] | None = None,
        reason: str | None = 'create',
        old: Any = None,
        new: Any = None,
        diff: Any = (),
        retry: int = 0,
        started: datetime.datetime | None = None,
        event_type: str = '',
        records: list[pb.Record] = (),  # type: ignore[assignment]
        has_old: bool | None = None,
        has_new: bool | None = None,
) -> pb.InvokeRequest:
    request = pb.InvokeRequest(
        handler_id=handler_id,
        reason=REASONS[reason],
        body_json=json.dumps(body if body is not None else OBJ).encode(),
        diff_json=json.dumps(list(diff)).encode(),
        retry=retry,
        event_type=event_type,
        subhandlers=list(records),
    )
    if old is not None or has_old:
        request.old_json = json.dumps(old).encode()
    if new is not None or has_new:
        request.new_json = json.dumps(new).encode()
    if started is not None:
        request.started.CopyFrom(ts(started))
    return request


def invoke(backend: handling.OperatorBackend, request: pb.InvokeRequest,
           call: server.CallInfo | None = None) -> pb.InvokeResponse:
    return asyncio.run(backend.invoke(request, call or server.CallInfo()))


def which(outcome: pb.Outcome) -> str:
    return outcome.WhichOneof('result') or ''


# -- the real plane and the core, for the end-to-end tests (marker `e2e`) --------------------------
# The plane: $KUBECONFIG if it answers; else `tests/cluster/up.sh` (idempotent) when its binaries are
# built. The core: $OPERON_BIN, else `operon` on $PATH, else the workspace's `target/debug/operon`.
# Tests that need them are skipped, with the reason, when they are not available.

SDK = pathlib.Path(__file__).resolve().parent.parent
ROOT = SDK.parent
CACHE = pathlib.Path(os.environ.get('OPERON_CACHE', pathlib.Path.home() / '.cache' / 'operon'))


def _kubectl() -> str | None:
    for candidate in [os.environ.get('KUBECTL'), *sorted(glob.glob(str(CACHE / 'kube-bins-*' / 'kubectl'))),
                      shutil.which('kubectl')]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _operon() -> str | None:
    for candidate in [os.environ.get('OPERON_BIN'), shutil.which('operon'), str(ROOT / 'target' / 'debug' / 'operon')]:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _answers(kubectl: str, kubeconfig: str) -> bool:
    try:
        result = subprocess.run([kubectl, '--kubeconfig', kubeconfig, 'get', '--raw', '/readyz'],
                                capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _plane(kubectl: str) -> str | None:
    kubeconfig = os.environ.get('KUBECONFIG')
    if kubeconfig and _answers(kubectl, kubeconfig):
        return kubeconfig
    up = ROOT / 'tests' / 'cluster' / 'up.sh'
    if up.exists() and glob.glob(str(CACHE / 'kube-bins-*' / 'kube-apiserver')):
        try:
            result = subprocess.run([str(up)], capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            return None
        match = re.search(r'export KUBECONFIG=(\S+)', result.stdout)
        if result.returncode == 0 and match and _answers(kubectl, match.group(1)):
            return match.group(1)
    return None


@pytest.fixture(scope='module')
def plane() -> tuple[str, str, str]:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl is not found ($KUBECTL, ~/.cache/operon/kube-bins-*/kubectl, $PATH)")
    operon = _operon()
    if operon is None:
        pytest.skip("the operon binary is not found ($OPERON_BIN, $PATH, target/debug/operon): "
                    "cargo build -p operon")
    kubeconfig = _plane(kubectl)
    if kubeconfig is None:
        pytest.skip("the local control plane is not available: start it with "
                    "`eval \"$(tests/cluster/up.sh)\"` (or point $KUBECONFIG at a cluster)")
    return kubectl, operon, kubeconfig


@pytest.fixture()
def namespace(plane: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    kubectl, operon, kubeconfig = plane
    monkeypatch.setenv('KUBECONFIG', kubeconfig)
    monkeypatch.setenv('OPERON_BIN', operon)
    name = f'kopf-sdk-e2e-{uuid.uuid4().hex[:8]}'
    subprocess.run([kubectl, 'apply', '-f', str(SDK.parent / 'deploy' / 'local' / 'crd.yaml')], check=True, capture_output=True, timeout=30)
    subprocess.run([kubectl, 'create', 'namespace', name], check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run([kubectl, 'delete', 'namespace', name, '--wait=false'], capture_output=True, timeout=30)


# -- in CI (`CI=true`), a test that must run and skips is a failure ----------------------------------
# The end-to-end tests (marker `e2e`: test_e2e_*.py, test_migration.py, ...) skip when the plane,
# the core or Kopf's distribution is missing, and the originality test when Kopf's source is: on a
# developer's machine that is a convenience, in CI it would be a green run that checked nothing.
# So with CI=true their skips (a skip mark, a fixture's or the test's own `pytest.skip`, an
# `importorskip`, at module level too) are turned into failures that say why they skipped.

REQUIRED_IN_CI = ('test_e2e.py', 'test_e2e_*.py', 'test_migration.py', 'test_originality.py',
                  'test_storages.py')


def _in_ci() -> bool:
    return os.environ.get('CI') == 'true'


def _required_in_ci(path: pathlib.Path, item: pytest.Item | None = None) -> bool:
    if any(path.match(pattern) for pattern in REQUIRED_IN_CI):
        return True
    return item is not None and item.get_closest_marker('e2e') is not None


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, 'Skipped: reason')
        return str(longrepr[2])
    return str(longrepr)


def _skip_failure(what: str, longrepr: Any) -> str:
    return (f"{what} skipped in CI (CI=true), where it must run (tests/conftest.py, REQUIRED_IN_CI); "
            f"it skipped because: {_skip_reason(longrepr)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (_in_ci() and report.skipped and not hasattr(report, 'wasxfail')
            and _required_in_ci(item.path, item)):
        report.outcome = 'failed'
        report.longrepr = _skip_failure('the test', report.longrepr)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if (_in_ci() and report.skipped and isinstance(collector, pytest.Module)
            and _required_in_ci(collector.path)):
        report.outcome = 'failed'
        report.longrepr = _skip_failure(f'the module {collector.nodeid}', report.longrepr)
    return report


@pytest.fixture(scope='session')
def kopf_examples(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """
    The ``examples/`` of Kopf 1.45.2's source: ``$KOPF_SOURCE``, ``/tmp/kopfsrc``, or its source
    distribution from PyPI (skipped when none is available).
    """
    for root in [os.environ.get('KOPF_SOURCE'), '/tmp/kopfsrc']:
        if root and (pathlib.Path(root) / 'examples' / '17-admission' / 'example.py').exists():
            return pathlib.Path(root) / 'examples'
    into = tmp_path_factory.mktemp('kopf-sdist')
    try:
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
                        '-d', str(into), 'kopf==1.45.2'], check=True, timeout=120, capture_output=True)
    except (subprocess.SubprocessError, OSError):
        pytest.skip("Kopf's examples are not available (no $KOPF_SOURCE, /tmp/kopfsrc or network)")
    for archive in into.glob('kopf-*.tar.gz'):
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter='data')
    found = sorted(into.glob('kopf-*/examples'))
    if not found:
        pytest.skip("Kopf's source distribution has no examples/")
    return found[0]


# -- Kopf's peering CRDs on the plane (the peering tests) ---------------------------------------------

PEERING_CRDS = ('clusterkopfpeerings.kopf.dev', 'kopfpeerings.kopf.dev')


@pytest.fixture(scope='module')
def peering_crds(plane: tuple[str, str, str], kopf_examples: pathlib.Path) -> str:
    """
    Kopf's peering CRDs (``KopfPeering``, ``ClusterKopfPeering`` of ``kopf.dev/v1``), from Kopf's own
    ``peering.yaml`` (its source distribution), applied if missing; the kubectl to use. They are left
    installed: cluster-wide definitions that other tests on the shared plane may be using at the same
    time (the peering objects are removed by the tests that create them, or with their namespaces).
    Only the CRDs are applied, not the file's ``default`` objects: those would make every operator on
    the plane that runs without ``--standalone`` take part in a peering.
    """
    kubectl, _, kubeconfig = plane
    text = (kopf_examples.parent / 'peering.yaml').read_text()
    crds = [doc for doc in text.split('\n---\n') if 'kind: CustomResourceDefinition' in doc]
    assert len(crds) == 2, text
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    subprocess.run([kubectl, 'apply', '-f', '-'], input='\n---\n'.join(crds), text=True, check=True,
                   capture_output=True, timeout=30, env=env)
    for crd in PEERING_CRDS:
        subprocess.run([kubectl, 'wait', '--for=condition=Established', f'crd/{crd}', '--timeout=30s'],
                       check=True, capture_output=True, timeout=40, env=env)
    return kubectl


@pytest.fixture(scope='module')
def real_kopf() -> str:
    """ Kopf from PyPI in its own venv (created if missing); skipped if it cannot be installed. """
    import realkopf
    try:
        return str(realkopf.kopf_venv() / 'kopf')
    except realkopf.KopfUnavailable as e:
        pytest.skip(str(e))
