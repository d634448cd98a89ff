//! Tasks (issue 9) on the real plane: operations on a parent that run one at a time per parent,
//! in FIFO order, never during the parent's own handling, cancelled by deleting them, resumed
//! after a restart of the core, and deleted after their retention.
//!
//! The parents are widgets (`widgets.e2e.operon.dev`); the tasks are `WidgetTask`s
//! (`widgettasks.e2e.operon.dev`, status subresource) naming their widget in `spec.parent`. The
//! example handler service (`proto/examples/rust`, `--task`) runs them as scripted by their spec
//! (`steps`, `stepSeconds`, `failStep`, `junk`) and writes a ledger line when a run starts, when
//! each step starts and ends, at the end, and when the core cancels the call; its create and
//! update handlers on the widgets write lines with their start and end. Each test gets its own
//! namespace, handler service and core.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client, ResourceExt};
use operon_e2e::{
    CoreProcess, Entries, HandlerProcess, RESOURCE_ARG, WIDGET_TASKS, install_crds, plane,
    wait_for, widget, widgets, with_widget_ns,
};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(120);

/// The finalizer the core holds on a running task (default prefix).
const FINALIZER: &str = "kopf.zalando.org/task";

fn task_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("e2e.operon.dev", "v1", "WidgetTask"))
}

fn task(name: &str, parent: &str, spec: Value) -> DynamicObject {
    let mut spec = spec;
    spec["parent"] = json!(parent);
    serde_json::from_value(json!({
        "apiVersion": "e2e.operon.dev/v1",
        "kind": "WidgetTask",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a valid WidgetTask")
}

/// A handler service with the task type `job` and the widget handlers `make` (create) and
/// `change` (update), and a core serving one namespace.
struct Tasks {
    handler: HandlerProcess,
    core: CoreProcess,
    client: Client,
    ns: String,
    tasks: Api<DynamicObject>,
    parents: Api<DynamicObject>,
}

impl Tasks {
    async fn start(name: &str, client: &Client, ns: &str, mode: &str, core_args: &[&str]) -> Self {
        Self::start_with(name, client, ns, mode, &[], core_args).await
    }

    /// As [`Tasks::start`], with more arguments for the handler service (`--task …`).
    async fn start_with(
        name: &str,
        client: &Client,
        ns: &str,
        mode: &str,
        handler_args: &[&str],
        core_args: &[&str],
    ) -> Self {
        install_crds(client, &WIDGET_TASKS).await;
        let task_arg =
            format!("job:e2e.operon.dev/v1/widgettasks:{RESOURCE_ARG}:spec.parent:{mode}");
        let mut args = vec![
            "--resource",
            RESOURCE_ARG,
            "--handler",
            "create:make",
            "--handler",
            "update:change",
            "--task",
            &task_arg,
        ];
        args.extend_from_slice(handler_args);
        let handler = HandlerProcess::start(name, &args)
            .await
            .unwrap_or_else(|err| panic!("starting the handler service: {err:#}"));
        let mut core_argv = vec![
            "--handler".to_owned(),
            handler.url(),
            "-n".to_owned(),
            ns.to_owned(),
        ];
        core_argv.extend(core_args.iter().map(|a| (*a).to_owned()));
        let kubeconfig = plane().await.kubeconfig.clone();
        let mut core = CoreProcess::start(name, &core_argv, &kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("starting the core: {err:#}"));
        core.wait_ready(DEADLINE).await;
        Self {
            handler,
            core,
            client: client.clone(),
            ns: ns.to_owned(),
            tasks: Api::namespaced_with(client.clone(), ns, &task_resource()),
            parents: widgets(client, ns),
        }
    }

    fn ledger(&self) -> Entries {
        self.handler.ledger().entries()
    }

    async fn create_parent(&self, name: &str, spec: Value) {
        self.parents
            .create(&PostParams::default(), &widget(name, spec))
            .await
            .unwrap_or_else(|err| panic!("creating widget {name}: {err}"));
    }

    async fn create_task(&self, name: &str, parent: &str, spec: Value) {
        self.tasks
            .create(&PostParams::default(), &task(name, parent, spec))
            .await
            .unwrap_or_else(|err| panic!("creating task {name}: {err}"));
    }

    /// Waits until task `name` satisfies `done`; returns it.
    async fn wait_task(
        &mut self,
        name: &str,
        what: &str,
        done: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            self.core.assert_running();
            let last = match self.tasks.get_opt(name).await {
                Ok(Some(t)) if done(&t) => return t,
                Ok(Some(t)) => format!("status {}", t.data["status"]),
                Ok(None) => "not found".to_owned(),
                Err(err) => format!("error: {err}"),
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for task {}/{name}: {what}; last seen: {last}\nledger:\n{}",
                self.ns,
                self.ledger()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_phase(&mut self, name: &str, phase: &str) -> DynamicObject {
        self.wait_task(name, &format!("phase {phase}"), |t| {
            t.data["status"]["phase"] == phase
        })
        .await
    }

    async fn events(&self, about: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(about))
            .collect()
    }

    async fn wait_event(&self, about: &str, reason: &str, containing: &str) -> Event {
        wait_for(
            &format!("an Event {reason} about {about} containing {containing:?}"),
            DEADLINE,
            || async {
                let found = self.events(about).await.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.message.as_deref().is_some_and(|m| m.contains(containing))
                });
                Ok::<_, String>(found)
            },
        )
        .await
    }
}

/// Removes the core's finalizer from every task left in `ns` (a killed core may leave one), so
/// that the namespace can go.
async fn release_tasks(client: &Client, ns: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &task_resource());
    let Ok(list) = api.list(&ListParams::default()).await else {
        return;
    };
    for t in list {
        if !t.finalizers().is_empty() {
            let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
            let _ = api
                .patch(&t.name_any(), &PatchParams::default(), &patch)
                .await;
        }
    }
}

/// [`with_widget_ns`], releasing the tasks' finalizers afterwards (also on failure).
async fn with_task_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    with_widget_ns(prefix, |client, ns| async move {
        let outcome = tokio::spawn(test(client.clone(), ns.clone())).await;
        release_tasks(&client, &ns).await;
        if let Err(err) = outcome {
            match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(err) => panic!("the test task was cancelled: {err}"),
            }
        }
    })
    .await;
}

