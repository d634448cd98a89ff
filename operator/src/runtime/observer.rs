//! `operon dashboard`: the dashboard alone, filled from the cluster instead of a running core.
//!
//! It lists and watches the given resources and reads each object's Kopf-format annotations —
//! the diff-base and one progress record per handler, found by scanning the annotation keys under
//! the prefix — plus the Kubernetes Events about the objects. So it shows the progress of any
//! operator that persists in Kopf's format: Operon, and Kopf itself.
//!
//! What an object's annotations say is decided by pure functions ([`observe`], then [`view`] with
//! the object's Events); [`Store`] keeps the results as the dashboard's read model; [`run`] wires
//! the watches and the HTTP listener.
//!
//! # Caveats
//! Kopf (and Operon) purge the progress records when a cycle ends, also after a permanent
//! failure. What a finished cycle did is known from what was seen while it ran ([`LastCycle`]:
//! Kopf writes each handler's outcome in a patch of its own), else from the Events posted about
//! it (`Handler 'x' failed permanently: …`: Operon posts them for errors; Kopf 1.45 only with
//! `settings.posting.loggers = True`), which expire (one hour by default). A handler whose final
//! outcome is written in the same patch that purges the records, after a restart of `operon
//! dashboard` or without such Events, shows as handled.

use crate::runtime::kit::LockedRw;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use operon_dashboard::{
    About, DiffView, EventView, HandlerDetails, HandlerView, ObjectDetails, ObjectView, Overview,
    Source,
};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::core::finalizer::deletion_ongoing;
use crate::core::persistence::keys::{
    self, LAST_HANDLED_CONFIGURATION_KEY, REPLICASET_OF_DEPLOYMENT_MARK, TOUCH_DUMMY_KEY,
};
use crate::core::persistence::{
    DiffBaseStorage, FieldPath, KeyConvention, ProgressRecord, ProgressStorage, diff,
};
use crate::core::selectors::Selector;
use crate::runtime::discovery::{self, Served};

/// Events kept per object (the newest).
const EVENTS_PER_OBJECT: usize = 20;
/// Characters of a diff value shown at most.
const DIFF_VALUE_CHARS: usize = 2000;
/// Extra fields guessed from a diff-base at most (see [`extra_fields`]).
const EXTRA_FIELDS: usize = 64;

/// What `operon dashboard` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The resources to show, kubectl-style (see [`parse_selector`]).
    pub resources: Vec<Selector>,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The annotation prefix (Kopf's `kopf.zalando.org`).
    pub prefix: String,
    /// The dashboard's options (token, Jaeger UI).
    pub dashboard: operon_dashboard::Options,
}

/// A failure that stops `operon dashboard`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes configuration could not be loaded.
    #[error("cannot load the Kubernetes configuration")]
    KubeConfig(#[source] kube::config::InferConfigError),
    /// No client could be built from the configuration.
    #[error("cannot connect to Kubernetes")]
    Kube(#[source] kube::Error),
    /// The annotation prefix is invalid.
    #[error("invalid --prefix: {0}")]
    Prefix(String),
    /// A `--resource` cannot be read.
    #[error(
        "invalid --resource {0:?}: expected PLURAL[.GROUP], VERSION/PLURAL or GROUP/VERSION/PLURAL"
    )]
    Resource(String),
    /// The HTTP listener failed.
    #[error(transparent)]
    Http(#[from] crate::http::Error),
}

/// Reads a kubectl-style resource: `GROUP/VERSION/PLURAL`, `VERSION/PLURAL` (core group),
/// `PLURAL.GROUP`, `PLURAL.VERSION.GROUP` or a bare plural, singular, kind or short name.
///
/// # Errors
/// [`Error::Resource`] for empty parts or more than three `/`-separated parts.
pub fn parse_selector(text: &str) -> Result<Selector, Error> {
    let bad = || Error::Resource(text.to_owned());
    let parts: Vec<&str> = text.trim().split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let selector = |group: &str, version: &str, name: &str| Selector {
        group: group.to_owned(),
        version: version.to_owned(),
        name: name.to_owned(),
    };
    match parts.as_slice() {
        [group, version, name] => Ok(selector(group, version, name)),
        [version, name] => Ok(selector("", version, name)),
        [dotted] => match dotted.split_once('.') {
            None => Ok(selector("", "", dotted)),
            Some((name, rest)) => match rest.split_once('.') {
                Some((version, group)) if looks_like_version(version) => {
                    Ok(selector(group, version, name))
                }
                _ => Ok(selector(rest, "", name)),
            },
        },
        _ => Err(bad()),
    }
}

