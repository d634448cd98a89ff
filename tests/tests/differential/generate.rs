//! The generators of the differential tests: JSON values with the numbers and strings whose
//! text forms differ between encoders, bodies as the API server returns them (with the labels,
//! annotations and stored diff-bases Kopf's essence treats specially), and the next version of a
//! value ([`blend`], [`twin`]).

use operon_core::finalizer::DEFAULT_FINALIZER;
use operon_core::persistence::{DiffBaseStorage, ProgressStorage};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

/// Strings: plain, any printable, any `char` at all, and a few that JSON encoders treat
/// specially.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z0-9]{0,6}",
        2 => "\\PC{0,6}",
        1 => prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
        1 => prop::sample::select(TRICKY_TEXTS).prop_map(str::to_owned),
    ]
    .boxed()
}

const TRICKY_TEXTS: &[&str] = &[
    "",
    "ü",
    "€",
    "😀",
    "\u{0}",
    "\u{1f}",
    "\u{7f}",
    "\n\t\r\"\\/",
    "\u{2028}\u{2029}",
    "\u{fffd}",
    "\u{10ffff}",
    "null",
    "1.0",
    "{\"a\":1}",
];

/// Numbers as the API server passes them on: integers within `i64`/`u64` (it turns larger ones
/// into floats) and finite floats, with the ones whose text forms differ between encoders.
fn number() -> BoxedStrategy<Value> {
    use proptest::num::f64 as float;
    prop_oneof![
        3 => (-3_i64..4).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => prop::sample::select(TRICKY_INTS).prop_map(Value::from),
        2 => (float::POSITIVE | float::NEGATIVE | float::NORMAL | float::SUBNORMAL | float::ZERO)
            .prop_map(float_value),
        2 => prop::sample::select(TRICKY_FLOATS).prop_map(float_value),
    ]
    .boxed()
}

const TRICKY_INTS: &[i64] = &[
    i64::MIN,
    i64::MAX,
    1 << 53,
    (1 << 53) + 1,
    -(1 << 53) - 1,
    10_000_000_000_000_000,
];

const TRICKY_FLOATS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    0.5,
    3.0,
    1e15,
    1e16,
    1e-4,
    1e-5,
    1e22,
    1e23,
    123_456_789_012_345_680.0,
    9_007_199_254_740_992.0,
    5e-324,
    2.225_073_858_507_201_4e-308,
    f64::MAX,
    -1e300,
    0.300_000_000_000_000_04,
];

fn float_value(f: f64) -> Value {
    Value::Number(Number::from_f64(f).expect("finite"))
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => number(),
        3 => text().prop_map(Value::String),
    ]
    .boxed()
}

/// Keys of nested objects: mostly a few short ones, so that two objects share keys.
fn field_key() -> BoxedStrategy<String> {
    prop_oneof![4 => "[a-d]", 1 => text()].boxed()
}

fn object_of(values: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop::collection::vec((field_key(), values), 0..5)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
        .boxed()
}

pub(super) fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                2 => object_of(inner),
            ]
        })
        .boxed()
}

pub(super) fn json_object() -> BoxedStrategy<Value> {
    object_of(json_value())
}

/// Keys as labels and annotations have them, with the ones Kopf's essence treats specially:
/// Kopf's own prefix and its subdomains, `<prefix>/kopf-managed` markers of other Kopf-based
/// operators, kubectl's last-applied configuration, near misses of each.
fn meta_key() -> BoxedStrategy<String> {
    let prefixes = prop::sample::select(META_PREFIXES);
    let names = prop::sample::select(META_NAMES);
    prop_oneof![
        4 => (prefixes.clone(), names.clone()).prop_map(|(p, n)| format!("{p}/{n}")),
        2 => names.prop_map(str::to_owned),
        1 => (prefixes, "[a-z0-9./_-]{0,8}").prop_map(|(p, n)| format!("{p}/{n}")),
        1 => text(),
    ]
    .boxed()
}

const META_PREFIXES: &[&str] = &[
    "kopf.zalando.org",
    "sub.kopf.zalando.org",
    "kopf.zalando.org.evil",
    "xkopf.zalando.org",
    "kopf.dev",
    "example.com",
    "other-op.example.com",
    "kubectl.kubernetes.io",
    "app.kubernetes.io",
    "",
    "ü.example.com",
];

const META_NAMES: &[&str] = &[
    "kopf-managed",
    "last-handled-configuration",
    "last-handled-configuration-ofDRS",
    "last-applied-configuration",
    "touch-dummy",
    "create_fn",
    "create_fn.sub",
    "KopfFinalizerMarker",
    "name",
    "app",
    "kopf-managed-not",
];

