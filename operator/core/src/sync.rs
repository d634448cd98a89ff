//! Level-triggered sync (Metacontroller's CompositeController, Roperator): the pure half.
//!
//! A sync handler maps a parent and its current children to a status and the *desired* children.
//! This module validates that answer ([`validate`]), decides which API calls bring the children
//! to it under each child type's [`Strategy`] ([`plan`]), compares only the fields the handler
//! gave ([`contains`]), and computes the parent's status patch ([`status_patch`]). Around the
//! answer it decides what a sync does with a parent ([`lifecycle`]), whether an answer can be
//! performed ([`read_answer`]), which removals wait for the shutdown hook ([`gated`]), when to
//! sync again ([`next_sync`]), how a sync ends and is counted ([`outcome`], [`Errors::settle`])
//! and how a parent shows in the read model ([`view`]). The runtime (`runtime::sync`) performs
//! the steps.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

mod cycle;
mod view;

pub use cycle::{
    Controller, Ended, Errors, Gated, Lifecycle, Refused, Settled, Unusable, after_gate, clears,
    existing, finalize_again, gated, has_removals, lifecycle, next_sync, outcome, problem,
    read_answer, read_final,
};
pub use view::{CHILDREN_SHOWN, Shown, children_view, rollouts_view, view};

/// How an existing child that differs from its desired state is updated
/// (Metacontroller's `updateStrategy.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Never update; only a missing child is created.
    #[default]
    OnDelete,
    /// Delete a differing child; the next sync creates it again.
    Recreate,
    /// Apply the desired state at once.
    InPlace,
    /// As [`Strategy::Recreate`], one child at a time, in the order of the response.
    RollingRecreate,
    /// As [`Strategy::InPlace`], one child at a time, in the order of the response; the next one
    /// waits until the updated one has observed its generation (when it reports one).
    RollingInPlace,
}

impl Strategy {
    /// One child at a time.
    pub fn rolling(self) -> bool {
        matches!(self, Strategy::RollingRecreate | Strategy::RollingInPlace)
    }
}

/// A declared child type, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildType {
    /// `v1`, `apps/v1`, …
    pub api_version: String,
    /// `ConfigMap`, …
    pub kind: String,
    /// Namespaced (vs. cluster-wide).
    pub namespaced: bool,
    /// The update strategy.
    pub strategy: Strategy,
}

/// The parent, as far as its children are concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace; `None` for a cluster-wide parent.
    pub namespace: Option<String>,
    /// UID.
    pub uid: String,
}

impl Parent {
    /// Reads the parent's identity from its body.
    pub fn of(body: &Value) -> Parent {
        let s = |p: &str| {
            body.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Parent {
            api_version: s("/apiVersion"),
            kind: s("/kind"),
            name: s("/metadata/name"),
            namespace: body
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            uid: s("/metadata/uid"),
        }
    }

    /// The controller ownerReference its children carry.
    pub fn owner_reference(&self) -> Value {
        json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        })
    }
}

/// Identifies one child: its type (index into the declared types), namespace and name.
pub type ChildKey = (usize, Option<String>, String);

/// A desired child, validated, with its namespace and the parent's ownerReference filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Which declared type.
    pub type_index: usize,
    /// Namespace (`None` for cluster-wide children).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The apply-style body.
    pub body: Value,
}

impl Desired {
    /// Its key.
    pub fn key(&self) -> ChildKey {
        (self.type_index, self.namespace.clone(), self.name.clone())
    }
}

