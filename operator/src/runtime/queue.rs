//! One slot per object: only the latest state is handled, one worker per object at a time, a
//! bound on workers overall; wake-ups for delayed handlers and for the consistency wait.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::core::model::HandlerKind;
use crate::runtime::context::ResourceCtx;
use crate::runtime::kit::{Locked, LockedRw};
use crate::runtime::patching::Written;
use crate::runtime::processing::{self, Handling, Input};

/// An object's identity: resource index, namespace, name.
pub type Key = (usize, String, String);

/// What the watch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Part of a (re)listing.
    Listed,
    /// Added or modified.
    Applied,
    /// Deleted from the cluster.
    Deleted,
}

/// An object as the watch delivered it, kept as compact JSON until a cycle needs it: a parsed
/// `serde_json::Value` costs 5–10 times its JSON, and a backlog holds every object at once.
#[derive(Debug, Clone)]
pub struct Observed {
    json: Arc<str>,
    rv: Option<String>,
}

impl Observed {
    /// The object's JSON and its `metadata.resourceVersion`.
    pub fn new(json: String, rv: Option<String>) -> Observed {
        Observed {
            json: json.into(),
            rv,
        }
    }

    /// From a parsed body (tests, and callers that have one already).
    pub fn of(body: &Value) -> Observed {
        Observed::new(body.to_string(), rv_of(body).map(str::to_owned))
    }
}

#[derive(Debug, Default)]
struct Slot {
    body: Option<Observed>,
    events: Vec<&'static str>,
    gone: bool,
    dirty: bool,
    running: bool,
    initial: bool,
    fully_handled: bool,
    expect_rv: Option<(String, Instant)>,
    wake_at: Option<Instant>,
    /// When the first watch event not yet handled reached the queue (event-to-cycle latency).
    arrived: Option<Instant>,
}

/// The per-object queue and its workers.
#[derive(Debug)]
pub struct Queue {
    slots: Mutex<HashMap<Key, Slot>>,
    workers: Arc<Semaphore>,
    handling: Arc<Handling>,
    resources: std::sync::RwLock<Vec<Arc<ResourceCtx>>>,
    consistency_timeout: Duration,
    stopping: AtomicBool,
    running: AtomicUsize,
    idle: Notify,
}

/// Whether the resource's handlers need an object's last body between watch events: raw-event
/// handlers (a DELETED found by a relist), timers and daemons (stopped with the object).
fn needs_bodies(res: &ResourceCtx) -> bool {
    res.handlers.iter().any(|b| {
        matches!(
            b.handler.kind,
            HandlerKind::Event | HandlerKind::Timer | HandlerKind::Daemon
        )
    })
}

