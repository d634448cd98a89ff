//! The projection from what is stored on objects to the views the dashboard shows: an object's
//! Kopf-format annotations (the diff-base and one progress record per handler) with the Events
//! about it ([`observe`], then [`view`]), the engine's handler states ([`handler_view`]) and how
//! its change cycle ended ([`cycle_view`]). `operon dashboard` and the running core both build
//! their read models here.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;
use serde_json::Value;

use super::model::{
    DiffView, EventView, HandlerDetails, HandlerStatus, HandlerView, ObjectDetails, ObjectPhase,
    ObjectView,
};
use crate::finalizer::deletion_ongoing;
use crate::persistence::diff::{DiffItem, diff};
use crate::persistence::keys::{
    self, KeyError, LAST_HANDLED_CONFIGURATION_KEY, REPLICASET_OF_DEPLOYMENT_MARK, TOUCH_DUMMY_KEY,
};
use crate::persistence::{
    DiffBaseStorage, FieldPath, KeyConvention, ProgressRecord, ProgressStorage,
};
use crate::state::HandlerState;

/// Characters of a diff value shown at most.
const DIFF_VALUE_CHARS: usize = 2000;
/// Extra fields guessed from a diff-base at most (see [`extra_fields`]).
const EXTRA_FIELDS: usize = 64;

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
    /// [`KeyError::EmptyPrefix`] for an empty prefix.
    pub fn new(prefix: &str) -> Result<Self, KeyError> {
        let convention = KeyConvention::new(prefix, true)?;
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
        let legacy = crate::persistence::resolve(body, field);
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

/// A handler's state from its stored record.
pub fn handler_state(record: &ProgressRecord, now: Timestamp) -> HandlerStatus {
    status(
        record.success == Some(true),
        record.failure == Some(true),
        record.retries.unwrap_or(0),
        record.delayed,
        now,
    )
}

/// A handler's state from its flags: finished first, then retrying while it has failed before
/// or sleeps, else pending.
fn status(
    success: bool,
    failure: bool,
    retries: u32,
    delayed: Option<Timestamp>,
    now: Timestamp,
) -> HandlerStatus {
    if success {
        HandlerStatus::Succeeded
    } else if failure {
        HandlerStatus::Failed
    } else if retries > 0 || delayed.is_some_and(|d| d > now) {
        HandlerStatus::Retrying
    } else {
        HandlerStatus::Pending
    }
}

/// A handler of the engine's current cycle as the read model shows it.
pub fn handler_view(id: &str, s: &HandlerState, now: Timestamp) -> HandlerView {
    HandlerView {
        id: id.to_owned(),
        state: status(s.success, s.failure, s.retries, s.delayed, now),
        retries: s.retries,
        started: Some(s.started.to_string()),
        delayed: s.delayed.map(|d| d.to_string()),
        message: s.message.clone(),
        trace_id: None,
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
                let extra = HandlerDetails {
                    stopped: record.stopped.map(|t| t.to_string()),
                    purpose: record.purpose.clone(),
                    ..HandlerDetails::default()
                };
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
                state: HandlerStatus::Failed,
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

/// A Kopf diff as the dashboard shows it (values as compact JSON, cut when long).
pub fn diff_views(items: &[DiffItem]) -> Vec<DiffView> {
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

/// Whether a resource (`plural.group/version`) is the core group's Secrets, whose contents and
/// diffs are never shown.
pub fn is_secret(resource: &str) -> bool {
    resource.split('/').next() == Some("secrets")
}

/// The outcome of a handler as an Event tells it (Kopf's and Operon's log lines).
fn outcome_of(message: &str) -> Option<(&str, HandlerStatus, Option<&str>)> {
    let rest = message.strip_prefix("Handler '")?;
    let (id, tail) = rest.split_once("' ")?;
    if tail == "succeeded." {
        Some((id, HandlerStatus::Succeeded, None))
    } else {
        tail.strip_prefix("failed permanently: ")
            .map(|reason| (id, HandlerStatus::Failed, Some(reason)))
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

/// Where an object stands, as far as its phase is concerned.
#[derive(Debug, Clone, Copy)]
pub struct ObjectProgress<'a> {
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The handlers shown with it.
    pub handlers: &'a [HandlerView],
    /// A cycle is under way (progress records are stored, or the engine's cycle is not done).
    pub running: bool,
    /// It was handled at least once (a diff-base is stored).
    pub handled_once: bool,
}

/// An object's phase: `deleting` while the deletion waits; else `failed` or `retrying` when a
/// handler is; else `in-progress` while a cycle runs; else `handled` once handled, `pending`
/// before.
pub fn phase(p: &ObjectProgress<'_>) -> ObjectPhase {
    let any = |state: HandlerStatus| p.handlers.iter().any(|h| h.state == state);
    if p.deleting {
        ObjectPhase::Deleting
    } else if any(HandlerStatus::Failed) {
        ObjectPhase::Failed
    } else if any(HandlerStatus::Retrying) {
        ObjectPhase::Retrying
    } else if p.running {
        ObjectPhase::InProgress
    } else if p.handled_once {
        ObjectPhase::Handled
    } else {
        ObjectPhase::Pending
    }
}

/// Which object a view is of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// `plural.group/version`.
    pub resource: String,
    /// Namespace (empty when cluster-wide).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl Subject {
    /// The object with this `body`, of `resource` (`plural.group/version`).
    pub fn of(resource: String, body: &Value) -> Subject {
        Subject {
            resource,
            namespace: meta(body, "namespace").to_owned(),
            name: meta(body, "name").to_owned(),
            uid: meta(body, "uid").to_owned(),
        }
    }
}

/// How one change cycle of the engine ended, for the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleEnd {
    /// The object is being deleted.
    pub deleting: bool,
    /// The cycle handled a change (creation, update, deletion, resuming), not only the
    /// finalizer or nothing.
    pub handling: bool,
    /// Its handlers are done (or were skipped).
    pub done: bool,
    /// It had no changing cause: no change handlers, or it only added or removed the
    /// finalizer (a real cycle follows).
    pub no_cause: bool,
}

impl CycleEnd {
    /// The object's phase after the cycle, its handlers shown as `handlers`.
    pub fn phase(&self, handlers: &[HandlerView]) -> ObjectPhase {
        phase(&ObjectProgress {
            deleting: self.deleting,
            handlers,
            running: self.handling && !self.done || self.no_cause,
            handled_once: true,
        })
    }

    /// Whether the cycle says something new about the handlers, so that its view replaces the
    /// last one. A no-op or finalizer cycle does not: the last handling cycle's view stays, and
    /// its view only introduces an object the read model does not know yet.
    pub fn replaces_view(&self) -> bool {
        self.handling || self.deleting
    }
}

/// The view of an object after one change cycle of the engine: `cause` names it, `handlers`
/// are its handlers' states, `now` is when it ended.
pub fn cycle_view(
    subject: Subject,
    cause: &str,
    end: &CycleEnd,
    handlers: Vec<HandlerView>,
    now: Timestamp,
) -> ObjectView {
    ObjectView {
        resource: subject.resource,
        namespace: subject.namespace,
        name: subject.name,
        uid: subject.uid,
        phase: end.phase(&handlers),
        cause: cause.to_owned(),
        handlers,
        updated: now.to_string(),
    }
}

/// The view of an object the core cannot handle as it is (it is left alone until fixed): failed,
/// for `invalid` cause, with one `(object)` row that says why.
pub fn refused_view(subject: Subject, message: &str, now: Timestamp) -> ObjectView {
    ObjectView {
        resource: subject.resource,
        namespace: subject.namespace,
        name: subject.name,
        uid: subject.uid,
        phase: ObjectPhase::Failed,
        cause: "invalid".into(),
        handlers: vec![HandlerView {
            id: "(object)".into(),
            state: HandlerStatus::Failed,
            retries: 0,
            started: None,
            delayed: None,
            message: Some(message.to_owned()),
            trace_id: None,
        }],
        updated: now.to_string(),
    }
}

/// A cycle whose write the API server refused: nothing of it was stored (no result, no
/// progress, no diff-base), so the object is shown failed, with a `(patch)` row that says why;
/// the handlers' rows still say what their calls answered.
pub fn not_stored(view: &mut ObjectView, message: &str) {
    view.phase = ObjectPhase::Failed;
    view.handlers.push(HandlerView {
        id: "(patch)".into(),
        state: HandlerStatus::Failed,
        retries: 0,
        started: None,
        delayed: None,
        message: Some(format!("{message} (nothing of this cycle was stored)")),
        trace_id: None,
    });
}

/// The diff of a cycle as the object's page shows it; `None` for Secrets (never shown).
pub fn shown_diff(resource: &str, items: &[DiffItem]) -> Option<Vec<DiffView>> {
    (!is_secret(resource)).then(|| diff_views(items))
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
            .filter(|h| h.state.is_final())
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
    let phase = phase(&ObjectProgress {
        deleting: observed.deleting,
        handlers: &handlers,
        running: has_records,
        handled_once: observed.has_diffbase,
    });
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
    let details = ObjectDetails {
        diff: observed.diff.clone(),
        events: events.to_vec(),
        handlers: if finished {
            last.details.clone()
        } else {
            observed.details.clone()
        },
        ..ObjectDetails::default()
    };
    (view, details)
}

/// An Event's fields as the API server stores them (the client's `Event` type is the runtime's
/// to convert).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredEvent {
    /// `involvedObject.uid`: the object it is about.
    pub about: Option<String>,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.name`.
    pub name: Option<String>,
    /// `lastTimestamp`.
    pub last_timestamp: Option<Timestamp>,
    /// `eventTime`.
    pub event_time: Option<Timestamp>,
    /// `firstTimestamp`.
    pub first_timestamp: Option<Timestamp>,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// `series.count`.
    pub series_count: Option<i32>,
    /// `count`.
    pub count: Option<i32>,
    /// `type`.
    pub type_: Option<String>,
    /// `reason`.
    pub reason: Option<String>,
    /// `message`.
    pub message: Option<String>,
}

/// An Event as the dashboard shows it, with the uid of the object it is about and its own id
/// (its uid, else its name); `None` without either.
pub fn event_view(event: StoredEvent) -> Option<(String, String, EventView)> {
    let about = event.about?;
    let id = event.uid.or(event.name)?;
    let time = event
        .last_timestamp
        .or(event.event_time)
        .or(event.first_timestamp)
        .or(event.created)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let count = event
        .series_count
        .or(event.count)
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(1);
    Some((
        about,
        id,
        EventView {
            time,
            type_: event.type_.unwrap_or_default(),
            reason: event.reason.unwrap_or_default(),
            message: event.message.unwrap_or_default(),
            count,
        },
    ))
}

#[cfg(test)]
mod tests;
