//! Leader election over a coordination.k8s.io/v1 Lease, as client-go's leader election does it
//! (the decisions: [`crate::core::leadership::decide_lease`]).
//!
//! Every retry period a candidate reads the Lease. The holder writes a new `renewTime`; another
//! candidate notes when it saw the record change and takes it over (an update carrying the
//! `resourceVersion` it read, so of two candidates only one wins) once the record has stayed
//! the same for the lease duration by its own clock. A holder that has not renewed for the
//! renew deadline exits the process: no cycle of it can write after a new leader starts.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{LeaseConfig, State};
use crate::core::leadership::{LeaseDecision, LeaseRecord, decide_lease};

/// The exit status of a leader that lost its Lease (the Pod restarts it as a standby).
pub(crate) const LOST_EXIT_CODE: i32 = 3;

/// What identifies one version of the record (a change restarts the expiry clock).
type Seen = (Option<String>, Option<jiff::Timestamp>, i32, Option<String>);

fn seen(lease: &Lease) -> Seen {
    let spec = lease.spec.clone().unwrap_or_default();
    (
        spec.holder_identity,
        spec.renew_time.map(|t| t.0),
        spec.lease_transitions.unwrap_or(0),
        lease.metadata.resource_version.clone(),
    )
}

fn record(lease: &Lease, fallback: Duration) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        duration: spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(fallback, Duration::from_secs),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// Runs the election until `stopping`; then gives the Lease back if we hold it.
pub(super) async fn run(
    client: kube::Client,
    config: LeaseConfig,
    me: String,
    state: Arc<watch::Sender<State>>,
    mut stopping: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let timing = config.timing;
    let name = config.name.as_str();
    let mut observed: Option<(Seen, Instant)> = None;
    // While we lead: when the last renewal succeeded.
    let mut renewed: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        // A leader's renewals race its deadline: a request that hangs must not keep it leading.
        let deadline = renewed.map(|at| at + timing.renew_deadline);
        let step = step(&api, &config, &me, &mut observed, renewed.is_some());
        let outcome = match deadline {
            Some(deadline) => tokio::select! {
                outcome = step => outcome,
                () = tokio::time::sleep_until(deadline) => Step::Failed("the renewal did not finish".into()),
            },
            None => step.await,
        };
        match outcome {
            Step::Leading(holder_since) => {
                failures = 0;
                if renewed.is_none() {
                    if config.labels.is_empty() {
                        tracing::info!(identity = %me, lease = %format!("{}/{name}", config.namespace), "This replica is now the leader: handling starts.");
                    } else {
                        tracing::info!(identity = %me, lease = %format!("{}/{name}", config.namespace), "This replica holds its {}: handling starts.", config.what);
                    }
                    state.send_modify(|s| {
                        s.leader = Some(true);
                        s.holder = Some(me.clone());
                    });
                }
                renewed = Some(holder_since);
                state.send_modify(|s| s.valid_until = Some(holder_since + timing.renew_deadline));
            }
            Step::Standby(holder) => {
                failures = 0;
                if renewed.is_some() {
                    lost(
                        &me,
                        config.what,
                        &format!("the Lease is held by {holder:?} now"),
                    );
                }
                if holder.is_some() {
                    state.send_if_modified(|s| {
                        let changed = s.holder != holder;
                        s.holder.clone_from(&holder);
                        changed
                    });
                }
            }
            Step::Failed(why) => {
                failures += 1;
                // One line per streak of failures, then every 30th: an API server outage must
                // not flood the log.
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(lease = %format!("{}/{name}", config.namespace), error = %why, failures, "Could not read or write the {}.", config.what);
                }
            }
        }
        if let Some(at) = renewed
            && at.elapsed() >= timing.renew_deadline
        {
            lost(
                &me,
                config.what,
                &format!(
                    "no renewal succeeded for {:?} (--renew-deadline)",
                    timing.renew_deadline
                ),
            );
        }
        tokio::select! {
            () = tokio::time::sleep(timing.retry_period) => {}
            () = super::stopped(&mut stopping) => {
                if renewed.is_some() {
                    release(&api, name, &me, config.what).await;
                }
                return;
            }
        }
    }
}

