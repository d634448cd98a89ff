//! Level-triggered sync handlers, the effects: one controller per sync registration
//! ([`serve`]) watches the parents and the declared child types, calls `SyncService.Sync` (or
//! `Finalize`) with a parent and its current children, and performs what
//! [`crate::core::sync`] decides — server-side apply of the desired children under Operon's field
//! manager, deletion of the rest, the parent's status — writing nothing when nothing differs.
//!
//! # Guarantees
//! - One parent is synced by one task at a time; a change during a sync syncs it again after.
//! - A failing sync (gRPC error or the handler's `error`) writes nothing and is retried with
//!   exponential backoff ([`backoff`]); errors are counted per parent in `/metrics`
//!   (`operon_sync_errors_total`) and shown in the read model.
//! - An invalid response (child in another namespace, child with `status`, undeclared type,
//!   status without a status subresource) applies nothing: the parent gets `status.syncError`
//!   (when it has a status subresource) and a Warning Event.
//! - A child name that another parent controls is reported the same way, never taken over.
//!
//! # Caveats
//! Rolling updates remember their progress in memory: after a restart of the core, a rollout
//! continues from the first child that still differs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::Api;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use operon_proto::v1 as pb;
use operon_proto::v1::sync_service_client::SyncServiceClient;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument as _;

use crate::core::shutdown::{self as hooks, FailureStrategy, Hook, Phase, Reason};
use crate::core::sync::{
    self as decide, ChildKey, ChildType, Desired, Existing, Invalid, Observed, Parent, Rollout,
    Step, Strategy,
};
use crate::runtime::context::Context;
use crate::runtime::convert::{self, Selector};
use crate::runtime::discovery::{self, Served};
use crate::runtime::kit::Locked;
use crate::runtime::locks;
use crate::runtime::readmodel::{HandlerStatus, HandlerView, ObjectPhase, ObjectView};
use crate::runtime::shutdown::{Callbacks, Gate, Shutdown};

/// The field manager of Operon's server-side applies.
pub const FIELD_MANAGER: &str = "operon";

/// A manifest's sync registration that breaks the contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registration has no id.
    #[error("a sync registration has no id")]
    EmptyId,
    /// Two registrations share an id.
    #[error("sync registration {0:?} is defined twice")]
    DuplicateId(String),
    /// The parent or a child type names no resource.
    #[error("sync registration {0:?} names no parent or an empty child resource")]
    NoResource(String),
    /// An unknown update strategy.
    #[error("sync registration {id:?}: unknown update strategy {value}")]
    Strategy {
        /// The registration.
        id: String,
        /// The value sent.
        value: i32,
    },
    /// A shutdown hook that cannot be used.
    #[error("sync registration {id:?}: invalid shutdown hook: {reason}")]
    Hook {
        /// The registration.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad duration.
    #[error("sync registration {id:?}: {source}")]
    Duration {
        /// The registration.
        id: String,
        /// The problem.
        #[source]
        source: convert::Error,
    },
}

/// One sync registration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSpec {
    /// Its id.
    pub id: String,
    /// The parent resource.
    pub parent: Selector,
    /// The child resources, each with its strategy.
    pub children: Vec<(Selector, Strategy)>,
    /// Resync period.
    pub resync: Option<Duration>,
    /// Hold a finalizer and call Finalize (always, with a shutdown hook).
    pub finalize: bool,
    /// Per-call deadline.
    pub call_timeout: Option<Duration>,
    /// Ask the application to stop before children are deleted or replaced.
    pub shutdown: Option<Hook>,
}

