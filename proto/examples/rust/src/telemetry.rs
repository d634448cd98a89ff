//! OpenTelemetry: each handler run is a span (`handler <id>`) parented by the core's span, whose
//! W3C `traceparent` arrives in the call's gRPC metadata; a failed run records its error.
//! Spans are exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (service name from
//! `OTEL_SERVICE_NAME`); otherwise the global tracer is a no-op and costs next to nothing.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The exporter, when one runs; [`Exporter::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Exporter(Option<SdkTracerProvider>);

impl Exporter {
    /// Exports what is buffered.
    pub fn shutdown(self) {
        if let Some(provider) = self.0 {
            let _ = provider.shutdown();
        }
    }
}

/// Starts exporting when the environment asks for it (inside a tokio runtime). A collector that
/// is away costs dropped spans and a log line, never a failed call.
pub fn init() -> Exporter {
    let Some(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    else {
        return Exporter(None);
    };
    use opentelemetry_otlp::WithExportConfig;
    match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
    {
        Ok(exporter) => {
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(opentelemetry_sdk::Resource::builder().build())
                .build();
            global::set_tracer_provider(provider.clone());
            Exporter(Some(provider))
        }
        Err(err) => {
            eprintln!("cannot export traces: {err}");
            Exporter(None)
        }
    }
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

/// One handler run's span.
pub struct RunSpan(global::BoxedSpan);

impl std::fmt::Debug for RunSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunSpan")
    }
}

impl RunSpan {
    /// Starts the span of a run of `handler` (attempt `retry + 1`) under the caller's span.
    pub fn start(metadata: &tonic::metadata::MetadataMap, handler: &str, retry: u32) -> Self {
        let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
        let tracer = global::tracer("operon-example-handler");
        let span = tracer
            .span_builder(format!("handler {handler}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("handler.id", handler.to_owned()),
                KeyValue::new("attempt", i64::from(retry) + 1),
            ])
            .start_with_context(&tracer, &parent);
        RunSpan(span)
    }

    /// Ends the span with the run's outcome; an error outcome is recorded as an exception.
    pub fn finish(mut self, outcome: &str, error: Option<&str>) {
        self.0
            .set_attribute(KeyValue::new("outcome", outcome.to_owned()));
        if let Some(message) = error {
            self.0.add_event(
                "exception",
                vec![
                    KeyValue::new("exception.type", outcome.to_owned()),
                    KeyValue::new("exception.message", message.to_owned()),
                ],
            );
            self.0.set_status(Status::error(message.to_owned()));
        }
        self.0.end();
    }
}
