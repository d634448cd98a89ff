"""
OpenTelemetry for handler runs, when it is installed (``pip install operon-kopf[otel]``).

The core sends its ``handler`` span's W3C ``traceparent`` in every call's metadata; each handler
run here is a span parented by it (``handler <id>``), with the exception recorded when the handler
raises. Without OpenTelemetry installed, or with tracing off, everything here is a no-op.

:func:`setup` exports to OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the application has
not configured a tracer provider of its own. The spans' ``service.name`` is ``OTEL_SERVICE_NAME``
(or a ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) when set, else the operator's name
(:func:`kopf._cogs.process.operator_name`), never OpenTelemetry's ``unknown_service:python3``.
"""
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

logger = logging.getLogger('kopf._core.engines.operon')

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra is not installed: no tracing.
    trace = None  # type: ignore[assignment]

_propagator: Any = TraceContextTextMapPropagator() if trace is not None else None
_provider: Any = None


def available() -> bool:
    return trace is not None


def resource_attributes(operator_name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """
    The attributes the tracer's resource gets on top of what OpenTelemetry reads from the
    environment: the operator's name as ``service.name``, unless the environment names the service.
    """
    named = bool(environ.get('OTEL_SERVICE_NAME')) or any(
        pair.split('=', 1)[0].strip() == 'service.name'
        for pair in environ.get('OTEL_RESOURCE_ATTRIBUTES', '').split(',')
    )
    return {} if named else {'service.name': operator_name}


def setup(operator_name: str = 'kopf') -> bool:
    """ Exports spans over OTLP if asked for by the environment; returns whether it does. """
    global _provider
    if trace is None or not os.environ.get('OTEL_EXPORTER_OTLP_ENDPOINT'):
        return False
    if _provider is not None:
        return True
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return True  # the application has configured its own provider: use it as it is.
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        logger.warning(f"OTEL_EXPORTER_OTLP_ENDPOINT is set, but the OpenTelemetry SDK or its OTLP "
                       f"exporter is not installed (pip install operon-kopf[otel]): {e}")
        return False
    resource = Resource.create(resource_attributes(operator_name, os.environ))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def shutdown() -> None:
    """ Exports what is buffered (at exit). """
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


@contextlib.contextmanager
def handler_span(handler_id: str, metadata: Mapping[str, str], attempt: int) -> Iterator[Any]:
    """
    A span for one handler run, parented by the core's span from the call's ``traceparent``;
    yields the span (``None`` without OpenTelemetry).
    """
    if trace is None:
        yield None
        return
    parent = _propagator.extract(carrier=dict(metadata))
    token = otel_context.attach(parent)
    try:
        tracer = trace.get_tracer('kopf')
        attributes: dict[str, str | int] = {'handler.id': handler_id, 'attempt': attempt}
        with tracer.start_as_current_span(f'handler {handler_id}', kind=trace.SpanKind.SERVER,
                                          attributes=attributes) as span:
            yield span
    finally:
        otel_context.detach(token)


def record_exception(span: Any, exc: BaseException, *, error: bool = True) -> None:
    """ Records a handler's exception on its span (an error unless it is a retry on purpose). """
    if span is None or trace is None:
        return
    span.record_exception(exc)
    if error:
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
