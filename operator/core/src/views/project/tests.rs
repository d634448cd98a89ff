//! What Kopf-format objects say, as the dashboard shows them.

use serde_json::json;

use super::*;
use crate::persistence::time;
use crate::views::model::HandlerStatus as S;
use crate::views::model::ObjectPhase as P;

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
    assert_eq!((view.phase, view.cause.as_str()), (P::Retrying, "create"));
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
        ("create_fn", S::Retrying, 2)
    );
    assert_eq!(create.delayed.as_deref(), Some("2026-01-02T03:05:00Z"));
    assert_eq!(create.message.as_deref(), Some("Not ready yet."));
    assert_eq!(create.started.as_deref(), Some("2026-01-02T03:04:00Z"));
    assert_eq!(view.handlers[1].state, S::Succeeded);
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
    assert_eq!(state(|_| {}), S::Pending);
    assert_eq!(state(|r| r.success = Some(true)), S::Succeeded);
    assert_eq!(state(|r| r.failure = Some(true)), S::Failed);
    assert_eq!(state(|r| r.retries = Some(1)), S::Retrying);
    assert_eq!(
        state(|r| r.delayed = Some(at("2026-01-02T03:04:31Z"))),
        S::Retrying
    );
    assert_eq!(
        state(|r| r.delayed = Some(at("2026-01-02T03:04:29Z"))),
        S::Pending
    );
}

