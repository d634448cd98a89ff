//! The benchmark figures of the dashboard: the server's time to answer each page with 10,000
//! objects in the read model, measured over HTTP on 127.0.0.1 (the model's shared views, filter,
//! sort, render, send): the list page in several ways, the overview with its 15 minutes of
//! charts, an object page with its timeline (3 handlers × 6 attempts), 40 children and 6 inline
//! traces of 40 spans each, and a trace page. The traces come from a stand-in for Jaeger's query
//! API on 127.0.0.1 (a real HTTP fetch and parse; the dashboard's cache keeps them 5 s, so most
//! requests measure the render). Prints figures; passes or fails on nothing.
//!
//! `cargo run --release -p operon-dashboard --example list_bench [-- OBJECTS [REQUESTS]]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use operon_dashboard::{
    AttemptOutcome, AttemptView, ChartPoint, Charts, ChildAction, ChildView, HandlerDetails,
    HandlerStatus, HandlerView, ObjectDetails, ObjectPhase, ObjectView, Options, Overview, PHASES,
    ReadModel,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

struct Model {
    objects: Vec<Arc<ObjectView>>,
    changes: broadcast::Sender<String>,
}

/// The trace id of attempt `a` of handler `h` (the same on every object: the page's traces).
fn trace_id(h: usize, a: u32) -> String {
    format!("{:016x}{:016x}", h + 1, a + 1)
}

const HANDLERS: [&str; 3] = ["create_fn", "create_fn/child", "update_fn"];

impl ReadModel for Model {
    fn objects(&self) -> Vec<Arc<ObjectView>> {
        self.objects.clone()
    }
    fn object(&self, key: &str) -> Option<Arc<ObjectView>> {
        let i = self
            .objects
            .binary_search_by(|o| o.key().as_str().cmp(key))
            .ok()?;
        Some(Arc::clone(&self.objects[i]))
    }
    fn overview(&self) -> Overview {
        Overview::default()
    }
    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }
    fn details(&self, _key: &str) -> ObjectDetails {
        let mut details = ObjectDetails::default();
        for (h, id) in HANDLERS.iter().enumerate() {
            let mut extra = HandlerDetails::default();
            extra.attempts = (0..6u32)
                .map(|a| {
                    let start = 10 * a;
                    AttemptView {
                        attempt: a + 1,
                        started: Some(format!("2026-01-02T03:04:{start:02}Z")),
                        stopped: Some(format!("2026-01-02T03:04:{:02}.5Z", start + 1)),
                        outcome: Some(if a == 5 {
                            AttemptOutcome::Succeeded
                        } else {
                            AttemptOutcome::Retrying
                        }),
                        delay: (a < 5).then_some(8.5),
                        message: (a < 5).then(|| format!("attempt {a}: not ready yet")),
                        trace_id: Some(trace_id(h, a)),
                    }
                })
                .collect();
            details.handlers.insert((*id).to_owned(), extra);
        }
        details.children = (0..40)
            .map(|c| ChildView {
                kind: "ConfigMap".into(),
                namespace: "team-01".into(),
                name: format!("child-{c}"),
                action: ChildAction::Unchanged,
            })
            .collect();
        details
    }
    fn charts(&self) -> Option<Charts> {
        let points = (0..180u64)
            .map(|i| ChartPoint {
                at: 1_800_000_000 + 5 * i,
                handled_per_s: (i % 17) as f64,
                errors_per_s: (i % 5) as f64 / 10.0,
                retries_per_s: (i % 3) as f64 / 5.0,
                queue_depth: (i % 40) as i64,
                p50_ms: Some(5.0),
                p99_ms: Some(250.0),
            })
            .collect();
        Some(Charts {
            step_seconds: 5,
            points,
        })
    }
    fn trace_object(&self, trace_id: &str) -> Option<String> {
        self.objects
            .first()
            .filter(|_| trace_id.len() == 32)
            .map(|o| o.key())
    }
}

