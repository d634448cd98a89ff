//! Tasks (`TaskService`, the Elassandra operator's model): operations on a parent run one at a
//! time per parent; a run streams one update per finished step and ends with the task's result.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use operon_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::Status;

use crate::convert::{self, duration};
use crate::error::HandlerError;
use crate::resource::Resource;

/// A step that finished in an earlier run of the task (sequential tasks resumed after a
/// restart).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// 0-based, in the order the steps ran.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its message (the error's, for a failed step).
    pub message: String,
    /// Its result.
    pub result: Option<Value>,
}

type Sender = mpsc::Sender<Result<pb::TaskUpdate, Status>>;

/// The parsed parts of a `TaskRequest`.
#[derive(Debug)]
pub(crate) struct TaskInput {
    pub(crate) task: Value,
    pub(crate) parent: Value,
    pub(crate) resume_from: u32,
    pub(crate) done: Vec<StepRecord>,
    pub(crate) attempt_id: String,
    pub(crate) task_id: String,
    pub(crate) out: Sender,
    pub(crate) span: tracing::Span,
}

impl TaskInput {
    /// Reads a `TaskRequest`.
    ///
    /// # Errors
    /// What is wrong: a task or parent that is not a JSON object.
    pub(crate) fn read(
        request: &pb::TaskRequest,
        out: Sender,
        span: tracing::Span,
    ) -> Result<Self, String> {
        Ok(Self {
            task: convert::object_json("task_json", &request.task_json)?,
            parent: convert::object_json("parent_json", &request.parent_json)?,
            resume_from: request.resume_from,
            done: request
                .done_steps
                .iter()
                .map(|step| StepRecord {
                    index: step.index,
                    name: step.name.clone(),
                    ok: step.ok,
                    message: step.message.clone(),
                    result: convert::optional_json("result_json", &step.result_json)
                        .ok()
                        .flatten(),
                })
                .collect(),
            attempt_id: request.attempt_id.clone(),
            task_id: request.task_id.clone(),
            out,
            span,
        })
    }
}

/// What a task function gets: the task (`T`) and its parent (`P`), typed, where a resumed run
/// starts, and [`TaskCtx::step`] to run and report each step.
///
/// ```
/// use operon_handler::{HandlerError, TaskCtx};
/// use serde_json::{json, Value};
///
/// async fn backup(ctx: TaskCtx<Value, Value>) -> Result<String, HandlerError> {
///     let snapshot = ctx.step("snapshot", || async { Ok(Some(json!({"id": "s1"}))) }).await?;
///     ctx.step("upload", || async move {
///         let _id = snapshot.as_ref().map(|s| s["id"].clone());
///         Ok(None)
///     })
///     .await?;
///     Ok("backed up".into())
/// }
/// ```
pub struct TaskCtx<T, P> {
    task: Arc<T>,
    parent: Arc<P>,
    input: Arc<TaskInput>,
    next: Arc<AtomicU32>,
}

impl<T, P> Clone for TaskCtx<T, P> {
    fn clone(&self) -> Self {
        Self {
            task: Arc::clone(&self.task),
            parent: Arc::clone(&self.parent),
            input: Arc::clone(&self.input),
            next: Arc::clone(&self.next),
        }
    }
}

impl<T, P> std::fmt::Debug for TaskCtx<T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCtx")
            .field("task_id", &self.input.task_id)
            .field("resume_from", &self.input.resume_from)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned, P: DeserializeOwned> TaskCtx<T, P> {
    pub(crate) fn read(input: Arc<TaskInput>) -> Result<Self, HandlerError> {
        fn read<V: DeserializeOwned>(what: &str, value: &Value) -> Result<V, HandlerError> {
            V::deserialize(value).map_err(|error| {
                HandlerError::other(
                    "serde_json::Error",
                    format!(
                        "cannot read the {what} as {}: {error}",
                        std::any::type_name::<V>()
                    ),
                )
            })
        }
        Ok(Self {
            task: Arc::new(read("task", &input.task)?),
            parent: Arc::new(read("parent", &input.parent)?),
            input,
            next: Arc::new(AtomicU32::new(0)),
        })
    }
}

impl<T, P> TaskCtx<T, P> {
    /// The task object, typed.
    pub fn task(&self) -> &T {
        &self.task
    }

    /// The parent, typed.
    pub fn parent(&self) -> &P {
        &self.parent
    }

    /// The task object as JSON.
    pub fn task_body(&self) -> &Value {
        &self.input.task
    }

    /// The parent as JSON.
    pub fn parent_body(&self) -> &Value {
        &self.input.parent
    }

    /// The index of the first step this run executes (0 unless a sequential task resumes).
    pub fn resume_from(&self) -> u32 {
        self.input.resume_from
    }

    /// The steps that finished in earlier runs.
    pub fn done_steps(&self) -> &[StepRecord] {
        &self.input.done
    }

    /// The task's uid: the same in every run of one task, for idempotency.
    pub fn attempt_id(&self) -> &str {
        &self.input.attempt_id
    }

    /// The task registration's id.
    pub fn task_id(&self) -> &str {
        &self.input.task_id
    }

    /// The run's tracing span.
    pub fn span(&self) -> &tracing::Span {
        &self.input.span
    }