/// Validates a registration's shutdown hook.
fn hook(id: &str, h: &pb::ShutdownHook) -> Result<Hook, Error> {
    let bad = |reason: &str| Error::Hook {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    let endpoint = match (h.service.is_empty(), h.url_template.is_empty()) {
        (false, true) => hooks::Endpoint::Service {
            name: h.service.clone(),
            port: u16::try_from(h.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("a service needs a port from 1 to 65535"))?,
        },
        (true, false) if h.url_template.starts_with("http://") => {
            hooks::Endpoint::Template(h.url_template.clone())
        }
        (true, false) => return Err(bad("the url_template must start with http://")),
        _ => return Err(bad("name exactly one of service and url_template")),
    };
    let failure = match pb::ShutdownFailureStrategy::try_from(h.failure_strategy) {
        Ok(pb::ShutdownFailureStrategy::Unspecified | pb::ShutdownFailureStrategy::GiveUp) => {
            FailureStrategy::GiveUp
        }
        Ok(pb::ShutdownFailureStrategy::Delete) => FailureStrategy::Delete,
        Err(_) => {
            return Err(bad(&format!(
                "unknown failure strategy {}",
                h.failure_strategy
            )));
        }
    };
    let grace = h
        .grace_period
        .map(|d| convert::duration("grace_period", d))
        .transpose()
        .map_err(|source| Error::Duration {
            id: id.to_owned(),
            source,
        })?
        .filter(|d| !d.is_zero())
        .unwrap_or(crate::core::shutdown::DEFAULT_GRACE);
    Ok(Hook {
        endpoint,
        grace,
        retries: h.retries,
        failure,
    })
}

/// A registration's resource selector; `None` when it names no resource.
pub(crate) fn selector(r: Option<&pb::ResourceSelector>) -> Option<Selector> {
    r.filter(|r| !r.name.is_empty()).map(|r| Selector {
        group: r.group.clone(),
        version: r.version.clone(),
        name: r.name.clone(),
    })
}

/// The sync registrations of a manifest.
///
/// # Errors
/// The first contract violation.
pub fn registrations(m: &pb::Manifest) -> Result<Vec<SyncSpec>, Error> {
    let mut out: Vec<SyncSpec> = Vec::new();
    for s in &m.syncs {
        if s.id.is_empty() {
            return Err(Error::EmptyId);
        }
        if out.iter().any(|o| o.id == s.id) {
            return Err(Error::DuplicateId(s.id.clone()));
        }
        let parent = selector(s.parent.as_ref()).ok_or_else(|| Error::NoResource(s.id.clone()))?;
        let mut children = Vec::new();
        for c in &s.children {
            let sel =
                selector(c.resource.as_ref()).ok_or_else(|| Error::NoResource(s.id.clone()))?;
            let strategy = match pb::UpdateStrategy::try_from(c.update_strategy) {
                Ok(pb::UpdateStrategy::Unspecified | pb::UpdateStrategy::OnDelete) => {
                    Strategy::OnDelete
                }
                Ok(pb::UpdateStrategy::Recreate) => Strategy::Recreate,
                Ok(pb::UpdateStrategy::InPlace) => Strategy::InPlace,
                Ok(pb::UpdateStrategy::RollingRecreate) => Strategy::RollingRecreate,
                Ok(pb::UpdateStrategy::RollingInPlace) => Strategy::RollingInPlace,
                Err(_) => {
                    return Err(Error::Strategy {
                        id: s.id.clone(),
                        value: c.update_strategy,
                    });
                }
            };
            children.push((sel, strategy));
        }
        let duration = |d: Option<prost_types::Duration>, what: &str| {
            d.map(|d| convert::duration(what, d))
                .transpose()
                .map_err(|source| Error::Duration {
                    id: s.id.clone(),
                    source,
                })
        };
        let shutdown = s
            .shutdown_hook
            .as_ref()
            .map(|h| hook(&s.id, h))
            .transpose()?;
        out.push(SyncSpec {
            id: s.id.clone(),
            parent,
            children,
            resync: duration(s.resync_period, "resync_period")?.filter(|d| !d.is_zero()),
            // A hook needs the parent to stay until the application has stopped.
            finalize: s.finalize || shutdown.is_some(),
            call_timeout: duration(s.call_timeout, "call_timeout")?.filter(|d| !d.is_zero()),
            shutdown,
        });
    }
    Ok(out)
}

/// Exponential backoff after `errors` consecutive failures: 0.5 s, 1 s, 2 s, … at most 5 min.
pub fn backoff(errors: u32) -> Duration {
    let exp = errors.saturating_sub(1).min(10);
    (Duration::from_millis(500) * 2u32.pow(exp)).min(Duration::from_secs(300))
}

/// Parent key: namespace ("" for cluster-wide) and name.
type Key = (String, String);

struct Controller {
    env: Arc<Context>,
    spec: SyncSpec,
    client: SyncServiceClient<Channel>,
    parent: Served,
    parents: Vec<Store<DynamicObject>>,
    types: Vec<ChildType>,
    children: Vec<(Served, Vec<Store<DynamicObject>>)>,
    finalizer: String,
    state: Mutex<HashMap<Key, ParentState>>,
    /// The registration's shutdown hook.
    shutdown: Option<Arc<Shutdown>>,
}

/// What the controller remembers about a parent between syncs.
#[derive(Debug, Default)]
struct ParentState {
    errors: u32,
    total_errors: u64,
    last_error: Option<String>,
    rollouts: BTreeMap<usize, Rollout>,
    /// Per child: hash of the body we applied last and the resourceVersion it produced.
    applied: HashMap<ChildKey, (u64, String)>,
}

fn hash_of(v: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

async fn resolve(client: &kube::Client, selector: &Selector) -> Served {
    let mut delay = Duration::from_secs(1);
    loop {
        match discovery::resolve(client, selector).await {
            Ok(served) => return served,
            Err(err) => {
                tracing::warn!(resource = %selector, error = %err, retry_in = ?delay, "Cannot serve the resource yet.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
        }
    }
}

/// Runs the controller of one sync registration, served at `url`, until aborted.
///
/// # Errors
/// Only an invalid address; everything else is retried and reported.
pub async fn serve(
    env: Arc<Context>,
    callbacks: Arc<Callbacks>,
    spec: SyncSpec,
    url: String,
) -> Result<(), tonic::transport::Error> {
    let channel = Endpoint::from_shared(url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy();
    let client = SyncServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let parent = resolve(&env.client, &spec.parent).await;
    let mut types = Vec::new();
    let mut child_served = Vec::new();
    for (sel, strategy) in &spec.children {
        let served = resolve(&env.client, sel).await;
        types.push(ChildType {
            api_version: served.resource.api_version.clone(),
            kind: served.resource.kind.clone(),
            namespaced: served.namespaced,
            strategy: *strategy,
        });
        child_served.push(served);
    }
    let (tx, rx) = mpsc::unbounded_channel::<Key>();
    let mut tasks = tokio::task::JoinSet::new();
    let scopes = |namespaced: bool| -> Vec<Option<String>> {
        if namespaced && !env.namespaces.is_empty() {
            env.namespaces.iter().cloned().map(Some).collect()
        } else {
            vec![None]
        }
    };
    let mut parents = Vec::new();
    for ns in scopes(parent.namespaced) {
        let writer = Writer::new(parent.resource.clone());
        parents.push(writer.as_reader());
        let api = api_for(&env.client, &parent, ns.as_deref());
        let tx = tx.clone();
        tasks.spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .touched_objects()
                .boxed();
            while let Some(next) = stream.next().await {
                match next {
                    Ok(obj) => {
                        let _ = tx.send((
                            obj.metadata.namespace.clone().unwrap_or_default(),
                            obj.metadata.name.clone().unwrap_or_default(),
                        ));
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "The parents' watch failed; retrying.")
                    }
                }
            }
        });
    }
    let mut children = Vec::new();
    for served in child_served {
        let mut stores = Vec::new();
        for ns in scopes(served.namespaced) {
            let writer = Writer::new(served.resource.clone());
            stores.push(writer.as_reader());
            let api = api_for(&env.client, &served, ns.as_deref());
            let tx = tx.clone();
            let (pkind, papi) = (
                parent.resource.kind.clone(),
                parent.resource.api_version.clone(),
            );
            let parent_namespaced = parent.namespaced;
            tasks.spawn(async move {
                let mut stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .reflect(writer)
                    .touched_objects()
                    .boxed();
                while let Some(next) = stream.next().await {
                    match next {
                        Ok(obj) => {
                            for r in obj.metadata.owner_references.iter().flatten() {
                                if r.controller == Some(true)
                                    && r.kind == pkind
                                    && r.api_version == papi
                                {
                                    let ns = if parent_namespaced {
                                        obj.metadata.namespace.clone().unwrap_or_default()
                                    } else {
                                        String::new()
                                    };
                                    let _ = tx.send((ns, r.name.clone()));
                                }
                            }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "A children's watch failed; retrying.");
                        }
                    }
                }
            });
        }
        children.push((served, stores));
    }
    for store in parents.iter().chain(children.iter().flat_map(|(_, s)| s)) {
        let _ = store.wait_until_ready().await;
    }
    tracing::info!(sync = %spec.id, parent = %parent.name(), children = types.len(), "Serving the sync registration.");
    let finalizer = format!("{}/sync-{}", env.prefix, spec.id);
    let shutdown = spec.shutdown.clone().map(|hook| {
        let s = Shutdown::new(crate::runtime::shutdown::Setup {
            hook,
            sync_id: spec.id.clone(),
            client: env.client.clone(),
            parent: parent.clone(),
            namespaces: env.namespaces.clone(),
            metrics: Arc::clone(&env.metrics),
            readmodel: Arc::clone(&env.readmodel),
            callback_base: env.callback_base.clone(),
            wake: tx.clone(),
        });
        callbacks.register(Arc::clone(&s));
        tracing::info!(sync = %spec.id, resource = %s.resource, "Serving the shutdown hook's callbacks.");
        s
    });
    let controller = Arc::new(Controller {
        env,
        spec,
        client,
        parent,
        parents,
        types,
        children,
        finalizer,
        state: Mutex::default(),
        shutdown,
    });
    controller.run(tx, rx).await;
    tasks.shutdown().await;
    Ok(())
}

fn api_for(client: &kube::Client, served: &Served, ns: Option<&str>) -> Api<DynamicObject> {
    match ns {
        Some(ns) if served.namespaced => Api::namespaced_with(client.clone(), ns, &served.resource),
        _ => Api::all_with(client.clone(), &served.resource),
    }
}

/// How one sync of one parent ended.
enum Ended {
    /// Synced (or nothing to do); sync again after this long, if set.
    Done(Option<Duration>),
    /// Failed: retried with backoff.
    Failed(String),
    /// Refused or partly refused: reported on the parent, retried with backoff.
    Reported(String),
}

impl Controller {
    fn state<T>(&self, key: &Key, f: impl FnOnce(&mut ParentState) -> T) -> T {
        let mut map = self.state.locked();
        f(map.entry(key.clone()).or_default())
    }

    /// The work loop: one sync per parent at a time, requeues by timers (the latest wins).
    async fn run(
        self: Arc<Self>,
        tx: mpsc::UnboundedSender<Key>,
        mut rx: mpsc::UnboundedReceiver<Key>,
    ) {
        let mut running: HashSet<Key> = HashSet::new();
        let mut dirty: HashSet<Key> = HashSet::new();
        let timers: Arc<Mutex<HashMap<Key, u64>>> = Arc::default();
        let mut token = 0u64;
        let mut work = tokio::task::JoinSet::new();
        // Every parent is queued by its watch's initial listing (the keys wait in `rx`).
        loop {
            tokio::select! {
                key = rx.recv() => {
                    let Some(key) = key else { return };
                    if running.contains(&key) {
                        dirty.insert(key);
                    } else {
                        running.insert(key.clone());
                        let me = Arc::clone(&self);
                        work.spawn(async move { let after = me.sync_one(&key).await; (key, after) });
                    }
                }
                Some(done) = work.join_next() => {
                    let Ok((key, after)) = done else { continue };
                    running.remove(&key);
                    if let Some(after) = after {
                        token += 1;
                        let mine = token;
                        timers.locked().insert(key.clone(), mine);
                        let (timers, tx, key) = (Arc::clone(&timers), tx.clone(), key.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let fire = {
                                let mut t = timers.locked();
                                if t.get(&key) == Some(&mine) { t.remove(&key); true } else { false }
                            };
                            if fire { let _ = tx.send(key); }
                        });
                    }
                    if dirty.remove(&key) {
                        running.insert(key.clone());
                        let me = Arc::clone(&self);
                        work.spawn(async move { let after = me.sync_one(&key).await; (key, after) });
                    }
                }
            }
        }
    }

    fn find_parent(&self, key: &Key) -> Option<Arc<DynamicObject>> {
        let mut r = ObjectRef::new_with(&key.1, self.parent.resource.clone());
        if self.parent.namespaced {
            r = r.within(&key.0);
        }
        self.parents.iter().find_map(|s| s.get(&r))
    }

    /// Syncs one parent; returns when to sync it again.
    async fn sync_one(&self, key: &Key) -> Option<Duration> {
        let _parent_lock = self
            .env
            .locks
            .lock(locks::key(&self.parent, &key.0, &key.1))
            .await;
        let Some(parent) = self.find_parent(key) else {
            self.state.locked().remove(key);
            self.env
                .readmodel
                .remove(&self.parent.name(), &key.0, &key.1);
            return None;
        };
        let Some(body) = typed(
            parent.as_ref(),
            &self.parent.resource.api_version,
            &self.parent.resource.kind,
        ) else {
            tracing::error!("Cannot serialise a parent.");
            return None;
        };
        let span =
            tracing::info_span!("sync", sync = %self.spec.id, namespace = %key.0, name = %key.1);
        let ended = self.sync_body(key, &body).instrument(span).await;
        let (after, outcome) = match ended {
            Ended::Done(after) => {
                self.state(key, |s| {
                    s.errors = 0;
                    s.last_error = None;
                });
                (after, "success")
            }
            Ended::Failed(message) | Ended::Reported(message) => {
                tracing::warn!(sync = %self.spec.id, namespace = %key.0, name = %key.1, error = %message, "The sync failed; retrying with backoff.");
                self.env.metrics.sync_error(&self.spec.id, &key.0, &key.1);
                let errors = self.state(key, |s| {
                    s.errors += 1;
                    s.total_errors += 1;
                    s.last_error = Some(message);
                    s.errors
                });
                (Some(backoff(errors)), "error")
            }
        };
        self.env.metrics.sync_call(&self.spec.id, outcome);
        self.publish(key, &body, after);
        after
    }

    fn publish(&self, key: &Key, body: &Value, after: Option<Duration>) {
        let (errors, total, message) =
            self.state(key, |s| (s.errors, s.total_errors, s.last_error.clone()));
        let now = jiff::Timestamp::now();
        let failing = errors > 0;
        let hook = self
            .shutdown
            .as_ref()
            .and_then(|s| s.view(key))
            .map(|s| HandlerView {
                id: "shutdown-hook".into(),
                state: match s.phase {
                    Phase::Waiting => HandlerStatus::Pending,
                    Phase::Stopped | Phase::ForcedDelete => HandlerStatus::Succeeded,
                    Phase::Degraded => HandlerStatus::Failed,
                },
                retries: s.attempt.saturating_sub(1),
                started: Some(s.requested_at.to_string()),
                delayed: s.deadline.map(|d| d.to_string()),
                message: Some(format!("{}: {}", s.phase.as_str(), s.message)),
                trace_id: None,
            });
        let phase = match &hook {
            Some(h) if h.state == HandlerStatus::Failed => ObjectPhase::Failed,
            Some(h) if h.state == HandlerStatus::Pending => ObjectPhase::InProgress,
            _ if failing => ObjectPhase::Retrying,
            _ => ObjectPhase::Handled,
        };
        self.env.readmodel.upsert(ObjectView {
            resource: self.parent.name(),
            namespace: key.0.clone(),
            name: key.1.clone(),
            uid: body
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            phase,
            cause: "sync".into(),
            handlers: std::iter::once(HandlerView {
                id: self.spec.id.clone(),
                state: if failing {
                    HandlerStatus::Retrying
                } else {
                    HandlerStatus::Succeeded
                },
                retries: u32::try_from(total).unwrap_or(u32::MAX),
                started: None,
                delayed: if failing {
                    after
                        .and_then(|a| jiff::SignedDuration::try_from(a).ok())
                        .and_then(|a| now.checked_add(a).ok())
                        .map(|t| t.to_string())
                } else {
                    None
                },
                message,
                trace_id: None,
            })
            .chain(hook)
            .collect(),
            updated: now.to_string(),
        });
    }

    fn current_children(&self, uid: &str) -> Vec<(usize, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for (i, (_, stores)) in self.children.iter().enumerate() {
            let mut objs: Vec<Arc<DynamicObject>> = stores
                .iter()
                .flat_map(|s| {
                    s.state_filter(|o| {
                        o.metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|r| r.controller == Some(true) && r.uid == uid)
                    })
                })
                .collect();
            objs.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            out.extend(objs.into_iter().map(|o| (i, o)));
        }
        out
    }

    fn lookup(
        &self,
        type_index: usize,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let (served, stores) = &self.children[type_index];
        let mut r = ObjectRef::new_with(name, served.resource.clone());
        if let Some(ns) = ns {
            r = r.within(ns);
        }
        stores.iter().find_map(|s| s.get(&r))
    }

    fn deadline(&self) -> Duration {
        self.spec
            .call_timeout
            .unwrap_or(self.env.settings.call_timeout)
    }

    /// Awaits a Sync or Finalize call within the deadline (plus a second for the transport);
    /// a late or failed call ends the attempt as failed.
    async fn answer<T>(
        &self,
        rpc: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Ended> {
        match tokio::time::timeout(self.deadline() + Duration::from_secs(1), call).await {
            Err(_) => Err(Ended::Failed(format!(
                "the {rpc} call did not finish within {:?}",
                self.deadline()
            ))),
            Ok(Err(status)) => Err(Ended::Failed(format!(
                "the {rpc} call failed: {} ({:?})",
                status.message(),
                status.code()
            ))),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    async fn sync_body(&self, key: &Key, body: &Value) -> Ended {
        let parent = Parent::of(body);
        let deleting = body.pointer("/metadata/deletionTimestamp").is_some();
        let has_finalizer = body
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| {
                f.iter()
                    .any(|f| f.as_str() == Some(self.finalizer.as_str()))
            });
        if deleting {
            if !(self.spec.finalize && has_finalizer) {
                return Ended::Done(None);
            }
            // The application stops before Finalize and before any child goes.
            if let Some(shutdown) = &self.shutdown {
                match shutdown.gate(body, Reason::Delete).await {
                    Gate::Open => {}
                    Gate::Wait(after) => return Ended::Done(after),
                    Gate::Failed(message) => return Ended::Failed(message),
                }
            }
            return self.finalize(key, body).await;
        }
        if self.spec.finalize && !has_finalizer {
            // The watch brings the parent back with its finalizer, and it is synced then.
            return match self.add_finalizer(key, body).await {
                Ok(()) => Ended::Done(None),
                Err(err) => Ended::Failed(format!("cannot add the finalizer: {err}")),
            };
        }
        let current = self.current_children(&parent.uid);
        let request = self.request(body, &current, false);
        let mut call = tonic::Request::new(request);
        call.set_timeout(self.deadline());
        let mut client = self.client.clone();
        let response = match self.answer("Sync", client.sync(call)).await {
            Ok(r) => r,
            Err(ended) => return ended,
        };
        if !response.error.is_empty() {
            return Ended::Failed(format!("the sync handler failed: {}", response.error));
        }
        let status = match parse_status(&response.status_json) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .refuse(key, body, &format!("the status is not JSON: {e}"))
                    .await;
            }
        };
        if status.as_ref().is_some_and(|s| !s.is_object()) {
            return self
                .refuse(key, body, "the status must be a JSON object or null")
                .await;
        }
        if status.is_some() && !self.parent.has_status {
            return self
                .refuse(key, body, &format!("the sync handler returned a status, but {} has no status subresource; return a null status", self.parent.name()))
                .await;
        }
        let mut desired_children = Vec::with_capacity(response.children_json.len());
        for (i, raw) in response.children_json.iter().enumerate() {
            match serde_json::from_slice::<Value>(raw) {
                Ok(v) => desired_children.push(v),
                Err(e) => {
                    return self
                        .refuse(key, body, &format!("child #{i} is not JSON: {e}"))
                        .await;
                }
            }
        }
        let desired = match decide::validate(&parent, &self.types, desired_children) {
            Ok(d) => d,
            Err(invalid) => return self.refuse(key, body, &refusal(&invalid)).await,
        };
        let observed: Vec<Observed> = current
            .iter()
            .filter_map(|(i, o)| {
                serde_json::to_value(o.as_ref())
                    .ok()
                    .map(|v| Observed::of(*i, &v))
            })
            .collect();
        let (rollouts, applied) = self.state(key, |s| (s.rollouts.clone(), s.applied.clone()));
        let existing = |d: &Desired| -> Existing {
            let Some(obj) = self.lookup(d.type_index, d.namespace.as_deref(), &d.name) else {
                return Existing::Absent;
            };
            let controller = obj
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true));
            match controller {
                Some(r) if r.uid == parent.uid => {
                    let rv = obj.metadata.resource_version.clone().unwrap_or_default();
                    let cached = applied.get(&d.key()) == Some(&(hash_of(&d.body), rv));
                    let t = &self.types[d.type_index];
                    let current = cached
                        || typed(obj.as_ref(), &t.api_version, &t.kind)
                            .is_some_and(|v| decide::contains(&v, &d.body));
                    Existing::Own { current }
                }
                Some(r) => Existing::Foreign {
                    owner: format!("{} {:?}", r.kind, r.name),
                },
                None => Existing::Orphan,
            }
        };
        let wanted: HashSet<ChildKey> = desired.iter().map(Desired::key).collect();
        let plan = decide::plan(&self.types, desired, &observed, existing, &rollouts);
        let mut failures = Vec::new();
        // With a shutdown hook, children the answer no longer lists (a move) go only once the
        // application has stopped; creations and updates go on meanwhile.
        let (gate, removals) = self.replace_gate(body, &plan.steps, &wanted).await;
        let mut removal_failed = false;
        for step in plan.steps {
            let removal = matches!(&step, Step::Delete { key, .. } if !wanted.contains(key));
            if removal && gate != Gate::Open {
                continue;
            }
            if let Err(e) = self.perform(key, step).await {
                removal_failed |= removal;
                failures.push(e);
            }
        }
        if let Some(shutdown) = &self.shutdown
            && gate == Gate::Open
            && !removal_failed
            && let Err(e) = shutdown.clear(body).await
        {
            failures.push(e.to_string());
        }
        let gate_after = match gate {
            Gate::Failed(e) => {
                failures.push(e);
                None
            }
            Gate::Wait(after) if removals => after,
            _ => None,
        };
        self.state(key, |s| s.rollouts = plan.rollouts.clone());
        let mut problems = plan.conflicts.clone();
        if !plan.conflicts.is_empty() {
            problems.insert(0, "children not applied (name conflicts):".to_owned());
        }
        let problem = (!problems.is_empty()).then(|| problems.join(" "));
        if let Err(e) = self
            .write_status(body, status.as_ref(), problem.as_deref())
            .await
        {
            failures.push(e);
        }
        if let Some(problem) = problem {
            self.report(key, body, &problem).await;
            return Ended::Reported(problem);
        }
        if !failures.is_empty() {
            return Ended::Failed(failures.join("; "));
        }
        let mut after = response
            .resync_after
            .and_then(|d| convert::duration("resync_after", d).ok())
            .filter(|d| !d.is_zero())
            .or(self.spec.resync);
        if !plan.rollouts.is_empty() {
            // A rollout waits for a child to settle: look again soon even without an event.
            after = Some(after.map_or(Duration::from_secs(5), |a| a.min(Duration::from_secs(5))));
        }
        if let Some(wait) = gate_after {
            after = Some(after.map_or(wait, |a| a.min(wait)));
        }
        Ended::Done(after)
    }

    /// The shutdown hook's gate for the removals in `steps` (deletions of children that are
    /// not `wanted`), and whether there are any. Without removals a finished or pending replace
    /// handshake is cleared (gate open: nothing waits).
    async fn replace_gate(
        &self,
        body: &Value,
        steps: &[Step],
        wanted: &HashSet<ChildKey>,
    ) -> (Gate, bool) {
        let Some(shutdown) = &self.shutdown else {
            return (Gate::Open, false);
        };
        let removals = steps
            .iter()
            .any(|s| matches!(s, Step::Delete { key, .. } if !wanted.contains(key)));
        if removals {
            (shutdown.gate(body, Reason::Replace).await, true)
        } else {
            (Gate::Open, false)
        }
    }

    fn request(
        &self,
        body: &Value,
        current: &[(usize, Arc<DynamicObject>)],
        finalizing: bool,
    ) -> pb::SyncRequest {
        pb::SyncRequest {
            sync_id: self.spec.id.clone(),
            parent_json: serde_json::to_vec(body).unwrap_or_default(),
            children: self
                .types
                .iter()
                .enumerate()
                .map(|(i, t)| pb::ChildGroup {
                    api_version: t.api_version.clone(),
                    kind: t.kind.clone(),
                    objects_json: current
                        .iter()
                        .filter(|(j, _)| *j == i)
                        .filter_map(|(_, o)| {
                            serde_json::to_vec(&typed(o.as_ref(), &t.api_version, &t.kind)?).ok()
                        })
                        .collect(),
                })
                .collect(),
            finalizing,
        }
    }

    async fn perform(&self, key: &Key, step: Step) -> Result<(), String> {
        match step {
            Step::Apply(d) => {
                let (served, _) = &self.children[d.type_index];
                let api = api_for(&self.env.client, served, d.namespace.as_deref());
                let params = PatchParams::apply(FIELD_MANAGER).force();
                match api.patch(&d.name, &params, &Patch::Apply(&d.body)).await {
                    Ok(obj) => {
                        self.env.metrics.api("apply", 200);
                        tracing::info!(kind = %served.resource.kind, child = %d.name, "Applied a child.");
                        let rv = obj.metadata.resource_version.unwrap_or_default();
                        let h = hash_of(&d.body);
                        self.state(key, |s| {
                            s.applied.insert(d.key(), (h, rv));
                        });
                        Ok(())
                    }
                    Err(err) => {
                        self.env
                            .metrics
                            .api("apply", crate::runtime::kit::status_code(&err));
                        Err(format!(
                            "cannot apply {} {:?}: {err}",
                            served.resource.kind, d.name
                        ))
                    }
                }
            }
            Step::Delete { key: child, uid } => {
                let (served, _) = &self.children[child.0];
                let api = api_for(&self.env.client, served, child.1.as_deref());
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                self.state(key, |s| {
                    s.applied.remove(&child);
                });
                match api.delete(&child.2, &params).await {
                    Ok(_) => {
                        self.env.metrics.api("delete", 200);
                        tracing::info!(kind = %served.resource.kind, child = %child.2, "Deleted a child.");
                        Ok(())
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                        self.env.metrics.api("delete", s.code);
                        Ok(())
                    }
                    Err(err) => {
                        self.env
                            .metrics
                            .api("delete", crate::runtime::kit::status_code(&err));
                        Err(format!(
                            "cannot delete {} {:?}: {err}",
                            served.resource.kind, child.2
                        ))
                    }
                }
            }
        }
    }

    fn parent_api(&self, body: &Value) -> Api<DynamicObject> {
        api_for(
            &self.env.client,
            &self.parent,
            body.pointer("/metadata/namespace").and_then(Value::as_str),
        )
    }

    async fn write_status(
        &self,
        body: &Value,
        status: Option<&Value>,
        error: Option<&str>,
    ) -> Result<(), String> {
        if !self.parent.has_status {
            return Ok(());
        }
        let current = body.get("status").cloned().unwrap_or(Value::Null);
        let generation = body.pointer("/metadata/generation").and_then(Value::as_i64);
        let Some(patch) = decide::status_patch(&current, status, generation, error) else {
            return Ok(());
        };
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self
            .parent_api(body)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": patch})),
            )
            .await
        {
            Ok(_) => {
                self.env.metrics.api("patch", 200);
                Ok(())
            }
            Err(err) => {
                self.env
                    .metrics
                    .api("patch", crate::runtime::kit::status_code(&err));
                Err(format!("cannot write the parent's status: {err}"))
            }
        }
    }

    /// Refuses a response: nothing applied, the error in the status and an Event.
    async fn refuse(&self, key: &Key, body: &Value, message: &str) -> Ended {
        let message = format!("the sync response was refused: {message}");
        if let Err(e) = self.write_status(body, None, Some(&message)).await {
            tracing::warn!(error = %e, "Cannot report the refusal in the status.");
        }
        self.report(key, body, &message).await;
        Ended::Reported(message)
    }

    /// Posts a Warning Event about the parent, once per distinct message in a row.
    async fn report(&self, key: &Key, body: &Value, message: &str) {
        let repeated = self.state(key, |s| s.last_error.as_deref() == Some(message));
        if !repeated {
            let to = crate::runtime::events::Poster {
                client: &self.env.client,
                metrics: &self.env.metrics,
                readmodel: &self.env.readmodel,
            };
            crate::runtime::events::post_to(&to, body, "Warning", "SyncFailed", message).await;
        }
    }

    async fn add_finalizer(&self, _key: &Key, body: &Value) -> Result<(), kube::Error> {
        let rv = body
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let ops = if body
            .pointer("/metadata/finalizers")
            .is_some_and(Value::is_array)
        {
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                   {"op": "add", "path": "/metadata/finalizers/-", "value": self.finalizer}])
        } else {
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                   {"op": "add", "path": "/metadata/finalizers", "value": [self.finalizer]}])
        };
        self.json_patch(body, ops).await
    }

    async fn json_patch(&self, body: &Value, ops: Value) -> Result<(), kube::Error> {
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
        match self
            .parent_api(body)
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => {
                self.env.metrics.api("patch", 200);
                Ok(())
            }
            Err(err) => {
                self.env
                    .metrics
                    .api("patch", crate::runtime::kit::status_code(&err));
                Err(err)
            }
        }
    }

    async fn finalize(&self, key: &Key, body: &Value) -> Ended {
        let parent = Parent::of(body);
        let current = self.current_children(&parent.uid);
        let mut call = tonic::Request::new(self.request(body, &current, true));
        call.set_timeout(self.deadline());
        let mut client = self.client.clone();
        let response = match self.answer("Finalize", client.finalize(call)).await {
            Ok(r) => r,
            Err(ended) => return ended,
        };
        if !response.error.is_empty() {
            return Ended::Failed(format!("the finalize handler failed: {}", response.error));
        }
        let status = match parse_status(&response.status_json) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .refuse(key, body, &format!("the status is not JSON: {e}"))
                    .await;
            }
        };
        if status.is_some()
            && self.parent.has_status
            && let Err(e) = self.write_status(body, status.as_ref(), None).await
        {
            return Ended::Failed(e);
        }
        if !response.finalized {
            let after = response
                .resync_after
                .and_then(|d| convert::duration("resync_after", d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(5));
            return Ended::Done(Some(after));
        }
        let finalizers: Vec<Value> = body
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(index) = finalizers
            .iter()
            .position(|f| f.as_str() == Some(self.finalizer.as_str()))
        else {
            return Ended::Done(None);
        };
        let ops = json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": self.finalizer},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]);
        match self.json_patch(body, ops).await {
            Ok(()) => {
                tracing::info!(sync = %self.spec.id, "Finalized; the finalizer is removed.");
                if let Some(shutdown) = &self.shutdown {
                    shutdown.forget(key);
                }
                Ended::Done(None)
            }
            // A second look at a parent whose finalizer went a moment ago (a stale cache).
            Err(kube::Error::Api(s)) if s.code == 404 => Ended::Done(None),
            Err(err) => Ended::Failed(format!("cannot remove the finalizer: {err}")),
        }
    }
}

