//! Tasks (`--task`), on the SDK: one scripted run per call, driven by the task's spec.
//!
//! The script, in the task's `spec` (all keys optional):
//! - `steps: N` (default 1) — the number of steps, `step-0` … `step-<N-1>`;
//! - `stepSeconds: S` (default 0.2) — how long each step takes;
//! - `failStep: I` — step `I` fails and the task ends failed after it;
//! - `junk` — break the contract (done by [`crate::faults`], around the SDK): `"no-finished"`
//!   (the stream ends after the steps without `finished`), `"bad-json"` (the steps' results are
//!   not JSON), `"error"` (the call fails at once with a gRPC error).
//!
//! A run starts at the SDK's `resume_from` (the core resumes a sequential task there). Every
//! step's result is `{"step": I, "parent": <parent name>}`. The ledger gets a line when the run
//! starts (`started`, with `resume_from`), when each step starts and ends (`step_started`,
//! `step_done`, with `step`), at the end (`succeeded`, `failed`), and when the core cancels the
//! call (`cancelled`, with the step in progress): the SDK drops the run when the core drops the
//! stream.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use operon_handler::{HandlerError, TaskCtx};
use serde_json::{Value, json};

use crate::ledger::{Ledger, ObjectIdentity, TaskEvent};

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
        let index = |key: &str| spec[key].as_u64().and_then(|n| u32::try_from(n).ok());
        Self {
            steps: index("steps").unwrap_or(1),
            step_time: Duration::from_secs_f64(
                spec["stepSeconds"]
                    .as_f64()
                    .unwrap_or(0.2)
                    .clamp(0.0, 3600.0),
            ),
            fail_step: index("failStep"),
            junk: spec["junk"].as_str().map(str::to_owned),
        }
    }
}

/// The ledger's view of one run; a run dropped before it ended (the core cancelled it) notes
/// `cancelled` with the step it was in.
pub struct Notes {
    ledger: Ledger,
    task_id: String,
    task: ObjectIdentity,
    parent: String,
    /// The step in progress, and whether the run ended.
    state: Mutex<(Option<u32>, bool)>,
}

impl Notes {
    /// The notes of a run of `task_id` on `task` (a task body) under `parent` (a body).
    pub fn new(ledger: Ledger, task_id: &str, task: &Value, parent: &Value) -> Self {
        Self {
            ledger,
            task_id: task_id.to_owned(),
            task: ObjectIdentity::from_body(task),
            parent: parent["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            state: Mutex::new((None, false)),
        }
    }

    /// Appends one event to the ledger.
    pub fn note(&self, outcome: &str, step: Option<u32>, resume_from: Option<u32>) {
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

    /// The run ended with `outcome` (no `cancelled` line when dropped).
    pub fn end(&self, outcome: &str) {
        self.state().1 = true;
        self.note(outcome, None, None);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Option<u32>, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Notes {
    fn drop(&mut self) {
        let (step, ended) = *self.state();
        if !ended {
            eprintln!(
                "task {} {:?}: cancelled by the core at step {step:?}",
                self.task_id, self.task.name
            );
            self.note("cancelled", step, None);
        }
    }
}

/// Runs one task: its steps from where the run resumes, as the spec scripts them.
///
/// # Errors
/// The failed step's error (the task ends failed).
pub async fn run(ctx: TaskCtx<Value, Value>, ledger: Ledger) -> Result<String, HandlerError> {
    let script = Script::of(ctx.task_body());
    let notes = Arc::new(Notes::new(
        ledger,
        ctx.task_id(),
        ctx.task_body(),
        ctx.parent_body(),
    ));
    let resume_from = ctx.resume_from();
    notes.note("started", None, Some(resume_from));
    eprintln!(
        "task {} {:?}: started at step {resume_from}",
        ctx.task_id(),
        notes.task.name
    );
    for index in 0..script.steps {
        let notes_ = Arc::clone(&notes);
        let step_time = script.step_time;
        let failed = script.fail_step == Some(index);
        // Steps before `resume_from` finished in an earlier run: the SDK returns their result.
        let result = ctx
            .step(&format!("step-{index}"), || async move {
                notes_.state().0 = Some(index);
                notes_.note("step_started", Some(index), None);
                tokio::time::sleep(step_time).await;
                if failed {
                    return Err(HandlerError::permanent(format!(
                        "step {index} failed (scripted)"
                    )));
                }
                Ok(Some(json!({"step": index, "parent": notes_.parent})))
            })
            .await;
        if index >= resume_from {
            notes.note("step_done", Some(index), None);
        }
        if result.is_err() {
            notes.end("failed");
            return Err(HandlerError::permanent(format!("step {index} failed")));
        }
    }
    if script.junk.as_deref() == Some("no-finished") {
        // The fault wrapper drops the SDK's `finished`.
        notes.end("no_finished");
    } else {
        notes.end("succeeded");
    }
    let done = script.steps.saturating_sub(resume_from);
    Ok(format!("{done} step(s) done"))
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
