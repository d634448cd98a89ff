//! Daemons (`HANDLER_KIND_DAEMON`) on the real plane, with the example handler service's scripted
//! daemon (see `proto/examples/rust/src/daemon.rs`): it patches `status.<id>` with what it sees on
//! every tick, and writes a ledger line when it starts and when it ends.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use operon_e2e::kopf::{FINALIZER, finalizers};
use operon_e2e::{Stack, widget, with_widget_ns};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// Unix seconds, as in the ledger.
fn now_ts() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_daemon_sees_its_object_live_patches_it_and_holds_the_finalizer_until_it_exits() {
    with_widget_ns("e2e-daemon", |client, ns| async move {
        let mut stack = Stack::start("daemon", &client, &ns, &["daemon:d1"], &[]).await;
        let spec = json!({"value": "one", "behaviour": {"d1": {"tick": 0.3, "linger": 3}}});
        stack
            .api
            .create(&PostParams::default(), &widget("watched", spec))
            .await
            .unwrap();
        // As in Kopf, the daemon starts in the cycle that adds the finalizer: its first patch may
        // land before the finalizer's, so wait for both.
        stack
            .wait_object(
                "watched",
                "the daemon's patch and the finalizer",
                DEADLINE,
                |o| {
                    o.data["status"]["d1"]["seen"] == json!("one")
                        && finalizers(o).contains(&FINALIZER.to_owned())
                },
            )
            .await;

        // The daemon sees the new body without a restart.
        stack
            .api
            .patch(
                "watched",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"value": "two"}})),
            )
            .await
            .unwrap();
        stack
            .wait_object(
                "watched",
                "the daemon seeing the new value",
                DEADLINE,
                |o| o.data["status"]["d1"]["seen"] == json!("two"),
            )
            .await;
        let started = stack
            .ledger()
            .object("watched")
            .handler("d1")
            .outcome("started");
        assert_eq!(started.len(), 1, "one daemon, never restarted: {started:?}");

        // Deleted: asked to stop, it lingers for 3 s; the object waits for it.
        stack
            .api
            .delete("watched", &DeleteParams::default())
            .await
            .unwrap();
        let deleting = stack
            .wait_object(
                "watched",
                "the deletion held by the finalizer",
                DEADLINE,
                |o| o.metadata.deletion_timestamp.is_some(),
            )
            .await;
        assert!(finalizers(&deleting).contains(&FINALIZER.to_owned()));
        stack.wait_gone("watched", DEADLINE).await;
        let gone_at = now_ts();
        let stopped = stack
            .ledger()
            .object("watched")
            .handler("d1")
            .outcome("stopped");
        assert_eq!(
            stopped.len(),
            1,
            "the daemon exited gracefully: {stopped:?}"
        );
        assert!(
            stopped.times()[0] <= gone_at,
            "the object went only after the daemon had exited"
        );
        let ended = stack.ledger().object("watched").handler("d1");
        assert!(
            ended.outcome("cancelled").is_empty(),
            "no forced stop without cancellation options: {ended:?}"
        );
        stack.core.assert_running();
    })
    .await;
}

