//! [`MergePatch`]: the one patch a handling cycle accumulates (RFC 7386 JSON merge patch), as
//! Kopf's `Patch` dict is.
//!
//! The persistence layer, the handlers' results and the finalizer decisions all write into the same
//! patch; the runtime sends it in one `PATCH` (`application/merge-patch+json`) and can predict the
//! result with [`MergePatch::apply_to`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::persistence::diff::{DiffItem, DiffScope, diff_with_scope};

/// A JSON merge patch (RFC 7386) of an object: a JSON object whose `null`s delete fields.
///
/// # Guarantees
///
/// The root is always a JSON object. Keys keep their insertion order, so the patch serialises in
/// the order in which it was written (as Kopf's dict-based patch does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergePatch(Value);

impl MergePatch {
    /// An empty patch (`{}`), which changes nothing.
    pub fn new() -> Self {
        MergePatch(Value::Object(Map::new()))
    }

    /// Wraps an existing JSON object as a merge patch.
    pub fn from_map(map: Map<String, Value>) -> Self {
        MergePatch(Value::Object(map))
    }

    /// Wraps a JSON value as a merge patch; `None` if it is not an object (a non-object merge patch
    /// replaces the whole target, which is never what a handling cycle means).
    pub fn from_value(value: Value) -> Option<Self> {
        value.is_object().then_some(MergePatch(value))
    }

    /// Sets the field at `path` to `value`, creating the intermediate objects (Kopf's
    /// `dicts.ensure`). A [`Value::Null`] stores a deletion of that field.
    ///
    /// # Caveats
    ///
    /// An intermediate that is already set to a non-object (e.g. a `null` deletion of the parent) is
    /// replaced by an object holding only this field: the last write wins. Kopf would raise a
    /// `TypeError` there. An empty `path` replaces the whole patch if `value` is an object and is
    /// ignored otherwise.
    pub fn set<S: AsRef<str>>(&mut self, path: &[S], value: Value) {
        let Some((last, parents)) = path.split_last() else {
            if value.is_object() {
                self.0 = value;
            }
            return;
        };
        let mut current = &mut self.0;
        for key in parents {
            let map = as_object_mut(current);
            current = map
                .entry(key.as_ref())
                .or_insert_with(|| Value::Object(Map::new()));
            if !current.is_object() {
                *current = Value::Object(Map::new());
            }
        }
        as_object_mut(current).insert(last.as_ref().to_owned(), value);
    }

    /// The value the patch holds at `path`: `Some(&Value::Null)` for a stored deletion, `None` if
    /// the patch does not touch that field. An empty path gives the whole patch.
    pub fn get<S: AsRef<str>>(&self, path: &[S]) -> Option<&Value> {
        let mut current = &self.0;
        for key in path {
            current = current.as_object()?.get(key.as_ref())?;
        }
        Some(current)
    }

    /// Whether the patch touches the field at `path` (with a value or with a deletion).
    pub fn contains<S: AsRef<str>>(&self, path: &[S]) -> bool {
        self.get(path).is_some()
    }

    /// Forgets whatever the patch says about `path`, and then every parent object left empty by
    /// that (Kopf's `dicts.remove`, used when a record stored earlier in this cycle is purged before
    /// it ever reached the API). Returns the forgotten value.
    pub fn remove<S: AsRef<str>>(&mut self, path: &[S]) -> Option<Value> {
        fn remove_in<S: AsRef<str>>(map: &mut Map<String, Value>, path: &[S]) -> Option<Value> {
            let (first, rest) = path.split_first()?;
            if rest.is_empty() {
                return map.shift_remove(first.as_ref());
            }
            let child = map.get_mut(first.as_ref())?.as_object_mut()?;
            let removed = remove_in(child, rest);
            if child.is_empty() {
                map.shift_remove(first.as_ref());
            }
            removed
        }
        remove_in(as_object_mut(&mut self.0), path)
    }

