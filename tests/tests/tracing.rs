//! OpenTelemetry end to end (issue 7): the core and a handler service — Python SDK, Go example
//! (proto/examples/go) or Rust example (proto/examples/rust) — export to a real Jaeger
//! (tests/cluster/jaeger-up.sh), and what Jaeger's query API returns is asserted: the core's
//! cycle, handler and API-write spans, the handler process's spans as children of the core's
//! handler spans (the W3C traceparent in the gRPC metadata), the error recorded on the failed
//! attempt's span, and the retry link from each attempt to the previous one. The dashboard's
//! object page links the attempts' traces. The operators written on the Rust and Go handler SDKs
//! (proto/examples/rust-website, go-website) continue the core's traces the same way, under their
//! own names as the service name (issue 20).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, ResourceExt};
use operon_e2e::cluster::PlaneLock;
use operon_e2e::jaeger::{Jaeger, Span, jaeger, spans};
use operon_e2e::{
    CoreProcess, FLAKY_PY, HandlerProcess, PythonHandler, RESOURCE_ARG, binaries, go_example,
    go_website, install_crds, plane, wait_for, widget, widget_resource, with_temp_ns,
    with_widget_ns,
};
use serde_json::{Value, json};

/// A create handler that fails once (a temporary error, retried after 1 s), then succeeds.
const HANDLERS: &str = FLAKY_PY;

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
}

fn by_id(spans: &[Span]) -> BTreeMap<&str, &Span> {
    spans.iter().map(|s| (s.id.as_str(), s)).collect()
}

