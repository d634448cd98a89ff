//! What goes to a handler service and comes back: one call of a handler, its answer, a daemon's
//! messages, an admission call, the credentials of a login.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::core::model::Reason;
use crate::core::outcome::CallResult;

/// The resource as resolved by the core, as handlers get it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ResolvedResource {
    /// API group; empty for the core group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural.
    pub plural: String,
    /// Kind.
    pub kind: String,
    /// Namespaced (vs. cluster-wide).
    pub namespaced: bool,
}

/// The record of a sub-handler as sent back to its parent's next call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubRecord {
    /// Full id (`parent/sub`).
    pub id: String,
    /// First attempt.
    pub started: Option<jiff::Timestamp>,
    /// Attempts so far.
    pub retries: u32,
    /// Finished successfully.
    pub success: bool,
    /// Finished with a failure.
    pub failure: bool,
    /// Last error text.
    pub message: Option<String>,
    /// Sleeping until.
    pub delayed: Option<jiff::Timestamp>,
}

/// One call of one handler.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    /// The handler.
    pub handler_id: String,
    /// The cycle's reason (`None` for event handlers).
    pub reason: Option<Reason>,
    /// The whole object (shared: a cycle hands the body it holds to every call without copying).
    pub body: Arc<Value>,
    /// Old and new essence and their diff.
    pub old: Option<Value>,
    /// See `old`.
    pub new: Option<Value>,
    /// Kopf's diff form.
    pub diff: Value,
    /// Attempts so far.
    pub retry: u32,
    /// First attempt.
    pub started: Option<jiff::Timestamp>,
    /// Sub-handler records.
    pub subhandlers: Vec<SubRecord>,
    /// Raw watch event type, for event handlers.
    pub event_type: String,
    /// Stable id of this attempt across restarts.
    pub attempt_id: String,
    /// The call's deadline.
    pub deadline: Duration,
    /// W3C traceparent to propagate, if any.
    pub traceparent: Option<String>,
    /// The resource as resolved by the core.
    pub resource: Option<ResolvedResource>,
}

impl Call {
    /// A call of `handler_id` about `body` with no cause of its own (a raw event, a timer's
    /// tick, an index event, a filter check): no reason, no essences, no retries, no trace;
    /// set what differs with struct-update syntax.
    pub(crate) fn about(
        handler_id: &str,
        body: Arc<Value>,
        deadline: Duration,
        resource: ResolvedResource,
    ) -> Self {
        Call {
            handler_id: handler_id.to_owned(),
            reason: None,
            body,
            old: None,
            new: None,
            diff: Value::Array(Vec::new()),
            retry: 0,
            started: None,
            subhandlers: Vec::new(),
            event_type: String::new(),
            attempt_id: String::new(),
            deadline,
            traceparent: None,
            resource: Some(resource),
        }
    }
}

/// A validated answer to one Invoke.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    /// The handler's outcome; `None` means "not matched" (a callback filter said no).
    pub result: Option<CallResult>,
    /// A merge patch for the object (a JSON object), if any.
    pub patch: Option<Value>,
    /// Sub-handler outcomes.
    pub subhandlers: Vec<SubAnswer>,
    /// Events to post.
    pub events: Vec<EventRequest>,
}

/// What sub-handlers did in their parent's call: plain data the core's decisions take as they are.
pub(crate) use crate::core::handling::{SubAnswer, SubResult};

/// An Event a handler asks the core to post.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventRequest {
    /// Normal, Warning or Error.
    pub type_: String,
    /// A CamelCase reason.
    pub reason: String,
    /// The text.
    pub message: String,
    /// Another object than the handled one, if any.
    pub involved_object: Option<Value>,
}

/// Why the core stops a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The object is being deleted or is gone.
    ResourceDeleted,
    /// The object no longer matches the daemon's filters.
    FiltersMismatch,
    /// The core stops or reloads its handlers.
    OperatorExiting,
}

/// What the core sends down an open daemon call after its start.
#[derive(Debug, Clone)]
pub(crate) enum DaemonInput {
    /// A newer version of the object.
    Body(Arc<Value>),
    /// Stop: gracefully (`force` false) or by cancelling the daemon.
    Stop {
        /// Why.
        reason: StopReason,
        /// Cancel rather than ask.
        force: bool,
    },
}

/// One message of a running daemon, validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DaemonOutput {
    /// A merge patch to apply now.
    pub patch: Option<Value>,
    /// Events to post.
    pub events: Vec<EventRequest>,
    /// The last message: how the daemon's function ended (`Some(None)`: a callback filter said
    /// no).
    pub exit: Option<Option<CallResult>>,
}

/// Credentials from a service's login handlers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Login {
    /// A kubeconfig, as JSON.
    pub kubeconfig_json: Vec<u8>,
    /// When the credentials expire, if they do.
    pub expiration: Option<jiff::Timestamp>,
}

/// One call of an admission handler about a review.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdmissionCall {
    /// The handler.
    pub handler_id: String,
    /// The object under review (the old one for a DELETE).
    pub body: Value,
    /// The old object, if any.
    pub old: Option<Value>,
    /// The new object, if any.
    pub new: Option<Value>,
    /// Kopf's diff of the two.
    pub diff: Value,
    /// The attempt's id.
    pub attempt_id: String,
    /// The resource reviewed.
    pub resource: ResolvedResource,
    /// The review's `request`.
    pub request: Value,
    /// The webhook request's HTTP headers.
    pub headers: HashMap<String, String>,
    /// The call's deadline.
    pub deadline: Duration,
}

/// An admission answer that breaks the contract.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdmissionAnswerError {
    /// No outcome.
    #[error("the answer has no outcome")]
    NoOutcome,
    /// A patch that is JSON but no object.
    #[error("the patch is not a JSON object")]
    PatchNotObject,
    /// A patch that is not JSON.
    #[error("the patch is not valid JSON: {0}")]
    BadPatch(#[source] serde_json::Error),
}

/// What an admission handler answered: its verdict (or why it breaks the contract) and its
/// Events (or why they do).
#[derive(Debug)]
pub(crate) struct AdmissionReply {
    /// The answer to the review.
    pub answer: Result<crate::core::admission::Answer, AdmissionAnswerError>,
    /// The Events the handler sent (`kopf.info()` & co. in a webhook).
    pub events: Result<Vec<EventRequest>, super::ContractError>,
}
