//! Per-handler progress records, as Kopf's progress storages keep them: by default
//! (`SmartProgressStorage`) JSON strings in annotations (`AnnotationsProgressStorage`, read and
//! written), plus the legacy `status.kopf.progress.<id>` dicts (`NoWriteStatusProgressStorage`:
//! read and purged, never written since Kopf 1.44); `StatusProgressStorage` writes those dicts, and
//! any combination is a `MultiProgressStorage` ([`ProgressLayer`]).

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::diff::{FieldPath, resolve};
use super::essence::{json_type, remove_annotations, remove_empty_stanzas, remove_field};
use super::keys::{self, KeyConvention, TOUCH_DUMMY_KEY};
use super::pyjson::{self, py_eq};
use super::time;
use crate::patch::MergePatch;

/// A record that is not shaped like Kopf's `ProgressRecord`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record is not a JSON object.
    #[error("the record holds {found} instead of an object")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A field has the wrong type or an unreadable timestamp.
    #[error("the record's {field:?} {problem}")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The failure to read a stored progress record.
///
/// Kopf raises on all of these, and the exception escapes the object's worker: Kopf logs "Event
/// processing has failed with an unrecoverable error" and stops the whole resource watcher. The
/// caller should rather report it on the object and leave the object alone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The annotation is not valid JSON (Kopf: `JSONDecodeError`).
    #[error("the progress annotation {key} is not valid JSON")]
    NotJson {
        /// The annotation key.
        key: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The annotation's value is not a string (impossible through the Kubernetes API).
    #[error("the progress annotation {key} is not a string")]
    NotAString {
        /// The annotation key.
        key: String,
    },
    /// The record is not a well-formed progress record (Kopf: `AttributeError`, `ParseError`, ...).
    #[error("the progress record at {location} is malformed")]
    Malformed {
        /// The annotation key, or `status.kopf.progress.<id>`.
        location: String,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
    /// A status container (`status.kopf.progress`) is not an object (Kopf: `AttributeError`).
    #[error("the progress container {location} holds {found} instead of an object")]
    LegacyContainerNotAnObject {
        /// The container's dotted path.
        location: String,
        /// The JSON type found.
        found: &'static str,
    },
}

/// The state of one handler in one handling cycle: Kopf's `ProgressRecord`.
///
/// This is the stored form, field for field; Kopf's `HandlerState.from_storage` then reads a
/// missing `started` as "now", `retries` as 0, `success`/`failure` as false and an empty `purpose`
/// as none — that interpretation is the caller's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProgressRecord {
    /// The first attempt in this cycle.
    pub started: Option<Timestamp>,
    /// When the outcome first became final (success or permanent failure).
    pub stopped: Option<Timestamp>,
    /// When to run the handler again (it sleeps until then).
    pub delayed: Option<Timestamp>,
    /// The cause reason that created the record (`create`, `update`, `delete`, `resume`).
    pub purpose: Option<String>,
    /// Attempts so far (incremented on every outcome, success included).
    pub retries: Option<u32>,
    /// Finished successfully.
    pub success: Option<bool>,
    /// Finished with a permanent failure.
    pub failure: Option<bool>,
    /// `str(exception)` of the last error.
    pub message: Option<String>,
    /// The ids of all sub-handlers run under this handler, at any depth. Kopf writes them sorted
    /// and writes none rather than an empty list; this struct writes exactly what it holds.
    pub subrefs: Option<Vec<String>>,
}

/// The names of the record's fields, in Kopf's order.
pub const RECORD_FIELDS: [&str; 9] = [
    "started", "stopped", "delayed", "purpose", "retries", "success", "failure", "message",
    "subrefs",
];

impl ProgressRecord {
    /// The record as a JSON object with Kopf's field order; `None` fields are omitted unless
    /// `verbose` (then they are `null`s), as `AnnotationsProgressStorage(verbose=...)` writes it.
    pub fn to_value(&self, verbose: bool) -> Value {
        let time = |t: &Option<Timestamp>| t.map(|t| Value::String(time::format(t)));
        let fields: [Option<Value>; 9] = [
            time(&self.started),
            time(&self.stopped),
            time(&self.delayed),
            self.purpose.clone().map(Value::String),
            self.retries.map(Value::from),
            self.success.map(Value::Bool),
            self.failure.map(Value::Bool),
            self.message.clone().map(Value::String),
            self.subrefs
                .as_ref()
                .map(|s| Value::Array(s.iter().cloned().map(Value::String).collect())),
        ];
        let mut map = Map::new();
        for (name, value) in RECORD_FIELDS.into_iter().zip(fields) {
            match value {
                Some(value) => {
                    map.insert(name.to_owned(), value);
                }
                None if verbose => {
                    map.insert(name.to_owned(), Value::Null);
                }
                None => {}
            }
        }
        Value::Object(map)
    }

    /// The annotation value Kopf writes: compact, ASCII-escaped JSON of [`ProgressRecord::to_value`].
    pub fn to_json(&self, verbose: bool) -> String {
        pyjson::dumps(&self.to_value(verbose))
    }