/// A closed interval of one execution, in the handler's ledger time.
#[derive(Debug, Clone, PartialEq)]
struct Interval {
    what: String,
    start: f64,
    end: f64,
}

fn overlaps(a: &Interval, b: &Interval) -> bool {
    a.start < b.end && b.start < a.end
}

/// The task runs of parent `parent` in the ledger: from `started` to its end line.
fn task_runs(ledger: &Entries, parent: &str) -> Vec<Interval> {
    let lines = ledger.parent(parent);
    let mut runs: Vec<Interval> = Vec::new();
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    for e in lines.iter() {
        let name = e.name.clone().unwrap_or_default();
        match e.outcome.as_str() {
            "started" => {
                open.insert(name, e.ts);
            }
            "succeeded" | "failed" | "cancelled" | "no_finished" => {
                let start = open
                    .remove(&name)
                    .unwrap_or_else(|| panic!("task {name} ended without starting:\n{lines}"));
                runs.push(Interval {
                    what: format!("task {name}"),
                    start,
                    end: e.ts,
                });
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "unfinished runs {open:?}:\n{lines}");
    runs
}

/// The parent's own handler executions (create/update) in the ledger.
fn handling_of(ledger: &Entries, parent: &str) -> Vec<Interval> {
    ledger
        .object(parent)
        .iter()
        .filter(|e| e.reason != "task")
        .map(|e| Interval {
            what: format!("{} {} handler {}", parent, e.reason, e.handler),
            start: e
                .started
                .unwrap_or_else(|| panic!("a handler line without its start: {e}")),
            end: e.ts,
        })
        .collect()
}

/// Done-when 1: 10 tasks created at once on 2 parents run FIFO per parent (creation time, then
/// name), never two at once on one parent, and never during that parent's own handling (its
/// create handler and an update in the middle each take 1.5 s).
#[tokio::test]
async fn tasks_run_fifo_per_parent_one_at_a_time_and_never_during_the_parents_handling() {
    with_task_ns("e2e-tasks-fifo", |client, ns| async move {
        let mut s = Tasks::start("tasks-fifo", &client, &ns, "parallel", &[]).await;
        let slow = json!({"behaviour": {"make": {"sleep": 1.5}, "change": {"sleep": 1.5}}});
        s.create_parent("p1", slow.clone()).await;
        s.create_parent("p2", slow).await;
        let names: Vec<String> = (0..10).map(|i| format!("t-{i:02}")).collect();
        for (i, name) in names.iter().enumerate() {
            let parent = if i % 2 == 0 { "p1" } else { "p2" };
            s.create_task(name, parent, json!({"steps": 2, "stepSeconds": 0.3}))
                .await;
        }
        // The parents' own handling again, while their tasks are queued or running.
        s.wait_phase("t-02", "Succeeded").await;
        for parent in ["p1", "p2"] {
            s.parents
                .patch(
                    parent,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"value": "changed"}})),
                )
                .await
                .unwrap();
        }
        let mut created: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let t = s
                .wait_task(name, "Succeeded, the finalizer released", |t| {
                    t.data["status"]["phase"] == "Succeeded"
                        && !t.finalizers().contains(&FINALIZER.to_owned())
                })
                .await;
            let status = &t.data["status"];
            assert_eq!(
                status["steps"].as_array().map(Vec::len),
                Some(2),
                "{status}"
            );
            assert!(status["startTime"].is_string() && status["completionTime"].is_string());
            assert!(status["durationMs"].as_u64().is_some(), "{status}");
            assert_eq!(status["message"], "2 step(s) done");
            let parent = if i % 2 == 0 { "p1" } else { "p2" };
            let ts = t
                .metadata
                .creation_timestamp
                .clone()
                .expect("created")
                .0
                .to_string();
            created
                .entry(parent.to_owned())
                .or_default()
                .push((ts, name.clone()));
        }
        // The update handlers ran too (the test is not vacuous).
        wait_for("both update handlers to finish", DEADLINE, || async {
            let done = s.ledger().handler("change").outcome("success").len();
            Ok::<_, String>((done == 2).then_some(()))
        })
        .await;

        let ledger = s.ledger();
        for (parent, mut expected) in created {
            expected.sort();
            let expected: Vec<String> = expected
                .into_iter()
                .map(|(_, n)| format!("task {n}"))
                .collect();
            let mut runs = task_runs(&ledger, &parent);
            runs.sort_by(|a, b| a.start.total_cmp(&b.start));
            let order: Vec<String> = runs.iter().map(|r| r.what.clone()).collect();
            assert_eq!(
                order, expected,
                "FIFO by creation time, then name, on {parent}:\n{ledger}"
            );
            for pair in runs.windows(2) {
                assert!(
                    pair[0].end <= pair[1].start,
                    "two tasks at once on {parent}: {pair:?}\n{ledger}"
                );
            }
            let handling = handling_of(&ledger, &parent);
            assert_eq!(
                handling.len(),
                2,
                "create and update of {parent}: {handling:?}"
            );
            for h in &handling {
                for r in &runs {
                    assert!(
                        !overlaps(h, r),
                        "a task during the parent's handling: {h:?} {r:?}\n{ledger}"
                    );
                }
            }
        }

        // The dashboard's data lists the tasks with their phase and steps.
        let objects = s.core.get("/api/v1/objects").await.unwrap().text();
        let objects: Value = serde_json::from_str(&objects).unwrap();
        let view = objects["objects"]
            .as_array()
            .and_then(|a| {
                a.iter().find(|o| {
                    o["name"] == "t-00"
                        && o["resource"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("widgettasks"))
                })
            })
            .unwrap_or_else(|| panic!("t-00 in /api/v1/objects: {objects}"));
        assert_eq!(view["cause"], "task Succeeded", "{view}");
        let rows: Vec<&str> = view["handlers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        assert_eq!(rows, ["job", "job/0-step-0", "job/1-step-1"], "{view}");
        s.core.assert_running();
    })
    .await;
}

