//! Timers, and the finalizer when nothing requires it any more — on the real plane.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use operon_e2e::kopf::{FINALIZER, finalizers};
use operon_e2e::{Stack, WidgetExt, widget, with_widget_ns};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn timers_run_periodically_hold_the_finalizer_and_stop_on_deletion() {
    with_widget_ns("e2e-timer", |client, ns| async move {
        let mut stack = Stack::start("timer", &client, &ns, &["timer:t1,interval=1"], &[]).await;
        let spec = json!({"behaviour": {"t1": {"result": {"ticked": true}}}});
        stack
            .api
            .create(&PostParams::default(), &widget("ticking", spec))
            .await
            .unwrap();
        let object = stack
            .wait_object(
                "ticking",
                "three timer runs and the result",
                DEADLINE,
                |o| o.data["status"]["t1"]["ticked"] == json!(true),
            )
            .await;
        assert!(
            finalizers(&object).contains(&FINALIZER.to_owned()),
            "a timer holds the finalizer: {:?}",
            finalizers(&object)
        );
        operon_e2e::wait_for("three runs of the timer", DEADLINE, || async {
            let runs = stack.ledger().object("ticking").handler("t1").0.len();
            Ok::<_, String>((runs >= 3).then_some(()))
        })
        .await;
        let ledger = stack.ledger().object("ticking").handler("t1");
        let times: Vec<f64> = ledger.0.iter().map(|e| e.ts).collect();
        assert!(
            times.windows(2).all(|w| w[1] - w[0] >= 0.9),
            "runs are at least the interval apart: {times:?}"
        );

        stack
            .api
            .delete("ticking", &DeleteParams::default())
            .await
            .unwrap();
        stack.wait_gone("ticking", DEADLINE).await;
        let after_deletion = stack.ledger().object("ticking").handler("t1").0.len();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            stack.ledger().object("ticking").handler("t1").0.len(),
            after_deletion,
            "the timer stopped with its object"
        );
        stack.core.assert_running();
    })
    .await;
}

#[tokio::test]
async fn the_finalizer_goes_when_no_handler_requires_it_any_more() {
    with_widget_ns("e2e-release", |client, ns| async move {
        // A delete handler only for objects labelled app=db.
        let mut stack =
            Stack::start("release", &client, &ns, &["delete:d1,label=app=db"], &[]).await;
        let object = widget("labelled", json!({})).with_labels(&[("app", "db")]);
        stack
            .api
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
        stack
            .wait_object("labelled", "our finalizer", DEADLINE, |o| {
                finalizers(o).contains(&FINALIZER.to_owned())
            })
            .await;
        // The label goes: no handler matches, so nothing may keep the object from deletion.
        stack
            .api
            .patch(
                "labelled",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
            )
            .await
            .unwrap();
        let released = stack
            .wait_object("labelled", "the finalizer released", DEADLINE, |o| {
                !finalizers(o).contains(&FINALIZER.to_owned())
            })
            .await;
        assert!(released.metadata.deletion_timestamp.is_none());
    })
    .await;
}

#[tokio::test]
async fn event_handlers_see_every_watch_event_and_their_errors_are_ignored() {
    with_widget_ns("e2e-events", |client, ns| async move {
        let mut stack = Stack::start("events", &client, &ns, &["event:e1"], &[]).await;
        // The handler fails on every event: errors of event handlers are logged and ignored.
        let spec = json!({"behaviour": {"e1": {"fail_arbitrarily": true}}});
        stack
            .api
            .create(&PostParams::default(), &widget("watched", spec))
            .await
            .unwrap();
        stack
            .api
            .patch(
                "watched",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"more": 1}})),
            )
            .await
            .unwrap();
        stack
            .api
            .delete("watched", &DeleteParams::default())
            .await
            .unwrap();
        stack.wait_gone("watched", DEADLINE).await;
        operon_e2e::wait_for(
            "the DELETED event to reach the handler",
            DEADLINE,
            || async {
                let seen: Vec<String> = stack
                    .ledger()
                    .object("watched")
                    .0
                    .iter()
                    .filter_map(|e| e.event_type.clone())
                    .collect();
                Ok::<_, String>(seen.iter().any(|t| t == "DELETED").then_some(seen))
            },
        )
        .await;
        let ledger = stack.ledger().object("watched");
        let types: Vec<String> = ledger
            .0
            .iter()
            .filter_map(|e| e.event_type.clone())
            .collect();
        assert_eq!(types.first().map(String::as_str), Some("ADDED"), "{ledger}");
        assert!(types.iter().any(|t| t == "MODIFIED"), "{ledger}");
        assert!(
            ledger.0.iter().all(|e| e.retry == 0),
            "event handlers are never retried: {ledger}"
        );
        // No progress and no finalizer for event handlers: the object went at once.
        let log = stack.core.log_plain();
        assert!(
            log.contains("failed with an exception and will ignore it"),
            "{}",
            stack.core.log_tail(20)
        );
        stack.core.assert_running();
    })
    .await;
}

#[tokio::test]
async fn a_redeployed_handler_service_with_other_handlers_is_reloaded_without_a_restart() {
    with_widget_ns("e2e-reload", |client, ns| async move {
        let mut stack = Stack::start("reload", &client, &ns, &["create:c1"], &[]).await;
        stack
            .api
            .create(&PostParams::default(), &widget("before", json!({})))
            .await
            .unwrap();
        stack
            .wait_object("before", "handled by c1", DEADLINE, |o| {
                operon_e2e::kopf::is_fully_handled(o)
            })
            .await;

        // The service comes back on the same address with one more handler.
        let resource = operon_e2e::RESOURCE_ARG;
        stack
            .handler
            .restart_with(&[
                "--resource",
                resource,
                "--handler",
                "create:c1",
                "--handler",
                "create:c2",
            ])
            .await
            .unwrap();
        operon_e2e::wait_for("the core to reload the manifest", DEADLINE, || async {
            let log = stack.core.log_plain();
            Ok::<_, String>(log.contains("reloading its handlers").then_some(()))
        })
        .await;
        stack.core.wait_ready(DEADLINE).await;
        stack
            .api
            .create(&PostParams::default(), &widget("after", json!({})))
            .await
            .unwrap();
        stack
            .wait_object("after", "handled", DEADLINE, |o| {
                operon_e2e::kopf::is_fully_handled(o)
            })
            .await;
        let after = stack.ledger().object("after");
        assert_eq!(after.handler("c1").outcomes(), ["success"], "{after}");
        assert_eq!(after.handler("c2").outcomes(), ["success"], "{after}");
        // The object handled before the reload is not handled again (it is resumed, and has no
        // resume handlers).
        assert_eq!(stack.ledger().object("before").0.len(), 1);
        assert_eq!(
            stack.core.starts(),
            1,
            "the core reloaded without restarting"
        );
        stack.core.assert_running();
    })
    .await;
}