    /// Reads a stored record (a decoded annotation, or a legacy status dict).
    ///
    /// Missing and `null` fields are `None`; unknown fields are ignored (as Kopf ignores them).
    ///
    /// # Errors
    ///
    /// A non-object, a field of the wrong JSON type, a timestamp that iso8601 would refuse, or
    /// `retries` outside `0..=u32::MAX`. Kopf would raise on most of these; for a few (e.g.
    /// `"success": "yes"`) it would coerce by Python truthiness instead, which is refused here.
    pub fn from_value(value: &Value) -> Result<Self, RecordError> {
        let Value::Object(map) = value else {
            return Err(RecordError::NotAnObject {
                found: json_type(value),
            });
        };
        let field = |name: &'static str| map.get(name).filter(|v| !v.is_null());
        let bad = |field: &'static str, problem: String| RecordError::BadField { field, problem };
        let string = |name: &'static str| -> Result<Option<String>, RecordError> {
            match field(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(
                    name,
                    format!("holds {} instead of a string", json_type(other)),
                )),
            }
        };
        let timestamp = |name: &'static str| -> Result<Option<Timestamp>, RecordError> {
            string(name)?
                .map(|text| {
                    time::parse(&text).map_err(|e| bad(name, format!("is not a timestamp: {e}")))
                })
                .transpose()
        };
        let boolean = |name: &'static str| -> Result<Option<bool>, RecordError> {
            match field(name) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(bad(
                    name,
                    format!("holds {} instead of a boolean", json_type(other)),
                )),
            }
        };
        let retries = match field("retries") {
            None => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("retries", format!("is not a count: {value}")))?,
            ),
        };
        let subrefs = match field("subrefs") {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("subrefs", "holds a non-string item".to_owned()))?,
            ),
            Some(other) => {
                return Err(bad(
                    "subrefs",
                    format!("holds {} instead of a list", json_type(other)),
                ));
            }
        };
        Ok(ProgressRecord {
            started: timestamp("started")?,
            stopped: timestamp("stopped")?,
            delayed: timestamp("delayed")?,
            purpose: string("purpose")?,
            retries,
            success: boolean("success")?,
            failure: boolean("failure")?,
            message: string("message")?,
            subrefs,
        })
    }

    /// Whether this record must be written, given the `origin` it was read from (`None` if there
    /// was none): Kopf's `handler_state.as_in_storage() != handler_state._origin`, i.e. the
    /// non-verbose JSON form compared by Python's `==` with the raw stored value.
    ///
    /// # Caveats
    ///
    /// A stored timestamp in a form other than Kopf's canonical `+00:00` one (naive, `Z`, another
    /// offset) reads fine but counts as a difference, so such a record is rewritten once in the
    /// canonical form; Kopf keeps the form it read. Unknown stored fields count as a difference,
    /// as in Kopf.
    pub fn differs_from(&self, origin: Option<&Value>) -> bool {
        origin.is_none_or(|origin| !py_eq(&self.to_value(false), origin))
    }
}

/// Where a record was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordLocation {
    /// An annotation (the V2 key, or the V1 key when the V2 one is absent).
    Annotation {
        /// The annotation key.
        key: String,
    },
    /// A status field (`status.<name>.progress.<id>`: Kopf's `StatusProgressStorage`, or the
    /// legacy one written by Kopf before 1.44 and read by its default storage).
    Status {
        /// The container's dotted path.
        field: String,
    },
}

/// A record as read from an object, with the raw value it was decoded from (Kopf's `_origin`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// The decoded record.
    pub record: ProgressRecord,
    /// The raw stored JSON object, for [`ProgressRecord::differs_from`].
    pub origin: Value,
    /// Where it came from.
    pub location: RecordLocation,
}

/// One place where progress records are kept: one of Kopf's progress storage classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressLayer {
    /// `AnnotationsProgressStorage(prefix=, verbose=, touch_key=, v1=)`: one JSON string per
    /// handler in `<prefix>/<id>` (and its V1 key).
    Annotations {
        /// The prefix and the V1 keys.
        convention: KeyConvention,
        /// The record name of the touch-dummy annotation.
        touch_key: String,
        /// Write `null` for the `None` fields too.
        verbose: bool,
    },
    /// `StatusProgressStorage(name=, field=, touch_field=)`: one dict per handler in
    /// `<field>.<id>`; with `writes: false` Kopf's internal `NoWriteStatusProgressStorage` (the
    /// status half of `SmartProgressStorage`): read and purged, never written or touched.
    Status {
        /// The container, e.g. `status.kopf.progress`.
        field: FieldPath,
        /// The touch field, e.g. `status.kopf.dummy`.
        touch_field: FieldPath,
        /// Whether records are written (and the touch field set).
        writes: bool,
    },
}

impl ProgressLayer {
    /// Kopf's `AnnotationsProgressStorage` with its defaults under `convention`.
    pub fn annotations(convention: KeyConvention) -> Self {
        ProgressLayer::Annotations {
            convention,
            touch_key: TOUCH_DUMMY_KEY.to_owned(),
            verbose: false,
        }
    }

    /// Kopf's `StatusProgressStorage(name=name)`: `status.<name>.progress`, `status.<name>.dummy`.
    pub fn status(name: &str, writes: bool) -> Self {
        ProgressLayer::Status {
            field: vec!["status".into(), name.into(), "progress".into()],
            touch_field: vec!["status".into(), name.into(), "dummy".into()],
            writes,
        }
    }
}

/// Where the handlers' progress is kept: Kopf's progress storages, one or several
/// (`MultiProgressStorage`): the first layer holding a record wins on reading; records are
/// written to, purged from and cleared from every layer. The default is Kopf's
/// `SmartProgressStorage`: annotations, then the legacy status that is read and purged only.
///
/// # Guarantees
///
/// The patches written by [`ProgressStorage::store`], [`ProgressStorage::purge`] and
/// [`ProgressStorage::touch`] are the ones Kopf 1.45 writes, key for key and byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressStorage {
    layers: Vec<ProgressLayer>,
}

impl Default for ProgressStorage {
    /// `kopf.zalando.org` with V1 keys, `touch-dummy`, not verbose, legacy `status.kopf.progress`.
    fn default() -> Self {
        ProgressStorage::new(KeyConvention::default())
    }
}

impl ProgressStorage {
    /// Kopf's `SmartProgressStorage` under `convention`'s prefix.
    pub fn new(convention: KeyConvention) -> Self {
        ProgressStorage {
            layers: vec![
                ProgressLayer::annotations(convention),
                ProgressLayer::status("kopf", false),
            ],
        }
    }