/// A leader that lost its Lease stops at once, with every cycle it runs: the process exits
/// (the Pod restarts as a standby), as controller-runtime's managers do.
fn lost(me: &str, what: &str, why: &str) -> ! {
    tracing::error!(identity = %me, reason = %why, "Lost the {what}; exiting now so that no two replicas handle the same objects at once (a restart comes back as a standby or a new shard).");
    std::process::exit(LOST_EXIT_CODE)
}

/// One look at the Lease.
enum Step {
    /// We hold it; renewed at that moment.
    Leading(Instant),
    /// Someone else holds it (the holder), or it is not ours to take yet.
    Standby(Option<String>),
    /// The API server did not let us read or write it.
    Failed(String),
}

async fn step(
    api: &Api<Lease>,
    config: &LeaseConfig,
    me: &str,
    observed: &mut Option<(Seen, Instant)>,
    leading: bool,
) -> Step {
    let (name, timing) = (config.name.as_str(), &config.timing);
    let started = Instant::now();
    let current = match api.get_opt(name).await {
        Ok(current) => current,
        Err(err) => return Step::Failed(crate::runtime::kit::describe(&err)),
    };
    let unchanged_for = match &current {
        Some(lease) => {
            let key = seen(lease);
            match observed {
                Some((before, at)) if *before == key => at.elapsed(),
                _ => {
                    *observed = Some((key, Instant::now()));
                    Duration::ZERO
                }
            }
        }
        None => Duration::ZERO,
    };
    let rec = current.as_ref().map(|l| record(l, timing.duration));
    let decision = decide_lease(me, rec.as_ref(), unchanged_for);
    let now = MicroTime(jiff::Timestamp::now());
    let seconds = i32::try_from(timing.duration.as_secs()).unwrap_or(i32::MAX);
    let written = match (decision, current) {
        (LeaseDecision::Wait { .. }, _) => {
            return Step::Standby(rec.and_then(|r| r.holder));
        }
        (LeaseDecision::Renew, Some(mut lease)) => {
            with_labels(&mut lease, config);
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(seconds);
            api.replace(name, &PostParams::default(), &lease).await
        }
        (LeaseDecision::Acquire { transitions }, Some(mut lease)) => {
            if leading {
                // We led and someone released or took it meanwhile: never take it back
                // silently.
                return Step::Standby(rec.and_then(|r| r.holder));
            }
            with_labels(&mut lease, config);
            lease.spec = Some(spec(me, seconds, transitions, now));
            api.replace(name, &PostParams::default(), &lease).await
        }
        (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    labels: (!config.labels.is_empty()).then(|| config.labels.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(me, seconds, 0, now)),
            };
            api.create(&PostParams::default(), &lease).await
        }
    };
    match written {
        Ok(lease) => {
            *observed = Some((seen(&lease), Instant::now()));
            Step::Leading(started)
        }
        // Another candidate wrote first (409 Conflict, or AlreadyExists on create).
        Err(kube::Error::Api(status)) if status.code == 409 => Step::Standby(None),
        Err(err) => Step::Failed(crate::runtime::kit::describe(&err)),
    }
}

/// Adds the configured labels to the Lease (keeping any others, e.g. the sharder's).
fn with_labels(lease: &mut Lease, config: &LeaseConfig) {
    if !config.labels.is_empty() {
        let labels = lease.metadata.labels.get_or_insert_with(Default::default);
        labels.extend(config.labels.clone());
    }
}

fn spec(me: &str, seconds: i32, transitions: i32, now: MicroTime) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(seconds),
        lease_transitions: Some(transitions),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        ..LeaseSpec::default()
    }
}

/// Gives the Lease back (client-go's `ReleaseOnCancel`): no holder and a 1-second duration, so
/// a standby takes over at its next look.
async fn release(api: &Api<Lease>, name: &str, me: &str, what: &str) {
    let result = async {
        let Some(mut lease) = api.get_opt(name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(me) {
            return Ok(false);
        }
        let now = MicroTime(jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        api.replace(name, &PostParams::default(), &lease).await?;
        Ok::<_, kube::Error>(true)
    }
    .await;
    match result {
        Ok(true) => tracing::info!(identity = %me, "Released the {what}."),
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(error = %crate::runtime::kit::describe(&err), "Could not release the {what}; the others take over when it expires.");
        }
    }
}
