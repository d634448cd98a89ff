//! Logging and OpenTelemetry tracing.
//!
//! Logs always go to stderr. Traces are exported over OTLP/gRPC only when an endpoint is given
//! (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`): without one, the trace spans (target
//! [`TARGET`]) are disabled at their call sites and cost next to nothing. The exporter runs on
//! the SDK's batch thread with a bounded queue: a slow or absent collector drops spans (and logs
//! it), it never blocks a cycle and never stops the core.
//!
//! Spans: `cycle` (one root per processing cycle), `handler` (one per handler call, linked to
//! the previous attempt's span of the same handler on the same object) and `api` (one per write
//! to the API server); `sync` (one root per pass of a sync registration over a parent), `task`
//! (one root per task run) and `timer` ticks likewise. The context of the span that makes a call
//! travels to the handler service as the W3C `traceparent` in the gRPC metadata.

use std::collections::HashMap;
use std::future::Future;

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The target of every trace span: the log output never shows them, the OpenTelemetry layer
/// only sees them.
pub(crate) const TARGET: &str = "operon_trace";

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where and as what to export traces.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracing {
    /// The OTLP/gRPC endpoint (e.g. `http://127.0.0.1:4317`); `None` turns tracing off.
    pub endpoint: Option<String>,
    /// The `service.name` of the core's spans.
    pub service_name: String,
}

/// Keeps the tracer provider; [`Telemetry::shutdown`] flushes what is buffered.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (a missing collector costs a bounded wait).
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "The trace exporter did not shut down cleanly.");
        }
    }
}

/// Sets up logging (filter from `OPERON_LOG`; default: info, and the per-object lines of
/// `kopf.objects` at debug) and, with an endpoint, trace export. Must run inside a tokio runtime
/// (the exporter's gRPC channel is built there).
pub(crate) fn init(format: LogFormat, tracing_cfg: &Tracing) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPERON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kopf.objects=debug"))
        .add_directive(
            format!("{TARGET}=off")
                .parse()
                .expect("a valid filter directive"),
        );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
    .with_filter(filter);
    let mut problem = None;
    let provider = tracing_cfg.endpoint.as_deref().and_then(|endpoint| {
        match provider(endpoint, &tracing_cfg.service_name) {
            Ok(p) => Some(p),
            Err(err) => {
                problem = Some(format!("{err:#}"));
                None
            }
        }
    });
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("operon"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::TRACE),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(problem) = problem {
        tracing::error!(error = %problem, "Cannot set up the trace exporter; tracing stays off.");
    } else if let Some(endpoint) = &tracing_cfg.endpoint {
        tracing::info!(%endpoint, service = %tracing_cfg.service_name, "Exporting traces over OTLP.");
    }
    Telemetry { provider }
}

fn provider(endpoint: &str, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
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

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The W3C `traceparent` of a span, when it is being traced.
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut MapInjector(&mut fields));
    fields.remove("traceparent")
}

/// The OpenTelemetry context of a span, when it is being traced.
pub(crate) fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Runs one write to the API server in an `api` span with its verb and status code.
///
/// # Errors
/// The write's own error.
pub(crate) async fn api_write<T>(
    verb: &'static str,
    write: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    let span = tracing::info_span!(
        target: TARGET,
        "api",
        otel.name = format!("api {verb}"),
        verb,
        status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let result = write.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) if verb == "post" => 201,
        Ok(_) => 200,
        Err(err) => crate::runtime::kit::status_code(err),
    };
    span.record("status_code", i64::from(code));
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_absent_collector_costs_dropped_spans_not_a_stuck_or_crashed_core() {
        use opentelemetry::trace::{Tracer as _, TracerProvider as _};
        // Nothing listens on port 1: every export fails.
        let provider = provider("http://127.0.0.1:1", "test").expect("a provider");
        let tracer = provider.tracer("test");
        let started = std::time::Instant::now();
        for _ in 0..5000 {
            tracer.in_span("cycle", |_| {});
        }
        // Recording never waits for the exporter: 5,000 spans go into a bounded queue at once.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let provider_for_shutdown = provider.clone();
        let shutdown = tokio::task::spawn_blocking(move || provider_for_shutdown.shutdown());
        let result = tokio::time::timeout(std::time::Duration::from_secs(30), shutdown)
            .await
            .expect("the shutdown ends though the collector is away")
            .expect("no panic");
        let _ = result; // an export error is reported, never raised into the core
    }

    #[test]
    fn no_traceparent_without_a_tracer() {
        let span = tracing::info_span!(target: TARGET, "x");
        assert_eq!(traceparent(&span), None);
        assert!(span_context(&span).is_none());
    }
}
