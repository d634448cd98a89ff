//! OpenTelemetry end to end (issue 7): the core and a Python SDK handler service export to a
//! real Jaeger (tests/cluster/jaeger-up.sh), and what Jaeger's query API returns is asserted —
//! the core's cycle, handler and API-write spans, the Python process's handler spans as children
//! of the core's handler spans (the W3C traceparent in the gRPC metadata), and the retry link
//! from each attempt to the previous one. The dashboard's object page links the attempts' traces.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{DynamicObject, PostParams};
use kube::{Api, ResourceExt};
use operon_e2e::jaeger::{Span, jaeger, spans};
use operon_e2e::{
    CoreProcess, PythonHandler, plane, wait_for, widget, widget_resource, with_widget_ns,
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

fn by_id(spans: &[Span]) -> BTreeMap<&str, &Span> {
    spans.iter().map(|s| (s.id.as_str(), s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_python_handler_is_one_navigable_chain_of_traces_in_jaeger() {
    with_widget_ns("tracing", |client, ns| async move {
        let jaeger = jaeger().await;
        let core_service = format!("operon-e2e-{ns}");
        let python_service = format!("kopf-e2e-{ns}");
        let python = PythonHandler::start(
            "tracing",
            HANDLERS,
            &plane().await.kubeconfig,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp.as_str()),
                ("OTEL_SERVICE_NAME", python_service.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ],
        )
        .await
        .expect("the Python handler service starts");
        let args: Vec<String> = [
            "--handler",
            &python.url(),
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
            .create(&PostParams::default(), &widget("traced", json!({})))
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

        // Jaeger: both attempts' traces, each with the core's spans and the Python process's.
        let attempts: Vec<(Span, Vec<Span>)> = wait_for(
            "Jaeger to return both attempts' traces with the core's and Python's spans",
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
                    let from_python = all.iter().any(|s| s.service == python_service);
                    if let (Some(handler), true) = (handler, from_python) {
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
            // Python's span is a child of the core's handler span: the traceparent travelled.
            let py: Vec<&Span> = all.iter().filter(|s| s.service == python_service).collect();
            assert_eq!(py.len(), 1, "one Python span per attempt: {py:?}");
            assert_eq!(py[0].name, "handler flaky");
            assert_eq!(py[0].parent(), Some(handler.id.as_str()));
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
        // The first attempt's exception is recorded on Python's span.
        let first_py = attempts[0]
            .1
            .iter()
            .find(|s| s.service == python_service)
            .expect("Python's span");
        let first_trace = jaeger.trace(&first_py.trace_id).await.expect("the trace");
        assert!(
            span_logs_mention(&first_trace, &first_py.id, "TemporaryError"),
            "the exception is recorded on Python's span: {first_trace}"
        );
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
        drop(python);
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
