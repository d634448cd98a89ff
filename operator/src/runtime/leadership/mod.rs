//! Several replicas of the core: who handles objects.
//!
//! - **Leader election** (`--leader-election`, [`lease`]): one replica holds a
//!   coordination.k8s.io Lease and handles; the others are hot standbys — their watches list and
//!   follow the objects, but no cycle, sync or task starts until they hold the Lease. A leader
//!   that cannot renew within its renew deadline exits (as controller-runtime's managers do):
//!   the others may take over only a full lease duration after they last saw it renewed, so the
//!   old leader is gone before a new one starts. On a clean stop the leader finishes its cycles,
//!   then releases the Lease, and a standby takes over at its next look.
//! - **Kopf's peering** (`--peering`, [`peering`]): Kopf's `KopfPeering`/`ClusterKopfPeering`
//!   keep-alives and priorities, so that Kopf operators and Operon cores on the same resources
//!   pause each other as Kopf does.
//!
//! Both feed one [`State`]; [`Active`] is what the controllers wait on.

mod lease;
mod peering;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::leadership::LeaseTiming;
use crate::runtime::metrics::Metrics;

pub(crate) use peering::Scope as PeeringScope;

/// How this replica coordinates with others (`operon run`'s options).
#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    /// This replica's name among the others (the Lease holder, the peer's key).
    pub identity: String,
    /// Leader election; `None`: none.
    pub lease: Option<LeaseConfig>,
    /// Kopf's peering; `None`: none.
    pub peering: Option<PeeringConfig>,
    /// Sharding: this replica is a shard of that ring; `None`: not sharded.
    pub shards: Option<RingConfig>,
}

/// Who assigns objects to the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assignment {
    /// The shards themselves, by the ring.
    Own,
    /// timebertt's sharder: the shards only honour its labels and drain requests.
    Sharder,
}

/// A shard's ring (`operon run --shards-ring`).
#[derive(Debug, Clone)]
pub(crate) struct RingConfig {
    /// The ring's name.
    pub ring: String,
    /// Who assigns objects.
    pub assignment: Assignment,
    /// Where the shard Leases are.
    pub namespace: String,
    /// The shard Lease's timing.
    pub timing: LeaseTiming,
}

/// Leader election's Lease.
#[derive(Debug, Clone)]
pub(crate) struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Lease duration, renew deadline, retry period.
    pub timing: LeaseTiming,
    /// Labels the Lease carries (a shard Lease: its ring).
    pub labels: std::collections::BTreeMap<String, String>,
    /// What the Lease is for, in the log.
    pub what: &'static str,
}

/// Kopf's peering.
#[derive(Debug, Clone)]
pub(crate) struct PeeringConfig {
    /// The peering object's name (Kopf's `settings.peering.name`).
    pub name: String,
    /// Our priority.
    pub priority: i64,
    /// Seconds our record stays valid without a keep-alive.
    pub lifetime: i64,
    /// Without the peering CRD: pause (`true`) or run standalone (`false`, Kopf's default).
    pub mandatory: bool,
    /// Keep-alives are not logged.
    pub stealth: bool,
    /// Cluster-wide (`ClusterKopfPeering`) or one `KopfPeering` per served namespace.
    pub scope: PeeringScope,
}

/// Who may handle, as far as this replica knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// `None`: no leader election; `Some(true)`: we hold the Lease.
    leader: Option<bool>,
    /// The Lease's holder as last seen.
    holder: Option<String>,
    /// `Some(why)`: paused by Kopf's peering (or waiting for its first reading).
    paused: Option<String>,
    /// While we lead: until when our last renewal lets us write (renewal + renew deadline).
    valid_until: Option<tokio::time::Instant>,
    /// Sharding: our ring (our Lease is the shard Lease, not a leader's).
    ring: Option<String>,
}

impl State {
    /// Handling may run.
    pub(crate) fn active(&self) -> bool {
        self.leader != Some(false) && self.paused.is_none()
    }

