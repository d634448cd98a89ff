//! Kopf's diffs (`kopf._cogs.structs.diffs`) and field paths (`kopf._cogs.structs.dicts`).
//!
//! A diff is a list of `(op, field, old, new)` items: dicts are recursed into, lists and scalars
//! are compared whole, `None` (JSON `null`) and a missing key are the same thing, and values are
//! compared with Python's `==` ([`py_eq`]), so `1` and `1.0` are no change.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::pyjson::py_eq;

/// A path of field names into a JSON object, e.g. `["spec", "field"]` (Kopf's `FieldPath`).
pub type FieldPath = Vec<String>;

/// Parses a dotted field spec into a path, as Kopf's `dicts.parse_field(str)` does: a plain split
/// on `.`, so `""` is `[""]` and `"a..b"` is `["a", "", "b"]`.
pub fn parse_field(spec: &str) -> FieldPath {
    spec.split('.').map(str::to_owned).collect()
}

/// The value at `path` inside `value`, or `None` if a key is missing or a non-object is met on the
/// way (Kopf's `dicts.resolve(d, path, default=None)`). List items cannot be addressed. An empty
/// path gives `value` itself; a `null` found at the path is returned as `Some(&Value::Null)`.
pub fn resolve<'a, S: AsRef<str>>(value: &'a Value, path: &[S]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |current, key| current.as_object()?.get(key.as_ref()))
}

/// What happened to a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffOp {
    /// The field appeared (`old` is `None`).
    Add,
    /// The field's value changed (both are set).
    Change,
    /// The field disappeared (`new` is `None`).
    Remove,
}

impl DiffOp {
    /// The word Kopf uses: `add`, `change`, `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffOp::Add => "add",
            DiffOp::Change => "change",
            DiffOp::Remove => "remove",
        }
    }
}

/// One change: Kopf's `DiffItem(operation, field, old, new)`.
///
/// Serialises as Kopf's tuple form, which is also what `json.dumps(list(diff_item))` gives:
/// `["change", ["spec", "x"], 1, 2]`, with `null` for a missing side.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffItem {
    /// What happened.
    pub op: DiffOp,
    /// Where, relative to the diffed values (empty for the root).
    pub path: FieldPath,
    /// The value before; `None` for an addition (never `Some(Value::Null)`).
    pub old: Option<Value>,
    /// The value after; `None` for a removal (never `Some(Value::Null)`).
    pub new: Option<Value>,
}

impl DiffItem {
    /// The item in Kopf's JSON tuple form: `[op, [path...], old, new]`.
    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            Value::String(self.op.as_str().to_owned()),
            Value::Array(self.path.iter().cloned().map(Value::String).collect()),
            self.old.clone().unwrap_or(Value::Null),
            self.new.clone().unwrap_or(Value::Null),
        ])
    }
}

impl Serialize for DiffItem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let null = Value::Null;
        (
            self.op,
            &self.path,
            self.old.as_ref().unwrap_or(&null),
            self.new.as_ref().unwrap_or(&null),
        )
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DiffItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (op, path, old, new) =
            <(DiffOp, FieldPath, Value, Value)>::deserialize(deserializer)
                .map_err(|e| D::Error::custom(format!("not a Kopf diff item: {e}")))?;
        Ok(DiffItem {
            op,
            path,
            old: non_null(Some(&old)).cloned(),
            new: non_null(Some(&new)).cloned(),
        })
    }
}

/// A whole diff in Kopf's JSON form: `[["add", ["spec", "x"], null, 1], ...]`.
pub fn to_value(diff: &[DiffItem]) -> Value {
    Value::Array(diff.iter().map(DiffItem::to_value).collect())
}

/// Which side's fields a diff looks at (Kopf's `DiffScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DiffScope {
    /// Both sides (the default, used for the essences).
    #[default]
    Full,
    /// Only the fields present on the old side (Kopf checks a patch against the patched object
    /// this way: `diff(patch, result, scope=LEFT)`).
    Left,
    /// Only the fields present on the new side.
    Right,
}