/// Starts the core serving `ns` with `handler`, exporting its spans to Jaeger as `service`
/// (and linking traces in its dashboard to Jaeger's UI); waits until it is ready.
async fn traced_core(ns: &str, handler: &str, jaeger: &Jaeger, service: &str) -> CoreProcess {
    let args: Vec<String> = [
        "--handler",
        handler,
        "-n",
        ns,
        "--otlp-endpoint",
        &jaeger.otlp,
        "--service-name",
        service,
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
    core
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
        let mut core = traced_core(&ns, &handlers.url(), jaeger, &core_service).await;

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
        let from_handler = |s: &Span| s.service == handler_service;
        let attempts = both_attempts(jaeger, &core_service, "flaky", from_handler).await;
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
        // Kopf's exception class names the error in every SDK.
        for text in ["TemporaryError", "not ready yet"] {
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

/// Waits until Jaeger has both attempts' traces of the core (`core_service`), each with the
/// core's span of the call of `handler_id` and spans of the handler process (`from_handler`).
/// Returns each attempt's call span with all the spans of its trace, in attempt order; on a
/// timeout, says which of the handler's spans each trace had.
async fn both_attempts(
    jaeger: &Jaeger,
    core_service: &str,
    handler_id: &str,
    from_handler: impl Fn(&Span) -> bool,
) -> Vec<(Span, Vec<Span>)> {
    let name = format!("handler {handler_id}");
    wait_for(
        "Jaeger to return both attempts' traces with the core's and the handler's spans",
        Duration::from_secs(60),
        || async {
            let traces = jaeger
                .traces(core_service)
                .await
                .map_err(|e| vec![format!("{e:#}")])?;
            let (mut found, mut seen) = (Vec::new(), Vec::new());
            for trace in &traces {
                let all = spans(trace);
                let Some(call) = all.iter().find(|s| {
                    s.service == core_service
                        && s.name == name
                        && s.tag("handler.id") == Some(&json!(handler_id))
                }) else {
                    continue;
                };
                let theirs: Vec<String> = all
                    .iter()
                    .filter(|s| from_handler(s))
                    .map(|s| format!("{} ({})", s.name, s.service))
                    .collect();
                let attempt = call.tag("attempt").and_then(Value::as_i64);
                seen.push(format!(
                    "attempt {attempt:?}: the handler's spans {theirs:?}"
                ));
                if !theirs.is_empty() {
                    found.push((call.clone(), all.clone()));
                }
            }
            found.sort_by_key(|(call, _)| call.tag("attempt").and_then(Value::as_i64));
            if found.len() >= 2 {
                Ok(Some(found))
            } else {
                Err(seen)
            }
        },
    )
    .await
}

/// An operator written on a handler SDK: `proto/examples/rust-website` (Rust SDK) or
/// `proto/examples/go-website` (Go SDK). Both check a page on create and update — a page that
/// contains "flaky" fails the first attempt and is retried a second later — and post an Event
/// saying on which attempt the check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    Rust,
    Go,
}

impl Sdk {
    /// The example's CRD, as it ships it.
    fn crd(self) -> &'static str {
        match self {
            Sdk::Rust => include_str!("../../proto/examples/rust-website/crd.yaml"),
            Sdk::Go => include_str!("../../proto/examples/go-website/crd.yaml"),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Sdk::Rust => "Website",
            Sdk::Go => "GoWebsite",
        }
    }

    /// The operator's name (`Operator::new`, `operon.New`): the default `service.name`.
    fn operator(self) -> &'static str {
        match self {
            Sdk::Rust => "website-operator",
            Sdk::Go => "go-website",
        }
    }

    /// The id of the check handler (the Rust SDK's default: the function's name).
    fn handler_id(self) -> &'static str {
        match self {
            Sdk::Rust => "check_html",
            Sdk::Go => "check",
        }
    }

    /// The reason of the Event a passed check posts.
    fn checked_reason(self) -> &'static str {
        match self {
            Sdk::Rust => "HtmlChecked",
            Sdk::Go => "Checked",
        }
    }

    /// Starts the example as a user would, with only OTEL_EXPORTER_OTLP_ENDPOINT set (no
    /// OTEL_SERVICE_NAME). Spans are batched for 10 minutes: only the flush at the graceful stop
    /// gets them to Jaeger in time.
    async fn start(self, otlp: &str) -> HandlerProcess {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ];
        let started = match self {
            // The Rust SDK refuses flags it does not know, such as --ledger.
            Sdk::Rust => {
                let binary = &binaries().await.website_example;
                HandlerProcess::start_without_ledger(binary, "tracing-sdk-rust", &[], &env).await
            }
            Sdk::Go => {
                HandlerProcess::start_with_env(
                    Some(go_website().await),
                    "tracing-sdk-go",
                    &[],
                    &env,
                )
                .await
            }
        };
        started.unwrap_or_else(|err| panic!("the {self:?} SDK example starts: {err:#}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_continues_the_core_traces_in_jaeger() {
    an_sdk_operator_continues_the_core_traces(Sdk::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_sdk_continues_the_core_traces_in_jaeger() {
    an_sdk_operator_continues_the_core_traces(Sdk::Go).await;
}

/// A flaky page checked by `sdk`'s example: in each attempt's trace, the operator's own spans —
/// under its name as the service name — descend from the core's span of that handler call.
async fn an_sdk_operator_continues_the_core_traces(sdk: Sdk) {
    let _lock = PlaneLock::shared().await;
    with_temp_ns("tracing-sdk", move |client, ns| async move {
        install_crds(&client, sdk.crd()).await;
        let jaeger = jaeger().await;
        let core_service = format!("operon-e2e-{ns}");
        let mut operator = Running::Example(sdk.start(&jaeger.otlp).await);
        let mut core = traced_core(&ns, &operator.url(), jaeger, &core_service).await;
        let gvk = GroupVersionKind::gvk("sdk.operon.dev", "v1", sdk.kind());
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
        let website: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sdk.operon.dev/v1",
            "kind": sdk.kind(),
            "metadata": {"name": "traced"},
            "spec": {"html": "<p>a flaky page</p>"},
        }))
        .expect("a valid website");
        api.create(&PostParams::default(), &website)
            .await
            .expect("creating the website");
        let events: Api<Event> = Api::namespaced(client, &ns);
        wait_for(
            "the check to pass on its second attempt",
            Duration::from_secs(90),
            || async {
                let list = events
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| vec![e.to_string()])?;
                let seen: Vec<String> = list
                    .items
                    .iter()
                    .filter(|e| e.involved_object.name.as_deref() == Some("traced"))
                    .map(|e| format!("{:?}: {:?}", e.reason, e.message))
                    .collect();
                let passed = list.items.iter().any(|e| {
                    e.reason.as_deref() == Some(sdk.checked_reason())
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains("attempt 2"))
                });
                if passed { Ok(Some(())) } else { Err(seen) }
            },
        )
        .await;
        operator.stop().await; // which flushes its spans

        // Each attempt's trace (the core's, found by its unique service name) holds the core's
        // span of the handler call and, below it, the operator's.
        let not_the_core = |s: &Span| s.service != core_service;
        let attempts = both_attempts(jaeger, &core_service, sdk.handler_id(), not_the_core).await;
        assert_eq!(attempts.len(), 2, "one trace per attempt");
        let name = format!("handler {}", sdk.handler_id());
        for (n, (call, all)) in attempts.iter().enumerate() {
            let attempt = i64::try_from(n + 1).expect("small");
            assert_eq!(call.tag("attempt"), Some(&json!(attempt)), "{call:?}");
            let ids = by_id(all);
            let theirs: Vec<&Span> = all.iter().filter(|s| not_the_core(s)).collect();
            for span in &theirs {
                assert_eq!(
                    span.service,
                    sdk.operator(),
                    "the operator's spans carry its name as the service name: {span:?}"
                );
                // Every span of the operator hangs in this trace, down from the core's call.
                let mut up = *span;
                while let Some(parent) = up.parent() {
                    up = ids.get(parent).copied().unwrap_or_else(|| {
                        panic!("{span:?} has an ancestor {parent} outside the trace")
                    });
                    if up.id == call.id {
                        break;
                    }
                }
                assert_eq!(up.id, call.id, "{span:?} descends from the core's {call:?}");
            }
            let handler: Vec<&&Span> = theirs.iter().filter(|s| s.name == name).collect();
            assert_eq!(
                handler.len(),
                1,
                "one {name:?} span of the operator: {theirs:?}"
            );
            let handler = handler[0];
            assert_eq!(handler.trace_id, call.trace_id);
            assert_eq!(
                handler.parent(),
                Some(call.id.as_str()),
                "a child of the core's call"
            );
            assert_eq!(handler.tag("handler.id"), Some(&json!(sdk.handler_id())));
            assert_eq!(handler.tag("attempt"), Some(&json!(attempt)));
        }
        // The Sync calls carry the trace context too: the operator's `sync <id>` spans are
        // children of the core's `sync` spans.
        wait_for(
            "an operator's sync span under the core's sync span",
            Duration::from_secs(60),
            || async {
                let traces = jaeger
                    .traces(&core_service)
                    .await
                    .map_err(|e| vec![format!("{e:#}")])?;
                let mut seen = Vec::new();
                for trace in &traces {
                    let all = spans(trace);
                    let ids = by_id(&all);
                    for span in all.iter().filter(|s| s.name.starts_with("sync ")) {
                        let parent = span.parent().and_then(|p| ids.get(p));
                        if span.service == sdk.operator()
                            && parent.is_some_and(|p| {
                                p.service == core_service && p.name.starts_with("sync ")
                            })
                        {
                            return Ok(Some(()));
                        }
                        seen.push(format!("{} ({}) under {parent:?}", span.name, span.service));
                    }
                }
                Err(seen)
            },
        )
        .await;
        core.kill();
    })
    .await;
}
