//! `operon dashboard`'s selectors, watches and read model (what the annotations say is
//! `operon_core::views`' and tested there).

use std::collections::HashSet;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use operon_dashboard::{ObjectPhase, ReadModel as _, Source};
use serde_json::{Value, json};

use super::*;
use crate::core::persistence::ProgressRecord;
use crate::core::views::{EventView, Observed, observe};
use crate::runtime::events;

const RESOURCE: &str = "kopfexamples.kopf.dev/v1";

fn record(f: impl FnOnce(&mut ProgressRecord)) -> String {
    let mut r = ProgressRecord {
        started: Some("2026-01-02T03:04:00Z".parse().unwrap()),
        purpose: Some("create".into()),
        retries: Some(0),
        success: Some(false),
        failure: Some(false),
        ..ProgressRecord::default()
    };
    f(&mut r);
    r.to_json(false)
}

/// A KopfExample with these annotations.
fn body(annotations: Value) -> Value {
    json!({
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfExample",
        "metadata": {
            "name": "ex1",
            "namespace": "ns",
            "uid": "u-1",
            "creationTimestamp": "2026-01-02T03:00:00Z",
            "annotations": annotations,
        },
        "spec": {},
    })
}

fn event(message: &str, time: &str) -> EventView {
    EventView {
        time: time.into(),
        type_: "Warning".into(),
        reason: "Logging".into(),
        message: message.into(),
        count: 1,
    }
}

fn observed(body: &Value) -> Observed {
    let now: Timestamp = "2026-01-02T03:04:30Z".parse().unwrap();
    observe(
        RESOURCE,
        body,
        &Storages::new("kopf.zalando.org").unwrap(),
        now,
    )
}

#[test]
fn resources_are_read_kubectl_style() {
    let sel = |t: &str| {
        let s = parse_selector(t).unwrap();
        (s.group, s.version, s.name)
    };
    let owned = |g: &str, v: &str, n: &str| (g.to_owned(), v.to_owned(), n.to_owned());
    assert_eq!(
        sel("kopf.dev/v1/kopfexamples"),
        owned("kopf.dev", "v1", "kopfexamples")
    );
    assert_eq!(sel("v1/configmaps"), owned("", "v1", "configmaps"));
    assert_eq!(
        sel("kopfexamples.kopf.dev"),
        owned("kopf.dev", "", "kopfexamples")
    );
    assert_eq!(
        sel("deployments.v1.apps"),
        owned("apps", "v1", "deployments")
    );
    assert_eq!(sel("kex"), owned("", "", "kex"));
    assert!(parse_selector("a/b/c/d").is_err());
    assert!(parse_selector("a//c").is_err());
    assert!(parse_selector("").is_err());
}

#[test]
fn events_are_read_from_the_api_object() {
    let e: Event = serde_json::from_value(json!({
        "metadata": {"name": "kopf-event-x", "namespace": "ns", "uid": "e-1"},
        "involvedObject": {"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "uid": "u-1", "name": "ex1"},
        "type": "Error", "reason": "Logging", "message": "Handler 'a' succeeded.",
        "lastTimestamp": "2026-01-02T03:04:05Z", "count": 2,
    }))
    .unwrap();
    let (about, id, view) = events::view_of(&e).unwrap();
    assert_eq!((about.as_str(), id.as_str()), ("u-1", "e-1"));
    assert_eq!(view.time, "2026-01-02T03:04:05Z");
    assert_eq!((view.type_.as_str(), view.count), ("Error", 2));
    let kinds = [("kopf.dev".to_owned(), "KopfExample".to_owned())];
    assert!(watch::is_about(&e, &kinds));
    assert!(!watch::is_about(
        &e,
        &[("".to_owned(), "KopfExample".to_owned())]
    ));
}

#[test]
fn the_store_announces_changes_and_keeps_recent_events() {
    let store = Store::default();
    let mut changes = store.subscribe();
    let running = body(json!({"kopf.zalando.org/create_fn": record(|r| r.retries = Some(1))}));
    store.apply(observed(&running));
    let line: Value = serde_json::from_str(&changes.try_recv().unwrap()).unwrap();
    assert_eq!(line["type"], "upsert");
    assert_eq!(line["object"]["phase"], "retrying");
    // The same again: nothing new to announce.
    store.apply(observed(&running));
    assert!(changes.try_recv().is_err());
    // An event about it: announced, shown on its page; the newest first, at most 20.
    for i in 0..25 {
        store.event(
            "u-1",
            &format!("e{i}"),
            event(&format!("m{i}"), &format!("2026-01-02T03:04:{i:02}Z")),
        );
    }
    store.event("u-1", "e24", event("m24 again", "2026-01-02T03:04:24Z"));
    let key = format!("{RESOURCE}/ns/ex1");
    let details = store.details(&key);
    assert_eq!(details.events.len(), 20);
    assert_eq!(details.events[0].message, "m24 again");
    assert_eq!(details.events[19].message, "m5");
    assert!(changes.try_recv().is_ok());
    assert_eq!(store.object(&key).unwrap().phase, ObjectPhase::Retrying);
    // Gone while the watch was away: swept.
    store.sweep(RESOURCE, Some("ns"), &HashSet::new());
    assert!(store.objects().is_empty());
    while let Ok(line) = changes.try_recv() {
        let line: Value = serde_json::from_str(&line).unwrap();
        if line["type"] == "remove" {
            assert_eq!(line["key"], json!(key));
            return;
        }
    }
    panic!("no removal was announced");
}

#[test]
fn the_store_describes_itself_as_read_from_the_cluster() {
    let store = Store::default();
    store.set_resources(vec![RESOURCE.to_owned()]);
    let about = store.about();
    assert_eq!(about.source, Source::Cluster);
    assert_eq!(about.resources, [RESOURCE]);
    assert!(!store.ready(), "not ready before the watches are counted");
}
