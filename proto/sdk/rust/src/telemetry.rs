//! Logging and tracing: logs go to stderr (filter from `RUST_LOG`, default `info`); with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP/gRPC, and every handler
//! call's span is a child of the core's span, whose W3C `traceparent` arrives in the call's
//! metadata (as in `proto/examples/rust`).

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The exporter, when one runs; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter.
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "The trace exporter did not shut down cleanly.");
        }
    }
}

/// Installs the global subscriber (unless one is installed already, which is then left alone:
/// add a `tracing_opentelemetry` layer to it yourself to export spans) and, with an endpoint in
/// the environment, the OTLP exporter. `service_name` is the default `service.name`
/// (`OTEL_SERVICE_NAME` wins). Must run inside a tokio runtime.
pub(crate) fn init(service_name: &str) -> Telemetry {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| service_name.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let mut problem = None;
    let provider = endpoint.as_deref().and_then(|endpoint| {
        provider(endpoint, &service_name)
            .map_err(|error| problem = Some(error.to_string()))
            .ok()
    });
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("operon-handler"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if let Some(problem) = problem {
        tracing::error!(%problem, "Cannot set up the trace exporter; tracing stays off.");
    } else if let Some(endpoint) = endpoint {
        if installed {
            tracing::info!(%endpoint, service = %service_name, "Exporting traces over OTLP.");
        } else {
            tracing::warn!(%endpoint, "A tracing subscriber was installed before; its layers decide what is exported.");
        }
    }
    Telemetry { provider }
}

fn provider(
    endpoint: &str,
    service_name: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}

struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Makes `span` a child of the caller's span named by the metadata's W3C `traceparent` (no-op
/// without one, or when spans are not exported).
pub(crate) fn continue_trace(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
    let _ = span.set_parent(parent);
}

/// Records a call's outcome on its span (an error sets the span's status).
pub(crate) fn record_outcome(span: &tracing::Span, outcome: &str, error: Option<&str>) {
    span.record("outcome", outcome);
    if let Some(message) = error {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_message", message);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt as _;

    use super::*;

    #[test]
    fn handler_spans_continue_the_core_trace() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .parse()
                    .unwrap(),
            );
            let span = tracing::info_span!("handler");
            continue_trace(&span, &metadata);
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_ne!(sc.span_id().to_string(), "00f067aa0ba902b7");
            // Without a traceparent, a new trace.
            let root = tracing::info_span!("handler");
            continue_trace(&root, &tonic::metadata::MetadataMap::new());
            assert_ne!(
                root.context().span().span_context().trace_id(),
                sc.trace_id()
            );
        });
    }
}
