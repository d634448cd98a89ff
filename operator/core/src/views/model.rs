//! The views the dashboard shows and `/api/v1/objects` serves: an object's phase, each handler's
//! state, the object page's details. Both the running core and `operon dashboard` build them
//! (see [`super::project`]); the dashboard only reads them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The phase of an object, as the dashboard and the JSON API name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectPhase {
    /// A handler failed permanently (`failed`).
    Failed,
    /// A handler is retrying (`retrying`).
    Retrying,
    /// A cycle is running (`in-progress`).
    InProgress,
    /// The deletion waits for the handlers (`deleting`).
    Deleting,
    /// Never handled yet (`pending`).
    Pending,
    /// Handled; nothing to do (`handled`).
    Handled,
}

impl ObjectPhase {
    /// Every phase, from the most to the least urgent (the list page sorts phases in this
    /// order).
    pub const ALL: [ObjectPhase; 6] = [
        ObjectPhase::Failed,
        ObjectPhase::Retrying,
        ObjectPhase::InProgress,
        ObjectPhase::Deleting,
        ObjectPhase::Pending,
        ObjectPhase::Handled,
    ];

    /// Its name on the wire and on the pages (`in-progress`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectPhase::Failed => "failed",
            ObjectPhase::Retrying => "retrying",
            ObjectPhase::InProgress => "in-progress",
            ObjectPhase::Deleting => "deleting",
            ObjectPhase::Pending => "pending",
            ObjectPhase::Handled => "handled",
        }
    }

    /// Its rank by urgency: its place in [`ObjectPhase::ALL`].
    pub const fn rank(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ObjectPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one handler on one object, as the dashboard and the JSON API name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerStatus {
    /// Failed permanently (`failed`).
    Failed,
    /// Failed temporarily, or asked to be called again later (`retrying`).
    Retrying,
    /// Not called yet, or waiting for its sub-handlers (`pending`).
    Pending,
    /// Succeeded (`succeeded`).
    Succeeded,
}

impl HandlerStatus {
    /// Every state, from the most to the least urgent.
    pub const ALL: [HandlerStatus; 4] = [
        HandlerStatus::Failed,
        HandlerStatus::Retrying,
        HandlerStatus::Pending,
        HandlerStatus::Succeeded,
    ];

    /// Its name on the wire and on the pages.
    pub const fn as_str(self) -> &'static str {
        match self {
            HandlerStatus::Failed => "failed",
            HandlerStatus::Retrying => "retrying",
            HandlerStatus::Pending => "pending",
            HandlerStatus::Succeeded => "succeeded",
        }
    }

    /// Finished: succeeded or failed permanently.
    pub const fn is_final(self) -> bool {
        matches!(self, HandlerStatus::Succeeded | HandlerStatus::Failed)
    }
}

impl fmt::Display for HandlerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One handler's state on one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandlerView {
    /// Handler (or sub-handler) id; a sub-handler's id is its parent's id, `/`, its own.
    pub id: String,
    /// Its state.
    pub state: HandlerStatus,
    /// Attempts so far.
    pub retries: u32,
    /// First attempt (RFC 3339).
    pub started: Option<String>,
    /// Next attempt, when retrying (RFC 3339).
    pub delayed: Option<String>,
    /// Last error text.
    pub message: Option<String>,
    /// The trace id of the last attempt, if traced.
    pub trace_id: Option<String>,
}

/// One object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectView {
    /// `plural.group/version`.
    pub resource: String,
    /// Namespace (empty for cluster-wide objects).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Its phase.
    pub phase: ObjectPhase,
    /// The last cycle's cause (`create`, `update`, `delete`, `resume`, `noop`…).
    pub cause: String,
    /// Handlers of the current (or last) cycle.
    pub handlers: Vec<HandlerView>,
    /// When this view last changed (RFC 3339).
    pub updated: String,
}

impl ObjectView {
    /// The object's key in a read model: `resource/namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.resource, self.namespace, self.name)
    }
}

/// Figures about the core as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overview {
    /// Objects waiting for a worker.
    pub queue_depth: i64,
    /// Handler calls in flight.
    pub inflight_calls: i64,
}

/// One Kubernetes Event about an object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventView {
    /// When it last happened (RFC 3339).
    pub time: String,
    /// `Normal`, `Warning` (Kopf also posts `Error`).
    #[serde(rename = "type")]
    pub type_: String,
    /// The reason (`Logging`, `HandlerFailed`, …).
    pub reason: String,
    /// The message.
    pub message: String,
    /// How many times it happened.
    pub count: u32,
}