fn looks_like_version(text: &str) -> bool {
    text.strip_prefix('v')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

// ---- pure: what an object's annotations say ---------------------------------------------------

/// The storages to read, under one prefix.
#[derive(Debug, Clone)]
pub struct Storages {
    /// The prefix and key forms of the annotations.
    pub convention: KeyConvention,
    /// Progress records.
    pub progress: ProgressStorage,
    /// The diff-base.
    pub diffbase: DiffBaseStorage,
}

impl Storages {
    /// Kopf's storages under `prefix`.
    ///
    /// # Errors
    /// [`Error::Prefix`] for an empty prefix.
    pub fn new(prefix: &str) -> Result<Self, Error> {
        let convention =
            KeyConvention::new(prefix, true).map_err(|e| Error::Prefix(e.to_string()))?;
        Ok(Storages {
            convention: convention.clone(),
            progress: ProgressStorage::new(convention.clone()),
            diffbase: DiffBaseStorage::new(convention, LAST_HANDLED_CONFIGURATION_KEY),
        })
    }
}

/// What one object's annotations say, before its Events are taken into account.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// `plural.group/version`.
    pub resource: String,
    /// Namespace (empty when cluster-wide).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// A diff-base is stored: the object was handled at least once.
    pub has_diffbase: bool,
    /// One view per progress record (sub-handlers included), by id.
    pub handlers: Vec<HandlerView>,
    /// Per handler id: stop time and purpose.
    pub details: BTreeMap<String, HandlerDetails>,
    /// The records' purpose: the current cycle's reason.
    pub purpose: Option<String>,
    /// What changed since the diff-base (never filled for Secrets).
    pub diff: Vec<DiffView>,
    /// When the object was last written (RFC 3339).
    pub updated: String,
}

impl Observed {
    /// The read model's key.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.resource, self.namespace, self.name)
    }
}

fn meta<'a>(body: &'a Value, field: &str) -> &'a str {
    body.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The handler ids whose progress records are on `body`, each with its annotation keys: every
/// annotation under the prefix except the diff-base, the touch-dummy and the `kopf-managed`
/// marker. Ids come from the parents' `subrefs` where known (`parent/child`), else from the key
/// itself; the V1 and V2 keys of one id count once. Then the ids of the legacy
/// `status.kopf.progress`.
pub fn handler_ids(body: &Value, storages: &Storages) -> Vec<String> {
    let convention = &storages.convention;
    let prefix = format!("{}/", convention.prefix());
    let mut excluded: HashSet<String> = HashSet::new();
    excluded.extend(convention.make_keys(LAST_HANDLED_CONFIGURATION_KEY, body));
    excluded.extend(convention.make_keys(TOUCH_DUMMY_KEY, body));
    excluded.extend(convention.marker_key());
    excluded.insert(format!("{prefix}{}", keys::MANAGED_MARKER_NAME));
    let annotations = body
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    let mut candidates: Vec<&str> = annotations
        .into_iter()
        .flat_map(|a| a.keys())
        .map(String::as_str)
        .filter(|k| k.starts_with(&prefix) && !excluded.contains(*k))
        .collect();
    // Longer names first: a V2 key claims its (shorter, hashed) V1 twin.
    candidates.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    let mut owner: HashMap<&str, String> = HashMap::new();
    // Real ids first, from the parents' subrefs.
    for key in &candidates {
        let subrefs = annotations
            .and_then(|a| a.get(*key))
            .and_then(Value::as_str)
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|record| record.get("subrefs").cloned());
        for id in subrefs.iter().flat_map(|s| s.as_array()).flatten() {
            let Some(id) = id.as_str() else { continue };
            for k in convention.make_keys(id, body) {
                if let Some(candidate) = candidates.iter().find(|c| **c == k) {
                    owner.entry(candidate).or_insert_with(|| id.to_owned());
                }
            }
        }
    }
    let marked = !keys::mark_key("", body).is_empty();
    for key in &candidates {
        if owner.contains_key(key) {
            continue;
        }
        let name = &key[prefix.len()..];
        let id = if marked {
            name.strip_suffix(REPLICASET_OF_DEPLOYMENT_MARK)
                .unwrap_or(name)
        } else {
            name
        };
        for k in convention.make_keys(id, body) {
            if let Some(candidate) = candidates.iter().find(|c| **c == k) {
                owner.entry(candidate).or_insert_with(|| id.to_owned());
            }
        }
        owner.entry(key).or_insert_with(|| id.to_owned());
    }
    let mut ids: Vec<String> = owner.into_values().collect();
    for field in storages.progress.status_fields() {
        let legacy = crate::core::persistence::resolve(body, field);
        ids.extend(
            legacy
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.iter())
                .filter(|(_, v)| !v.is_null())
                .map(|(id, _)| id.clone()),
        );
    }
    ids.sort();
    ids.dedup();
    ids
}

