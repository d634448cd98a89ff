//! One slot per object: only the latest state is handled, one worker per object at a time, a
//! bound on workers overall; wake-ups for delayed handlers and for the consistency wait.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::core::queueing::{self, Next, Versioned};
use crate::runtime::context::ResourceCtx;
use crate::runtime::kit::{Locked, LockedRw};
use crate::runtime::processing::{self, Handling, Input};
use crate::runtime::sharding::Verdict;

pub(crate) use crate::core::queueing::Seen;

/// An object's identity: resource index, namespace, name.
pub(crate) type Key = (usize, String, String);

/// An object as the watch delivered it, kept as compact JSON until a cycle needs it: a parsed
/// `serde_json::Value` costs 5–10 times its JSON, and a backlog holds every object at once.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    json: Arc<str>,
    rv: Option<String>,
}

impl Observed {
    /// The object's JSON and its `metadata.resourceVersion`.
    pub(crate) fn new(json: String, rv: Option<String>) -> Observed {
        Observed {
            json: json.into(),
            rv,
        }
    }

    /// From a parsed body (tests).
    #[cfg(test)]
    pub(crate) fn of(body: &Value) -> Observed {
        Observed::new(body.to_string(), rv_of(body).map(str::to_owned))
    }
}

impl Versioned for Observed {
    fn resource_version(&self) -> Option<&str> {
        self.rv.as_deref()
    }
}

/// An object's slot (see [`queueing::Slot`]).
type Slot = queueing::Slot<Observed, Instant>;

/// The per-object queue and its workers.
#[derive(Debug)]
pub(crate) struct Queue {
    slots: Mutex<HashMap<Key, Slot>>,
    workers: Arc<Semaphore>,
    handling: Arc<Handling>,
    resources: std::sync::RwLock<Vec<Arc<ResourceCtx>>>,
    consistency_timeout: Duration,
    stopping: AtomicBool,
    running: AtomicUsize,
    idle: Notify,
    /// A listing's objects count as the operator's start (Kopf's resume handlers run for
    /// them); not after a pause (peering), as in Kopf.
    listing_is_start: bool,
    /// The watches whose first listing goes on.
    listings: FirstListings,
}

/// The watches (resource index, namespace or all) whose first listing is going on: their
/// objects' cycles wait for its end. Cycles started during a listing compete with its pages for
/// the API server; at 100,000 objects the list then outlasted etcd's compaction, its continue
/// token expired and it started over, again and again (`tests/bench/README.md`).
#[derive(Debug, Default)]
struct FirstListings {
    scopes: Mutex<Vec<(usize, Option<String>)>>,
    ended: Notify,
}

impl FirstListings {
    fn begin(&self, resource: usize, namespace: Option<&str>) {
        let mut scopes = self.scopes.locked();
        let scope = (resource, namespace.map(str::to_owned));
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }

    fn end(&self, resource: usize, namespace: Option<&str>) {
        self.scopes
            .locked()
            .retain(|(r, ns)| !(*r == resource && ns.as_deref() == namespace));
        self.ended.notify_waiters();
    }

    /// Waits while a first listing covers the object, unless `stopping` says otherwise.
    async fn wait(&self, key: &Key, stopping: impl Fn() -> bool) {
        loop {
            let ended = self.ended.notified();
            let covered = self
                .scopes
                .locked()
                .iter()
                .any(|(r, ns)| *r == key.0 && ns.as_deref().is_none_or(|ns| ns == key.1));
            if !covered || stopping() {
                return;
            }
            ended.await;
        }
    }
}

/// Whether the resource's handlers need an object's last body between watch events.
fn needs_bodies(res: &ResourceCtx) -> bool {
    queueing::needs_bodies(res.handlers.iter().map(|b| b.handler.kind))
}

