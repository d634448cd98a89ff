//! The timeline, the inline traces and the trace page (against a stand-in Jaeger on a real
//! socket), the charts and the handler services.

use super::*;
use crate::model::{AttemptOutcome, ChartPoint, Charts};
use crate::traces::tests::{PREVIOUS, TRACE, fake_jaeger, fake_jaeger_with};

/// `create_fn` failed once (a temporary error, retried 2 s later), then succeeded; the second
/// attempt is traced.
fn failed_once_then_succeeded() -> (ObjectView, ObjectDetails) {
    let mut h = handler("create_fn", S::Succeeded);
    h.retries = 2;
    h.started = Some("2026-01-02T03:04:00Z".into());
    let o = object("ns", "w1", P::Handled).handlers(vec![h]);
    let mut extra = HandlerDetails::default();
    extra.stopped = Some("2026-01-02T03:04:03.5Z".into());
    extra.attempts = vec![
        AttemptView {
            attempt: 1,
            started: Some("2026-01-02T03:04:00Z".into()),
            stopped: Some("2026-01-02T03:04:00.8Z".into()),
            outcome: Some(AttemptOutcome::Retrying),
            delay: Some(2.0),
            message: Some("The database is not ready yet.".into()),
            trace_id: Some(PREVIOUS.into()),
        },
        AttemptView {
            attempt: 2,
            started: Some("2026-01-02T03:04:03Z".into()),
            stopped: Some("2026-01-02T03:04:03.5Z".into()),
            outcome: Some(AttemptOutcome::Succeeded),
            trace_id: Some(TRACE.into()),
            ..AttemptView::default()
        },
    ];
    let mut details = ObjectDetails::default();
    details.handlers.insert("create_fn".into(), extra);
    (o, details)
}

#[test]
fn the_timeline_draws_every_attempt_to_scale_with_its_duration_outcome_and_wait() {
    let (o, details) = failed_once_then_succeeded();
    let html = object::render(&o, &details, &ui(None), now());
    assert!(html.contains("<h2 id=\"timeline\">"), "{html}");
    for (attempt, duration, outcome) in [(1, "800 ms", "retrying"), (2, "500 ms", "succeeded")] {
        let row = html
            .split(&format!("data-attempt=\"{attempt}\""))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row of attempt {attempt}: {html}"));
        assert!(
            row.contains(&format!("<td class=\"tl-duration\">{duration}</td>")),
            "{row}"
        );
        assert!(row.contains(&format!(">{outcome}</span>")), "{row}");
    }
    assert!(html.contains("The database is not ready yet."));
    assert!(
        html.contains("<td>2.0 s</td>"),
        "the wait before attempt 2: {html}"
    );
    // To scale: 3.5 s in all, the label column 190 wide, the track 810: the first bar starts at
    // 190 and lasts 0.8 s (185.1), the wait runs from 0.8 s to 2.8 s, the second bar from 3 s.
    assert!(
        html.contains("<rect x=\"190.0\" y=\"4\" width=\"185.1\""),
        "{html}"
    );
    assert!(html.contains("x1=\"375.1\" x2=\"838.0\""), "{html}");
    assert!(html.contains("<rect x=\"884.3\""), "{html}");
    assert_eq!(html.matches("class=\"tl-bar o-").count(), 2);
    // The handler's own duration comes from its first start and final stop.
    assert!(html.contains("<td>3.5 s</td>"), "{html}");
    // Without Jaeger's query API, the page says how to turn traces on.
    assert!(html.contains("--jaeger-query URL"), "{html}");
    assert!(!html.contains("href=\"/traces/"), "no dead links: {html}");
}

#[test]
fn no_timeline_without_attempts() {
    let html = object::render(
        &retrying_object(),
        &ObjectDetails::default(),
        &ui(None),
        now(),
    );
    assert!(!html.contains("id=\"timeline\""), "{html}");
}

fn app_with_jaeger(model: Arc<Fake>, jaeger: &str) -> axum::Router {
    let options = Options {
        jaeger_query: Some(jaeger.to_owned()),
        ..Options::default()
    };
    router_with(model, &options)
}

