//! Rendering tests of the pages, and the routes served over a real socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::model::fixtures::{Fake, ObjectExt, handler, object};
use crate::model::{
    About, AttemptView, DiffView, EventView, HandlerDetails, HandlerStatus as S, ObjectDetails,
    ObjectPhase as P, ObjectView, Overview, ServiceView, Source,
};

fn now() -> jiff::Timestamp {
    "2026-01-02T03:04:10Z".parse().unwrap()
}

fn list_html(objects: &[ObjectView], pairs: &[(&str, &str)]) -> String {
    let params: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    list::render(objects, &[], &ListQuery::from_params(&params), now())
}

/// Trace links to a Jaeger UI (or none), no query API.
fn ui(jaeger_ui: Option<&str>) -> object::Sources<'_> {
    object::Sources {
        jaeger_ui,
        ..Default::default()
    }
}

fn rows(html: &str) -> usize {
    html.matches("<tr data-key=").count()
}

fn retrying_object() -> ObjectView {
    let mut h = handler("create_fn", S::Retrying);
    h.retries = 2;
    h.delayed = Some("2026-01-02T03:04:15Z".into());
    h.message = Some("Not <ready> yet & \"waiting\"".into());
    h.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    let mut sub = handler("create_fn/child", S::Failed);
    sub.message = Some("Boom.".into());
    object("ns", "w1", P::Retrying).handlers(vec![sub, h])
}

#[test]
fn every_page_is_a_whole_accessible_document() {
    let objects = vec![retrying_object()];
    let pages = [
        overview::render(
            &objects,
            &Overview::default(),
            &About::default(),
            None,
            now(),
        ),
        list_html(&objects, &[]),
        object::render(&objects[0], &ObjectDetails::default(), &ui(None), now()),
        object::render_missing("x/y/z"),
    ];
    for html in pages {
        assert!(
            html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
            "{html}"
        );
        assert!(html.contains("<meta name=\"color-scheme\" content=\"light dark\">"));
        assert!(
            html.contains("prefers-color-scheme:dark"),
            "the style sheet is inline"
        );
        assert!(html.contains("<script src=\"/assets/live.js\" defer></script>"));
        assert!(html.contains("<a href=\"#main\" class=\"skip\">"));
        assert!(html.contains("<main id=\"main\""));
        assert!(html.contains("<nav aria-label=\"Main\">"));
        assert!(
            !html.contains("<script>"),
            "no inline script (CSP: script-src 'self')"
        );
    }
}

#[test]
fn text_is_escaped() {
    let mut o = retrying_object();
    o.handlers.remove(0);
    let html = list_html(&[o], &[("q", "ready>")]);
    assert!(
        html.contains(">Not &lt;ready&gt; yet &amp; \"waiting\"</td>"),
        "{html}"
    );
    assert!(
        html.contains("title=\"Not &lt;ready&gt; yet &amp; &quot;waiting&quot;\""),
        "{html}"
    );
    let html = list_html(&[retrying_object()], &[("q", "<script>alert(1)</script>")]);
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("value=\"&lt;script&gt;alert(1)&lt;/script&gt;\""),
        "{html}"
    );
}

#[test]
fn the_overview_counts_phases_and_shows_the_core_and_what_needs_attention() {
    let objects = vec![
        object("a", "ok1", P::Handled),
        object("a", "ok2", P::Handled),
        retrying_object(),
        object("b", "bad", P::Failed).handlers(vec![{
            let mut h = handler("create_fn", S::Failed);
            h.message = Some("Permanent.".into());
            h
        }]),
    ];
    let mut about = About::default();
    about.resources = vec!["empties.example.com/v1".into()];
    about.services.push(ServiceView {
        name: "http://127.0.0.1:50051".into(),
        answering: false,
        handlers: 3,
        ..ServiceView::default()
    });
    let overview = Overview {
        queue_depth: 7,
        inflight_calls: 5,
    };
    let html = overview::render(&objects, &overview, &about, None, now());
    let card = |n: &str, label: &str| {
        format!("<span class=\"n\">{n}</span><span class=\"l\">{label}</span>")
    };
    assert!(html.contains(&card("4", "All objects")), "{html}");
    assert!(html.contains(&card("2", "Handled")), "{html}");
    assert!(html.contains(&card("1", "Retrying")), "{html}");
    assert!(html.contains(&card("1", "Failed")), "{html}");
    assert!(html.contains(&card("0", "Deleting")), "{html}");
    assert!(html.contains(&card("0", "In progress")), "{html}");
    assert!(
        !html.contains(">Pending<"),
        "pending only when there are some: {html}"
    );
    assert!(html.contains(&card("7", "Queue depth")), "{html}");
    assert!(html.contains(&card("5", "In-flight calls")), "{html}");
    assert!(html.contains("href=\"/objects?phase=failed\""), "{html}");
    assert!(
        html.contains("empties.example.com/v1"),
        "declared resources: {html}"
    );
    assert!(html.contains("not answering"), "{html}");
    // Needs attention: the failed object first, then the retrying one, with their messages.
    let attention = &html[html.find("Needs attention").unwrap()..];
    let bad = attention.find(">bad<").unwrap();
    let w1 = attention.find(">w1<").unwrap();
    assert!(bad < w1, "{attention}");
    assert!(attention.contains("Permanent."));
    assert!(
        attention.contains("Boom."),
        "a failed sub-handler's message: {attention}"
    );

    about.source = Source::Cluster;
    let html = overview::render(&objects, &overview, &about, None, now());
    assert!(
        !html.contains("Queue depth"),
        "the cluster has no queue: {html}"
    );
    assert!(html.contains("read from their annotations"), "{html}");
}

