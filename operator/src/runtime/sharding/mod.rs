//! Sharding (`operon run --shards-ring RING`): every replica handles a share of the objects.
//!
//! The protocol is timebertt/kubernetes-controller-sharding's, so its sharder could drive these
//! shards too (the decisions: [`crate::core::sharding`]):
//! - each shard holds a Lease named after itself, labelled with the ring (the leader election's
//!   Lease code keeps it: a shard that cannot renew it exits), and reads the others' Leases to
//!   know the live members ([`members`]);
//! - an object belongs to the shard its label names; a shard watches only its own objects (a
//!   label selector: that is what divides the memory), and every controller checks the label
//!   again before it starts work ([`Shard::handles`], [`Shard::verdict`]);
//! - **own assignment** (the default, no sharder): each shard claims the unassigned objects and
//!   those of dead shards that the ring places with it ([`assign`]), and hands over the objects
//!   the ring now places elsewhere when a member joins;
//! - **handing an object over** (to the ring's new choice, or back to the sharder when it sets
//!   the drain label): no new work starts on it here; the object's lock is taken, so its running
//!   cycle, sync or task ends first; its daemons and timers are stopped; then its labels are
//!   patched — with the `resourceVersion` read, so nothing written meanwhile is overwritten. Until
//!   then the new owner cannot see it: no two shards work on one object at once.
//! - a dead shard's objects are claimed when its Lease has not changed for its duration; the dead
//!   shard itself stopped writing at its renew deadline, which is shorter.

mod assign;
pub(crate) mod members;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::core::sharding::{
    self, Controller, Handovers, Ownership, Placement, Ring, drain_label, shard_label,
};
use crate::runtime::discovery::Served;
use crate::runtime::kit::{self, Locked};
use crate::runtime::leadership::Active;
pub(crate) use crate::runtime::leadership::{Assignment, RingConfig};
use crate::runtime::locks::{self, LockKey, ParentLocks};
use crate::runtime::metrics::Metrics;

/// Stops an object's daemons and timers (and waits for the daemons); set by the engine.
pub(crate) type StopObject = Arc<dyn Fn(LockKey) -> BoxFuture<'static, ()> + Send + Sync>;

/// What a controller does with an object now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It is ours: work on it.
    Handle,
    /// Not ours (or being handed over): no work, keep what is known.
    Skip,
    /// It left this shard (the watch's DELETED after a handover): forget it without handling a
    /// deletion.
    Left,
}

/// How a handover's patch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relabelled {
    /// The labels now name the new owner (or none, for the sharder).
    Moved,
    /// Another shard's already (a label written by someone else).
    NotOurs,
    /// Deleted meanwhile.
    Gone,
}

/// How many handovers run at once.
const PARALLEL_HANDOVERS: usize = 16;
/// How long a handover waits for the object's daemons to exit before it cancels them.
pub(crate) const DAEMONS_GRACE: Duration = Duration::from_secs(60);
/// How long a handed-over object is remembered after it left (events in flight are older).
const FORGET_LEFT_AFTER: Duration = Duration::from_secs(600);

/// One shard of the ring, for one engine generation.
pub(crate) struct Shard {
    ring: String,
    me: String,
    assignment: Assignment,
    shard_label: String,
    drain_label: String,
    members: watch::Receiver<Arc<Ring>>,
    client: kube::Client,
    metrics: Arc<Metrics>,
    locks: Arc<ParentLocks>,
    active: Active,
    stop_object: OnceLock<StopObject>,
    state: Mutex<State>,
    handovers: Semaphore,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("ring", &self.ring)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// What a shard knows about its objects.
#[derive(Default)]
struct State {
    handovers: Handovers<LockKey, Instant>,
    /// The objects labelled for us, as our watches see them.
    owned: HashMap<LockKey, Owned>,
    /// Listings in progress, by resource and scope: when each began and what it showed.
    listings: HashMap<(String, Option<String>), (Instant, HashSet<LockKey>)>,
    /// The resources and scopes whose objects are claimed (own assignment).
    claiming: HashSet<(String, Option<String>)>,
}

/// An object of ours.
#[derive(Debug, Clone)]
struct Owned {
    served: Served,
    /// Its ring key (`None`: it cannot be placed; it stays).
    ring_key: Option<String>,
}

impl Shard {
    /// Shard `me` of `config.ring` for one engine generation.
    pub(crate) fn new(
        config: &RingConfig,
        me: &str,
        members: watch::Receiver<Arc<Ring>>,
        client: kube::Client,
        metrics: Arc<Metrics>,
        locks: Arc<ParentLocks>,
        active: Active,
    ) -> Arc<Shard> {
        Arc::new(Shard {
            ring: config.ring.clone(),
            me: me.to_owned(),
            assignment: config.assignment,
            shard_label: shard_label(&config.ring),
            drain_label: drain_label(&config.ring),
            members,
            client,
            metrics,
            locks,
            active,
            stop_object: OnceLock::new(),
            state: Mutex::default(),
            handovers: Semaphore::new(PARALLEL_HANDOVERS),
        })
    }

