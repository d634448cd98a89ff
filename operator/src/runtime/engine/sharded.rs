//! A generation's shard (`--shards-ring`): made before the controllers, given the way to stop
//! an object's daemons and timers before a handover.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Config, Error};
use crate::core::sharding::Ring;
use crate::runtime::context::ResourceCtx;
use crate::runtime::discovery::Served;
use crate::runtime::leadership::Active;
use crate::runtime::locks::ParentLocks;
use crate::runtime::metrics::Metrics;
use crate::runtime::processing::Handling;
use crate::runtime::sharding::{DAEMONS_GRACE, Shard, StopObject};
use crate::runtime::watching::Watches;

/// This generation's shard; `None` when the core is not sharded. Kopf's indexes are refused:
/// an index holds every object of its resource, and a shard sees only its own.
pub(super) fn shard(
    config: &Config,
    members: Option<&watch::Receiver<Arc<Ring>>>,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
    locks: &Arc<ParentLocks>,
    active: &Active,
    resources: &[Arc<ResourceCtx>],
) -> Result<Option<Arc<Shard>>, Error> {
    let (Some(ring), Some(members)) = (&config.coordination.shards, members) else {
        return Ok(None);
    };
    if let Some(res) = resources.iter().find(|r| !r.indexers.is_empty()) {
        return Err(Error::Sharding(format!(
            "--shards-ring cannot serve index handlers (@kopf.index on {}): an index holds every object of its resource, and a shard sees only its own share",
            res.served.name()
        )));
    }
    Ok(Some(Shard::new(
        ring,
        &config.coordination.identity,
        members.clone(),
        client.clone(),
        Arc::clone(metrics),
        Arc::clone(locks),
        active.clone(),
    )))
}

/// Stops an object's timers and daemons (waiting for the daemons) before it is handed over.
pub(super) fn stopper(handling: &Arc<Handling>) -> StopObject {
    let handling = Arc::clone(handling);
    Arc::new(move |(resource, ns, name)| {
        let handling = Arc::clone(&handling);
        Box::pin(async move {
            handling.timers.stop_handed_over(&resource, &ns, &name);
            handling
                .daemons
                .stop_handed_over(&resource, &ns, &name, DAEMONS_GRACE)
                .await;
        })
    })
}

/// Claims (own assignment) of a resource whose objects this shard handles, in each scope.
pub(super) fn claims(
    shard: Option<&Arc<Shard>>,
    served: &Served,
    scopes: Vec<Option<String>>,
) -> Vec<JoinHandle<()>> {
    let Some(shard) = shard else {
        return Vec::new();
    };
    scopes
        .into_iter()
        .filter_map(|scope| shard.start_claims(served, scope))
        .collect()
}

/// Task parents: claims, and a watch of this shard's parents that only tells the shard which
/// are its own (the task controller reads each parent when it is due).
pub(super) fn follow_parents(
    shard: Option<&Arc<Shard>>,
    watches: &Watches,
    served: &Served,
    scopes: Vec<Option<String>>,
) -> Vec<JoinHandle<()>> {
    if shard.is_none() {
        return Vec::new();
    }
    let mut handles = claims(shard, served, scopes.clone());
    for scope in scopes {
        let mut subscription = watches.subscribe(served, scope.as_deref(), true);
        handles.push(tokio::spawn(async move {
            while let Some(event) = subscription.next().await {
                if matches!(*event, kube::runtime::watcher::Event::InitDone) {
                    subscription.listed();
                }
            }
        }));
    }
    handles
}
