//! What `operon dashboard` reads from Kopf-format objects.

use operon_dashboard::ReadModel as _;
use serde_json::json;

use super::*;
use crate::core::persistence::time;

const RESOURCE: &str = "kopfexamples.kopf.dev/v1";

fn now() -> Timestamp {
    "2026-01-02T03:04:30Z".parse().unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn storages() -> Storages {
    Storages::new("kopf.zalando.org").unwrap()
}

fn record(f: impl FnOnce(&mut ProgressRecord)) -> String {
    let mut r = ProgressRecord {
        started: Some(at("2026-01-02T03:04:00Z")),
        purpose: Some("create".into()),
        retries: Some(0),
        success: Some(false),
        failure: Some(false),
        ..ProgressRecord::default()
    };
    f(&mut r);
    r.to_json(false)
}

/// A KopfExample with these annotations and `spec`.
fn body(annotations: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfExample",
        "metadata": {
            "name": "ex1",
            "namespace": "ns",
            "uid": "u-1",
            "creationTimestamp": "2026-01-02T03:00:00Z",
            "managedFields": [
                {"manager": "kubectl", "time": "2026-01-02T03:00:00Z"},
                {"manager": "kopf", "time": "2026-01-02T03:04:01Z"},
            ],
            "annotations": annotations,
        },
        "spec": spec,
    })
}

fn diffbase(spec: Value) -> String {
    DiffBaseStorage::encode(&json!({ "spec": spec }))
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
    observe(RESOURCE, body, &storages(), now())
}

/// The view with nothing remembered of the last cycle.
fn view_of(observed: &Observed, events: &[EventView]) -> (ObjectView, ObjectDetails) {
    super::view(observed, &LastCycle::default(), events)
}

#[test]
fn handler_ids_skip_the_storage_keys_and_merge_v1_and_v2_keys() {
    let long = format!("create_{}", "x".repeat(50));
    let s = storages();
    let convention = s.convention.clone();
    let long_keys = convention.make_keys(&long, &json!({}));
    assert_eq!(long_keys.len(), 2, "the long id has a V1 and a V2 key");
    let mut annotations = json!({
        "kopf.zalando.org/last-handled-configuration": diffbase(json!({"a": 1})),
        "kopf.zalando.org/touch-dummy": "2026-01-02T03:04:05+00:00",
        "kopf.zalando.org/kopf-managed": "yes",
        "kopf.zalando.org/create_fn": record(|r| r.subrefs = Some(vec!["create_fn/sub.one".into()])),
        "kopf.zalando.org/create_fn.sub.one": record(|_| {}),
        "other.example.com/create_fn": "not ours",
    });
    for key in &long_keys {
        annotations[key] = json!(record(|_| {}));
    }
    let ids = handler_ids(&body(annotations, json!({})), &s);
    assert_eq!(ids, ["create_fn", "create_fn/sub.one", long.as_str()]);
}

#[test]
fn legacy_status_records_are_found_too() {
    let mut b = body(json!({}), json!({}));
    b["status"] = json!({"kopf": {"progress": {"old_fn": {"started": "2020-02-14T16:58:25.396364", "retries": 2}}}});
    let o = observed(&b);
    assert_eq!(o.handlers.len(), 1);
    assert_eq!(
        (o.handlers[0].id.as_str(), o.handlers[0].retries),
        ("old_fn", 2)
    );
}

#[test]
fn a_retrying_handler_makes_a_retrying_object() {
    let b = body(
        json!({
            "kopf.zalando.org/create_fn": record(|r| {
                r.retries = Some(2);
                r.delayed = Some(at("2026-01-02T03:05:00Z"));
                r.message = Some("Not ready yet.".into());
            }),
            "kopf.zalando.org/other_fn": record(|r| {
                r.success = Some(true);
                r.retries = Some(1);
                r.stopped = Some(at("2026-01-02T03:04:02.5Z"));
            }),
        }),
        json!({"field": "value"}),
    );
    let (view, details) = view_of(&observed(&b), &[]);
    assert_eq!((view.phase, view.cause.as_str()), ("retrying", "create"));
    assert_eq!(
        (
            view.namespace.as_str(),
            view.name.as_str(),
            view.uid.as_str()
        ),
        ("ns", "ex1", "u-1")
    );
    assert_eq!(
        view.updated, "2026-01-02T03:04:01Z",
        "the last managed-fields write"
    );
    let create = &view.handlers[0];
    assert_eq!(
        (create.id.as_str(), create.state, create.retries),
        ("create_fn", "retrying", 2)
    );
    assert_eq!(create.delayed.as_deref(), Some("2026-01-02T03:05:00Z"));
    assert_eq!(create.message.as_deref(), Some("Not ready yet."));
    assert_eq!(create.started.as_deref(), Some("2026-01-02T03:04:00Z"));
    assert_eq!(view.handlers[1].state, "succeeded");
    assert_eq!(
        details.handlers["other_fn"].stopped.as_deref(),
        Some("2026-01-02T03:04:02.5Z")
    );
    assert!(
        details.diff.is_empty(),
        "no diff-base yet: nothing to compare"
    );
}