    /// Composes another merge patch into this one, as if `other` were written after it: objects
    /// are merged key by key, recursively; anything else (scalars, lists, `null`s) replaces what
    /// this patch held. A non-object `other` is ignored.
    ///
    /// # Caveats
    ///
    /// Merge patches do not compose exactly: `{"a": null}` followed by `{"a": {"b": 1}}` composes to
    /// `{"a": {"b": 1}}`, which keeps `a`'s other fields where the sequence would have dropped them.
    pub fn merge_from(&mut self, other: &Value) {
        fn merge(target: &mut Map<String, Value>, other: &Map<String, Value>) {
            for (key, value) in other {
                match (target.get_mut(key), value) {
                    (Some(Value::Object(mine)), Value::Object(theirs)) => merge(mine, theirs),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        if let Value::Object(other) = other {
            merge(as_object_mut(&mut self.0), other);
        }
    }

    /// Whether the patch changes nothing (`{}`).
    pub fn is_empty(&self) -> bool {
        self.0.as_object().is_none_or(Map::is_empty)
    }

    /// The patch as a JSON value (always an object).
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// The patch as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        match &self.0 {
            Value::Object(map) => map,
            _ => unreachable!("every constructor and mutation keeps the root an object"),
        }
    }

    /// Unwraps the patch into its JSON value (always an object).
    pub fn into_value(self) -> Value {
        self.0
    }

    /// Applies the patch to `body` in place, per RFC 7386 `MergePatch(Target, Patch)`: `null`s
    /// delete, objects merge recursively, anything else replaces. Used to predict the object the
    /// API server will return.
    pub fn apply_to(&self, body: &mut Value) {
        apply(body, &self.0);
    }
}

/// RFC 7386, section 2.
fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = as_object_mut(target);
    for (key, value) in patch {
        if value.is_null() {
            target.shift_remove(key);
        } else {
            let slot = target.entry(key.as_str()).or_insert(Value::Null);
            apply(slot, value);
        }
    }
}

/// The object inside `value`, which the callers guarantee to be an object.
fn as_object_mut(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just replaced with an object"),
    }
}

impl From<Map<String, Value>> for MergePatch {
    fn from(map: Map<String, Value>) -> Self {
        MergePatch::from_map(map)
    }
}

impl From<MergePatch> for Value {
    fn from(patch: MergePatch) -> Self {
        patch.into_value()
    }
}

impl Serialize for MergePatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MergePatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::<String, Value>::deserialize(deserializer).map(MergePatch::from_map)
    }
}

/// Fields Kubernetes removes when they are set empty: an empty value there is no inconsistency.
const KNOWN_INCONSISTENCIES: [&[&str]; 3] = [
    &["metadata", "annotations"],
    &["metadata", "finalizers"],
    &["metadata", "labels"],
];

/// The fields of a merge patch that did not come back in the API server's answer — a result on a
/// kind whose status is not writable, a field the schema pruned (Kopf's `patch_and_check`, which
/// logs them as "Merge-patching finished with inconsistencies"). Only the patch's own fields are
/// compared; an empty value of a field that Kubernetes drops when empty (labels, annotations,
/// finalizers) is not counted.
pub fn inconsistencies(patch: &Value, result: &Value) -> Vec<DiffItem> {
    diff_with_scope(Some(patch), Some(result), DiffScope::Left)
        .into_iter()
        .filter(|item| {
            let falsy = |v: &Option<Value>| v.as_ref().is_none_or(py_falsy);
            !(falsy(&item.old)
                && falsy(&item.new)
                && KNOWN_INCONSISTENCIES.iter().any(|known| {
                    item.path
                        .iter()
                        .map(String::as_str)
                        .eq(known.iter().copied())
                }))
        })
        .collect()
}

/// Python's truthiness of a JSON value, negated.
fn py_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The `status.<id>` fragment of a timer's or a daemon's result (merged into the patch as is).
pub fn status_result(id: &str, value: &Value) -> Value {
    serde_json::json!({"status": {id: value}})
}

/// A cycle's merge patch split for writing: the status through `/status` when the resource has
/// that subresource (written first, so that a crash in between re-runs rather than loses a
/// result), the rest on the object itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// `{"status": …}` for the `/status` subresource, if any.
    pub status: Option<Value>,
    /// The rest, for the object itself, unless it is empty.
    pub main: Option<Value>,
}

/// Splits the patch `whole` of a resource (`has_status`: it has a `/status` subresource).
pub fn split(whole: &Value, has_status: bool) -> Split {
    let mut main = whole.clone();
    let status = if has_status {
        main.as_object_mut()
            .and_then(|m| m.remove("status"))
            .map(|status| serde_json::json!({ "status": status }))
    } else {
        None
    };
    let main = main
        .as_object()
        .is_some_and(|m| !m.is_empty())
        .then_some(main);
    Split { status, main }
}

/// What the API server's refusal of a write means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The object is gone (404): nothing was written, nothing to wait for.
    Gone,
    /// The finalizer patch lost a race (the object vanished or changed under it: 404, 409,
    /// 422): the next cycle sees the fresh state and retries.
    LostRace,
    /// A failure to report.
    Failed,
}

