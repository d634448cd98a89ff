//! What the task controller sees: the registrations served ([`Registry`]) and every task in
//! their stores with what the decisions need ([`Seen`]).

use jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use serde_json::Value;

use super::Reg;
use crate::core::tasks::{self as decide, Observed, TaskStatus};
use crate::runtime::kit::typed;
use crate::runtime::locks::{self, LockKey};

/// One task as seen in the stores.
pub(super) struct Seen {
    /// Its registration (an index into the registrations).
    pub(super) reg: usize,
    /// Its namespace ("" for cluster-wide).
    pub(super) namespace: String,
    /// Its name.
    pub(super) name: String,
    /// Its uid.
    pub(super) uid: String,
    /// The object, with its `apiVersion` and `kind`.
    pub(super) body: Value,
    /// When it was created.
    pub(super) created: Option<Timestamp>,
    /// What the decisions look at.
    pub(super) observed: Observed,
    /// Its parent's lock key, when its parent is named.
    pub(super) parent: Option<LockKey>,
}

/// The registrations served, and the core's task finalizer.
pub(super) struct Registry {
    /// The registrations, in the order served.
    pub(super) regs: Vec<Reg>,
    /// The core's task finalizer.
    pub(super) finalizer: String,
}

impl Registry {
    /// Every task in the stores.
    pub(super) fn snapshot(&self) -> Vec<Seen> {
        let mut out = Vec::new();
        for (index, reg) in self.regs.iter().enumerate() {
            for obj in reg.stores.iter().flat_map(Store::state) {
                let (body, observed) = self.observe(reg, &obj);
                let namespace = obj.metadata.namespace.clone().unwrap_or_default();
                let name = obj.metadata.name.clone().unwrap_or_default();
                let parent = observed.parent.clone();
                out.push(Seen {
                    reg: index,
                    uid: obj.metadata.uid.clone().unwrap_or_default(),
                    created: obj
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .and_then(|t| t.0.to_string().parse().ok()),
                    parent: parent.ok().map(|p| locks::key(&reg.parent, &namespace, &p)),
                    namespace,
                    name,
                    body,
                    observed,
                });
            }
        }
        out
    }

    /// A task of `reg`: its body (with `apiVersion` and `kind`) and what the decisions look at.
    pub(super) fn observe(&self, reg: &Reg, obj: &DynamicObject) -> (Value, Observed) {
        let body = typed(obj, &reg.task.resource);
        let observed = Observed {
            status: TaskStatus::of(&body),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            finalizer: obj
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| *f == self.finalizer),
            parent: decide::parent_name(&body, &reg.spec.parent_field),
        };
        (body, observed)
    }
}
