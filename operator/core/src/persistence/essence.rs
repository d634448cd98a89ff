//! The diff-base: the "essence" of an object as last handled, stored by default in
//! `kopf.zalando.org/last-handled-configuration` (Kopf's `AnnotationsDiffBaseStorage`), or in a
//! status field (`StatusDiffBaseStorage`), or both (`MultiDiffBaseStorage`): [`DiffBaseLayer`].
//!
//! The essence is the body without `apiVersion`, `kind`, `metadata` and `status`, plus the labels
//! and the annotations that are not any Kopf-based operator's storage, plus the "extra fields" that
//! field handlers watch (e.g. `status.phase`). It is stored as compact, ASCII-escaped JSON with a
//! trailing newline, like kubectl's own `last-applied-configuration`.

use serde_json::{Map, Value};

use super::diff::FieldPath;
use super::keys::{
    self, KUBECTL_LAST_APPLIED, KeyConvention, LAST_HANDLED_CONFIGURATION_KEY,
    detect_marked_prefixes, is_under_prefixes,
};
use super::pyjson::{self, py_falsy};
use crate::patch::MergePatch;

/// The failure to read a stored diff-base.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stored value is not valid JSON (Kopf's `json.loads` raises `JSONDecodeError`).
    #[error("the diff-base at {key} is not valid JSON")]
    NotJson {
        /// The annotation key or the status field.
        key: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The annotation is JSON but not an object (Kopf fails later, in `clear()`, with
    /// `AttributeError`).
    #[error("the diff-base at {key} holds {found} instead of an object")]
    NotAnObject {
        /// The annotation key or the status field.
        key: String,
        /// The JSON type found (`"a list"`, `"a string"`, ...).
        found: &'static str,
    },
    /// The stored value is not a string (impossible in an annotation; possible in a status
    /// field written by someone else).
    #[error("the diff-base at {key} is not a string")]
    NotAString {
        /// The annotation key or the status field.
        key: String,
    },
}

/// One place where the diff-base is kept: one of Kopf's diff-base storage classes, with its own
/// `ignored_fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffBaseLayer {
    /// `AnnotationsDiffBaseStorage(prefix=, key=, v1=)`: `<prefix>/<key>` (and its V1 key),
    /// compact JSON with a trailing newline.
    Annotations {
        /// The prefix and the V1 keys.
        convention: KeyConvention,
        /// The record name (`last-handled-configuration`).
        key: String,
        /// Fields dropped from every essence (`ignored_fields=`).
        ignored_fields: Vec<FieldPath>,
    },
    /// `StatusDiffBaseStorage(name=, field=)`: the field (`status.kopf.last-handled-configuration`),
    /// compact JSON without a newline.
    Status {
        /// Where the essence is kept.
        field: FieldPath,
        /// Fields dropped from every essence (`ignored_fields=`).
        ignored_fields: Vec<FieldPath>,
    },
}

impl DiffBaseLayer {
    fn ignored_fields(&self) -> &[FieldPath] {
        match self {
            DiffBaseLayer::Annotations { ignored_fields, .. }
            | DiffBaseLayer::Status { ignored_fields, .. } => ignored_fields,
        }
    }
}

/// Where and how the diff-base is kept: Kopf's diff-base storages, one or several
/// (`MultiDiffBaseStorage`: the first layer holding an essence wins on reading; it is written to
/// every layer). The default is Kopf's `AnnotationsDiffBaseStorage`.
///
/// # Guarantees
///
/// [`DiffBaseStorage::build`] + [`DiffBaseStorage::store`] produce the same bytes as Kopf 1.45's
/// `storage.build(body=..., extra_fields=...)` + `storage.store(...)`, given the extra fields in
/// the same order.
///
/// # Caveats
///
/// Kopf collects the extra fields in a Python `set`, so with two or more extra fields that create
/// new keys (e.g. `status.a` and `status.b`) Kopf's key order varies with the hash seed; here it is
/// the order of `extra_fields`. Where Kopf would crash on a structurally broken body (`metadata`
/// that is not an object, `annotations: null`), this treats the broken part as absent. An extra
/// field whose path passes through a value that is not an object (`spec.a.b` with `spec.a: null`)
/// copies nothing, as Kopf's `dicts.resolve` documents it should; Kopf's `cherrypick` catches
/// only the `KeyError` of a missing key, so its processing of such an object raises `TypeError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffBaseStorage {
    layers: Vec<DiffBaseLayer>,
}