/// One difference between the last handled state of an object and its state now (a Kopf diff
/// item), with the values as compact JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffView {
    /// `add`, `change` or `remove`.
    pub op: String,
    /// The dotted field path (`spec.replicas`); empty for the whole object.
    pub path: String,
    /// The value before, as JSON.
    pub old: Option<String>,
    /// The value after, as JSON.
    pub new: Option<String>,
}

/// How one attempt of a handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptOutcome {
    /// It succeeded (`succeeded`).
    Succeeded,
    /// It failed temporarily and is retried after a delay (`retrying`).
    Retrying,
    /// It failed permanently (`failed`).
    Failed,
    /// It waits for its sub-handlers (`waiting`).
    Waiting,
    /// Its filters did not match after all: not an attempt of the handler (`not-matched`).
    NotMatched,
    /// A daemon stopped on request: its object went, its filters no longer match, or the core
    /// stops (`stopped`).
    Stopped,
}

impl AttemptOutcome {
    /// Its name on the wire and on the pages.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Waiting => "waiting",
            AttemptOutcome::NotMatched => "not-matched",
            AttemptOutcome::Stopped => "stopped",
        }
    }

    /// The outcome of a call that left the handler at `outcome`.
    pub const fn of(outcome: &crate::outcome::Outcome) -> Self {
        use crate::outcome::Outcome;
        match outcome {
            Outcome::Succeeded { .. } => AttemptOutcome::Succeeded,
            Outcome::Failed { .. } => AttemptOutcome::Failed,
            Outcome::Retry { .. } => AttemptOutcome::Retrying,
            Outcome::Pending { .. } => AttemptOutcome::Waiting,
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of a handler, as the core measured it (and traced it, when tracing is on).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AttemptView {
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// When the call started (RFC 3339).
    pub started: Option<String>,
    /// When the call ended (RFC 3339); `None` while it runs.
    pub stopped: Option<String>,
    /// How it ended; `None` while it runs.
    pub outcome: Option<AttemptOutcome>,
    /// Seconds until the next attempt, when it is retried.
    pub delay: Option<f64>,
    /// Why it failed or waits (the handler's message).
    pub message: Option<String>,
    /// Its OpenTelemetry trace id (32 hex digits), when traced.
    pub trace_id: Option<String>,
}

/// What only a handler's row on the object page shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HandlerDetails {
    /// When the outcome became final (RFC 3339): the page shows the duration.
    pub stopped: Option<String>,
    /// The reason of the cycle that created the record (`create`, `update`, …).
    pub purpose: Option<String>,
    /// The last attempts the core made, oldest first (without them, the page links the last
    /// attempt's trace from [`HandlerView::trace_id`]).
    pub attempts: Vec<AttemptView>,
}

/// What the last sync of a parent did with one of its desired (or no longer desired) children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChildAction {
    /// Created or updated by this sync (`applied`).
    Applied,
    /// Desired and already as desired, or left alone by the strategy (`unchanged`).
    Unchanged,
    /// Held back: waiting for the shutdown hook or a rollout, or its write failed (`pending`).
    Pending,
    /// Deleted: no longer desired (`deleted`).
    Deleted,
}

impl ChildAction {
    /// Its name on the wire and on the pages.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChildAction::Applied => "applied",
            ChildAction::Unchanged => "unchanged",
            ChildAction::Pending => "pending",
            ChildAction::Deleted => "deleted",
        }
    }
}

/// One child of a sync parent, as its last sync left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildView {
    /// Its kind.
    pub kind: String,
    /// Its namespace (empty for cluster-wide children).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What the sync did.
    pub action: ChildAction,
}

/// A rolling update of one child type of a sync parent, in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutView {
    /// The child type's kind.
    pub kind: String,
    /// Desired children of the type that are already as desired.
    pub current: usize,
    /// Desired children of the type.
    pub total: usize,
    /// The child being rolled now and what it waits for (`web-1: recreated, waiting for the
    /// new one`); `None` between two children.
    pub rolling: Option<String>,
}

/// What only an object's own page shows; every part may be empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ObjectDetails {
    /// What changed since the object was last handled (never filled for Secrets).
    pub diff: Vec<DiffView>,
    /// Recent Kubernetes Events about the object, newest first.
    pub events: Vec<EventView>,
    /// Per handler id.
    pub handlers: BTreeMap<String, HandlerDetails>,
    /// A sync parent's children as its last sync left them.
    pub children: Vec<ChildView>,
    /// A sync parent's rolling updates in progress, one per child type.
    pub rollouts: Vec<RolloutView>,
    /// A parent's tasks in the order its FIFO runs them: running, then queued, then finished
    /// (newest first).
    pub tasks: Vec<TaskView>,
    /// The daemons and timers running for the object.
    pub runs: Vec<RunView>,
}

/// What runs for an object besides its handling cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// A daemon: one long-running call, restarted after an error (`daemon`).
    Daemon,
    /// A timer: a call every interval (`timer`).
    Timer,
}

