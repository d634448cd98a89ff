//! What goes to a service's sync and task handlers and comes back.

use std::time::Duration;

use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::core::tasks::StepRecord;

/// A Sync or Finalize call that failed: late, or failed in transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// No answer within the deadline.
    #[error("the {rpc} call did not finish within {deadline:?}")]
    Deadline {
        /// The call (`Sync`, `Finalize`, `RunTask`).
        rpc: &'static str,
        /// Its deadline.
        deadline: Duration,
    },
    /// The service could not be reached or answered with an error status.
    #[error("the {rpc} call failed: {message} ({code})")]
    Failed {
        /// The call.
        rpc: &'static str,
        /// The status's message.
        message: String,
        /// The status's code, by name.
        code: String,
    },
}

/// The children of one declared type, as the handler gets them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChildGroup {
    /// The type's `apiVersion`.
    pub api_version: String,
    /// The type's `kind`.
    pub kind: String,
    /// The children, with their `apiVersion` and `kind`.
    pub objects: Vec<Value>,
}

/// A Sync or Finalize call about one parent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyncRequest {
    /// The registration.
    pub sync_id: String,
    /// The parent.
    pub parent: Value,
    /// Its current children, per declared type (in the registration's order).
    pub children: Vec<ChildGroup>,
    /// The parent is being deleted (a Finalize call).
    pub finalizing: bool,
    /// W3C traceparent of the sync's span, so the service's spans join its trace.
    pub traceparent: Option<String>,
}

/// What a sync handler answered. JSON that does not parse is kept as its error: a refused
/// answer is reported on the parent, not a failed call.
#[derive(Debug)]
pub(crate) struct SyncAnswer {
    /// The handler's own error, if it failed.
    pub error: Option<String>,
    /// The parent's desired status (`None`: leave it).
    pub status: Result<Option<Value>, serde_json::Error>,
    /// The desired children, each as sent.
    pub children: Vec<Result<Value, serde_json::Error>>,
    /// Sync again after this long, if set and valid.
    pub resync_after: Option<Duration>,
}

/// What a finalize handler answered.
#[derive(Debug)]
pub(crate) struct FinalizeAnswer {
    /// The handler's own error, if it failed.
    pub error: Option<String>,
    /// The parent's status to write (`None`: leave it).
    pub status: Result<Option<Value>, serde_json::Error>,
    /// The parent may go.
    pub finalized: bool,
    /// Ask again after this long, if set and valid.
    pub resync_after: Option<Duration>,
}

/// A task to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskRequest {
    /// The registration.
    pub task_id: String,
    /// The task object.
    pub task: Value,
    /// Its parent.
    pub parent: Value,
    /// The first step to run (sequential tasks resumed after a restart).
    pub resume_from: u32,
    /// The steps done before.
    pub done_steps: Vec<StepRecord>,
    /// The attempt's id (the task's uid).
    pub attempt_id: String,
    /// W3C traceparent to propagate, if any.
    pub traceparent: Option<String>,
}

/// One message of a running task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskUpdate {
    /// A step finished.
    Step(StepRecord),
    /// The task ended.
    Finished {
        /// It succeeded.
        ok: bool,
        /// Its message.
        message: String,
    },
}

/// A running task's stream that broke.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TaskError {
    /// The call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// An update with neither a step nor the end.
    #[error("the handler sent an update with neither a step nor the end")]
    Empty,
    /// A step's result that is not JSON.
    #[error("the result of step {index} ({name:?}) is not JSON: {source}")]
    StepResult {
        /// The step's index.
        index: u32,
        /// The step's name.
        name: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// What a running task sends: its steps and its end; the stream ends after `Finished` (an end
/// without it is the handler's fault).
pub(crate) type TaskUpdates = BoxStream<'static, Result<TaskUpdate, TaskError>>;
