//! The storages as the core's options name them (`--progress-storage`, `--diffbase-storage`):
//! a word for Kopf's common choices, or a JSON description of any of Kopf's storage classes with
//! their options — what the Python SDK sends for `settings.persistence.*_storage`.
//!
//! ```text
//! progress:  smart | annotations | status
//!            {"annotations": {"prefix": P, "verbose": B, "touch_key": K, "v1": B}}
//!            {"status": {"field": "status.kopf.progress", "touch_field": "status.kopf.dummy", "write": B}}
//!            {"multi": [SPEC, ...]}
//! diff-base: annotations | status
//!            {"annotations": {"prefix": P, "key": K, "v1": B, "ignored_fields": [FIELD, ...]}}
//!            {"status": {"field": "status.kopf.last-handled-configuration", "ignored_fields": [...]}}
//!            {"multi": [SPEC, ...]}
//! ```
//!
//! A FIELD is a dotted string or a list of strings. Missing options take Kopf's defaults; an
//! annotations `prefix` defaults to the core's `--prefix`. Unknown words, kinds and options are
//! errors, never ignored.

use serde_json::{Map, Value};

use super::diff::{FieldPath, parse_field};
use super::essence::{DiffBaseLayer, DiffBaseStorage};
use super::keys::{KeyConvention, LAST_HANDLED_CONFIGURATION_KEY, TOUCH_DUMMY_KEY};
use super::progress::{ProgressLayer, ProgressStorage};

/// A storage description that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Neither a known word nor JSON.
    #[error("{0:?} is neither a storage name ({1}) nor a JSON description")]
    Unknown(String, &'static str),
    /// The JSON is not shaped as a storage description.
    #[error("{0}")]
    Invalid(String),
}

const PROGRESS_WORDS: &str = "smart, annotations, status";
const DIFFBASE_WORDS: &str = "annotations, status";

/// The progress storage that `spec` describes.
///
/// # Errors
/// An unknown word, malformed JSON, an unknown kind or option, a value of the wrong type, an
/// invalid prefix, an empty `multi`.
pub fn progress_storage(spec: &str, default_prefix: &str) -> Result<ProgressStorage, SpecError> {
    let convention = || convention(default_prefix, &Map::new());
    let layers = match spec.trim() {
        "smart" => vec![
            ProgressLayer::annotations(convention()?),
            ProgressLayer::status("kopf", false),
        ],
        "annotations" => vec![ProgressLayer::annotations(convention()?)],
        "status" => vec![ProgressLayer::status("kopf", true)],
        text if text.starts_with('{') => progress_layers(&json(text)?, default_prefix)?,
        other => return Err(SpecError::Unknown(other.to_owned(), PROGRESS_WORDS)),
    };
    ProgressStorage::from_layers(layers).map_err(|e| SpecError::Invalid(e.to_owned()))
}

/// The diff-base storage that `spec` describes.
///
/// # Errors
/// As [`progress_storage`].
pub fn diffbase_storage(spec: &str, default_prefix: &str) -> Result<DiffBaseStorage, SpecError> {
    let layers = match spec.trim() {
        "annotations" => vec![DiffBaseLayer::Annotations {
            convention: convention(default_prefix, &Map::new())?,
            key: LAST_HANDLED_CONFIGURATION_KEY.to_owned(),
            ignored_fields: Vec::new(),
        }],
        "status" => vec![DiffBaseLayer::Status {
            field: parse_field("status.kopf.last-handled-configuration"),
            ignored_fields: Vec::new(),
        }],
        text if text.starts_with('{') => diffbase_layers(&json(text)?, default_prefix)?,
        other => return Err(SpecError::Unknown(other.to_owned(), DIFFBASE_WORDS)),
    };
    DiffBaseStorage::from_layers(layers).map_err(|e| SpecError::Invalid(e.to_owned()))
}

fn json(text: &str) -> Result<Value, SpecError> {
    serde_json::from_str(text).map_err(|e| SpecError::Invalid(format!("not valid JSON: {e}")))
}

/// The one `{kind: options}` pair of a description.
fn kind_of(value: &Value) -> Result<(&str, &Value), SpecError> {
    match value.as_object() {
        Some(map) if map.len() == 1 => {
            let (kind, options) = map.iter().next().unwrap_or_else(|| unreachable!());
            Ok((kind.as_str(), options))
        }
        _ => Err(SpecError::Invalid(format!(
            "a storage is one {{\"KIND\": OPTIONS}} object, got {value}"
        ))),
    }
}

fn options<'a>(
    kind: &str,
    value: &'a Value,
    known: &[&str],
) -> Result<&'a Map<String, Value>, SpecError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let map = match value {
        Value::Null => EMPTY.get_or_init(Map::new),
        Value::Object(map) => map,
        other => {
            return Err(SpecError::Invalid(format!(
                "the options of a {kind:?} storage must be an object, got {other}"
            )));
        }
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(SpecError::Invalid(format!(
            "a {kind:?} storage has no option {unknown:?} (known: {})",
            known.join(", ")
        )));
    }
    Ok(map)
}