/// A daemon or timer running for an object, as its page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunView {
    /// The handler's id.
    pub handler: String,
    /// A daemon or a timer.
    pub kind: RunKind,
    /// When the core started it for the object (RFC 3339).
    pub since: String,
    /// A call is in flight.
    pub calling: bool,
    /// Calls so far.
    pub calls: u32,
    /// Calls that restarted it after an error (a daemon's restarts, a timer's retries).
    pub restarts: u32,
    /// When the last call ended (RFC 3339).
    pub last_exit: Option<String>,
    /// How the last call ended.
    pub last_outcome: Option<AttemptOutcome>,
    /// Why (the handler's message or the call's error).
    pub last_message: Option<String>,
    /// A timer's next call (RFC 3339).
    pub next: Option<String>,
}

/// Where a task of a parent stands, as the parent's page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// The handler runs it (`running`).
    Running,
    /// Queued behind the parent's other work (`queued`).
    Queued,
    /// Finished successfully (`succeeded`).
    Succeeded,
    /// Finished unsuccessfully, or the core could not run it (`failed`).
    Failed,
    /// Deleted while it ran (`cancelled`).
    Cancelled,
}

impl TaskState {
    /// Its name on the wire and on the pages.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Queued => "queued",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// One task of a parent, as the parent's page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskView {
    /// The task's resource (`plural.group/version`), for the link to its own page.
    pub resource: String,
    /// Its namespace (empty for cluster-wide tasks).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its registration's id.
    pub task: String,
    /// Where it stands.
    pub state: TaskState,
    /// Its place in the parent's queue (1: runs next), when queued.
    pub place: Option<u32>,
    /// Its steps finished so far (as its status records them).
    pub steps: u32,
    /// How many of them failed.
    pub failed_steps: u32,
    /// When it started (RFC 3339).
    pub started: Option<String>,
    /// Its status message.
    pub message: Option<String>,
}

/// Where a read model's data comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The running core (`operon run`): it knows its queue and calls.
    #[default]
    Core,
    /// The objects' annotations, watched by `operon dashboard`: no queue, no calls.
    Cluster,
}

/// A handler service, as the core sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceView {
    /// Its address.
    pub name: String,
    /// Whether it answered the last call.
    pub answering: bool,
    /// How many handlers it serves.
    pub handlers: usize,
    /// The name it gives itself in its manifest.
    pub service_name: String,
    /// The contract revision it speaks.
    pub contract_revision: u32,
    /// Whether the core reaches it over TLS (`https://`).
    pub tls: bool,
    /// Why its last `Describe` failed, when it did.
    pub last_error: Option<String>,
}

/// Facts about the model as a whole, for the overview.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct About {
    /// Where the data comes from.
    pub source: Source,
    /// The served resources (`plural.group/version`), also those without objects.
    pub resources: Vec<String>,
    /// The handler services.
    pub services: Vec<ServiceView>,
    /// This replica's part when several run (leader election, Kopf's peering): "leader",
    /// "standby (…)", "paused (…)"; `None` when it runs standalone.
    pub role: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_states_serialize_to_their_names() {
        for phase in ObjectPhase::ALL {
            assert_eq!(
                serde_json::to_value(phase).unwrap(),
                serde_json::json!(phase.as_str())
            );
            assert_eq!(phase.to_string(), phase.as_str());
            assert_eq!(ObjectPhase::ALL[phase.rank()], phase);
        }
        let names: Vec<&str> = ObjectPhase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "failed",
                "retrying",
                "in-progress",
                "deleting",
                "pending",
                "handled"
            ]
        );
        for state in HandlerStatus::ALL {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
            assert_eq!(state.to_string(), state.as_str());
        }
        let names: Vec<&str> = HandlerStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["failed", "retrying", "pending", "succeeded"]);
    }

    #[test]
    fn views_serialize_as_the_api_serves_them() {
        let view = ObjectView {
            resource: "widgets.example.com/v1".into(),
            namespace: "ns".into(),
            name: "w".into(),
            uid: "u".into(),
            phase: ObjectPhase::InProgress,
            cause: "create".into(),
            handlers: vec![HandlerView {
                id: "h".into(),
                state: HandlerStatus::Retrying,
                retries: 1,
                started: None,
                delayed: None,
                message: None,
                trace_id: None,
            }],
            updated: "2026-01-02T03:04:05Z".into(),
        };
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"resource":"widgets.example.com/v1","namespace":"ns","name":"w","uid":"u","phase":"in-progress","cause":"create","handlers":[{"id":"h","state":"retrying","retries":1,"started":null,"delayed":null,"message":null,"trace_id":null}],"updated":"2026-01-02T03:04:05Z"}"#
        );
    }
}