/// Why a sync response was refused; nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A child is not a JSON object.
    #[error("child #{0} is not a JSON object")]
    NotAnObject(usize),
    /// A child's apiVersion/kind is not one of the declared child types.
    #[error("child #{index} is a {kind} ({api_version}), which is not a declared child type")]
    Undeclared {
        /// Position in the response.
        index: usize,
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// A child has no `metadata.name`.
    #[error("child #{index} ({kind}) has no metadata.name")]
    NoName {
        /// Position in the response.
        index: usize,
        /// Its kind.
        kind: String,
    },
    /// A child of a namespaced parent is in another namespace.
    #[error(
        "{kind} {name:?} is in namespace {namespace:?}, but children must be in the parent's namespace {parent:?}"
    )]
    OtherNamespace {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// The parent's.
        parent: String,
    },
    /// A namespaced child of a cluster-wide parent names no namespace.
    #[error("{kind} {name:?} needs metadata.namespace (the parent is cluster-wide)")]
    NoNamespace {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// A namespaced parent cannot own a cluster-wide child.
    #[error("{kind} {name:?} is cluster-wide and cannot be owned by a namespaced parent")]
    ClusterChild {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// A child carries `status`, which only the child's own controller may set.
    #[error("{kind} {name:?} carries a status; desired children must not")]
    HasStatus {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// The same child appears twice.
    #[error("{kind} {name:?} appears more than once in the response")]
    Duplicate {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
}

/// Validates the handler's desired children; fills in the namespace and the ownerReference.
///
/// # Errors
/// The first [`Invalid`] child; then nothing must be applied.
pub fn validate(
    parent: &Parent,
    types: &[ChildType],
    children: Vec<Value>,
) -> Result<Vec<Desired>, Invalid> {
    let mut out = Vec::with_capacity(children.len());
    let mut seen = BTreeSet::new();
    for (index, mut body) in children.into_iter().enumerate() {
        let Some(obj) = body.as_object_mut() else {
            return Err(Invalid::NotAnObject(index));
        };
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(type_index) = types
            .iter()
            .position(|t| t.api_version == api_version && t.kind == kind)
        else {
            return Err(Invalid::Undeclared {
                index,
                api_version,
                kind,
            });
        };
        let metadata = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(metadata) = metadata.as_object_mut() else {
            return Err(Invalid::NoName { index, kind });
        };
        let name = match metadata.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => return Err(Invalid::NoName { index, kind }),
        };
        let given = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let namespace = match (&parent.namespace, types[type_index].namespaced, given) {
            (Some(p), true, None) => Some(p.clone()),
            (Some(p), true, Some(g)) if &g == p => Some(g),
            (Some(p), true, Some(g)) => {
                return Err(Invalid::OtherNamespace {
                    kind,
                    name,
                    namespace: g,
                    parent: p.clone(),
                });
            }
            (Some(_), false, _) => return Err(Invalid::ClusterChild { kind, name }),
            (None, true, Some(g)) => Some(g),
            (None, true, None) => return Err(Invalid::NoNamespace { kind, name }),
            (None, false, _) => None,
        };
        match &namespace {
            Some(ns) => {
                metadata.insert("namespace".into(), Value::String(ns.clone()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
        let refs = metadata
            .entry("ownerReferences")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(refs) = refs.as_array_mut()
            && !refs
                .iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(parent.uid.as_str()))
        {
            refs.push(parent.owner_reference());
        }
        if obj.contains_key("status") {
            return Err(Invalid::HasStatus { kind, name });
        }
        let desired = Desired {
            type_index,
            namespace,
            name,
            body,
        };
        if !seen.insert(desired.key()) {
            return Err(Invalid::Duplicate {
                kind: desired.body["kind"].as_str().unwrap_or_default().to_owned(),
                name: desired.name,
            });
        }
        out.push(desired);
    }
    Ok(out)
}

/// Whether `current` already has every field of `desired` with the same value — the comparison
/// that decides whether a child needs an update. Fields only `current` has (defaults, fields of
/// other controllers) do not count. Lists of objects that all have a `name` are matched by name
/// (as server-side apply merges them); other lists must have the same length and match
/// element by element.
pub fn contains(current: &Value, desired: &Value) -> bool {
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => d.iter().all(|(k, dv)| match c.get(k) {
            Some(cv) => contains(cv, dv),
            None => dv.is_null(),
        }),
        (Value::Array(c), Value::Array(d)) => {
            let named = |v: &Vec<Value>| {
                v.iter()
                    .all(|e| e.get("name").and_then(Value::as_str).is_some())
            };
            if !d.is_empty() && named(d) && named(c) {
                d.iter().all(|de| {
                    c.iter()
                        .find(|ce| ce.get("name") == de.get("name"))
                        .is_some_and(|ce| contains(ce, de))
                })
            } else {
                c.len() == d.len() && c.iter().zip(d).all(|(ce, de)| contains(ce, de))
            }
        }
        (Value::Number(c), Value::Number(d)) => c.as_f64() == d.as_f64(),
        _ => current == desired,
    }
}

/// A current child of the parent (its controller ownerReference names the parent's uid).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Which declared type.
    pub type_index: usize,
    /// Namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Being deleted already.
    pub deleting: bool,
    /// Whether it has observed its latest change: no `status.observedGeneration`, or one at
    /// least `metadata.generation`.
    pub settled: bool,
}

impl Observed {
    /// Reads a child of type `type_index`.
    pub fn of(type_index: usize, body: &Value) -> Observed {
        let generation = body.pointer("/metadata/generation").and_then(Value::as_i64);
        let observed = body
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64);
        Observed {
            type_index,
            namespace: body
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: body
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            uid: body
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            deleting: body.pointer("/metadata/deletionTimestamp").is_some(),
            settled: match (observed, generation) {
                (Some(o), Some(g)) => o >= g,
                _ => true,
            },
        }
    }

    /// Its key.
    pub fn key(&self) -> ChildKey {
        (self.type_index, self.namespace.clone(), self.name.clone())
    }
}

/// What is known about a desired child's name before planning.
#[derive(Debug, Clone, PartialEq)]
pub enum Existing {
    /// No object of that name.
    Absent,
    /// The parent's own child; whether it already has the desired fields.
    Own {
        /// It matches the desired state.
        current: bool,
    },
    /// An object of that name controlled by another owner.
    Foreign {
        /// The other controller, `Kind/name`.
        owner: String,
    },
    /// An object of that name with no controller: it is adopted by applying.
    Orphan,
}

/// One API call to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Server-side apply (creates or updates).
    Apply(Desired),
    /// Delete this child (UID precondition).
    Delete {
        /// The child.
        key: ChildKey,
        /// Its UID.
        uid: String,
    },
}

/// A rollout in progress for one child type: the child updated last, which must settle before
/// the next one is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The child being rolled.
    pub key: ChildKey,
    /// Recreated (waiting for a new one to exist) or updated in place (waiting for it to settle).
    pub recreating: bool,
    /// The UID of the child before it was touched.
    pub old_uid: String,
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// API calls, in order.
    pub steps: Vec<Step>,
    /// Desired children whose name another parent's child holds: reported, not fought over.
    pub conflicts: Vec<String>,
    /// Rollouts still (or newly) in progress, by child type.
    pub rollouts: BTreeMap<usize, Rollout>,
    /// How far each rolling child type is: its desired children, and how many of them are
    /// already as desired.
    pub progress: BTreeMap<usize, Progress>,
}

