//! Annotation keys, exactly as Kopf forms them (`kopf._cogs.configs.conventions`):
//! `StorageKeyFormingConvention` (V1/V2 keys, hash suffixes), `CollisionEvadingConvention`
//! (`-ofDRS`) and `StorageKeyMarkingConvention` (`<prefix>/kopf-managed`).

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::alphabet::Alphabet;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::PAD;
use blake2::Blake2bVar;
use blake2::digest::{Update as _, VariableOutput as _};
use serde_json::{Map, Value};

use crate::patch::MergePatch;

/// Kopf's default annotation prefix.
pub const DEFAULT_PREFIX: &str = "kopf.zalando.org";
/// The name (after the prefix) of the re-trigger marker: `kopf.zalando.org/touch-dummy`.
pub const TOUCH_DUMMY_KEY: &str = "touch-dummy";
/// The name (after the prefix) of the diff-base: `kopf.zalando.org/last-handled-configuration`.
pub const LAST_HANDLED_CONFIGURATION_KEY: &str = "last-handled-configuration";
/// The name of the marker that brands a custom prefix as Kopf's: `<prefix>/kopf-managed`.
pub const MANAGED_MARKER_NAME: &str = "kopf-managed";
/// The value Kopf writes into the `kopf-managed` marker.
pub const MANAGED_MARKER_VALUE: &str = "yes";
/// Prefixes that are Kopf-owned without a marker (with all their subdomains).
pub const KNOWN_PREFIXES: &[&str] = &[DEFAULT_PREFIX];
/// kubectl's own diff-base, never part of the essence.
pub const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The longest name part of an annotation key that Kubernetes accepts.
pub const MAX_NAME_LENGTH: usize = 63;
/// The longest prefix that always leaves room for a 63-character name (253 - 63 - 1).
pub const MAX_PREFIX_LENGTH: usize = 253 - 63 - 1;
/// What Kopf appends to every key of a ReplicaSet owned by a Deployment.
pub const REPLICASET_OF_DEPLOYMENT_MARK: &str = "-ofDRS";

/// The failure to build a [`KeyConvention`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The prefix is empty; Kopf refuses it too ("Annotations storages must be prefixed.").
    #[error("annotations storages must be prefixed")]
    EmptyPrefix,
}

/// How a storage forms its annotation keys: a prefix and whether the V1 keys are still written.
///
/// Mirrors Kopf's `StorageKeyFormingConvention` + `CollisionEvadingConvention` for one prefix, as
/// used by `AnnotationsProgressStorage` and `AnnotationsDiffBaseStorage`.
///
/// # Guarantees
///
/// [`KeyConvention::make_keys`] returns the same keys, in the same order, as Kopf 1.45's
/// `make_keys(key, body=body)`: the V2 key first, then the V1 key if `v1` is on and it differs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyConvention {
    prefix: String,
    v1: bool,
}

impl Default for KeyConvention {
    /// `kopf.zalando.org`, with V1 keys (Kopf's defaults).
    fn default() -> Self {
        KeyConvention {
            prefix: DEFAULT_PREFIX.to_owned(),
            v1: true,
        }
    }
}

