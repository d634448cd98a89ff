//! `operon run`'s options for running more than one replica: leader election over a Lease, and
//! Kopf's peering.

use clap::Args;

use crate::core::leadership::LeaseTiming;
use crate::runtime::leadership::{Config, LeaseConfig, PeeringConfig, PeeringScope};

/// Leader election and Kopf's peering.
#[derive(Debug, Args)]
pub(super) struct CoordinationArgs {
    /// Neither leader election nor peering (the default; Kopf's `--standalone`).
    #[arg(long, conflicts_with_all = ["leader_election", "peering"])]
    standalone: bool,
    /// Run as one of several replicas: only the holder of a coordination.k8s.io Lease handles
    /// objects; the others keep their watches warm and take over when it goes.
    #[arg(long)]
    leader_election: bool,
    /// The Lease's name.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "operon",
        requires = "leader_election"
    )]
    lease_name: String,
    /// The Lease's namespace (default: $POD_NAMESPACE, else the only -n namespace, else
    /// `default`).
    #[arg(long, value_name = "NS", requires = "leader_election")]
    lease_namespace: Option<String>,
    /// Seconds a standby waits on an unchanged Lease before it takes over.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 15,
        requires = "leader_election"
    )]
    lease_duration: u64,
    /// Seconds a leader handles without a successful renewal before it exits.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        requires = "leader_election"
    )]
    renew_deadline: u64,
    /// Seconds between looks at the Lease (and renewals).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 2,
        requires = "leader_election"
    )]
    retry_period: u64,
    /// This replica's name in the Lease and among Kopf's peers (default: $POD_NAME, else the
    /// host name with a random suffix).
    #[arg(long, value_name = "ID", env = "OPERON_IDENTITY")]
    identity: Option<String>,
    /// Take part in Kopf's peering through the KopfPeering (with -n: one per namespace) or
    /// ClusterKopfPeering (with -A) object of this name: pause while a peer of a higher or the
    /// same priority is alive.
    #[arg(long, value_name = "NAME")]
    peering: Option<String>,
    /// This operator's priority among Kopf's peers.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "peering")]
    priority: i64,
    /// Seconds our peering record stays valid without a keep-alive.
    #[arg(long, value_name = "SECS", default_value_t = 60, requires = "peering")]
    peering_lifetime: i64,
    /// Without the peering CRD, stay paused (Kopf's `settings.peering.mandatory`); without this
    /// flag the core runs standalone until the CRD exists.
    #[arg(long, requires = "peering")]
    peering_mandatory: bool,
    /// Do not log the keep-alives (Kopf's `settings.peering.stealth`).
    #[arg(long, requires = "peering")]
    peering_stealth: bool,
}

impl CoordinationArgs {
    /// The coordination for a core serving `namespaces` (empty: all; `patterns`: names are
    /// patterns or regular expressions).
    pub(super) fn config(self, namespaces: &[String], patterns: bool) -> anyhow::Result<Config> {
        let identity = self
            .identity
            .filter(|i| !i.is_empty())
            .unwrap_or_else(crate::runtime::leadership::default_identity);
        let lease = if self.leader_election {
            let timing = LeaseTiming {
                duration: std::time::Duration::from_secs(self.lease_duration),
                renew_deadline: std::time::Duration::from_secs(self.renew_deadline),
                retry_period: std::time::Duration::from_secs(self.retry_period),
            };
            timing.check().map_err(anyhow::Error::msg)?;
            let namespace = self
                .lease_namespace
                .or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|n| !n.is_empty())
                })
                .or_else(|| match namespaces {
                    [one] if !patterns => Some(one.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "default".to_owned());
            Some(LeaseConfig {
                name: self.lease_name,
                namespace,
                timing,
            })
        } else {
            None
        };
        let peering = match self.peering {
            Some(name) => {
                if patterns {
                    anyhow::bail!(
                        "--peering needs namespaces by name (-n NS) or -A: namespace patterns and --namespace-regex name no KopfPeering objects"
                    );
                }
                if self.peering_lifetime <= 0 {
                    anyhow::bail!(
                        "--peering-lifetime must be at least 1 second, got {}",
                        self.peering_lifetime
                    );
                }
                Some(PeeringConfig {
                    name,
                    priority: self.priority,
                    lifetime: self.peering_lifetime,
                    mandatory: self.peering_mandatory,
                    stealth: self.peering_stealth,
                    scope: if namespaces.is_empty() {
                        PeeringScope::Cluster
                    } else {
                        PeeringScope::Namespaces(namespaces.to_vec())
                    },
                })
            }
            None => None,
        };
        Ok(Config {
            identity,
            lease,
            peering,
        })
    }
}
