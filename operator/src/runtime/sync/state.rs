//! The parents of a sync registration: found in the watch's stores, and what the controller
//! remembers about each between syncs.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use kube::api::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use super::Key;
use crate::core::sync::{ChildKey, Errors, Rollout};
use crate::runtime::discovery::Served;
use crate::runtime::kit::Locked;

/// What the controller remembers about a parent between syncs.
#[derive(Debug, Default)]
pub(super) struct ParentState {
    /// Its failures.
    pub(super) errors: Errors,
    /// Rolling updates in progress, per child type.
    pub(super) rollouts: BTreeMap<usize, Rollout>,
    /// Per child: hash of the body we applied last and the resourceVersion it produced.
    pub(super) applied: HashMap<ChildKey, (u64, String)>,
}

/// The parent resource, its stores and the memory of each parent.
pub(super) struct Parents {
    /// The parent resource.
    pub(super) served: Served,
    stores: Vec<Store<DynamicObject>>,
    memory: Mutex<HashMap<Key, ParentState>>,
}

impl Parents {
    /// The parents of `served` as the watches of `stores` see them.
    pub(super) fn new(served: Served, stores: Vec<Store<DynamicObject>>) -> Self {
        Self {
            served,
            stores,
            memory: Mutex::default(),
        }
    }

    /// The parent of `key`, if it exists.
    pub(super) fn find(&self, key: &Key) -> Option<Arc<DynamicObject>> {
        let mut r = ObjectRef::new_with(&key.1, self.served.resource.clone());
        if self.served.namespaced {
            r = r.within(&key.0);
        }
        self.stores.iter().find_map(|s| s.get(&r))
    }

    /// Reads or changes what is remembered about `key`.
    pub(super) fn with<T>(&self, key: &Key, f: impl FnOnce(&mut ParentState) -> T) -> T {
        let mut map = self.memory.locked();
        f(map.entry(key.clone()).or_default())
    }

    /// Forgets a parent that is gone.
    pub(super) fn forget(&self, key: &Key) {
        self.memory.locked().remove(key);
    }
}

/// A stable hash of a JSON value (of what was applied).
pub(super) fn hash_of(v: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}
