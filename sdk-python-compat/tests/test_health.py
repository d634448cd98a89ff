"""The standard gRPC health service and server reflection of `kopf serve` / `kopf run`."""
import asyncio
import json
import pathlib
import socket
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from kopf._transport import core as corep, server
from kopf.testing import KopfRunner

HERE = pathlib.Path(__file__).parent
HANDLER_SERVICE = 'operon.v1.HandlerService'
HEALTH_SERVICE = 'grpc.health.v1.Health'
REFLECTION_SERVICE = 'grpc.reflection.v1alpha.ServerReflection'

# The startup handler holds the start-up until the test creates RELEASE.
OPERATOR = '''
import os, time
import kopf

RELEASE = {release!r}

@kopf.on.startup()
def slow_startup(logger, **_):
    deadline = time.monotonic() + 30
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.05)
    logger.info("STARTUP RAN")

@kopf.on.create('kopfexamples', id='create_fn')
def create_fn(**_):
    return {{'message': 'hello world'}}
'''

SERVING = 'SERVING'
NOT_SERVING = 'NOT_SERVING'


def check(address: str, service: str = '') -> str:
    """ The status of ``service`` at ``address`` by name, or the gRPC code's name of the failure. """
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5, wait_for_ready=False)
        except grpc.RpcError as e:
            return str(e.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def listed(address: str) -> list[str]:
    """ The services that reflection lists at ``address`` (what `grpcurl -plaintext ADDRESS list` prints). """
    with grpc.insecure_channel(address) as channel:
        return sorted(ProtoReflectionDescriptorDatabase(channel).get_services())


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture()
def slow_operator(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    release = tmp_path / 'release'
    path = tmp_path / 'operator.py'
    path.write_text(OPERATOR.format(release=str(release)))
    return path, release


def test_health_is_not_serving_during_startup_then_serving_and_reflection_lists_the_services(
        slow_operator, registry):
    path, release = slow_operator
    port, health_port = corep.free_port(), corep.free_port()
    address, health_address = f'127.0.0.1:{port}', f'127.0.0.1:{health_port}'
    with KopfRunner(['serve', '--listen', address, '--health-listen', health_address, str(path)],
                    registry=registry, timeout=30) as runner:
        # Starting: the startup handler runs; the health port answers NOT_SERVING (not a refused
        # connection), and the handler port is not open yet.
        wait_until("the health port answers", lambda: check(health_address) != 'UNAVAILABLE')
        assert check(health_address) == NOT_SERVING
        assert check(health_address, HANDLER_SERVICE) == NOT_SERVING
        assert check(address) == 'UNAVAILABLE'

        release.touch()
        wait_until("SERVING after the startup handlers", lambda: check(health_address) == SERVING)
        for where in (address, health_address):
            assert check(where) == SERVING, where
            assert check(where, HANDLER_SERVICE) == SERVING, where
            assert check(where, 'operon.v1.NoSuchService') == 'NOT_FOUND', where

        # Reflection on the handler port: the handler service, health and reflection itself, with
        # the descriptors a client needs to call them (grpcurl's `describe`).
        assert listed(address) == [HEALTH_SERVICE, REFLECTION_SERVICE, HANDLER_SERVICE]
        with grpc.insecure_channel(address) as channel:
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            methods = {m.name for m in pool.FindServiceByName(HANDLER_SERVICE).methods}
        assert {'Describe', 'Invoke', 'Match', 'Daemon'} <= methods

        # The health port serves health (and reflection) alone: no handler is reachable there.
        assert listed(health_address) == [HEALTH_SERVICE, REFLECTION_SERVICE]
        with grpc.insecure_channel(health_address) as channel:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.HandlerServiceStub(channel).Describe(pb.DescribeRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert runner.exit_code == 0
    assert 'STARTUP RAN' in runner.output


def test_health_is_not_serving_while_draining_before_the_server_stops(
        slow_operator, registry, monkeypatch):
    path, release = slow_operator
    release.touch()
    port, health_port = corep.free_port(), corep.free_port()
    address, health_address = f'127.0.0.1:{port}', f'127.0.0.1:{health_port}'
    seen: dict[str, str] = {}
    original_stop = server.HandlerServer.stop

    async def stop(self: server.HandlerServer, grace: float | None = 1.0) -> None:
        # The moment the handler server is told to stop: what do its clients and the probes see?
        for where, service in [(address, ''), (address, HANDLER_SERVICE), (health_address, '')]:
            seen[f'{where}/{service}'] = await asyncio.to_thread(check, where, service)
        await original_stop(self, grace)

    monkeypatch.setattr(server.HandlerServer, 'stop', stop)
    with KopfRunner(['serve', '--listen', address, '--health-listen', health_address, str(path)],
                    registry=registry, timeout=30) as runner:
        wait_until("SERVING", lambda: check(address) == SERVING)
    assert runner.exit_code == 0
    assert seen == {f'{address}/': NOT_SERVING, f'{address}/{HANDLER_SERVICE}': NOT_SERVING,
                    f'{health_address}/': NOT_SERVING}
    assert check(health_address) == 'UNAVAILABLE'  # and then both servers are gone


@pytest.fixture()
def fakecore(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    script = tmp_path / 'operon'
    script.write_text(f'#!/bin/sh\nexec {sys.executable} {HERE / "fakecore.py"} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('OPERON_BIN', str(script))
    monkeypatch.setenv('FAKECORE_HEALTH', str(tmp_path / 'health.json'))
    monkeypatch.setenv('FAKECORE_DONE', str(tmp_path / 'done'))
    return tmp_path


def test_kopf_run_is_serving_for_the_core_and_not_serving_while_the_core_stops(
        fakecore, slow_operator, registry):
    path, release = slow_operator
    release.touch()
    health_address = f'127.0.0.1:{corep.free_port()}'
    with KopfRunner(['run', '-A', '--standalone', '--health-listen', health_address, str(path)],
                    registry=registry, timeout=30) as runner:
        wait_until("the core to describe", lambda: (fakecore / 'done').exists())
        assert check(health_address) == SERVING
    assert runner.exit_code == 0
    # What the core saw on the handler port: SERVING once it could describe the handlers, and
    # NOT_SERVING when it was told to stop (the operator drains: the core stops first).
    health: dict[str, Any] = json.loads((fakecore / 'health.json').read_text())
    assert health == {
        'described': {'': SERVING, HANDLER_SERVICE: SERVING},
        'stopping': {'': NOT_SERVING, HANDLER_SERVICE: NOT_SERVING},
    }



def test_a_health_port_that_cannot_be_served_is_a_clear_error(slow_operator, registry):
    path, release = slow_operator
    release.touch()
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        busy = f'127.0.0.1:{taken.getsockname()[1]}'
        with KopfRunner(['serve', '--listen', f'127.0.0.1:{corep.free_port()}', '--health-listen', busy, str(path)],
                        registry=registry, reraise=False, timeout=30) as runner:
            pass
    assert runner.exit_code == 1
    assert f'kopf: Cannot serve the health service on {busy}: Failed to bind' in runner.output
    assert 'STARTUP RAN' not in runner.output  # before anything of the operator's runs