#[test]
fn handler_states_follow_the_record() {
    let state = |f: fn(&mut ProgressRecord)| {
        let mut r = ProgressRecord::default();
        f(&mut r);
        handler_state(&r, now())
    };
    assert_eq!(state(|_| {}), "pending");
    assert_eq!(state(|r| r.success = Some(true)), "succeeded");
    assert_eq!(state(|r| r.failure = Some(true)), "failed");
    assert_eq!(state(|r| r.retries = Some(1)), "retrying");
    assert_eq!(
        state(|r| r.delayed = Some(at("2026-01-02T03:04:31Z"))),
        "retrying"
    );
    assert_eq!(
        state(|r| r.delayed = Some(at("2026-01-02T03:04:29Z"))),
        "pending"
    );
}

#[test]
fn phases_from_records_diffbase_and_deletion() {
    let phase = |b: &Value| view_of(&observed(b), &[]).0.phase;
    let pending = body(json!({}), json!({}));
    assert_eq!(phase(&pending), "pending");
    assert_eq!(view_of(&observed(&pending), &[]).0.cause, "create");
    let handled = body(
        json!({"kopf.zalando.org/last-handled-configuration": diffbase(json!({"a": 1}))}),
        json!({"a": 1}),
    );
    assert_eq!(phase(&handled), "handled");
    let running = body(
        json!({"kopf.zalando.org/create_fn": record(|_| {})}),
        json!({}),
    );
    assert_eq!(phase(&running), "in-progress");
    let failed = body(
        json!({"kopf.zalando.org/create_fn": record(|r| r.failure = Some(true))}),
        json!({}),
    );
    assert_eq!(phase(&failed), "failed");
    let mut deleting = running.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-02T03:04:20Z");
    deleting["metadata"]["finalizers"] = json!(["kopf.zalando.org/KopfFinalizerMarker"]);
    assert_eq!(phase(&deleting), "deleting");
}

#[test]
fn a_finished_cycle_is_read_from_its_events() {
    let handled = observed(&body(
        json!({"kopf.zalando.org/last-handled-configuration": diffbase(json!({"a": 1}))}),
        json!({"a": 1}),
    ));
    // Kopf's and Operon's lines, newest first.
    let events = [
        event(
            "Creation is processed: 1 succeeded; 1 failed.",
            "2026-01-02T03:04:10Z",
        ),
        event(
            "Handler 'create_b' failed permanently: This example always fails.",
            "2026-01-02T03:04:09Z",
        ),
        event("Handler 'create_a' succeeded.", "2026-01-02T03:04:08Z"),
        event(
            "Handler 'create_b' failed temporarily: Not yet.",
            "2026-01-02T03:04:05Z",
        ),
    ];
    let (view, details) = view_of(&handled, &events);
    assert_eq!(view.phase, "failed");
    assert_eq!(view.cause, "create");
    let states: Vec<(&str, &str)> = view
        .handlers
        .iter()
        .map(|h| (h.id.as_str(), h.state))
        .collect();
    assert_eq!(states, [("create_a", "succeeded"), ("create_b", "failed")]);
    assert_eq!(
        view.handlers[1].message.as_deref(),
        Some("This example always fails.")
    );
    assert_eq!(details.events.len(), 4);
    // A later success of the same handler wins.
    let mut later = vec![event(
        "Handler 'create_b' succeeded.",
        "2026-01-02T03:05:00Z",
    )];
    later.extend(events);
    assert_eq!(view_of(&handled, &later).0.phase, "handled");
    // While records are stored, they decide; the events are only shown.
    let running = observed(&body(
        json!({"kopf.zalando.org/create_b": record(|_| {})}),
        json!({}),
    ));
    assert_eq!(view_of(&running, &later).0.phase, "in-progress");
}

#[test]
fn pending_changes_are_diffed_against_the_diffbase() {
    let mut b = body(
        json!({"kopf.zalando.org/last-handled-configuration":
            DiffBaseStorage::encode(&json!({"spec": {"size": 1, "gone": true}, "status": {"phase": "Ready"}}))}),
        json!({"size": 2}),
    );
    b["status"] = json!({"phase": "Ready", "other": 1});
    let (view, details) = view_of(&observed(&b), &[]);
    assert_eq!((view.phase, view.cause.as_str()), ("handled", "update"));
    let diff: Vec<(&str, &str)> = details
        .diff
        .iter()
        .map(|d| (d.op.as_str(), d.path.as_str()))
        .collect();
    assert_eq!(diff, [("remove", "spec.gone"), ("change", "spec.size")]);
    assert_eq!(details.diff[1].old.as_deref(), Some("1"));
    assert_eq!(details.diff[1].new.as_deref(), Some("2"));
}