#[test]
fn the_list_has_filters_sortable_headers_and_rows() {
    let objects = vec![
        object("a", "ok1", P::Handled),
        retrying_object(),
        object("b", "bad", P::Failed),
    ];
    let html = list_html(&objects, &[("phase", "retrying"), ("sort", "name")]);
    assert_eq!(rows(&html), 1, "{html}");
    assert!(
        html.contains("<tr data-key=\"widgets.example.com/v1/ns/w1\">"),
        "{html}"
    );
    assert!(
        html.contains("href=\"/objects/widgets.example.com/v1/ns/w1\""),
        "{html}"
    );
    assert!(
        html.contains("Showing 1–1 of 1 matching (3 in all)."),
        "{html}"
    );
    // The form is a plain GET form with labelled controls that keeps the current choices.
    assert!(html.contains("<form method=\"get\" action=\"/objects\" role=\"search\" aria-label=\"Filter objects\" class=\"filters\">"));
    for id in [
        "f-resource",
        "f-namespace",
        "f-phase",
        "f-handler",
        "f-q",
        "f-per-page",
    ] {
        assert!(
            html.contains(&format!("<label for=\"{id}\">")),
            "{id}: {html}"
        );
    }
    assert!(
        html.contains("<option value=\"retrying\" selected>retrying (1)</option>"),
        "{html}"
    );
    assert!(
        html.contains("<input type=\"hidden\" name=\"sort\" value=\"name\">"),
        "{html}"
    );
    // Headers: the current one says how it is sorted; a click toggles it and keeps the filters.
    assert!(html.contains("<th scope=\"col\" aria-sort=\"ascending\" class=\"sortable\"><a href=\"/objects?phase=retrying&amp;sort=name&amp;dir=desc\">Name"), "{html}");
    assert!(
        html.contains("href=\"/objects?phase=retrying&amp;sort=updated&amp;dir=desc\""),
        "{html}"
    );
    // The row: phase badge, handler chips with their states in text, attempts, the message.
    assert!(
        html.contains("<span class=\"badge p-retrying\">retrying</span>"),
        "{html}"
    );
    assert!(
        html.contains("create_fn/child<span class=\"sr\">: failed</span>"),
        "{html}"
    );
    assert!(html.contains("<td class=\"num\">2</td>"), "{html}");
    assert!(
        html.contains(">Boom.</td>"),
        "a failed handler's message comes first: {html}"
    );
    assert!(html.contains("Clear filters"));

    let none = list_html(&objects, &[("q", "nothing-like-this")]);
    assert_eq!(rows(&none), 0);
    assert!(
        none.contains("No object matches the filters (3 in all)."),
        "{none}"
    );
    assert!(list_html(&[], &[]).contains("No objects yet."));
}

#[test]
fn the_list_paginates() {
    let objects: Vec<ObjectView> = (0..250)
        .map(|i| object("ns", &format!("o{i:03}"), P::Handled))
        .collect();
    let first = list_html(&objects, &[]);
    assert_eq!(rows(&first), 100);
    assert!(first.contains("Showing 1–100 of 250."), "{first}");
    assert!(first.contains("Page 1 of 3"));
    assert!(
        first.contains("<a href=\"/objects?page=2\" rel=\"next\">"),
        "{first}"
    );
    assert!(!first.contains("rel=\"prev\""));
    let last = list_html(&objects, &[("page", "3")]);
    assert_eq!(rows(&last), 50);
    assert!(last.contains("Showing 201–250 of 250."));
    assert!(last.contains("rel=\"prev\"") && !last.contains("rel=\"next\""));
    let small = list_html(&objects, &[("per_page", "25"), ("page", "2")]);
    assert_eq!(rows(&small), 25);
    assert!(
        small.contains("<a href=\"/objects?per_page=25&amp;page=3\" rel=\"next\">"),
        "{small}"
    );
}

