//! The read model: what the dashboard and `/api/v1/objects` show — every served object with each
//! handler's state — and a broadcast of changes for server-sent events.

use std::collections::BTreeMap;
use std::sync::RwLock;

use tokio::sync::broadcast;

pub use operon_dashboard::{HandlerView, ObjectView, Overview};

/// The read model shared by the core and the HTTP listener (dashboard and JSON API).
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

    /// Stores a view only when the object is not known yet.
    pub fn insert_if_absent(&self, view: ObjectView) {
        let known = self
            .objects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&view.key());
        if !known {
            self.upsert(view);
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
