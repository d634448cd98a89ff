//! The ring's members: every retry period the shard Leases of the ring are listed, and a member
//! is live while its Lease is held by itself and keeps changing
//! ([`crate::core::sharding::ShardLease::live`]) — by this shard's own clock, as the leader
//! election measures a Lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::core::sharding::{RING_LABEL, Ring, ShardLease, live_members};
use crate::runtime::leadership::RingConfig;
use crate::runtime::metrics::Metrics;

/// What identifies one version of a Lease's record (a change restarts its expiry clock).
type Seen = (Option<String>, Option<String>, Option<String>);

/// Follows the ring's members until `stop`; the receiver sees every change of the ring.
pub(crate) fn start(
    client: &kube::Client,
    config: &RingConfig,
    metrics: &Arc<Metrics>,
) -> (watch::Receiver<Arc<Ring>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(Ring::default()));
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let task = tokio::spawn(run(api, config.clone(), tx, Arc::clone(metrics)));
    (rx, task)
}

async fn run(
    api: Api<Lease>,
    config: RingConfig,
    tx: watch::Sender<Arc<Ring>>,
    metrics: Arc<Metrics>,
) {
    let selector = format!("{RING_LABEL}={}", config.ring);
    let mut observed: HashMap<String, (Seen, Instant)> = HashMap::new();
    let mut failures = 0u32;
    loop {
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                failures = 0;
                let leases: Vec<ShardLease> = list
                    .items
                    .iter()
                    .map(|lease| look(lease, &mut observed, config.timing.duration))
                    .collect();
                observed.retain(|name, _| leases.iter().any(|l| l.name == *name));
                let members = live_members(&leases);
                let changed = tx.borrow().members() != members.as_slice();
                if changed {
                    tracing::info!(ring = %config.ring, members = ?members, "The ring's live members changed.");
                    metrics.shard_members(members.len());
                    tx.send_replace(Arc::new(Ring::new(members)));
                }
            }
            Err(err) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(ring = %config.ring, error = %crate::runtime::kit::describe(&err), failures, "Could not list the ring's shard Leases; keeping the members as last seen.");
                }
                // Members not seen renewing for a whole lease duration are not live: without a
                // reading, the view stays as it was (nobody is added or dropped blindly).
            }
        }
        tokio::time::sleep(config.timing.retry_period).await;
    }
}

/// One Lease as this shard sees it now.
fn look(
    lease: &Lease,
    observed: &mut HashMap<String, (Seen, Instant)>,
    fallback: Duration,
) -> ShardLease {
    let name = lease.metadata.name.clone().unwrap_or_default();
    let spec = lease.spec.clone().unwrap_or_default();
    let key: Seen = (
        spec.holder_identity.clone(),
        spec.renew_time.map(|t| t.0.to_string()),
        lease.metadata.resource_version.clone(),
    );
    let unchanged_for = match observed.get(&name) {
        Some((before, at)) if *before == key => at.elapsed(),
        _ => {
            observed.insert(name.clone(), (key, Instant::now()));
            Duration::ZERO
        }
    };
    ShardLease {
        name,
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        unchanged_for,
        duration: spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(fallback, Duration::from_secs),
    }
}