/// Done-when 2: a running task deleted mid-way is cancelled; the handler saw the cancellation;
/// an Event on the parent says so; the parent's next task starts.
#[tokio::test]
async fn deleting_a_running_task_cancels_it_and_the_next_one_starts() {
    with_task_ns("e2e-tasks-cancel", |client, ns| async move {
        let mut s = Tasks::start("tasks-cancel", &client, &ns, "sequential", &[]).await;
        s.create_parent("p", json!({})).await;
        s.create_task("a-long", "p", json!({"steps": 3, "stepSeconds": 4}))
            .await;
        s.create_task("b-next", "p", json!({"steps": 1, "stepSeconds": 0.1}))
            .await;
        let running = s
            .wait_task("a-long", "Running with the finalizer", |t| {
                t.data["status"]["phase"] == "Running"
                    && t.finalizers().contains(&FINALIZER.to_owned())
            })
            .await;
        assert!(running.data["status"]["startTime"].is_string());
        let waiting = s.tasks.get("b-next").await.unwrap();
        assert_eq!(
            waiting.data["status"]["phase"], "Waiting",
            "queued behind a-long"
        );
        wait_for("the first step to start", DEADLINE, || async {
            let started = s.ledger().object("a-long").outcome("step_started").len();
            Ok::<_, String>((started >= 1).then_some(()))
        })
        .await;
        s.tasks
            .delete("a-long", &DeleteParams::default())
            .await
            .unwrap();

        wait_for("the handler to see the cancellation", DEADLINE, || async {
            let cancelled = s.ledger().object("a-long").outcome("cancelled");
            Ok::<_, String>((!cancelled.is_empty()).then_some(()))
        })
        .await;
        s.wait_event("p", "TaskCancelled", "\"a-long\" was cancelled")
            .await;
        wait_for("a-long to be gone", DEADLINE, || async {
            s.tasks
                .get_opt("a-long")
                .await
                .map(|t| t.is_none().then_some(()))
        })
        .await;
        s.wait_phase("b-next", "Succeeded").await;
        // The dashboard's page of the parent shows the Event.
        let page = s
            .core
            .get(&format!("/objects/widgets.e2e.operon.dev/v1/{}/p", s.ns))
            .await
            .unwrap()
            .text();
        assert!(page.contains("TaskCancelled"), "the parent's page: {page}");
        let ledger = s.ledger();
        let a = ledger.object("a-long");
        assert!(
            a.outcome("succeeded").is_empty(),
            "a-long never finished:\n{a}"
        );
        assert_eq!(
            a.outcome("step_done").len(),
            0,
            "cancelled in its first step:\n{a}"
        );
        let cancelled_at = a.outcome("cancelled").times()[0];
        let next_started = ledger.object("b-next").outcome("started").times()[0];
        assert!(
            cancelled_at <= next_started,
            "the next task started after the cancellation:\n{ledger}"
        );
        s.core.assert_running();
    })
    .await;
}