    /// What the dashboard says about this replica; `None` when it runs standalone.
    fn role(&self, coordinated: bool) -> Option<String> {
        if !coordinated {
            return None;
        }
        let mut role = match (self.leader, &self.holder) {
            (Some(true), _) if let Some(ring) = &self.ring => format!("shard of ring {ring}"),
            (Some(false), _) if let Some(ring) = &self.ring => {
                format!("shard of ring {ring}, waiting for its Lease")
            }
            (Some(true), _) => "leader".to_owned(),
            (Some(false), Some(holder)) if !holder.is_empty() => {
                format!("standby (the leader is {holder})")
            }
            (Some(false), _) => "standby (no leader yet)".to_owned(),
            (None, _) => "active".to_owned(),
        };
        if let Some(why) = &self.paused {
            role = format!("paused ({why}); {role}");
        }
        Some(role)
    }
}

/// What controllers wait on before they handle anything.
#[derive(Debug, Clone)]
pub(crate) struct Active(watch::Receiver<State>);

impl Active {
    /// Always active (tests).
    #[cfg(test)]
    pub(crate) fn always() -> Active {
        Active(watch::channel(State::default()).1)
    }

    /// Returns once handling may run (at once when it may).
    pub(crate) async fn wait(&self) {
        let mut rx = self.0.clone();
        let ran = rx.wait_for(State::active).await.is_ok();
        if !ran {
            // The coordination stopped (the core is stopping): never start handling now.
            std::future::pending::<()>().await;
        }
    }

    /// Returns when handling, having run, must stop (peering paused us).
    pub(crate) async fn lost(&self) {
        let mut rx = self.0.clone();
        let stopped = async {
            rx.wait_for(State::active).await.ok().map(drop)?;
            rx.wait_for(|s| !s.active()).await.ok().map(drop)
        };
        let stopped = stopped.await.is_some();
        if !stopped {
            std::future::pending::<()>().await;
        }
    }

    /// Holds a write back, for good, once our Lease may have passed to another replica: no
    /// renewal succeeded within the renew deadline (the process was frozen, or the API server
    /// unreachable) and the election is about to exit the process. Kubernetes has no fencing
    /// tokens; this keeps a leader that wakes from a pause from writing before it notices.
    pub(crate) async fn fence(&self) {
        let until = self.0.borrow().valid_until;
        if let Some(until) = until
            && tokio::time::Instant::now() >= until
        {
            tracing::warn!(
                "A write is held back: this replica has not renewed its Lease within the renew deadline (another may lead now); the process exits."
            );
            std::future::pending::<()>().await;
        }
    }

    /// Why handling does not run now; `None` when it does.
    pub(crate) fn why_not(&self) -> Option<String> {
        let state = self.0.borrow();
        (!state.active()).then(|| state.role(true).unwrap_or_default())
    }
}

/// The running coordination: keeps the Lease and the peering record until [`Self::release`].
pub(crate) struct Leadership {
    state: watch::Receiver<State>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long [`Leadership::release`] waits for the Lease and the peering record to be given back.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

impl Leadership {
    /// Starts the coordination that `config` asks for (none: always active).
    pub(crate) fn start(
        client: &kube::Client,
        config: Config,
        metrics: &Arc<Metrics>,
        show_role: impl Fn(Option<String>) + Send + 'static,
    ) -> Leadership {
        let mut config = config;
        if let Some(shards) = &config.shards {
            // A shard's Lease is named after it and held by it: the leader election's code keeps
            // it (renewals, the renew deadline, release on stop).
            config.lease = Some(LeaseConfig {
                name: config.identity.clone(),
                namespace: shards.namespace.clone(),
                timing: shards.timing,
                labels: [(
                    crate::core::sharding::RING_LABEL.to_owned(),
                    shards.ring.clone(),
                )]
                .into(),
                what: "shard Lease",
            });
        }
        let coordinated = config.lease.is_some() || config.peering.is_some();
        let initial = State {
            leader: config.lease.as_ref().map(|_| false),
            holder: None,
            valid_until: None,
            ring: config.shards.as_ref().map(|s| s.ring.clone()),
            paused: config
                .peering
                .as_ref()
                .map(|_| "reading the peering object".to_owned()),
        };
        let (tx, rx) = watch::channel(initial);
        let tx = Arc::new(tx);
        let (stop, stopping) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(report(
            rx.clone(),
            coordinated,
            Arc::clone(metrics),
            show_role,
        )));
        if let Some(lease) = config.lease {
            if let Some(shards) = &config.shards {
                tracing::info!(identity = %config.identity, ring = %shards.ring, lease = %format!("{}/{}", lease.namespace, lease.name), "Sharding: this replica handles its share of the objects once it holds its shard Lease.");
            } else {
                tracing::info!(identity = %config.identity, lease = %format!("{}/{}", lease.namespace, lease.name), "Leader election: handling starts once this replica holds the Lease.");
            }
            tasks.push(tokio::spawn(lease::run(
                client.clone(),
                lease,
                config.identity.clone(),
                Arc::clone(&tx),
                stopping.clone(),
            )));
        }
        if let Some(peering) = config.peering {
            tasks.push(tokio::spawn(peering::run(
                client.clone(),
                peering,
                config.identity.clone(),
                Arc::clone(&tx),
                stopping,
            )));
        }
        Leadership {
            state: rx,
            stop,
            tasks,
        }
    }