    /// Sets how an object's daemons and timers are stopped before it is handed over.
    pub(crate) fn set_stop_object(&self, stop: StopObject) {
        let _ = self.stop_object.set(stop);
    }

    /// The label selector of this shard's watches.
    pub(crate) fn selector(&self) -> String {
        format!("{}={}", self.shard_label, self.me)
    }

    fn ownership_of(&self, obj: &DynamicObject) -> Ownership {
        let labels = obj.metadata.labels.as_ref();
        sharding::ownership_by(
            |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str),
            &self.ring,
            &self.me,
        )
    }

    /// Whether work on the object with `body` may start here: it is labelled for this shard,
    /// no drain is asked for, and it is not being (or was not) handed over.
    pub(crate) fn handles(&self, key: &LockKey, body: &Value) -> bool {
        sharding::ownership(body, &self.ring, &self.me) == Ownership::Mine
            && !self.state.locked().handovers.is_handed_over(key)
    }

    /// What change handling does with an object's latest body; `gone`: the watch said DELETED.
    pub(crate) fn verdict(&self, key: &LockKey, body: &Value, gone: bool) -> Verdict {
        let handed_over = self.state.locked().handovers.is_handed_over(key);
        match (gone, handed_over) {
            (true, true) => Verdict::Left,
            (true, false) => Verdict::Handle,
            (false, true) => Verdict::Skip,
            (false, false)
                if sharding::ownership(body, &self.ring, &self.me) == Ownership::Mine =>
            {
                Verdict::Handle
            }
            (false, false) => Verdict::Skip,
        }
    }

