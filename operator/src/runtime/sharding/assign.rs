//! Own assignment (no sharder): claiming the objects the ring places here, and handing over
//! those it places elsewhere.
//!
//! - **Claims**: per served resource and scope, a metadata-only watch of the objects *not*
//!   labelled for a live member (`<label> notin (<members>)`: unassigned, or left by a dead
//!   shard), restarted whenever the members change. The object the ring places here is labelled
//!   for this shard with the `resourceVersion` read: of two shards with different views of the
//!   ring, only one claim succeeds; the other sees the object assigned and leaves it.
//! - **Rebalancing**: on every change of the members (and every 10 seconds, for handovers that
//!   failed), the objects of ours that the ring places with another member are handed over.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Semaphore;

use super::{Shard, claim_patch, ring_key_of};
use crate::core::sharding::{self, Ring};
use crate::runtime::discovery::Served;
use crate::runtime::kit;

/// How often the placement is checked without a change of the members.
const REBALANCE_EVERY: Duration = Duration::from_secs(10);
/// How many claims are written at once.
const PARALLEL_CLAIMS: usize = 16;

/// Hands over what the ring places elsewhere, at every change of the members.
pub(super) async fn rebalance(shard: Arc<Shard>) {
    shard.active.wait().await;
    let mut members = shard.members.clone();
    loop {
        let ring = Arc::clone(&members.borrow_and_update());
        shard.rebalance(&ring);
        tokio::select! {
            changed = members.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(REBALANCE_EVERY) => {}
        }
    }
}

/// Claims the objects of `served` in `scope` that the ring places here and nobody live holds.
pub(super) async fn claim(shard: Arc<Shard>, served: Served, scope: Option<String>) {
    shard.active.wait().await;
    let api = kit::api_for(&shard.client, &served, scope.as_deref());
    // Metadata only: the claims need names, labels and owners, not the objects.
    let metadata: kube::Api<PartialObjectMeta<DynamicObject>> = match scope.as_deref() {
        Some(ns) if served.namespaced => {
            kube::Api::namespaced_with(shard.client.clone(), ns, &served.resource)
        }
        _ => kube::Api::all_with(shard.client.clone(), &served.resource),
    };
    let claims = Arc::new(Semaphore::new(PARALLEL_CLAIMS));
    let mut members = shard.members.clone();
    loop {
        let ring = Arc::clone(&members.borrow_and_update());
        if !ring.contains(&shard.me) {
            // Our own Lease is not seen among the members yet: nothing is ours to claim.
            if members.changed().await.is_err() {
                return;
            }
            continue;
        }
        let selector = format!("{} notin ({})", shard.shard_label, ring.members().join(","));
        let config = watcher::Config::default().labels(&selector);
        let mut stream = pin!(watcher(metadata.clone(), config).default_backoff());
        let mut failures = 0u32;
        loop {
            tokio::select! {
                changed = members.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // The members changed: watch again with the new selector.
                    break;
                }
                next = stream.next() => match next {
                    Some(Ok(watcher::Event::Apply(meta) | watcher::Event::InitApply(meta))) => {
                        failures = 0;
                        claim_one(&shard, &api, &ring, &served, &meta, &claims);
                    }
                    Some(Ok(_)) => failures = 0,
                    Some(Err(err)) => {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(30) {
                            tracing::warn!(resource = %served.name(), namespace = ?scope, error = %err, "The watch of unassigned objects failed; retrying.");
                        }
                    }
                    None => break,
                },
            }
        }
    }
}

/// Claims one object if the ring places it here and it is unassigned or its shard is dead.
fn claim_one(
    shard: &Arc<Shard>,
    api: &kube::Api<DynamicObject>,
    ring: &Ring,
    served: &Served,
    meta: &PartialObjectMeta<DynamicObject>,
    claims: &Arc<Semaphore>,
) {
    let metadata = &meta.metadata;
    let name = metadata.name.clone().unwrap_or_default();
    let Ok(key) = ring_key_of(served, metadata) else {
        return;
    };
    let current = metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(&shard.shard_label))
        .map(String::as_str);
    if !sharding::should_claim(ring, &key, &shard.me, current) {
        return;
    }
    let previous = current.map(str::to_owned);
    let patch = claim_patch(
        &shard.shard_label,
        &shard.me,
        metadata.resource_version.as_deref(),
    );
    let namespace = metadata.namespace.clone();
    let api = match &namespace {
        Some(ns) if served.namespaced => kit::api_for(&shard.client, served, Some(ns)),
        _ => api.clone(),
    };
    let (shard, claims) = (Arc::clone(shard), Arc::clone(claims));
    tokio::spawn(async move {
        let Ok(_permit) = claims.acquire().await else {
            return;
        };
        for attempt in 1..=10u32 {
            shard.active.fence().await;
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    shard.metrics.shard_move("claimed");
                    tracing::debug!(object = %format!("{}/{name}", namespace.unwrap_or_default()), from = ?previous, "Claimed the object.");
                    return;
                }
                // Changed meanwhile (another shard claimed it, or it was edited): the watch
                // brings its new state, and it is judged again.
                Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                    return;
                }
                Err(err) => {
                    tracing::warn!(object = %name, error = %kit::describe(&err), attempt, "Could not claim the object; trying again.");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
            }
        }
    });
}