#[test]
fn secrets_are_never_diffed() {
    let b = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u", "annotations": {
            "kopf.zalando.org/last-handled-configuration":
                DiffBaseStorage::encode(&json!({"data": {"password": "aHVudGVyMg=="}})),
        }},
        "data": {"password": "c3dvcmRmaXNo"},
    });
    let o = observe("secrets/v1", &b, &storages(), now());
    assert!(o.diff.is_empty());
    assert!(o.has_diffbase);
}

#[test]
fn an_unreadable_record_is_shown_as_a_failure() {
    let b = body(
        json!({"kopf.zalando.org/create_fn": "{not json"}),
        json!({}),
    );
    let (view, _) = view_of(&observed(&b), &[]);
    assert_eq!(view.phase, "failed");
    assert!(
        view.handlers[0]
            .message
            .as_deref()
            .unwrap()
            .contains("unreadable")
    );
}

#[test]
fn kopf_written_timestamps_are_read() {
    let text = time::format(at("2026-01-02T03:04:00.123456Z"));
    let b = body(
        json!({"kopf.zalando.org/create_fn": format!("{{\"started\":\"{text}\",\"retries\":1,\"delayed\":\"2026-01-02T03:05:00.000000+00:00\"}}")}),
        json!({}),
    );
    let h = &observed(&b).handlers[0];
    assert_eq!(h.started.as_deref(), Some("2026-01-02T03:04:00.123456Z"));
    assert_eq!(h.delayed.as_deref(), Some("2026-01-02T03:05:00Z"));
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
    let (about, id, view) = event_view(&e).unwrap();
    assert_eq!((about.as_str(), id.as_str()), ("u-1", "e-1"));
    assert_eq!(view.time, "2026-01-02T03:04:05Z");
    assert_eq!((view.type_.as_str(), view.count), ("Error", 2));
    let kinds = [("kopf.dev".to_owned(), "KopfExample".to_owned())];
    assert!(is_about(&e, &kinds));
    assert!(!is_about(&e, &[("".to_owned(), "KopfExample".to_owned())]));
}

#[test]
fn the_store_announces_changes_and_keeps_recent_events() {
    let store = Store::default();
    let mut changes = store.subscribe();
    let running = body(
        json!({"kopf.zalando.org/create_fn": record(|r| r.retries = Some(1))}),
        json!({}),
    );
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
    assert_eq!(store.object(&key).unwrap().phase, "retrying");
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
    *store.resources.write().unwrap() = vec![RESOURCE.to_owned()];
    let about = store.about();
    assert_eq!(about.source, Source::Cluster);
    assert_eq!(about.resources, [RESOURCE]);
    assert!(!store.ready(), "not ready before the watches are counted");
}

#[test]
fn a_finished_cycle_is_remembered_from_what_was_seen_while_it_ran() {
    let diffbase_only = json!({"kopf.zalando.org/last-handled-configuration": diffbase(json!({}))});
    // Kopf writes the permanent failure of one handler, runs the next, then purges.
    let mut running = diffbase_only.clone();
    running["kopf.zalando.org/create_fn"] = json!(record(|r| {
        r.failure = Some(true);
        r.retries = Some(1);
        r.message = Some("This widget always fails.".into());
        r.stopped = Some(at("2026-01-02T03:04:01Z"));
    }));
    running["kopf.zalando.org/parent_fn"] = json!(record(|_| {}));
    let seen = observed(&body(running, json!({})));
    let last = LastCycle::default().after(&seen);
    assert_eq!(last.purpose.as_deref(), Some("create"));
    assert_eq!(last.finished.len(), 1, "only the finished handlers");
    let purged = observed(&body(diffbase_only.clone(), json!({})));
    let last = last.after(&purged);
    let (view, details) = super::view(&purged, &last, &[]);
    assert_eq!((view.phase, view.cause.as_str()), ("failed", "create"));
    assert_eq!(
        view.handlers[0].message.as_deref(),
        Some("This widget always fails.")
    );
    assert!(details.handlers["create_fn"].stopped.is_some());
    // A new cycle replaces the memory.
    let mut update = diffbase_only;
    update["kopf.zalando.org/update_fn"] = json!(record(|r| {
        r.purpose = Some("update".into());
        r.success = Some(true);
    }));
    let last = last.after(&observed(&body(update, json!({}))));
    assert_eq!(last.purpose.as_deref(), Some("update"));
    let (view, _) = super::view(&purged, &last, &[]);
    assert_eq!((view.phase, view.cause.as_str()), ("handled", "update"));
}

#[test]
fn kopfs_none_message_of_a_waiting_parent_is_no_message() {
    let b = body(
        json!({"kopf.zalando.org/parent_fn": record(|r| {
            r.retries = Some(3);
            r.message = Some("None".into());
        })}),
        json!({}),
    );
    assert_eq!(observed(&b).handlers[0].message, None);
}
