//! Tasks (`TaskService.RunTask`): one scripted run per call, driven by the task's spec.
//!
//! The script, in the task's `spec` (all keys optional):
//! - `steps: N` (default 1) — the number of steps, `step-0` … `step-<N-1>`;
//! - `stepSeconds: S` (default 0.2) — how long each step takes;
//! - `failStep: I` — step `I` fails (`ok: false`) and the task ends failed after it;
//! - `junk` — break the contract: `"no-finished"` (the stream ends after the steps without
//!   `finished`), `"bad-json"` (the first step's result is not JSON), `"error"` (the call fails
//!   at once with a gRPC error).
//!
//! A run starts at `TaskRequest.resume_from` (the core resumes a sequential task there). Every
//! step's result is `{"step": I, "parent": <parent name>}`. The ledger gets a line when the run
//! starts (`started`, with `resume_from`), when each step starts and ends (`step_started`,
//! `step_done`, with `step`), at the end (`succeeded`, `failed`), and when the core cancels the
//! call (`cancelled`, with the step in progress): the service notices that the core dropped the
//! stream and stops its work.

use std::time::Duration;

use operon_proto::v1::{
    StepResult, TaskFinished, TaskRequest, TaskUpdate, task_service_server::TaskService,
    task_update,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::{
    config::Config,
    ledger::{Ledger, ObjectIdentity, TaskEvent},
};

/// The bytes sent as a step's `result_json` for `junk: "bad-json"`.
pub const BAD_JSON: &[u8] = b"{not json";

/// What a task's spec asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The number of steps.
    pub steps: u32,
    /// How long each step takes.
    pub step_time: Duration,
    /// The step that fails.
    pub fail_step: Option<u32>,
    /// How to break the contract, if at all.
    pub junk: Option<String>,
}

impl Script {
    /// Reads the script of a task body.
    pub fn of(task: &Value) -> Self {
        let spec = &task["spec"];
        Self {
            steps: spec["steps"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            step_time: Duration::from_secs_f64(
                spec["stepSeconds"]
                    .as_f64()
                    .unwrap_or(0.2)
                    .clamp(0.0, 3600.0),
            ),
            fail_step: spec["failStep"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok()),
            junk: spec["junk"].as_str().map(str::to_owned),
        }
    }
}

/// The task service of the example.
#[derive(Debug, Clone)]
pub struct ExampleTasks {
    config: std::sync::Arc<Config>,
    ledger: Ledger,
}

impl ExampleTasks {
    /// A task service for the task types of `config`, recording in `ledger`.
    pub fn new(config: std::sync::Arc<Config>, ledger: Ledger) -> Self {
        Self { config, ledger }
    }
}

type Sender = mpsc::Sender<Result<TaskUpdate, Status>>;

#[tonic::async_trait]
impl TaskService for ExampleTasks {
    type RunTaskStream = tonic::codegen::BoxStream<TaskUpdate>;

    async fn run_task(
        &self,
        request: Request<TaskRequest>,
    ) -> Result<Response<Self::RunTaskStream>, Status> {
        let request = request.into_inner();
        if self.config.task(&request.task_id).is_none() {
            return Err(Status::not_found(format!(
                "this service has no task type {:?}",
                request.task_id
            )));
        }
        let task: Value = serde_json::from_slice(&request.task_json)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| Status::invalid_argument("task_json is not a JSON object"))?;
        let parent: Value = serde_json::from_slice(&request.parent_json)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| Status::invalid_argument("parent_json is not a JSON object"))?;
        let run = Run {
            ledger: self.ledger.clone(),
            task_id: request.task_id.clone(),
            task: ObjectIdentity::from_body(&task),
            parent: parent["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            script: Script::of(&task),
            resume_from: request.resume_from,
        };
        run.note("started", None, Some(request.resume_from));
        eprintln!(
            "task {} {:?}: started at step {}",
            run.task_id, run.task.name, run.resume_from
        );
        if run.script.junk.as_deref() == Some("error") {
            run.note("error", None, None);
            return Err(Status::internal("the task failed to start (scripted)"));
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run.run(tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|message| (message, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

struct Run {
    ledger: Ledger,
    task_id: String,
    task: ObjectIdentity,
    parent: String,
    script: Script,
    resume_from: u32,
}

impl Run {
    fn note(&self, outcome: &str, step: Option<u32>, resume_from: Option<u32>) {
        let event = TaskEvent {
            task_id: &self.task_id,
            task: &self.task,
            parent: &self.parent,
            outcome,
            step,
            resume_from,
        };
        if let Err(error) = self.ledger.record_task(&event) {
            eprintln!("cannot write the ledger: {error}");
        }
    }

    /// Sends `update`; false when the core has dropped the call.
    async fn send(&self, tx: &Sender, update: task_update::Update) -> bool {
        tx.send(Ok(TaskUpdate {
            update: Some(update),
        }))
        .await
        .is_ok()
    }

    async fn run(self, tx: Sender) {
        for index in self.resume_from..self.script.steps {
            self.note("step_started", Some(index), None);
            tokio::select! {
                () = tokio::time::sleep(self.script.step_time) => {}
                () = tx.closed() => {
                    self.cancelled(Some(index));
                    return;
                }
            }
            let failed = self.script.fail_step == Some(index);
            let result = if self.script.junk.as_deref() == Some("bad-json") {
                BAD_JSON.to_vec()
            } else {
                json!({"step": index, "parent": self.parent})
                    .to_string()
                    .into_bytes()
            };
            let step = StepResult {
                index,
                name: format!("step-{index}"),
                ok: !failed,
                message: if failed {
                    format!("step {index} failed (scripted)")
                } else {
                    String::new()
                },
                result_json: result,
            };
            if !self.send(&tx, task_update::Update::Step(step)).await {
                self.cancelled(Some(index));
                return;
            }
            self.note("step_done", Some(index), None);
            if failed {
                self.finish(&tx, false, format!("step {index} failed"))
                    .await;
                return;
            }
        }
        if self.script.junk.as_deref() == Some("no-finished") {
            self.note("no_finished", None, None);
            return;
        }
        let done = self.script.steps.saturating_sub(self.resume_from);
        self.finish(&tx, true, format!("{done} step(s) done")).await;
    }

    async fn finish(&self, tx: &Sender, ok: bool, message: String) {
        let sent = self
            .send(
                tx,
                task_update::Update::Finished(TaskFinished { ok, message }),
            )
            .await;
        if sent {
            self.note(if ok { "succeeded" } else { "failed" }, None, None);
        } else {
            self.cancelled(None);
        }
    }

    fn cancelled(&self, step: Option<u32>) {
        eprintln!(
            "task {} {:?}: cancelled by the core at step {step:?}",
            self.task_id, self.task.name
        );
        self.note("cancelled", step, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts() {
        let s = Script::of(&json!({"spec": {"steps": 4, "stepSeconds": 1.5, "failStep": 2}}));
        assert_eq!(s.steps, 4);
        assert_eq!(s.step_time, Duration::from_millis(1500));
        assert_eq!(s.fail_step, Some(2));
        assert_eq!(s.junk, None);
        let d = Script::of(&json!({"spec": {"junk": "bad-json"}}));
        assert_eq!((d.steps, d.step_time), (1, Duration::from_millis(200)));
        assert_eq!(d.junk.as_deref(), Some("bad-json"));
    }
}