/// Kopf's `diffs.diff(old, new)`: what changed from `old` to `new`.
///
/// # Guarantees
///
/// The same set of items as Kopf: equal values (by Python's `==`) give nothing; `None`/`null` vs a
/// value is an `add`, a value vs `None`/`null` a `remove`; two objects are recursed into; anything
/// else (lists, scalars, an object vs a non-object) is one `change` of the whole value.
///
/// # Caveats
///
/// Kopf iterates the keys through `frozenset`s, so its order changes with Python's hash seed
/// from run to run. This function is deterministic instead: at each level the keys only in
/// `new` (in `new`'s order), then the keys only in `old`, then the common keys (in `old`'s order).
pub fn diff(old: Option<&Value>, new: Option<&Value>) -> Vec<DiffItem> {
    diff_with_scope(old, new, DiffScope::Full)
}

/// [`diff`] limited to the fields of one side (Kopf's `scope=`).
pub fn diff_with_scope(
    old: Option<&Value>,
    new: Option<&Value>,
    scope: DiffScope,
) -> Vec<DiffItem> {
    let mut items = Vec::new();
    diff_into(old, new, &mut Vec::new(), scope, &mut items);
    items
}

fn non_null(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

fn diff_into(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut FieldPath,
    scope: DiffScope,
    items: &mut Vec<DiffItem>,
) {
    let item = |op, old: Option<&Value>, new: Option<&Value>, path: &FieldPath| DiffItem {
        op,
        path: path.clone(),
        old: old.cloned(),
        new: new.cloned(),
    };
    match (non_null(old), non_null(new)) {
        (None, None) => {}
        (Some(a), Some(b)) if py_eq(a, b) => {}
        (None, Some(b)) => items.push(item(DiffOp::Add, None, Some(b), path)),
        (Some(a), None) => items.push(item(DiffOp::Remove, Some(a), None, path)),
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            if scope != DiffScope::Left {
                for (key, value) in b.iter().filter(|(key, _)| !a.contains_key(*key)) {
                    path.push(key.clone());
                    diff_into(None, Some(value), path, scope, items);
                    path.pop();
                }
            }
            if scope != DiffScope::Right {
                for (key, value) in a.iter().filter(|(key, _)| !b.contains_key(*key)) {
                    path.push(key.clone());
                    diff_into(Some(value), None, path, scope, items);
                    path.pop();
                }
            }
            for (key, value) in a {
                if let Some(other) = b.get(key) {
                    path.push(key.clone());
                    diff_into(Some(value), Some(other), path, scope, items);
                    path.pop();
                }
            }
        }
        (Some(a), Some(b)) => items.push(item(DiffOp::Change, Some(a), Some(b), path)),
    }
}