#[test]
fn the_object_page_shows_handlers_sub_handlers_events_diff_and_traces() {
    let o = retrying_object();
    let mut details = ObjectDetails::default();
    details.events.push(EventView {
        time: "2026-01-02T03:04:05Z".into(),
        type_: "Warning".into(),
        reason: "HandlerRetrying".into(),
        message: "Handler 'create_fn' failed temporarily: Not ready yet.".into(),
        count: 3,
    });
    details.diff.push(DiffView {
        op: "change".into(),
        path: "spec.size".into(),
        old: Some("1".into()),
        new: Some("2".into()),
    });
    let mut extra = HandlerDetails::default();
    extra.stopped = Some("2026-01-02T03:04:02.5Z".into());
    details.handlers.insert("create_fn/child".into(), extra);
    let html = object::render(&o, &details, &ui(Some("http://127.0.0.1:16686")), now());
    assert!(
        html.contains("data-key=\"widgets.example.com/v1/ns/w1\""),
        "{html}"
    );
    assert!(html.contains("<dt>Cause</dt><dd>create</dd>"), "{html}");
    // The parent first, the sub-handler indented under it.
    let parent = html.find("indent-0\"><!>create_fn</th>").unwrap();
    let child = html
        .find("indent-1\"><span class=\"muted\">create_fn/</span>child")
        .unwrap();
    assert!(parent < child, "{html}");
    assert!(html.contains("<span class=\"badge s-retrying\">retrying</span>"));
    assert!(
        html.contains("<td>03:04:15 (in 5 s)</td>"),
        "next retry: {html}"
    );
    assert!(html.contains("<td>2.5 s</td>"), "duration: {html}");
    assert!(
        html.contains("href=\"http://127.0.0.1:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736\""),
        "{html}"
    );
    assert!(
        html.contains("HandlerRetrying") && html.contains(" ×3"),
        "{html}"
    );
    assert!(html.contains(">spec.size</th>"), "{html}");

    // Without a Jaeger UI there is no link; with per-attempt traces, one link per attempt.
    let html = object::render(&o, &details, &ui(None), now());
    assert!(!html.contains("/trace/"), "{html}");
    let mut extra = HandlerDetails::default();
    for attempt in 1..=2 {
        extra.attempts.push(AttemptView {
            attempt,
            trace_id: Some(format!("{attempt:032x}")),
            ..AttemptView::default()
        });
    }
    details.handlers.insert("create_fn".into(), extra);
    let html = object::render(&o, &details, &ui(Some("https://j.example")), now());
    assert!(html.contains("href=\"https://j.example/trace/00000000000000000000000000000001\""));
    assert!(html.contains(">#2</a>"), "{html}");
}

#[test]
fn secrets_never_show_their_contents() {
    let secret = object("ns", "s", P::Handled).resource("secrets/v1");
    let mut details = ObjectDetails::default();
    details.diff.push(DiffView {
        op: "change".into(),
        path: "data.password".into(),
        old: Some("\"aHVudGVyMg==\"".into()),
        new: Some("\"c3dvcmRmaXNo\"".into()),
    });
    let html = object::render(&secret, &details, &ui(None), now());
    assert!(
        !html.contains("aHVudGVyMg") && !html.contains("c3dvcmRmaXNo"),
        "{html}"
    );
    assert!(html.contains("The contents of Secrets are never shown."));
}

/// The benchmark figure: the list page's server render time with 10,000 objects (printed; the
/// example `list_bench` measures it over HTTP too).
#[test]
fn the_list_renders_10000_objects() {
    let objects = many(10_000);
    let start = Instant::now();
    let html = list_html(&objects, &[("sort", "attempts"), ("dir", "desc")]);
    let sorted = start.elapsed();
    let start = Instant::now();
    let filtered = list_html(&objects, &[("q", "retry 7"), ("phase", "retrying")]);
    let searched = start.elapsed();
    assert_eq!(rows(&html), 100);
    assert!(
        html.contains("Showing 1–100 of 10,000."),
        "{}",
        &html[..2000]
    );
    assert!(rows(&filtered) > 0);
    eprintln!(
        "list page, 10,000 objects ({} build): sorted by attempts {sorted:?}, \
         text search {searched:?}, {} bytes",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        html.len()
    );
}

/// `n` objects over 20 namespaces and 2 resources, in every phase.
pub(crate) fn many(n: usize) -> Vec<ObjectView> {
    let mut objects: Vec<ObjectView> = (0..n)
        .map(|i| {
            let phase = crate::model::PHASES[i % 6];
            let mut h = handler(
                "create_fn",
                if phase == P::Handled {
                    S::Succeeded
                } else {
                    S::Retrying
                },
            );
            h.retries = (i % 9) as u32;
            h.message = (phase != P::Handled).then(|| format!("retry {i}: not ready"));
            object(&format!("ns-{}", i % 20), &format!("object-{i:05}"), phase)
                .resource(if i % 2 == 0 {
                    "widgets.example.com/v1"
                } else {
                    "gadgets.example.com/v1"
                })
                .handlers(vec![h, handler("update_fn", S::Pending)])
        })
        .collect();
    objects.sort_by_key(ObjectView::key);
    objects
}