impl KeyConvention {
    /// A convention for `prefix` (without the trailing `/`); `v1` also writes and purges the V1
    /// keys where they differ from the V2 ones (Kopf's default is `true`).
    ///
    /// # Errors
    ///
    /// [`KeyError::EmptyPrefix`] for an empty prefix.
    ///
    /// # Caveats
    ///
    /// A prefix longer than [`MAX_PREFIX_LENGTH`] is accepted (Kopf only warns); check
    /// [`KeyConvention::prefix_is_too_long`] to report it.
    pub fn new(prefix: impl Into<String>, v1: bool) -> Result<Self, KeyError> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(KeyError::EmptyPrefix);
        }
        Ok(KeyConvention { prefix, v1 })
    }

    /// The prefix, without the trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether V1 keys are written and purged too.
    pub fn v1(&self) -> bool {
        self.v1
    }

    /// Whether the prefix is so long that keys may exceed 253 characters (Kopf warns about it).
    pub fn prefix_is_too_long(&self) -> bool {
        self.prefix.chars().count() > MAX_PREFIX_LENGTH
    }

    /// All annotation keys for a record name (a handler id, [`TOUCH_DUMMY_KEY`],
    /// [`LAST_HANDLED_CONFIGURATION_KEY`]) on this `body`: the V2 key, then the V1 key if enabled
    /// and different. The `-ofDRS` mark is appended before hashing/cutting, as Kopf does.
    pub fn make_keys(&self, key: &str, body: &Value) -> Vec<String> {
        let key = mark_key(key, body);
        let v2 = self.make_v2_key(&key);
        let mut keys = vec![v2];
        if self.v1 {
            let v1 = self.make_v1_key(&key);
            if v1 != keys[0] {
                keys.push(v1);
            }
        }
        keys
    }

    /// The V1 key: the whole key, prefix included, is cut to 63 characters with a hash suffix.
    ///
    /// Kopf's Python slicing is mirrored, including its negative-index quirk for prefixes longer
    /// than 62 characters (then the name part is cut from its end instead).
    pub fn make_v1_key(&self, key: &str) -> String {
        let safe_key = make_safe_key(key);
        let prefix = format!("{}/", self.prefix);
        let prefix_len = prefix.chars().count() as isize;
        let max_length = MAX_NAME_LENGTH as isize;
        let safe_len = safe_key.chars().count() as isize;
        let suffix = if safe_len <= max_length - prefix_len {
            String::new()
        } else {
            make_suffix(&safe_key)
        };
        let limit = max_length - prefix_len - suffix.chars().count() as isize;
        format!("{prefix}{}{suffix}", py_slice_to(&safe_key, limit))
    }

    /// The V2 key: only the name part is limited to 63 characters (with a hash suffix of the
    /// unescaped name when it is longer).
    pub fn make_v2_key(&self, key: &str) -> String {
        let suffix = if key.chars().count() > MAX_NAME_LENGTH {
            make_suffix(key)
        } else {
            String::new()
        };
        let limit = MAX_NAME_LENGTH.saturating_sub(suffix.chars().count());
        let safe_key = make_safe_key(key);
        let cut: String = safe_key.chars().take(limit).collect();
        format!("{}/{cut}{suffix}", self.prefix)
    }

    /// The full key of the touch-dummy annotation on an ordinary object
    /// (`kopf.zalando.org/touch-dummy`); use [`KeyConvention::make_keys`] for a specific body.
    pub fn touch_dummy_key(&self) -> String {
        self.make_v2_key(TOUCH_DUMMY_KEY)
    }

    /// The full key of the diff-base annotation on an ordinary object
    /// (`kopf.zalando.org/last-handled-configuration`); use [`KeyConvention::make_keys`] for a
    /// specific body.
    pub fn last_handled_configuration_key(&self) -> String {
        self.make_v2_key(LAST_HANDLED_CONFIGURATION_KEY)
    }

    /// The `<prefix>/kopf-managed` marker key, if this prefix needs one (it does unless it starts
    /// with `kopf.`).
    pub fn marker_key(&self) -> Option<String> {
        (!self.prefix.starts_with("kopf."))
            .then(|| format!("{}/{MANAGED_MARKER_NAME}", self.prefix))
    }

    /// Writes the `kopf-managed: "yes"` marker into `patch` unless the prefix does not need one or
    /// the body or the patch already has it (Kopf's `_store_marker`). Kopf calls this on every
    /// store and every effective touch.
    pub fn store_marker(&self, body: &Value, patch: &mut MergePatch) {
        let Some(marker) = self.marker_key() else {
            return;
        };
        let path = ["metadata", "annotations", marker.as_str()];
        if annotations(body).is_some_and(|a| a.contains_key(&marker)) || patch.contains(&path) {
            return;
        }
        patch.set(&path, Value::String(MANAGED_MARKER_VALUE.to_owned()));
    }

    /// Whether an annotation key is under this convention's own prefix (`<prefix>/...`), which is
    /// what the progress storage's `clear()` strips from the essences.
    pub fn owns_key(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Kopf's `CollisionEvadingConvention.mark_key`: appends `-ofDRS` for a `ReplicaSet` that has a
/// `Deployment` among its `ownerReferences`, because Kubernetes copies the Deployment's annotations
/// down to its ReplicaSets.
pub fn mark_key(key: &str, body: &Value) -> String {
    let is_replicaset = body.get("kind").and_then(Value::as_str) == Some("ReplicaSet");
    let owned_by_deployment = body
        .get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.get("kind").and_then(Value::as_str) == Some("Deployment"))
        });
    if is_replicaset && owned_by_deployment {
        format!("{key}{REPLICASET_OF_DEPLOYMENT_MARK}")
    } else {
        key.to_owned()
    }
}

