//! Kopf's peering, as Kopf 1.45.2 does it (`kopf/_core/engines/peering.py`; the decisions:
//! [`crate::core::leadership::evaluate_peering`]).
//!
//! The peering object is a `ClusterKopfPeering` (a core serving all namespaces) or a
//! `KopfPeering` in each served namespace, named `--peering`, of `kopf.dev/v1` (else the legacy
//! `zalando.org/v1`). We keep our record in its `status` fresh (every `lifetime` minus 5–10
//! seconds, as Kopf), read it every [`LOOK`] ([`LOOK_ABSENT`] while there is none), remove dead
//! peers, and pause while a live peer has a higher priority — or the same one (then every
//! operator pauses, as in Kopf). On a stop our record is removed. Without the CRD a core runs standalone (Kopf's auto-detection), or stays
//! paused with `--peering-mandatory`; the CRD is looked for again every [`REDISCOVER`].

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{PeeringConfig, State, random_between};
use crate::core::leadership::{
    PeeringPause, PeeringVerdict, cleanup_patch, evaluate_peering, keepalive_patch,
};

/// How often the peering objects are read.
const LOOK: Duration = Duration::from_secs(2);
/// How often they are read while none exists (Kopf's auto-detected `default` peering, where the
/// CRD is installed but nobody made the object).
const LOOK_ABSENT: Duration = Duration::from_secs(10);
/// How often a missing peering CRD is looked for again.
const REDISCOVER: Duration = Duration::from_secs(30);

/// Where the peering objects are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One `ClusterKopfPeering`.
    Cluster,
    /// One `KopfPeering` in each of these namespaces.
    Namespaces(Vec<String>),
}

/// The peering resource found in the cluster.
struct Found {
    resource: ApiResource,
    /// It has a status subresource (Kopf's own CRDs do not): the record goes to `/status`.
    status: bool,
}

async fn discover(client: &kube::Client, scope: &Scope) -> Option<Found> {
    let (plural, kind) = match scope {
        Scope::Cluster => ("clusterkopfpeerings", "ClusterKopfPeering"),
        Scope::Namespaces(_) => ("kopfpeerings", "KopfPeering"),
    };
    for group in ["kopf.dev", "zalando.org"] {
        let api_version = format!("{group}/v1");
        let Ok(list) = client.list_api_group_resources(&api_version).await else {
            continue;
        };
        if list.resources.iter().any(|r| r.name == plural) {
            let status = list
                .resources
                .iter()
                .any(|r| r.name == format!("{plural}/status"));
            return Some(Found {
                resource: ApiResource {
                    group: group.to_owned(),
                    version: "v1".to_owned(),
                    api_version,
                    kind: kind.to_owned(),
                    plural: plural.to_owned(),
                },
                status,
            });
        }
    }
    None
}

/// Runs the peering until `stopping`; then removes our record.
pub(super) async fn run(
    client: kube::Client,
    config: PeeringConfig,
    me: String,
    state: Arc<watch::Sender<State>>,
    mut stopping: watch::Receiver<bool>,
) {
    let set_paused = |why: Option<String>| {
        state.send_if_modified(|s| {
            let changed = s.paused != why;
            s.paused.clone_from(&why);
            changed
        });
    };
    // With leader election only the leader takes part: replicas of one operator share their
    // priority, and Kopf's rule would pause them all.
    let mut watching = state.subscribe();
    let led = tokio::select! {
        led = watching.wait_for(|s| s.leader != Some(false)) => led.is_ok(),
        () = super::stopped(&mut stopping) => false,
    };
    if !led {
        return;
    }
    let mut said = false;
    let found = loop {
        if let Some(found) = discover(&client, &config.scope).await {
            break found;
        }
        let what = match config.scope {
            Scope::Cluster => "clusterkopfpeerings (kopf.dev/v1 or zalando.org/v1)",
            Scope::Namespaces(_) => "kopfpeerings (kopf.dev/v1 or zalando.org/v1)",
        };
        // Said once; looked for again quietly (Kopf's default peering is auto-detected: most
        // clusters have no peering CRD).
        if config.mandatory && !said {
            tracing::error!(peering = %config.name, "The peering CRD {what} is missing and peering is mandatory (--peering-mandatory): handling stays paused until it is installed.");
        } else if !said {
            tracing::info!(peering = %config.name, "The peering CRD {what} is missing: running standalone (without peering) until it is installed.");
        }
        said = true;
        if config.mandatory {
            set_paused(Some(format!("the peering CRD {what} is missing")));
        } else {
            set_paused(None);
        }
        tokio::select! {
            () = tokio::time::sleep(REDISCOVER) => {}
            () = super::stopped(&mut stopping) => return,
        }
    };
    let apis: Vec<(String, Api<DynamicObject>)> = match &config.scope {
        Scope::Cluster => vec![(
            "cluster-wide".to_owned(),
            Api::all_with(client.clone(), &found.resource),
        )],
        Scope::Namespaces(names) => names
            .iter()
            .map(|ns| {
                (
                    format!("in {ns:?}"),
                    Api::namespaced_with(client.clone(), ns, &found.resource),
                )
            })
            .collect(),
    };
    tracing::info!(peering = %config.name, identity = %me, priority = config.priority, resource = %format!("{}.{}", found.resource.plural, found.resource.api_version), "Peering: pausing while a peer of a higher or the same priority is alive.");
    let peering = Peering {
        config: &config,
        me: &me,
        status: found.status,
    };
    let mut next_keepalive = Instant::now();
    let mut paused_for: Option<PeeringPause> = None;
    loop {
        if Instant::now() >= next_keepalive {
            for (where_, api) in &apis {
                peering.touch(api, where_, config.lifetime).await;
            }
            let lifetime = u64::try_from(config.lifetime).unwrap_or(60);
            let every = lifetime
                .saturating_sub(random_between(5, 10))
                .clamp(1, lifetime.max(1));
            next_keepalive = Instant::now() + Duration::from_secs(every);
        }
        let mut verdicts = Vec::new();
        let mut complete = true;
        for (where_, api) in &apis {
            match peering.look(api).await {
                Ok(Some(verdict)) => verdicts.push(verdict),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(peering = %config.name, error = %err, "Cannot read the peering object {where_}; keeping the last decision.");
                    complete = false;
                }
            }
        }
        let pause = verdicts
            .iter()
            .filter_map(|v| v.pause.clone())
            .max_by_key(|p| matches!(p, PeeringPause::Higher(_)));
        // A pause is taken on any reading; a resume only when every object was read.
        if complete || pause.is_some() {
            peering.log_change(paused_for.as_ref(), pause.as_ref());
            set_paused(pause.as_ref().map(describe));
            paused_for = pause;
        }
        let look = if complete && verdicts.is_empty() {
            LOOK_ABSENT
        } else {
            LOOK
        };
        tokio::select! {
            () = tokio::time::sleep(look) => {}
            () = super::stopped(&mut stopping) => {
                for (where_, api) in &apis {
                    peering.touch(api, where_, 0).await;
                }
                return;
            }
        }
    }
}