/// The object as JSON with its `apiVersion` and `kind` (items of a list come without them).
fn typed(obj: &DynamicObject, api_version: &str, kind: &str) -> Option<Value> {
    let mut v = serde_json::to_value(obj).ok()?;
    let map = v.as_object_mut()?;
    map.insert("apiVersion".into(), json!(api_version));
    map.insert("kind".into(), json!(kind));
    Some(v)
}

fn parse_status(raw: &[u8]) -> Result<Option<Value>, serde_json::Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(raw)?;
    Ok((!v.is_null()).then_some(v))
}

fn refusal(invalid: &Invalid) -> String {
    invalid.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }

    #[test]
    fn registrations_are_validated() {
        let sel = |n: &str| pb::ResourceSelector {
            group: String::new(),
            version: "v1".into(),
            name: n.into(),
            ..Default::default()
        };
        let m = pb::Manifest {
            syncs: vec![pb::SyncRegistration {
                id: "s".into(),
                parent: Some(sel("things")),
                children: vec![pb::ChildType {
                    resource: Some(sel("configmaps")),
                    update_strategy: pb::UpdateStrategy::RollingInPlace as i32,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let regs = registrations(&m).unwrap();
        assert_eq!(regs[0].children[0].1, Strategy::RollingInPlace);
        let mut bad = m.clone();
        bad.syncs[0].children[0].update_strategy = 99;
        assert!(matches!(registrations(&bad), Err(Error::Strategy { .. })));
        let mut twice = m.clone();
        twice.syncs.push(m.syncs[0].clone());
        assert!(matches!(registrations(&twice), Err(Error::DuplicateId(_))));
    }

    #[test]
    fn shutdown_hooks_are_validated_and_imply_the_finalizer() {
        let with = |h: pb::ShutdownHook| pb::Manifest {
            syncs: vec![pb::SyncRegistration {
                id: "s".into(),
                parent: Some(pb::ResourceSelector {
                    group: "example.com".into(),
                    version: "v1".into(),
                    name: "dbs".into(),
                    ..Default::default()
                }),
                shutdown_hook: Some(h),
                ..Default::default()
            }],
            ..Default::default()
        };
        let regs = registrations(&with(pb::ShutdownHook {
            url_template: "http://app/{name}".into(),
            retries: 2,
            failure_strategy: pb::ShutdownFailureStrategy::Delete as i32,
            ..Default::default()
        }))
        .unwrap();
        assert!(regs[0].finalize, "a hook implies the finalizer");
        let hook = regs[0].shutdown.clone().unwrap();
        assert_eq!(hook.grace, crate::core::shutdown::DEFAULT_GRACE);
        assert_eq!((hook.retries, hook.failure), (2, FailureStrategy::Delete));
        let service = registrations(&with(pb::ShutdownHook {
            service: "{name}-stop".into(),
            port: 8080,
            grace_period: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .unwrap();
        let hook = service[0].shutdown.clone().unwrap();
        assert_eq!(hook.grace, Duration::from_secs(5));
        assert_eq!(hook.failure, FailureStrategy::GiveUp);
        for bad in [
            pb::ShutdownHook::default(),
            pb::ShutdownHook {
                service: "s".into(),
                url_template: "http://x".into(),
                port: 1,
                ..Default::default()
            },
            pb::ShutdownHook {
                service: "s".into(),
                ..Default::default()
            },
            pb::ShutdownHook {
                url_template: "ftp://x".into(),
                ..Default::default()
            },
            pb::ShutdownHook {
                url_template: "http://x".into(),
                failure_strategy: 7,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(registrations(&with(bad.clone())), Err(Error::Hook { .. })),
                "{bad:?}"
            );
        }
    }
}
