//! Change handling's end of the shared watches: listings sweep the queue and feed the indexes;
//! every object goes to its queue slot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::watcher;

use crate::runtime::context::ResourceCtx;
use crate::runtime::queue::{Key, Observed, Queue, Seen};
use crate::runtime::watching::Subscription;

fn key_of(index: usize, obj: &DynamicObject) -> Key {
    (
        index,
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Change handling's end of one shared watch: a resource in one namespace (or all).
pub(super) struct Scope {
    pub(super) queue: Arc<Queue>,
    pub(super) res: Arc<ResourceCtx>,
    pub(super) gate: Arc<crate::runtime::indexing::Gate>,
    pub(super) index: usize,
    pub(super) namespace: Option<String>,
    pub(super) call_timeout: Duration,
    /// A watch of the start (counted for the index gate), not one added later.
    pub(super) initial: bool,
}

impl Scope {
    /// Feeds the index handlers (if any), then queues the object for its cycle (if the resource
    /// has other handlers).
    async fn observe(&self, obj: &DynamicObject, seen: Seen) {
        use crate::runtime::indexing::{self, Event};
        if !self.res.indexers.is_empty() {
            let event = match seen {
                Seen::Listed => Event::Added,
                Seen::Applied => Event::Modified,
                Seen::Deleted => Event::Deleted,
            };
            match serde_json::to_value(obj) {
                Ok(body) => indexing::feed(&self.res, event, &body, self.call_timeout).await,
                Err(err) => tracing::error!(error = %err, "Cannot serialise a watched object."),
            }
        }
        if !self.res.handlers.is_empty() {
            observe(&self.queue, key_of(self.index, obj), obj, seen);
        }
    }
}

/// Takes the events of one shared watch into change handling: listings sweep the queue and feed
/// the indexes; every object goes to its queue slot.
pub(super) async fn watch(scope: Scope, mut subscription: Subscription) {
    let Scope {
        index,
        ref namespace,
        ..
    } = scope;
    let mut counted = false;
    let mut indexed = crate::runtime::indexing::Listing::default();
    let mut listing: Option<HashSet<Key>> = None;
    while let Some(event) = subscription.next().await {
        match &*event {
            watcher::Event::Init => {
                listing = Some(HashSet::new());
                indexed.begin();
                if !counted {
                    scope.queue.listing_begins(index, namespace.as_deref());
                }
            }
            watcher::Event::InitApply(obj) => {
                let key = key_of(index, obj);
                indexed.add(&key.1, &key.2);
                if let Some(l) = listing.as_mut() {
                    l.insert(key);
                }
                scope.observe(obj, Seen::Listed).await;
            }
            watcher::Event::InitDone => {
                if let Some(listed) = listing.take() {
                    scope.queue.sweep(index, namespace.as_deref(), &listed);
                }
                if let Some(listed) = indexed.finish() {
                    crate::runtime::indexing::listed(
                        &scope.res,
                        namespace.as_deref(),
                        listed.iter().map(|(ns, n)| (ns.as_str(), n.as_str())),
                        scope.call_timeout,
                    )
                    .await;
                }
                if !counted {
                    counted = true;
                    scope.queue.listing_ends(index, namespace.as_deref());
                    subscription.listed();
                    if scope.initial && !scope.res.indexers.is_empty() {
                        scope.gate.listed();
                    }
                }
            }
            watcher::Event::Apply(obj) => scope.observe(obj, Seen::Applied).await,
            watcher::Event::Delete(obj) => scope.observe(obj, Seen::Deleted).await,
        }
    }
}

fn observe(queue: &Arc<Queue>, key: Key, obj: &DynamicObject, seen: Seen) {
    match serde_json::to_string(obj) {
        Ok(json) => queue.observe(
            key,
            Observed::new(json, obj.metadata.resource_version.clone()),
            seen,
        ),
        Err(err) => tracing::error!(error = %err, "Cannot serialise a watched object."),
    }
}