/// Kopf's `make_safe_key`: `/` becomes `.`, `<` and `>` become `_`; nothing else is escaped.
pub fn make_safe_key(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '/' => '.',
            '<' | '>' => '_',
            c => c,
        })
        .collect()
}

/// Kopf's `make_suffix`: `-` + base64 (altchars `-.`) of the 4-byte BLAKE2b digest of the key's
/// UTF-8, with trailing `=`, `-` and `.` stripped (e.g. `-SItAqA`).
pub fn make_suffix(key: &str) -> String {
    const ALTCHARS: GeneralPurpose = GeneralPurpose::new(
        &match Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.") {
            Ok(alphabet) => alphabet,
            Err(_) => panic!("the alphabet is valid"),
        },
        PAD,
    );
    let mut digest = [0u8; 4];
    let mut hasher = Blake2bVar::new(digest.len()).expect("4 is a valid BLAKE2b output size");
    hasher.update(key.as_bytes());
    hasher
        .finalize_variable(&mut digest)
        .expect("the buffer has the requested output size");
    let suffix = format!("-{}", ALTCHARS.encode(digest));
    suffix.trim_end_matches(['=', '-', '.']).to_owned()
}

/// Python's `s[:n]` on characters, including negative `n` (counting from the end).
fn py_slice_to(s: &str, n: isize) -> String {
    let len = s.chars().count() as isize;
    let end = if n < 0 { (len + n).max(0) } else { n.min(len) };
    s.chars().take(end as usize).collect()
}

/// The annotations of a body, if it has them as an object.
pub(crate) fn annotations(body: &Value) -> Option<&Map<String, Value>> {
    body.get("metadata")?.get("annotations")?.as_object()
}

/// Kopf's `StorageKeyMarkingConvention._detect_marked_prefixes`: the prefixes of `keys` that belong
/// to Kopf-based operators: any prefix with a `<prefix>/kopf-managed` key, [`KNOWN_PREFIXES`], and
/// their subdomains (`*.kopf.zalando.org`). Keys without a `/` are not considered.
pub fn detect_marked_prefixes<'a>(keys: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut prefixes = BTreeSet::new();
    for key in keys {
        let Some((prefix, name)) = key.split_once('/') else {
            continue;
        };
        let known = KNOWN_PREFIXES
            .iter()
            .any(|p| prefix == *p || prefix.ends_with(&format!(".{p}")));
        if name == MANAGED_MARKER_NAME || known {
            prefixes.insert(prefix.to_owned());
        }
    }
    prefixes
}

