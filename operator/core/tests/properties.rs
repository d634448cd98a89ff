//! Properties of the pure core, checked on generated inputs (proptest, fixed seeds per case set):
//! merge patches, diffs, Python-compatible JSON, annotation keys and progress records.
//!
//! `cargo test -p operon-core --test properties` runs 256 cases per property (as in
//! `./tests/run.sh`); `PROPTEST_CASES=1000000` runs the long mode.

use std::collections::BTreeMap;

use jiff::Timestamp;
use operon_core::patch::MergePatch;
use operon_core::persistence::diff;
use operon_core::persistence::keys::KeyConvention;
use operon_core::persistence::progress::ProgressRecord;
use operon_core::persistence::pyjson;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Scalars as Kubernetes objects hold them (no floats: JSON numbers with fractions are out of
/// scope for these properties).
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]{1,2}", inner, 0..5)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-d]{1,2}", value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// Timestamps as Kopf writes them: microseconds, years 2000–2100.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    (946_684_800_i64..4_102_444_800, 0_i64..1_000_000)
        .prop_map(|(s, us)| Timestamp::new(s, (us * 1_000) as i32).expect("in range"))
}

fn record() -> impl Strategy<Value = ProgressRecord> {
    (
        (
            proptest::option::of(timestamp()),
            proptest::option::of(timestamp()),
            proptest::option::of(timestamp()),
        ),
        proptest::option::of(prop_oneof![
            Just("create".to_owned()),
            Just("update".to_owned()),
            Just("delete".to_owned()),
            Just("resume".to_owned())
        ]),
        proptest::option::of(any::<u32>()),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        ),
        proptest::option::of("\\PC{0,40}"),
        proptest::option::of(prop::collection::vec("[a-z_/]{1,20}", 0..4)),
    )
        .prop_map(
            |(
                (started, stopped, delayed),
                purpose,
                retries,
                (success, failure),
                message,
                subrefs,
            )| {
                ProgressRecord {
                    started,
                    stopped,
                    delayed,
                    purpose,
                    retries,
                    success,
                    failure,
                    message,
                    subrefs,
                }
            },
        )
}

/// `value` without object keys that hold `null`, in nested objects too — but not inside lists,
/// which Kopf's diff compares as whole values.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

proptest! {
    /// Applying a merge patch is RFC 7386, as the API server applies it (checked against the
    /// json-patch crate's merge).
    #[test]
    fn merge_patches_apply_as_rfc_7386(doc in object(), patch in object()) {
        let mut ours = doc.clone();
        MergePatch::from_value(patch.clone())
            .expect("an object is a patch")
            .apply_to(&mut ours);
        let mut reference = doc;
        json_patch::merge(&mut reference, &patch);
        prop_assert_eq!(ours, reference);
    }

    /// Nothing changed, no diff; and the diff is empty exactly when the values are equal — as
    /// Kopf's diff sees them: a key holding `null` is the same as a missing key.
    #[test]
    fn a_diff_is_empty_exactly_for_equal_essences(a in object(), b in object()) {
        prop_assert!(diff::diff(Some(&a), Some(&a)).is_empty());
        prop_assert_eq!(
            diff::diff(Some(&a), Some(&b)).is_empty(),
            pyjson::py_eq(&without_nulls(&a), &without_nulls(&b))
        );
    }

    /// What is stored in annotations (Python's `json.dumps`) reads back as the same value.
    #[test]
    fn python_json_reads_back(v in value()) {
        let text = pyjson::dumps(&v);
        let back: Value = serde_json::from_str(&text).expect("valid JSON");
        prop_assert_eq!(back, v);
    }

    /// Annotation keys stay within Kubernetes' 63-character name limit, are the same for the
    /// same id, and keep the prefix.
    #[test]
    fn annotation_keys_fit_and_are_stable(id in "\\PC{1,120}") {
        let convention = KeyConvention::new("kopf.zalando.org", true).expect("a valid prefix");
        let key = convention.make_v2_key(&id);
        let (prefix, name) = key.split_once('/').expect("prefix/name");
        prop_assert_eq!(prefix, "kopf.zalando.org");
        prop_assert!(name.chars().count() <= 63, "{} is too long", name);
        prop_assert_eq!(convention.make_v2_key(&id), key.clone());
        let v1 = convention.make_v1_key(&id);
        prop_assert!(v1.chars().count() <= 63, "{} is too long", v1);
    }

    /// A progress record reads back from what is written, verbose or not.
    #[test]
    fn progress_records_read_back(record in record(), verbose in any::<bool>()) {
        let written = record.to_value(verbose);
        let back = ProgressRecord::from_value(&written).expect("a readable record");
        prop_assert_eq!(back, record);
    }
}
