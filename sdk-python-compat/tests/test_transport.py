"""The gRPC server of the contract, and the core's log lines in Python's logging."""
import asyncio
import json
import re
import logging
from typing import Any

import grpc
import grpc.aio
import pytest

from kopf._core import logs as loggers
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from kopf._transport import corelogs, server


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, server.CallInfo]] = []

    async def describe(self, request: pb.DescribeRequest, call: server.CallInfo) -> pb.Manifest:
        self.calls.append(('describe', call))
        return pb.Manifest(service_name=f'fake for {request.core_version}', contract_revision=1)

    async def invoke(self, request: pb.InvokeRequest, call: server.CallInfo) -> pb.InvokeResponse:
        self.calls.append((request.handler_id, call))
        if request.handler_id == 'missing':
            raise LookupError("No handler with id 'missing' is registered.")
        if request.handler_id == 'broken':
            raise RuntimeError("the backend is broken")
        return pb.InvokeResponse(outcome=pb.Outcome(success=pb.Success(result_json=b'1')))


def test_the_server_serves_the_backend_and_survives_its_failures():
    backend = FakeBackend()

    async def scenario() -> list[Any]:
        srv = server.HandlerServer(backend)
        port = await srv.start()
        results: list[Any] = []
        try:
            async with grpc.aio.insecure_channel(f'127.0.0.1:{port}') as channel:
                stub = pb_grpc.HandlerServiceStub(channel)
                manifest = await stub.Describe(pb.DescribeRequest(core_version='1.2.3'), timeout=5)
                results.append(manifest.service_name)
                for handler_id in ('missing', 'broken'):
                    try:
                        await stub.Invoke(pb.InvokeRequest(handler_id=handler_id), timeout=5)
                    except grpc.aio.AioRpcError as e:
                        results.append((e.code(), e.details()))
                response = await stub.Invoke(pb.InvokeRequest(handler_id='ok'), timeout=7,
                                             metadata=(('traceparent', '00-abc-def-01'),))
                results.append(response.outcome.success.result_json)
        finally:
            await srv.stop()
        return results

    results = asyncio.run(scenario())
    assert results[0] == 'fake for 1.2.3'
    assert results[1] == (grpc.StatusCode.NOT_FOUND, "No handler with id 'missing' is registered.")
    assert results[2][0] == grpc.StatusCode.INTERNAL and 'the backend is broken' in results[2][1]
    assert results[3] == b'1'
    call = backend.calls[-1][1]
    assert call.traceparent == '00-abc-def-01'
    remaining = call.time_remaining()
    assert remaining is not None and 5 < remaining <= 7.1


def line(**kwargs: Any) -> str:
    data = {'timestamp': '2026-11-22T02:26:01.557413Z', 'level': 'INFO', 'target': 'kopf.objects',
            'fields': {'message': "Handler 'x' succeeded.", 'object': 'default/kopf-example-1'}}
    data.update(kwargs)
    return json.dumps(data)


def test_per_object_lines_are_rendered_as_kopfs_object_logger_renders_them():
    record = corelogs.make_record(line())
    assert record is not None
    assert record.name == 'kopf.objects' and record.levelno == logging.INFO
    assert record.getMessage() == "Handler 'x' succeeded."
    assert record.created == pytest.approx(1795314361.557413)
    plain = loggers.make_formatter(loggers.LogFormat.PLAIN, log_prefix=None)
    assert plain.format(record) == "[default/kopf-example-1] Handler 'x' succeeded."
    full = loggers.make_formatter(loggers.LogFormat.FULL, log_prefix=None)
    assert full.format(record).endswith(
        "kopf.objects         [INFO    ] [default/kopf-example-1] Handler 'x' succeeded.")
    as_json = json.loads(loggers.make_formatter(loggers.LogFormat.JSON).format(record))
    assert as_json['message'] == "Handler 'x' succeeded."
    assert as_json['object'] == {'namespace': 'default', 'name': 'kopf-example-1'}
    assert as_json['severity'] == 'info'


def test_cluster_scoped_objects_have_no_namespace_in_the_prefix():
    record = corelogs.make_record(line(fields={'message': 'm', 'object': 'my-node'}))
    assert record is not None
    plain = loggers.make_formatter(loggers.LogFormat.PLAIN, log_prefix=None)
    assert plain.format(record) == '[my-node] m'


@pytest.mark.parametrize('level, expected', [
    ('TRACE', 5), ('DEBUG', logging.DEBUG), ('INFO', logging.INFO),
    ('WARN', logging.WARNING), ('ERROR', logging.ERROR),
])
def test_levels(level, expected):
    record = corelogs.make_record(line(level=level))
    assert record is not None and record.levelno == expected


def test_other_lines_go_to_core_loggers_with_their_fields():
    record = corelogs.make_record(line(target='operon::runtime::engine', level='WARN', fields={
        'message': 'The handler service does not answer Describe yet.', 'service': 'http://x', 'retry_in': '200ms'}))
    assert record is not None
    assert record.name == 'kopf._core.engines.operon.runtime.engine'
    assert record.getMessage() == ('The handler service does not answer Describe yet. '
                                   '(service=http://x, retry_in=200ms)')
    assert not hasattr(record, 'k8s_ref')


