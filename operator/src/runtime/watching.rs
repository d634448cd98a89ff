//! One watch per resource and namespace scope, shared by every controller that needs it.
//!
//! Change handling, the sync controllers and the task controller each *subscribe* to the
//! resources they need; a resource named by several of them is listed and watched once, and
//! every subscriber receives every event of that watch, in the watch's order. The watch restarts
//! itself after a silence longer than the configured limit and on stream errors (with a backoff
//! that starts over after every event; an expired resource version, 410, lists again at once);
//! a restart begins with a fresh listing, which subscribers see as `Init` …
//! `InitDone` like the first one.
//!
//! `/readyz`: every subscription made before [`Watches::start`] is counted, and reports itself
//! listed ([`Subscription::listed`]) once its controller has taken in the first complete listing
//! — so readiness means "every controller has seen every object", not only "the API answered".

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use crate::core::namespaces::Namespaces;
use crate::runtime::discovery::Served;
use crate::runtime::kit::{self, Locked};
use crate::runtime::sharding::Shard;

/// Counts the watches that have finished their initial listing against those expected.
#[derive(Debug)]
pub(crate) struct Readiness {
    total: AtomicUsize,
    listed: AtomicUsize,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            total: AtomicUsize::new(usize::MAX),
            listed: AtomicUsize::new(0),
        }
    }
}

impl Readiness {
    /// Not ready until [`Readiness::expect`] says how many watches to wait for.
    pub(crate) fn reset(&self) {
        self.listed.store(0, Ordering::Relaxed);
        self.total.store(usize::MAX, Ordering::Relaxed);
    }
    /// Ready once `total` watches have listed.
    pub(crate) fn expect(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
    }
    /// One more watch has its initial listing.
    pub(crate) fn listed(&self) {
        self.listed.fetch_add(1, Ordering::Relaxed);
    }
    /// Every expected watch has listed.
    pub(crate) fn ready(&self) -> bool {
        self.listed.load(Ordering::Relaxed) >= self.total.load(Ordering::Relaxed)
    }
}

/// One event of a shared watch, as every subscriber receives it.
pub(crate) type Event = Arc<watcher::Event<DynamicObject>>;

/// What identifies one watch: group, version, plural, the namespace (`None`: all) and whether it
/// selects only this shard's objects (sharding).
type WatchKey = (String, String, String, Option<String>, bool);

fn key(served: &Served, namespace: Option<&str>, sharded: bool) -> WatchKey {
    let r = &served.resource;
    (
        r.group.clone(),
        r.version.clone(),
        r.plural.clone(),
        namespace
            .filter(|ns| served.namespaced && !ns.is_empty())
            .map(str::to_owned),
        sharded,
    )
}

/// The subscribers of one watch.
type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<Event>>>>;

struct Entry {
    served: Served,
    subscribers: Subscribers,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The shared watches of one engine generation.
pub(crate) struct Watches {
    client: kube::Client,
    /// Restart a watch that has been silent this long.
    silence: Duration,
    /// Objects in namespaces not served are dropped (a cluster-wide watch under patterns).
    namespaces: Arc<Namespaces>,
    readiness: Arc<Readiness>,
    entries: Mutex<BTreeMap<WatchKey, Entry>>,
    /// Subscriptions counted for `/readyz` (those made before the start).
    counted: Mutex<Option<usize>>,
    /// Sharding: this shard, whose objects the sharded watches select.
    shard: Option<Arc<Shard>>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("watches", &self.entries.locked().len())
            .finish_non_exhaustive()
    }
}

/// A controller's end of a shared watch.
#[derive(Debug)]
pub(crate) struct Subscription {
    events: mpsc::UnboundedReceiver<Event>,
    /// Reported once, after the first complete listing (only for subscriptions of the start).
    readiness: Option<Arc<Readiness>>,
}

impl Subscription {
    /// The next event; `None` when the watch was stopped.
    pub(crate) async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The controller has taken in its first complete listing (counted for `/readyz` once).
    pub(crate) fn listed(&mut self) {
        if let Some(readiness) = self.readiness.take() {
            readiness.listed();
        }
    }
}