fn string(map: &Map<String, Value>, key: &str, default: &str) -> Result<String, SpecError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(SpecError::Invalid(format!(
            "{key:?} must be a string, got {other}"
        ))),
    }
}

fn boolean(map: &Map<String, Value>, key: &str, default: bool) -> Result<bool, SpecError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(SpecError::Invalid(format!(
            "{key:?} must be true or false, got {other}"
        ))),
    }
}

fn field(value: &Value) -> Result<FieldPath, SpecError> {
    match value {
        Value::String(s) => Ok(parse_field(s)),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.as_str().map(str::to_owned).ok_or_else(|| {
                    SpecError::Invalid(format!("a field's parts must be strings, got {p}"))
                })
            })
            .collect(),
        other => Err(SpecError::Invalid(format!(
            "a field is a dotted string or a list of strings, got {other}"
        ))),
    }
}

fn field_or(map: &Map<String, Value>, key: &str, default: &str) -> Result<FieldPath, SpecError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(parse_field(default)),
        Some(value) => field(value),
    }
}

fn fields(map: &Map<String, Value>, key: &str) -> Result<Vec<FieldPath>, SpecError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(field).collect(),
        Some(other) => Err(SpecError::Invalid(format!(
            "{key:?} must be a list of fields, got {other}"
        ))),
    }
}

fn convention(default_prefix: &str, map: &Map<String, Value>) -> Result<KeyConvention, SpecError> {
    let prefix = string(map, "prefix", default_prefix)?;
    let v1 = boolean(map, "v1", true)?;
    KeyConvention::new(prefix, v1).map_err(|e| SpecError::Invalid(e.to_string()))
}

fn progress_layers(value: &Value, default_prefix: &str) -> Result<Vec<ProgressLayer>, SpecError> {
    let (kind, value) = kind_of(value)?;
    Ok(match kind {
        "annotations" => {
            let map = options(kind, value, &["prefix", "verbose", "touch_key", "v1"])?;
            vec![ProgressLayer::Annotations {
                convention: convention(default_prefix, map)?,
                touch_key: string(map, "touch_key", TOUCH_DUMMY_KEY)?,
                verbose: boolean(map, "verbose", false)?,
            }]
        }
        "status" => {
            let map = options(kind, value, &["field", "touch_field", "write"])?;
            vec![ProgressLayer::Status {
                field: field_or(map, "field", "status.kopf.progress")?,
                touch_field: field_or(map, "touch_field", "status.kopf.dummy")?,
                writes: boolean(map, "write", true)?,
            }]
        }
        "multi" => multi(kind, value, |v| progress_layers(v, default_prefix))?,
        other => {
            return Err(SpecError::Invalid(format!(
                "{other:?} is not a progress storage (annotations, status, multi)"
            )));
        }
    })
}

fn diffbase_layers(value: &Value, default_prefix: &str) -> Result<Vec<DiffBaseLayer>, SpecError> {
    let (kind, value) = kind_of(value)?;
    Ok(match kind {
        "annotations" => {
            let map = options(kind, value, &["prefix", "key", "v1", "ignored_fields"])?;
            vec![DiffBaseLayer::Annotations {
                convention: convention(default_prefix, map)?,
                key: string(map, "key", LAST_HANDLED_CONFIGURATION_KEY)?,
                ignored_fields: fields(map, "ignored_fields")?,
            }]
        }
        "status" => {
            let map = options(kind, value, &["field", "ignored_fields"])?;
            vec![DiffBaseLayer::Status {
                field: field_or(map, "field", "status.kopf.last-handled-configuration")?,
                ignored_fields: fields(map, "ignored_fields")?,
            }]
        }
        "multi" => multi(kind, value, |v| diffbase_layers(v, default_prefix))?,
        other => {
            return Err(SpecError::Invalid(format!(
                "{other:?} is not a diff-base storage (annotations, status, multi)"
            )));
        }
    })
}