#[test]
fn phases_from_records_diffbase_and_deletion() {
    let phase = |b: &Value| view_of(&observed(b), &[]).0.phase;
    let pending = body(json!({}), json!({}));
    assert_eq!(phase(&pending), P::Pending);
    assert_eq!(view_of(&observed(&pending), &[]).0.cause, "create");
    let handled = body(
        json!({"kopf.zalando.org/last-handled-configuration": diffbase(json!({"a": 1}))}),
        json!({"a": 1}),
    );
    assert_eq!(phase(&handled), P::Handled);
    let running = body(
        json!({"kopf.zalando.org/create_fn": record(|_| {})}),
        json!({}),
    );
    assert_eq!(phase(&running), P::InProgress);
    let failed = body(
        json!({"kopf.zalando.org/create_fn": record(|r| r.failure = Some(true))}),
        json!({}),
    );
    assert_eq!(phase(&failed), P::Failed);
    let mut deleting = running.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-02T03:04:20Z");
    deleting["metadata"]["finalizers"] = json!(["kopf.zalando.org/KopfFinalizerMarker"]);
    assert_eq!(phase(&deleting), P::Deleting);
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
    assert_eq!(view.phase, P::Failed);
    assert_eq!(view.cause, "create");
    let states: Vec<(&str, S)> = view
        .handlers
        .iter()
        .map(|h| (h.id.as_str(), h.state))
        .collect();
    assert_eq!(
        states,
        [("create_a", S::Succeeded), ("create_b", S::Failed)]
    );
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
    assert_eq!(view_of(&handled, &later).0.phase, P::Handled);
    // While records are stored, they decide; the events are only shown.
    let running = observed(&body(
        json!({"kopf.zalando.org/create_b": record(|_| {})}),
        json!({}),
    ));
    assert_eq!(view_of(&running, &later).0.phase, P::InProgress);
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
    assert_eq!((view.phase, view.cause.as_str()), (P::Handled, "update"));
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
    assert_eq!(view.phase, P::Failed);
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
    assert_eq!((view.phase, view.cause.as_str()), (P::Failed, "create"));
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
    assert_eq!((view.phase, view.cause.as_str()), (P::Handled, "update"));
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

#[test]
fn the_engines_handler_states_follow_the_state() {
    let started = at("2026-01-02T03:04:00Z");
    let shown = |f: fn(&mut HandlerState)| {
        let mut s = HandlerState::from_scratch(started, None);
        f(&mut s);
        handler_view("create_fn", &s, now())
    };
    let fresh = shown(|_| {});
    assert_eq!(
        fresh,
        HandlerView {
            id: "create_fn".into(),
            state: S::Pending,
            retries: 0,
            started: Some("2026-01-02T03:04:00Z".into()),
            delayed: None,
            message: None,
            trace_id: None,
        }
    );
    assert_eq!(shown(|s| s.success = true).state, S::Succeeded);
    assert_eq!(shown(|s| s.failure = true).state, S::Failed);
    assert_eq!(
        shown(|s| {
            s.retries = 1;
            s.message = Some("Not yet.".into());
        })
        .state,
        S::Retrying
    );
    let sleeping = shown(|s| s.delayed = Some(at("2026-01-02T03:05:00Z")));
    assert_eq!(sleeping.state, S::Retrying);
    assert_eq!(sleeping.delayed.as_deref(), Some("2026-01-02T03:05:00Z"));
    assert_eq!(
        shown(|s| s.delayed = Some(at("2026-01-02T03:04:29Z"))).state,
        S::Pending,
        "awake again"
    );
    assert_eq!(
        shown(|s| {
            s.success = true;
            s.retries = 2;
        })
        .state,
        S::Succeeded,
        "finished wins over earlier retries"
    );
}

fn handler_in(state: S) -> HandlerView {
    let mut s = HandlerState::from_scratch(now(), None);
    s.success = state == S::Succeeded;
    s.failure = state == S::Failed;
    s.retries = u32::from(state == S::Retrying);
    let view = handler_view("h", &s, now());
    assert_eq!(view.state, state);
    view
}

#[test]
fn an_engine_cycle_ends_in_a_phase() {
    let end = |deleting, handling, done, no_cause| CycleEnd {
        deleting,
        handling,
        done,
        no_cause,
    };
    let ok = [handler_in(S::Succeeded), handler_in(S::Pending)];
    let retrying = [handler_in(S::Succeeded), handler_in(S::Retrying)];
    let failed = [handler_in(S::Retrying), handler_in(S::Failed)];
    assert_eq!(end(false, true, true, false).phase(&ok), P::Handled);
    assert_eq!(end(false, true, false, false).phase(&ok), P::InProgress);
    assert_eq!(
        end(false, false, false, true).phase(&[]),
        P::InProgress,
        "a finalizer cycle: the real one follows"
    );
    assert_eq!(
        end(false, false, false, false).phase(&[]),
        P::Handled,
        "a no-op cycle"
    );
    assert_eq!(end(false, true, false, false).phase(&retrying), P::Retrying);
    assert_eq!(end(false, true, true, false).phase(&failed), P::Failed);
    assert_eq!(end(true, true, false, false).phase(&failed), P::Deleting);
    assert!(end(false, true, true, false).replaces_view());
    assert!(end(true, false, false, false).replaces_view());
    assert!(!end(false, false, false, true).replaces_view());
    assert!(!end(false, false, true, false).replaces_view());
}

#[test]
fn an_engine_cycle_is_viewed_with_its_subject_and_cause() {
    let b = body(json!({}), json!({}));
    let subject = Subject::of(RESOURCE.to_owned(), &b);
    assert_eq!(
        (
            subject.namespace.as_str(),
            subject.name.as_str(),
            subject.uid.as_str()
        ),
        ("ns", "ex1", "u-1")
    );
    let end = CycleEnd {
        deleting: false,
        handling: true,
        done: false,
        no_cause: false,
    };
    let view = cycle_view(
        subject,
        "create",
        &end,
        vec![handler_in(S::Retrying)],
        now(),
    );
    assert_eq!(view.key(), format!("{RESOURCE}/ns/ex1"));
    assert_eq!((view.phase, view.cause.as_str()), (P::Retrying, "create"));
    assert_eq!(view.updated, "2026-01-02T03:04:30Z");
    assert_eq!(view.handlers.len(), 1);
}

#[test]
fn a_refused_object_is_a_failure_of_the_object_itself() {
    let b = body(json!({}), json!({}));
    let view = refused_view(
        Subject::of(RESOURCE.to_owned(), &b),
        "The stored diff-base is unusable: x",
        now(),
    );
    assert_eq!((view.phase, view.cause.as_str()), (P::Failed, "invalid"));
    assert_eq!(view.uid, "u-1");
    assert_eq!(view.handlers.len(), 1);
    let h = &view.handlers[0];
    assert_eq!(
        (h.id.as_str(), h.state, h.retries),
        ("(object)", S::Failed, 0)
    );
    assert_eq!(
        h.message.as_deref(),
        Some("The stored diff-base is unusable: x")
    );
    assert_eq!(view.updated, "2026-01-02T03:04:30Z");
}

#[test]
fn a_cycle_whose_write_was_refused_is_not_shown_handled() {
    let b = body(json!({}), json!({}));
    let mut view = refused_view(Subject::of(RESOURCE.to_owned(), &b), "x", now());
    view.phase = P::Handled;
    view.handlers[0].state = S::Succeeded;
    not_stored(&mut view, "Patching failed: too long (422 Invalid)");
    assert_eq!(view.phase, P::Failed);
    assert_eq!(
        view.handlers[0].state,
        S::Succeeded,
        "the call's own answer stays"
    );
    let row = &view.handlers[1];
    assert_eq!((row.id.as_str(), row.state), ("(patch)", S::Failed));
    assert_eq!(
        row.message.as_deref(),
        Some("Patching failed: too long (422 Invalid) (nothing of this cycle was stored)")
    );
}

#[test]
fn diffs_are_shown_compact_and_never_for_secrets() {
    let items = diff(
        Some(&json!({"spec": {"a": 1, "text": "x".repeat(3000)}})),
        Some(&json!({"spec": {"a": 2}})),
    );
    let shown = shown_diff(RESOURCE, &items).unwrap();
    let ops: Vec<(&str, &str)> = shown
        .iter()
        .map(|d| (d.op.as_str(), d.path.as_str()))
        .collect();
    assert_eq!(ops, [("remove", "spec.text"), ("change", "spec.a")]);
    let cut = shown[0].old.as_deref().unwrap();
    assert_eq!(cut.chars().count(), 2001, "2000 characters and an ellipsis");
    assert!(cut.starts_with("\"xxx") && cut.ends_with('…'));
    assert_eq!(shown[0].new, None);
    assert_eq!(
        (shown[1].old.as_deref(), shown[1].new.as_deref()),
        (Some("1"), Some("2"))
    );
    assert_eq!(shown_diff("secrets/v1", &items), None);
    assert!(is_secret("secrets/v1"));
    assert!(!is_secret("secretstores.example.com/v1"));
}

#[test]
fn events_are_read_from_their_fields() {
    let stored = StoredEvent {
        about: Some("u-1".into()),
        uid: Some("e-1".into()),
        name: Some("kopf-event-x".into()),
        last_timestamp: Some(at("2026-01-02T03:04:05Z")),
        event_time: Some(at("2026-01-02T03:04:04.5Z")),
        count: Some(2),
        type_: Some("Error".into()),
        reason: Some("Logging".into()),
        message: Some("Handler 'a' succeeded.".into()),
        ..StoredEvent::default()
    };
    let (about, id, view) = event_view(stored.clone()).unwrap();
    assert_eq!((about.as_str(), id.as_str()), ("u-1", "e-1"));
    assert_eq!(
        view,
        EventView {
            time: "2026-01-02T03:04:05Z".into(),
            type_: "Error".into(),
            reason: "Logging".into(),
            message: "Handler 'a' succeeded.".into(),
            count: 2,
        }
    );
    // Without a last timestamp: the event time; a series counts; the name without a uid.
    let series = StoredEvent {
        uid: None,
        last_timestamp: None,
        series_count: Some(5),
        ..stored.clone()
    };
    let (_, id, view) = event_view(series).unwrap();
    assert_eq!(id, "kopf-event-x");
    assert_eq!(
        (view.time.as_str(), view.count),
        ("2026-01-02T03:04:04.5Z", 5)
    );
    // Only a creation time, no count: once.
    let bare = StoredEvent {
        about: Some("u-1".into()),
        name: Some("n".into()),
        created: Some(at("2026-01-02T03:00:00Z")),
        ..StoredEvent::default()
    };
    let (_, _, view) = event_view(bare).unwrap();
    assert_eq!(
        (view.time.as_str(), view.count),
        ("2026-01-02T03:00:00Z", 1)
    );
    assert_eq!(view.type_, "");
    // Not about an object, or without an id: not shown.
    assert_eq!(
        event_view(StoredEvent {
            about: None,
            ..stored.clone()
        }),
        None
    );
    assert_eq!(
        event_view(StoredEvent {
            uid: None,
            name: None,
            ..stored
        }),
        None
    );
}