/// The dashboard over [`failed_once_then_succeeded`], its traces from a stand-in Jaeger; the
/// requests that Jaeger saw.
async fn serve_failed_once() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    serve_failed_once_with(std::time::Duration::ZERO).await
}

/// [`serve_failed_once`] with a Jaeger that answers the newest attempt's trace after `delay`.
async fn serve_failed_once_with(
    delay: std::time::Duration,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let (jaeger, seen) = fake_jaeger_with(delay).await;
    let (o, details) = failed_once_then_succeeded();
    let mut model = Fake::new(vec![o]);
    model.details = details;
    (serve(app_with_jaeger(Arc::new(model), &jaeger)).await, seen)
}

/// The newest attempt's inline trace on an object page (up to its `</details>`).
fn newest_trace(html: &str) -> &str {
    html.split(&format!("id=\"trace-{TRACE}\" open"))
        .nth(1)
        .and_then(|open| open.split("</details>").next())
        .unwrap_or_else(|| panic!("the newest trace is not open: {html}"))
}

/// A slow Jaeger does not hold the object page up: a trace not fetched within the page's budget
/// is announced as coming (the live script reads the page again), fetched on into the cache, and
/// the next read shows it without asking Jaeger again.
#[tokio::test]
async fn a_slow_jaeger_does_not_hold_the_object_page_up() {
    let (addr, seen) = serve_failed_once_with(std::time::Duration::from_millis(1500)).await;
    let path = "/objects/widgets.example.com/v1/ns/w1";
    let (status, _, html) = get(addr, path, &[]).await;
    assert_eq!(status, 200);
    let coming = newest_trace(&html);
    assert!(coming.contains("data-trace-pending"), "{coming}");
    assert!(
        !coming.contains("cycle widgets.e2e.operon.dev/v1"),
        "{coming}"
    );
    // The older attempt's trace (not in Jaeger) answered at once: its 404 is said as before.
    assert!(
        html.contains("Jaeger has no spans of this trace yet"),
        "{html}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (_, _, html) = get(addr, path, &[]).await;
    let shown = newest_trace(&html);
    assert!(!shown.contains("data-trace-pending"), "{shown}");
    assert!(shown.contains("cycle widgets.e2e.operon.dev/v1"), "{shown}");
    let asked = (seen.lock().unwrap().iter())
        .filter(|r| r.ends_with(TRACE))
        .count();
    assert_eq!(asked, 1, "the second read is served from the cache");
}

/// A Jaeger that does not answer within the client's timeout: the page says so once the fetch
/// has failed, instead of announcing the trace as coming forever.
#[tokio::test]
async fn a_hung_jaeger_is_said_not_awaited() {
    let hang = crate::traces::TIMEOUT + std::time::Duration::from_secs(2);
    let (addr, _) = serve_failed_once_with(hang).await;
    let path = "/objects/widgets.example.com/v1/ns/w1";
    let (_, _, html) = get(addr, path, &[]).await;
    assert!(newest_trace(&html).contains("data-trace-pending"), "{html}");
    tokio::time::sleep(crate::traces::TIMEOUT + std::time::Duration::from_millis(500)).await;
    let (_, _, html) = get(addr, path, &[]).await;
    let said = newest_trace(&html);
    assert!(!said.contains("data-trace-pending"), "{said}");
    assert!(said.contains("Jaeger did not answer within 3s"), "{said}");
}

#[tokio::test]
async fn the_object_page_shows_each_attempts_trace_inline() {
    let (addr, seen) = serve_failed_once().await;
    let (status, _, html) = get(addr, "/objects/widgets.example.com/v1/ns/w1", &[]).await;
    assert_eq!(status, 200);
    // The newest attempt's trace, open: the cycle, the handler call, the handler process's own
    // span with its exception, the API write; the link to the previous attempt's trace.
    let open = html
        .split(&format!("id=\"trace-{TRACE}\" open"))
        .nth(1)
        .unwrap_or_else(|| panic!("the newest trace is not open: {html}"));
    let waterfall = open.split("</details>").next().unwrap();
    for expected in [
        "cycle widgets.e2e.operon.dev/v1",
        "data-service=\"example-operator\"",
        "kopf.TemporaryError: The database is not ready yet.",
        "api patch",
        "status_code=200",
        "30.0 ms",
        &format!("href=\"/traces/{PREVIOUS}\""),
    ] {
        assert!(
            waterfall.contains(expected),
            "{expected:?} not in {waterfall}"
        );
    }
    // Bars to scale: the handler call starts 5 ms into the 50 ms trace and lasts 30 ms.
    assert!(
        waterfall.contains("style=\"left:10.00%;width:60.00%"),
        "{waterfall}"
    );
    assert!(!html.contains("c2VjcmV0"), "a tag not shown: {html}");
    // The older attempt's trace is not in Jaeger: said where it would be.
    let older = html
        .split(&format!("id=\"trace-{PREVIOUS}\""))
        .nth(1)
        .unwrap();
    assert!(
        older.contains("Jaeger has no spans of this trace yet"),
        "{older}"
    );
    let mut requests = seen.lock().unwrap().clone();
    requests.sort();
    assert_eq!(
        requests,
        [
            format!("GET /api/traces/{TRACE}"),
            format!("GET /api/traces/{PREVIOUS}")
        ],
        "only the page's traces, only GET"
    );
}

#[tokio::test]
async fn the_trace_page_fetches_only_traces_the_model_knows() {
    let (addr, seen) = serve_failed_once().await;
    let (status, _, html) = get(addr, &format!("/traces/{TRACE}"), &[]).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("data-trace=\"{TRACE}\"")), "{html}");
    assert!(
        html.contains("href=\"/objects/widgets.example.com/v1/ns/w1\""),
        "{html}"
    );
    let unknown = "1".repeat(32);
    for path in [
        format!("/traces/{unknown}"),
        "/traces/..%2F..%2Fapi%2Fservices".to_owned(),
        format!("/traces/{}", TRACE.to_uppercase()),
    ] {
        let (status, _, html) = get(addr, &path, &[]).await;
        assert_eq!(status, 404, "{path}: {html}");
        assert!(
            html.contains("No attempt the dashboard knows has this trace"),
            "{html}"
        );
    }
    let (status, _, _) = get(addr, &format!("/traces/{TRACE}"), &[]).await;
    assert_eq!(status, 200);
    let requests = seen.lock().unwrap().clone();
    assert_eq!(
        requests,
        [format!("GET /api/traces/{TRACE}")],
        "one fetch, then the cache"
    );
}