/// Keeps a store of a subscription's objects (kube's reflector [`Writer`]) and tells `touched`
/// about every event after the store has taken it in, until the watch ends. Reports the
/// subscription listed once the store has its first complete listing.
pub(crate) async fn reflect(
    mut subscription: Subscription,
    mut writer: Writer<DynamicObject>,
    mut touched: impl FnMut(&watcher::Event<DynamicObject>),
) {
    while let Some(event) = subscription.next().await {
        writer.apply_watcher_event(&event);
        if matches!(*event, watcher::Event::InitDone) {
            subscription.listed();
        }
        touched(&event);
    }
}

/// The objects an event is about (kube's `touched_objects`): the applied, listed or deleted
/// one; none for the listing's start and end.
pub(crate) fn touched(event: &watcher::Event<DynamicObject>) -> Option<&DynamicObject> {
    match event {
        watcher::Event::Apply(obj)
        | watcher::Event::InitApply(obj)
        | watcher::Event::Delete(obj) => Some(obj),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

impl Watches {
    /// No watches yet; `/readyz` is not ready until [`Watches::start`].
    pub(crate) fn new(
        client: kube::Client,
        silence: Duration,
        namespaces: Arc<Namespaces>,
        readiness: Arc<Readiness>,
        shard: Option<Arc<Shard>>,
    ) -> Arc<Self> {
        Arc::new(Watches {
            client,
            silence,
            namespaces,
            readiness,
            entries: Mutex::default(),
            counted: Mutex::new(Some(0)),
            shard,
        })
    }

    /// Subscribes to `served` in `namespace` (`None`, or a cluster-wide resource: all); with
    /// sharding, `sharded` subscriptions see only this shard's objects (the objects that are
    /// handled: change handling, sync parents), the others every object (sync children, tasks).
    /// Before [`Watches::start`], the watch is only prepared; after it, a new watch starts at
    /// once, and a watch already running is restarted so that the newcomer, too, sees a full
    /// listing.
    pub(crate) fn subscribe(
        &self,
        served: &Served,
        namespace: Option<&str>,
        sharded: bool,
    ) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let readiness = {
            let mut counted = self.counted.locked();
            counted.as_mut().map(|n| {
                *n += 1;
                Arc::clone(&self.readiness)
            })
        };
        let started = readiness.is_none();
        let mut entries = self.entries.locked();
        let key = key(served, namespace, sharded && self.shard.is_some());
        let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
            served: served.clone(),
            subscribers: Subscribers::default(),
            task: None,
        });
        entry.subscribers.locked().push(tx);
        if started {
            if let Some(task) = entry.task.take() {
                tracing::debug!(resource = %served.name(), namespace = ?key.3, "A new subscriber: restarting the shared watch for a full listing.");
                task.abort();
            }
            entry.task = Some(self.spawn(&key, entry));
        }
        Subscription {
            events: rx,
            readiness,
        }
    }

    /// Starts every prepared watch; from now on, `/readyz` waits for the subscriptions made so
    /// far, and new subscriptions start (or restart) their watch at once.
    pub(crate) fn start(&self) {
        if let Some(total) = self.counted.locked().take() {
            self.readiness.expect(total);
        }
        let mut entries = self.entries.locked();
        for (key, entry) in entries.iter_mut() {
            if entry.task.is_none() {
                entry.task = Some(self.spawn(key, entry));
            }
        }
        tracing::debug!(watches = entries.len(), "The shared watches are started.");
    }

    /// Stops the watches of a resource (group, version, plural; every scope); their subscribers
    /// see the end.
    pub(crate) fn stop_resource(&self, resource: &(String, String, String)) {
        let (g, v, p) = resource;
        self.entries.locked().retain(|(kg, kv, kp, _, _), entry| {
            let matches = (kg, kv, kp) == (g, v, p);
            if matches && let Some(task) = entry.task.take() {
                task.abort();
            }
            !matches
        });
    }

    /// Stops every watch.
    pub(crate) fn stop_all(&self) {
        for entry in self.entries.locked().values_mut() {
            if let Some(task) = entry.task.take() {
                task.abort();
            }
        }
    }

    /// How many watches there are (one per resource and scope, however many subscribe).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.locked().len()
    }

    fn spawn(&self, key: &WatchKey, entry: &Entry) -> tokio::task::JoinHandle<()> {
        let api = kit::api_for(&self.client, &entry.served, key.3.as_deref());
        let shard = self.shard.as_ref().filter(|_| key.4).map(Arc::clone);
        tokio::spawn(run(
            api,
            entry.served.clone(),
            key.3.clone(),
            Arc::clone(&entry.subscribers),
            Arc::clone(&self.namespaces),
            self.silence,
            shard,
        ))
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Sends `event` to every subscriber still listening; forgets those that are gone. Returns
/// whether anyone is left.
fn fan_out(subscribers: &Subscribers, event: watcher::Event<DynamicObject>) -> bool {
    let event = Arc::new(event);
    let mut subscribers = subscribers.locked();
    subscribers.retain(|tx| tx.send(Arc::clone(&event)).is_ok());
    !subscribers.is_empty()
}

/// One watch, forever: restarted after a silence; errors retried with a backoff that starts
/// over with every event, and a 410 Gone (the resource version expired, e.g. after an API
/// server restart) listed again at once — kube's default backoff grows during an outage and
/// resets only after two quiet minutes, so the relist after the outage waited up to 30 s.
async fn run(
    api: kube::Api<DynamicObject>,
    served: Served,
    namespace: Option<String>,
    subscribers: Subscribers,
    namespaces: Arc<Namespaces>,
    silence: Duration,
    shard: Option<Arc<Shard>>,
) {
    let resource = served.name();
    let mut backoff = WatchBackoff::default();
    let mut config = watcher::Config::default().timeout(290);
    if let Some(shard) = &shard {
        config = config.labels(&shard.selector());
    }
    loop {
        let mut stream = watcher(api.clone(), config.clone()).boxed();
        loop {
            let next = match tokio::time::timeout(silence, stream.next()).await {
                Err(_) => {
                    tracing::warn!(%resource, ?namespace, silence = ?silence, "The watch has been silent too long; restarting it.");
                    break;
                }
                Ok(None) => break,
                Ok(Some(next)) => next,
            };
            let event = match next {
                Ok(event) => {
                    backoff.reset();
                    event
                }
                Err(err) if expired(&err) => {
                    // The watcher lists again on its next poll.
                    tracing::warn!(%resource, ?namespace, error = %err, "The watch failed; its resource version expired (410): listing again now.");
                    continue;
                }
                Err(err) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(%resource, ?namespace, error = %err, retry_in = ?pause, "The watch failed; retrying with backoff.");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            if let watcher::Event::InitApply(obj)
            | watcher::Event::Apply(obj)
            | watcher::Event::Delete(obj) = &event
                && !namespaces.serves(obj.metadata.namespace.as_deref())
            {
                continue;
            }
            if let Some(shard) = &shard {
                // Before any controller sees the event: which objects are ours.
                shard.observe(&served, namespace.as_deref(), &event);
            }
            if !fan_out(&subscribers, event) {
                tracing::debug!(%resource, ?namespace, "No subscriber is left; the watch ends.");
                return;
            }
        }
    }
}

/// A watch error that a fresh listing cures at once: 410 Gone / Expired.
fn expired(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::InitialListFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// The pause before retrying a failed watch: 0.5 s doubling up to 15 s, from the start again
/// after any event.
#[derive(Debug)]
struct WatchBackoff {
    next: Duration,
}

const WATCH_BACKOFF_FIRST: Duration = Duration::from_millis(500);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(15);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: WATCH_BACKOFF_FIRST,
        }
    }
}

