//! End-to-end tests of the core engine (issue 3) on the real local control plane.
//!
//! Each test gets a fresh namespace, its own example handler service (a ledger of every
//! execution) and its own core (`operon run -n <ns>`), and asserts on what an outsider sees: the
//! objects' annotations and status, the ledger, Kubernetes Events, the core's HTTP endpoints.
//! Expected Kopf-format values come from real Kopf 1.45.2 (tests/kopf/kopf_expect.py).
//!
//! Tests that stop or restart plane components hold the plane lock exclusively and so run
//! alone; the others share it and run in parallel.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, ResourceExt};
use operon_e2e::cluster::{Etcd, apiserver};
use operon_e2e::kopf::{
    DIFF_BASE, FINALIZER, diff_base, diff_base_essence, finalizers, is_fully_handled,
    is_kopf_timestamp, kopf_annotations, kopf_expect, patch_annotations, progress_annotations,
    progress_key, record, summary,
};
use operon_e2e::{
    History, Metrics, Stack, WidgetExt, apply_yaml, describe_event, wait_for, widget,
    with_widget_ns, with_widget_ns_exclusive,
};
use serde_json::{Map, Value, json};

/// How long a simple object may take to be fully handled (the machine has 2 cores and other
/// tests run alongside).
const HANDLED: Duration = Duration::from_secs(90);

fn behaviour(behaviours: Value) -> Value {
    json!({ "behaviour": behaviours })
}

async fn create(api: &Api<DynamicObject>, object: &DynamicObject) -> DynamicObject {
    api.create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|err| panic!("creating {}: {err}", object.name_any()))
}

async fn merge_patch(api: &Api<DynamicObject>, name: &str, patch: Value) -> DynamicObject {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|err| panic!("patching {name} with {patch}: {err}"))
}

