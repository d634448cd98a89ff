//! OpenTelemetry end to end (issue 7): the core and a handler service — Python SDK, Go example
//! (proto/examples/go) or Rust example (proto/examples/rust) — export to a real Jaeger
//! (tests/cluster/jaeger-up.sh), and what Jaeger's query API returns is asserted: the core's
//! cycle, handler and API-write spans, the handler process's spans as children of the core's
//! handler spans (the W3C traceparent in the gRPC metadata), the error recorded on the failed
//! attempt's span, and the retry link from each attempt to the previous one. The dashboard's
//! object page links the attempts' traces.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{DynamicObject, PostParams};
use kube::{Api, ResourceExt};
use operon_e2e::jaeger::{Span, jaeger, spans};
use operon_e2e::{
    CoreProcess, HandlerProcess, PythonHandler, RESOURCE_ARG, go_example, plane, wait_for, widget,
    widget_resource, with_widget_ns,
};
use serde_json::{Value, json};

/// A create handler that fails once (a temporary error, retried after 1 s), then succeeds.
const HANDLERS: &str = r#"
import kopf

@kopf.on.create('e2e.operon.dev', 'v1', 'widgets')
def flaky(retry, **_):
    if retry < 1:
        raise kopf.TemporaryError("not ready yet", delay=1)
    return {'attempts': retry + 1}
"#;

/// The same handler for the Go and Rust examples, scripted by the widget's spec.
fn flaky_spec() -> Value {
    json!({"behaviour": {"flaky": {
        "fail_temporarily": 1, "delay": 1, "message": "not ready yet", "result": {"attempts": 2},
    }}})
}

/// The handler service under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Python,
    Go,
    Rust,
}

/// A running handler service of either kind; stopped when dropped.
enum Running {
    Python(PythonHandler),
    Example(HandlerProcess),
}

impl Running {
    fn url(&self) -> String {
        match self {
            Running::Python(p) => p.url(),
            Running::Example(p) => p.url(),
        }
    }

    /// Stops an example service gracefully (SIGTERM), which flushes its spans; it must exit
    /// cleanly. The Python service exports as it goes and is left running.
    async fn stop(&mut self) {
        if let Running::Example(p) = self {
            let status = p
                .terminate(Duration::from_secs(20))
                .await
                .expect("stopping the handler service");
            assert!(
                status.is_some_and(|s| s.success()),
                "the handler service exits cleanly on SIGTERM: {status:?}"
            );
        }
    }
}

impl Service {
    /// Starts the service exporting its spans to Jaeger as `service_name`. The Go and Rust
    /// examples batch their spans for 10 minutes: only their flush at a graceful stop
    /// ([`Running::stop`]) gets them to Jaeger in time.
    async fn start(self, otlp: &str, service_name: &str) -> Running {
        let schedule_delay = if self == Service::Python {
            "200"
        } else {
            "600000"
        };
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            ("OTEL_SERVICE_NAME", service_name),
            ("OTEL_BSP_SCHEDULE_DELAY", schedule_delay),
        ];
        let resource = ["--resource", RESOURCE_ARG];
        match self {
            Service::Python => Running::Python(
                PythonHandler::start("tracing", HANDLERS, &plane().await.kubeconfig, &env)
                    .await
                    .expect("the Python handler service starts"),
            ),
            // The Go example can fail the first attempt by its own option too.
            Service::Go => Running::Example(
                HandlerProcess::start_with_env(
                    Some(go_example().await),
                    "tracing-go",
                    &[
                        &resource[..],
                        &["--handler", "create:flaky,fail_temporarily=1"],
                    ]
                    .concat(),
                    &env,
                )
                .await
                .expect("the Go handler service starts"),
            ),
            Service::Rust => Running::Example(
                HandlerProcess::start_with_env(
                    None,
                    "tracing-rust",
                    &[&resource[..], &["--handler", "create:flaky"]].concat(),
                    &env,
                )
                .await
                .expect("the Rust handler service starts"),
            ),
        }
    }

    /// Whether a handler's temporary error makes its span's status Error (the Python SDK records
    /// the exception but keeps the status for an error that asks for a retry).
    fn temporary_error_is_an_error_status(self) -> bool {
        self != Service::Python
    }

    /// How the service names a temporary error's type in the recorded exception.
    fn temporary_error_type(self) -> &'static str {
        match self {
            Service::Python | Service::Go => "TemporaryError",
            Service::Rust => "temporary error",
        }
    }
}