impl WatchBackoff {
    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(WATCH_BACKOFF_MAX);
        pause
    }

    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_backoff_grows_to_its_cap_and_starts_over_after_an_event() {
        let mut b = WatchBackoff::default();
        let pauses: Vec<u64> = (0..7).map(|_| b.next_pause().as_millis() as u64).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 15000, 15000]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_millis(500));
    }

    #[test]
    fn only_an_expired_resource_version_is_listed_again_at_once() {
        let status = |code| kube::core::Status {
            code,
            ..kube::core::Status::default()
        };
        assert!(expired(&watcher::Error::WatchError(Box::new(status(410)))));
        assert!(!expired(&watcher::Error::WatchError(Box::new(status(500)))));
        assert!(!expired(&watcher::Error::NoResourceVersion));
    }
    use kube::api::ApiResource;

    fn served(plural: &str, namespaced: bool) -> Served {
        Served {
            resource: ApiResource {
                group: "example.com".into(),
                version: "v1".into(),
                api_version: "example.com/v1".into(),
                kind: "Thing".into(),
                plural: plural.into(),
            },
            namespaced,
            has_status: false,
        }
    }

    fn watches() -> Arc<Watches> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        Watches::new(
            kube::Client::try_from(config).unwrap(),
            Duration::from_secs(60),
            Arc::new(Namespaces::All),
            Arc::default(),
            None,
        )
    }

    #[tokio::test]
    async fn one_watch_per_resource_and_scope_however_many_subscribe() {
        let w = watches();
        let _a = w.subscribe(&served("things", true), None, false);
        let _b = w.subscribe(&served("things", true), None, false);
        let _c = w.subscribe(&served("things", true), Some("ns1"), false);
        let _d = w.subscribe(&served("others", false), Some("ns1"), false);
        let _e = w.subscribe(&served("others", false), None, false);
        // things/all, things/ns1, others (cluster-wide: the namespace does not split it).
        assert_eq!(w.len(), 3);
    }

    #[tokio::test]
    async fn readiness_counts_the_subscriptions_of_the_start_once_each() {
        let readiness = Arc::new(Readiness::default());
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let w = Watches::new(
            kube::Client::try_from(config).unwrap(),
            Duration::from_secs(60),
            Arc::new(Namespaces::All),
            Arc::clone(&readiness),
            None,
        );
        let mut a = w.subscribe(&served("things", true), None, false);
        let mut b = w.subscribe(&served("things", true), None, false);
        assert!(!readiness.ready(), "not ready before the start");
        w.start();
        let mut late = w.subscribe(&served("others", true), None, false);
        a.listed();
        a.listed();
        assert!(!readiness.ready(), "one of two subscriptions listed");
        b.listed();
        assert!(readiness.ready());
        late.listed();
        w.stop_all();
    }

    #[tokio::test]
    async fn a_reflected_subscription_keeps_a_store_and_reports_listed() {
        let readiness = Arc::new(Readiness::default());
        readiness.expect(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let subscription = Subscription {
            events: rx,
            readiness: Some(Arc::clone(&readiness)),
        };
        let things = served("things", true);
        let writer = Writer::new(things.resource.clone());
        let store = writer.as_reader();
        let object = |name: &str| {
            let mut o = DynamicObject::new(name, &things.resource).within("ns");
            o.metadata.resource_version = Some("1".into());
            o
        };
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(object("a")),
            watcher::Event::InitDone,
            watcher::Event::Apply(object("b")),
        ] {
            tx.send(Arc::new(event)).unwrap();
        }
        drop(tx);
        let mut seen = Vec::new();
        reflect(subscription, writer, |e| {
            seen.push(matches!(
                e,
                watcher::Event::Apply(_) | watcher::Event::InitApply(_)
            ));
        })
        .await;
        assert!(readiness.ready(), "listed after InitDone");
        assert_eq!(seen, [false, true, false, true]);
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn fan_out_reaches_every_subscriber_and_forgets_the_gone() {
        let subscribers = Subscribers::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, rx2) = mpsc::unbounded_channel();
        subscribers.locked().extend([tx1, tx2]);
        drop(rx2);
        assert!(fan_out(&subscribers, watcher::Event::Init));
        assert!(matches!(*rx1.try_recv().unwrap(), watcher::Event::Init));
        assert_eq!(subscribers.locked().len(), 1);
        drop(rx1);
        assert!(!fan_out(&subscribers, watcher::Event::InitDone));
    }
}