fn multi<T>(
    kind: &str,
    value: &Value,
    each: impl Fn(&Value) -> Result<Vec<T>, SpecError>,
) -> Result<Vec<T>, SpecError> {
    let Some(items) = value.as_array() else {
        return Err(SpecError::Invalid(format!(
            "a {kind:?} storage holds a list of storages, got {value}"
        )));
    };
    let mut layers = Vec::new();
    for item in items {
        layers.extend(each(item)?);
    }
    if layers.is_empty() {
        return Err(SpecError::Invalid(format!(
            "a {kind:?} storage needs at least one storage"
        )));
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::MergePatch;
    use serde_json::json;

    #[test]
    fn words_are_kopfs_defaults() {
        assert_eq!(
            progress_storage("smart", "kopf.zalando.org").unwrap(),
            ProgressStorage::default()
        );
        assert_eq!(
            diffbase_storage("annotations", "kopf.zalando.org").unwrap(),
            DiffBaseStorage::default()
        );
        let status = progress_storage("status", "p.example.com").unwrap();
        assert_eq!(status.layers(), [ProgressLayer::status("kopf", true)]);
        assert!(matches!(
            progress_storage("database", "p"),
            Err(SpecError::Unknown(..))
        ));
    }

    #[test]
    fn json_describes_every_option() {
        let p = progress_storage(
            r#"{"multi": [{"annotations": {"prefix": "my.op", "verbose": true, "touch_key": "poke", "v1": false}},
                {"status": {"field": ["status", "myop", "progress"], "touch_field": "status.myop.dummy", "write": false}}]}"#,
            "kopf.zalando.org",
        )
        .unwrap();
        assert_eq!(
            p.layers(),
            [
                ProgressLayer::Annotations {
                    convention: KeyConvention::new("my.op", false).unwrap(),
                    touch_key: "poke".into(),
                    verbose: true,
                },
                ProgressLayer::Status {
                    field: parse_field("status.myop.progress"),
                    touch_field: parse_field("status.myop.dummy"),
                    writes: false,
                },
            ]
        );
        let d = diffbase_storage(
            r#"{"status": {"field": "status.myop.last-handled-configuration", "ignored_fields": ["spec.noise", ["metadata", "labels", "x"]]}}"#,
            "kopf.zalando.org",
        )
        .unwrap();
        // The ignored field changes nothing in the essence; the essence goes into the status
        // field as Kopf's StatusDiffBaseStorage writes it (compact JSON, no newline).
        let body =
            json!({"spec": {"a": 1, "noise": 2}, "metadata": {"labels": {"x": "1", "y": "2"}}});
        let essence = d.build(&body, &[]);
        assert_eq!(
            essence,
            json!({"spec": {"a": 1}, "metadata": {"labels": {"y": "2"}}})
        );
        let mut patch = MergePatch::new();
        d.store(&body, &mut patch, &essence);
        assert_eq!(
            patch.as_value(),
            &json!({"status": {"myop": {"last-handled-configuration":
                "{\"spec\":{\"a\":1},\"metadata\":{\"labels\":{\"y\":\"2\"}}}"}}})
        );
        let stored = json!({"status": {"myop": {"last-handled-configuration":
            "{\"spec\":{\"a\":1},\"metadata\":{\"labels\":{\"y\":\"2\"}}}"}}});
        assert_eq!(d.fetch(&stored).unwrap(), Some(essence));
    }

    #[test]
    fn mistakes_are_named_never_ignored() {
        for (spec, words) in [
            (r#"{"annotations": {"prefx": "x"}}"#, "prefx"),
            (r#"{"status": {"write": "yes"}}"#, "write"),
            (r#"{"database": {}}"#, "database"),
            (r#"{"multi": []}"#, "at least one"),
            (r#"{"annotations": {}, "status": {}}"#, "one"),
            (r#"{"status": {"field": 3}}"#, "dotted"),
            ("{not json", "JSON"),
        ] {
            let err = progress_storage(spec, "kopf.zalando.org").unwrap_err();
            assert!(err.to_string().contains(words), "{spec}: {err}");
        }
        let err = diffbase_storage(r#"{"annotations": {"verbose": true}}"#, "p").unwrap_err();
        assert!(err.to_string().contains("verbose"), "{err}");
        let err = diffbase_storage("smart", "p").unwrap_err();
        assert!(err.to_string().contains("annotations, status"), "{err}");
    }

    /// Kopf 1.45.2's `MultiDiffBaseStorage([AnnotationsDiffBaseStorage(prefix='my.op',
    /// ignored_fields=['spec.noise']), StatusDiffBaseStorage(name='myop')])`: `build(body=...,
    /// extra_fields=['status.myop'])` and `store(...)`, as Kopf printed them.
    #[test]
    fn multi_diffbase_builds_and_stores_as_kopf() {
        let d = diffbase_storage(
            r#"{"multi": [{"annotations": {"prefix": "my.op", "ignored_fields": ["spec.noise"]}},
                {"status": {"field": "status.myop.last-handled-configuration"}}]}"#,
            "kopf.zalando.org",
        )
        .unwrap();
        let body = json!({"spec": {"a": 1, "noise": 2}, "metadata": {"labels": {"y": "2"},
            "annotations": {"my.op/last-handled-configuration": "x", "other": "o"}},
            "status": {"myop": {"last-handled-configuration": "y"}}});
        let essence = d.build(&body, &[parse_field("status.myop")]);
        assert_eq!(
            serde_json::to_string(&essence).unwrap(),
            r#"{"spec":{"a":1},"metadata":{"labels":{"y":"2"},"annotations":{"other":"o"}}}"#
        );
        let mut patch = MergePatch::new();
        d.store(&body, &mut patch, &essence);
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"metadata":{"annotations":{"my.op/last-handled-configuration":"{\"spec\":{\"a\":1},\"metadata\":{\"labels\":{\"y\":\"2\"},\"annotations\":{\"other\":\"o\"}}}\n","my.op/kopf-managed":"yes"}},"status":{"myop":{"last-handled-configuration":"{\"spec\":{\"a\":1},\"metadata\":{\"labels\":{\"y\":\"2\"},\"annotations\":{\"other\":\"o\"}}}"}}}"#
        );
    }
}
