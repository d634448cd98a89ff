//! Reading Jaeger's answers, and the client against a real HTTP server standing in for Jaeger.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::*;

pub(crate) const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
pub(crate) const PREVIOUS: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A trace as Jaeger v2's query API answers it: the core's cycle, its handler call (linked to
/// the previous attempt's trace), the Python handler's own span with its exception, an API write.
pub(crate) fn jaeger_answer() -> Value {
    let tag = |k: &str, v: Value| json!({"key": k, "type": "string", "value": v});
    json!({"data": [{
        "traceID": TRACE,
        "spans": [
            {
                "traceID": TRACE, "spanID": "00000000000000a4", "operationName": "api patch",
                "references": [{"refType": "CHILD_OF", "traceID": TRACE, "spanID": "00000000000000c1"}],
                "startTime": 1_800_000_000_040_000_i64, "duration": 5_000,
                "tags": [tag("verb", json!("patch")), tag("status_code", json!(200))],
                "logs": [], "processID": "p1"
            },
            {
                "traceID": TRACE, "spanID": "00000000000000c1",
                "operationName": "cycle widgets.e2e.operon.dev/v1",
                "references": [],
                "startTime": 1_800_000_000_000_000_i64, "duration": 50_000,
                "tags": [tag("cause", json!("create")), tag("body", json!("{\"data\":\"c2VjcmV0\"}"))],
                "logs": [], "processID": "p1"
            },
            {
                "traceID": TRACE, "spanID": "00000000000000b2", "operationName": "handler create_fn",
                "references": [
                    {"refType": "CHILD_OF", "traceID": TRACE, "spanID": "00000000000000c1"},
                    {"refType": "FOLLOWS_FROM", "traceID": PREVIOUS, "spanID": "0000000000000001"}
                ],
                "startTime": 1_800_000_000_005_000_i64, "duration": 30_000,
                "tags": [tag("handler.id", json!("create_fn")), tag("outcome", json!("retry")),
                         tag("otel.status_code", json!("ERROR"))],
                "logs": [], "processID": "p1"
            },
            {
                "traceID": TRACE, "spanID": "00000000000000d3", "operationName": "handler create_fn",
                "references": [{"refType": "CHILD_OF", "traceID": TRACE, "spanID": "00000000000000b2"}],
                "startTime": 1_800_000_000_010_000_i64, "duration": 20_000,
                "tags": [{"key": "error", "type": "bool", "value": true}],
                "logs": [{"timestamp": 1_800_000_000_029_000_i64, "fields": [
                    tag("event", json!("exception")),
                    tag("exception.type", json!("kopf.TemporaryError")),
                    tag("exception.message", json!("The database is not ready yet."))
                ]}],
                "processID": "p2"
            }
        ],
        "processes": {
            "p1": {"serviceName": "operon", "tags": []},
            "p2": {"serviceName": "example-operator", "tags": []}
        }
    }]})
}

#[test]
fn a_trace_reads_in_tree_order_with_status_exceptions_links_and_only_the_shown_tags() {
    let trace = parse(jaeger_answer().to_string().as_bytes()).unwrap();
    assert_eq!(trace.id, TRACE);
    assert_eq!(trace.duration_us, 50_000);
    let order: Vec<(&str, usize, &str)> = trace
        .spans
        .iter()
        .map(|s| (s.id.as_str(), s.depth, s.service.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("00000000000000c1", 0, "operon"),
            ("00000000000000b2", 1, "operon"),
            ("00000000000000d3", 2, "example-operator"),
            ("00000000000000a4", 1, "operon"),
        ]
    );
    let [cycle, handler, python, api] = &trace.spans[..] else {
        panic!("four spans")
    };
    assert_eq!(
        (cycle.offset_us, handler.offset_us, api.offset_us),
        (0, 5_000, 40_000)
    );
    assert!(!cycle.error && handler.error && python.error && !api.error);
    assert_eq!(
        python.exceptions,
        ["kopf.TemporaryError: The database is not ready yet."]
    );
    assert_eq!(handler.links, [PREVIOUS]);
    assert!(
        cycle.tags.iter().all(|(k, _)| k != "body"),
        "{:?}",
        cycle.tags
    );
    assert!(api.tags.contains(&("status_code".into(), "200".into())));
}

#[test]
fn answers_that_are_no_trace_are_errors() {
    assert!(matches!(parse(b"<html>"), Err(Error::Json(_))));
    assert!(matches!(parse(br#"{"data": []}"#), Err(Error::NotFound)));
    assert!(matches!(
        parse(br#"{"data": [{"traceID": "x", "spans": []}]}"#),
        Err(Error::NotFound)
    ));
    // A span whose parent never arrived is shown as a root.
    let orphan = json!({"data": [{"traceID": TRACE, "processes": {}, "spans": [{
        "traceID": TRACE, "spanID": "01", "operationName": "late",
        "references": [{"refType": "CHILD_OF", "traceID": TRACE, "spanID": "ff"}],
        "startTime": 5, "duration": 1
    }]}]});
    let trace = parse(orphan.to_string().as_bytes()).unwrap();
    assert_eq!(
        (trace.spans[0].parent.clone(), trace.spans[0].depth),
        (None, 0)
    );
}

#[test]
fn trace_ids_are_32_lowercase_hex_digits() {
    assert!(is_trace_id(TRACE));
    for bad in [
        "",
        "0af7651916cd43dd",
        &TRACE.to_uppercase(),
        &"0".repeat(32),
        "../../api/services?x=0000000000000",
        "0af7651916cd43dd8448eb211c80319c/",
    ] {
        assert!(!is_trace_id(bad), "{bad:?}");
    }
}

/// A stand-in for Jaeger on 127.0.0.1: answers `/api/traces/<TRACE>` with [`jaeger_answer`],
/// a huge body for `/api/traces/<huge>`, 404 otherwise; records every request line.
pub(crate) async fn fake_jaeger() -> (String, Arc<Mutex<Vec<String>>>) {
    fake_jaeger_with(std::time::Duration::ZERO).await
}

/// [`fake_jaeger`], answering `/api/traces/<TRACE>` only after `delay` (a slow Jaeger).
pub(crate) async fn fake_jaeger_with(
    delay: std::time::Duration,
) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::extract::{Path, State};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::any(
                move |State(seen): State<Arc<Mutex<Vec<String>>>>,
                      method: axum::http::Method,
                      Path(path): Path<String>| async move {
                    seen.lock().unwrap().push(format!("{method} /{path}"));
                    let huge = format!("api/traces/{}", "e".repeat(32));
                    use axum::http::StatusCode;
                    if path == format!("api/traces/{TRACE}") {
                        tokio::time::sleep(delay).await;
                        (StatusCode::OK, jaeger_answer().to_string())
                    } else if path == huge {
                        (StatusCode::OK, " ".repeat(MAX_BYTES + 10))
                    } else {
                        (StatusCode::NOT_FOUND, "{\"data\":null}".to_owned())
                    }
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn the_client_asks_only_for_valid_ids_and_reads_answers_within_bounds() {
    let (base, seen) = fake_jaeger().await;
    let jaeger = Jaeger::new(&format!("{base}/")).unwrap();
    assert!(Jaeger::new("https://jaeger.example").is_none(), "http only");
    assert!(Jaeger::new("file:///etc/passwd").is_none());

    assert!(matches!(
        jaeger.trace("../api/services").await,
        Err(Error::InvalidId)
    ));
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing sent for an invalid id"
    );

    let trace = jaeger.trace(TRACE).await.unwrap();
    assert_eq!(trace.spans.len(), 4);
    // Fetched lately: from the cache.
    let again = jaeger.trace(TRACE).await.unwrap();
    assert!(Arc::ptr_eq(&trace, &again));
    assert!(matches!(jaeger.trace(PREVIOUS).await, Err(Error::NotFound)));
    assert!(matches!(
        jaeger.trace(&"e".repeat(32)).await,
        Err(Error::Body(_))
    ));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("GET /api/traces/{TRACE}"),
            format!("GET /api/traces/{PREVIOUS}"),
            format!("GET /api/traces/{}", "e".repeat(32)),
        ]
    );
}

#[tokio::test]
async fn an_absent_jaeger_is_an_error_not_a_hang() {
    // Nothing listens on port 1.
    let jaeger = Jaeger::new("http://127.0.0.1:1").unwrap();
    let started = std::time::Instant::now();
    let err = jaeger.trace(TRACE).await.unwrap_err();
    assert!(matches!(err, Error::Request(_) | Error::Timeout), "{err}");
    assert!(started.elapsed() <= TIMEOUT + std::time::Duration::from_secs(1));
}