fn rv_of(body: &Value) -> Option<&str> {
    body.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// The consistency mark of an object our write released: never a resourceVersion, so only the
/// object's DELETED (or the consistency timeout) lets the next cycle run.
const RELEASED: &str = "(released)";

/// Whether a body at `seen` already reflects our write at `expected`. resourceVersions are
/// opaque, but the API server's are etcd revisions: when both are numbers, a later one also
/// contains our write; otherwise only equality counts.
fn reflects(seen: &str, expected: &str) -> bool {
    match (seen.parse::<u64>(), expected.parse::<u64>()) {
        (Ok(seen), Ok(expected)) => seen >= expected,
        _ => seen == expected,
    }
}

impl Queue {
    /// A queue over `resources` with at most `workers` cycles at a time.
    pub fn new(
        handling: Arc<Handling>,
        resources: Vec<Arc<ResourceCtx>>,
        workers: usize,
        consistency_timeout: Duration,
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
        })
    }

    /// The resource at `index` (the first part of a [`Key`]).
    fn resource(&self, index: usize) -> Arc<ResourceCtx> {
        Arc::clone(&self.resources.read_locked()[index])
    }

    /// Serves one more resource (found by a re-discovery); returns its index for [`Key`]s.
    pub fn add_resource(&self, resource: Arc<ResourceCtx>) -> usize {
        let mut resources = self.resources.write_locked();
        resources.push(resource);
        resources.len() - 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.locked()
    }

    /// Takes a watch observation: the latest state wins; a worker runs if none does.
    pub fn observe(self: &Arc<Self>, key: Key, body: Observed, seen: Seen) {
        let mut slots = self.lock();
        let is_new = !slots.contains_key(&key);
        if is_new {
            self.handling.ctx.metrics.objects(1);
        }
        let slot = slots.entry(key.clone()).or_default();
        if is_new {
            slot.initial = seen == Seen::Listed;
        }
        if let (Some((expected, _)), Some(rv)) = (&slot.expect_rv, body.rv.as_deref())
            && reflects(rv, expected)
        {
            slot.expect_rv = None;
        }
        slot.events.push(match seen {
            Seen::Listed => "",
            Seen::Applied if is_new => "ADDED",
            Seen::Applied => "MODIFIED",
            Seen::Deleted => "DELETED",
        });
        slot.gone = seen == Seen::Deleted;
        slot.body = Some(body);
        slot.dirty = true;
        slot.arrived.get_or_insert_with(Instant::now);
        self.ensure_worker(&key, slot);
    }

    /// After a (re)listing: objects of that watch that were not listed are gone.
    pub fn sweep(
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
                slot.gone = true;
                slot.dirty = true;
                slot.events.push("DELETED");
                slot.arrived.get_or_insert_with(Instant::now);
                self.ensure_worker(&key, slot);
            }
        }
    }

    fn ensure_worker(self: &Arc<Self>, key: &Key, slot: &mut Slot) {
        if slot.running || self.stopping.load(Ordering::Relaxed) {
            return;
        }
        slot.running = true;
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
        if slot.wake_at.is_some_and(|w| w <= at) {
            return; // an earlier wake-up will re-plan
        }
        slot.wake_at = Some(at);
        let queue = Arc::clone(self);
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut slots = queue.lock();
            if let Some(slot) = slots.get_mut(&key)
                && slot.wake_at == Some(at)
            {
                slot.wake_at = None;
                slot.dirty = true;
                queue.ensure_worker(&key, slot);
            }
        });
    }

    async fn work(self: &Arc<Self>, key: Key) {
        loop {
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
            let input = {
                let mut slots = self.lock();
                let Some(slot) = slots.get_mut(&key) else {
                    return;
                };
                if self.stopping.load(Ordering::Relaxed) || !slot.dirty {
                    slot.running = false;
                    return;
                }
                if let Some((_, deadline)) = slot.expect_rv
                    && !slot.gone
                {
                    if Instant::now() < deadline {
                        // Our own write has not come back through the watch yet.
                        slot.running = false;
                        self.wake_later(&key, slot, deadline);
                        return;
                    }
                    slot.expect_rv = None;
                }
                slot.dirty = false;
                let Some(body) = slot.body.clone() else {
                    if slot.gone {
                        // Gone while its body was dropped (not listed again after a relist): no
                        // handler needs the body, only the slot and the view go.
                        slots.remove(&key);
                        self.handling.ctx.metrics.objects(-1);
                        let resource = self.resource(key.0).served.name();
                        self.handling
                            .ctx
                            .readmodel
                            .remove(&resource, &key.1, &key.2);
                        return;
                    }
                    slot.running = false;
                    return;
                };
                (
                    body.json,
                    slot.gone,
                    std::mem::take(&mut slot.events),
                    slot.initial && !slot.fully_handled,
                    slot.arrived.take(),
                )
            };
            let (json, gone, events, initial, arrived) = input;
            if let Some(arrived) = arrived {
                let metrics = &self.handling.ctx.metrics;
                metrics.event_to_cycle(&served.name(), arrived.elapsed());
            }
            let body = match serde_json::from_str::<Value>(&json) {
                Ok(body) => Arc::new(body),
                Err(err) => {
                    // It was JSON when the watch gave it; this cannot happen, but must not stop
                    // the object's worker for good.
                    tracing::error!(object = %format!("{}/{}", key.1, key.2), error = %err, "Cannot parse a stored object.");
                    continue;
                }
            };
            let input = Input {
                body,
                gone,
                events,
                initial,
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
                if slots.get(&key).is_some_and(|s| s.gone && !s.dirty) {
                    slots.remove(&key);
                    self.handling.ctx.metrics.objects(-1);
                    return;
                }
                continue;
            }
            let Some(slot) = slots.get_mut(&key) else {
                return;
            };
            slot.fully_handled |= out.fully_handled;
            match out.written {
                Written::Nothing => {}
                Written::Version(rv) => {
                    let seen_already = slot
                        .body
                        .as_ref()
                        .and_then(|b| b.rv.as_deref())
                        .is_some_and(|seen| reflects(seen, &rv));
                    if !seen_already {
                        slot.expect_rv = Some((rv, Instant::now() + self.consistency_timeout));
                    }
                }
                // Released by our write: only its DELETED (which sets `gone`) ends the wait;
                // no version reflects a mark that is not a version.
                Written::Released if !slot.gone => {
                    slot.expect_rv = Some((
                        RELEASED.to_owned(),
                        Instant::now() + self.consistency_timeout,
                    ));
                }
                Written::Released => {}
            }
            if let Some(delay) = out.delay {
                let at = Instant::now() + delay;
                self.wake_later(&key, slot, at);
            }
            if !slot.dirty
                && slot.wake_at.is_none()
                && slot.expect_rv.is_none()
                && !needs_bodies(&self.resource(key.0))
            {
                // Nothing will run a cycle on this body: the next one comes with the next watch
                // event. Holding every object's body would cost ~10 KiB per object.
                slot.body = None;
            }
        }
    }

    /// Stops taking work and waits (up to `grace`) for the cycles in flight to finish.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
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
    use super::{Observed, reflects};

    #[test]
    fn observed_objects_keep_their_json_and_resource_version() {
        let body = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "42"}, "spec": {"x": 1.5}});
        let observed = Observed::of(&body);
        assert_eq!(observed.rv.as_deref(), Some("42"));
        let back: serde_json::Value = serde_json::from_str(&observed.json).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn later_resource_versions_reflect_our_write() {
        assert!(reflects("10", "10"));
        assert!(reflects("11", "10"));
        assert!(!reflects("9", "10"));
        assert!(reflects("abc", "abc"));
        assert!(!reflects("abd", "abc"));
    }
}