#[tokio::test]
async fn the_trace_route_is_read_only() {
    let (jaeger, _seen) = fake_jaeger().await;
    let model = Arc::new(Fake::new(vec![]));
    let addr = serve(app_with_jaeger(model, &jaeger)).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /traces/{TRACE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 405"));
}

#[test]
fn the_overview_draws_the_charts_and_the_services() {
    let points = (0..180u64)
        .map(|i| ChartPoint {
            at: 1_800_000_000 + i * 5,
            handled_per_s: if i == 179 { 12.0 } else { (i % 3) as f64 },
            errors_per_s: 0.2,
            retries_per_s: 0.0,
            queue_depth: i as i64,
            p50_ms: (i > 170).then_some(5.0),
            p99_ms: (i > 170).then_some(250.0),
        })
        .collect();
    let charts = Charts {
        step_seconds: 5,
        points,
    };
    let mut about = About::default();
    about.services.push(ServiceView {
        name: "https://handlers.example:50051".into(),
        answering: false,
        handlers: 4,
        service_name: "example-operator".into(),
        contract_revision: 3,
        tls: true,
        last_error: Some("connection refused".into()),
    });
    let objects = vec![retrying_object()];
    let html = overview::render(&objects, &Overview::default(), &about, Some(&charts), now());
    assert!(html.contains("data-charts"), "{html}");
    for id in ["handled", "errors", "queue", "latency"] {
        assert!(html.contains(&format!("id=\"chart-{id}\"")), "{id}: {html}");
    }
    assert!(
        html.contains(">12/s</span>"),
        "the handled rate now: {html}"
    );
    assert!(html.contains("p50 5 ms · p99 250 ms"), "{html}");
    // The line ends at the top right (the highest point, scaled to 110 %).
    assert!(html.contains("300.0,7.2\""), "{html}");
    for expected in [
        "<th scope=\"row\" class=\"mono\">example-operator</th>",
        "https://handlers.example:50051",
        "<td class=\"num\">3</td><td>TLS</td>",
        "connection refused",
    ] {
        assert!(html.contains(expected), "{expected:?}: {html}");
    }
    // Without charts (operon dashboard), no section.
    let html = overview::render(&objects, &Overview::default(), &about, None, now());
    assert!(!html.contains("data-charts"));
    assert!(crate::pages::layout::SCRIPT.contains("addEventListener('tick'"));
}

#[test]
fn a_sync_parents_page_lists_its_children_and_rollouts() {
    use crate::model::{ChildAction, ChildView};
    let parent = object("ns", "site", P::Handled);
    let mut details = ObjectDetails::default();
    for (name, action) in [
        ("site-web", ChildAction::Applied),
        ("site-db", ChildAction::Unchanged),
        ("site-old", ChildAction::Deleted),
    ] {
        details.children.push(ChildView {
            kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: name.into(),
            action,
        });
    }
    details.rollouts.push(operon_core::views::RolloutView {
        kind: "Pod".into(),
        current: 2,
        total: 5,
        rolling: Some("site-web: recreated, waiting for the new one".into()),
    });
    let html = object::render(&parent, &details, &ui(None), now());
    assert!(html.contains("<h2 id=\"children\">Children</h2>"), "{html}");
    for (name, action) in [
        ("site-web", "applied"),
        ("site-db", "unchanged"),
        ("site-old", "deleted"),
    ] {
        assert!(
            html.contains(&format!("<th scope=\"row\" class=\"mono\">{name}</th><td><span class=\"badge c-{action}\">{action}</span>")),
            "{name}: {html}"
        );
    }
    assert!(
        html.contains(
            "<li data-rollout=\"Pod\"><span class=\"mono\">Pod: 2 of 5 as desired</span> \
             <progress value=\"2\" max=\"5\" aria-label=\"Pod: 2 of 5 as desired\"></progress> \
             <span class=\"muted\">rolling site-web: recreated, waiting for the new one</span></li>"
        ),
        "{html}"
    );
    let html = object::render(&parent, &ObjectDetails::default(), &ui(None), now());
    assert!(!html.contains("id=\"children\""));
    assert!(!html.contains("id=\"core-runs\""), "{html}");
    // operon dashboard reads the cluster: it says where children, tasks and daemons are shown.
    let cluster = object::Sources {
        model: crate::model::Source::Cluster,
        ..ui(None)
    };
    let html = object::render(&parent, &ObjectDetails::default(), &cluster, now());
    assert!(
        html.contains("<h2 id=\"core-runs\">Children, tasks, daemons and timers</h2>"),
        "{html}"
    );
    assert!(
        html.contains("Open the dashboard of the core itself"),
        "{html}"
    );
}

#[test]
fn a_daemon_shows_on_the_timeline_with_its_restarts_and_its_running_run() {
    let o = object("ns", "w1", P::Handled);
    let mut extra = HandlerDetails::default();
    extra.attempts = vec![
        AttemptView {
            attempt: 1,
            started: Some("2026-01-02T03:03:00Z".into()),
            stopped: Some("2026-01-02T03:03:30Z".into()),
            outcome: Some(AttemptOutcome::Retrying),
            delay: Some(10.0),
            message: Some("The connection dropped.".into()),
            ..AttemptView::default()
        },
        AttemptView {
            attempt: 2,
            started: Some("2026-01-02T03:03:40Z".into()),
            ..AttemptView::default()
        },
    ];
    let mut details = ObjectDetails::default();
    details.handlers.insert("monitor".into(), extra);
    let html = object::render(&o, &details, &ui(None), now());
    let running = html
        .split("data-handler=\"monitor\" data-attempt=\"2\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("the daemon's second run: {html}"));
    assert!(running.contains(">running</span>"), "{running}");
    assert!(html.contains("class=\"tl-label\">monitor</text>"), "{html}");
    assert!(html.contains("class=\"tl-bar o-running\""), "{html}");
    assert!(html.contains("The connection dropped."));
}
