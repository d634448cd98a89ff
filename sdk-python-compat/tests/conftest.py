import asyncio
import datetime
import json
from collections.abc import Iterator
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
