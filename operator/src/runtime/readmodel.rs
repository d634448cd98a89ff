//! The read model: what the dashboard and `/api/v1/objects` show — every served object with each
//! handler's state, the last attempts of the handlers of recently active objects ([`attempts`]) —
//! and a broadcast of changes for server-sent events.

pub(crate) mod attempts;
pub(crate) mod runs;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

pub(crate) use crate::core::views::{
    ChildView, DiffView, EventView, HandlerDetails, HandlerView, ObjectDetails, ObjectView,
    RolloutView, TaskView,
};

use crate::runtime::kit::LockedRw;
use attempts::Attempts;
use runs::Runs;

/// Events kept per object (the newest).
const EVENTS_PER_OBJECT: usize = 20;

/// A sync parent's children as its last sync left them, and its rolling updates.
type Children = (Vec<ChildView>, Vec<RolloutView>);

/// The read model shared by the core and the HTTP listener (dashboard and JSON API).
#[derive(Debug)]
pub(crate) struct ReadModel {
    objects: RwLock<BTreeMap<String, Arc<ObjectView>>>,
    /// Per object key: the last handling cycle's diff.
    diffs: RwLock<HashMap<String, Vec<DiffView>>>,
    /// Per sync parent's key: its children as its last sync left them, and its rollouts.
    children: RwLock<HashMap<String, Children>>,
    /// Per parent's key: its tasks, in the order its FIFO runs them (only parents with tasks).
    tasks: RwLock<HashMap<String, Vec<TaskView>>>,
    /// Per object uid: the Events the core posted about it, newest first.
    events: RwLock<HashMap<String, VecDeque<EventView>>>,
    /// Per recently active object and handler: the last attempts.
    pub attempts: Attempts,
    /// Per object: its daemons and timers running.
    pub runs: Arc<Runs>,
    changes: broadcast::Sender<String>,
}

impl Default for ReadModel {
    fn default() -> Self {
        let changes = broadcast::channel(1024).0;
        ReadModel {
            objects: RwLock::default(),
            diffs: RwLock::default(),
            children: RwLock::default(),
            tasks: RwLock::default(),
            events: RwLock::default(),
            attempts: Attempts::default(),
            runs: Arc::new(Runs::new(changes.clone())),
            changes,
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

    /// The read-model key of object `namespace`/`name` of `resource` (`plural.group/version`):
    /// [`ObjectView::key`].
    pub(crate) fn key(resource: &str, namespace: &str, name: &str) -> String {
        format!("{resource}/{namespace}/{name}")
    }

    /// Forgets an object that is gone.
    pub(crate) fn remove(&self, resource: &str, namespace: &str, name: &str) {
        let key = Self::key(resource, namespace, name);
        let removed = write(&self.objects).remove(&key);
        write(&self.diffs).remove(&key);
        write(&self.children).remove(&key);
        write(&self.tasks).remove(&key);
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

    /// Keeps a sync parent's children as its last sync left them, and its rolling updates
    /// (nothing is kept for a parent without either); announces a change (`{"type":"details",
    /// "key":…}`), so that the parent's open page follows.
    pub(crate) fn set_children(
        &self,
        key: String,
        children: Vec<ChildView>,
        rollouts: Vec<RolloutView>,
    ) {
        let empty = children.is_empty() && rollouts.is_empty();
        self.keep_details(&self.children, key, (children, rollouts), empty);
    }

    /// Keeps a parent's tasks in the order its FIFO runs them (nothing is kept for a parent
    /// without tasks); announces a change like [`ReadModel::set_children`].
    pub(crate) fn set_tasks(&self, key: String, tasks: Vec<TaskView>) {
        let empty = tasks.is_empty();
        self.keep_details(&self.tasks, key, tasks, empty);
    }

    /// Keeps `shown` at `key` in `map` (removes it when `empty`) and announces a change of the
    /// object's details, unless it was already so.
    fn keep_details<T: PartialEq>(
        &self,
        map: &RwLock<HashMap<String, T>>,
        key: String,
        shown: T,
        empty: bool,
    ) {
        let mut map = write(map);
        let same = match map.get(&key) {
            Some(old) => !empty && *old == shown,
            None => empty,
        };
        if same {
            return;
        }
        let json = serde_json::json!({"type": "details", "key": &key}).to_string();
        if empty {
            map.remove(&key);
        } else {
            map.insert(key, shown);
        }
        let _ = self.changes.send(json);
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
    /// posted, every handler's last attempts (when the object was active lately).
    pub(crate) fn details(&self, key: &str) -> ObjectDetails {
        let mut details = ObjectDetails::default();
        let Some(view) = self.object(key) else {
            return details;
        };
        details.diff = read(&self.diffs).get(key).cloned().unwrap_or_default();
        if let Some((children, rollouts)) = read(&self.children).get(key) {
            details.children.clone_from(children);
            details.rollouts.clone_from(rollouts);
        }
        details.runs = self.runs.of(key);
        if let Some(tasks) = read(&self.tasks).get(key) {
            details.tasks.clone_from(tasks);
        }
        details.events = read(&self.events)
            .get(&view.uid)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        // Every handler with attempts kept: the view's, and daemons, which it does not list.
        for (id, attempts) in self.attempts.all(&view.uid) {
            let finished = view
                .handlers
                .iter()
                .any(|h| h.id == id && h.state.is_final());
            let mut extra = HandlerDetails::default();
            extra.stopped = (attempts.last())
                .filter(|_| finished)
                .and_then(|a| a.stopped.clone());
            extra.attempts = attempts;
            details.handlers.insert(id, extra);
        }
        details
    }

    /// The key of the object one of whose kept attempts has this trace id.
    pub(crate) fn trace_object(&self, trace_id: &str) -> Option<String> {
        let uid = self.attempts.owner_of_trace(trace_id)?;
        read(&self.objects)
            .iter()
            .find(|(_, o)| o.uid == uid)
            .map(|(key, _)| key.clone())
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
        model
            .attempts
            .begin("u1", "h", 0, Some(cx), jiff::Timestamp::UNIX_EPOCH);

        let details = model.details(&key);
        assert_eq!(details.diff.len(), 1);
        assert_eq!(details.events.len(), EVENTS_PER_OBJECT);
        assert_eq!(
            details.events[0].reason,
            format!("R{}", EVENTS_PER_OBJECT + 4)
        );
        let attempts = &details.handlers["h"].attempts;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].trace_id, Some("07".repeat(16)));
        assert_eq!(model.trace_object(&"07".repeat(16)), Some(key.clone()));
        assert_eq!(model.trace_object(&"08".repeat(16)), None);
        assert!(Arc::ptr_eq(
            &model.objects()[0],
            &model.object(&key).unwrap()
        ));

        let mut changes = model.subscribe();
        let child = ChildView {
            kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: "c".into(),
            action: crate::core::views::ChildAction::Applied,
        };
        model.set_children(key.clone(), vec![child.clone()], Vec::new());
        assert_eq!(model.details(&key).children, std::slice::from_ref(&child));
        assert!(changes.try_recv().unwrap().contains(r#""type":"details""#));
        model.set_children(key.clone(), vec![child], Vec::new());
        assert!(changes.try_recv().is_err(), "no change, no announcement");

        model.remove("widgets.example.com/v1", "ns", "w");
        assert_eq!(model.details(&key), ObjectDetails::default());
        assert!(model.attempts.of("u1", "h").is_empty());
    }
}