def test_messages_with_percent_signs_are_not_formatted():
    record = corelogs.make_record(line(fields={'message': '100% done %s', 'object': 'ns/n'}))
    assert record is not None and record.getMessage() == '100% done %s'


def test_objects_and_diffs_are_rendered_as_kopfs_reprs():
    body = {'metadata': {'annotations': {'kopf.zalando.org/x': '{"message":"Handler \'x\' failed permanently: no"}'}},
            'spec': {'flag': True, 'none': None}}
    record = corelogs.make_record(line(fields={'message': f'Creation is in progress: {json.dumps(body)}', 'object': 'a/b'}))
    assert record is not None and record.getMessage() == f'Creation is in progress: {body!r}'
    assert "\\'x\\' failed permanently" in record.getMessage()  # as Kopf's repr escapes it
    diff = [['change', ['spec', 'field'], 'value', 'changed'], ['add', ['spec', 'x'], None, 1]]
    record = corelogs.make_record(line(fields={'message': f'Updating diff: {json.dumps(diff)}', 'object': 'a/b'}))
    assert record is not None
    assert record.getMessage() == "Updating diff: (('change', ('spec', 'field'), 'value', 'changed'), ('add', ('spec', 'x'), None, 1))"
    assert corelogs.pythonize('Creation is in progress: {not json}') == 'Creation is in progress: {not json}'


def test_patches_and_inconsistencies_are_rendered_as_kopfs_reprs():
    # Kopf's e2e harness counts "'(.+?)' failed with an exception and will stop" over the whole
    # output: a record's message inside a logged patch must not count (Kopf's repr escapes it).
    patch = {'metadata': {'annotations': {'kopf.zalando.org/h': json.dumps(
        {'message': "Handler 'h' failed with an exception and will stop now: boom"})}}}
    record = corelogs.make_record(line(fields={'message': f'Merge-patching the resource with: {json.dumps(patch)}',
                                               'object': 'a/b'}))
    assert record is not None and record.getMessage() == f'Merge-patching the resource with: {patch!r}'
    assert 'h' not in re.findall(r"'(.+?)' failed (?:permanently|with an exception and will stop)", record.getMessage())
    ops = [{'op': 'test', 'path': '/metadata/resourceVersion', 'value': '7'}]
    record = corelogs.make_record(line(fields={'message': f'JSON-patching the resource with: {json.dumps(ops)}',
                                               'object': 'a/b'}))
    assert record is not None and record.getMessage() == f'JSON-patching the resource with: {ops!r}'
    lost = [['remove', ['status'], {'h': {'x': 1}}, None]]
    record = corelogs.make_record(line(fields={
        'message': f'Merge-patching finished with inconsistencies: {json.dumps(lost)}', 'object': 'a/b'}))
    assert record is not None
    assert record.getMessage() == "Merge-patching finished with inconsistencies: (('remove', ('status',), {'h': {'x': 1}}, None),)"


def test_non_json_lines_are_logged_as_they_are():
    fatal = corelogs.make_record('operon: cannot load the Kubernetes configuration: boom\n')
    assert fatal is not None and fatal.levelno == logging.ERROR and fatal.name == 'kopf._core.engines.operon'
    assert fatal.getMessage() == 'operon: cannot load the Kubernetes configuration: boom'
    other = corelogs.make_record('something else')
    assert other is not None and other.levelno == logging.WARNING
    assert corelogs.make_record('\n') is None


def test_forwarding_respects_the_loggers_levels(caplog):
    caplog.set_level(logging.INFO)
    corelogs.forward(line(level='DEBUG', fields={'message': 'hidden', 'object': 'a/b'}))
    corelogs.forward(line(level='INFO', fields={'message': 'shown', 'object': 'a/b'}))
    assert caplog.messages == ['shown']


def test_lines_their_logger_drops_are_not_rendered(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    rendered = []
    monkeypatch.setattr(corelogs, 'pythonize', lambda message: rendered.append(message) or message)
    body = line(level='DEBUG', fields={'message': 'Creation is in progress: {"a": 1}', 'object': 'a/b'})
    assert corelogs.make_record(body, enabled_only=True) is None
    assert rendered == []
    assert corelogs.make_record(body) is not None  # without the flag: every line is a record.
    assert rendered == ['Creation is in progress: {"a": 1}']


@pytest.mark.parametrize('level, expected', [
    (logging.DEBUG, 'info,kopf.objects=debug'),
    (logging.INFO, 'info'),
    (logging.WARNING, 'info'),
])
def test_the_core_writes_per_object_debug_lines_only_when_they_are_shown(level, expected):
    objects = logging.getLogger('kopf.objects')
    saved = objects.level
    objects.setLevel(level)
    try:
        assert corelogs.core_filter() == expected
    finally:
        objects.setLevel(saved)