    /// Any combination of Kopf's storages (`MultiProgressStorage`), in reading order.
    ///
    /// # Errors
    /// An empty list: there would be nowhere to keep the records.
    pub fn from_layers(layers: Vec<ProgressLayer>) -> Result<Self, &'static str> {
        if layers.is_empty() {
            return Err("a progress storage needs at least one storage");
        }
        Ok(ProgressStorage { layers })
    }

    /// The layers, in reading order.
    pub fn layers(&self) -> &[ProgressLayer] {
        &self.layers
    }

    /// Writes `null` for the `None` fields too (Kopf's `verbose=True`), in every annotations layer.
    pub fn with_verbose(mut self, verbose: bool) -> Self {
        for layer in &mut self.layers {
            if let ProgressLayer::Annotations { verbose: v, .. } = layer {
                *v = verbose;
            }
        }
        self
    }

    /// Another record name for the touch-dummy annotation (Kopf's `touch_key=`).
    pub fn with_touch_key(mut self, touch_key: impl Into<String>) -> Self {
        let touch_key = touch_key.into();
        for layer in &mut self.layers {
            if let ProgressLayer::Annotations { touch_key: k, .. } = layer {
                k.clone_from(&touch_key);
            }
        }
        self
    }

    /// Another status name: `status.<name>.progress` (Kopf's `name=`, default `kopf`).
    pub fn with_legacy_name(mut self, name: &str) -> Self {
        for layer in &mut self.layers {
            if let ProgressLayer::Status { writes, .. } = layer {
                *layer = ProgressLayer::status(name, *writes);
            }
        }
        self
    }

    /// The key convention (prefix, V1) of the first annotations layer, if there is one.
    pub fn convention(&self) -> Option<&KeyConvention> {
        self.layers.iter().find_map(|l| match l {
            ProgressLayer::Annotations { convention, .. } => Some(convention),
            ProgressLayer::Status { .. } => None,
        })
    }

    /// Whether the first annotations layer writes `None` fields as `null`s.
    pub fn verbose(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l, ProgressLayer::Annotations { verbose: true, .. }))
    }

    /// The status containers of the records (`["status", "kopf", "progress"]` by default).
    pub fn status_fields(&self) -> impl Iterator<Item = &[String]> {
        self.layers.iter().filter_map(|l| match l {
            ProgressLayer::Status { field, .. } => Some(field.as_slice()),
            ProgressLayer::Annotations { .. } => None,
        })
    }

    /// The annotation keys of a handler's record on this body (V2, then V1 if different), in
    /// every annotations layer.
    pub fn keys(&self, id: &str, body: &Value) -> Vec<String> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                ProgressLayer::Annotations { convention, .. } => {
                    Some(convention.make_keys(id, body))
                }
                ProgressLayer::Status { .. } => None,
            })
            .flatten()
            .collect()
    }

    /// Reads handler `id`'s record from the first layer that has one: in an annotations layer,
    /// the first key (V2, then V1) holding a non-`null` JSON value; in a status layer, a set,
    /// non-`null` `<field>.<id>`.
    ///
    /// # Errors
    ///
    /// See [`Error`]: a broken annotation is an error (it does not fall through to the next
    /// layer, as in Kopf); a non-object container is an error, while a non-object parent of it
    /// counts as no record (Kopf's `resolve` with a default).
    pub fn fetch(&self, id: &str, body: &Value) -> Result<Option<StoredRecord>, Error> {
        for layer in &self.layers {
            let found = match layer {
                ProgressLayer::Annotations { convention, .. } => {
                    fetch_annotation(&convention.make_keys(id, body), body)?
                }
                ProgressLayer::Status { field, .. } => fetch_status(field, id, body)?,
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Writes handler `id`'s record into `patch` in every layer that writes: under every
    /// annotation key (V2, and V1 if different) plus the `kopf-managed` marker for a custom
    /// prefix; as a dict at `<field>.<id>` in a writing status layer.
    pub fn store(&self, id: &str, record: &ProgressRecord, body: &Value, patch: &mut MergePatch) {
        for layer in &self.layers {
            match layer {
                ProgressLayer::Annotations {
                    convention,
                    verbose,
                    ..
                } => {
                    let encoded = Value::String(record.to_json(*verbose));
                    for key in convention.make_keys(id, body) {
                        patch.set(&["metadata", "annotations", key.as_str()], encoded.clone());
                    }
                    convention.store_marker(body, patch);
                }
                ProgressLayer::Status {
                    field,
                    writes: true,
                    ..
                } => {
                    // Kopf stores the whole record; its `None`s are `null`s, which the API server
                    // drops (Kopf's "Nones are cleaned by K8s API itself").
                    let mut path: Vec<&str> = field.iter().map(String::as_str).collect();
                    path.push(id);
                    patch.set(&path, record.to_value(true));
                }
                ProgressLayer::Status { writes: false, .. } => {}
            }
        }
    }

    /// [`ProgressStorage::store`] only if the record differs from the `origin` it was read from
    /// (`None` for a new record), as Kopf's `State.store` does. Returns whether it was written.
    pub fn store_if_changed(
        &self,
        id: &str,
        record: &ProgressRecord,
        origin: Option<&Value>,
        body: &Value,
        patch: &mut MergePatch,
    ) -> bool {
        let changed = record.differs_from(origin);
        if changed {
            self.store(id, record, body, patch);
        }
        changed
    }

    /// Purges the records of handler `id` and of its `subrefs` (Kopf's `State.purge` for one
    /// handler): for every annotation key (V2, V1) and status entry of every layer, a `null` if
    /// the body has it (even as `null`); otherwise, whatever this patch was about to write there
    /// is dropped instead (with the parents it leaves empty).
    pub fn purge(&self, id: &str, subrefs: &[String], body: &Value, patch: &mut MergePatch) {
        self.purge_one(id, body, patch);
        for subref in subrefs {
            self.purge_one(subref, body, patch);
        }
    }

    fn purge_one(&self, id: &str, body: &Value, patch: &mut MergePatch) {
        for layer in &self.layers {
            match layer {
                ProgressLayer::Annotations { convention, .. } => {
                    for key in convention.make_keys(id, body) {
                        let path = ["metadata", "annotations", key.as_str()];
                        purge_path(body, patch, &path);
                    }
                }
                ProgressLayer::Status { field, .. } => {
                    let mut path: Vec<&str> = field.iter().map(String::as_str).collect();
                    path.push(id);
                    purge_path(body, patch, &path);
                }
            }
        }
    }

    /// Sets the touch-dummy (annotation, or the touch field of a writing status layer) to `value`
    /// (or resets it with `None`) where the body holds something else, plus the `kopf-managed`
    /// marker for an annotation (Kopf's `touch`).
    ///
    /// Kopf touches with the time as [`time::format_touch`] writes it to make the object change
    /// after a sleep, and resets it with `None` in every non-empty patch it sends; that choice is
    /// the caller's.
    pub fn touch(&self, body: &Value, patch: &mut MergePatch, value: Option<&str>) {
        let wanted = value.map_or(Value::Null, |v| Value::String(v.to_owned()));
        for layer in &self.layers {
            match layer {
                ProgressLayer::Annotations {
                    convention,
                    touch_key,
                    ..
                } => {
                    for key in convention.make_keys(touch_key, body) {
                        let path = ["metadata", "annotations", key.as_str()];
                        let current = resolve(body, &path).unwrap_or(&Value::Null);
                        if !py_eq(current, &wanted) {
                            patch.set(&path, wanted.clone());
                            convention.store_marker(body, patch);
                        }
                    }
                }
                ProgressLayer::Status {
                    touch_field,
                    writes: true,
                    ..
                } => {
                    let current = resolve(body, touch_field).unwrap_or(&Value::Null);
                    if !py_eq(current, &wanted) {
                        patch.set(touch_field, wanted.clone());
                    }
                }
                ProgressLayer::Status { writes: false, .. } => {}
            }
        }
    }

    /// Removes this storage's own traces from an essence before diffing (Kopf's `clear` of each
    /// storage, applied to both the stored and the new essence): annotations under an annotations
    /// layer's prefix, a status layer's container, dropping the stanzas left empty.
    pub fn clear(&self, essence: &Value) -> Value {
        let Value::Object(map) = essence else {
            return essence.clone();
        };
        let mut map = map.clone();
        for layer in &self.layers {
            match layer {
                ProgressLayer::Annotations { convention, .. } => {
                    remove_annotations(&mut map, |key| convention.owns_key(key));
                }
                ProgressLayer::Status { field, .. } => remove_field(&mut map, field),
            }
            remove_empty_stanzas(&mut map);
        }
        Value::Object(map)
    }
}

fn fetch_annotation(keys: &[String], body: &Value) -> Result<Option<StoredRecord>, Error> {
    let annotations = keys::annotations(body);
    for key in keys {
        let Some(stored) = annotations.and_then(|a| a.get(key)) else {
            continue;
        };
        let text = match stored {
            Value::String(text) => text,
            Value::Null => continue,
            _ => return Err(Error::NotAString { key: key.clone() }),
        };
        let origin: Value = serde_json::from_str(text).map_err(|source| Error::NotJson {
            key: key.clone(),
            source,
        })?;
        if origin.is_null() {
            continue;
        }
        let record = ProgressRecord::from_value(&origin).map_err(|source| Error::Malformed {
            location: key.clone(),
            source,
        })?;
        return Ok(Some(StoredRecord {
            record,
            origin,
            location: RecordLocation::Annotation { key: key.clone() },
        }));
    }
    Ok(None)
}

fn fetch_status(field: &[String], id: &str, body: &Value) -> Result<Option<StoredRecord>, Error> {
    let Some(container) = resolve(body, field) else {
        return Ok(None);
    };
    let location = field.join(".");
    let Value::Object(container) = container else {
        return Err(Error::LegacyContainerNotAnObject {
            location,
            found: json_type(container),
        });
    };
    match container.get(id) {
        None | Some(Value::Null) => Ok(None),
        Some(origin) => {
            let record = ProgressRecord::from_value(origin).map_err(|source| Error::Malformed {
                location: format!("{location}.{id}"),
                source,
            })?;
            Ok(Some(StoredRecord {
                record,
                origin: origin.clone(),
                location: RecordLocation::Status { field: location },
            }))
        }
    }
}

/// Kopf's purge of one location: `null` if the body has it, else drop it from the patch.
fn purge_path(body: &Value, patch: &mut MergePatch, path: &[&str]) {
    if resolve(body, path).is_some() {
        patch.set(path, Value::Null);
    } else if patch.contains(path) {
        patch.remove(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// `TemporaryError("Not ready yet.", delay=30)` on the first attempt.
    fn r1() -> ProgressRecord {
        ProgressRecord {
            started: Some(ts("2026-11-22T01:27:42.807251Z")),
            delayed: Some(ts("2026-11-22T01:28:12.807292Z")),
            purpose: Some("create".into()),
            retries: Some(1),
            success: Some(false),
            failure: Some(false),
            message: Some("Not ready yet.".into()),
            ..ProgressRecord::default()
        }
    }

    /// Success on the 2nd attempt, with sub-handlers, stopped on a whole second.
    fn r2() -> ProgressRecord {
        ProgressRecord {
            started: Some(ts("2026-11-22T01:27:42.807251Z")),
            stopped: Some(ts("2026-11-22T01:27:42Z")),
            purpose: Some("create".into()),
            retries: Some(2),
            success: Some(true),
            failure: Some(false),
            subrefs: Some(vec!["create_fn/task_a".into(), "create_fn/task_b".into()]),
            ..ProgressRecord::default()
        }
    }

    /// A permanent failure with a message that needs escaping.
    fn r3() -> ProgressRecord {
        ProgressRecord {
            purpose: Some("update".into()),
            retries: Some(0),
            success: Some(false),
            failure: Some(true),
            message: Some("Fail \"quoted\" ü\n".into()),
            ..ProgressRecord::default()
        }
    }

    fn storage(prefix: &str, verbose: bool) -> ProgressStorage {
        ProgressStorage::new(KeyConvention::new(prefix, true).unwrap()).with_verbose(verbose)
    }

    fn stored(storage: &ProgressStorage, id: &str, record: &ProgressRecord) -> String {
        let mut patch = MergePatch::new();
        storage.store(id, record, &json!({}), &mut patch);
        serde_json::to_string(&patch).unwrap()
    }

    const R1: &str = r#"{\"started\":\"2026-11-22T01:27:42.807251+00:00\",\"delayed\":\"2026-11-22T01:28:12.807292+00:00\",\"purpose\":\"create\",\"retries\":1,\"success\":false,\"failure\":false,\"message\":\"Not ready yet.\"}"#;
    const R2: &str = r#"{\"started\":\"2026-11-22T01:27:42.807251+00:00\",\"stopped\":\"2026-11-22T01:27:42.000000+00:00\",\"purpose\":\"create\",\"retries\":2,\"success\":true,\"failure\":false,\"subrefs\":[\"create_fn/task_a\",\"create_fn/task_b\"]}"#;
    const R3: &str = r#"{\"purpose\":\"update\",\"retries\":0,\"success\":false,\"failure\":true,\"message\":\"Fail \\\"quoted\\\" \\u00fc\\n\"}"#;
    const R1_VERBOSE: &str = r#"{\"started\":\"2026-11-22T01:27:42.807251+00:00\",\"stopped\":null,\"delayed\":\"2026-11-22T01:28:12.807292+00:00\",\"purpose\":\"create\",\"retries\":1,\"success\":false,\"failure\":false,\"message\":\"Not ready yet.\",\"subrefs\":null}"#;
    const R2_VERBOSE: &str = r#"{\"started\":\"2026-11-22T01:27:42.807251+00:00\",\"stopped\":\"2026-11-22T01:27:42.000000+00:00\",\"delayed\":null,\"purpose\":\"create\",\"retries\":2,\"success\":true,\"failure\":false,\"message\":null,\"subrefs\":[\"create_fn/task_a\",\"create_fn/task_b\"]}"#;
    const R3_VERBOSE: &str = r#"{\"started\":null,\"stopped\":null,\"delayed\":null,\"purpose\":\"update\",\"retries\":0,\"success\":false,\"failure\":true,\"message\":\"Fail \\\"quoted\\\" \\u00fc\\n\",\"subrefs\":null}"#;

    #[test]
    fn stores_match_kopf_byte_for_byte() {
        // Expected values came from Kopf 1.45.2: `SmartProgressStorage(verbose=..., prefix=...)
        // .store(key=id, record=..., body=Body({}), patch=patch)`, then
        // `json.dumps(dict(patch), separators=(',', ':'))`.
        let x64 = "x".repeat(64);
        let (v2, v1) = (
            format!("{}-SItAqA", "x".repeat(56)),
            format!("{}-SItAqA", "x".repeat(39)),
        );
        for (verbose, [e1, e2, e3]) in [
            (false, [R1, R2, R3]),
            (true, [R1_VERBOSE, R2_VERBOSE, R3_VERBOSE]),
        ] {
            let s = storage("kopf.zalando.org", verbose);
            assert_eq!(
                stored(&s, "create_fn", &r1()),
                format!(
                    r#"{{"metadata":{{"annotations":{{"kopf.zalando.org/create_fn":"{e1}"}}}}}}"#
                )
            );
            assert_eq!(
                stored(&s, "create_fn/task_a", &r2()),
                format!(
                    r#"{{"metadata":{{"annotations":{{"kopf.zalando.org/create_fn.task_a":"{e2}"}}}}}}"#
                )
            );
            assert_eq!(
                stored(&s, &x64, &r3()),
                format!(
                    r#"{{"metadata":{{"annotations":{{"kopf.zalando.org/{v2}":"{e3}","kopf.zalando.org/{v1}":"{e3}"}}}}}}"#
                )
            );

            let s = storage("my-op.example.com", verbose);
            let v1 = format!("{}-SItAqA", "x".repeat(38));
            assert_eq!(
                stored(&s, "create_fn", &r1()),
                format!(
                    r#"{{"metadata":{{"annotations":{{"my-op.example.com/create_fn":"{e1}","my-op.example.com/kopf-managed":"yes"}}}}}}"#
                )
            );
            assert_eq!(
                stored(&s, &x64, &r3()),
                format!(
                    r#"{{"metadata":{{"annotations":{{"my-op.example.com/{v2}":"{e3}","my-op.example.com/{v1}":"{e3}","my-op.example.com/kopf-managed":"yes"}}}}}}"#
                )
            );
        }
    }

    #[test]
    fn the_kopf_md_examples_match() {
        // kopf.md §1.3's literal outputs of Kopf's own code.
        assert_eq!(
            r1().to_json(false),
            r#"{"started":"2026-11-22T01:27:42.807251+00:00","delayed":"2026-11-22T01:28:12.807292+00:00","purpose":"create","retries":1,"success":false,"failure":false,"message":"Not ready yet."}"#
        );
        let success = ProgressRecord {
            stopped: Some(ts("2026-11-22T01:27:42.807519Z")),
            subrefs: Some(vec!["create_fn/task_a".into()]),
            ..r2()
        };
        assert_eq!(
            success.to_json(false),
            r#"{"started":"2026-11-22T01:27:42.807251+00:00","stopped":"2026-11-22T01:27:42.807519+00:00","purpose":"create","retries":2,"success":true,"failure":false,"subrefs":["create_fn/task_a"]}"#
        );
    }

    #[test]
    fn the_marker_is_not_repeated() {
        // Kopf 1.45.2: a marker already in the body (any value) is not written again.
        let s = storage("my-op.example.com", false);
        let body = json!({"metadata": {"annotations": {"my-op.example.com/kopf-managed": "no"}}});
        let mut patch = MergePatch::new();
        s.store("a", &r1(), &body, &mut patch);
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            format!(r#"{{"metadata":{{"annotations":{{"my-op.example.com/a":"{R1}"}}}}}}"#)
        );
    }

    #[test]
    fn purges_match_kopf() {
        // Expected value came from Kopf 1.45.2: two stores, then purges of 'create_fn',
        // 'create_fn/task_a', 'create_fn/sub1', 'x'*64 and 'absent' on this body.
        let s = ProgressStorage::default();
        let v1 = format!("kopf.zalando.org/{}-SItAqA", "x".repeat(39));
        let body = json!({
            "metadata": {"annotations": {"kopf.zalando.org/create_fn": "{}", &v1: "{}"}},
            "status": {"kopf": {"progress": {"create_fn": {"retries": 1}, "create_fn/sub1": null}}},
        });
        let mut patch = MergePatch::new();
        s.store("create_fn/task_a", &r1(), &body, &mut patch);
        s.store("other", &r1(), &body, &mut patch);
        let subrefs = ["create_fn/task_a".to_owned(), "create_fn/sub1".to_owned()];
        s.purge("create_fn", &subrefs, &body, &mut patch);
        s.purge(&"x".repeat(64), &[], &body, &mut patch);
        s.purge("absent", &[], &body, &mut patch);
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            format!(
                r#"{{"metadata":{{"annotations":{{"kopf.zalando.org/other":"{R1}","kopf.zalando.org/create_fn":null,"{v1}":null}}}},"status":{{"kopf":{{"progress":{{"create_fn":null,"create_fn/sub1":null}}}}}}}}"#
            )
        );

        // Kopf 1.45.2: a store and a purge of a record the body never had leave `{}`.
        let mut patch = MergePatch::new();
        s.store("a", &r1(), &body, &mut patch);
        s.purge("a", &[], &body, &mut patch);
        assert!(patch.is_empty());
    }

    #[test]
    fn touches_match_kopf() {
        // Expected values came from Kopf 1.45.2: `SmartProgressStorage().touch(body=..., patch=...,
        // value=...)` for the body values None/"x"/"2026" and the values None/"2026".
        let s = ProgressStorage::default();
        let key = "kopf.zalando.org/touch-dummy";
        let cases = [
            (None, None, json!({})),
            (
                None,
                Some("2026"),
                json!({"metadata": {"annotations": {key: "2026"}}}),
            ),
            (
                Some("x"),
                None,
                json!({"metadata": {"annotations": {key: null}}}),
            ),
            (
                Some("x"),
                Some("2026"),
                json!({"metadata": {"annotations": {key: "2026"}}}),
            ),
            (
                Some("2026"),
                None,
                json!({"metadata": {"annotations": {key: null}}}),
            ),
            (Some("2026"), Some("2026"), json!({})),
        ];
        for (in_body, value, expected) in cases {
            let body = match in_body {
                Some(v) => json!({"metadata": {"annotations": {key: v}}}),
                None => json!({}),
            };
            let mut patch = MergePatch::new();
            s.touch(&body, &mut patch, value);
            assert_eq!(
                patch.as_value(),
                &expected,
                "body {in_body:?}, value {value:?}"
            );
        }

        let custom = storage("my-op.example.com", false);
        let mut patch = MergePatch::new();
        custom.touch(&json!({}), &mut patch, Some("v"));
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"metadata":{"annotations":{"my-op.example.com/touch-dummy":"v","my-op.example.com/kopf-managed":"yes"}}}"#
        );
        let mut patch = MergePatch::new();
        custom.touch(&json!({}), &mut patch, None);
        assert!(patch.is_empty());

        let rs = json!({"kind": "ReplicaSet", "metadata": {"ownerReferences": [{"kind": "Deployment"}]}});
        let mut patch = MergePatch::new();
        s.touch(&rs, &mut patch, Some("v"));
        assert_eq!(
            patch.as_value(),
            &json!({"metadata": {"annotations": {"kopf.zalando.org/touch-dummy-ofDRS": "v"}}})
        );
    }

    fn body(annotations: Value, status: Value) -> Value {
        json!({"metadata": {"annotations": annotations}, "status": status})
    }

    #[test]
    fn fetch_mirrors_kopf() {
        // Kopf 1.45.2's `SmartProgressStorage().fetch(key='create_fn', body=...)` on these bodies.
        let s = ProgressStorage::default();
        let fetch =
            |annotations: Value, status: Value| s.fetch("create_fn", &body(annotations, status));
        let legacy = json!({"kopf": {"progress": {"create_fn": {"retries": 2}}}});

        let got = fetch(
            json!({"kopf.zalando.org/create_fn": "{\"retries\":1}"}),
            legacy.clone(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.record.retries, Some(1));
        assert_eq!(got.origin, json!({"retries": 1}));
        assert_eq!(
            got.location,
            RecordLocation::Annotation {
                key: "kopf.zalando.org/create_fn".into()
            }
        );

        // `null` in the annotation falls through to the legacy status.
        let got = fetch(
            json!({"kopf.zalando.org/create_fn": "null"}),
            legacy.clone(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.record.retries, Some(2));
        assert_eq!(
            got.location,
            RecordLocation::Status {
                field: "status.kopf.progress".into()
            }
        );
        let got = fetch(json!({}), legacy).unwrap().unwrap();
        assert_eq!(got.origin, json!({"retries": 2}));

        assert_eq!(
            fetch(
                json!({}),
                json!({"kopf": {"progress": {"create_fn": null}}})
            )
            .unwrap(),
            None
        );
        assert_eq!(fetch(json!({}), json!({"kopf": "junk"})).unwrap(), None);
        assert_eq!(fetch(json!({}), json!("junk")).unwrap(), None);
        assert_eq!(s.fetch("create_fn", &json!({})).unwrap(), None);

        // Kopf raises AttributeError for these two.
        assert!(matches!(
            fetch(json!({}), json!({"kopf": {"progress": "junk"}})),
            Err(Error::LegacyContainerNotAnObject {
                found: "a string",
                ..
            })
        ));
        assert!(matches!(
            fetch(json!({}), json!({"kopf": {"progress": ["junk"]}})),
            Err(Error::LegacyContainerNotAnObject {
                found: "a list",
                ..
            })
        ));
        // Kopf raises JSONDecodeError.
        assert!(matches!(
            fetch(json!({"kopf.zalando.org/create_fn": "garbage"}), json!({})),
            Err(Error::NotJson { .. })
        ));
        // Kopf returns the list and fails later in `HandlerState.from_storage` (AttributeError).
        let err = fetch(json!({"kopf.zalando.org/create_fn": "[1,2]"}), json!({})).unwrap_err();
        assert!(matches!(
            &err,
            Error::Malformed {
                source: RecordError::NotAnObject { found: "a list" },
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "the progress record at kopf.zalando.org/create_fn is malformed"
        );
        // Kopf fails in `parse_iso8601` (ParseError).
        let err = fetch(
            json!({"kopf.zalando.org/create_fn": "{\"started\":\"yesterday\"}"}),
            json!({}),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Malformed {
                source: RecordError::BadField {
                    field: "started",
                    ..
                },
                ..
            }
        ));
        let err = fetch(
            json!({}),
            json!({"kopf": {"progress": {"create_fn": {"retries": -1}}}}),
        )
        .unwrap_err();
        assert!(matches!(
            &err,
            Error::Malformed { location, source: RecordError::BadField { field: "retries", .. } }
                if location == "status.kopf.progress.create_fn"
        ));
    }

    #[test]
    fn fetch_falls_back_to_the_v1_key() {
        // Kopf 1.45.2: `fetch(key='x'*64, ...)` with only the V1 key set returns its record.
        let s = ProgressStorage::default();
        let v1 = format!("kopf.zalando.org/{}-SItAqA", "x".repeat(39));
        let got = s
            .fetch(
                &"x".repeat(64),
                &json!({"metadata": {"annotations": {&v1: "{\"retries\":5}"}}}),
            )
            .unwrap()
            .unwrap();
        assert_eq!(got.record.retries, Some(5));
        assert_eq!(got.location, RecordLocation::Annotation { key: v1 });
    }

    #[test]
    fn records_parse_and_round_trip() {
        for record in [r1(), r2(), r3(), ProgressRecord::default()] {
            for verbose in [false, true] {
                let value = record.to_value(verbose);
                assert_eq!(ProgressRecord::from_value(&value).unwrap(), record);
                let text = record.to_json(verbose);
                let reparsed: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(ProgressRecord::from_value(&reparsed).unwrap(), record);
            }
        }
        // Pre-1.37 naive timestamps and unknown fields are read.
        let old = json!({"started": "2020-02-14T16:58:25.396364", "retries": 1, "success": true, "extra": 1});
        let record = ProgressRecord::from_value(&old).unwrap();
        assert_eq!(record.started, Some(ts("2020-02-14T16:58:25.396364Z")));
        assert_eq!(record.success, Some(true));

        let bad = [
            (json!({"success": "yes"}), "success"),
            (json!({"retries": 1.5}), "retries"),
            (json!({"retries": "1"}), "retries"),
            (json!({"purpose": 1}), "purpose"),
            (json!({"subrefs": "a"}), "subrefs"),
            (json!({"subrefs": [1]}), "subrefs"),
            (json!({"delayed": 1}), "delayed"),
            (json!({"stopped": "2020-13-01"}), "stopped"),
            (json!({"message": []}), "message"),
            (json!({"failure": 0}), "failure"),
        ];
        for (value, field) in bad {
            assert!(
                matches!(ProgressRecord::from_value(&value), Err(RecordError::BadField { field: f, .. }) if f == field),
                "{value}"
            );
        }
        assert_eq!(
            ProgressRecord::from_value(&json!("s")),
            Err(RecordError::NotAnObject { found: "a string" })
        );
    }

    #[test]
    fn only_changed_records_are_written() {
        let s = ProgressStorage::default();
        let body = json!({});
        let origin: Value = serde_json::from_str(&r1().to_json(false)).unwrap();
        assert!(!r1().differs_from(Some(&origin)));
        // Python's `==`: 1.0 == 1 and key order do not matter.
        let reordered = json!({
            "message": "Not ready yet.", "retries": 1.0, "failure": false, "success": false,
            "purpose": "create", "delayed": "2026-11-22T01:28:12.807292+00:00",
            "started": "2026-11-22T01:27:42.807251+00:00",
        });
        assert!(!r1().differs_from(Some(&reordered)));
        assert!(r1().differs_from(None));
        let retried = ProgressRecord {
            retries: Some(2),
            ..r1()
        };
        assert!(retried.differs_from(Some(&origin)));
        // A verbose origin always differs (Kopf compares the non-verbose form).
        assert!(r1().differs_from(Some(&r1().to_value(true))));
        // A naive stored timestamp is rewritten once in the canonical form.
        let naive = json!({"started": "2026-11-22T01:27:42.807251", "retries": 1});
        let record = ProgressRecord::from_value(&naive).unwrap();
        assert!(record.differs_from(Some(&naive)));

        let mut patch = MergePatch::new();
        assert!(!s.store_if_changed("create_fn", &r1(), Some(&origin), &body, &mut patch));
        assert!(patch.is_empty());
        assert!(s.store_if_changed("create_fn", &retried, Some(&origin), &body, &mut patch));
        assert_eq!(
            patch.get(&["metadata", "annotations", "kopf.zalando.org/create_fn"]),
            Some(&json!(retried.to_json(false)))
        );
    }

    #[test]
    fn clear_matches_kopf() {
        // Expected values came from Kopf 1.45.2: `SmartProgressStorage(prefix=...).clear(essence=...)`.
        let essence = json!({
            "spec": {"replicas": 1},
            "metadata": {"annotations": {
                "x": "y",
                "my-op.example.com/last-handled-configuration-ofDRS": "z",
                "my-op.example.com/last-handled-configuration": "w"}},
        });
        let custom = storage("my-op.example.com", false);
        assert_eq!(
            pyjson::dumps(&custom.clear(&essence)),
            r#"{"spec":{"replicas":1},"metadata":{"annotations":{"x":"y"}}}"#
        );
        assert_eq!(ProgressStorage::default().clear(&essence), essence);

        let with_status = json!({
            "spec": {},
            "metadata": {"annotations": {"kopf.zalando.org/a": "1"}},
            "status": {"kopf": {"progress": {"create_fn": {"retries": 1}}}},
        });
        assert_eq!(
            pyjson::dumps(&ProgressStorage::default().clear(&with_status)),
            r#"{"spec":{}}"#
        );
        let with_more_status =
            json!({"status": {"kopf": {"progress": {}, "other": 1}, "phase": "P"}});
        assert_eq!(
            ProgressStorage::default().clear(&with_more_status),
            json!({"status": {"kopf": {"other": 1}, "phase": "P"}})
        );
        assert_eq!(ProgressStorage::default().clear(&json!([1])), json!([1]));
    }

    #[test]
    fn accessors() {
        let s = ProgressStorage::default()
            .with_touch_key("poke")
            .with_legacy_name("op");
        assert!(!s.verbose());
        assert_eq!(s.convention().unwrap().prefix(), "kopf.zalando.org");
        assert_eq!(
            s.status_fields().collect::<Vec<_>>(),
            [["status", "op", "progress"]]
        );
        let mut patch = MergePatch::new();
        s.touch(&json!({}), &mut patch, Some("t"));
        assert_eq!(
            patch.as_value(),
            &json!({"metadata": {"annotations": {"kopf.zalando.org/poke": "t"}}})
        );
        assert_eq!(
            s.keys("create_fn", &json!({})),
            ["kopf.zalando.org/create_fn"]
        );
    }

    /// Kopf 1.45.2's `StatusProgressStorage(name='myop')`: the record dict (with its `None`s as
    /// `null`s) at `status.myop.progress.<id>`, no annotations; the touch field set and reset.
    /// Expected values from Kopf: `patch` after `storage.store(key=..., record=..., body=..., patch=...)`.
    #[test]
    fn status_storage_writes_what_kopf_writes() {
        let s = ProgressStorage::from_layers(vec![ProgressLayer::status("myop", true)]).unwrap();
        let mut patch = MergePatch::new();
        s.store("create_fn", &r1(), &json!({}), &mut patch);
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"status":{"myop":{"progress":{"create_fn":{"started":"2026-11-22T01:27:42.807251+00:00","stopped":null,"delayed":"2026-11-22T01:28:12.807292+00:00","purpose":"create","retries":1,"success":false,"failure":false,"message":"Not ready yet.","subrefs":null}}}}}"#
        );
        // Read back as the API server keeps it (the nulls dropped).
        let body = json!({"status": {"myop": {"progress": {"create_fn": {
            "started": "2026-11-22T01:27:42.807251+00:00", "delayed": "2026-11-22T01:28:12.807292+00:00",
            "purpose": "create", "retries": 1, "success": false, "failure": false,
            "message": "Not ready yet."}}}}});
        let got = s.fetch("create_fn", &body).unwrap().unwrap();
        assert_eq!(got.record, r1());
        assert!(!got.record.differs_from(Some(&got.origin)));
        // Purged with a null; the touch field goes to status, not to annotations.
        let mut patch = MergePatch::new();
        s.purge("create_fn", &[], &body, &mut patch);
        s.touch(&body, &mut patch, Some("2026-11-22T01:27:42.807251"));
        assert_eq!(
            patch.as_value(),
            &json!({"status": {"myop": {"progress": {"create_fn": null},
                "dummy": "2026-11-22T01:27:42.807251"}}})
        );
        // The essence loses the container.
        assert_eq!(
            s.clear(&json!({"spec": {"a": 1}, "status": {"myop": {"progress": {"x": {}}}}})),
            json!({"spec": {"a": 1}})
        );
        assert!(s.convention().is_none());
        assert!(ProgressStorage::from_layers(Vec::new()).is_err());
    }

    /// `MultiProgressStorage([AnnotationsProgressStorage(prefix='my.op', verbose=True),
    /// StatusProgressStorage()])`: reads the first that has a record, writes both.
    #[test]
    fn multi_storage_reads_the_first_and_writes_all() {
        let s = ProgressStorage::from_layers(vec![
            ProgressLayer::Annotations {
                convention: KeyConvention::new("my.op", true).unwrap(),
                touch_key: "touch-dummy".into(),
                verbose: true,
            },
            ProgressLayer::status("kopf", true),
        ])
        .unwrap();
        let mut patch = MergePatch::new();
        s.store("h", &r3(), &json!({}), &mut patch);
        let value = patch.as_value();
        assert_eq!(
            value["metadata"]["annotations"]["my.op/h"],
            json!(r3().to_json(true))
        );
        assert_eq!(
            value["metadata"]["annotations"]["my.op/kopf-managed"],
            "yes"
        );
        assert_eq!(value["status"]["kopf"]["progress"]["h"]["failure"], true);
        let body = json!({"status": {"kopf": {"progress": {"h": {"retries": 7}}}}});
        assert_eq!(
            s.fetch("h", &body).unwrap().unwrap().record.retries,
            Some(7)
        );
    }
}