#[cfg(test)]
fn rv_of(body: &Value) -> Option<&str> {
    body.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

impl Queue {
    /// A queue over `resources` with at most `workers` cycles at a time.
    pub(crate) fn new(
        handling: Arc<Handling>,
        resources: Vec<Arc<ResourceCtx>>,
        workers: usize,
        consistency_timeout: Duration,
        listing_is_start: bool,
    ) -> Arc<Self> {
        Arc::new(Queue {
            slots: Mutex::default(),
            workers: Arc::new(Semaphore::new(workers.max(1))),
            handling,
            resources: std::sync::RwLock::new(resources),
            consistency_timeout,
            stopping: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            listing_is_start,
            listings: FirstListings::default(),
        })
    }

    /// The first listing of a watch begins: cycles of its objects wait for its end.
    pub(crate) fn listing_begins(&self, resource: usize, namespace: Option<&str>) {
        self.listings.begin(resource, namespace);
    }

    /// The first listing of a watch is complete: its objects' cycles go.
    pub(crate) fn listing_ends(&self, resource: usize, namespace: Option<&str>) {
        self.listings.end(resource, namespace);
    }

    /// The resource at `index` (the first part of a [`Key`]).
    fn resource(&self, index: usize) -> Arc<ResourceCtx> {
        Arc::clone(&self.resources.read_locked()[index])
    }

    /// Serves one more resource (found by a re-discovery); returns its index for [`Key`]s.
    pub(crate) fn add_resource(&self, resource: Arc<ResourceCtx>) -> usize {
        let mut resources = self.resources.write_locked();
        resources.push(resource);
        resources.len() - 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.locked()
    }

    /// Takes a watch observation: the latest state wins; a worker runs if none does.
    pub(crate) fn observe(self: &Arc<Self>, key: Key, body: Observed, seen: Seen) {
        let mut slots = self.lock();
        let is_new = !slots.contains_key(&key);
        if is_new {
            self.handling.ctx.metrics.objects(1);
        }
        let first = match seen {
            Seen::Listed if !self.listing_is_start => Seen::Applied,
            seen => seen,
        };
        let slot = slots.entry(key.clone()).or_insert_with(|| Slot::new(first));
        if slot.observe(body, seen, is_new, Instant::now()) {
            self.ensure_worker(&key, slot);
        }
    }

    /// After a (re)listing: objects of that watch that were not listed are gone.
    pub(crate) fn sweep(
        self: &Arc<Self>,
        resource: usize,
        namespace: Option<&str>,
        listed: &HashSet<Key>,
    ) {
        let mut slots = self.lock();
        let missing: Vec<Key> = slots
            .keys()
            .filter(|k| {
                k.0 == resource && namespace.is_none_or(|ns| k.1 == ns) && !listed.contains(*k)
            })
            .cloned()
            .collect();
        for key in missing {
            if let Some(slot) = slots.get_mut(&key) {
                slot.vanish(Instant::now());
                self.ensure_worker(&key, slot);
            }
        }
    }

    fn ensure_worker(self: &Arc<Self>, key: &Key, slot: &mut Slot) {
        if !slot.claim_worker(self.stopping.load(Ordering::Relaxed)) {
            return;
        }
        self.running.fetch_add(1, Ordering::SeqCst);
        let queue = Arc::clone(self);
        let key = key.clone();
        tokio::spawn(async move {
            queue.work(key).await;
            if queue.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                queue.idle.notify_waiters();
            }
        });
    }

    fn wake_later(self: &Arc<Self>, key: &Key, slot: &mut Slot, at: Instant) {
        if !slot.plan_wake(at) {
            return; // an earlier wake-up will re-plan
        }
        let queue = Arc::clone(self);
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut slots = queue.lock();
            if let Some(slot) = slots.get_mut(&key)
                && slot.woken(at)
            {
                queue.ensure_worker(&key, slot);
            }
        });
    }

    async fn work(self: &Arc<Self>, key: Key) {
        loop {
            // A standby (leader election) or a paused replica (peering) starts no cycle.
            self.handling.ctx.active.wait().await;
            self.listings
                .wait(&key, || self.stopping.load(Ordering::SeqCst))
                .await;
            // One cycle at a time per object among its change handling, its sync and its tasks:
            // the object's lock is taken before a worker permit, so a cycle that waits for a
            // running task does not hold a permit meanwhile.
            let resource = self.resource(key.0);
            let served = &resource.served;
            let _object_lock = self
                .handling
                .ctx
                .locks
                .lock(crate::runtime::locks::key(served, &key.1, &key.2))
                .await;
            // One cycle per permit: a busy object goes to the back of the (FIFO) line after
            // each cycle, so it never starves the others.
            self.handling.ctx.metrics.queue(1);
            let permit = Arc::clone(&self.workers).acquire_owned().await;
            self.handling.ctx.metrics.queue(-1);
            let Ok(_permit) = permit else { return };
            let cycle = {
                let mut slots = self.lock();
                let Some(slot) = slots.get_mut(&key) else {
                    return;
                };
                match slot.next(self.stopping.load(Ordering::Relaxed), Instant::now()) {
                    Next::Idle => return,
                    Next::Wait(deadline) => {
                        // Our own write has not come back through the watch yet.
                        self.wake_later(&key, slot, deadline);
                        return;
                    }
                    Next::Forget => {
                        slots.remove(&key);
                        self.handling.ctx.metrics.objects(-1);
                        let resource = self.resource(key.0).served.name();
                        self.handling
                            .ctx
                            .readmodel
                            .remove(&resource, &key.1, &key.2);
                        return;
                    }
                    Next::Run(cycle) => cycle,
                }
            };
            if let Some(arrived) = cycle.arrived {
                let metrics = &self.handling.ctx.metrics;
                metrics.event_to_cycle(&served.name(), arrived.elapsed());
            }
            let body = match serde_json::from_str::<Value>(&cycle.body.json) {
                Ok(body) => Arc::new(body),
                Err(err) => {
                    // It was JSON when the watch gave it; this cannot happen, but must not stop
                    // the object's worker for good.
                    tracing::error!(object = %format!("{}/{}", key.1, key.2), error = %err, "Cannot parse a stored object.");
                    continue;
                }
            };
            if let Some(shard) = &self.handling.ctx.shard {
                let object = crate::runtime::locks::key(served, &key.1, &key.2);
                match shard.verdict(&object, &body, cycle.gone) {
                    Verdict::Handle => {}
                    // Not ours (any more): no work; the watch will say it left.
                    Verdict::Skip => continue,
                    Verdict::Left => {
                        // Handed over: forgotten here, not handled as a deletion.
                        self.lock().remove(&key);
                        self.handling.ctx.metrics.objects(-1);
                        let name = served.name();
                        self.handling.ctx.readmodel.remove(&name, &key.1, &key.2);
                        return;
                    }
                }
            }
            let input = Input {
                body,
                gone: cycle.gone,
                events: cycle.events,
                initial: cycle.initial,
            };
            let gone = input.gone;
            let env = Arc::clone(&self.handling);
            let resource = self.resource(key.0);
            // A cycle that panics must not take the object's slot (or the core) with it.
            let out = match tokio::spawn(async move {
                processing::process(&env, &resource, input).await
            })
            .await
            {
                Ok(out) => out,
                Err(err) => {
                    tracing::error!(object = %format!("{}/{}", key.1, key.2), error = %err, "The handling cycle crashed; retrying in 10 seconds.");
                    processing::Output {
                        delay: Some(Duration::from_secs(10)),
                        ..Default::default()
                    }
                }
            };
            let mut slots = self.lock();
            if gone {
                if slots.get(&key).is_some_and(Slot::is_done_with) {
                    slots.remove(&key);
                    self.handling.ctx.metrics.objects(-1);
                    return;
                }
                continue;
            }
            let Some(slot) = slots.get_mut(&key) else {
                return;
            };
            let now = Instant::now();
            let needs_bodies = needs_bodies(&self.resource(key.0));
            slot.handled(
                out.fully_handled,
                out.written,
                now,
                self.consistency_timeout,
                out.quiet_echo && !needs_bodies,
            );
            if let Some(delay) = out.delay {
                self.wake_later(&key, slot, now + delay);
            }
            slot.release_body(needs_bodies);
        }
    }

    /// Stops taking work and waits (up to `grace`) for the cycles in flight to finish.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.listings.ended.notify_waiters();
        let deadline = Instant::now() + grace;
        while self.running.load(Ordering::SeqCst) > 0 {
            let idle = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    cycles = self.running.load(Ordering::SeqCst),
                    "Cycles still running after the grace period; stopping anyway."
                );
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{FirstListings, Observed};

    fn key(resource: usize, namespace: &str) -> super::Key {
        (resource, namespace.to_owned(), "obj".to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn cycles_wait_for_the_first_listing_of_their_watch_only() {
        let listings = Arc::new(FirstListings::default());
        listings.begin(0, Some("ns"));
        let waits = |k: super::Key| {
            let listings = Arc::clone(&listings);
            tokio::spawn(async move { listings.wait(&k, || false).await })
        };
        let held = waits(key(0, "ns"));
        let other_namespace = waits(key(0, "other"));
        let other_resource = waits(key(1, "ns"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(other_namespace.is_finished() && other_resource.is_finished());
        assert!(!held.is_finished(), "held while its watch lists");
        listings.end(0, Some("ns"));
        tokio::time::timeout(Duration::from_secs(1), held)
            .await
            .unwrap()
            .unwrap();

        // A watch of all namespaces covers every namespace; stopping lets everything go.
        listings.begin(1, None);
        let held = waits(key(1, "any"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!held.is_finished());
        listings.wait(&key(1, "any"), || true).await;
        listings.end(1, None);
        tokio::time::timeout(Duration::from_secs(1), held)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn observed_objects_keep_their_json_and_resource_version() {
        let body = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "42"}, "spec": {"x": 1.5}});
        let observed = Observed::of(&body);
        assert_eq!(observed.rv.as_deref(), Some("42"));
        let back: serde_json::Value = serde_json::from_str(&observed.json).unwrap();
        assert_eq!(back, body);
    }
}
