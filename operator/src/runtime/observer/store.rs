//! The read model of `operon dashboard`: what the watches observed, projected into views with
//! the Events about the objects and what was seen of their last cycles.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use operon_dashboard::{About, EventView, ObjectDetails, ObjectView, Overview, Source};
use tokio::sync::broadcast;

use crate::core::views::{LastCycle, Observed, view};
use crate::runtime::kit::LockedRw;

/// Events kept per object (the newest).
const EVENTS_PER_OBJECT: usize = 20;

#[derive(Debug, Default)]
struct State {
    observed: HashMap<String, Observed>,
    cycles: HashMap<String, LastCycle>,
    views: BTreeMap<String, (Arc<ObjectView>, ObjectDetails)>,
    keys_by_uid: HashMap<String, String>,
    /// Per object uid: `(event id, event)`, newest first.
    events: HashMap<String, Vec<(String, EventView)>>,
}

impl State {
    fn events_of(&self, uid: &str) -> Vec<EventView> {
        self.events
            .get(uid)
            .map(|list| list.iter().map(|(_, e)| e.clone()).collect())
            .unwrap_or_default()
    }
}

/// The read model of `operon dashboard`: what the watches observed, with the Events.
#[derive(Debug)]
pub(crate) struct Store {
    state: RwLock<State>,
    changes: broadcast::Sender<String>,
    resources: RwLock<Vec<String>>,
    watches_total: AtomicUsize,
    watches_listed: AtomicUsize,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            state: RwLock::default(),
            changes: broadcast::channel(1024).0,
            resources: RwLock::default(),
            watches_total: AtomicUsize::new(usize::MAX),
            watches_listed: AtomicUsize::new(0),
        }
    }
}

impl Store {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write_locked()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read_locked()
    }

    /// Recomputes the view of `key` and announces it if it changed.
    fn refresh(&self, state: &mut State, key: &str) {
        let Some(observed) = state.observed.get(key) else {
            return;
        };
        let last = state.cycles.get(key).cloned().unwrap_or_default();
        let (fresh, details) = view(observed, &last, &state.events_of(&observed.uid));
        let same = state
            .views
            .get(key)
            .is_some_and(|(v, d)| **v == fresh && *d == details);
        if !same {
            let json = serde_json::json!({"type": "upsert", "object": &fresh}).to_string();
            state
                .views
                .insert(key.to_owned(), (Arc::new(fresh), details));
            let _ = self.changes.send(json);
        }
    }

    /// Stores what an object's annotations say.
    pub(crate) fn apply(&self, observed: Observed) {
        let key = observed.key();
        let mut state = self.write();
        if let Some(old) = state.observed.get(&key)
            && old.uid != observed.uid
        {
            let old_uid = old.uid.clone();
            state.keys_by_uid.remove(&old_uid);
            state.events.remove(&old_uid);
            state.cycles.remove(&key);
        }
        let last = state
            .cycles
            .remove(&key)
            .unwrap_or_default()
            .after(&observed);
        state.cycles.insert(key.clone(), last);
        state.keys_by_uid.insert(observed.uid.clone(), key.clone());
        state.observed.insert(key.clone(), observed);
        self.refresh(&mut state, &key);
    }

    /// Forgets an object that is gone.
    pub(crate) fn remove(&self, key: &str) {
        let mut state = self.write();
        if let Some(observed) = state.observed.remove(key) {
            state.keys_by_uid.remove(&observed.uid);
            state.events.remove(&observed.uid);
        }
        state.cycles.remove(key);
        if state.views.remove(key).is_some() {
            let json = serde_json::json!({"type": "remove", "key": key}).to_string();
            let _ = self.changes.send(json);
        }
    }

    /// Forgets the objects of `resource` in `namespace` (all when `None`) that are not in
    /// `listed`: they went while the watch was away.
    pub(crate) fn sweep(&self, resource: &str, namespace: Option<&str>, listed: &HashSet<String>) {
        let gone: Vec<String> = self
            .read()
            .observed
            .values()
            .filter(|o| o.resource == resource)
            .filter(|o| namespace.is_none_or(|ns| o.namespace == ns))
            .map(Observed::key)
            .filter(|k| !listed.contains(k))
            .collect();
        for key in gone {
            self.remove(&key);
        }
    }

    /// Stores (or replaces) an Event about the object with `uid`.
    pub(crate) fn event(&self, uid: &str, id: &str, event: EventView) {
        let mut state = self.write();
        let list = state.events.entry(uid.to_owned()).or_default();
        list.retain(|(known, _)| known != id);
        let at = list
            .iter()
            .position(|(_, e)| e.time <= event.time)
            .unwrap_or(list.len());
        list.insert(at, (id.to_owned(), event));
        list.truncate(EVENTS_PER_OBJECT);
        if let Some(key) = state.keys_by_uid.get(uid).cloned() {
            self.refresh(&mut state, &key);
        }
    }

    /// Forgets an Event (it expired).
    pub(crate) fn forget_event(&self, uid: &str, id: &str) {
        let mut state = self.write();
        if let Some(list) = state.events.get_mut(uid) {
            list.retain(|(known, _)| known != id);
            if list.is_empty() {
                state.events.remove(uid);
            }
        }
        if let Some(key) = state.keys_by_uid.get(uid).cloned() {
            self.refresh(&mut state, &key);
        }
    }

    /// Every watch has listed once.
    pub(crate) fn ready(&self) -> bool {
        self.watches_listed.load(Ordering::Relaxed) >= self.watches_total.load(Ordering::Relaxed)
    }

    /// The served resources (`plural.group/version`), also those without objects.
    pub(crate) fn set_resources(&self, resources: Vec<String>) {
        *self.resources.write_locked() = resources;
    }

    /// How many watches must list once before the store is ready.
    pub(crate) fn expect_watches(&self, watches: usize) {
        self.watches_total.store(watches, Ordering::Relaxed);
    }

    /// One more watch has listed once.
    pub(crate) fn listed_once(&self) {
        self.watches_listed.fetch_add(1, Ordering::Relaxed);
    }
}

impl operon_dashboard::ReadModel for Store {
    fn objects(&self) -> Vec<Arc<ObjectView>> {
        self.read()
            .views
            .values()
            .map(|(v, _)| Arc::clone(v))
            .collect()
    }

    fn overview(&self) -> Overview {
        Overview::default()
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn object(&self, key: &str) -> Option<Arc<ObjectView>> {
        self.read().views.get(key).map(|(v, _)| Arc::clone(v))
    }

    fn details(&self, key: &str) -> ObjectDetails {
        self.read()
            .views
            .get(key)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    }

    fn about(&self) -> About {
        let mut about = About::default();
        about.source = Source::Cluster;
        about.resources = self.resources.read_locked().clone();
        about
    }
}