/// How far the rolling update of one child type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Desired children of the type that are as desired (the one rolling now counts once it is).
    pub current: usize,
    /// Desired children of the type.
    pub total: usize,
}

/// Decides the API calls that bring the children to the desired state.
///
/// - Missing children are created and orphans adopted, whatever the strategy.
/// - A differing own child is left alone ([`Strategy::OnDelete`]), deleted
///   ([`Strategy::Recreate`]), or applied ([`Strategy::InPlace`]); the rolling variants touch
///   one child per type at a time, in the response's order, and only once the previous one has
///   settled (`rollouts`).
/// - Current children that are not desired (and not being deleted) are deleted.
pub fn plan(
    types: &[ChildType],
    desired: Vec<Desired>,
    observed: &[Observed],
    existing: impl Fn(&Desired) -> Existing,
    rollouts: &BTreeMap<usize, Rollout>,
) -> Plan {
    let mut out = Plan::default();
    // A rollout continues while its child has not settled.
    for (t, r) in rollouts {
        let child = observed.iter().find(|o| o.key() == r.key);
        let pending = match child {
            Some(o) if r.recreating => o.uid == r.old_uid,
            Some(o) => !o.settled,
            None => r.recreating && desired.iter().any(|d| d.key() == r.key),
        };
        if pending {
            out.rollouts.insert(*t, r.clone());
        }
    }
    let wanted: BTreeSet<ChildKey> = desired.iter().map(Desired::key).collect();
    for d in desired {
        let strategy = types[d.type_index].strategy;
        let found = existing(&d);
        if strategy.rolling() {
            let progress = out.progress.entry(d.type_index).or_default();
            progress.total += 1;
            progress.current += usize::from(matches!(found, Existing::Own { current: true }));
        }
        match found {
            Existing::Absent | Existing::Orphan => out.steps.push(Step::Apply(d)),
            Existing::Foreign { owner } => out.conflicts.push(format!(
                "{} {:?} is already controlled by {owner}",
                types[d.type_index].kind, d.name
            )),
            Existing::Own { current: true } => {}
            Existing::Own { current: false } => {
                let Some(o) = observed.iter().find(|o| o.key() == d.key()) else {
                    continue;
                };
                if o.deleting {
                    continue;
                }
                if strategy.rolling() {
                    if out.rollouts.contains_key(&d.type_index) {
                        continue;
                    }
                    out.rollouts.insert(
                        d.type_index,
                        Rollout {
                            key: d.key(),
                            recreating: strategy == Strategy::RollingRecreate,
                            old_uid: o.uid.clone(),
                        },
                    );
                }
                match strategy {
                    Strategy::OnDelete => {}
                    Strategy::Recreate | Strategy::RollingRecreate => {
                        out.steps.push(Step::Delete {
                            key: o.key(),
                            uid: o.uid.clone(),
                        })
                    }
                    Strategy::InPlace | Strategy::RollingInPlace => out.steps.push(Step::Apply(d)),
                }
            }
        }
    }
    for o in observed {
        if !o.deleting && !wanted.contains(&o.key()) {
            out.steps.push(Step::Delete {
                key: o.key(),
                uid: o.uid.clone(),
            });
        }
    }
    out
}