// ---- the routes, served on a real socket ----------------------------------------------------

async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// `GET path` with extra header lines; the status line, the head, the body.
async fn get(addr: std::net::SocketAddr, path: &str, headers: &[&str]) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn app(model: Arc<Fake>, token: Option<&str>) -> axum::Router {
    let model: Arc<dyn ReadModel> = model;
    let router = router(Arc::clone(&model))
        .merge(crate::api_router(model))
        .route("/healthz", get_ok());
    crate::protect(router, token)
}

fn get_ok() -> axum::routing::MethodRouter {
    axum::routing::get(|| async { "ok" })
}

#[tokio::test]
async fn routes_serve_pages_the_script_and_the_api() {
    let model = Arc::new(Fake::new(vec![retrying_object()]));
    let addr = serve(app(Arc::clone(&model), None)).await;
    let (status, head, body) = get(addr, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
    assert!(body.contains("Overview"));
    let (status, _, body) = get(addr, "/objects?namespace=ns", &[]).await;
    assert_eq!((status, rows(&body)), (200, 1));
    let (status, _, body) = get(addr, "/objects/widgets.example.com/v1/ns/w1", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("create_fn"));
    let (status, _, body) = get(addr, "/objects/widgets.example.com/v1/ns/nope", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("Object not found"));
    let (status, head, body) = get(addr, "/assets/live.js", &[]).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("new EventSource('/api/v1/events')"));
    let (status, _, body) = get(addr, "/api/v1/objects", &[]).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["objects"][0]["name"], "w1");
    assert_eq!(json["queue_depth"], 3);
}

#[tokio::test]
async fn changes_are_pushed_as_server_sent_events() {
    let model = Arc::new(Fake::new(vec![]));
    let addr = serve(app(Arc::clone(&model), None)).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains("data: {\"type\":\"remove\"") {
        // Keep announcing until the subscription is in place.
        let _ = model
            .changes
            .send(r#"{"type":"remove","key":"a/b/c"}"#.to_owned());
        if let Ok(Ok(n)) = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            stream.read(&mut buffer),
        )
        .await
        {
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        assert!(tokio::time::Instant::now() < deadline, "no event: {seen}");
    }
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );
    assert!(
        seen.contains("event: object\ndata: {\"type\":\"remove\",\"key\":\"a/b/c\"}"),
        "{seen}"
    );
}

#[tokio::test]
async fn a_token_guards_every_route_but_the_probes() {
    let model = Arc::new(Fake::new(vec![retrying_object()]));
    let addr = serve(app(model, Some("s3cret t"))).await;
    for path in [
        "/",
        "/objects",
        "/api/v1/objects",
        "/api/v1/events",
        "/assets/live.js",
    ] {
        let (status, head, _) = get(addr, path, &[]).await;
        assert_eq!(status, 401, "{path}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
    }
    let (status, _, body) = get(addr, "/", &["Accept: text/html"]).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("<label for=\"token\">Access token</label>"),
        "{body}"
    );
    assert_eq!(get(addr, "/healthz", &[]).await.0, 200);
    // A bearer token.
    assert_eq!(
        get(addr, "/api/v1/objects", &["Authorization: Bearer s3cret t"])
            .await
            .0,
        200
    );
    assert_eq!(
        get(addr, "/api/v1/objects", &["Authorization: Bearer nope"])
            .await
            .0,
        401
    );
    // A token in the query, once: a redirect without it, and a cookie.
    let (status, head, _) = get(addr, "/objects?phase=failed&token=s3cret%20t", &[]).await;
    assert_eq!(status, 303, "{head}");
    assert!(
        head.contains("location: /objects?phase=failed\r\n"),
        "{head}"
    );
    assert!(
        head.contains(
            "set-cookie: operon_token=7333637265742074; path=/; httponly; samesite=strict"
        ),
        "{head}"
    );
    assert_eq!(
        get(addr, "/objects", &["Cookie: operon_token=7333637265742074"])
            .await
            .0,
        200
    );
    assert_eq!(
        get(addr, "/objects", &["Cookie: operon_token=00"]).await.0,
        401
    );
    let (status, _, body) = get(addr, "/?token=wrong", &[]).await;
    assert_eq!(status, 401);
    assert!(body.contains("not the right one"));
    // Never a redirect to another origin.
    let (_, head, _) = get(addr, "//evil.example/?token=s3cret%20t", &[]).await;
    assert!(head.contains("location: /\r\n"), "{head}");
}

mod insight;
mod parent;
