//! The children of a sync registration: the declared types with their watch's stores, the
//! current children of a parent, how a desired child compares with what exists, and the apply
//! and delete of one child.

use std::collections::HashMap;
use std::sync::Arc;

use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use super::FIELD_MANAGER;
use super::state::hash_of;
use crate::core::sync::{
    self as decide, ChildKey, ChildType, Controller, Desired, Existing, Observed, Step,
};
use crate::runtime::context::Context;
use crate::runtime::discovery::Served;
use crate::runtime::kit::{api_for, status_code, typed};
use crate::runtime::ports::ChildGroup;

/// An apply or a deletion that failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// The server-side apply failed.
    #[error("cannot apply {kind} {name:?}: {source}")]
    Apply {
        /// The child's kind.
        kind: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The deletion failed.
    #[error("cannot delete {kind} {name:?}: {source}")]
    Delete {
        /// The child's kind.
        kind: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// What a performed step changes in the memory of applied children.
pub(super) enum Applied {
    /// This child now has this body hash and resourceVersion.
    Now(ChildKey, (u64, String)),
    /// This child is no longer ours (deleted or being deleted).
    Gone(ChildKey),
}

/// The declared child types and their stores.
pub(super) struct Children {
    /// The client and metrics.
    pub(super) env: Arc<Context>,
    /// The declared types, in the registration's order.
    pub(super) types: Vec<ChildType>,
    /// Each type's resource and stores, in the same order.
    pub(super) kinds: Vec<(Served, Vec<Store<DynamicObject>>)>,
}

impl Children {
    /// The children a parent (by uid) controls, per type, sorted by namespace and name.
    pub(super) fn current(&self, uid: &str) -> Vec<(usize, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for (i, (_, stores)) in self.kinds.iter().enumerate() {
            let mut objs: Vec<Arc<DynamicObject>> = stores
                .iter()
                .flat_map(|s| {
                    s.state_filter(|o| {
                        o.metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|r| r.controller == Some(true) && r.uid == uid)
                    })
                })
                .collect();
            objs.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            out.extend(objs.into_iter().map(|o| (i, o)));
        }
        out
    }

    /// The current children as the handler gets them: grouped by type, with their types.
    pub(super) fn groups(&self, current: &[(usize, Arc<DynamicObject>)]) -> Vec<ChildGroup> {
        self.types
            .iter()
            .enumerate()
            .map(|(i, t)| ChildGroup {
                api_version: t.api_version.clone(),
                kind: t.kind.clone(),
                objects: current
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, o)| typed(o.as_ref(), &self.kinds[i].0.resource))
                    .collect(),
            })
            .collect()
    }

    /// The current children as the plan observes them.
    pub(super) fn observed(current: &[(usize, Arc<DynamicObject>)]) -> Vec<Observed> {
        current
            .iter()
            .filter_map(|(i, o)| {
                serde_json::to_value(o.as_ref())
                    .ok()
                    .map(|v| Observed::of(*i, &v))
            })
            .collect()
    }

    fn lookup(
        &self,
        type_index: usize,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let (served, stores) = &self.kinds[type_index];
        let mut r = ObjectRef::new_with(name, served.resource.clone());
        if let Some(ns) = ns {
            r = r.within(ns);
        }
        stores.iter().find_map(|s| s.get(&r))
    }

    /// What exists under a desired child's name: nothing, ours (current or not), another
    /// parent's, or an orphan. `applied` is what this core applied last.
    pub(super) fn existing(
        &self,
        d: &Desired,
        parent_uid: &str,
        applied: &HashMap<ChildKey, (u64, String)>,
    ) -> Existing {
        let Some(obj) = self.lookup(d.type_index, d.namespace.as_deref(), &d.name) else {
            return Existing::Absent;
        };
        let controller = obj
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| Controller {
                uid: &r.uid,
                kind: &r.kind,
                name: &r.name,
            });
        decide::existing(controller, parent_uid, || {
            let rv = obj.metadata.resource_version.clone().unwrap_or_default();
            let cached = applied.get(&d.key()) == Some(&(hash_of(&d.body), rv));
            cached
                || decide::contains(
                    &typed(obj.as_ref(), &self.kinds[d.type_index].0.resource),
                    &d.body,
                )
        })
    }

    /// Applies or deletes one child; `record` learns what changed in the applied children
    /// (a deletion is recorded before it is tried).
    pub(super) async fn perform(
        &self,
        step: Step,
        record: impl FnOnce(Applied),
    ) -> Result<(), StepError> {
        self.env.active.fence().await;
        match step {
            Step::Apply(d) => {
                let (served, _) = &self.kinds[d.type_index];
                let api = api_for(&self.env.client, served, d.namespace.as_deref());
                let params = PatchParams::apply(FIELD_MANAGER).force();
                match api.patch(&d.name, &params, &Patch::Apply(&d.body)).await {
                    Ok(obj) => {
                        self.env.metrics.api("apply", 200);
                        tracing::info!(kind = %served.resource.kind, child = %d.name, "Applied a child.");
                        let rv = obj.metadata.resource_version.unwrap_or_default();
                        record(Applied::Now(d.key(), (hash_of(&d.body), rv)));
                        Ok(())
                    }
                    Err(source) => {
                        self.env.metrics.api("apply", status_code(&source));
                        Err(StepError::Apply {
                            kind: served.resource.kind.clone(),
                            name: d.name,
                            source,
                        })
                    }
                }
            }
            Step::Delete { key: child, uid } => {
                let (served, _) = &self.kinds[child.0];
                let api = api_for(&self.env.client, served, child.1.as_deref());
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                let name = child.2.clone();
                record(Applied::Gone(child));
                match api.delete(&name, &params).await {
                    Ok(_) => {
                        self.env.metrics.api("delete", 200);
                        tracing::info!(kind = %served.resource.kind, child = %name, "Deleted a child.");
                        Ok(())
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                        self.env.metrics.api("delete", s.code);
                        Ok(())
                    }
                    Err(source) => {
                        self.env.metrics.api("delete", status_code(&source));
                        Err(StepError::Delete {
                            kind: served.resource.kind.clone(),
                            name,
                            source,
                        })
                    }
                }
            }
        }
    }
}

/// A parent's body as the sync handler gets it; `None` when it cannot be serialised.
pub(super) fn body_of(obj: &DynamicObject, served: &Served) -> Option<Value> {
    Some(typed(obj, &served.resource)).filter(Value::is_object)
}