fn by_id(spans: &[Span]) -> BTreeMap<&str, &Span> {
    spans.iter().map(|s| (s.id.as_str(), s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_python_handler_is_one_navigable_chain_of_traces_in_jaeger() {
    a_retried_handler_is_one_navigable_chain_of_traces(Service::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_go_handler_is_one_navigable_chain_of_traces_in_jaeger() {
    a_retried_handler_is_one_navigable_chain_of_traces(Service::Go).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_rust_handler_is_one_navigable_chain_of_traces_in_jaeger() {
    a_retried_handler_is_one_navigable_chain_of_traces(Service::Rust).await;
}

/// A create handled by `service`'s handler that fails once and then succeeds yields one trace
/// per attempt in Jaeger, with the core's spans and the handler process's, correctly linked.
async fn a_retried_handler_is_one_navigable_chain_of_traces(service: Service) {
    with_widget_ns("tracing", move |client, ns| async move {
        let jaeger = jaeger().await;
        let core_service = format!("operon-e2e-{ns}");
        let handler_service = format!("{service:?}-e2e-{ns}").to_lowercase();
        let mut handlers = service.start(&jaeger.otlp, &handler_service).await;
        let args: Vec<String> = [
            "--handler",
            &handlers.url(),
            "-n",
            &ns,
            "--otlp-endpoint",
            &jaeger.otlp,
            "--service-name",
            &core_service,
            "--jaeger-ui",
            &jaeger.query,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut core = CoreProcess::start("tracing", &args, &plane().await.kubeconfig)
            .await
            .expect("the core starts");
        core.wait_ready(Duration::from_secs(90)).await;

        let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &widget_resource());
        let created = api
            .create(&PostParams::default(), &widget("traced", flaky_spec()))
            .await
            .expect("creating the widget");
        let uid = created.uid().expect("a uid");
        wait_for(
            "the handler to succeed on its second attempt",
            Duration::from_secs(90),
            || {
                let api = api.clone();
                async move {
                    let o = api.get("traced").await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(
                        (o.data["status"]["flaky"] == json!({"attempts": 2})).then_some(()),
                    )
                }
            },
        )
        .await;

        handlers.stop().await;

        // Jaeger: both attempts' traces, each with the core's spans and the handler process's.
        let attempts: Vec<(Span, Vec<Span>)> = wait_for(
            "Jaeger to return both attempts' traces with the core's and the handler's spans",
            Duration::from_secs(60),
            || async {
                let traces = jaeger
                    .traces(&core_service)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let mut found = Vec::new();
                for trace in &traces {
                    let all = spans(trace);
                    let handler = all.iter().find(|s| {
                        s.service == core_service
                            && s.name == "handler flaky"
                            && s.tag("handler.id") == Some(&json!("flaky"))
                    });
                    let from_handler = all.iter().any(|s| s.service == handler_service);
                    if let (Some(handler), true) = (handler, from_handler) {
                        found.push((handler.clone(), all.clone()));
                    }
                }
                found.sort_by_key(|(h, _)| h.tag("attempt").and_then(Value::as_i64));
                Ok::<_, String>((found.len() >= 2).then_some(found))
            },
        )
        .await;
        assert_eq!(attempts.len(), 2, "one trace per attempt");
        for (n, (handler, all)) in attempts.iter().enumerate() {
            let ids = by_id(all);
            let attempt = i64::try_from(n + 1).expect("small");
            assert_eq!(handler.tag("attempt"), Some(&json!(attempt)));
            // The core's handler span is a child of the cycle's root span.
            let cycle = ids[handler.parent().expect("the handler span has a parent")];
            assert_eq!(cycle.name, "cycle widgets.e2e.operon.dev/v1");
            assert_eq!(cycle.service, core_service);
            assert!(cycle.parent().is_none(), "the cycle span is a root");
            assert_eq!(cycle.tag("uid"), Some(&json!(uid)));
            assert_eq!(cycle.tag("name"), Some(&json!("traced")));
            assert_eq!(cycle.tag("namespace"), Some(&json!(ns)));
            assert_eq!(cycle.tag("cause"), Some(&json!("create")));
            assert!(cycle.tag("resource_version").is_some());
            let outcome = if attempt == 1 { "retry" } else { "success" };
            assert_eq!(handler.tag("outcome"), Some(&json!(outcome)));
            // The handler process's span is a child of the core's handler span: the traceparent
            // travelled.
            let theirs: Vec<&Span> = all
                .iter()
                .filter(|s| s.service == handler_service)
                .collect();
            assert_eq!(
                theirs.len(),
                1,
                "one {service:?} span per attempt: {theirs:?}"
            );
            assert_eq!(theirs[0].name, "handler flaky");
            assert_eq!(theirs[0].trace_id, handler.trace_id);
            assert_eq!(theirs[0].parent(), Some(handler.id.as_str()));
            assert_eq!(theirs[0].tag("handler.id"), Some(&json!("flaky")));
            assert_eq!(theirs[0].tag("attempt"), Some(&json!(attempt)));
            // The cycle wrote its progress: an API write span with its verb and status code.
            let writes: Vec<&&Span> = ids
                .values()
                .filter(|s| s.name == "api patch" && s.parent() == Some(cycle.id.as_str()))
                .collect();
            assert!(!writes.is_empty(), "an API write under the cycle");
            assert!(
                writes
                    .iter()
                    .all(|w| w.tag("status_code") == Some(&json!(200)))
            );
        }
        // The first attempt's error is recorded on the handler process's span.
        let [first_theirs, second_theirs] = [0, 1].map(|n| {
            attempts[n]
                .1
                .iter()
                .find(|s| s.service == handler_service)
                .expect("the handler process's span")
        });
        let first_trace = jaeger
            .trace(&first_theirs.trace_id)
            .await
            .expect("the trace");
        for text in [service.temporary_error_type(), "not ready yet"] {
            assert!(
                span_logs_mention(&first_trace, &first_theirs.id, text),
                "the error ({text}) is recorded on the {service:?} span: {first_trace}"
            );
        }
        let error_status = |s: &Span| s.tag("otel.status_code") == Some(&json!("ERROR"));
        assert_eq!(
            error_status(first_theirs),
            service.temporary_error_is_an_error_status(),
            "the failed attempt's status: {first_theirs:?}"
        );
        assert!(!error_status(second_theirs), "{second_theirs:?}");
        // The retry is navigable: the second attempt's span links to the first's.
        let (first, second) = (&attempts[0].0, &attempts[1].0);
        assert_ne!(
            first.trace_id, second.trace_id,
            "each attempt is its own trace"
        );
        assert!(
            second
                .references
                .iter()
                .any(|(_, trace, span)| *trace == first.trace_id && *span == first.id),
            "the second attempt links to the first: {:?}",
            second.references
        );

        // The dashboard's object page links both attempts' traces in the Jaeger UI.
        let page = core
            .get(&format!("/objects/widgets.e2e.operon.dev/v1/{ns}/traced"))
            .await
            .expect("the object page")
            .text();
        for (handler, _) in &attempts {
            let link = format!("{}/trace/{}", jaeger.query, handler.trace_id);
            assert!(
                page.contains(&link),
                "the object page links {link}:\n{page}"
            );
        }
        drop(handlers);
        core.kill();
    })
    .await;
}

/// Whether the span's logs (OpenTelemetry span events, e.g. a recorded exception) mention `text`.
fn span_logs_mention(trace: &Value, span_id: &str, text: &str) -> bool {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["spanID"] == json!(span_id))
        .flat_map(|s| s["logs"].as_array().into_iter().flatten())
        .any(|log| log.to_string().contains(text))
}