fn describe(pause: &PeeringPause) -> String {
    let ids = pause.identities().join(", ");
    match pause {
        PeeringPause::Higher(_) => format!("peers of a higher priority: {ids}"),
        PeeringPause::Same(_) => format!("peers of the same priority: {ids}"),
    }
}

struct Peering<'a> {
    config: &'a PeeringConfig,
    me: &'a str,
    status: bool,
}

impl Peering<'_> {
    async fn patch(&self, api: &Api<DynamicObject>, patch: &Value) -> Result<bool, kube::Error> {
        let params = PatchParams::default();
        let patch = Patch::Merge(patch);
        let result = if self.status {
            api.patch_status(&self.config.name, &params, &patch).await
        } else {
            api.patch(&self.config.name, &params, &patch).await
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Writes our record (`lifetime` 0: removes it).
    async fn touch(&self, api: &Api<DynamicObject>, where_: &str, lifetime: i64) {
        let patch = keepalive_patch(
            self.me,
            self.config.priority,
            lifetime,
            jiff::Timestamp::now(),
        );
        match self.patch(api, &patch).await {
            Ok(found) => {
                if !self.config.stealth || !found {
                    let result = if found { "ok" } else { "not found" };
                    tracing::debug!("Keep-alive in {:?} {where_}: {result}.", self.config.name);
                }
            }
            Err(err) => {
                tracing::warn!(peering = %self.config.name, error = %crate::runtime::kit::describe(&err), "Keep-alive {where_} failed.");
            }
        }
    }

    /// Reads the peering object: `None` when there is none (nothing to pause for).
    async fn look(&self, api: &Api<DynamicObject>) -> Result<Option<PeeringVerdict>, String> {
        let object = api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| crate::runtime::kit::describe(&e))?;
        let Some(object) = object else {
            return Ok(None);
        };
        let verdict = evaluate_peering(
            object.data.get("status"),
            self.me,
            self.config.priority,
            jiff::Timestamp::now(),
        );
        if let Some(patch) = cleanup_patch(&verdict.dead)
            && let Err(err) = self.patch(api, &patch).await
        {
            tracing::warn!(peering = %self.config.name, error = %crate::runtime::kit::describe(&err), "Cannot remove dead peers.");
        }
        Ok(Some(verdict))
    }

    /// Kopf's log lines when the decision changes.
    fn log_change(&self, before: Option<&PeeringPause>, now: Option<&PeeringPause>) {
        // A change of the blocking peers, not of their `lastseen`.
        fn key(p: Option<&PeeringPause>) -> Option<(bool, Vec<&str>)> {
            p.map(|p| (matches!(p, PeeringPause::Higher(_)), p.identities()))
        }
        if key(before) == key(now) {
            return;
        }
        match now {
            Some(pause @ PeeringPause::Higher(_)) => {
                tracing::info!("Pausing operations in favour of {}.", pause.repr());
            }
            Some(pause @ PeeringPause::Same(_)) => {
                tracing::warn!(
                    "Possibly conflicting operators with the same priority: {}.",
                    pause.repr()
                );
                tracing::warn!("Pausing all operators, including self ({}).", self.me);
            }
            None => {
                tracing::info!(
                    "Resuming operations after the pause. Conflicting operators with the same priority are gone."
                );
            }
        }
    }
}