/// What a refused merge patch (status or object) with HTTP status `code` means.
pub fn merge_refused(code: u16) -> Refusal {
    if code == 404 {
        Refusal::Gone
    } else {
        Refusal::Failed
    }
}

/// What a refused finalizer patch with HTTP status `code` means.
pub fn finalizer_refused(code: u16) -> Refusal {
    if matches!(code, 404 | 409 | 422) {
        Refusal::LostRace
    } else {
        Refusal::Failed
    }
}

/// What a cycle's write left behind, for the consistency wait.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Written {
    /// Nothing was written (or the object was already gone): nothing to wait for.
    #[default]
    Nothing,
    /// The object's resourceVersion after our write: wait until the watch shows it.
    Version(String),
    /// Our write removed the last finalizer of an object being deleted: it is gone, and no new
    /// version of it will come. Wait for its DELETED event; the events of our own earlier writes
    /// that may still be queued are stale (handling them would run finished handlers again).
    Released,
}

/// Whether the object after our finalizer patch is released: being deleted, with no finalizer
/// left, it is gone with this write (its resourceVersion never arrives).
pub fn released(deleting: bool, finalizers_left: bool) -> bool {
    deleting && !finalizers_left
}

/// What a write that ended with the object at `resource_version` leaves to wait for.
pub fn written(resource_version: Option<String>) -> Written {
    resource_version.map_or(Written::Nothing, Written::Version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_creates_parents_in_insertion_order() {
        let mut patch = MergePatch::new();
        assert!(patch.is_empty());
        patch.set(&["metadata", "annotations", "b"], json!("1"));
        patch.set(&["status", "x"], json!(1));
        patch.set(&["metadata", "annotations", "a"], Value::Null);
        assert!(!patch.is_empty());
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"metadata":{"annotations":{"b":"1","a":null}},"status":{"x":1}}"#
        );
        assert_eq!(
            patch.get(&["metadata", "annotations", "a"]),
            Some(&Value::Null)
        );
        assert_eq!(patch.get(&["metadata", "annotations", "zzz"]), None);
        assert_eq!(patch.get(&["status", "x", "deeper"]), None);
        assert!(patch.contains(&["status"]));
        assert_eq!(patch.get::<&str>(&[]), Some(patch.as_value()));
    }

    #[test]
    fn set_over_a_scalar_parent_replaces_it() {
        let mut patch = MergePatch::new();
        patch.set(&["spec"], Value::Null);
        patch.set(&["spec", "x"], json!(1));
        assert_eq!(patch.as_value(), &json!({"spec": {"x": 1}}));
        patch.set::<&str>(&[], json!({"other": true}));
        assert_eq!(patch.as_value(), &json!({"other": true}));
        patch.set::<&str>(&[], json!(5));
        assert_eq!(patch.as_value(), &json!({"other": true}));
    }

    #[test]
    fn set_overwrites_in_place() {
        let mut patch = MergePatch::new();
        patch.set(&["a"], json!(1));
        patch.set(&["b"], json!(2));
        patch.set(&["a"], json!(3));
        assert_eq!(serde_json::to_string(&patch).unwrap(), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn remove_drops_empty_parents_like_kopf() {
        // Kopf 1.45.2: storing a record and purging it (absent in the body) in the same cycle
        // leaves the patch as `{}`.
        let mut patch = MergePatch::new();
        patch.set(&["metadata", "annotations", "a"], json!("x"));
        assert_eq!(
            patch.remove(&["metadata", "annotations", "a"]),
            Some(json!("x"))
        );
        assert!(patch.is_empty());
        assert_eq!(patch.as_value(), &json!({}));

        patch.set(&["metadata", "annotations", "a"], json!("x"));
        patch.set(&["metadata", "annotations", "b"], json!("y"));
        patch.remove(&["metadata", "annotations", "a"]);
        assert_eq!(
            patch.as_value(),
            &json!({"metadata": {"annotations": {"b": "y"}}})
        );
        assert_eq!(patch.remove(&["nope", "deeper"]), None);
        assert_eq!(patch.remove::<&str>(&[]), None);
    }

    #[test]
    fn merge_from_composes_patches() {
        let mut patch = MergePatch::new();
        patch.set(&["metadata", "annotations", "a"], json!("1"));
        patch.set(&["spec", "list"], json!([1, 2]));
        patch.set(&["spec", "gone"], json!({"x": 1}));
        patch.merge_from(&json!({
            "metadata": {"annotations": {"b": null}},
            "spec": {"list": [3], "gone": null, "new": {"y": null}},
            "status": 7,
        }));
        assert_eq!(
            patch.as_value(),
            &json!({
                "metadata": {"annotations": {"a": "1", "b": null}},
                "spec": {"list": [3], "gone": null, "new": {"y": null}},
                "status": 7,
            })
        );
        let before = patch.clone();
        patch.merge_from(&json!("not an object"));
        assert_eq!(patch, before);
    }

    #[test]
    fn apply_follows_rfc7386() {
        // The examples from RFC 7386, appendix A.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            MergePatch::from_value(patch.clone())
                .unwrap()
                .apply_to(&mut target);
            assert_eq!(target, expected, "patch {patch}");
        }
    }

    #[test]
    fn apply_keeps_key_order_and_appends_new_keys() {
        let mut body = json!({"a": 1, "b": {"x": 1, "y": 2}, "c": 3});
        let mut patch = MergePatch::new();
        patch.set(&["b", "x"], json!(10));
        patch.set(&["b", "z"], json!(30));
        patch.set(&["a"], Value::Null);
        patch.apply_to(&mut body);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"b":{"x":10,"y":2,"z":30},"c":3}"#
        );
    }

    #[test]
    fn non_object_values_are_rejected_and_round_trips_work() {
        assert!(MergePatch::from_value(json!([1])).is_none());
        let patch: MergePatch = serde_json::from_str(r#"{"a":{"b":null}}"#).unwrap();
        assert_eq!(patch.get(&["a", "b"]), Some(&Value::Null));
        assert!(serde_json::from_str::<MergePatch>("[1]").is_err());
        let value: Value = patch.clone().into();
        assert_eq!(value, json!({"a": {"b": null}}));
        assert_eq!(MergePatch::from(value.as_object().unwrap().clone()), patch);
        assert_eq!(patch.as_map().len(), 1);
    }

    #[test]
    fn inconsistencies_are_the_patched_fields_that_did_not_come_back() {
        use serde_json::json;
        let patch = json!({"status": {"create_fn": {"x": 1}}, "spec": {"a": 1, "gone": null},
            "metadata": {"labels": {}, "annotations": {"k": "v"}}});
        // The server dropped the status (no writable status) and kept the rest.
        let result = json!({"spec": {"a": 1, "b": 2}, "metadata": {"name": "n",
            "annotations": {"k": "v"}}});
        let found = inconsistencies(&patch, &result);
        assert_eq!(
            crate::persistence::diff::to_value(&found),
            json!([["remove", ["status"], {"create_fn": {"x": 1}}, null]])
        );
        // Everything came back: nothing to say.
        let result = json!({"status": {"create_fn": {"x": 1}}, "spec": {"a": 1},
            "metadata": {"annotations": {"k": "v"}}});
        assert!(inconsistencies(&patch, &result).is_empty());
        // An empty label set that Kubernetes removed is not an inconsistency, a label is.
        let patch = json!({"metadata": {"labels": {"x": "y"}}});
        assert_eq!(inconsistencies(&patch, &json!({"metadata": {}})).len(), 1);
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_status_goes_through_its_subresource_only_when_there_is_one() {
        let whole = json!({"status": {"a": 1}, "metadata": {"labels": {"x": "y"}}});
        let split_ = split(&whole, true);
        assert_eq!(split_.status, Some(json!({"status": {"a": 1}})));
        assert_eq!(
            split_.main,
            Some(json!({"metadata": {"labels": {"x": "y"}}}))
        );
        let split_ = split(&whole, false);
        assert_eq!((split_.status, split_.main), (None, Some(whole)));
        let only_status = json!({"status": {"a": 1}});
        assert_eq!(
            split(&only_status, true).main,
            None,
            "nothing else to write"
        );
        assert_eq!(
            split(&json!({}), true),
            Split {
                status: None,
                main: None
            }
        );
    }

    #[test]
    fn refusals_mean_gone_a_lost_race_or_a_failure() {
        assert_eq!(merge_refused(404), Refusal::Gone);
        assert_eq!(merge_refused(409), Refusal::Failed);
        assert_eq!(merge_refused(0), Refusal::Failed);
        for code in [404, 409, 422] {
            assert_eq!(finalizer_refused(code), Refusal::LostRace);
        }
        assert_eq!(finalizer_refused(500), Refusal::Failed);
    }

    #[test]
    fn a_deleted_object_without_finalizers_is_released() {
        assert!(released(true, false));
        assert!(!released(true, true));
        assert!(!released(false, false));
        assert_eq!(written(Some("7".into())), Written::Version("7".into()));
        assert_eq!(written(None), Written::Nothing);
        assert_eq!(
            status_result("t", &json!({"x": 1})),
            json!({"status": {"t": {"x": 1}}})
        );
    }
}