/// A handler's state from its record, as the core names it.
pub fn handler_state(record: &ProgressRecord, now: Timestamp) -> &'static str {
    if record.success == Some(true) {
        "succeeded"
    } else if record.failure == Some(true) {
        "failed"
    } else if record.retries.unwrap_or(0) > 0 || record.delayed.is_some_and(|d| d > now) {
        "retrying"
    } else {
        "pending"
    }
}

/// The paths of a stored essence that the default essence leaves out (the fields of field
/// handlers, e.g. `status.phase`): restored from the body so that they do not show up as
/// removed in the diff.
pub fn extra_fields(old: &Value) -> Vec<FieldPath> {
    fn leaves(value: &Value, path: &mut FieldPath, out: &mut Vec<FieldPath>) {
        if out.len() >= EXTRA_FIELDS {
            return;
        }
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(key.clone());
                    leaves(child, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    if let Some(status) = old.get("status") {
        leaves(status, &mut vec!["status".to_owned()], &mut out);
    }
    if let Some(Value::Object(metadata)) = old.get("metadata") {
        for (key, value) in metadata {
            if key != "labels" && key != "annotations" {
                leaves(
                    value,
                    &mut vec!["metadata".to_owned(), key.clone()],
                    &mut out,
                );
            }
        }
    }
    out
}

fn compact(value: Option<&Value>) -> Option<String> {
    let text = serde_json::to_string(value?).ok()?;
    Some(match text.char_indices().nth(DIFF_VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

/// The latest write to the object: the newest `managedFields` time, else its creation.
fn last_written(body: &Value) -> String {
    let managed = body
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("time").and_then(Value::as_str))
        .filter_map(|t| t.parse::<Timestamp>().ok())
        .max();
    managed
        .or_else(|| meta(body, "creationTimestamp").parse().ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Reads one object of `resource` (`plural.group/version`): its progress records, diff-base
/// and pending changes.
pub fn observe(resource: &str, body: &Value, storages: &Storages, now: Timestamp) -> Observed {
    let mut handlers = Vec::new();
    let mut details = BTreeMap::new();
    let mut purpose = None;
    for id in handler_ids(body, storages) {
        match storages.progress.fetch(&id, body) {
            Ok(None) => {}
            Ok(Some(stored)) => {
                let record = stored.record;
                purpose = purpose.or_else(|| record.purpose.clone().filter(|p| !p.is_empty()));
                let mut extra = HandlerDetails::default();
                extra.stopped = record.stopped.map(|t| t.to_string());
                extra.purpose = record.purpose.clone();
                details.insert(id.clone(), extra);
                handlers.push(HandlerView {
                    state: handler_state(&record, now),
                    retries: record.retries.unwrap_or(0),
                    started: record.started.map(|t| t.to_string()),
                    delayed: record.delayed.map(|t| t.to_string()),
                    // Kopf stores `str(None)` for a parent waiting for its sub-handlers.
                    message: record.message.clone().filter(|m| m != "None"),
                    trace_id: None,
                    id,
                });
            }
            Err(err) => handlers.push(HandlerView {
                id,
                state: "failed",
                retries: 0,
                started: None,
                delayed: None,
                message: Some(format!("The progress record is unreadable: {err}.")),
                trace_id: None,
            }),
        }
    }
    let old = storages
        .diffbase
        .fetch(body)
        .ok()
        .flatten()
        .map(|old| storages.progress.clear(&old));
    let diff = match &old {
        Some(old) if !is_secret(resource) => {
            let new = storages
                .progress
                .clear(&storages.diffbase.build(body, &extra_fields(old)));
            diff_views(&diff(Some(old), Some(&new)))
        }
        _ => Vec::new(),
    };
    Observed {
        resource: resource.to_owned(),
        namespace: meta(body, "namespace").to_owned(),
        name: meta(body, "name").to_owned(),
        uid: meta(body, "uid").to_owned(),
        deleting: deletion_ongoing(body),
        has_diffbase: old.is_some(),
        handlers,
        details,
        purpose,
        diff,
        updated: last_written(body),
    }
}

/// Whether a resource (`plural.group/version`) is the core group's Secrets.
/// A Kopf diff as the dashboard shows it (values as compact JSON, cut when long).
pub fn diff_views(items: &[crate::core::persistence::diff::DiffItem]) -> Vec<DiffView> {
    items
        .iter()
        .map(|item| DiffView {
            op: item.op.as_str().to_owned(),
            path: item.path.join("."),
            old: compact(item.old.as_ref()),
            new: compact(item.new.as_ref()),
        })
        .collect()
}

/// Secrets' diffs are never shown.
pub fn is_secret(resource: &str) -> bool {
    resource.split('/').next() == Some("secrets")
}

/// The outcome of a handler as an Event tells it (Kopf's and Operon's log lines).
fn outcome_of(message: &str) -> Option<(&str, &'static str, Option<&str>)> {
    let rest = message.strip_prefix("Handler '")?;
    let (id, tail) = rest.split_once("' ")?;
    if tail == "succeeded." {
        Some((id, "succeeded", None))
    } else {
        tail.strip_prefix("failed permanently: ")
            .map(|reason| (id, "failed", Some(reason)))
    }
}

/// The handlers of a finished cycle as its Events tell them (newest Event first): per handler,
/// its last success or permanent failure.
pub fn outcomes(events: &[EventView]) -> Vec<HandlerView> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for event in events {
        let Some((id, state, message)) = outcome_of(&event.message) else {
            continue;
        };
        if seen.insert(id.to_owned()) {
            out.push(HandlerView {
                id: id.to_owned(),
                state,
                retries: 0,
                started: None,
                delayed: None,
                message: message.map(str::to_owned),
                trace_id: None,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The reason of the last finished cycle, from Kopf's `… is processed: …` Event.
fn finished_cause(events: &[EventView]) -> Option<&'static str> {
    events.iter().find_map(|e| {
        let (title, _) = e.message.split_once(" is processed: ")?;
        match title {
            "Creation" => Some("create"),
            "Updating" => Some("update"),
            "Deletion" => Some("delete"),
            "Resuming" => Some("resume"),
            _ => None,
        }
    })
}

/// What the store remembers of an object's current or just-finished cycle: its reason and the
/// handlers seen finished. Kopf and Operon purge the records when a cycle ends, so a finished
/// cycle's outcomes are only known to someone who watched it (or from its Events).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastCycle {
    /// The cycle's reason (`create`, `update`…).
    pub purpose: Option<String>,
    /// The handlers seen succeeded or failed in it.
    pub finished: Vec<HandlerView>,
    /// Their details (stop times).
    pub details: BTreeMap<String, HandlerDetails>,
}

impl LastCycle {
    /// The memory after `observed`: while records are stored, their purpose and finished
    /// handlers (so a new cycle replaces the last one); once they are purged, unchanged.
    pub fn after(self, observed: &Observed) -> LastCycle {
        if observed.handlers.is_empty() {
            return self;
        }
        let finished: Vec<HandlerView> = observed
            .handlers
            .iter()
            .filter(|h| matches!(h.state, "succeeded" | "failed"))
            .cloned()
            .collect();
        let details = finished
            .iter()
            .filter_map(|h| Some((h.id.clone(), observed.details.get(&h.id)?.clone())))
            .collect();
        LastCycle {
            purpose: observed.purpose.clone().or(self.purpose),
            finished,
            details,
        }
    }
}

/// The read model's view of an observed object, with what was seen of its last cycle and its
/// Events (newest first).
///
/// Phases: `deleting` while the deletion waits; else `failed` or `retrying` when a handler is;
/// else `in-progress` while records are stored; else `handled` with a diff-base — `failed` when
/// a handler of the finished cycle failed permanently, as seen while it ran or, when it was not
/// seen, as its Events tell; else `pending`.
pub fn view(
    observed: &Observed,
    last: &LastCycle,
    events: &[EventView],
) -> (ObjectView, ObjectDetails) {
    let has_records = !observed.handlers.is_empty();
    let finished = !has_records && observed.has_diffbase;
    let handlers = if !finished {
        observed.handlers.clone()
    } else if !last.finished.is_empty() {
        last.finished.clone()
    } else {
        outcomes(events)
    };
    let any = |state: &str| handlers.iter().any(|h| h.state == state);
    let phase = if observed.deleting {
        "deleting"
    } else if any("failed") {
        "failed"
    } else if any("retrying") {
        "retrying"
    } else if has_records {
        "in-progress"
    } else if observed.has_diffbase {
        "handled"
    } else {
        "pending"
    };
    let cause = if let Some(purpose) = observed.purpose.as_ref().or(last.purpose.as_ref()) {
        purpose.clone()
    } else if observed.deleting {
        "delete".to_owned()
    } else if !observed.has_diffbase {
        "create".to_owned()
    } else if !observed.diff.is_empty() {
        "update".to_owned()
    } else {
        finished_cause(events).unwrap_or_default().to_owned()
    };
    let view = ObjectView {
        resource: observed.resource.clone(),
        namespace: observed.namespace.clone(),
        name: observed.name.clone(),
        uid: observed.uid.clone(),
        phase,
        cause,
        handlers,
        updated: observed.updated.clone(),
    };
    let mut details = ObjectDetails::default();
    details.diff = observed.diff.clone();
    details.events = events.to_vec();
    details.handlers = if finished {
        last.details.clone()
    } else {
        observed.details.clone()
    };
    (view, details)
}

/// An Event as the dashboard shows it, with the uid of the object it is about and its own id.
pub fn event_view(event: &Event) -> Option<(String, String, EventView)> {
    let about = event.involved_object.uid.clone()?;
    let id = event
        .metadata
        .uid
        .clone()
        .or_else(|| event.metadata.name.clone())?;
    let time = event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .map(|t| t.to_string())
        .unwrap_or_default();
    let count = event
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(event.count)
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(1);
    Some((
        about,
        id,
        EventView {
            time,
            type_: event.type_.clone().unwrap_or_default(),
            reason: event.reason.clone().unwrap_or_default(),
            message: event.message.clone().unwrap_or_default(),
            count,
        },
    ))
}

// ---- the read model ---------------------------------------------------------------------------

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
pub struct Store {
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
    pub fn apply(&self, observed: Observed) {
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
    pub fn remove(&self, key: &str) {
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
    pub fn sweep(&self, resource: &str, namespace: Option<&str>, listed: &HashSet<String>) {
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
    pub fn event(&self, uid: &str, id: &str, event: EventView) {
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
    pub fn forget_event(&self, uid: &str, id: &str) {
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
    pub fn ready(&self) -> bool {
        self.watches_listed.load(Ordering::Relaxed) >= self.watches_total.load(Ordering::Relaxed)
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

// ---- effects: watches and the listener --------------------------------------------------------

/// The listener's routes: the dashboard, its API, and the probes; behind the token if set.
pub fn router(store: Arc<Store>, options: &operon_dashboard::Options) -> axum::Router {
    let ready = Arc::clone(&store);
    let model: Arc<dyn operon_dashboard::ReadModel> = store;
    let routes = operon_dashboard::router_with(Arc::clone(&model), options)
        .merge(operon_dashboard::api_router(model))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    if ready.ready() {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "listing")
                    }
                }
            }),
        );
    operon_dashboard::protect(routes, options.token.as_deref())
}

/// Serves the dashboard from the cluster until SIGTERM/SIGINT.
///
/// # Errors
/// Start-up failures: the Kubernetes configuration, the prefix, the listener.
pub async fn run(config: Config) -> Result<(), Error> {
    let storages = Arc::new(Storages::new(&config.prefix)?);
    let kube_config = kube::Config::infer().await.map_err(Error::KubeConfig)?;
    let client = kube::Client::try_from(kube_config).map_err(Error::Kube)?;
    let store = Arc::new(Store::default());

    let listener = crate::http::bind(config.http).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "The dashboard is up.");
    }
    let app = router(Arc::clone(&store), &config.dashboard);
    let http = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut served = Vec::new();
    for selector in &config.resources {
        let found = resolve_until_found(&client, selector).await;
        tracing::info!(resource = %found.name(), "Showing the resource.");
        served.push(found);
    }
    *store.resources.write_locked() = served.iter().map(Served::name).collect();

    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut tasks = Vec::new();
    for res in &served {
        let res_scopes = if res.namespaced {
            scopes.clone()
        } else {
            vec![None]
        };
        for ns in res_scopes {
            let api: Api<DynamicObject> = match &ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &res.resource),
                None => Api::all_with(client.clone(), &res.resource),
            };
            tasks.push(tokio::spawn(watch_objects(
                Arc::clone(&store),
                Arc::clone(&storages),
                res.name(),
                ns,
                api,
            )));
        }
    }
    store.watches_total.store(tasks.len(), Ordering::Relaxed);
    let kinds: Vec<(String, String)> = served
        .iter()
        .map(|s| (s.resource.group.clone(), s.resource.kind.clone()))
        .collect();
    for ns in &scopes {
        let api: Api<Event> = match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        tasks.push(tokio::spawn(watch_events(
            Arc::clone(&store),
            kinds.clone(),
            api,
        )));
    }

    let result = tokio::select! {
        () = shutdown_signal() => Ok(()),
        served = http => match served {
            Ok(Err(err)) => Err(Error::Http(crate::http::Error::Serve(err))),
            _ => Ok(()),
        },
    };
    for task in &tasks {
        task.abort();
    }
    tracing::info!("Stopped.");
    result
}

async fn resolve_until_found(client: &kube::Client, selector: &Selector) -> Served {
    let mut delay = Duration::from_secs(1);
    loop {
        match discovery::resolve(client, selector).await {
            Ok(served) => return served,
            Err(err) => {
                tracing::warn!(resource = %selector, error = %err, retry_in = ?delay, "Cannot show the resource yet.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
        }
    }
}

async fn watch_objects(
    store: Arc<Store>,
    storages: Arc<Storages>,
    resource: String,
    namespace: Option<String>,
    api: Api<DynamicObject>,
) {
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<HashSet<String>> = None;
    let mut counted = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(%resource, ?namespace, error = %err, "The watch failed; retrying with backoff.");
                continue;
            }
        };
        let read = |obj: &DynamicObject| match serde_json::to_value(obj) {
            Ok(body) => Some(observe(&resource, &body, &storages, Timestamp::now())),
            Err(err) => {
                tracing::error!(error = %err, "Cannot serialise a watched object.");
                None
            }
        };
        match event {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(observed) = read(&obj) {
                    if let Some(listed) = listing.as_mut() {
                        listed.insert(observed.key());
                    }
                    store.apply(observed);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = listing.take() {
                    store.sweep(&resource, namespace.as_deref(), &listed);
                }
                if !counted {
                    counted = true;
                    store.watches_listed.fetch_add(1, Ordering::Relaxed);
                }
            }
            watcher::Event::Apply(obj) => {
                if let Some(observed) = read(&obj) {
                    store.apply(observed);
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(observed) = read(&obj) {
                    store.remove(&observed.key());
                }
            }
        }
    }
}

/// Whether an Event is about an object of one of `kinds` (`(group, kind)`).
fn is_about(event: &Event, kinds: &[(String, String)]) -> bool {
    let object = &event.involved_object;
    let group = object
        .api_version
        .as_deref()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(group, _)| group);
    kinds
        .iter()
        .any(|(g, k)| g == group && Some(k.as_str()) == object.kind.as_deref())
}

async fn watch_events(store: Arc<Store>, kinds: Vec<(String, String)>, api: Api<Event>) {
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitApply(e) | watcher::Event::Apply(e)) if is_about(&e, &kinds) => {
                if let Some((uid, id, view)) = event_view(&e) {
                    store.event(&uid, &id, view);
                }
            }
            Ok(watcher::Event::Delete(e)) if is_about(&e, &kinds) => {
                if let Some((uid, id, _)) = event_view(&e) {
                    store.forget_event(&uid, &id);
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "The watch of Events failed; retrying with backoff.");
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests;