impl Default for DiffBaseStorage {
    /// `kopf.zalando.org/last-handled-configuration` (and the V1 key), no ignored fields.
    fn default() -> Self {
        DiffBaseStorage::new(KeyConvention::default(), LAST_HANDLED_CONFIGURATION_KEY)
    }
}

impl DiffBaseStorage {
    /// A storage under `convention`'s prefix with the record name `key`
    /// (Kopf: `AnnotationsDiffBaseStorage(prefix=..., key=..., v1=...)`).
    pub fn new(convention: KeyConvention, key: impl Into<String>) -> Self {
        DiffBaseStorage {
            layers: vec![DiffBaseLayer::Annotations {
                convention,
                key: key.into(),
                ignored_fields: Vec::new(),
            }],
        }
    }

    /// Any combination of Kopf's diff-base storages (`MultiDiffBaseStorage`), in reading order.
    ///
    /// # Errors
    /// An empty list: there would be nowhere to keep the essence.
    pub fn from_layers(layers: Vec<DiffBaseLayer>) -> Result<Self, &'static str> {
        if layers.is_empty() {
            return Err("a diff-base storage needs at least one storage");
        }
        Ok(DiffBaseStorage { layers })
    }

    /// The layers, in reading order.
    pub fn layers(&self) -> &[DiffBaseLayer] {
        &self.layers
    }

    /// Also drops these fields from every essence (Kopf's `ignored_fields=`), after everything
    /// else; set on every layer.
    pub fn with_ignored_fields(mut self, fields: impl IntoIterator<Item = FieldPath>) -> Self {
        let fields: Vec<FieldPath> = fields.into_iter().collect();
        for layer in &mut self.layers {
            match layer {
                DiffBaseLayer::Annotations { ignored_fields, .. }
                | DiffBaseLayer::Status { ignored_fields, .. } => {
                    ignored_fields.clone_from(&fields)
                }
            }
        }
        self
    }

    /// The annotation keys of the diff-base on this body (V2, then V1 if different), in every
    /// annotations layer.
    pub fn keys(&self, body: &Value) -> Vec<String> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                DiffBaseLayer::Annotations {
                    convention, key, ..
                } => Some(convention.make_keys(key, body)),
                DiffBaseLayer::Status { .. } => None,
            })
            .flatten()
            .collect()
    }

    /// Builds the essence of `body` (Kopf's `DiffBaseStorage.build` of the storage, or of each
    /// storage in turn for several).
    ///
    /// `extra_fields` are the fields of the field handlers for this resource (e.g.
    /// `["status", "phase"]`), restored from the body even where the essence would drop them.
    /// A non-object body gives an empty essence.
    pub fn build(&self, body: &Value, extra_fields: &[FieldPath]) -> Value {
        let Some(source) = body.as_object() else {
            return Value::Object(Map::new());
        };
        let mut essence = source.clone();
        for field in ["apiVersion", "kind", "metadata", "status"] {
            essence.shift_remove(field);
        }

        for field in [["metadata", "labels"], ["metadata", "annotations"]] {
            cherrypick(source, &mut essence, &field);
        }

        if let Some(Value::Object(annotations)) =
            resolve_mut(&mut essence, &["metadata", "annotations"])
        {
            let marked = detect_marked_prefixes(annotations.keys().map(String::as_str));
            annotations
                .retain(|key, _| !is_under_prefixes(key, &marked) && key != KUBECTL_LAST_APPLIED);
        }

        // Sharding's labels say which replica handles the object, not what the object is: moving
        // it between shards is not a change for its handlers.
        if let Some(Value::Object(labels)) = resolve_mut(&mut essence, &["metadata", "labels"]) {
            labels.retain(|key, _| !crate::sharding::is_sharding_label(key));
        }

        for field in extra_fields {
            cherrypick(source, &mut essence, field);
        }

        remove_empty_stanzas(&mut essence);

        for layer in &self.layers {
            for field in layer.ignored_fields() {
                remove_field(&mut essence, field);
            }
            match layer {
                DiffBaseLayer::Annotations {
                    convention, key, ..
                } => {
                    let own_keys = convention.make_keys(key, body);
                    remove_annotations(&mut essence, |key| own_keys.iter().any(|k| k == key));
                    remove_empty_stanzas(&mut essence);
                }
                DiffBaseLayer::Status { field, .. } => remove_field(&mut essence, field),
            }
        }
        Value::Object(essence)
    }

    /// Reads the stored essence from the first layer that has one: an annotation key (V2, then
    /// V1), or the status field, holding a non-`null` JSON value. `Ok(None)` means no diff-base,
    /// i.e. the object is new to Kopf.
    ///
    /// # Errors
    ///
    /// A stored value that is not JSON, or not a JSON object. Kopf raises there, and the error
    /// escapes the object's worker: Kopf logs "Event processing has failed with an unrecoverable
    /// error" and stops the whole resource watcher. The caller should rather report it on the
    /// object and leave the object alone; nothing is derived from a broken diff-base.
    ///
    /// # Caveats
    ///
    /// A stored object whose `metadata`, `metadata.annotations`, `status` or `status.kopf` is not
    /// an object (e.g. `{"metadata": null}`; Kopf never writes one) is read as it is, and
    /// [`ProgressStorage::clear`](super::ProgressStorage::clear) leaves the broken part alone:
    /// Kopf raises there, in its storages' `clear()` (`AttributeError`, `TypeError`).
    pub fn fetch(&self, body: &Value) -> Result<Option<Value>, Error> {
        for layer in &self.layers {
            let candidates: Vec<(String, Option<&Value>)> = match layer {
                DiffBaseLayer::Annotations {
                    convention, key, ..
                } => {
                    let annotations = keys::annotations(body);
                    convention
                        .make_keys(key, body)
                        .into_iter()
                        .map(|k| {
                            let stored = annotations.and_then(|a| a.get(&k));
                            (k, stored)
                        })
                        .collect()
                }
                DiffBaseLayer::Status { field, .. } => {
                    vec![(field.join("."), super::diff::resolve(body, field))]
                }
            };
            for (key, stored) in candidates {
                let text = match stored {
                    None | Some(Value::Null) => continue,
                    Some(Value::String(text)) => text,
                    Some(_) => return Err(Error::NotAString { key }),
                };
                let decoded: Value =
                    serde_json::from_str(text).map_err(|source| Error::NotJson {
                        key: key.clone(),
                        source,
                    })?;
                match decoded {
                    Value::Null => continue,
                    Value::Object(_) => return Ok(Some(decoded)),
                    other => {
                        return Err(Error::NotAnObject {
                            key,
                            found: json_type(&other),
                        });
                    }
                }
            }
        }
        Ok(None)
    }

    /// Kopf's encoding of an essence in an annotation:
    /// `json.dumps(essence, separators=(',', ':')) + "\n"`.
    pub fn encode(essence: &Value) -> String {
        let mut text = pyjson::dumps(essence);
        text.push('\n');
        text
    }

    /// Writes `essence` into `patch` in every layer: under every annotation key (V2, and V1 if
    /// different) plus the `kopf-managed` marker for a custom prefix; into the status field
    /// without the newline (Kopf's `StatusDiffBaseStorage.store`).
    ///
    /// Kopf stores it only when the cycle is done and `essence != old` (by Python's `==`, see
    /// [`super::pyjson::py_eq`]); that decision is the caller's.
    pub fn store(&self, body: &Value, patch: &mut MergePatch, essence: &Value) {
        for layer in &self.layers {
            match layer {
                DiffBaseLayer::Annotations {
                    convention, key, ..
                } => {
                    let encoded = Value::String(Self::encode(essence));
                    for key in convention.make_keys(key, body) {
                        patch.set(&["metadata", "annotations", key.as_str()], encoded.clone());
                    }
                    convention.store_marker(body, patch);
                }
                DiffBaseLayer::Status { field, .. } => {
                    patch.set(field, Value::String(pyjson::dumps(essence)));
                }
            }
        }
    }
}