    /// Takes in an event of one of this shard's (label-selected) watches, before any controller
    /// sees it: which objects are ours, which handed-over ones are back, which the sharder asks
    /// for.
    pub(crate) fn observe(
        self: &Arc<Self>,
        served: &Served,
        scope: Option<&str>,
        event: &watcher::Event<DynamicObject>,
    ) {
        let scope_key = (served_key(served), scope.map(str::to_owned));
        let mut drains = Vec::new();
        {
            let mut state = self.state.locked();
            match event {
                watcher::Event::Init => {
                    state
                        .listings
                        .insert(scope_key, (Instant::now(), HashSet::new()));
                }
                watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                    let key = lock_key(served, obj);
                    let ownership = self.ownership_of(obj);
                    let mine = ownership != Ownership::NotMine;
                    if let watcher::Event::InitApply(_) = event {
                        let started = state.listings.get_mut(&scope_key).map(|(started, seen)| {
                            seen.insert(key.clone());
                            *started
                        });
                        if let Some(started) = started {
                            state.handovers.listed(&key, mine, started);
                        }
                    } else {
                        state.handovers.applied(&key, mine);
                    }
                    if mine {
                        let owned = Owned {
                            served: served.clone(),
                            ring_key: ring_key(served, obj),
                        };
                        state.owned.insert(key.clone(), owned);
                    } else {
                        state.owned.remove(&key);
                    }
                    if ownership == Ownership::DrainRequested {
                        drains.push((key, served.clone(), None));
                    }
                }
                watcher::Event::InitDone => {
                    if let Some((started, seen)) = state.listings.remove(&scope_key) {
                        let resource = &scope_key.0;
                        let covers =
                            |k: &LockKey| k.0 == *resource && scope.is_none_or(|ns| k.1 == ns);
                        state
                            .handovers
                            .listing_done(started, covers, |k| seen.contains(k));
                        state.owned.retain(|k, _| !covers(k) || seen.contains(k));
                        state.handovers.expire(
                            Instant::now()
                                .checked_sub(FORGET_LEFT_AFTER)
                                .unwrap_or(started),
                        );
                    }
                }
                watcher::Event::Delete(obj) => {
                    let key = lock_key(served, obj);
                    state.handovers.left(&key);
                    state.owned.remove(&key);
                }
            }
            self.metrics.shard_objects(state.owned.len());
        }
        for (key, served, to) in drains {
            self.hand_over(key, served, to);
        }
    }

    /// Starts handing `key` over to `to` (`None`: back to the sharder) unless it already is.
    fn hand_over(self: &Arc<Self>, key: LockKey, served: Served, to: Option<String>) {
        if !self.state.locked().handovers.begin(&key) {
            return;
        }
        let shard = Arc::clone(self);
        tokio::spawn(async move { shard.drain(key, served, to).await });
    }

    /// Hands one object over: no new work (already, by [`Handovers::begin`]); its lock, so that
    /// its running cycle, sync or task ends; its daemons and timers stopped; its labels patched.
    async fn drain(self: Arc<Self>, key: LockKey, served: Served, to: Option<String>) {
        let Ok(_permit) = self.handovers.acquire().await else {
            return;
        };
        let lock = self.locks.lock(key.clone()).await;
        if let Some(stop) = self.stop_object.get() {
            stop(key.clone()).await;
        }
        let result = self.relabel(&served, &key, to.as_deref()).await;
        let mut state = self.state.locked();
        match result {
            Ok(Relabelled::Gone) => {
                // Deleted meanwhile: nothing to hand over, nothing to remember.
                state.handovers.abandon(&key);
                state.owned.remove(&key);
            }
            Ok(moved) => {
                state.handovers.patched(&key, Instant::now());
                state.owned.remove(&key);
                if moved == Relabelled::Moved {
                    self.metrics.shard_move("handed_over");
                    tracing::debug!(object = %object(&key), to = %to.as_deref().unwrap_or("the sharder"), "Handed the object over.");
                }
            }
            Err(err) => {
                state.handovers.abandon(&key);
                tracing::warn!(object = %object(&key), error = %err, "Could not hand the object over; it stays here and is tried again later.");
            }
        }
        self.metrics.shard_objects(state.owned.len());
        drop(lock);
    }

    /// Patches the object's labels: to `to`, or (`None`) both removed for the sharder.
    async fn relabel(
        &self,
        served: &Served,
        key: &LockKey,
        to: Option<&str>,
    ) -> Result<Relabelled, String> {
        let api = kit::api_for(&self.client, served, Some(key.1.as_str()));
        for _ in 0..5 {
            let current = api.get_opt(&key.2).await.map_err(|e| kit::describe(&e))?;
            let Some(current) = current else {
                return Ok(Relabelled::Gone);
            };
            if self.ownership_of(&current) == Ownership::NotMine {
                return Ok(Relabelled::NotOurs);
            }
            let patch = json!({"metadata": {
                "resourceVersion": current.metadata.resource_version,
                "labels": {&self.shard_label: to, &self.drain_label: null},
            }});
            self.active.fence().await;
            match api
                .patch(&key.2, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(Relabelled::Moved),
                // Written meanwhile: read it again.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Relabelled::Gone),
                Err(err) => return Err(kit::describe(&err)),
            }
        }
        Err("it kept changing (409 Conflict five times)".into())
    }

    /// Hands over every object of ours that the ring now places with another member.
    fn rebalance(self: &Arc<Self>, ring: &Ring) {
        let moves: Vec<(LockKey, Served, String)> = {
            let state = self.state.locked();
            state
                .owned
                .iter()
                .filter(|(key, _)| !state.handovers.is_handed_over(key))
                .filter_map(|(key, owned)| {
                    let placed = sharding::placement(ring, owned.ring_key.as_deref()?, &self.me);
                    match placed {
                        Placement::Move(to) => Some((key.clone(), owned.served.clone(), to)),
                        Placement::Stay => None,
                    }
                })
                .collect()
        };
        if !moves.is_empty() {
            tracing::info!(objects = moves.len(), members = ?ring.members(), "Handing over the objects the ring places elsewhere now.");
        }
        for (key, served, to) in moves {
            self.hand_over(key, served, Some(to));
        }
    }

    /// Starts rebalancing (own assignment; with the sharder, nothing: it assigns).
    pub(crate) fn start_rebalancing(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        (self.assignment == Assignment::Own)
            .then(|| tokio::spawn(assign::rebalance(Arc::clone(self))))
    }

    /// Starts claiming the objects of `served` in `scope` (own assignment; with the sharder,
    /// nothing: it assigns).
    pub(crate) fn start_claims(
        self: &Arc<Self>,
        served: &Served,
        scope: Option<String>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let new = self
            .state
            .locked()
            .claiming
            .insert((served_key(served), scope.clone()));
        (self.assignment == Assignment::Own && new)
            .then(|| tokio::spawn(assign::claim(Arc::clone(self), served.clone(), scope)))
    }

    /// Whether task work on `parent` (an object of `served`) may run here: it is ours — or,
    /// not known as anyone's here, the ring places it here (a parent that does not exist is
    /// placed by its name, so that exactly one shard fails its tasks).
    pub(crate) fn may_work_on(&self, parent: &LockKey, served: &Served) -> bool {
        let state = self.state.locked();
        if state.handovers.is_handed_over(parent) {
            return false;
        }
        if state.owned.contains_key(parent) {
            return true;
        }
        let key = sharding::ring_key_of(
            &served.resource.group,
            &served.resource.kind,
            &parent.1,
            &parent.2,
            None,
        );
        key.is_ok_and(|key| self.members.borrow().owner(&key) == Some(self.me.as_str()))
    }
}