/// The JSON merge patch that turns `current` into `desired` (keys only in `current` become
/// `null`); `None` when they are equal.
pub fn merge_diff(current: &Value, desired: &Value) -> Option<Value> {
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => {
            let mut patch = Map::new();
            for (k, cv) in c {
                match d.get(k) {
                    None => {
                        patch.insert(k.clone(), Value::Null);
                    }
                    Some(dv) => {
                        if let Some(p) = merge_diff(cv, dv) {
                            patch.insert(k.clone(), p);
                        }
                    }
                }
            }
            for (k, dv) in d {
                if !c.contains_key(k) {
                    patch.insert(k.clone(), dv.clone());
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        (c, d) if c == d => None,
        (_, d) => Some(d.clone()),
    }
}

/// The key of the core's own error report in the parent's status.
pub const SYNC_ERROR_KEY: &str = "syncError";

/// The merge patch for the parent's `status` (`None`: nothing to write).
///
/// `handler` is the handler's status (`None`: leave the status alone); the core adds
/// `observedGeneration` and, when the sync was refused or conflicted, [`SYNC_ERROR_KEY`] (which
/// it removes once the error is gone). The shutdown hook's state
/// ([`crate::shutdown::STATUS_KEY`]) belongs to the core and is never touched here.
pub fn status_patch(
    current: &Value,
    handler: Option<&Value>,
    generation: Option<i64>,
    error: Option<&str>,
) -> Option<Value> {
    let current = if current.is_object() {
        current.clone()
    } else {
        json!({})
    };
    let mut desired = match handler {
        Some(Value::Object(s)) => {
            let mut s = s.clone();
            if let Some(g) = generation {
                s.insert("observedGeneration".into(), json!(g));
            }
            let hook = crate::shutdown::STATUS_KEY;
            match current.get(hook) {
                Some(kept) => {
                    s.insert(hook.into(), kept.clone());
                }
                None => {
                    s.remove(hook);
                }
            }
            Value::Object(s)
        }
        _ => {
            let mut s = current.clone();
            if let Some(s) = s.as_object_mut() {
                s.remove(SYNC_ERROR_KEY);
            }
            s
        }
    };
    if let (Some(e), Some(s)) = (error, desired.as_object_mut()) {
        s.insert(SYNC_ERROR_KEY.into(), json!(e));
    }
    merge_diff(&current, &desired)
}

/// One owner reference of a child, as far as routing it to its parent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// It is the controller reference.
    pub controller: bool,
    /// The owner's kind.
    pub kind: &'a str,
    /// The owner's apiVersion.
    pub api_version: &'a str,
    /// The owner's name.
    pub name: &'a str,
}

/// The parents (namespace — `""` for a cluster-wide parent — and name) whose sync a change of a
/// child in `child_namespace` calls for: the child's *controller* references to the parent kind
/// (`kind`, `api_version`). Other owners and plain owner references do not make it a child.
pub fn parents_of<'a>(
    owners: impl IntoIterator<Item = Owner<'a>>,
    kind: &str,
    api_version: &str,
    parent_namespaced: bool,
    child_namespace: &str,
) -> Vec<(String, String)> {
    owners
        .into_iter()
        .filter(|o| o.controller && o.kind == kind && o.api_version == api_version)
        .map(|o| {
            let ns = if parent_namespaced {
                child_namespace
            } else {
                ""
            };
            (ns.to_owned(), o.name.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Vec<ChildType> {
        vec![
            ChildType {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespaced: true,
                strategy: Strategy::InPlace,
            },
            ChildType {
                api_version: "v1".into(),
                kind: "Service".into(),
                namespaced: true,
                strategy: Strategy::RollingRecreate,
            },
        ]
    }

    fn parent() -> Parent {
        Parent::of(&json!({"apiVersion": "g/v1", "kind": "P",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"}}))
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
    }

    #[test]
    fn validation_fills_namespace_and_owner() {
        let d = validate(&parent(), &types(), vec![cm("a")]).unwrap();
        assert_eq!(d[0].namespace.as_deref(), Some("ns"));
        assert_eq!(d[0].body["metadata"]["ownerReferences"][0]["uid"], "u");
        assert_eq!(
            d[0].body["metadata"]["ownerReferences"][0]["controller"],
            true
        );
    }

    #[test]
    fn validation_refuses_bad_children() {
        let mut other = cm("a");
        other["metadata"]["namespace"] = json!("elsewhere");
        assert!(matches!(
            validate(&parent(), &types(), vec![other]),
            Err(Invalid::OtherNamespace { .. })
        ));
        let mut st = cm("a");
        st["status"] = json!({});
        assert!(matches!(
            validate(&parent(), &types(), vec![st]),
            Err(Invalid::HasStatus { .. })
        ));
        assert!(matches!(
            validate(&parent(), &types(), vec![cm("a"), cm("a")]),
            Err(Invalid::Duplicate { .. })
        ));
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}});
        assert!(matches!(
            validate(&parent(), &types(), vec![pod]),
            Err(Invalid::Undeclared { .. })
        ));
        assert!(matches!(
            validate(
                &parent(),
                &types(),
                vec![json!({"apiVersion": "v1", "kind": "ConfigMap"})]
            ),
            Err(Invalid::NoName { .. })
        ));
    }

    #[test]
    fn contains_ignores_foreign_fields() {
        let current = json!({"spec": {"initContainers": [{"name": "inj"}],
            "containers": [{"name": "a", "image": "x", "imagePullPolicy": "Always"}, {"name": "side"}],
            "replicas": 3}});
        assert!(contains(
            &current,
            &json!({"spec": {"containers": [{"name": "a", "image": "x"}], "replicas": 3}})
        ));
        assert!(!contains(
            &current,
            &json!({"spec": {"containers": [{"name": "a", "image": "y"}]}})
        ));
        assert!(!contains(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
    }

    fn own(type_index: usize, name: &str, uid: &str) -> Observed {
        Observed {
            type_index,
            namespace: Some("ns".into()),
            name: name.into(),
            uid: uid.into(),
            deleting: false,
            settled: true,
        }
    }

    #[test]
    fn plan_per_strategy() {
        let mut ts = types();
        let svc = |n: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}});
        let desired =
            validate(&parent(), &ts, vec![cm("a"), cm("b"), svc("s1"), svc("s2")]).unwrap();
        let observed = vec![
            own(0, "a", "ua"),
            own(0, "gone", "ug"),
            own(1, "s1", "u1"),
            own(1, "s2", "u2"),
        ];
        let existing = |d: &Desired| match d.name.as_str() {
            "b" => Existing::Absent,
            _ => Existing::Own { current: false },
        };
        let p = plan(&ts, desired.clone(), &observed, existing, &BTreeMap::new());
        let names: Vec<String> = p
            .steps
            .iter()
            .map(|s| match s {
                Step::Apply(d) => format!("apply {}", d.name),
                Step::Delete { key, .. } => format!("delete {}", key.2),
            })
            .collect();
        // In place for ConfigMaps, one Service at a time, the stale child deleted.
        assert_eq!(
            names,
            ["apply a", "apply b", "delete s1", "delete gone"],
            "{p:?}"
        );
        assert_eq!(p.rollouts[&1].key.2, "s1");
        // Progress is counted for the rolling type only: 0 of 2 Services as desired yet.
        let progress = |current, total| Progress { current, total };
        assert_eq!(p.progress, BTreeMap::from([(1, progress(0, 2))]));
        // While s1 is not back (gone, or still terminating), s2 waits.
        let mut terminating = own(1, "s1", "u1");
        terminating.deleting = true;
        for observed2 in [
            vec![own(0, "a", "ua"), own(1, "s2", "u2")],
            vec![own(0, "a", "ua"), terminating, own(1, "s2", "u2")],
        ] {
            let p2 = plan(&ts, desired.clone(), &observed2, existing, &p.rollouts);
            assert!(
                p2.steps
                    .iter()
                    .all(|s| !matches!(s, Step::Delete { key, .. } if key.2 == "s2")),
                "{p2:?}"
            );
            assert_eq!(p2.rollouts[&1].key.2, "s1");
        }
        // Once a new s1 exists, s2 is next.
        let observed3 = vec![
            own(0, "a", "ua"),
            own(1, "s1", "u1-new"),
            own(1, "s2", "u2"),
        ];
        let existing3 = |d: &Desired| match d.name.as_str() {
            "b" => Existing::Absent,
            "s1" => Existing::Own { current: true },
            _ => Existing::Own { current: false },
        };
        let p3 = plan(&ts, desired.clone(), &observed3, existing3, &p.rollouts);
        assert!(
            p3.steps
                .iter()
                .any(|s| matches!(s, Step::Delete { key, .. } if key.2 == "s2")),
            "{p3:?}"
        );
        assert_eq!(p3.progress[&1], progress(1, 2));
        // On delete: nothing is updated.
        ts[0].strategy = Strategy::OnDelete;
        let p4 = plan(&ts, desired, &observed, existing, &BTreeMap::new());
        assert!(
            !p4.steps
                .iter()
                .any(|s| matches!(s, Step::Apply(d) if d.name == "a"))
        );
    }

    #[test]
    fn rolling_in_place_waits_until_the_updated_child_settles() {
        let mut ts = types();
        ts[0].strategy = Strategy::RollingInPlace;
        let desired = validate(&parent(), &ts, vec![cm("a"), cm("b")]).unwrap();
        let stale = |_: &Desired| Existing::Own { current: false };
        let observed = vec![own(0, "a", "ua"), own(0, "b", "ub")];
        let first = plan(&ts, desired.clone(), &observed, stale, &BTreeMap::new());
        let applied = |p: &Plan| -> Vec<String> {
            p.steps
                .iter()
                .filter_map(|s| match s {
                    Step::Apply(d) => Some(d.name.clone()),
                    Step::Delete { .. } => None,
                })
                .collect()
        };
        assert_eq!(applied(&first), ["a"], "one child at a time, in order");
        // a has not observed its new generation yet: b waits.
        let mut unsettled = own(0, "a", "ua");
        unsettled.settled = false;
        let waiting = plan(
            &ts,
            desired.clone(),
            &[unsettled, own(0, "b", "ub")],
            |d: &Desired| match d.name.as_str() {
                "a" => Existing::Own { current: true },
                _ => Existing::Own { current: false },
            },
            &first.rollouts,
        );
        assert!(applied(&waiting).is_empty(), "{waiting:?}");
        // a settled: b is next.
        let next = plan(
            &ts,
            desired,
            &observed,
            |d: &Desired| match d.name.as_str() {
                "a" => Existing::Own { current: true },
                _ => Existing::Own { current: false },
            },
            &first.rollouts,
        );
        assert_eq!(applied(&next), ["b"]);
        // Reading settledness from a child's body.
        let body = json!({"metadata": {"name": "x", "generation": 3}, "status": {"observedGeneration": 2}});
        assert!(!Observed::of(0, &body).settled);
        let body = json!({"metadata": {"name": "x", "generation": 3}});
        assert!(Observed::of(0, &body).settled);
    }

    #[test]
    fn foreign_children_are_conflicts() {
        let desired = validate(&parent(), &types(), vec![cm("a")]).unwrap();
        let p = plan(
            &types(),
            desired,
            &[],
            |_| Existing::Foreign {
                owner: "P/other".into(),
            },
            &BTreeMap::new(),
        );
        assert!(p.steps.is_empty());
        assert_eq!(p.conflicts.len(), 1);
    }

    #[test]
    fn status_patches() {
        let cur = json!({"a": 1, "observedGeneration": 1, "old": true});
        let p = status_patch(&cur, Some(&json!({"a": 1})), Some(2), None).unwrap();
        assert_eq!(p, json!({"observedGeneration": 2, "old": null}));
        assert_eq!(
            status_patch(
                &json!({"a": 1, "observedGeneration": 2}),
                Some(&json!({"a": 1})),
                Some(2),
                None
            ),
            None
        );
        assert_eq!(status_patch(&cur, None, Some(2), None), None);
        assert_eq!(
            status_patch(&cur, None, Some(2), Some("bad")).unwrap(),
            json!({"syncError": "bad"})
        );
        assert_eq!(
            status_patch(&json!({"syncError": "bad"}), None, Some(2), None).unwrap(),
            json!({"syncError": null})
        );
    }

    #[test]
    fn status_patches_keep_the_shutdown_state() {
        let cur = json!({"a": 1, "shutdown": {"phase": "Waiting"}});
        // The handler's status replaces the rest, never the core's shutdown state…
        assert_eq!(
            status_patch(&cur, Some(&json!({"b": 2})), None, None).unwrap(),
            json!({"a": null, "b": 2})
        );
        // …nor does a handler that returns one of its own set it.
        assert_eq!(
            status_patch(&json!({}), Some(&json!({"shutdown": "mine"})), None, None),
            None
        );
        assert_eq!(
            status_patch(&cur, None, None, Some("bad")).unwrap(),
            json!({"syncError": "bad"})
        );
    }

    #[test]
    fn a_child_change_syncs_the_parents_that_control_it() {
        let owner = |controller, kind, name| Owner {
            controller,
            kind,
            api_version: "e2e.operon.dev/v1",
            name,
        };
        let owners = [
            owner(true, "Site", "a"),
            owner(false, "Site", "plain"),
            owner(true, "Other", "b"),
        ];
        assert_eq!(
            parents_of(owners, "Site", "e2e.operon.dev/v1", true, "ns"),
            [("ns".to_owned(), "a".to_owned())]
        );
        // A cluster-wide parent is found without a namespace.
        assert_eq!(
            parents_of(owners, "Site", "e2e.operon.dev/v1", false, "ns"),
            [(String::new(), "a".to_owned())]
        );
        // Another apiVersion of the kind is another parent resource.
        assert!(parents_of(owners, "Site", "e2e.operon.dev/v2", true, "ns").is_empty());
    }
}