/// The JSON type of a value, for messages.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Kopf's `dicts.cherrypick` for one field: copy `src`'s value at `path` into `dst`, creating the
/// parents; a missing source (or a non-object on the way) copies nothing.
fn cherrypick<S: AsRef<str>>(src: &Map<String, Value>, dst: &mut Map<String, Value>, path: &[S]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(mut value) = src.get(first.as_ref()) else {
        return;
    };
    for key in rest {
        let Some(next) = value.as_object().and_then(|m| m.get(key.as_ref())) else {
            return;
        };
        value = next;
    }
    ensure(dst, path, value.clone());
}

/// Kopf's `dicts.ensure`: set `path` to `value`, creating missing parents as objects at the end.
fn ensure<S: AsRef<str>>(dst: &mut Map<String, Value>, path: &[S], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = dst;
    for key in parents {
        let slot = current
            .entry(key.as_ref())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(map) = slot else {
            unreachable!("just made an object")
        };
        current = map;
    }
    current.insert(last.as_ref().to_owned(), value);
}

fn resolve_mut<'a>(map: &'a mut Map<String, Value>, path: &[&str]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    let mut current = map.get_mut(*first)?;
    for key in rest {
        current = current.as_object_mut()?.get_mut(*key)?;
    }
    Some(current)
}