/// `plural.group` of a resource, as in [`LockKey`]s.
fn served_key(served: &Served) -> String {
    locks::key(served, "", "").0
}

fn lock_key(served: &Served, obj: &DynamicObject) -> LockKey {
    locks::key(
        served,
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The object's ring key; `None` (logged) when it cannot be placed.
fn ring_key(served: &Served, obj: &DynamicObject) -> Option<String> {
    match ring_key_of(served, &obj.metadata) {
        Ok(key) => Some(key),
        Err(why) => {
            tracing::warn!(resource = %served.name(), object = ?obj.metadata.name, reason = %why, "Cannot place the object on the ring; it stays with its shard.");
            None
        }
    }
}

/// The ring key of an object of `served` with `metadata` (its controller's when it has one).
fn ring_key_of(served: &Served, metadata: &ObjectMeta) -> Result<String, String> {
    let controller = metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| Controller {
            api_version: &r.api_version,
            kind: &r.kind,
            name: &r.name,
        });
    sharding::ring_key_of(
        &served.resource.group,
        &served.resource.kind,
        metadata.namespace.as_deref().unwrap_or_default(),
        metadata.name.as_deref().unwrap_or_default(),
        controller,
    )
}

fn object(key: &LockKey) -> String {
    if key.1.is_empty() {
        format!("{} {}", key.0, key.2)
    } else {
        format!("{} {}/{}", key.0, key.1, key.2)
    }
}

/// The `metadata` patch that assigns an object to `shard` (its `resourceVersion` as read, so
/// that of two claims only one succeeds).
fn claim_patch(label: &str, shard: &str, resource_version: Option<&str>) -> Value {
    json!({"metadata": {"resourceVersion": resource_version, "labels": {label: shard}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_carries_the_resource_version_it_read() {
        assert_eq!(
            claim_patch("shard.alpha.sharding.timebertt.dev/r", "core-1", Some("42")),
            json!({"metadata": {"resourceVersion": "42", "labels": {"shard.alpha.sharding.timebertt.dev/r": "core-1"}}})
        );
    }
}
