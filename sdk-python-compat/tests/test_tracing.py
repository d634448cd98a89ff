"""OpenTelemetry (the `otel` extra): a span per handler run, parented by the core's span."""
from typing import Any

import pytest

import kopf
from kopf._transport import server, tracing

from conftest import invoke, make_request, which

pytest.importorskip('opentelemetry.sdk', reason="the `otel` extra is not installed")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
PARENT_ID = '00f067aa0ba902b7'
TRACEPARENT = f'00-{TRACE_ID}-{PARENT_ID}-01'

_exporter = InMemorySpanExporter()


@pytest.fixture()
def spans() -> Any:
    if not hasattr(tracing, '_test_provider'):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)  # once per process: OpenTelemetry allows no second one.
        tracing._test_provider = provider  # type: ignore[attr-defined]
    _exporter.clear()
    yield _exporter


def test_a_handler_run_is_a_span_under_the_cores_span(registry, backend, spans):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        assert trace.get_current_span().get_span_context().trace_id == int(TRACE_ID, 16)

    call = server.CallInfo(metadata={'traceparent': TRACEPARENT})
    assert which(invoke(backend, make_request(fn.__qualname__, retry=2), call).outcome) == 'success'
    [span] = spans.get_finished_spans()
    assert span.name == f'handler {fn.__qualname__}'
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is not None and span.parent.span_id == int(PARENT_ID, 16) and span.parent.is_remote
    assert span.attributes['handler.id'] == fn.__qualname__
    assert span.attributes['attempt'] == 3
    assert span.attributes['outcome'] == 'success'
    assert span.status.status_code == trace.StatusCode.UNSET


def test_a_handlers_exception_is_recorded_on_its_span(registry, backend, spans):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        raise ValueError("boom")

    call = server.CallInfo(metadata={'traceparent': TRACEPARENT})
    assert which(invoke(backend, make_request(fn.__qualname__), call).outcome) == 'arbitrary_error'
    [span] = spans.get_finished_spans()
    assert span.status.status_code == trace.StatusCode.ERROR
    [event] = span.events
    assert event.name == 'exception'
    assert event.attributes['exception.type'] == 'ValueError'
    assert event.attributes['exception.message'] == 'boom'


def test_a_temporary_error_is_recorded_but_is_no_span_error(registry, backend, spans):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        raise kopf.TemporaryError("later", delay=1)

    invoke(backend, make_request(fn.__qualname__), server.CallInfo(metadata={'traceparent': TRACEPARENT}))
    [span] = spans.get_finished_spans()
    assert span.events[0].attributes['exception.type'].endswith('TemporaryError')
    assert span.status.status_code == trace.StatusCode.UNSET


def test_without_a_traceparent_a_run_starts_its_own_trace(registry, backend, spans):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        pass

    invoke(backend, make_request(fn.__qualname__))
    [span] = spans.get_finished_spans()
    assert span.parent is None


def test_spans_carry_the_operators_name_unless_the_environment_names_the_service():
    assert tracing.resource_attributes('widgets', {}) == {'service.name': 'widgets'}
    assert tracing.resource_attributes('widgets', {'OTEL_SERVICE_NAME': 'mine'}) == {}
    assert tracing.resource_attributes('widgets', {'OTEL_SERVICE_NAME': ''}) == {'service.name': 'widgets'}
    env = {'OTEL_RESOURCE_ATTRIBUTES': 'team=a, service.name=mine'}
    assert tracing.resource_attributes('widgets', env) == {}
    from opentelemetry.sdk.resources import Resource
    resource = Resource.create(tracing.resource_attributes('widgets', {}))
    assert resource.attributes['service.name'] == 'widgets'


def test_the_operators_name_is_its_first_file_or_module(tmp_path, monkeypatch):
    from kopf._cogs import process
    monkeypatch.setattr(process, '_loaded_names', [])
    monkeypatch.setattr('sys.argv', ['kopf', 'run'])
    assert process.operator_name() == 'kopf'
    monkeypatch.setattr('sys.argv', ['/srv/my_operator.py'])
    assert process.operator_name() == 'my_operator'
    script = tmp_path / 'widgets_operator.py'
    script.write_text('X = 1\n')
    process.import_operator_code([str(script)], ['json'])
    assert process.operator_name() == 'widgets_operator'
    process.import_operator_code([], ['json'])
    assert process.operator_name() == 'json'