/// Kopf's `dicts.remove`: drop the field at `path` and every parent object left exactly `{}`;
/// a missing field or a non-object on the way changes nothing.
pub(super) fn remove_field<S: AsRef<str>>(map: &mut Map<String, Value>, path: &[S]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.shift_remove(first.as_ref());
        return;
    }
    let Some(Value::Object(child)) = map.get_mut(first.as_ref()) else {
        return;
    };
    remove_field(child, rest);
    if child.is_empty() {
        map.shift_remove(first.as_ref());
    }
}

/// Kopf's `StorageStanzaCleaner.remove_annotations`: drop the matching annotations, keeping the
/// order of the others.
pub(super) fn remove_annotations(essence: &mut Map<String, Value>, drop: impl Fn(&str) -> bool) {
    if let Some(Value::Object(annotations)) = resolve_mut(essence, &["metadata", "annotations"]) {
        annotations.retain(|key, _| !drop(key));
    }
}

/// Kopf's `StorageStanzaCleaner.remove_empty_stanzas`: drop `metadata.annotations`,
/// `metadata.labels`, `metadata` and `status` if they are falsy (in Python's sense).
pub(super) fn remove_empty_stanzas(essence: &mut Map<String, Value>) {
    if let Some(Value::Object(metadata)) = essence.get_mut("metadata") {
        for stanza in ["annotations", "labels"] {
            if metadata.get(stanza).is_some_and(py_falsy) {
                metadata.shift_remove(stanza);
            }
        }
    }
    for stanza in ["metadata", "status"] {
        if essence.get(stanza).is_some_and(py_falsy) {
            essence.shift_remove(stanza);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::diff::parse_field;
    use serde_json::json;

    fn full_body() -> Value {
        json!({
            "kind": "KopfExample", "apiVersion": "kopf.dev/v1",
            "metadata": {
                "name": "kopf-example-1", "namespace": "default", "uid": "u-1", "resourceVersion": "123",
                "annotations": {
                    "someannotation": "somevalue",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"x\":1}\n",
                    "kopf.zalando.org/last-handled-configuration": "{\"spec\":{}}\n",
                    "kopf.zalando.org/create_fn": "{\"started\":\"2020-01-01T00:00:00.000000+00:00\"}",
                    "sub.kopf.zalando.org/thing": "a",
                    "kopf.zalando.org.evil/thing": "b",
                    "other-op.example.com/kopf-managed": "yes",
                    "other-op.example.com/handler": "c",
                    "other-op.example.com": "no-slash-key",
                    "plain": "ü€😀",
                },
                "labels": {"somelabel": "somevalue"},
                "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
            },
            "spec": {"duration": "1m", "field": "value", "items": ["item1", "item2"], "f": 1.5,
                     "big": 1e16, "small": 1e-05, "neg": -0.0, "i": 10, "n": null, "b": true},
            "status": {"phase": "Running", "kopf": {"progress": {"create_fn": {"retries": 1}}}, "other": 1},
            "data": {"k": "v"},
        })
    }

    fn fields(specs: &[&str]) -> Vec<FieldPath> {
        specs.iter().map(|s| parse_field(s)).collect()
    }

    fn storage(prefix: &str) -> DiffBaseStorage {
        DiffBaseStorage::new(
            KeyConvention::new(prefix, true).unwrap(),
            LAST_HANDLED_CONFIGURATION_KEY,
        )
    }

    /// The essence's JSON (as Kopf's `json.dumps(..., separators=(',', ':'))`).
    fn built(storage: &DiffBaseStorage, body: &Value, extra: &[&str]) -> String {
        pyjson::dumps(&storage.build(body, &fields(extra)))
    }

    const FULL_SPEC: &str = r#"{"duration":"1m","field":"value","items":["item1","item2"],"f":1.5,"big":1e+16,"small":1e-05,"neg":-0.0,"i":10,"n":null,"b":true}"#;
    const FULL_ANNOTATIONS: &str = r#"{"someannotation":"somevalue","kopf.zalando.org.evil/thing":"b","other-op.example.com":"no-slash-key","plain":"\u00fc\u20ac\ud83d\ude00"}"#;

    #[test]
    fn essence_matches_kopf_byte_for_byte() {
        // Expected values came from Kopf 1.45.2: `json.dumps(AnnotationsDiffBaseStorage().build(
        // body=Body(full), extra_fields=...), separators=(',', ':'))`.
        let s = DiffBaseStorage::default();
        let body = full_body();
        assert_eq!(
            built(&s, &body, &[]),
            format!(
                r#"{{"spec":{FULL_SPEC},"data":{{"k":"v"}},"metadata":{{"labels":{{"somelabel":"somevalue"}},"annotations":{FULL_ANNOTATIONS}}}}}"#
            )
        );
        assert_eq!(
            built(
                &s,
                &body,
                &[
                    "status.phase",
                    "metadata.name",
                    "spec.field",
                    "status.missing",
                    "data"
                ]
            ),
            format!(
                r#"{{"spec":{FULL_SPEC},"data":{{"k":"v"}},"metadata":{{"labels":{{"somelabel":"somevalue"}},"annotations":{FULL_ANNOTATIONS},"name":"kopf-example-1"}},"status":{{"phase":"Running"}}}}"#
            )
        );
        assert_eq!(
            built(&s, &body, &["status.kopf.progress"]),
            format!(
                r#"{{"spec":{FULL_SPEC},"data":{{"k":"v"}},"metadata":{{"labels":{{"somelabel":"somevalue"}},"annotations":{FULL_ANNOTATIONS}}},"status":{{"kopf":{{"progress":{{"create_fn":{{"retries":1}}}}}}}}}}"#
            )
        );
    }

    #[test]
    fn store_matches_kopf_byte_for_byte() {
        // Expected value came from Kopf 1.45.2: `storage.store(body=..., patch=patch, essence=...)`,
        // then `json.dumps(dict(patch), separators=(',', ':'))`.
        let s = DiffBaseStorage::default();
        let body = full_body();
        let mut patch = MergePatch::new();
        s.store(&body, &mut patch, &s.build(&body, &[]));
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"metadata":{"annotations":{"kopf.zalando.org/last-handled-configuration":"{\"spec\":{\"duration\":\"1m\",\"field\":\"value\",\"items\":[\"item1\",\"item2\"],\"f\":1.5,\"big\":1e+16,\"small\":1e-05,\"neg\":-0.0,\"i\":10,\"n\":null,\"b\":true},\"data\":{\"k\":\"v\"},\"metadata\":{\"labels\":{\"somelabel\":\"somevalue\"},\"annotations\":{\"someannotation\":\"somevalue\",\"kopf.zalando.org.evil/thing\":\"b\",\"other-op.example.com\":\"no-slash-key\",\"plain\":\"\\u00fc\\u20ac\\ud83d\\ude00\"}}}\n"}}}"#
        );
    }

    #[test]
    fn the_kopf_md_example_matches() {
        // The example in kopf.md §1.2, generated by Kopf from examples/obj.yaml.
        let body = json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "kopf-example-1", "labels": {"somelabel": "somevalue"},
                         "annotations": {"someannotation": "somevalue"}},
            "spec": {"duration": "1m", "field": "value", "items": ["item1", "item2"]},
        });
        let s = DiffBaseStorage::default();
        assert_eq!(
            DiffBaseStorage::encode(&s.build(&body, &[])),
            "{\"spec\":{\"duration\":\"1m\",\"field\":\"value\",\"items\":[\"item1\",\"item2\"]},\"metadata\":{\"labels\":{\"somelabel\":\"somevalue\"},\"annotations\":{\"someannotation\":\"somevalue\"}}}\n"
        );
    }

    #[test]
    fn custom_prefixes_match_kopf() {
        // Expected values came from Kopf 1.45.2 with prefix='my-op.example.com'.
        let s = storage("my-op.example.com");
        let mut body = full_body();
        let mut patch = MergePatch::new();
        s.store(&body, &mut patch, &json!({}));
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"metadata":{"annotations":{"my-op.example.com/last-handled-configuration":"{}\n","my-op.example.com/kopf-managed":"yes"}}}"#
        );

        // Unmarked custom prefix: only the storage's own key is dropped, other keys stay.
        let annotations = body["metadata"]["annotations"].as_object_mut().unwrap();
        annotations.insert(
            "my-op.example.com/last-handled-configuration".into(),
            json!("x"),
        );
        annotations.insert("my-op.example.com/other".into(), json!("y"));
        let unmarked = FULL_ANNOTATIONS.replace("}", r#","my-op.example.com/other":"y"}"#);
        assert_eq!(
            built(&s, &body, &[]),
            format!(
                r#"{{"spec":{FULL_SPEC},"data":{{"k":"v"}},"metadata":{{"labels":{{"somelabel":"somevalue"}},"annotations":{unmarked}}}}}"#
            )
        );

        // Marked: the whole prefix goes.
        body["metadata"]["annotations"]["my-op.example.com/kopf-managed"] = json!("yes");
        assert_eq!(
            built(&s, &body, &[]),
            format!(
                r#"{{"spec":{FULL_SPEC},"data":{{"k":"v"}},"metadata":{{"labels":{{"somelabel":"somevalue"}},"annotations":{FULL_ANNOTATIONS}}}}}"#
            )
        );
    }

    #[test]
    fn sharding_labels_are_not_part_of_the_essence() {
        let s = DiffBaseStorage::default();
        let body = json!({"spec": {"x": 1}, "metadata": {"labels": {
            "app": "a",
            "shard.alpha.sharding.timebertt.dev/r": "core-0",
            "drain.alpha.sharding.timebertt.dev/r": "true",
        }}});
        assert_eq!(
            serde_json::to_string(&s.build(&body, &[])).unwrap(),
            r#"{"spec":{"x":1},"metadata":{"labels":{"app":"a"}}}"#
        );
        let only = json!({"spec": {}, "metadata": {"labels": {"shard.alpha.sharding.timebertt.dev/r": "c"}}});
        assert_eq!(
            serde_json::to_string(&s.build(&only, &[])).unwrap(),
            r#"{"spec":{}}"#
        );
    }

    #[test]
    fn small_bodies_match_kopf() {
        // Expected values came from Kopf 1.45.2's `AnnotationsDiffBaseStorage().build(...)`.
        let s = DiffBaseStorage::default();
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
                vec![],
                "{}",
            ),
            (
                json!({"kind": "X", "metadata": {"labels": {}, "annotations": {"kopf.zalando.org/x": "y"}}, "spec": {}}),
                vec![],
                r#"{"spec":{}}"#,
            ),
            (
                json!({"spec": {"b": 1, "a": 2}, "kind": "X", "zzz": 1,
                       "metadata": {"annotations": {"a": "b"}, "labels": {"l": "v"}},
                       "apiVersion": "v1", "aaa": {}}),
                vec![],
                r#"{"spec":{"b":1,"a":2},"zzz":1,"aaa":{},"metadata":{"labels":{"l":"v"},"annotations":{"a":"b"}}}"#,
            ),
            (json!({"spec": {"x": 1}}), vec![], r#"{"spec":{"x":1}}"#),
            (
                json!({"metadata": {"name": "n"}, "status": {"phase": "P"}}),
                vec!["status.phase"],
                r#"{"status":{"phase":"P"}}"#,
            ),
            (
                json!({"metadata": {"labels": null, "annotations": {"a": "b"}}, "spec": null}),
                vec![],
                r#"{"spec":null,"metadata":{"annotations":{"a":"b"}}}"#,
            ),
            (
                json!({"metadata": {"name": "n", "annotations": {"a": "b"}}, "spec": {"x": 1}}),
                vec!["metadata.name"],
                r#"{"spec":{"x":1},"metadata":{"annotations":{"a":"b"},"name":"n"}}"#,
            ),
        ];
        for (body, extra, expected) in cases {
            assert_eq!(built(&s, &body, &extra), expected, "for {body}");
        }
        assert_eq!(s.build(&json!("not an object"), &[]), json!({}));
    }

    #[test]
    fn ignored_fields_match_kopf() {
        // Expected value came from Kopf 1.45.2: `AnnotationsDiffBaseStorage(ignored_fields=[
        // 'spec.items', ('spec', 'duration'), 'metadata.labels.somelabel'])`.
        let s = DiffBaseStorage::default().with_ignored_fields(fields(&[
            "spec.items",
            "spec.duration",
            "metadata.labels.somelabel",
            "spec.field.deeper",
            "nothing.here",
        ]));
        assert_eq!(
            built(&s, &full_body(), &[]),
            format!(
                r#"{{"spec":{{"field":"value","f":1.5,"big":1e+16,"small":1e-05,"neg":-0.0,"i":10,"n":null,"b":true}},"data":{{"k":"v"}},"metadata":{{"annotations":{FULL_ANNOTATIONS}}}}}"#
            )
        );
    }

    #[test]
    fn replicasets_of_deployments_match_kopf() {
        // Expected values came from Kopf 1.45.2 (`-ofDRS` keys).
        let rs = json!({"kind": "ReplicaSet",
            "metadata": {"ownerReferences": [{"kind": "Deployment"}], "annotations": {
                "x": "y",
                "my-op.example.com/last-handled-configuration-ofDRS": "z",
                "my-op.example.com/last-handled-configuration": "w"}},
            "spec": {"replicas": 1}});
        let custom = storage("my-op.example.com");
        assert_eq!(
            built(&custom, &rs, &[]),
            r#"{"spec":{"replicas":1},"metadata":{"annotations":{"x":"y","my-op.example.com/last-handled-configuration":"w"}}}"#
        );
        let mut patch = MergePatch::new();
        custom.store(&rs, &mut patch, &custom.build(&rs, &[]));
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"metadata":{"annotations":{"my-op.example.com/last-handled-configuration-ofDRS":"{\"spec\":{\"replicas\":1},\"metadata\":{\"annotations\":{\"x\":\"y\",\"my-op.example.com/last-handled-configuration\":\"w\"}}}\n","my-op.example.com/kopf-managed":"yes"}}}"#
        );
        let default = DiffBaseStorage::default();
        assert_eq!(
            built(&default, &rs, &[]),
            r#"{"spec":{"replicas":1},"metadata":{"annotations":{"x":"y","my-op.example.com/last-handled-configuration-ofDRS":"z","my-op.example.com/last-handled-configuration":"w"}}}"#
        );
        assert_eq!(
            default.keys(&rs),
            ["kopf.zalando.org/last-handled-configuration-ofDRS"]
        );
    }

    fn with_annotation(key: &str, value: Value) -> Value {
        json!({"metadata": {"annotations": {key: value}}})
    }

    #[test]
    fn fetch_mirrors_kopf() {
        // Kopf 1.45.2: valid JSON objects are returned, `null` counts as absent, broken JSON raises
        // JSONDecodeError, and non-object JSON makes `clear()` raise AttributeError.
        let s = DiffBaseStorage::default();
        let key = "kopf.zalando.org/last-handled-configuration";
        let fetch = |v: Value| s.fetch(&with_annotation(key, v));
        assert_eq!(
            fetch(json!("{\"spec\":{\"x\":1}}\n")).unwrap(),
            Some(json!({"spec": {"x": 1}}))
        );
        assert_eq!(fetch(json!("{}")).unwrap(), Some(json!({})));
        assert_eq!(fetch(json!("null")).unwrap(), None);
        assert_eq!(fetch(Value::Null).unwrap(), None);
        assert_eq!(s.fetch(&json!({})).unwrap(), None);
        assert!(matches!(
            fetch(json!("not json")),
            Err(Error::NotJson { .. })
        ));
        assert!(matches!(
            fetch(json!("{\"spec\":1} trailing")),
            Err(Error::NotJson { .. })
        ));
        assert!(matches!(
            fetch(json!("5")),
            Err(Error::NotAnObject {
                found: "a number",
                ..
            })
        ));
        assert!(matches!(
            fetch(json!("[1]")),
            Err(Error::NotAnObject {
                found: "a list",
                ..
            })
        ));
        assert!(matches!(
            fetch(json!("\"s\"")),
            Err(Error::NotAnObject {
                found: "a string",
                ..
            })
        ));
        assert!(matches!(fetch(json!(5)), Err(Error::NotAString { .. })));
        let message = fetch(json!("[1]")).unwrap_err().to_string();
        assert_eq!(
            message,
            "the diff-base at kopf.zalando.org/last-handled-configuration holds a list instead of an object"
        );
    }

    #[test]
    fn fetch_falls_back_to_the_v1_key() {
        // Kopf 1.45.2 with key='x'*60: the V2 key holds "null", so the V1 key's value is used.
        let s = DiffBaseStorage::new(KeyConvention::default(), "x".repeat(60));
        let keys = s.keys(&json!({}));
        assert_eq!(
            keys,
            [
                format!("kopf.zalando.org/{}", "x".repeat(60)),
                format!("kopf.zalando.org/{}-cZCdkw", "x".repeat(39)),
            ]
        );
        let body = json!({"metadata": {"annotations": {&keys[1]: "{\"v1\":1}", &keys[0]: "null"}}});
        assert_eq!(s.fetch(&body).unwrap(), Some(json!({"v1": 1})));
    }

    #[test]
    fn build_fetch_round_trip() {
        let s = DiffBaseStorage::default();
        let body = full_body();
        let essence = s.build(&body, &fields(&["status.phase"]));
        let mut patch = MergePatch::new();
        s.store(&body, &mut patch, &essence);
        let mut patched = body.clone();
        patch.apply_to(&mut patched);
        assert_eq!(s.fetch(&patched).unwrap(), Some(essence.clone()));
        // Storing does not change the essence: the storage's own key is never part of it.
        assert_eq!(s.build(&patched, &fields(&["status.phase"])), essence);
        assert_eq!(
            s.layers(),
            [DiffBaseLayer::Annotations {
                convention: KeyConvention::default(),
                key: LAST_HANDLED_CONFIGURATION_KEY.into(),
                ignored_fields: Vec::new(),
            }]
        );
    }
}
