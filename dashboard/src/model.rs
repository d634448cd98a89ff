//! The read model the dashboard shows: every watched object with each handler's progress. The
//! core fills it as it handles objects; `operon dashboard` fills it from the objects' Kopf-format
//! annotations. Pages read it through [`ReadModel`], never the API server.

use serde::Serialize;
use tokio::sync::broadcast;

/// One handler's state on one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandlerView {
    /// Handler (or sub-handler) id.
    pub id: String,
    /// `pending`, `retrying`, `succeeded` or `failed`.
    pub state: &'static str,
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
    /// `handled`, `in-progress`, `retrying`, `failed` or `deleting`.
    pub phase: &'static str,
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

/// What the dashboard reads.
pub trait ReadModel: Send + Sync + 'static {
    /// Every object, ordered by resource, namespace and name.
    fn objects(&self) -> Vec<ObjectView>;
    /// Figures about the core.
    fn overview(&self) -> Overview;
    /// Changes as JSON lines (`{"type":"upsert","object":…}` or `{"type":"remove","key":…}`).
    fn subscribe(&self) -> broadcast::Receiver<String>;
}
