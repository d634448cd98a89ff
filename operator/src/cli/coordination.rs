//! `operon run`'s options for running more than one replica: leader election over a Lease, and
//! Kopf's peering.

use clap::Args;

use crate::core::leadership::LeaseTiming;
use crate::runtime::leadership::{
    Assignment, Config, LeaseConfig, PeeringConfig, PeeringScope, RingConfig,
};

/// Leader election, sharding and Kopf's peering.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("replicated")
        .args(["leader_election", "shards_ring"])
        .multiple(false)
))]
pub(super) struct CoordinationArgs {
    /// Neither leader election nor peering (the default; Kopf's `--standalone`).
    #[arg(long, conflicts_with_all = ["leader_election", "shards_ring", "peering"])]
    standalone: bool,
    /// Run as one of several replicas: only the holder of a coordination.k8s.io Lease handles
    /// objects; the others keep their watches warm and take over when it goes.
    #[arg(long)]
    leader_election: bool,
    /// Run as one shard of a ring: every replica handles its share of the objects (a
    /// consistent hash ring over the live shards' Leases; the labels of
    /// timebertt/kubernetes-controller-sharding).
    /// Not with --peering: every shard is active, and would pause the others as a Kopf peer of
    /// the same priority.
    #[arg(long, value_name = "RING", conflicts_with = "peering")]
    shards_ring: Option<String>,
    /// Who assigns objects to shards: `own` (the shards, by the ring) or `sharder` (an external
    /// sharder; the shards honour its labels and drain requests).
    #[arg(
        long,
        value_name = "WHO",
        default_value = "own",
        value_parser = ["own", "sharder"],
        requires = "shards_ring"
    )]
    shards_assignment: String,
    /// The Lease's name.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "operon",
        requires = "leader_election"
    )]
    lease_name: String,
    /// The Lease's namespace, the shard Leases' with --shards-ring (default: $POD_NAMESPACE,
    /// else the only -n namespace, else `default`).
    #[arg(long, value_name = "NS", requires = "replicated")]
    lease_namespace: Option<String>,
    /// Seconds a standby waits on an unchanged Lease before it takes over.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 15,
        requires = "replicated"
    )]
    lease_duration: u64,
    /// Seconds a leader handles without a successful renewal before it exits.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        requires = "replicated"
    )]
    renew_deadline: u64,
    /// Seconds between looks at the Lease (and renewals).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 2,
        requires = "replicated"
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
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| {
                let identity = crate::runtime::leadership::default_identity();
                if self.shards_ring.is_some() {
                    // A shard's identity names its Lease: a DNS name.
                    identity.to_ascii_lowercase().replace('_', "-")
                } else {
                    identity
                }
            });
        let timing = LeaseTiming {
            duration: std::time::Duration::from_secs(self.lease_duration),
            renew_deadline: std::time::Duration::from_secs(self.renew_deadline),
            retry_period: std::time::Duration::from_secs(self.retry_period),
        };
        let lease_namespace = || {
            self.lease_namespace
                .clone()
                .or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|n| !n.is_empty())
                })
                .or_else(|| match namespaces {
                    [one] if !patterns => Some(one.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "default".to_owned())
        };
        if self.leader_election || self.shards_ring.is_some() {
            timing.check().map_err(anyhow::Error::msg)?;
        }
        let lease = self.leader_election.then(|| LeaseConfig {
            name: self.lease_name.clone(),
            namespace: lease_namespace(),
            timing,
            labels: Default::default(),
            what: "leader Lease",
        });
        let shards = match &self.shards_ring {
            Some(ring) => {
                check_label_value("--shards-ring", ring)?;
                check_shard_name(&identity)?;
                Some(RingConfig {
                    ring: ring.clone(),
                    assignment: if self.shards_assignment == "sharder" {
                        Assignment::Sharder
                    } else {
                        Assignment::Own
                    },
                    namespace: lease_namespace(),
                    timing,
                })
            }
            None => None,
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
            shards,
        })
    }
}

/// A shard's identity names its Lease and is a label value: a lowercase DNS label.
fn check_shard_name(identity: &str) -> anyhow::Result<()> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.');
    if !well_formed(identity, allowed) {
        anyhow::bail!(
            "with --shards-ring, the identity names the shard's Lease and labels its objects: it must be 1-63 lowercase letters, digits, '-' or '.', alphanumeric at both ends (got {identity:?}; set --identity or $POD_NAME)"
        );
    }
    Ok(())
}

/// A ring's name is a label value: at most 63 characters, alphanumeric at both ends, `-`, `_` and
/// `.` between.
fn check_label_value(what: &str, value: &str) -> anyhow::Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !well_formed(value, allowed) {
        anyhow::bail!(
            "{what} must be a valid label value (1-63 characters: letters, digits, '-', '_', '.', alphanumeric at both ends), got {value:?}"
        );
    }
    Ok(())
}

/// 1–63 characters, each `allowed`, alphanumeric at both ends.
fn well_formed(value: &str, allowed: impl Fn(char) -> bool) -> bool {
    let alphanumeric = |c: char| c.is_ascii_alphanumeric();
    !value.is_empty()
        && value.len() <= 63
        && value.chars().all(allowed)
        && value.starts_with(alphanumeric)
        && value.ends_with(alphanumeric)
}