fn string_map() -> BoxedStrategy<Value> {
    prop::collection::vec((meta_key(), text().prop_map(Value::String)), 0..6)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
        .boxed()
}

/// How the stored diff-base looks, if there is one.
#[derive(Debug, Clone, Copy)]
enum Stored {
    /// As Kopf writes it (`json.dumps`, compact, ASCII, with `\n`).
    Python,
    /// As another JSON writer would (UTF-8, shortest floats, no newline).
    Compact,
    /// Pretty-printed.
    Pretty,
    /// Something that is not a usable essence.
    Garbage(&'static str),
}

const GARBAGE: &[&str] = &[
    "",
    "null",
    "{}",
    "[1]",
    "\"text\"",
    "1",
    "true",
    "{",
    "{\"spec\":1",
    "nope",
];

fn stored() -> BoxedStrategy<Option<Stored>> {
    prop_oneof![
        2 => Just(None),
        3 => Just(Some(Stored::Python)),
        1 => Just(Some(Stored::Compact)),
        1 => Just(Some(Stored::Pretty)),
        1 => prop::sample::select(GARBAGE).prop_map(|g| Some(Stored::Garbage(g))),
    ]
    .boxed()
}

/// A body as the API server returns it: metadata with the fields Kopf and Operon look at or
/// must ignore, spec, status and other top-level fields in random order, and possibly a stored
/// diff-base: the body's own essence, or its Python-equal twin, or a blend of it and a random
/// object (what changed since).
pub(super) fn body() -> BoxedStrategy<Value> {
    let identity = (
        prop::option::of(prop::sample::select(&["kopf.dev/v1", "apps/v1", "v1"][..])),
        prop::option::of(prop::sample::select(
            &["KopfExample", "ReplicaSet", "Deployment"][..],
        )),
        prop::option::of(prop::sample::select(OWNERS)),
    );
    let meta = (
        prop::option::of(string_map()),
        prop::option::of(string_map()),
        prop::option::of(prop::sample::select(FINALIZERS)),
        prop::option::weighted(0.25, Just(json!("2026-01-01T00:00:00Z"))),
        prop::option::of(json_value()),
        any::<i64>(),
    );
    let content = (
        prop::option::of(prop_oneof![4 => json_object(), 1 => json_value()]),
        prop::option::of(prop_oneof![
            4 => json_object(),
            2 => json_object().prop_map(|mut s| {
                s["kopf"] = json!({"progress": {"h": {"retries": 1}}});
                s
            }),
            1 => json_value(),
        ]),
        prop::collection::vec((text(), json_value()), 0..3),
    );
    let diffbase = (
        stored(),
        prop::sample::select(
            &[
                Since::Unchanged,
                Since::Twin,
                Since::Changed,
                Since::Changed,
            ][..],
        ),
        json_object(),
        any::<u64>(),
        prop::bool::weighted(0.15),
    );
    (identity, meta, content, diffbase, any::<u64>())
        .prop_map(|(identity, meta, content, diffbase, order)| {
            assemble_body(identity, meta, content, diffbase, order)
        })
        .boxed()
}

const OWNERS: &[&[&str]] = &[
    &[],
    &["Deployment"],
    &["StatefulSet"],
    &["StatefulSet", "Deployment"],
];

const FINALIZERS: &[&[&str]] = &[
    &[],
    &[DEFAULT_FINALIZER],
    &["example.com/other"],
    &["example.com/other", DEFAULT_FINALIZER],
];

type Identity = (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static [&'static str]>,
);
type Meta = (
    Option<Value>,
    Option<Value>,
    Option<&'static [&'static str]>,
    Option<Value>,
    Option<Value>,
    i64,
);
type Content = (Option<Value>, Option<Value>, Vec<(String, Value)>);
/// The stored diff-base: how it looks, how it compares, a random object to blend in, a seed, and
/// whether it is under the other key (`-ofDRS` on a ReplicaSet of a Deployment, or not).
type Diffbase = (Option<Stored>, Since, Value, u64, bool);

/// The stored essence compared with the body's own.
#[derive(Debug, Clone, Copy)]
enum Since {
    /// The same.
    Unchanged,
    /// Equal in Python's eyes (`1.0` for `1`, `1` for `true`).
    Twin,
    /// A blend with a random object.
    Changed,
}

fn assemble_body(
    (api_version, kind, owners): Identity,
    (labels, annotations, finalizers, deletion, managed, generation): Meta,
    (spec, status, others): Content,
    (stored, since, other, seed, other_key): Diffbase,
    order: u64,
) -> Value {
    let mut metadata = vec![
        ("name".to_owned(), json!("obj-1")),
        ("namespace".to_owned(), json!("ns")),
        (
            "uid".to_owned(),
            json!("7d9f6c1e-0000-4000-8000-000000000001"),
        ),
        ("resourceVersion".to_owned(), json!(generation.to_string())),
        ("generation".to_owned(), json!(generation)),
    ];
    if let Some(labels) = labels {
        metadata.push(("labels".into(), labels));
    }
    if let Some(annotations) = annotations {
        metadata.push(("annotations".into(), annotations));
    }
    if let Some(finalizers) = finalizers {
        metadata.push(("finalizers".into(), json!(finalizers)));
    }
    if let Some(deletion) = deletion {
        metadata.push(("deletionTimestamp".into(), deletion));
    }
    if let Some(owners) = owners {
        let refs: Vec<Value> = owners
            .iter()
            .map(|kind| json!({"apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "u-o", "controller": true}))
            .collect();
        metadata.push(("ownerReferences".into(), json!(refs)));
    }
    if let Some(fields) = managed {
        metadata.push((
            "managedFields".into(),
            json!([{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": fields}]),
        ));
    }
    shuffle(&mut metadata, order);

    let mut top = vec![(
        "metadata".to_owned(),
        Value::Object(metadata.into_iter().collect()),
    )];
    if let Some(v) = api_version {
        top.push(("apiVersion".into(), json!(v)));
    }
    if let Some(kind) = kind {
        top.push(("kind".into(), json!(kind)));
    }
    if let Some(spec) = spec {
        top.push(("spec".into(), spec));
    }
    if let Some(status) = status {
        top.push(("status".into(), status));
    }
    for (key, value) in others {
        if !top.iter().any(|(k, _)| *k == key) {
            top.push((key, value));
        }
    }
    shuffle(&mut top, order.rotate_left(17));
    let mut body = Value::Object(top.into_iter().collect());

    if let Some(stored) = stored {
        let of_drs =
            kind == Some("ReplicaSet") && owners.is_some_and(|o| o.contains(&"Deployment"));
        let key = if of_drs != other_key {
            "kopf.zalando.org/last-handled-configuration-ofDRS"
        } else {
            "kopf.zalando.org/last-handled-configuration"
        };
        let own = ProgressStorage::default().clear(&DiffBaseStorage::default().build(&body, &[]));
        let essence = match since {
            Since::Unchanged => own,
            Since::Twin => twin(&own),
            Since::Changed => blend(&own, &other, seed),
        };
        let text = match stored {
            Stored::Python => DiffBaseStorage::encode(&essence),
            Stored::Compact => serde_json::to_string(&essence).expect("JSON"),
            Stored::Pretty => serde_json::to_string_pretty(&essence).expect("JSON"),
            Stored::Garbage(text) => text.to_owned(),
        };
        let metadata = body["metadata"].as_object_mut().expect("an object");
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        annotations[key] = json!(text);
    }
    body
}

/// A deterministic shuffle (Fisher–Yates on a splitmix sequence).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = splitmix(state);
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic blend of `a` and `b`, as the next version of an object: per key, `a`'s
/// value, `b`'s, none, a twin equal to `a`'s in Python's eyes, or both blended again.
pub(super) fn blend(a: &Value, b: &Value, seed: u64) -> Value {
    let choice = splitmix(seed);
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k)));
            let mut out = Map::new();
            for (i, key) in keys.enumerate() {
                let choice = splitmix(seed ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let value = match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => match choice % 6 {
                        0 => Some(y.clone()),
                        1 => None,
                        2 => Some(twin(x)),
                        3 => Some(blend(x, y, choice)),
                        _ => Some(x.clone()),
                    },
                    (Some(x), None) => match choice % 5 {
                        0 => None,
                        1 => Some(twin(x)),
                        2 => Some(Value::Null),
                        _ => Some(x.clone()),
                    },
                    (None, Some(y)) => choice.is_multiple_of(3).then(|| y.clone()),
                    (None, None) => None,
                };
                if let Some(value) = value {
                    out.insert(key.clone(), value);
                }
            }
            Value::Object(out)
        }
        (a, b) => match choice % 4 {
            0 => b.clone(),
            1 => twin(a),
            _ => a.clone(),
        },
    }
}

/// A value Python's `==` may find equal to `value` though its JSON differs: `true` for `1`,
/// `1.0` for `1`, `2` for `2.0` (and large integers as the nearest float, which are not equal).
fn twin(value: &Value) -> Value {
    match value {
        Value::Bool(b) => Value::from(i64::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                float_value(i as f64)
            } else if let Some(u) = n.as_u64() {
                float_value(u as f64)
            } else {
                let f = n.as_f64().expect("a number");
                if f.fract() == 0.0 && f.abs() < 9.2e18 {
                    Value::from(f as i64)
                } else {
                    value.clone()
                }
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(twin).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), twin(v))).collect())
        }
        other => other.clone(),
    }
}