/// Done-when 3: a sequential task of 4 steps survives a SIGKILL of the core at step 2 and
/// resumes at step 3 (index 2) without running steps 1–2 again.
#[tokio::test]
async fn a_sequential_task_resumes_after_a_sigkill_of_the_core_without_rerunning_steps() {
    with_task_ns("e2e-tasks-resume", |client, ns| async move {
        let mut s = Tasks::start("tasks-resume", &client, &ns, "sequential", &[]).await;
        s.create_parent("p", json!({})).await;
        s.create_task("seq", "p", json!({"steps": 4, "stepSeconds": 1.5}))
            .await;
        let persisted = s
            .wait_task("seq", "two steps persisted", |t| {
                t.data["status"]["steps"].as_array().map(Vec::len) == Some(2)
            })
            .await;
        s.core.kill();
        let first_start = persisted.data["status"]["startTime"].clone();
        assert_eq!(persisted.data["status"]["phase"], "Running");
        s.core.restart().await.unwrap();
        s.core.wait_ready(DEADLINE).await;
        let done = s.wait_phase("seq", "Succeeded").await;
        let status = &done.data["status"];
        let indexes: Vec<u64> = status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [0, 1, 2, 3], "{status}");
        assert_eq!(status["startTime"], first_start, "the first start is kept");

        let ledger = s.ledger().object("seq");
        let runs = ledger.outcome("started");
        let resumed: Vec<Option<u32>> = runs.iter().map(|e| e.resume_from).collect();
        assert_eq!(
            resumed,
            [Some(0), Some(2)],
            "resumed at step index 2:\n{ledger}"
        );
        for step in [0, 1] {
            assert_eq!(
                ledger.step(step).outcome("step_started").len(),
                1,
                "step {step} ran once:\n{ledger}"
            );
        }
        assert!(
            !ledger.outcome("cancelled").is_empty(),
            "the handler saw the first call end with the core:\n{ledger}"
        );
        for step in [2, 3] {
            assert_eq!(ledger.step(step).outcome("step_done").len(), 1, "{ledger}");
        }
        assert_eq!(ledger.outcome("succeeded").len(), 1);
    })
    .await;
}