    /// What the controllers wait on.
    pub(crate) fn active(&self) -> Active {
        Active(self.state.clone())
    }

    /// Gives the Lease back and removes our peering record (after the last cycle ended).
    pub(crate) async fn release(self) {
        let _ = self.stop.send(true);
        let tasks = self.tasks;
        // The reporter ends when the state's sender goes: abort it, wait for the others.
        if let Some(reporter) = tasks.first() {
            reporter.abort();
        }
        let others = futures_util::future::join_all(tasks.into_iter().skip(1));
        if tokio::time::timeout(RELEASE_TIMEOUT, others).await.is_err() {
            tracing::warn!(
                "Could not release the Lease or the peering record in time; the others take over when it expires."
            );
        }
    }
}

/// Shows the role on `/metrics` (`operon_active`) and on the dashboard, and logs its changes.
async fn report(
    mut rx: watch::Receiver<State>,
    coordinated: bool,
    metrics: Arc<Metrics>,
    show_role: impl Fn(Option<String>),
) {
    loop {
        let state = rx.borrow_and_update().clone();
        metrics.active(state.active());
        show_role(state.role(coordinated));
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Returns once `stopping` turns true (or its sender is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await.is_ok();
}

/// This replica's default identity: `$POD_NAME`, else the host name, with a random suffix so
/// that two processes on one host differ.
pub(crate) fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "operon".to_owned());
    format!("{host}_{}", random_hex(4))
}

/// `bytes` random bytes in hex.
fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    let _ = ring::rand::SystemRandom::new().fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random whole number in `lo..=hi` (jitter).
fn random_between(lo: u64, hi: u64) -> u64 {
    use ring::rand::SecureRandom;
    let mut buf = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut buf);
    lo + u64::from_le_bytes(buf) % (hi - lo + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standbys_and_paused_replicas_do_not_handle() {
        let standby = State {
            leader: Some(false),
            holder: Some("a".into()),
            paused: None,
            valid_until: None,
            ring: None,
        };
        assert!(!standby.active());
        assert_eq!(
            standby.role(true).as_deref(),
            Some("standby (the leader is a)")
        );
        let leader = State {
            leader: Some(true),
            ..standby.clone()
        };
        assert!(leader.active());
        let paused = State {
            paused: Some("higher priority: x".into()),
            ..leader
        };
        assert!(!paused.active());
        assert_eq!(
            paused.role(true).as_deref(),
            Some("paused (higher priority: x); leader")
        );
        assert!(State::default().active());
        assert_eq!(State::default().role(false), None);
    }

    #[tokio::test]
    async fn writes_are_held_back_once_the_renew_deadline_passed() {
        let now = tokio::time::Instant::now();
        let (tx, rx) = watch::channel(State {
            leader: Some(true),
            valid_until: Some(now + Duration::from_secs(60)),
            ..State::default()
        });
        let active = Active(rx);
        tokio::time::timeout(Duration::from_secs(1), active.fence())
            .await
            .expect("a leader within its deadline writes");
        Active::always().fence().await;
        tx.send_modify(|s| s.valid_until = Some(now));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), active.fence())
                .await
                .is_err(),
            "a write after the renew deadline must wait (the process exits)"
        );
    }

    #[tokio::test]
    async fn lost_fires_only_after_handling_ran() {
        let (tx, rx) = watch::channel(State {
            leader: Some(false),
            ..State::default()
        });
        let active = Active(rx);
        let lost = tokio::spawn({
            let active = active.clone();
            async move { active.lost().await }
        });
        tokio::task::yield_now().await;
        assert!(!lost.is_finished(), "a standby has lost nothing");
        tx.send_modify(|s| s.leader = Some(true));
        active.wait().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_modify(|s| s.paused = Some("x".into()));
        tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("lost after running")
            .unwrap();
    }
}