#[tokio::test]
async fn a_daemon_is_restarted_after_temporary_errors_but_not_after_success() {
    with_widget_ns("e2e-daemon-retry", |client, ns| async move {
        let mut stack = Stack::start("daemon-retry", &client, &ns, &["daemon:d1"], &[]).await;
        let spec = json!({"value": 1, "behaviour": {"d1": {
            "fail_temporarily": 2, "tick": 0.2, "exit_after": 2,
        }}});
        stack
            .api
            .create(&PostParams::default(), &widget("flaky", spec))
            .await
            .unwrap();
        operon_e2e::wait_for("the daemon's success", DEADLINE, || async {
            let done = stack
                .ledger()
                .object("flaky")
                .handler("d1")
                .outcome("success");
            Ok::<_, String>((!done.is_empty()).then_some(()))
        })
        .await;
        let ledger = stack.ledger().object("flaky").handler("d1");
        assert_eq!(
            ledger.outcome("started").retries(),
            vec![0, 1, 2],
            "restarted twice, with the retry count: {ledger:?}"
        );
        assert_eq!(ledger.outcome("temporary").retries(), vec![0, 1]);
        let object = stack
            // The last run's final patch is applied after it exits (after its ledger line): wait
            // for it, not for the run's first tick.
            .wait_object("flaky", "the last run's patch", DEADLINE, |o| {
                o.data["status"]["d1"]["retry"] == json!(2)
                    && o.data["status"]["d1"]["ticks"] == json!(2)
            })
            .await;
        assert_eq!(object.data["status"]["d1"]["ticks"], json!(2));

        // A change after the success does not start it again (Kopf: not until a restart).
        stack
            .api
            .patch(
                "flaky",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"value": 2}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let started = stack
            .ledger()
            .object("flaky")
            .handler("d1")
            .outcome("started");
        assert_eq!(
            started.len(),
            3,
            "no restart after the success: {started:?}"
        );
        stack.core.assert_running();
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_the_daemons_before_the_core_exits() {
    with_widget_ns("e2e-daemon-term", |client, ns| async move {
        let mut stack = Stack::start("daemon-term", &client, &ns, &["daemon:d1"], &[]).await;
        let spec = json!({"behaviour": {"d1": {"tick": 0.3}}});
        stack
            .api
            .create(&PostParams::default(), &widget("running", spec))
            .await
            .unwrap();
        stack
            .wait_object("running", "the daemon running", DEADLINE, |o| {
                o.data["status"]["d1"]["ticks"].as_u64() >= Some(2)
            })
            .await;
        let status = stack
            .core
            .terminate(Duration::from_secs(30))
            .await
            .unwrap()
            .expect("the core exits on SIGTERM");
        assert!(status.success(), "the core exits cleanly: {status:?}");
        let ledger = stack.ledger().object("running").handler("d1");
        assert_eq!(
            ledger.outcome("stopped").len(),
            1,
            "the daemon was asked to stop and exited before the core did: {ledger:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_dead_handler_service_is_reported_and_its_daemons_start_again_when_it_is_back() {
    with_widget_ns("e2e-daemon-dead", |client, ns| async move {
        let mut stack = Stack::start("daemon-dead", &client, &ns, &["daemon:d1"], &[]).await;
        let spec = json!({"behaviour": {"d1": {"tick": 0.3}}});
        stack
            .api
            .create(&PostParams::default(), &widget("orphaned", spec))
            .await
            .unwrap();
        stack
            .wait_object("orphaned", "the daemon running", DEADLINE, |o| {
                o.data["status"]["d1"]["ticks"].as_u64() >= Some(1)
            })
            .await;
        stack.handler.kill();
        operon_e2e::wait_for(
            "a Warning Event about the failed daemon",
            DEADLINE,
            || async {
                let events = stack.events_for("orphaned").await;
                let found = events.iter().find(|e| {
                    e.reason.as_deref() == Some("DaemonFailed")
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains("Daemon 'd1'"))
                });
                Ok::<_, String>(found.map(|_| ()))
            },
        )
        .await;
        stack.core.assert_running();
        stack.handler.restart().await.unwrap();
        operon_e2e::wait_for("the daemon started again", DEADLINE, || async {
            let started = stack
                .ledger()
                .object("orphaned")
                .handler("d1")
                .outcome("started");
            Ok::<_, String>((started.len() >= 2).then_some(()))
        })
        .await;
        let before = stack
            .ledger()
            .object("orphaned")
            .handler("d1")
            .outcome("started");
        assert_eq!(
            before.retries(),
            vec![0, 0],
            "a transport failure is not the handler's failure: {before:?}"
        );
        stack.core.assert_running();
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_a_core_that_still_waits_for_its_handler_service() {
    let kubeconfig = operon_e2e::plane().await.kubeconfig.clone();
    // Nothing listens there: the core retries Describe with a growing backoff.
    let url = format!("http://127.0.0.1:{}", operon_e2e::free_port());
    let args = vec![
        "--handler".to_owned(),
        url,
        "-n".to_owned(),
        "default".to_owned(),
    ];
    let mut core = operon_e2e::CoreProcess::start("daemon-nodescribe", &args, &kubeconfig)
        .await
        .unwrap();
    operon_e2e::wait_for("the core retrying Describe", DEADLINE, || async {
        let log = core.log_plain();
        Ok::<_, String>(log.contains("does not answer Describe yet").then_some(()))
    })
    .await;
    let status = core
        .terminate(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the core exits on SIGTERM while it waits for Describe");
    assert!(status.success(), "a clean exit: {status:?}");
}