/// Kopf's `diffs.reduce(diff, path)`: the part of a diff that concerns the field at `path`, with
/// paths made relative to it — what a field handler (`field='spec.x'`) receives as its `diff`.
///
/// Items deeper than `path` are kept with the prefix cut off; an item at a parent of `path` (e.g.
/// the whole `spec` added) is re-diffed between the resolved sub-values at `path`.
pub fn reduce<S: AsRef<str>>(diff: &[DiffItem], path: &[S]) -> Vec<DiffItem> {
    let path: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
    let mut items = Vec::new();
    for item in diff {
        let field: Vec<&str> = item.path.iter().map(String::as_str).collect();
        if path.is_empty() {
            items.push(item.clone());
        } else if field.len() >= path.len() && field[..path.len()] == path[..] {
            items.push(DiffItem {
                path: item.path[path.len()..].to_vec(),
                ..item.clone()
            });
        } else if field.len() < path.len() && path[..field.len()] == field[..] {
            let tail = &path[field.len()..];
            let old = item.old.as_ref().and_then(|v| resolve(v, tail));
            let new = item.new.as_ref().and_then(|v| resolve(v, tail));
            diff_into(old, new, &mut Vec::new(), DiffScope::Full, &mut items);
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Kopf's order is hash-seeded; compare as sorted JSON texts.
    fn sorted(diff: &[DiffItem]) -> Vec<String> {
        let mut texts: Vec<String> = diff
            .iter()
            .map(|i| serde_json::to_string(i).unwrap())
            .collect();
        texts.sort();
        texts
    }

    fn kopf(expected: Value) -> Vec<String> {
        let items: Vec<DiffItem> = serde_json::from_value(expected).unwrap();
        sorted(&items)
    }

    #[test]
    fn diffs_match_kopf() {
        // Expected values came from Kopf 1.45.2: `json.dumps([list(i) for i in diffs.diff(a, b)])`.
        let cases = [
            (json!(null), json!(null), json!([])),
            (
                json!(null),
                json!({"spec": {"x": 1}}),
                json!([["add", [], null, {"spec": {"x": 1}}]]),
            ),
            (
                json!({"spec": {"x": 1}}),
                json!(null),
                json!([["remove", [], {"spec": {"x": 1}}, null]]),
            ),
            (json!(1), json!(2), json!([["change", [], 1, 2]])),
            (json!({"a": 1}), json!({"a": 1.0}), json!([])),
            (
                json!({"a": true, "b": 0}),
                json!({"a": 1, "b": false}),
                json!([]),
            ),
            (
                json!({"a": "1"}),
                json!({"a": 1}),
                json!([["change", ["a"], "1", 1]]),
            ),
            (
                json!({"a": [1, 2]}),
                json!({"a": [1, 2, 3]}),
                json!([["change", ["a"], [1, 2], [1, 2, 3]]]),
            ),
            (
                json!({"a": [1, {"x": 2}]}),
                json!({"a": [1.0, {"x": 2.0}]}),
                json!([]),
            ),
            (
                json!({"spec": {"x": 1, "y": {"z": 1}}, "keep": 1}),
                json!({"spec": {"x": 2, "y": {"z": 1, "w": 2}}, "keep": 1}),
                json!([
                    ["add", ["spec", "y", "w"], null, 2],
                    ["change", ["spec", "x"], 1, 2]
                ]),
            ),
            (json!({"a": null}), json!({}), json!([])),
            (json!({}), json!({"a": null}), json!([])),
            (
                json!({"a": 1}),
                json!({"a": null}),
                json!([["remove", ["a"], 1, null]]),
            ),
            (
                json!({"a": null}),
                json!({"a": 1}),
                json!([["add", ["a"], null, 1]]),
            ),
            (
                json!({"a": {"b": 1}}),
                json!({"a": 5}),
                json!([["change", ["a"], {"b": 1}, 5]]),
            ),
            (
                json!({"a": {}}),
                json!({"a": []}),
                json!([["change", ["a"], {}, []]]),
            ),
            (
                json!({}),
                json!({"a": {}}),
                json!([["add", ["a"], null, {}]]),
            ),
            (
                json!({"spec": {}}),
                json!({"spec": {"a": {"b": {"c": 1}}}}),
                json!([["add", ["spec", "a"], null, {"b": {"c": 1}}]]),
            ),
            (json!({}), json!({}), json!([])),
            (
                json!({"a": {"b": 1}}),
                json!({"a": null}),
                json!([["remove", ["a"], {"b": 1}, null]]),
            ),
        ];
        for (a, b, expected) in cases {
            let got = diff(Some(&a), Some(&b));
            assert_eq!(sorted(&got), kopf(expected.clone()), "diff({a}, {b})");
        }
        assert!(diff(None, None).is_empty());
        assert_eq!(
            diff(None, Some(&json!(1))),
            diff(Some(&Value::Null), Some(&json!(1)))
        );
    }

    #[test]
    fn order_is_additions_removals_then_common_keys() {
        let a = json!({"common1": 1, "gone": 1, "common2": 1});
        let b = json!({"new1": 1, "common2": 2, "common1": 2, "new2": 1});
        let paths: Vec<String> = diff(Some(&a), Some(&b))
            .iter()
            .map(|i| i.path.join("."))
            .collect();
        assert_eq!(paths, ["new1", "new2", "gone", "common1", "common2"]);
    }

    #[test]
    fn serialises_as_kopf_tuples() {
        let d = diff(
            Some(&json!({"spec": {"x": 1}})),
            Some(&json!({"spec": {"x": 2}, "y": 1})),
        );
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"[["add",["y"],null,1],["change",["spec","x"],1,2]]"#
        );
        assert_eq!(to_value(&d), serde_json::to_value(&d).unwrap());
        let back: Vec<DiffItem> = serde_json::from_value(to_value(&d)).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<DiffItem>(r#"["move",[],1,2]"#).is_err());
        assert!(serde_json::from_str::<DiffItem>(r#"["add",[]]"#).is_err());
    }

    #[test]
    fn scopes_limit_the_sides() {
        let a = json!({"only_a": 1, "both": 1});
        let b = json!({"only_b": 1, "both": 2});
        let paths = |scope| -> Vec<String> {
            diff_with_scope(Some(&a), Some(&b), scope)
                .iter()
                .map(|i| format!("{}:{}", i.op.as_str(), i.path.join(".")))
                .collect()
        };
        assert_eq!(
            paths(DiffScope::Full),
            ["add:only_b", "remove:only_a", "change:both"]
        );
        assert_eq!(paths(DiffScope::Left), ["remove:only_a", "change:both"]);
        assert_eq!(paths(DiffScope::Right), ["add:only_b", "change:both"]);
    }

    #[test]
    fn reduces_like_kopf() {
        // Expected values came from Kopf 1.45.2: `diffs.reduce(d, path)`.
        let d = diff(
            Some(
                &json!({"spec": {"x": 1, "struct": {"f": 1}}, "metadata": {"labels": {"a": "b"}}}),
            ),
            Some(
                &json!({"spec": {"x": 2, "struct": {"f": 2, "g": 3}}, "metadata": {"labels": {"a": "c"}}}),
            ),
        );
        let cases = [
            (
                vec![],
                json!([
                    ["change", ["spec", "x"], 1, 2],
                    ["add", ["spec", "struct", "g"], null, 3],
                    ["change", ["spec", "struct", "f"], 1, 2],
                    ["change", ["metadata", "labels", "a"], "b", "c"]
                ]),
            ),
            (
                vec!["spec"],
                json!([
                    ["change", ["x"], 1, 2],
                    ["add", ["struct", "g"], null, 3],
                    ["change", ["struct", "f"], 1, 2]
                ]),
            ),
            (
                vec!["spec", "struct"],
                json!([["add", ["g"], null, 3], ["change", ["f"], 1, 2]]),
            ),
            (vec!["spec", "struct", "f"], json!([["change", [], 1, 2]])),
            (vec!["spec", "x"], json!([["change", [], 1, 2]])),
            (vec!["spec", "nope"], json!([])),
            (
                vec!["metadata", "labels", "a"],
                json!([["change", [], "b", "c"]]),
            ),
            (vec!["status"], json!([])),
        ];
        for (path, expected) in cases {
            assert_eq!(
                sorted(&reduce(&d, &path)),
                kopf(expected),
                "reduce to {path:?}"
            );
        }

        let d2 = diff(
            None,
            Some(&json!({"spec": {"struct": {"f": 1}, "list": [1]}})),
        );
        let cases2 = [
            (
                vec!["spec"],
                json!([["add", [], null, {"struct": {"f": 1}, "list": [1]}]]),
            ),
            (vec!["spec", "struct", "f"], json!([["add", [], null, 1]])),
            (vec!["spec", "list", "0"], json!([])),
            (vec!["spec", "nope"], json!([])),
            (vec!["spec", "struct"], json!([["add", [], null, {"f": 1}]])),
        ];
        for (path, expected) in cases2 {
            assert_eq!(
                sorted(&reduce(&d2, &path)),
                kopf(expected),
                "reduce2 to {path:?}"
            );
        }

        let d3 = diff(
            Some(&json!({"spec": {"struct": "string"}})),
            Some(&json!({"spec": {"struct": {"f": 1}}})),
        );
        assert_eq!(
            sorted(&reduce(&d3, &["spec", "struct", "f"])),
            kopf(json!([["add", [], null, 1]]))
        );
        assert_eq!(
            sorted(&reduce(&d3, &["spec", "struct"])),
            kopf(json!([["change", [], "string", {"f": 1}]]))
        );
        let d4 = diff(Some(&json!({"spec": {"a": 1}})), None);
        assert_eq!(
            sorted(&reduce(&d4, &["spec", "a"])),
            kopf(json!([["remove", [], 1, null]]))
        );
    }

    #[test]
    fn resolves_like_kopf() {
        // Expected values came from Kopf 1.45.2: `dicts.resolve(body, field, default)`.
        let body = json!({"spec": {"a": {"b": 1}, "s": "str", "n": null, "l": [1]}});
        let r = |spec: &str| resolve(&body, &parse_field(spec)).cloned();
        assert_eq!(r("spec.a.b"), Some(json!(1)));
        assert_eq!(r("spec.a"), Some(json!({"b": 1})));
        assert_eq!(r("spec.s.x"), None);
        assert_eq!(r("spec.n"), Some(Value::Null));
        assert_eq!(r("spec.n.x"), None);
        assert_eq!(r("spec.l.0"), None);
        assert_eq!(r("spec.zz"), None);
        assert_eq!(r(""), None);
        assert_eq!(r("spec"), Some(body["spec"].clone()));
        assert_eq!(resolve::<&str>(&body, &[]), Some(&body));
        assert_eq!(parse_field(""), [""]);
        assert_eq!(parse_field("a..b"), ["a", "", "b"]);
    }
}
