//! What the task controller sees: every task in the stores with what the decisions need
//! ([`Seen`]), and what its loop remembers between passes ([`LoopState`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
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

/// What the loop remembers between passes.
#[derive(Default)]
pub(super) struct LoopState {
    /// Waiting written (or being written) by this core.
    pub(super) marked: HashSet<String>,
    /// Deleted by retention, and when.
    pub(super) expiring: HashMap<String, std::time::Instant>,
    /// Deletions recorded after a restart or finalizers released, and when.
    pub(super) cleaned: HashMap<String, std::time::Instant>,
    /// Read-model keys published.
    pub(super) published: HashSet<(String, String, String)>,
}

/// How long a clean-up or a deletion that the watch does not show done yet waits before it is
/// tried again.
pub(super) const RETRY_WRITES_AFTER: Duration = Duration::from_secs(10);

/// Whether a write about `uid` is due: never tried, or tried [`RETRY_WRITES_AFTER`] ago (it
/// failed, or its effect is not visible yet); records the try.
pub(super) fn due(tried: &mut HashMap<String, std::time::Instant>, uid: &str) -> bool {
    let now = std::time::Instant::now();
    match tried.get(uid) {
        Some(at) if now.duration_since(*at) < RETRY_WRITES_AFTER => false,
        _ => {
            tried.insert(uid.to_owned(), now);
            true
        }
    }
}

/// Every task in the stores of `regs`; `finalizer` is the core's task finalizer.
pub(super) fn snapshot(regs: &[Reg], finalizer: &str) -> Vec<Seen> {
    let mut out = Vec::new();
    for (index, reg) in regs.iter().enumerate() {
        for obj in reg.stores.iter().flat_map(Store::state) {
            let body = typed(&obj, &reg.task.resource);
            let namespace = obj.metadata.namespace.clone().unwrap_or_default();
            let name = obj.metadata.name.clone().unwrap_or_default();
            let parent = decide::parent_name(&body, &reg.spec.parent_field);
            let observed = Observed {
                status: TaskStatus::of(&body),
                deleting: obj.metadata.deletion_timestamp.is_some(),
                finalizer: obj
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| *f == finalizer),
                parent: parent.clone(),
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_due_once_then_again_after_a_while() {
        let mut tried = HashMap::new();
        assert!(due(&mut tried, "u"));
        assert!(!due(&mut tried, "u"), "tried just now");
        tried.insert(
            "u".to_owned(),
            std::time::Instant::now() - RETRY_WRITES_AFTER - Duration::from_millis(1),
        );
        assert!(due(&mut tried, "u"));
    }
}
