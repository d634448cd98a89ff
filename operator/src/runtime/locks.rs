//! Per-object locks shared by the three kinds of work on a parent: its change handling (one
//! cycle of `runtime::queue`), its sync (`runtime::sync`, one sync) and its tasks
//! (`runtime::tasks`, a whole run). Whoever holds an object's lock is the only one of them
//! working on that object.
//!
//! # Guarantees
//! - One holder per key at a time; waiters get the lock in the order they asked for it
//!   (`tokio::sync::Mutex` is fair).
//! - An entry lives only while someone holds or waits for it: the registry does not grow with
//!   the number of objects ever seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::runtime::discovery::Served;
use crate::runtime::kit::Locked;

/// An object's identity for locking: `plural.group` (`plural` for the core group), namespace
/// (empty when cluster-scoped) and name. The version is not part of it: one object served in
/// two versions is one object.
pub(crate) type LockKey = (String, String, String);

/// The key of object `namespace`/`name` of resource `served`.
pub(crate) fn key(served: &Served, namespace: &str, name: &str) -> LockKey {
    let resource = if served.resource.group.is_empty() {
        served.resource.plural.clone()
    } else {
        format!("{}.{}", served.resource.plural, served.resource.group)
    };
    let namespace = if served.namespaced { namespace } else { "" };
    (resource, namespace.to_owned(), name.to_owned())
}

type Entries = Arc<Mutex<HashMap<LockKey, Arc<tokio::sync::Mutex<()>>>>>;

/// The registry: one fair async mutex per object that someone holds or waits for.
#[derive(Debug, Default)]
pub(crate) struct ParentLocks {
    entries: Entries,
}

/// A held lock; dropping it releases the lock (and forgets the entry if nobody else wants it).
#[derive(Debug)]
pub(crate) struct LockGuard {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    key: LockKey,
    entries: Entries,
}

impl ParentLocks {
    /// Waits for the lock of `key` and holds it until the guard is dropped.
    pub(crate) async fn lock(&self, key: LockKey) -> LockGuard {
        let mutex = {
            let mut entries = self.entries.locked();
            Arc::clone(entries.entry(key.clone()).or_default())
        };
        // A waiter that is dropped (cancelled) drops its `Arc`, so the entry is still cleaned up
        // by the last guard.
        let guard = mutex.lock_owned().await;
        LockGuard {
            guard: Some(guard),
            key,
            entries: Arc::clone(&self.entries),
        }
    }

    /// How many objects are locked or waited for (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.locked().len()
    }

    /// Nobody holds or waits for any lock.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Release first: our guard's `Arc` must not count as a user of the entry.
        drop(self.guard.take());
        let mut entries = self.entries.locked();
        if entries
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            entries.remove(&self.key);
            // A backlog (a start-up over many objects) grows the table to all of them at once;
            // it must not stay that size once they are handled.
            let len = entries.len();
            if entries.capacity() > 64 && len * 4 < entries.capacity() {
                entries.shrink_to(len * 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::api::ApiResource;

    use super::*;

    fn k(name: &str) -> LockKey {
        ("things.example.com".into(), "ns".into(), name.into())
    }

    #[tokio::test(start_paused = true)]
    async fn one_holder_per_key_and_other_keys_are_free() {
        let locks = Arc::new(ParentLocks::default());
        let first = locks.lock(k("a")).await;
        // Another key is not blocked.
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(k("b"))).await;
        assert!(other.is_ok());
        drop(other);
        // The same key waits until the first guard goes.
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock(k("a")).await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        drop(first);
        let second = waiter.await.unwrap();
        assert_eq!(locks.len(), 1);
        drop(second);
        assert!(locks.is_empty(), "entries are forgotten when unused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_nothing_behind() {
        let locks = Arc::new(ParentLocks::default());
        let held = locks.lock(k("a")).await;
        let waited = tokio::time::timeout(Duration::from_secs(1), locks.lock(k("a"))).await;
        assert!(waited.is_err());
        drop(held);
        assert!(locks.is_empty());
    }

    #[test]
    fn keys_ignore_the_version_and_the_namespace_of_cluster_scoped_objects() {
        let served = |version: &str, namespaced: bool| Served {
            resource: ApiResource {
                group: "example.com".into(),
                version: version.into(),
                api_version: format!("example.com/{version}"),
                kind: "Thing".into(),
                plural: "things".into(),
            },
            namespaced,
            has_status: true,
        };
        assert_eq!(key(&served("v1", true), "ns", "a"), k("a"));
        assert_eq!(key(&served("v2", true), "ns", "a"), k("a"));
        assert_eq!(key(&served("v1", false), "ns", "a").1, "");
        let core = Served {
            resource: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
            },
            namespaced: true,
            has_status: false,
        };
        assert_eq!(key(&core, "ns", "c").0, "configmaps");
    }
}