/// Whether `key` is under one of `prefixes` (`<prefix>/...`): such annotations are another (or
/// this) Kopf-based operator's storage and never part of an essence.
pub fn is_under_prefixes<S: AsRef<str>>(key: &str, prefixes: impl IntoIterator<Item = S>) -> bool {
    prefixes.into_iter().any(|prefix| {
        key.strip_prefix(prefix.as_ref())
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(prefix: &str) -> KeyConvention {
        KeyConvention::new(prefix, true).unwrap()
    }

    fn keys(prefix: &str, id: &str) -> Vec<String> {
        conv(prefix).make_keys(id, &json!({}))
    }

    #[test]
    fn suffixes_match_kopf() {
        // Expected values came from Kopf 1.45.2: `AnnotationsProgressStorage().make_suffix(key)`.
        assert_eq!(make_suffix("create_fn"), "-AZjFuA");
        assert_eq!(make_suffix(&"x".repeat(64)), "-SItAqA");
        assert_eq!(make_suffix("a"), "-yiNMVQ");
        assert_eq!(make_suffix(""), "-EnHPJQ");
        assert_eq!(make_suffix("hello/world"), "-i-Cykg");
        assert_eq!(make_suffix("créer"), "-wBpLFA");
        // A suffix with the `.` altchar inside (from the 70-character-prefix case below).
        assert!(keys(&"p".repeat(70), "last-handled-configuration")[1].ends_with("-a.A3qw"));
    }

    #[test]
    fn default_prefix_keys_match_kopf() {
        // Expected values came from Kopf 1.45.2:
        // `AnnotationsProgressStorage(prefix=..., v1=True).make_keys(id, body=Body({}))`.
        let k = |id: &str| keys(DEFAULT_PREFIX, id);
        assert_eq!(k("create_fn"), ["kopf.zalando.org/create_fn"]);
        assert_eq!(k("create_fn/task_a"), ["kopf.zalando.org/create_fn.task_a"]);
        assert_eq!(
            k("update_fn/spec.field"),
            ["kopf.zalando.org/update_fn.spec.field"]
        );
        assert_eq!(
            k("lambda:/x/y.py:12"),
            ["kopf.zalando.org/lambda:.x.y.py:12"]
        );
        assert_eq!(k("<lambda>"), ["kopf.zalando.org/_lambda_"]);
        assert_eq!(k("touch-dummy"), ["kopf.zalando.org/touch-dummy"]);
        assert_eq!(
            k("last-handled-configuration"),
            ["kopf.zalando.org/last-handled-configuration"]
        );
        assert_eq!(
            k(&"a".repeat(46)),
            [format!("kopf.zalando.org/{}", "a".repeat(46))]
        );
        assert_eq!(
            k(&"a".repeat(47)),
            [
                format!("kopf.zalando.org/{}", "a".repeat(47)),
                format!("kopf.zalando.org/{}-L2I79Q", "a".repeat(39)),
            ]
        );
        assert_eq!(
            k(&"x".repeat(63)),
            [
                format!("kopf.zalando.org/{}", "x".repeat(63)),
                format!("kopf.zalando.org/{}-GINbRg", "x".repeat(39)),
            ]
        );
        // kopf.md says 54 x's for V2; real Kopf keeps 56 (63 - len("-SItAqA")).
        assert_eq!(
            k(&"x".repeat(64)),
            [
                format!("kopf.zalando.org/{}-SItAqA", "x".repeat(56)),
                format!("kopf.zalando.org/{}-SItAqA", "x".repeat(39)),
            ]
        );
        assert_eq!(
            k("reconcile_the_object_with_a_very_long_name/spec.template.spec.containers"),
            [
                "kopf.zalando.org/reconcile_the_object_with_a_very_long_name.spec.template-23zNAA",
                "kopf.zalando.org/reconcile_the_object_with_a_very_long_n-rWDZmQ",
            ]
        );
    }

    #[test]
    fn non_ascii_ids_are_cut_by_characters() {
        // Expected values came from Kopf 1.45.2 (Python slices by code points).
        assert_eq!(
            keys(DEFAULT_PREFIX, &"créer_".repeat(12)),
            [
                "kopf.zalando.org/créer_créer_créer_créer_créer_créer_créer_créer_créer_cr-OXrFqA",
                "kopf.zalando.org/créer_créer_créer_créer_créer_créer_cré-OXrFqA",
            ]
        );
        assert_eq!(
            keys(DEFAULT_PREFIX, &"ü".repeat(50)),
            [
                format!("kopf.zalando.org/{}", "ü".repeat(50)),
                format!("kopf.zalando.org/{}-yyYtsg", "ü".repeat(39)),
            ]
        );
    }

    #[test]
    fn custom_prefix_keys_match_kopf() {
        // Expected values came from Kopf 1.45.2 with prefix='my-operator.example.com'.
        let p = "my-operator.example.com";
        assert_eq!(keys(p, "create_fn"), ["my-operator.example.com/create_fn"]);
        assert_eq!(
            keys(p, &"x".repeat(40)),
            [
                format!("{p}/{}", "x".repeat(40)),
                format!("{p}/{}-tEokcg", "x".repeat(32)),
            ]
        );
        assert_eq!(
            keys(p, &"a".repeat(46)),
            [
                format!("{p}/{}", "a".repeat(46)),
                format!("{p}/{}-RrGn4Q", "a".repeat(32)),
            ]
        );
        assert_eq!(
            keys(
                p,
                "reconcile_the_object_with_a_very_long_name/spec.template.spec.containers"
            ),
            [
                "my-operator.example.com/reconcile_the_object_with_a_very_long_name.spec.template-23zNAA",
                "my-operator.example.com/reconcile_the_object_with_a_very-rWDZmQ",
            ]
        );
    }

    #[test]
    fn overlong_prefixes_mirror_pythons_negative_slices() {
        // Expected values came from Kopf 1.45.2 with prefix='p'*70: the V1 limit goes negative and
        // Python's `safe_key[:-15]` cuts from the end.
        let p = "p".repeat(70);
        assert_eq!(
            keys(&p, "create_fn"),
            [format!("{p}/create_fn"), format!("{p}/-AZjFuA")]
        );
        assert_eq!(
            keys(&p, "create_fn/task_a"),
            [format!("{p}/create_fn.task_a"), format!("{p}/c-p3RJbg")]
        );
        assert_eq!(
            keys(&p, "update_fn/spec.field"),
            [
                format!("{p}/update_fn.spec.field"),
                format!("{p}/updat-vMvlnQ")
            ]
        );
        assert_eq!(
            keys(
                &p,
                "reconcile_the_object_with_a_very_long_name/spec.template.spec.containers"
            ),
            [
                format!("{p}/reconcile_the_object_with_a_very_long_name.spec.template-23zNAA"),
                format!("{p}/reconcile_the_object_with_a_very_long_name.spec.template.-rWDZmQ"),
            ]
        );
        assert_eq!(
            keys(&p, &"x".repeat(64)),
            [
                format!("{p}/{}-SItAqA", "x".repeat(56)),
                format!("{p}/{}-SItAqA", "x".repeat(49)),
            ]
        );
        assert_eq!(
            keys(&p, "last-handled-configuration"),
            [
                format!("{p}/last-handled-configuration"),
                format!("{p}/last-handle-a.A3qw")
            ]
        );
        assert!(!conv(&p).prefix_is_too_long());
        assert!(conv(&"p".repeat(190)).prefix_is_too_long());
    }

    #[test]
    fn replicasets_of_deployments_get_marked_before_hashing() {
        // Expected values came from Kopf 1.45.2.
        let rs = json!({"kind": "ReplicaSet", "metadata": {"ownerReferences": [
            {"kind": "Deployment", "name": "d"}
        ]}});
        let c = KeyConvention::default();
        assert_eq!(
            c.make_keys("create_fn", &rs),
            ["kopf.zalando.org/create_fn-ofDRS"]
        );
        assert_eq!(
            c.make_keys("touch-dummy", &rs),
            ["kopf.zalando.org/touch-dummy-ofDRS"]
        );
        assert_eq!(
            c.make_keys(&"x".repeat(64), &rs),
            [
                format!("kopf.zalando.org/{}-zIbDNQ", "x".repeat(56)),
                format!("kopf.zalando.org/{}-zIbDNQ", "x".repeat(39)),
            ]
        );
        let not_by_deployment = json!({"kind": "ReplicaSet", "metadata": {"ownerReferences": [
            {"kind": "StatefulSet"}
        ]}});
        assert_eq!(
            c.make_keys("create_fn", &not_by_deployment),
            ["kopf.zalando.org/create_fn"]
        );
        let deployment = json!({"kind": "Deployment", "metadata": {"ownerReferences": [
            {"kind": "Deployment"}
        ]}});
        assert_eq!(
            c.make_keys("create_fn", &deployment),
            ["kopf.zalando.org/create_fn"]
        );
    }

    #[test]
    fn v1_can_be_switched_off() {
        // Expected value came from Kopf 1.45.2 with v1=False.
        let c = KeyConvention::new(DEFAULT_PREFIX, false).unwrap();
        assert!(!c.v1());
        assert_eq!(
            c.make_keys(&"x".repeat(64), &json!({})),
            [format!("kopf.zalando.org/{}-SItAqA", "x".repeat(56))]
        );
    }

    #[test]
    fn empty_prefixes_are_refused() {
        assert_eq!(KeyConvention::new("", true), Err(KeyError::EmptyPrefix));
        assert_eq!(KeyConvention::default().prefix(), DEFAULT_PREFIX);
    }

    #[test]
    fn well_known_keys() {
        let c = KeyConvention::default();
        assert_eq!(c.touch_dummy_key(), "kopf.zalando.org/touch-dummy");
        assert_eq!(
            c.last_handled_configuration_key(),
            "kopf.zalando.org/last-handled-configuration"
        );
        assert_eq!(c.marker_key(), None);
        assert_eq!(
            conv("my-op.example.com").marker_key().as_deref(),
            Some("my-op.example.com/kopf-managed")
        );
        assert_eq!(conv("kopf.example.com").marker_key(), None);
        assert!(c.owns_key("kopf.zalando.org/x"));
        assert!(!c.owns_key("kopf.zalando.orgx/x"));
        assert!(!c.owns_key("sub.kopf.zalando.org/x"));
    }

    #[test]
    fn the_marker_is_stored_once() {
        // Kopf 1.45.2: a custom prefix adds `<prefix>/kopf-managed: "yes"` unless the body or the
        // patch has it already (any value).
        let c = conv("my-op.example.com");
        let mut patch = MergePatch::new();
        c.store_marker(&json!({}), &mut patch);
        assert_eq!(
            patch.as_value(),
            &json!({"metadata": {"annotations": {"my-op.example.com/kopf-managed": "yes"}}})
        );
        let mut patch = MergePatch::new();
        let body = json!({"metadata": {"annotations": {"my-op.example.com/kopf-managed": "no"}}});
        c.store_marker(&body, &mut patch);
        assert!(patch.is_empty());
        let mut patch = MergePatch::new();
        KeyConvention::default().store_marker(&json!({}), &mut patch);
        assert!(patch.is_empty());
    }

    #[test]
    fn marked_prefixes_are_detected() {
        let found = detect_marked_prefixes([
            "kopf.zalando.org/create_fn",
            "sub.kopf.zalando.org/thing",
            "kopf.zalando.org.evil/thing",
            "other-op.example.com/kopf-managed",
            "other-op.example.com",
            "plain",
            "unrelated.example.com/kopf-managed-not",
        ]);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [
                "kopf.zalando.org",
                "other-op.example.com",
                "sub.kopf.zalando.org"
            ]
        );
        let prefixes = ["kopf.zalando.org"];
        assert!(is_under_prefixes("kopf.zalando.org/x", prefixes));
        assert!(!is_under_prefixes("kopf.zalando.org.evil/x", prefixes));
        assert!(!is_under_prefixes("kopf.zalando.org", prefixes));
    }
}