    /// Runs the next step, named `name`, and reports it to the core as soon as it ends (a
    /// sequential task's status is persisted then). Steps are numbered in the order they are
    /// called.
    ///
    /// # Guarantees
    /// In a resumed run, a step that finished in an earlier run is not run again: its recorded
    /// result is returned (a failed one as a [`HandlerError::Permanent`] with its message).
    /// Calling the steps in the same order in every run is what makes this right.
    ///
    /// # Errors
    /// The step's own error, after it was reported as failed. Return it (`?`) to end the task
    /// failed, or go on: the task decides.
    pub async fn step<F, Fut>(&self, name: &str, f: F) -> Result<Option<Value>, HandlerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Value>, HandlerError>>,
    {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        if index < self.input.resume_from {
            let done = self.input.done.iter().find(|step| step.index == index);
            return match done {
                Some(step) if !step.ok => Err(HandlerError::permanent(step.message.clone())),
                Some(step) => Ok(step.result.clone()),
                None => Ok(None),
            };
        }
        let result = crate::ctx::catching(f()).await;
        let step = pb::StepResult {
            index,
            name: name.to_owned(),
            ok: result.is_ok(),
            message: match &result {
                Ok(_) => String::new(),
                Err(error) => error.message(),
            },
            result_json: match &result {
                Ok(Some(value)) => convert::to_json(value),
                _ => Vec::new(),
            },
        };
        tracing::info!(task = %self.input.task_id, step = index, name, ok = step.ok, "Task step finished.");
        // A dropped stream means the core cancelled the run; the run is dropped soon after.
        let _ = self
            .input
            .out
            .send(Ok(pb::TaskUpdate {
                update: Some(pb::task_update::Update::Step(step)),
            }))
            .await;
        result
    }
}

/// An erased task function: the run's final answer.
pub(crate) type TaskFn =
    Arc<dyn Fn(Arc<TaskInput>) -> BoxFuture<'static, Result<String, HandlerError>> + Send + Sync>;

/// How a task's steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskMode {
    /// Steps may run at once; the status is written at the end; a restarted core runs the
    /// task again from the start (the default).
    #[default]
    Parallel,
    /// Steps run one after another; the status is persisted after each; a restarted core
    /// resumes at the first unfinished step.
    Sequential,
}

/// The options of a task registration ([`crate::Operator::task_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskOptions {
    pub(crate) id: Option<String>,
    pub(crate) mode: TaskMode,
    pub(crate) priority: i32,
    pub(crate) retention: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
}

impl TaskOptions {
    /// Parallel, priority 0, the core's retention, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registration's id. Default: the task function's name.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// How the steps run.
    pub fn mode(mut self, mode: TaskMode) -> Self {
        self.mode = mode;
        self
    }

    /// Among the waiting tasks of one parent, a higher priority starts first.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Finished tasks are deleted this long after they end.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// A deadline for the whole run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn to_proto(
        &self,
        id: &str,
        task: &Resource,
        parent: &Resource,
        parent_field: &str,
    ) -> pb::TaskRegistration {
        pb::TaskRegistration {
            id: id.to_owned(),
            task: Some(task.to_proto()),
            parent: Some(parent.to_proto()),
            parent_field: parent_field.to_owned(),
            mode: match self.mode {
                TaskMode::Parallel => pb::TaskMode::Parallel,
                TaskMode::Sequential => pb::TaskMode::Sequential,
            } as i32,
            priority: self.priority,
            retention: self.retention.map(duration),
            timeout: self.timeout.map(duration),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input(
        resume_from: u32,
        done: Vec<StepRecord>,
    ) -> (
        Arc<TaskInput>,
        mpsc::Receiver<Result<pb::TaskUpdate, Status>>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let input = TaskInput {
            task: json!({"spec": {}}),
            parent: json!({"metadata": {"name": "p"}}),
            resume_from,
            done,
            attempt_id: "uid".into(),
            task_id: "t".into(),
            out: tx,
            span: tracing::Span::none(),
        };
        (Arc::new(input), rx)
    }

    #[tokio::test]
    async fn steps_are_reported_as_they_end() {
        let (input, mut rx) = input(0, Vec::new());
        let ctx = TaskCtx::<Value, Value>::read(input).unwrap();
        let first = ctx.step("a", || async { Ok(Some(json!(1))) }).await;
        assert_eq!(first.unwrap(), Some(json!(1)));
        let second = ctx
            .step("b", || async { Err(HandlerError::permanent("broken")) })
            .await;
        assert!(second.is_err());
        let Some(Ok(pb::TaskUpdate {
            update: Some(pb::task_update::Update::Step(a)),
        })) = rx.recv().await
        else {
            panic!("no step a");
        };
        assert_eq!((a.index, a.name.as_str(), a.ok), (0, "a", true));
        assert_eq!(a.result_json, b"1");
        let Some(Ok(pb::TaskUpdate {
            update: Some(pb::task_update::Update::Step(b)),
        })) = rx.recv().await
        else {
            panic!("no step b");
        };
        assert_eq!((b.index, b.ok, b.message.as_str()), (1, false, "broken"));
    }

    #[tokio::test]
    async fn resumed_runs_skip_the_done_steps() {
        let done = vec![StepRecord {
            index: 0,
            name: "a".into(),
            ok: true,
            message: String::new(),
            result: Some(json!("kept")),
        }];
        let (input, mut rx) = input(1, done);
        let ctx = TaskCtx::<Value, Value>::read(input).unwrap();
        let first = ctx
            .step("a", || async { panic!("a finished in an earlier run") })
            .await;
        assert_eq!(first.unwrap(), Some(json!("kept")));
        ctx.step("b", || async { Ok(None) }).await.unwrap();
        let Some(Ok(pb::TaskUpdate {
            update: Some(pb::task_update::Update::Step(b)),
        })) = rx.recv().await
        else {
            panic!("no step b");
        };
        assert_eq!(b.index, 1);
        assert!(rx.try_recv().is_err());
    }
}
