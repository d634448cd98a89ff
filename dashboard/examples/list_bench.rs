//! The benchmark figure of the dashboard: the server's time to answer the object list page
//! with 10,000 objects in the read model, measured over HTTP on 127.0.0.1 (the model's shared
//! views, filter, sort, render, send). Prints figures; passes or fails on nothing.
//!
//! `cargo run --release -p operon-dashboard --example list_bench [-- OBJECTS [REQUESTS]]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use operon_dashboard::{
    HandlerStatus, HandlerView, ObjectPhase, ObjectView, Overview, PHASES, ReadModel,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

struct Model {
    objects: Vec<Arc<ObjectView>>,
    changes: broadcast::Sender<String>,
}

impl ReadModel for Model {
    fn objects(&self) -> Vec<Arc<ObjectView>> {
        self.objects.clone()
    }
    fn overview(&self) -> Overview {
        Overview::default()
    }
    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }
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
    tokio::spawn(async move { axum::serve(listener, operon_dashboard::router(model)).await });
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("list page with {n} objects, {requests} requests each, {profile} build:");
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
        ("overview", "/"),
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
