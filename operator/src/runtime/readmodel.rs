//! The read model: what the dashboard and `/api/v1/objects` show — every served object with each
//! handler's state — and a broadcast of changes for server-sent events.

use std::collections::BTreeMap;
use std::sync::RwLock;

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
    /// The key in the model.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.resource, self.namespace, self.name)
    }
}

/// The read model shared by the core and the HTTP listener.
#[derive(Debug)]
pub struct ReadModel {
    objects: RwLock<BTreeMap<String, ObjectView>>,
    changes: broadcast::Sender<String>,
}

impl Default for ReadModel {
    fn default() -> Self {
        ReadModel {
            objects: RwLock::default(),
            changes: broadcast::channel(1024).0,
        }
    }
}

impl ReadModel {
    /// Stores a view and announces it (as JSON) when it changed.
    pub fn upsert(&self, view: ObjectView) {
        let key = view.key();
        let mut objects = self
            .objects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = objects.get(&key).is_some_and(|old| {
            old.phase == view.phase && old.handlers == view.handlers && old.cause == view.cause
        });
        if !same {
            let json = serde_json::json!({"type": "upsert", "object": &view}).to_string();
            objects.insert(key, view);
            let _ = self.changes.send(json);
        }
    }

    /// Forgets an object that is gone.
    pub fn remove(&self, resource: &str, namespace: &str, name: &str) {
        let key = format!("{resource}/{namespace}/{name}");
        let removed = self
            .objects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        if removed.is_some() {
            let json = serde_json::json!({"type": "remove", "key": key}).to_string();
            let _ = self.changes.send(json);
        }
    }

    /// Every object, ordered by resource, namespace and name.
    pub fn objects(&self) -> Vec<ObjectView> {
        self.objects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// A stream of changes, as JSON lines.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }
}