/// A trace of 40 spans as Jaeger's query API answers it: a cycle, handler calls and the handler
/// process's spans under them, API writes.
fn jaeger_trace(id: &str) -> String {
    let tag = |k: &str, v: serde_json::Value| json!({"key": k, "type": "string", "value": v});
    let spans: Vec<serde_json::Value> = (0..40u64)
        .map(|i| {
            let parent = if i == 0 { None } else { Some(format!("{:016x}", (i - 1) / 3)) };
            json!({
                "traceID": id, "spanID": format!("{i:016x}"),
                "operationName": if i == 0 { "cycle widgets.example.com/v1".to_owned() } else { format!("handler step-{i}") },
                "references": parent.map(|p| vec![json!({"refType": "CHILD_OF", "traceID": id, "spanID": p})]).unwrap_or_default(),
                "startTime": 1_800_000_000_000_000_u64 + i * 1_000, "duration": 40_000 - i * 900,
                "tags": [tag("handler.id", json!("create_fn")), tag("outcome", json!("retry"))],
                "logs": [], "processID": if i % 2 == 0 { "p1" } else { "p2" }
            })
        })
        .collect();
    json!({"data": [{"traceID": id, "spans": spans, "processes": {
        "p1": {"serviceName": "operon"}, "p2": {"serviceName": "example-operator"}
    }}]})
    .to_string()
}

/// A stand-in for Jaeger's query API on 127.0.0.1; its base URL.
async fn fake_jaeger() -> String {
    let app = axum::Router::new().route(
        "/api/traces/{id}",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<String>| async move { jaeger_trace(&id) },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn handler(id: &str, state: HandlerStatus, retries: u32, message: Option<String>) -> HandlerView {
    HandlerView {
        id: id.to_owned(),
        state,
        retries,
        started: Some("2026-01-02T03:04:00Z".to_owned()),
        delayed: None,
        message,
        trace_id: None,
    }
}

fn objects(n: usize) -> Vec<ObjectView> {
    let mut objects: Vec<ObjectView> = (0..n)
        .map(|i| {
            let phase = PHASES[i % PHASES.len()];
            let state = if phase == ObjectPhase::Handled {
                HandlerStatus::Succeeded
            } else {
                HandlerStatus::Retrying
            };
            let message =
                (phase != ObjectPhase::Handled).then(|| format!("attempt {i}: not ready yet"));
            ObjectView {
                resource: if i % 2 == 0 {
                    "widgets.example.com/v1"
                } else {
                    "gadgets.example.com/v1"
                }
                .to_owned(),
                namespace: format!("team-{:02}", i % 40),
                name: format!("object-{i:05}"),
                uid: format!("00000000-0000-0000-0000-{i:012}"),
                phase,
                cause: "create".to_owned(),
                handlers: vec![
                    handler("create_fn", state, (i % 7) as u32, message),
                    handler("create_fn/child", HandlerStatus::Succeeded, 1, None),
                    handler("update_fn", HandlerStatus::Pending, 0, None),
                ],
                updated: format!("2026-01-02T03:{:02}:{:02}Z", i / 60 % 60, i % 60),
            }
        })
        .collect();
    objects.sort_by_key(ObjectView::key);
    objects
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (Duration, usize) {
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.expect("read");
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body[..200])
    );
    (start.elapsed(), body.len())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let requests: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let model: Arc<dyn ReadModel> = Arc::new(Model {
        objects: objects(n).into_iter().map(Arc::new).collect(),
        changes: broadcast::channel(1).0,
    });
    let start = Instant::now();
    let copy = model.objects();
    println!(
        "taking the read model (shared views): {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    drop(copy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let options = Options {
        jaeger_query: Some(fake_jaeger().await),
        ..Options::default()
    };
    let object = model.objects().get(n / 2).map(|o| {
        let ns = if o.namespace.is_empty() {
            "-"
        } else {
            &o.namespace
        };
        format!("/objects/{}/{ns}/{}", o.resource, o.name)
    });
    let router = operon_dashboard::router_with(model, &options);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("pages with {n} objects, {requests} requests each, {profile} build:");
    let object = object.expect("objects");
    let trace = format!("/traces/{}", trace_id(0, 0));
    for (label, path) in [
        ("first page, model order", "/objects"),
        (
            "sorted by attempts, desc",
            "/objects?sort=attempts&dir=desc",
        ),
        ("page 50 sorted by name", "/objects?sort=name&page=50"),
        (
            "filtered: phase + namespace",
            "/objects?phase=retrying&namespace=team-07",
        ),
        ("text search (2 words)", "/objects?q=not+ready+object-01"),
        ("overview (with charts)", "/"),
        ("object page (timeline, traces)", object.as_str()),
        ("trace page (40 spans)", trace.as_str()),
    ] {
        get(addr, path).await; // warm up
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        for _ in 0..requests {
            let (time, size) = get(addr, path).await;
            times.push(time);
            bytes = size;
        }
        times.sort();
        let median = times[times.len() / 2];
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        println!(
            "  {label:<30} median {:>7.2} ms   p95 {:>7.2} ms   {:>6} KiB",
            median.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            bytes / 1024
        );
    }
}
