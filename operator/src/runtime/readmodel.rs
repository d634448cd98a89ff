//! The read model: what the dashboard and `/api/v1/objects` show — every served object with each
//! handler's state — and a broadcast of changes for server-sent events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

pub(crate) use crate::core::views::{
    AttemptView, DiffView, EventView, HandlerDetails, HandlerView, ObjectDetails, ObjectView,
};

use crate::runtime::kit::LockedRw;
use crate::telemetry::Attempts;

/// Events kept per object (the newest).
const EVENTS_PER_OBJECT: usize = 20;

/// The read model shared by the core and the HTTP listener (dashboard and JSON API).
#[derive(Debug)]
pub(crate) struct ReadModel {
    objects: RwLock<BTreeMap<String, Arc<ObjectView>>>,
    /// Per object key: the last handling cycle's diff.
    diffs: RwLock<HashMap<String, Vec<DiffView>>>,
    /// Per object uid: the Events the core posted about it, newest first.
    events: RwLock<HashMap<String, VecDeque<EventView>>>,
    /// Per object uid and handler: the traced attempts.
    pub attempts: Attempts,
    changes: broadcast::Sender<String>,
}

impl Default for ReadModel {
    fn default() -> Self {
        ReadModel {
            objects: RwLock::default(),
            diffs: RwLock::default(),
            events: RwLock::default(),
            attempts: Attempts::default(),
            changes: broadcast::channel(1024).0,
        }
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write_locked()
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read_locked()
}

impl ReadModel {
    /// Stores a view and announces it (as JSON) when it changed.
    pub(crate) fn upsert(&self, view: ObjectView) {
        let key = view.key();
        let mut objects = write(&self.objects);
        let same = objects.get(&key).is_some_and(|old| {
            old.phase == view.phase && old.handlers == view.handlers && old.cause == view.cause
        });
        if !same {
            let json = serde_json::json!({"type": "upsert", "object": &view}).to_string();
            objects.insert(key, Arc::new(view));
            let _ = self.changes.send(json);
        }
    }

    /// Stores a view only when the object is not known yet.
    pub(crate) fn insert_if_absent(&self, view: ObjectView) {
        let known = read(&self.objects).contains_key(&view.key());
        if !known {
            self.upsert(view);
        }
    }

    /// Forgets an object that is gone.
    pub(crate) fn remove(&self, resource: &str, namespace: &str, name: &str) {
        let key = format!("{resource}/{namespace}/{name}");
        let removed = write(&self.objects).remove(&key);
        write(&self.diffs).remove(&key);
        if let Some(view) = removed {
            write(&self.events).remove(&view.uid);
            self.attempts.forget(&view.uid);
            let json = serde_json::json!({"type": "remove", "key": key}).to_string();
            let _ = self.changes.send(json);
        }
    }

    /// Every object, ordered by resource, namespace and name (shared, not copied).
    pub(crate) fn objects(&self) -> Vec<Arc<ObjectView>> {
        read(&self.objects).values().cloned().collect()
    }

    /// One object by its key.
    pub(crate) fn object(&self, key: &str) -> Option<Arc<ObjectView>> {
        read(&self.objects).get(key).cloned()
    }

    /// Keeps the diff of an object's last handling cycle.
    pub(crate) fn set_diff(&self, key: String, diff: Vec<DiffView>) {
        write(&self.diffs).insert(key, diff);
    }

    /// Keeps an Event posted about the object with this uid.
    pub(crate) fn add_event(&self, uid: &str, event: EventView) {
        if uid.is_empty() {
            return;
        }
        let mut events = write(&self.events);
        let list = events.entry(uid.to_owned()).or_default();
        list.push_front(event);
        list.truncate(EVENTS_PER_OBJECT);
    }

    /// What the object's page shows besides its view: the last cycle's diff, the Events the core
    /// posted, every handler's traced attempts.
    pub(crate) fn details(&self, key: &str) -> ObjectDetails {
        let mut details = ObjectDetails::default();
        let Some(view) = self.object(key) else {
            return details;
        };
        details.diff = read(&self.diffs).get(key).cloned().unwrap_or_default();
        details.events = read(&self.events)
            .get(&view.uid)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        for h in &view.handlers {
            let attempts = self.attempts.of(&view.uid, &h.id);
            if attempts.is_empty() {
                continue;
            }
            let mut extra = HandlerDetails::default();
            extra.attempts = attempts
                .into_iter()
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    started: Some(a.started),
                    trace_id: a.trace_id,
                })
                .collect();
            details.handlers.insert(h.id.clone(), extra);
        }
        details
    }

    /// A stream of changes, as JSON lines.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::views::{HandlerStatus, ObjectPhase};
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn view(uid: &str) -> ObjectView {
        ObjectView {
            resource: "widgets.example.com/v1".into(),
            namespace: "ns".into(),
            name: "w".into(),
            uid: uid.into(),
            phase: ObjectPhase::Retrying,
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
            updated: String::new(),
        }
    }

    fn event(reason: &str) -> EventView {
        EventView {
            reason: reason.into(),
            ..EventView::default()
        }
    }

    #[test]
    fn details_gather_the_diff_the_events_and_the_traced_attempts() {
        let model = ReadModel::default();
        let key = view("u1").key();
        model.upsert(view("u1"));
        model.set_diff(
            key.clone(),
            vec![DiffView {
                op: "add".into(),
                path: String::new(),
                old: None,
                new: Some("{}".into()),
            }],
        );
        for n in 0..(EVENTS_PER_OBJECT + 5) {
            model.add_event("u1", event(&format!("R{n}")));
        }
        model.add_event("other", event("elsewhere"));
        let cx = SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([7; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        model.attempts.record("u1", "h", 0, cx);

        let details = model.details(&key);
        assert_eq!(details.diff.len(), 1);
        assert_eq!(details.events.len(), EVENTS_PER_OBJECT);
        assert_eq!(
            details.events[0].reason,
            format!("R{}", EVENTS_PER_OBJECT + 4)
        );
        let attempts = &details.handlers["h"].attempts;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].trace_id, "07".repeat(16));
        assert!(Arc::ptr_eq(
            &model.objects()[0],
            &model.object(&key).unwrap()
        ));

        model.remove("widgets.example.com/v1", "ns", "w");
        assert_eq!(model.details(&key), ObjectDetails::default());
        assert!(model.attempts.of("u1", "h").is_empty());
    }
}
