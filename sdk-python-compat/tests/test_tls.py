"""`kopf serve` over TLS: the handler service requires the client's certificate (mutual TLS)."""
import asyncio
import pathlib
import shutil
import subprocess

import grpc
import grpc.aio
import pytest

from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from kopf._transport import server

from test_transport import FakeBackend

pytestmark = pytest.mark.skipif(shutil.which('openssl') is None, reason="needs the openssl CLI")


def _openssl(*args: str) -> None:
    subprocess.run(['openssl', *args], check=True, capture_output=True)


def _ca(d: pathlib.Path, name: str) -> None:
    _openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
             '-days', '2', '-subj', f'/CN={name}', '-keyout', str(d / f'{name}.key'),
             '-out', str(d / f'{name}.crt'))


def _issue(d: pathlib.Path, ca: str, name: str, usage: str) -> None:
    (d / f'{name}.ext').write_text(f'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\n')
    _openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
             '-subj', f'/CN={name}', '-keyout', str(d / f'{name}.key'), '-out', str(d / f'{name}.csr'))
    _openssl('x509', '-req', '-in', str(d / f'{name}.csr'), '-CA', str(d / f'{ca}.crt'),
             '-CAkey', str(d / f'{ca}.key'), '-CAcreateserial', '-days', '2',
             '-extfile', str(d / f'{name}.ext'), '-out', str(d / f'{name}.crt'))


@pytest.fixture(scope='module')
def pki(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp('pki')
    _ca(d, 'ca')
    _issue(d, 'ca', 'server', 'serverAuth')
    _issue(d, 'ca', 'client', 'clientAuth')
    _ca(d, 'other-ca')
    _issue(d, 'other-ca', 'other-client', 'clientAuth')
    return d


def _describe(pki: pathlib.Path, client: str | None) -> str:
    async def scenario() -> str:
        tls = server.ServerTls(str(pki / 'server.crt'), str(pki / 'server.key'), str(pki / 'ca.crt'))
        srv = server.HandlerServer(FakeBackend(), tls=tls)
        port = await srv.start()
        try:
            creds = grpc.ssl_channel_credentials(
                root_certificates=(pki / 'ca.crt').read_bytes(),
                private_key=(pki / f'{client}.key').read_bytes() if client else None,
                certificate_chain=(pki / f'{client}.crt').read_bytes() if client else None,
            )
            async with grpc.aio.secure_channel(f'localhost:{port}', creds) as channel:
                stub = pb_grpc.HandlerServiceStub(channel)
                manifest = await stub.Describe(pb.DescribeRequest(core_version='9'), timeout=5)
                return str(manifest.service_name)
        finally:
            await srv.stop()
    return asyncio.run(scenario())


def test_a_client_with_a_certificate_of_the_ca_is_served(pki: pathlib.Path) -> None:
    assert _describe(pki, 'client') == 'fake for 9'


@pytest.mark.parametrize('client', ['other-client', None])
def test_a_client_without_a_certificate_of_the_ca_is_refused(pki: pathlib.Path, client: str | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        _describe(pki, client)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_serve_requires_the_certificate_and_key_together() -> None:
    from kopf import cli
    with pytest.raises(cli.UsageError, match='--tls-cert and --tls-key go together'):
        cli.execute(['serve', '--tls-cert', 'x.crt', 'nonexistent.py'])


SERVED = '''
import kopf

@kopf.on.create('kopfexamples')
def create_fn(name, **_):
    return {'message': f'hello over mutual TLS, {name}'}
'''


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


@pytest.mark.e2e
def test_the_real_core_calls_kopf_serve_over_mutual_tls(plane, namespace, pki, tmp_path) -> None:
    import json
    import os
    import sys
    import time
    kubectl, operon, kubeconfig = plane
    operator_py = tmp_path / 'served.py'
    operator_py.write_text(SERVED)
    port, http_port = _free_port(), _free_port()
    env = {**os.environ, 'KUBECONFIG': kubeconfig}
    serve_log = tmp_path / 'serve.log'
    with open(serve_log, 'wb') as log:
        serve = subprocess.Popen(
            [sys.executable, '-m', 'kopf', 'serve', str(operator_py), '--listen', f'127.0.0.1:{port}',
             '--tls-cert', str(pki / 'server.crt'), '--tls-key', str(pki / 'server.key'),
             '--tls-client-ca', str(pki / 'ca.crt')],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    core_log = tmp_path / 'core.log'
    with open(core_log, 'wb') as log:
        core = subprocess.Popen(
            [operon, 'run', '--handler', f'https://localhost:{port}', '-n', namespace,
             '--http', f'127.0.0.1:{http_port}', '--tls-ca', str(pki / 'ca.crt'),
             '--tls-cert', str(pki / 'client.crt'), '--tls-key', str(pki / 'client.key')],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        obj = ['-n', namespace, '-f', str(pathlib.Path(__file__).parent.parent / 'examples' / 'obj.yaml')]
        subprocess.run([kubectl, 'apply', *obj], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 90
        status: dict[str, object] = {}
        while time.monotonic() < deadline and 'create_fn' not in status:
            assert core.poll() is None, core_log.read_text()
            got = subprocess.run([kubectl, 'get', *obj, '-o', 'json'], check=True, capture_output=True, timeout=30)
            status = json.loads(got.stdout).get('status', {})
            time.sleep(0.3)
        assert status.get('create_fn') == {'message': 'hello over mutual TLS, kopf-example-1'}, \
            core_log.read_text() + serve_log.read_text()
    finally:
        core.terminate()
        core.wait(timeout=30)
        subprocess.run([kubectl, 'patch', *obj, '--type=merge', '-p', '{"metadata": {"finalizers": null}}'],
                       capture_output=True, timeout=30)
        serve.terminate()
        serve.wait(timeout=30)