/// Finished tasks are deleted `--task-retention` after their completion, not before.
#[tokio::test]
async fn finished_tasks_are_deleted_after_their_retention() {
    with_task_ns("e2e-tasks-retention", |client, ns| async move {
        let mut s = Tasks::start(
            "tasks-retention",
            &client,
            &ns,
            "parallel",
            &["--task-retention", "4"],
        )
        .await;
        s.create_parent("p", json!({})).await;
        s.create_task("short-lived", "p", json!({"steps": 1, "stepSeconds": 0.1}))
            .await;
        let done = s.wait_phase("short-lived", "Succeeded").await;
        let completed: k8s_openapi::jiff::Timestamp = done.data["status"]["completionTime"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        wait_for("the finished task to be deleted", DEADLINE, || async {
            s.tasks
                .get_opt("short-lived")
                .await
                .map(|t| t.is_none().then_some(()))
        })
        .await;
        let gone_at = k8s_openapi::jiff::Timestamp::now();
        assert!(
            gone_at.duration_since(completed) >= k8s_openapi::jiff::SignedDuration::from_secs(4),
            "kept for the retention: completed {completed}, gone by {gone_at}"
        );
        s.core.assert_running();
    })
    .await;
}

/// A broken handler or a task without a parent fails the task with a clear message and an
/// Event; the core goes on with the next task; a dead handler service fails the task too.
#[tokio::test]
async fn broken_tasks_fail_with_a_message_and_the_next_task_runs() {
    with_task_ns("e2e-tasks-junk", |client, ns| async move {
        let mut s = Tasks::start("tasks-junk", &client, &ns, "parallel", &[]).await;
        s.create_parent("p", json!({})).await;
        let cases = [
            (
                "a-error",
                "p",
                json!({"junk": "error"}),
                "the RunTask call failed",
            ),
            (
                "b-no-finished",
                "p",
                json!({"junk": "no-finished"}),
                "ended without `finished`",
            ),
            (
                "c-bad-json",
                "p",
                json!({"junk": "bad-json"}),
                "is not JSON",
            ),
            (
                "d-step-fails",
                "p",
                json!({"steps": 3, "failStep": 1}),
                "step 1 failed",
            ),
            ("e-orphan", "nobody", json!({}), "does not exist"),
        ];
        for (name, parent, spec, _) in &cases {
            s.create_task(name, parent, spec.clone()).await;
        }
        s.create_task("f-fine", "p", json!({"steps": 1})).await;
        for (name, parent, _, message) in &cases {
            let t = s.wait_phase(name, "Failed").await;
            let got = t.data["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                got.contains(message),
                "{name}: {got:?} should say {message:?}"
            );
            s.wait_event(name, "TaskFailed", message).await;
            let _ = parent;
        }
        s.wait_phase("f-fine", "Succeeded").await;
        let partial = s.tasks.get("d-step-fails").await.unwrap();
        let steps = partial.data["status"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(steps.len(), 2, "the failed step is recorded: {steps:?}");
        assert_eq!(steps[1]["ok"], false);

        // A dead handler service: the task fails, and runs are fine again once it is back.
        s.handler.kill();
        s.create_task("g-dead", "p", json!({})).await;
        let t = s.wait_phase("g-dead", "Failed").await;
        assert!(
            t.data["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("RunTask call failed"),
            "{}",
            t.data["status"]
        );
        s.handler.restart().await.unwrap();
        s.create_task("h-after", "p", json!({})).await;
        s.wait_phase("h-after", "Succeeded").await;
        let failed = s.ledger().object("g-dead");
        assert!(failed.is_empty(), "the dead service ran nothing: {failed}");
        s.core.assert_running();
    })
    .await;
}

/// A running task deleted while the core is down (SIGKILL) is held by the core's finalizer; the
/// next core records it Cancelled, posts the Event on the parent, and lets it go.
#[tokio::test]
async fn a_task_deleted_while_the_core_is_down_is_recorded_cancelled_by_the_next_core() {
    with_task_ns("e2e-tasks-down", |client, ns| async move {
        let mut s = Tasks::start("tasks-down", &client, &ns, "sequential", &[]).await;
        s.create_parent("p", json!({})).await;
        s.create_task("doomed", "p", json!({"steps": 3, "stepSeconds": 3}))
            .await;
        s.wait_task("doomed", "Running with the finalizer", |t| {
            t.data["status"]["phase"] == "Running" && t.finalizers().contains(&FINALIZER.to_owned())
        })
        .await;
        // The core writes Running before it calls the service: wait until the run has begun.
        wait_for("the handler to start doomed", DEADLINE, || async {
            let started = !s.ledger().object("doomed").outcome("started").is_empty();
            Ok::<_, kube::Error>(started.then_some(()))
        })
        .await;
        s.core.kill();
        s.tasks
            .delete("doomed", &DeleteParams::default())
            .await
            .unwrap();
        let held = s.tasks.get("doomed").await.unwrap();
        assert!(
            held.metadata.deletion_timestamp.is_some(),
            "held by the finalizer while no core runs"
        );
        s.core.restart().await.unwrap();
        s.core.wait_ready(DEADLINE).await;
        s.wait_event("p", "TaskCancelled", "\"doomed\" was cancelled")
            .await;
        wait_for("doomed to be gone", DEADLINE, || async {
            s.tasks
                .get_opt("doomed")
                .await
                .map(|t| t.is_none().then_some(()))
        })
        .await;
        let runs = s.ledger().object("doomed").outcome("started");
        assert_eq!(runs.len(), 1, "never run again: {runs}");
        s.core.assert_running();
    })
    .await;
}

/// Two task types on one parent share its queue: a higher priority starts first among the
/// waiting tasks, but never pre-empts the running one.
#[tokio::test]
async fn a_higher_priority_reorders_waiting_tasks_but_never_preempts_a_running_one() {
    with_task_ns("e2e-tasks-priority", |client, ns| async move {
        let urgent = format!(
            "urgent:e2e.operon.dev/v1/widgeturgents:{RESOURCE_ARG}:spec.parent:parallel,priority=10"
        );
        let mut s = Tasks::start_with(
            "tasks-priority",
            &client,
            &ns,
            "parallel",
            &["--task", &urgent],
            &[],
        )
        .await;
        s.create_parent("p", json!({})).await;
        s.create_task("a-running", "p", json!({"steps": 1, "stepSeconds": 3}))
            .await;
        s.wait_phase("a-running", "Running").await;
        s.create_task("b-low", "p", json!({"steps": 1})).await;
        let urgents: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "e2e.operon.dev",
                "v1",
                "WidgetUrgent",
            )),
        );
        let mut high = task("c-high", "p", json!({"steps": 1}));
        high.types = Some(kube::api::TypeMeta {
            api_version: "e2e.operon.dev/v1".into(),
            kind: "WidgetUrgent".into(),
        });
        urgents.create(&PostParams::default(), &high).await.unwrap();
        s.wait_phase("b-low", "Succeeded").await;
        let high = wait_for("c-high to succeed", DEADLINE, || async {
            let t = urgents.get("c-high").await?;
            Ok::<_, kube::Error>((t.data["status"]["phase"] == "Succeeded").then_some(t))
        })
        .await;
        assert_eq!(high.data["status"]["steps"][0]["name"], "step-0");
        let ledger = s.ledger();
        let mut runs = task_runs(&ledger, "p");
        runs.sort_by(|a, b| a.start.total_cmp(&b.start));
        let order: Vec<&str> = runs.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            order,
            ["task a-running", "task c-high", "task b-low"],
            "the urgent task went before the older waiting one:\n{ledger}"
        );
        assert!(
            ledger.object("a-running").outcome("cancelled").is_empty()
                && ledger.object("a-running").outcome("succeeded").len() == 1,
            "the running task was not pre-empted:\n{ledger}"
        );
        for pair in runs.windows(2) {
            assert!(pair[0].end <= pair[1].start, "one at a time: {pair:?}");
        }
    })
    .await;
}