fn status_of(object: &DynamicObject) -> Value {
    object.data.get("status").cloned().unwrap_or(Value::Null)
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Waits until the history has seen the version of `object` (the watch may lag a GET).
async fn wait_seen(history: &History, object: &DynamicObject) {
    let rv = object.resource_version();
    let name = object.name_any();
    wait_for(
        &format!("the test's own watch to see {name} at {rv:?}"),
        Duration::from_secs(20),
        || async {
            Ok::<_, ()>(
                history
                    .versions(&name)
                    .iter()
                    .any(|o| o.object.resource_version() == rv)
                    .then_some(()),
            )
        },
    )
    .await;
}

fn history_summary(history: &History, name: &str) -> String {
    history
        .versions(name)
        .iter()
        .map(|o| format!("  {:.3} {}", unix(o.at), summary(&o.object)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The outcomes that lead Kopf from a fresh record to the state `record` describes: the last
/// outcome decides `stopped`, `delayed`, `message` and the flags; `retries` counts them all.
fn kopf_outcomes(record: &Value) -> Value {
    let retries = record["retries"].as_u64().unwrap_or(0);
    let success = record["success"] == json!(true);
    let failure = record["failure"] == json!(true);
    let message = record.get("message").cloned().unwrap_or(Value::Null);
    let subrefs = record.get("subrefs").cloned().unwrap_or(json!([]));
    let mut outcomes = Vec::new();
    if retries > 0 {
        for _ in 1..retries {
            outcomes.push(json!({"final": false, "delay": null, "error": "an earlier attempt"}));
        }
        outcomes.push(if success {
            json!({"final": true, "subrefs": subrefs})
        } else if failure {
            json!({"final": true, "error": message, "subrefs": subrefs})
        } else {
            let delay = if record.get("delayed").is_some() {
                json!(1.0)
            } else {
                Value::Null
            };
            json!({"final": false, "delay": delay, "error": message, "subrefs": subrefs})
        });
    }
    json!({
        "purpose": record.get("purpose").cloned().unwrap_or(json!("create")),
        "outcomes": outcomes,
    })
}

/// The core's log has the diff `item` for the object `name` (a line naming both).
fn assert_logged_diff(stack: &Stack, name: &str, item: &str) {
    let log = stack.core.log_plain();
    let object = format!("{}/{name}", stack.ns);
    assert!(
        log.lines().any(|l| l.contains(item) && l.contains(&object)),
        "the core's log should show the diff item {item} for {object}; its diff lines:\n{}",
        log.lines()
            .filter(|l| l.contains("diff"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Our record and Kopf's for the same outcomes have the same fields in the same order, the same
/// JSON types, and the same values except for the timestamps, which both have Kopf's format.
fn assert_same_shape(what: &str, ours: &Value, kopfs: &Value) {
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(ours),
        keys(kopfs),
        "{what}: the record's fields (in order) differ from Kopf's record for the same \
         outcomes\n  ours: {ours}\n  Kopf: {kopfs}"
    );
    for key in keys(ours) {
        let (a, b) = (&ours[&key], &kopfs[&key]);
        match key.as_str() {
            "started" | "stopped" | "delayed" => {
                let ok = a.as_str().is_some_and(is_kopf_timestamp)
                    && b.as_str().is_some_and(is_kopf_timestamp);
                assert!(
                    ok,
                    "{what}: {key} is {a}, not in Kopf's timestamp format (Kopf: {b})"
                );
            }
            _ => assert_eq!(
                a, b,
                "{what}: field {key} differs from Kopf's record for the same outcomes\n  \
                 ours: {ours}\n  Kopf: {kopfs}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a. Format

/// Done-when 1. While a create is in flight (h1 done, h2 retrying) and after it, the object's
/// annotations are exactly what Kopf 1.45.2's own storage classes write for the same records:
/// the same keys; each progress record byte-for-byte what Kopf serialises for that state
/// (`HandlerState.from_storage → for_storage → SmartProgressStorage.store`); its fields in the
/// order and with the types of a record Kopf builds from scratch for the same outcomes; and the
/// diff-base byte-for-byte Kopf's `AnnotationsDiffBaseStorage.build + store` (non-ASCII, floats,
/// a kubectl annotation and labels included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_annotations_are_what_kopf_writes_for_the_same_records() {
    with_widget_ns("e2e-format", |client, ns| async move {
        let mut stack =
            Stack::start("format", &client, &ns, &["create:h1", "create:h2"], &[]).await;
        let history = History::start(stack.api.clone());
        let object = widget(
            "fmt",
            json!({
                "behaviour": {"h2": {"fail_temporarily": 1, "delay": 1}},
                "text": "héllo wörld ✓ 🙂 \"quoted\" </tag>\ttab",
                "numbers": {"ratio": 2.5, "tenth": 0.1, "tiny": 1e-7, "count": 3, "negative": -4},
                "items": ["b", "a", {"k": "v"}],
                "flags": {"on": true, "off": false},
            }),
        )
        .with_labels(&[("app", "widget")])
        .with_annotations(&[
            ("note", "hello"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]);
        let created = create(&stack.api, &object).await;
        let done = stack.wait_handled("fmt", HANDLED).await;
        wait_seen(&history, &done).await;

        // The keys Kopf uses for these ids.
        let keys = kopf_expect(&json!({
            "body": serde_json::to_value(&created).unwrap(),
            "keys": ["h1", "h2"],
        }))
        .await
        .unwrap();
        let mut id_of_key = BTreeMap::new();
        for id in ["h1", "h2"] {
            let forms: Vec<String> = serde_json::from_value(keys["keys"][id].clone()).unwrap();
            assert_eq!(forms, [progress_key(id)], "Kopf's keys for {id}");
            id_of_key.insert(progress_key(id), id);
        }

        let mut in_flight_seen = false;
        let mut versions_checked = 0;
        for observed in history.versions("fmt") {
            let progress = progress_annotations(&observed.object);
            if progress.is_empty() {
                continue;
            }
            versions_checked += 1;
            let rv = observed.object.resource_version().unwrap_or_default();
            let mut records = Map::new();
            let mut simulate = Map::new();
            for (key, raw) in &progress {
                let id = id_of_key.get(key).unwrap_or_else(|| {
                    panic!("at rv {rv}: an unexpected progress annotation {key}: {raw}")
                });
                let parsed: Value = serde_json::from_str(raw)
                    .unwrap_or_else(|err| panic!("at rv {rv}: {key} is not JSON ({err}): {raw}"));
                simulate.insert((*id).to_owned(), kopf_outcomes(&parsed));
                records.insert((*id).to_owned(), parsed);
            }
            let expected = kopf_expect(&json!({
                "body": serde_json::to_value(&observed.object).unwrap(),
                "records": records,
                "simulate": simulate,
            }))
            .await
            .unwrap();
            let ours: BTreeMap<String, Value> = progress
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            assert_eq!(
                ours,
                patch_annotations(&expected["store"]),
                "at rv {rv}: the progress annotations differ from what Kopf 1.45.2 writes for \
                 the same records (left: ours, right: Kopf's)"
            );
            for (id, simulated) in expected["simulated"].as_object().unwrap() {
                assert_eq!(simulated["key"], json!(progress_key(id)));
                let kopfs: Value =
                    serde_json::from_str(simulated["value"].as_str().unwrap()).unwrap();
                assert_same_shape(&format!("at rv {rv}, {id}"), &records[id], &kopfs);
            }
            if let Some(h2) = records.get("h2")
                && h2["retries"] == json!(1)
                && h2["success"] == json!(false)
                && h2["failure"] == json!(false)
            {
                in_flight_seen = true;
                assert!(
                    h2.get("delayed").is_some() && h2.get("message").is_some(),
                    "at rv {rv}: a temporarily failed handler's record has delayed and message \
                     (as Kopf's): {h2}"
                );
                assert_eq!(
                    progress.keys().collect::<Vec<_>>(),
                    [&progress_key("h1"), &progress_key("h2")],
                    "at rv {rv}: while h2 retries, Kopf has records of both handlers"
                );
                assert_eq!(
                    records["h1"]["success"],
                    json!(true),
                    "at rv {rv}: h1 is done while h2 retries"
                );
            }
        }
        assert!(
            in_flight_seen,
            "never saw h2's record after its temporary failure ({versions_checked} versions \
             with records); versions:\n{}",
            history_summary(&history, "fmt")
        );

        let expected = kopf_expect(&json!({
            "body": serde_json::to_value(&done).unwrap(),
            "diffbase": true,
        }))
        .await
        .unwrap();
        let kopf_diffbase = patch_annotations(&expected["diffbase"]);
        assert_eq!(
            kopf_diffbase.keys().collect::<Vec<_>>(),
            [DIFF_BASE],
            "Kopf's diff-base keys"
        );
        assert_eq!(
            diff_base(&done).as_deref(),
            kopf_diffbase[DIFF_BASE].as_str(),
            "the diff-base differs from Kopf's for the same body (left: ours, right: Kopf's)"
        );
        assert_eq!(
            kopf_annotations(&done).keys().collect::<Vec<_>>(),
            [DIFF_BASE],
            "after the cycle only the diff-base remains: {}",
            summary(&done)
        );
        let ledger = stack.ledger().object("fmt");
        assert_eq!(ledger.handler("h1").outcomes(), ["success"], "{ledger}");
        assert_eq!(
            ledger.handler("h2").outcomes(),
            ["temporary", "success"],
            "{ledger}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// b. Retries, results, purge

/// A handler failing temporarily twice (delay 1 s) is called with retry 0, 1, 2 — at least the
/// delay apart — and succeeds once; its result lands in `status.h1` (a dict, and a scalar on
/// another object); afterwards only the diff-base is left of Kopf's annotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_errors_are_retried_after_their_delay_and_results_stored_and_progress_purged() {
    with_widget_ns("e2e-retries", |client, ns| async move {
        let mut stack = Stack::start("retries", &client, &ns, &["create:h1"], &[]).await;
        create(
            &stack.api,
            &widget(
                "retrying",
                behaviour(json!({"h1": {
                    "fail_temporarily": 2, "delay": 1, "result": {"answer": 42, "text": "done"}
                }})),
            ),
        )
        .await;
        create(
            &stack.api,
            &widget("scalar", behaviour(json!({"h1": {"result": "plain"}}))),
        )
        .await;

        let retrying = stack.wait_handled("retrying", HANDLED).await;
        let scalar = stack.wait_handled("scalar", HANDLED).await;

        let ledger = stack.ledger().object("retrying").handler("h1");
        assert_eq!(ledger.retries(), [0, 1, 2], "{ledger}");
        assert_eq!(
            ledger.outcomes(),
            ["temporary", "temporary", "success"],
            "{ledger}"
        );
        assert!(
            ledger.iter().all(|e| e.reason == "create"),
            "all in the create cycle: {ledger}"
        );
        let times = ledger.times();
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= 0.9,
                "retries must wait for the 1 s delay: {ledger}"
            );
        }
        assert_eq!(
            status_of(&retrying)["h1"],
            json!({"answer": 42, "text": "done"}),
            "the result goes to status.h1: {}",
            status_of(&retrying)
        );
        assert_eq!(
            status_of(&scalar)["h1"],
            json!("plain"),
            "a scalar result replaces status.h1"
        );
        for object in [&retrying, &scalar] {
            assert_eq!(
                kopf_annotations(object).keys().collect::<Vec<_>>(),
                [DIFF_BASE],
                "{}: only the diff-base remains (no progress, no touch-dummy): {}",
                object.name_any(),
                summary(object)
            );
            assert!(
                finalizers(object).is_empty(),
                "no delete handler, no finalizer"
            );
        }
        assert_eq!(
            stack.ledger().object("scalar").handler("h1").outcomes(),
            ["success"]
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// c. Sub-handlers

/// A handler with sub-handlers a (succeeds) and b (fails temporarily twice): a is executed
/// exactly once while b is retried; the parent's record lists both in `subrefs`, a's success is
/// persisted while b retries, and all three records are purged at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_succeeded_subhandler_is_not_called_again_while_its_sibling_retries() {
    with_widget_ns("e2e-subhandlers", |client, ns| async move {
        let mut stack = Stack::start("subhandlers", &client, &ns, &["create:h1"], &[]).await;
        let history = History::start(stack.api.clone());
        create(
            &stack.api,
            &widget(
                "subs",
                behaviour(json!({"h1": {"subhandlers": {
                    "a": {},
                    "b": {"fail_temporarily": 2, "delay": 1},
                }}})),
            ),
        )
        .await;
        let done = stack.wait_handled("subs", HANDLED).await;
        wait_seen(&history, &done).await;

        let ledger = stack.ledger().object("subs");
        let a = ledger.handler("h1/a");
        assert_eq!(
            a.outcomes(),
            ["success"],
            "sub-handler a runs exactly once:\n{ledger}"
        );
        let b = ledger.handler("h1/b");
        assert_eq!(b.retries(), [0, 1, 2], "{ledger}");
        assert_eq!(
            b.outcomes(),
            ["temporary", "temporary", "success"],
            "{ledger}"
        );
        let parent = ledger.handler("h1");
        assert_eq!(
            parent.outcome("success").len(),
            1,
            "the parent succeeds once, after b:\n{ledger}"
        );
        assert_eq!(
            parent.outcomes().last(),
            Some(&"success"),
            "the parent's last call succeeds:\n{ledger}"
        );

        let versions = history.versions("subs");
        let a_persisted_while_b_retries = versions.iter().any(|o| {
            record(&o.object, "h1/a").is_some_and(|r| r["success"] == json!(true))
                && record(&o.object, "h1/b").is_some_and(|r| r["success"] == json!(false))
        });
        assert!(
            a_persisted_while_b_retries,
            "a's success is persisted (kopf.zalando.org/h1.a) while b retries; versions:\n{}",
            history_summary(&history, "subs")
        );
        let subrefs_listed = versions.iter().any(|o| {
            record(&o.object, "h1").is_some_and(|r| r["subrefs"] == json!(["h1/a", "h1/b"]))
        });
        assert!(
            subrefs_listed,
            "the parent's record lists its sub-handlers in subrefs (as Kopf); versions:\n{}",
            history_summary(&history, "subs")
        );
        assert_eq!(
            kopf_annotations(&done).keys().collect::<Vec<_>>(),
            [DIFF_BASE],
            "the parent's and the sub-handlers' records are purged: {}",
            summary(&done)
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// d. Permanent failure

/// A permanent failure is final: the handler is never retried, its record says `failure: true`
/// with the message (seen while the other handler still retries), the diff-base is still
/// written when the cycle ends, and an Event tells about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_recorded_advances_the_diff_base_and_posts_an_event() {
    with_widget_ns("e2e-permanent", |client, ns| async move {
        let mut stack =
            Stack::start("permanent", &client, &ns, &["create:h1", "create:h2"], &[]).await;
        let history = History::start(stack.api.clone());
        let created = create(
            &stack.api,
            &widget(
                "doomed",
                behaviour(json!({
                    "h1": {"fail_permanently": true, "message": "Boom, for good."},
                    "h2": {"fail_temporarily": 1, "delay": 2},
                })),
            ),
        )
        .await;
        let done = stack.wait_handled("doomed", HANDLED).await;
        wait_seen(&history, &done).await;

        let ledger = stack.ledger().object("doomed");
        assert_eq!(
            ledger.handler("h1").outcomes(),
            ["permanent"],
            "a permanent failure is never retried:\n{ledger}"
        );
        let failed_record = history
            .versions("doomed")
            .into_iter()
            .find_map(|o| record(&o.object, "h1").filter(|r| r["failure"] == json!(true)));
        let failed_record = failed_record.unwrap_or_else(|| {
            panic!(
                "never saw h1's record with failure: true; versions:\n{}",
                history_summary(&history, "doomed")
            )
        });
        assert_eq!(failed_record["success"], json!(false), "{failed_record}");
        assert_eq!(
            failed_record["message"],
            json!("Boom, for good."),
            "{failed_record}"
        );
        assert!(failed_record.get("stopped").is_some(), "{failed_record}");
        assert_eq!(failed_record["retries"], json!(1), "{failed_record}");

        let essence = diff_base_essence(&done).expect("the diff-base is written");
        assert_eq!(
            essence["spec"], created.data["spec"],
            "the diff-base holds the handled spec"
        );

        let uid = created.uid().unwrap();
        let events = wait_for(
            "an Event about h1's permanent failure",
            Duration::from_secs(30),
            || async {
                let events = stack.events_for("doomed").await;
                let found = events.iter().any(|e| {
                    e.involved_object.uid.as_deref() == Some(uid.as_str())
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains("Boom, for good."))
                });
                if found {
                    Ok(Some(events))
                } else {
                    Err(events.iter().map(describe_event).collect::<Vec<_>>())
                }
            },
        )
        .await;
        eprintln!(
            "events: {:?}",
            events.iter().map(describe_event).collect::<Vec<_>>()
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// e. Update and field handlers

/// The field handler's id: its field is part of it, as in Kopf.
const F1: &str = "f1/spec.field";

/// Create runs the create handler and the field handler (absent → value); patching spec.field
/// runs the update handler once (with the new generation) and the field handler; patching
/// another field runs update but not the field handler (the diff decides); the diff-base then
/// equals Kopf's essence of the object; an unchanged re-apply and a status-only change (watch
/// events with the same essence) run nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_field_handlers_run_once_per_essential_change_and_never_for_noise() {
    with_widget_ns("e2e-update", |client, ns| async move {
        let mut stack = Stack::start(
            "update",
            &client,
            &ns,
            &["create:c1", "update:u1", "field:f1=spec.field"],
            &[],
        )
        .await;
        let yaml = |field: &str, other: i64| {
            format!(
                "apiVersion: e2e.operon.dev/v1\nkind: Widget\nmetadata: {{name: ed}}\n\
                 spec: {{field: {field}, other: {other}}}\n"
            )
        };
        apply_yaml(&client, &ns, &yaml("value", 1)).await.unwrap();
        stack.wait_handled("ed", HANDLED).await;
        let ledger = stack.ledger().object("ed");
        assert_eq!(ledger.handler("c1").outcomes(), ["success"], "{ledger}");
        assert!(
            ledger.handler("u1").is_empty(),
            "no update on create:\n{ledger}"
        );
        assert_eq!(
            ledger.handler(F1).outcomes(),
            ["success"],
            "a field handler fires on creation (absent → value), as in Kopf:\n{ledger}"
        );
        assert_eq!(ledger.handler(F1).reason("create").len(), 1, "{ledger}");

        // An essential change of the watched field.
        merge_patch(&stack.api, "ed", json!({"spec": {"field": "changed"}})).await;
        let updated = stack
            .wait_object("ed", "the diff-base to hold field=changed", HANDLED, |o| {
                is_fully_handled(o)
                    && diff_base_essence(o).is_some_and(|e| e["spec"]["field"] == "changed")
            })
            .await;
        let ledger = stack.ledger().object("ed");
        let u1 = ledger.handler("u1");
        assert_eq!(u1.outcomes(), ["success"], "one update:\n{ledger}");
        assert_eq!(u1.reason("update").len(), 1, "{ledger}");
        assert_eq!(
            u1.iter().next().unwrap().generation,
            updated.metadata.generation
        );
        assert_eq!(
            ledger.handler(F1).reason("update").len(),
            1,
            "the field handler fires for its field:\n{ledger}"
        );
        assert_eq!(ledger.handler("c1").len(), 1, "{ledger}");
        // The handlers get the diff; the example handler does not echo it, but the core logs
        // it (DEBUG), as Kopf's diff items: [op, path, old, new].
        assert_logged_diff(
            &stack,
            "ed",
            r#"["change",["spec","field"],"value","changed"]"#,
        );

        // An essential change of another field: update, but not the field handler.
        merge_patch(&stack.api, "ed", json!({"spec": {"other": 2}})).await;
        let updated = stack
            .wait_object("ed", "the diff-base to hold other=2", HANDLED, |o| {
                is_fully_handled(o) && diff_base_essence(o).is_some_and(|e| e["spec"]["other"] == 2)
            })
            .await;
        let ledger = stack.ledger().object("ed");
        assert_eq!(ledger.handler("u1").outcome("success").len(), 2, "{ledger}");
        assert_eq!(
            ledger.handler(F1).len(),
            2,
            "spec.field did not change, so f1 must not run:\n{ledger}"
        );
        let expected = kopf_expect(&json!({
            "body": serde_json::to_value(&updated).unwrap(),
            "diffbase": true,
        }))
        .await
        .unwrap();
        assert_eq!(
            diff_base(&updated).as_deref(),
            patch_annotations(&expected["diffbase"])[DIFF_BASE].as_str(),
            "the diff-base after updates is Kopf's essence of the object"
        );

        // Noise: the same content re-applied (a new resourceVersion: managed fields change
        // hands) and a status-only change. Neither changes the essence.
        let before = stack.ledger().len();
        let reapplied = apply_yaml(&client, &ns, &yaml("changed", 2)).await.unwrap();
        stack
            .api
            .patch_status(
                "ed",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"note": "not essential"}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = stack.ledger();
        assert_eq!(
            after.len(),
            before,
            "noise must run nothing (re-applied at rv {:?}):\n{}",
            reapplied.first().and_then(|o| o.resource_version()),
            after.object("ed")
        );
        let object = stack.api.get("ed").await.unwrap();
        assert!(is_fully_handled(&object), "{}", summary(&object));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// f. Delete handler and finalizer

/// With a delete handler, the core adds its finalizer (keeping another controller's); on
/// deletion it runs the delete handler once, and only then removes its finalizer — the object
/// goes; with another controller's finalizer on it, that one stays and holds the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_handlers_run_before_the_finalizer_goes_and_foreign_finalizers_stay() {
    with_widget_ns("e2e-delete", |client, ns| async move {
        const FOREIGN: &str = "e2e.operon.dev/hold";
        let mut stack =
            Stack::start("delete", &client, &ns, &["create:c1", "delete:d1"], &[]).await;
        let history = History::start(stack.api.clone());
        create(&stack.api, &widget("plain", json!({}))).await;
        create(
            &stack.api,
            &widget("held", json!({})).with_finalizers(&[FOREIGN]),
        )
        .await;
        for name in ["plain", "held"] {
            let object = stack
                .wait_object(name, "handled, with our finalizer", HANDLED, |o| {
                    is_fully_handled(o) && finalizers(o).contains(&FINALIZER.to_owned())
                })
                .await;
            if name == "held" {
                assert!(
                    finalizers(&object).contains(&FOREIGN.to_owned()),
                    "the foreign finalizer stays: {:?}",
                    finalizers(&object)
                );
            }
        }

        // Plain: deleted, the delete handler runs, the finalizer goes, the object goes.
        stack
            .api
            .delete("plain", &DeleteParams::default())
            .await
            .unwrap();
        stack.wait_gone("plain", HANDLED).await;
        let ledger = stack.ledger().object("plain");
        let d1 = ledger.handler("d1");
        assert_eq!(d1.outcomes(), ["success"], "{ledger}");
        assert_eq!(d1.reason("delete").len(), 1, "{ledger}");
        let released_at = history
            .versions("plain")
            .iter()
            .find(|o| {
                o.deleted
                    || (o.object.metadata.deletion_timestamp.is_some()
                        && !finalizers(&o.object).contains(&FINALIZER.to_owned()))
            })
            .map(|o| unix(o.at));
        if let Some(released_at) = released_at {
            assert!(
                d1.times()[0] <= released_at,
                "the delete handler ran ({:.3}) before the finalizer was removed ({released_at:.3})",
                d1.times()[0]
            );
        }

        // Held: the delete handler runs and our finalizer goes, the foreign one stays.
        stack
            .api
            .delete("held", &DeleteParams::default())
            .await
            .unwrap();
        let held = stack
            .wait_object("held", "our finalizer removed after deletion", HANDLED, |o| {
                o.metadata.deletion_timestamp.is_some()
                    && !finalizers(o).contains(&FINALIZER.to_owned())
            })
            .await;
        assert_eq!(
            finalizers(&held),
            [FOREIGN],
            "only the foreign finalizer is left"
        );
        let ledger = stack.ledger().object("held");
        assert_eq!(ledger.handler("d1").outcomes(), ["success"], "{ledger}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            stack.api.get_opt("held").await.unwrap().is_some(),
            "held by the foreign finalizer"
        );
        let held = stack.api.get("held").await.unwrap();
        stack
            .api
            .patch(
                "held",
                &PatchParams::default(),
                &Patch::Json::<()>(
                    serde_json::from_value(json!([
                        {"op": "test", "path": "/metadata/resourceVersion",
                         "value": held.resource_version()},
                        {"op": "remove", "path": "/metadata/finalizers/0"},
                    ]))
                    .unwrap(),
                ),
            )
            .await
            .unwrap();
        stack.wait_gone("held", HANDLED).await;
        assert_eq!(
            stack.ledger().object("held").handler("d1").len(),
            1,
            "the delete handler ran once"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// g. Downtime

/// Done-when 3. The core stops (SIGTERM, exits cleanly); an object is patched three times and
/// a new one is created; the core starts again: one update execution for the first, seeing the
/// last generation, and one create for the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_core_is_down_become_one_update_and_new_objects_one_create() {
    with_widget_ns("e2e-downtime", |client, ns| async move {
        let mut stack =
            Stack::start("downtime", &client, &ns, &["create:c1", "update:u1"], &[]).await;
        create(&stack.api, &widget("existing", json!({"n": 0}))).await;
        stack.wait_handled("existing", HANDLED).await;

        let status = stack.core.terminate(Duration::from_secs(60)).await.unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "the core exits cleanly on SIGTERM, got {status:?}; its log:\n{}",
            stack.core.log_tail(40)
        );
        let mut last = None;
        for n in 1..=3 {
            last = Some(merge_patch(&stack.api, "existing", json!({"spec": {"n": n}})).await);
        }
        let last_generation = last.unwrap().metadata.generation;
        create(&stack.api, &widget("newcomer", json!({"n": 0}))).await;

        stack.core.restart().await.unwrap();
        stack.core.wait_ready(Duration::from_secs(90)).await;
        let existing = stack
            .wait_object("existing", "the diff-base to hold n=3", HANDLED, |o| {
                is_fully_handled(o) && diff_base_essence(o).is_some_and(|e| e["spec"]["n"] == 3)
            })
            .await;
        stack.wait_handled("newcomer", HANDLED).await;

        let ledger = stack.ledger();
        let existing_ledger = ledger.object("existing");
        let u1 = existing_ledger.handler("u1");
        assert_eq!(
            u1.outcomes(),
            ["success"],
            "one update for all changes:\n{existing_ledger}"
        );
        let update = u1.iter().next().unwrap();
        assert_eq!(update.reason, "update");
        assert_eq!(
            update.generation, last_generation,
            "the update sees the last change"
        );
        assert_eq!(existing.metadata.generation, last_generation);
        assert_eq!(existing_ledger.handler("c1").len(), 1, "{existing_ledger}");
        assert_logged_diff(&stack, "existing", r#"["change",["spec","n"],0,3]"#);
        let newcomer = ledger.object("newcomer");
        assert_eq!(newcomer.handler("c1").outcomes(), ["success"], "{newcomer}");
        assert_eq!(
            newcomer.handler("c1").reason("create").len(),
            1,
            "{newcomer}"
        );
        assert!(newcomer.handler("u1").is_empty(), "{newcomer}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// h. Bad input

/// Done-when 4. An invalid patch, a response that breaks the contract, a call hanging past
/// `--call-timeout 2`, and a handler service that is down: each leaves a message in the
/// progress record and an Event, and is retried; meanwhile other objects are handled, and the
/// core stays up and healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handler_answers_and_a_dead_service_are_reported_retried_and_isolated() {
    with_widget_ns("e2e-bad-input", |client, ns| async move {
        let mut stack = Stack::start(
            "bad-input",
            &client,
            &ns,
            &["create:h1"],
            &["--call-timeout", "2", "--default-backoff", "1"],
        )
        .await;
        let cases: [(&str, Value, &[&str]); 3] = [
            (
                "invalid-patch",
                json!({"invalid_patch": true}),
                &["patch", "json"],
            ),
            (
                "broken",
                json!({"break_contract": true}),
                &["outcome", "contract", "empty", "invalid", "missing"],
            ),
            (
                "sleepy",
                json!({"sleep": 5}),
                &["timeout", "timed out", "deadline", "did not finish within"],
            ),
        ];
        for (name, script, _) in &cases {
            create(
                &stack.api,
                &widget(name, behaviour(json!({ "h1": script }))),
            )
            .await;
        }
        create(&stack.api, &widget("fine-1", json!({}))).await;
        stack.wait_handled("fine-1", HANDLED).await;

        for (name, _, words) in &cases {
            let name = *name;
            let message = stack
                .wait_object(
                    name,
                    "a record with a message, after at least 2 attempts",
                    HANDLED,
                    |o| {
                        record(o, "h1").is_some_and(|r| {
                            r["success"] == json!(false)
                                && r["retries"].as_u64().unwrap_or(0) >= 2
                                && r["message"].as_str().is_some_and(|m| !m.is_empty())
                        })
                    },
                )
                .await;
            let record = record(&message, "h1").unwrap();
            let text = record["message"].as_str().unwrap().to_lowercase();
            assert!(
                words.iter().any(|w| text.contains(w)),
                "{name}: the message should say what went wrong (one of {words:?}): {record}"
            );
            let attempts = stack.ledger().object(name).handler("h1");
            assert!(attempts.len() >= 2, "{name} is retried:\n{attempts}");
            let events = wait_for(
                &format!("an Event about {name}"),
                Duration::from_secs(30),
                || async {
                    let events = stack.events_for(name).await;
                    Ok::<_, ()>((!events.is_empty()).then_some(events))
                },
            )
            .await;
            eprintln!(
                "{name}: record {record}; events {:?}",
                events.iter().map(describe_event).collect::<Vec<_>>()
            );
            assert!(
                stack.core.log().contains(name),
                "{name}: the core's log tells about it"
            );
        }
        let sleepy = stack.ledger().object("sleepy").handler("h1");
        assert!(
            sleepy.outcome("cancelled").len() >= 2,
            "the hanging calls are cut off by the call timeout:\n{sleepy}"
        );

        // Others keep flowing while the bad ones retry.
        create(&stack.api, &widget("fine-2", json!({}))).await;
        stack.wait_handled("fine-2", HANDLED).await;
        assert_eq!(stack.healthz().await, 200, "the core is healthy");

        // The handler service goes down.
        stack.handler.kill();
        create(&stack.api, &widget("outage", json!({}))).await;
        let during = stack
            .wait_object(
                "outage",
                "a record with a message while the service is down",
                HANDLED,
                |o| {
                    record(o, "h1").is_some_and(|r| {
                        r["success"] == json!(false)
                            && r["message"].as_str().is_some_and(|m| !m.is_empty())
                    })
                },
            )
            .await;
        eprintln!("outage: {}", summary(&during));
        let message = record(&during, "h1").unwrap()["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(
            ["connect", "unavailable", "transport"]
                .iter()
                .any(|w| message.contains(w)),
            "the message should say that the service cannot be reached: {message}"
        );
        wait_for(
            "an Event about the outage",
            Duration::from_secs(30),
            || async {
                let events = stack.events_for("outage").await;
                Ok::<_, ()>((!events.is_empty()).then_some(()))
            },
        )
        .await;
        assert_eq!(
            stack.healthz().await,
            200,
            "the core is healthy without its handler service"
        );
        stack.core.assert_running();

        // It comes back: the object is handled.
        stack.handler.restart().await.unwrap();
        stack.wait_handled("outage", HANDLED).await;
        let outage = stack.ledger().object("outage").handler("h1");
        assert_eq!(outage.outcome("success").len(), 1, "{outage}");
        assert_eq!(stack.healthz().await, 200);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// i. Continuity chaos

/// A small deterministic RNG (64-bit LCG, Knuth's constants); the seed is printed.
struct Lcg(u64);

impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Done-when 2. 50 objects × 3 create handlers (h1 plain; h2 with sub-handlers a and b; h3
/// failing temporarily twice, delay 1 s), created in waves while the core is SIGKILLed at random
/// moments (24 times, 0.2–2 s apart) and restarted each time. At the end every object is fully handled,
/// every handler and sub-handler succeeded, all in the create cycle, and — the continuity
/// guarantee — no handler or sub-handler was called again after its success had been persisted
/// on the object (as the test's own watch saw it), whatever the call's outcome: a `cancelled`
/// call (cut off by a kill) counts when it started after the success was persisted; only a call
/// already running when it was persisted is left out. And no handler succeeded twice: the core
/// repeats a call whose success it did not persist (it died between the answer and its PATCH)
/// with the same `attempt_id`, and the example handler answers a known attempt from its memory
/// without running again, so a second success line in the ledger is a re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_reruns_a_persisted_success() {
    with_widget_ns("e2e-chaos", |client, ns| async move {
        const OBJECTS: usize = 50;
        const KILLS: usize = 24;
        const IDS: [&str; 5] = ["h1", "h2", "h2/a", "h2/b", "h3"];
        let seed: u64 = std::env::var("OPERON_E2E_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_0003);
        eprintln!("[chaos] seed {seed} (OPERON_E2E_SEED)");
        let mut rng = Lcg(seed);

        let mut stack = Stack::start(
            "chaos",
            &client,
            &ns,
            &["create:h1", "create:h2", "create:h3"],
            &[],
        )
        .await;
        let history = History::start(stack.api.clone());
        let spec = behaviour(json!({
            "h2": {"subhandlers": {"a": {}, "b": {}}},
            "h3": {"fail_temporarily": 2, "delay": 1},
        }));

        let count_handled = |api: Api<DynamicObject>| async move {
            api.list(&Default::default())
                .await
                .map(|list| list.items.iter().filter(|o| is_fully_handled(o)).count())
                .unwrap_or(0)
        };
        let started = tokio::time::Instant::now();
        let mut created = 0;
        for kill in 1..=KILLS {
            // The objects arrive in waves, so that every kill lands amid calls and patches (all
            // at once, they would be done after the first few kills).
            while created < OBJECTS * kill / KILLS {
                create(
                    &stack.api,
                    &widget(&format!("chaos-{created:02}"), spec.clone()),
                )
                .await;
                created += 1;
            }
            let pause = 0.2 + 1.8 * rng.next_f64();
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
            stack.core.assert_running();
            stack.core.kill();
            let handled = count_handled(stack.api.clone()).await;
            eprintln!(
                "[chaos] {:5.1}s kill {kill}/{KILLS} (after {pause:.2}s): {handled}/{OBJECTS} \
                 fully handled, {} ledger lines",
                started.elapsed().as_secs_f64(),
                stack.ledger().len()
            );
            stack.core.restart().await.unwrap();
        }

        let deadline = tokio::time::Instant::now() + Duration::from_secs(360);
        let mut last_report = tokio::time::Instant::now();
        loop {
            stack.core.assert_running();
            let handled = count_handled(stack.api.clone()).await;
            if handled == OBJECTS {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let list = stack.api.list(&Default::default()).await.unwrap();
                let pending: Vec<String> = list
                    .items
                    .iter()
                    .filter(|o| !is_fully_handled(o))
                    .map(|o| format!("  {}: {}", o.name_any(), summary(o)))
                    .collect();
                panic!(
                    "only {handled}/{OBJECTS} objects fully handled 6 min after the last kill; \
                     not handled:\n{}",
                    pending.join("\n")
                );
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "[chaos] {:5.1}s after the kills: {handled}/{OBJECTS} fully handled",
                    started.elapsed().as_secs_f64()
                );
                last_report = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!(
            "[chaos] all {OBJECTS} handled {:.1}s after the start, core started {} times",
            started.elapsed().as_secs_f64(),
            stack.core.starts()
        );
        let list = stack.api.list(&Default::default()).await.unwrap();
        for object in &list.items {
            wait_seen(&history, object).await;
        }

        let ledger = stack.ledger();
        let mut problems = Vec::new();
        for object in &list.items {
            let uid = object.uid().unwrap();
            let mine = ledger.uid(&uid);
            for id in IDS {
                if mine.handler(id).outcome("success").is_empty() {
                    problems.push(format!("{}: {id} never succeeded", object.name_any()));
                }
            }
            let not_create: Vec<String> = mine
                .iter()
                .filter(|e| e.reason != "create")
                .map(ToString::to_string)
                .collect();
            if !not_create.is_empty() {
                problems.push(format!(
                    "{}: calls outside the create cycle: {not_create:?}",
                    object.name_any()
                ));
            }
        }

        // When was each (uid, handler) success first persisted — its record says success, or
        // the cycle is done (the diff-base is written)?
        let mut persisted: HashMap<(String, String), SystemTime> = HashMap::new();
        for observed in history.all() {
            if observed.deleted {
                continue;
            }
            let uid = observed.object.uid().unwrap_or_default();
            let done = diff_base(&observed.object).is_some();
            for id in IDS {
                let succeeded = done
                    || record(&observed.object, id).is_some_and(|r| r["success"] == json!(true));
                if succeeded {
                    persisted
                        .entry((uid.clone(), id.to_owned()))
                        .or_insert(observed.at);
                }
            }
        }
        // A call after the persisted success is a re-run, whatever its outcome. A call ends
        // (`ts`) after it started (`started`); a cancelled one ends when the kill cut it off, so
        // it is a re-run only if it started after the success was persisted (one already running
        // then belongs to the at-least-once window before it). Any other call ending after it
        // ran alongside or after the call whose success was persisted.
        let mut reruns = Vec::new();
        for entry in ledger.iter() {
            let key = (entry.uid.clone().unwrap_or_default(), entry.handler.clone());
            let Some(at) = persisted.get(&key).map(|at| unix(*at)) else {
                continue;
            };
            let started = entry.started.unwrap_or(entry.ts);
            let rerun = if entry.outcome == "cancelled" {
                started > at
            } else {
                entry.ts > at
            };
            if rerun {
                reruns.push(format!(
                    "{entry} (started {started:.3}) — after its success was persisted (seen at \
                     {at:.3})"
                ));
            }
        }
        let cancelled = ledger.outcome("cancelled");
        eprintln!(
            "[chaos] {} calls cut off by a kill (cancelled)",
            cancelled.len()
        );

        let mut successes: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
        for entry in ledger.outcome("success").iter() {
            successes
                .entry((
                    entry.name.clone().unwrap_or_default(),
                    entry.handler.clone(),
                    entry.reason.clone(),
                ))
                .or_default()
                .push(format!(
                    "{entry} (started {:.3}, attempt {})",
                    entry.started.unwrap_or(entry.ts),
                    entry.attempt_id.as_deref().unwrap_or("-")
                ));
        }
        let repeated: Vec<String> = successes
            .iter()
            .filter(|(_, lines)| lines.len() > 1)
            .map(|((name, handler, reason), lines)| {
                format!(
                    "{name} {handler} {reason}: {}×\n    {}",
                    lines.len(),
                    lines.join("\n    ")
                )
            })
            .collect();
        eprintln!(
            "[chaos] {} ledger lines; {} (object, handler, reason) with more than one success; \
             {} calls after a persisted success",
            ledger.len(),
            repeated.len(),
            reruns.len()
        );
        assert!(
            problems.is_empty() && reruns.is_empty() && repeated.is_empty(),
            "continuity broken (seed {seed}):\nproblems:\n  {}\ncalls after a persisted \
             success:\n  {}\nhandlers that succeeded more than once:\n  {}",
            problems.join("\n  "),
            reruns.join("\n  "),
            repeated.join("\n  ")
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// j. Watch resilience

/// Writes with retries: right after an API server restart the first requests on pooled
/// connections may fail. A create answered 409 counts as done (an earlier try went through).
async fn write_retrying<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    wait_for(what, Duration::from_secs(60), || {
        let attempt = write();
        async move {
            match attempt.await {
                Ok(()) => Ok(Some(())),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Some(())),
                Err(err) => Err(err.to_string()),
            }
        }
    })
    .await;
}

async fn patch_n(api: &Api<DynamicObject>, name: &str, n: i64) -> Result<(), kube::Error> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"n": n}})),
    )
    .await
    .map(|_| ())
}

async fn create_plain(api: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    api.create(&PostParams::default(), &widget(name, json!({"n": 0})))
        .await
        .map(|_| ())
}

fn n_handled(n: i64) -> impl Fn(&DynamicObject) -> bool {
    move |o| is_fully_handled(o) && diff_base_essence(o).is_some_and(|e| e["spec"]["n"] == n)
}

/// Done-when 5, part 1. kube-apiserver is restarted under the running core; an object is
/// patched and another created the moment it is back (before the core's watch has
/// reconnected): both changes are handled, once each, and later changes keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_is_missed_across_an_apiserver_restart() {
    with_widget_ns_exclusive("e2e-apiserver", |client, ns| async move {
        let mut stack =
            Stack::start("apiserver", &client, &ns, &["create:c1", "update:u1"], &[]).await;
        create(&stack.api, &widget("before", json!({"n": 0}))).await;
        stack.wait_handled("before", HANDLED).await;

        apiserver("restart").await.unwrap();
        let api = stack.api.clone();
        write_retrying("patching `before` after the restart", || {
            patch_n(&api, "before", 1)
        })
        .await;
        write_retrying("creating `during` after the restart", || {
            create_plain(&api, "during")
        })
        .await;

        stack
            .wait_object("before", "the update to be handled", HANDLED, n_handled(1))
            .await;
        stack.wait_handled("during", HANDLED).await;
        create(&stack.api, &widget("after", json!({"n": 0}))).await;
        stack.wait_handled("after", HANDLED).await;

        let ledger = stack.ledger();
        assert_eq!(
            ledger.object("before").handler("u1").outcomes(),
            ["success"],
            "{}",
            ledger.object("before")
        );
        assert_eq!(
            ledger.object("during").handler("c1").outcomes(),
            ["success"],
            "{}",
            ledger.object("during")
        );
        assert_eq!(stack.healthz().await, 200);
    })
    .await;
}

/// Done-when 5, part 2: a forced 410 Gone. The core is frozen (SIGSTOP) in the middle of its
/// watch; kube-apiserver is stopped; etcd's revision is moved on (a write outside /registry);
/// the API server starts again (its watch cache begins after anything the core has seen);
/// an object is patched and another created; etcd is compacted up to now. The test proves with
/// its own watch that resuming from the newest revision the core can know answers 410 Gone.
/// Then the core is thawed: its watch breaks, resuming gets 410, and only a relist finds the
/// changes — both are handled, once, and later changes keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_is_missed_after_a_forced_410_gone() {
    with_widget_ns_exclusive("e2e-gone", |client, ns| async move {
        let mut stack = Stack::start("gone", &client, &ns, &["create:c1", "update:u1"], &[]).await;
        create(&stack.api, &widget("a", json!({"n": 0}))).await;
        stack.wait_handled("a", HANDLED).await;
        let etcd = Etcd::of_plane().unwrap();

        stack.core.pause().unwrap();
        let result = async {
            apiserver("stop").await?;
            // Nothing can reach the core now: whatever it knows is at most this revision.
            let newest_known = etcd.revision().await?;
            etcd.put("/operon-e2e/bump", "410").await?;
            apiserver("start").await?;
            let api = stack.api.clone();
            write_retrying("patching `a`", || patch_n(&api, "a", 1)).await;
            write_retrying("creating `b`", || create_plain(&api, "b")).await;
            let now = etcd.revision().await?;
            etcd.compact(now).await?;
            anyhow::Ok(newest_known)
        }
        .await;
        let newest_known = match result {
            Ok(revision) => revision,
            Err(err) => {
                let _ = stack.core.resume();
                panic!("disturbing the plane failed: {err:#}");
            }
        };

        let stale = stack
            .api
            .watch(
                &WatchParams::default().timeout(5),
                &newest_known.to_string(),
            )
            .await;
        let answer = match stale {
            Err(err) => format!("{err:?}"),
            Ok(stream) => {
                let mut stream = stream.boxed();
                match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                    Ok(Some(Ok(kube::api::WatchEvent::Error(status)))) => format!("{status:?}"),
                    Ok(Some(Ok(event))) => format!("an event: {event:?}"),
                    Ok(Some(Err(err))) => format!("{err:?}"),
                    Ok(None) => "the stream ended".into(),
                    Err(_) => "nothing within 10 s".into(),
                }
            }
        };
        stack.core.resume().unwrap();
        assert!(
            answer.contains("410") || answer.contains("Expired") || answer.contains("Gone"),
            "a watch from revision {newest_known} must be answered 410 Gone, got: {answer}"
        );

        stack
            .wait_object("a", "the update to be handled", HANDLED, n_handled(1))
            .await;
        stack.wait_handled("b", HANDLED).await;
        create(&stack.api, &widget("c", json!({"n": 0}))).await;
        stack.wait_handled("c", HANDLED).await;

        let ledger = stack.ledger();
        assert_eq!(
            ledger.object("a").handler("u1").outcomes(),
            ["success"],
            "{}",
            ledger.object("a")
        );
        assert_eq!(
            ledger.object("b").handler("c1").outcomes(),
            ["success"],
            "{}",
            ledger.object("b")
        );
        let log = stack.core.log();
        let mentions: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                l.contains("too old resource version") || l.contains(" 410") || l.contains("relist")
            })
            .collect();
        // Informational: whether the core resumed its watch (and met the 410) or relisted
        // straight away, it must not have missed anything, which is what is asserted above.
        eprintln!("the core's log about the 410: {mentions:#?}");
        assert_eq!(stack.healthz().await, 200);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// k. Metrics and the objects API

/// Classifies an `outcome` label of `operon_handler_outcomes_total`.
fn outcome_class(label: &str) -> &'static str {
    let label = label.to_lowercase();
    if label.contains("succe") {
        "success"
    } else if label.contains("retry") || label.contains("temporar") {
        "temporary"
    } else if label.contains("fail") || label.contains("permanent") {
        "permanent"
    } else {
        "other"
    }
}

fn objects_list(answer: &Value) -> Vec<Value> {
    match answer {
        Value::Array(items) => items.clone(),
        Value::Object(o) => o
            .get("objects")
            .or_else(|| o.get("items"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn handler_entry<'a>(objects: &'a [Value], name: &str, id: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["name"] == name)?
        .get("handlers")?
        .as_array()?
        .iter()
        .find(|h| h["id"] == id)
}

/// The core's metrics once its queue is empty and no call is in flight.
async fn settled_metrics(stack: &Stack) -> Metrics {
    let core = &stack.core;
    wait_for(
        "the gauges to settle at zero",
        Duration::from_secs(20),
        || async {
            let text = core
                .get("/metrics")
                .await
                .map_err(|e| e.to_string())?
                .text();
            let metrics = Metrics::parse(&text);
            let settled = metrics.sum("operon_queue_depth", &[]) == Some(0.0)
                && metrics.sum("operon_inflight_calls", &[]) == Some(0.0);
            if settled {
                Ok(Some(metrics))
            } else {
                Err(text)
            }
        },
    )
    .await
}

/// The core's metrics once they count at least `expected` PATCHes (up to 10 s) and its queue and
/// calls are settled: the test's own watch can see a write before the core has read the answer
/// and counted it.
async fn metrics_after_patches(stack: &Stack, expected: u32) -> Metrics {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = settled_metrics(stack).await;
        let patches = metrics
            .sum("operon_api_requests_total", &[("verb", "patch")])
            .unwrap_or(0.0);
        if patches >= f64::from(expected) || tokio::time::Instant::now() > deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Exactly `expected` PATCHes by the core so far, all answered 200.
fn assert_patches(metrics: &Metrics, expected: u32, when: &str) {
    let patches = metrics
        .sum("operon_api_requests_total", &[("verb", "patch")])
        .unwrap_or(0.0);
    let ok = metrics
        .sum(
            "operon_api_requests_total",
            &[("verb", "patch"), ("code", "200")],
        )
        .unwrap_or(0.0);
    assert!(
        patches == f64::from(expected) && ok == patches,
        "{when}: {expected} PATCHes expected (2 per created object, 1 per later cycle), got \
         {patches} ({ok} answered 200); metrics:\n{metrics}"
    );
}

/// Done-when 6. With the retries of (b) and the permanent failure of (d) in one namespace,
/// `/api/v1/objects` shows a retrying handler's attempts, delay and message while it waits,
/// and every object's final per-handler state after; `/metrics` counts the outcomes exactly
/// (2 temporary, 2 successes, 1 permanent), the cycles and the API writes — exactly what the
/// README promises: two per created object (the finalizer first — there is a delete handler —
/// then the cycle), one per later cycle (each retry of `retrying`, a change of `plain` after, its
/// deletion) — and its gauges go back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_objects_api_tell_the_truth() {
    with_widget_ns("e2e-metrics", |client, ns| async move {
        let mut stack =
            Stack::start("metrics", &client, &ns, &["create:h1", "delete:d1"], &[]).await;
        let retrying = create(
            &stack.api,
            &widget(
                "retrying",
                behaviour(json!({"h1": {"fail_temporarily": 2, "delay": 3}})),
            ),
        )
        .await;
        let failing = create(
            &stack.api,
            &widget(
                "failing",
                behaviour(json!({"h1": {"fail_permanently": true, "message": "Nope."}})),
            ),
        )
        .await;
        let plain = create(&stack.api, &widget("plain", json!({}))).await;

        // While h1 of `retrying` waits for its delay.
        let core = &stack.core;
        let waiting = wait_for(
            "/api/v1/objects to show the retrying handler waiting",
            Duration::from_secs(60),
            || async {
                let response = core
                    .get("/api/v1/objects")
                    .await
                    .map_err(|e| e.to_string())?;
                let answer = response.json().map_err(|e| e.to_string())?;
                let objects = objects_list(&answer);
                let entry = handler_entry(&objects, "retrying", "h1").cloned();
                match entry {
                    Some(h)
                        if h["retries"].as_u64().unwrap_or(0) >= 1
                            && !h["delayed"].is_null()
                            && h["message"]
                                .as_str()
                                .is_some_and(|m| m.contains("Failing temporarily")) =>
                    {
                        Ok(Some(h))
                    }
                    _ => Err(answer.to_string()),
                }
            },
        )
        .await;
        eprintln!("while waiting: {waiting}");

        for name in ["retrying", "failing", "plain"] {
            stack.wait_handled(name, HANDLED).await;
        }
        let ledger = stack.ledger();
        assert_eq!(
            ledger.object("retrying").handler("h1").outcomes(),
            ["temporary", "temporary", "success"]
        );

        // The objects API after.
        let answer = stack
            .core
            .get("/api/v1/objects")
            .await
            .unwrap()
            .json()
            .unwrap();
        let objects = objects_list(&answer);
        for (object, state, retries) in [
            (&retrying, "succe", 3),
            (&failing, "fail", 1),
            (&plain, "succe", 1),
        ] {
            let name = object.name_any();
            let entry = objects
                .iter()
                .find(|o| o["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{name} is not in /api/v1/objects: {answer}"));
            assert_eq!(entry["namespace"], json!(stack.ns), "{entry}");
            assert_eq!(entry["uid"], json!(object.uid()), "{entry}");
            let h1 = handler_entry(&objects, &name, "h1")
                .unwrap_or_else(|| panic!("{name} has no h1 in /api/v1/objects: {entry}"));
            assert!(
                h1["state"]
                    .as_str()
                    .is_some_and(|s| s.to_lowercase().contains(state)),
                "{name}: h1's state should say {state}…: {h1}"
            );
            assert_eq!(h1["retries"], json!(retries), "{name}: {h1}");
        }
        let failing_h1 = handler_entry(&objects, "failing", "h1").unwrap();
        assert!(
            failing_h1["message"]
                .as_str()
                .is_some_and(|m| m.contains("Nope.")),
            "the failure's message: {failing_h1}"
        );

        // The metrics.
        let metrics = metrics_after_patches(&stack, 8).await;
        let mut by_class: BTreeMap<&str, f64> = BTreeMap::new();
        let mut labels = BTreeSet::new();
        for sample in metrics.matching("operon_handler_outcomes_total", &[("handler", "h1")]) {
            let outcome = sample.labels.get("outcome").cloned().unwrap_or_default();
            *by_class.entry(outcome_class(&outcome)).or_default() += sample.value;
            labels.insert(outcome);
        }
        let expected: BTreeMap<&str, f64> =
            [("permanent", 1.0), ("success", 2.0), ("temporary", 2.0)].into();
        assert_eq!(
            by_class, expected,
            "h1's outcomes (labels seen: {labels:?}); metrics:\n{metrics}"
        );
        let cycles = metrics.sum("operon_cycles_total", &[]).unwrap_or(0.0);
        assert!(
            cycles >= 5.0,
            "at least 5 cycles ran (3 + 1 + 1), got {cycles}"
        );
        // Per created object the finalizer, then one patch per cycle with an outcome:
        // `retrying` 1 + 3 (temporary, temporary, success), `failing` 1 + 1, `plain` 1 + 1.
        assert_patches(&metrics, 4 + 2 + 2, "after creating 3 objects");
        assert!(
            metrics
                .matching("operon_api_requests_total", &[])
                .all(|s| s.labels.contains_key("code") && s.labels.contains_key("verb")),
            "API requests are labelled by verb and code:\n{metrics}"
        );

        // A later change (no handler for it): one cycle, one write — the new diff-base.
        merge_patch(&stack.api, "plain", json!({"spec": {"n": 1}})).await;
        stack
            .wait_object("plain", "its diff-base at n 1", HANDLED, n_handled(1))
            .await;
        let metrics = metrics_after_patches(&stack, 9).await;
        assert_patches(&metrics, 9, "after one change of `plain`");

        // Its deletion: one cycle, one write — d1's success and the finalizer's removal.
        stack
            .api
            .delete("plain", &DeleteParams::default())
            .await
            .unwrap();
        stack.wait_gone("plain", HANDLED).await;
        let metrics = metrics_after_patches(&stack, 10).await;
        assert_patches(&metrics, 10, "after deleting `plain`");
    })
    .await;
}
