//! Level-triggered sync handlers, the effects: one controller per sync registration
//! ([`serve`]) watches the parents and the declared child types, calls `SyncService.Sync` (or
//! `Finalize`) with a parent and its current children, and performs what
//! [`crate::core::sync`] decides — server-side apply of the desired children under Operon's field
//! manager, deletion of the rest, the parent's status — writing nothing when nothing differs.
//!
//! # Guarantees
//! - One parent is synced by one task at a time; a change during a sync syncs it again after.
//! - A failing sync (gRPC error or the handler's `error`) writes nothing and is retried with
//!   exponential backoff (`Backoff::OBJECT`); errors are counted per parent in `/metrics`
//!   (`operon_sync_errors_total`) and shown in the read model.
//! - An invalid response (child in another namespace, child with `status`, undeclared type,
//!   status without a status subresource) applies nothing: the parent gets `status.syncError`
//!   (when it has a status subresource) and a Warning Event.
//! - A child name that another parent controls is reported the same way, never taken over.
//!
//! # Caveats
//! Rolling updates remember their progress in memory: after a restart of the core, a rollout
//! continues from the first child that still differs.
//!
//! # Parts
//! Each with one job; they share what they need through `Arc`s, and every decision is in
//! [`crate::core::sync`].
//! - `work::run`: one sync per parent at a time, requeues by timers.
//! - `syncer::Syncer`: the sync of one parent: its lock, its lifecycle, the count of its
//!   failures (the backoff), its row in the read model.
//! - `apply::Applier`: Sync called and its answer performed (children applied and deleted,
//!   removals behind the shutdown hook's gate, the status).
//! - `finalize::Finalizer`: Finalize called until the parent may go, the finalizer released.
//! - `handler::Handler`: the requests to the registration's handlers.
//! - `children::Children`: the declared child types, their stores, one child applied or
//!   deleted.
//! - `state::Parents`: the parents' stores and what is remembered about each.
//! - `writes::ParentWriter`, `writes::Reporter`: the writes on a parent; what it is told about
//!   a refused or partly refused sync.

mod apply;
mod children;
mod finalize;
mod handler;
mod state;
mod syncer;
mod work;
mod writes;

use std::sync::Arc;

use kube::runtime::reflector::store::Writer;
use tokio::sync::mpsc;

use crate::core::sync::ChildType;
use crate::runtime::context::Context;
use crate::runtime::discovery::Served;
use crate::runtime::ports::SyncPort;
use crate::runtime::shutdown::{Callbacks, Shutdown};
use crate::runtime::watching::{Subscription, reflect, touched};

pub(crate) use crate::runtime::ports::SyncSpec;

/// The field manager of Operon's server-side applies.
pub(crate) const FIELD_MANAGER: &str = "operon";

/// Parent key: namespace ("" for cluster-wide) and name.
type Key = (String, String);

/// The watches of one sync registration: its resources, resolved, each with one shared-watch
/// subscription per served scope (the engine makes them before the watches start).
#[derive(Debug)]
pub(crate) struct Watched {
    /// The parents' resource.
    pub parent: Served,
    /// Its subscriptions.
    pub parents: Vec<Subscription>,
    /// Each declared child type's resource, in the registration's order, with its subscriptions.
    pub children: Vec<(Served, Vec<Subscription>)>,
}

/// Runs the controller of one sync registration, served through `port`, until aborted.
/// Everything that fails is retried and reported.
pub(crate) async fn serve(
    env: Arc<Context>,
    callbacks: Arc<Callbacks>,
    spec: SyncSpec,
    port: Arc<dyn SyncPort>,
    watched: Watched,
) {
    let Watched {
        parent,
        parents: parent_subscriptions,
        children: child_subscriptions,
    } = watched;
    let types: Vec<ChildType> = child_subscriptions
        .iter()
        .zip(&spec.children)
        .map(|((served, _), (_, strategy))| ChildType {
            api_version: served.resource.api_version.clone(),
            kind: served.resource.kind.clone(),
            namespaced: served.namespaced,
            strategy: *strategy,
        })
        .collect();
    let (tx, rx) = mpsc::unbounded_channel::<Key>();
    let mut tasks = tokio::task::JoinSet::new();
    let mut parents = Vec::new();
    for subscription in parent_subscriptions {
        let writer = Writer::new(parent.resource.clone());
        parents.push(writer.as_reader());
        let tx = tx.clone();
        tasks.spawn(reflect(subscription, writer, move |event| {
            if let Some(obj) = touched(event) {
                let _ = tx.send((
                    obj.metadata.namespace.clone().unwrap_or_default(),
                    obj.metadata.name.clone().unwrap_or_default(),
                ));
            }
        }));
    }
    let mut children = Vec::new();
    for (served, subscriptions) in child_subscriptions {
        let mut stores = Vec::new();
        for subscription in subscriptions {
            let writer = Writer::new(served.resource.clone());
            stores.push(writer.as_reader());
            let tx = tx.clone();
            let (pkind, papi) = (
                parent.resource.kind.clone(),
                parent.resource.api_version.clone(),
            );
            let parent_namespaced = parent.namespaced;
            tasks.spawn(reflect(subscription, writer, move |event| {
                if let Some(obj) = touched(event) {
                    let owners = obj.metadata.owner_references.iter().flatten().map(|r| {
                        crate::core::sync::Owner {
                            controller: r.controller == Some(true),
                            kind: &r.kind,
                            api_version: &r.api_version,
                            name: &r.name,
                        }
                    });
                    let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
                    for key in
                        crate::core::sync::parents_of(owners, &pkind, &papi, parent_namespaced, ns)
                    {
                        let _ = tx.send(key);
                    }
                }
            }));
        }
        children.push((served, stores));
    }
    for store in parents.iter().chain(children.iter().flat_map(|(_, s)| s)) {
        let _ = store.wait_until_ready().await;
    }
    // A standby (leader election) or a paused replica (peering) keeps its caches warm only.
    env.active.wait().await;
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
    let children = Arc::new(children::Children {
        env: Arc::clone(&env),
        types,
        kinds: children,
    });
    let handler = Arc::new(handler::Handler {
        port,
        sync_id: spec.id.clone(),
        deadline: spec.call_timeout.unwrap_or(env.settings.call_timeout),
        children: Arc::clone(&children),
    });
    let parents = Arc::new(state::Parents::new(parent.clone(), parents));
    let writer = Arc::new(writes::ParentWriter {
        env: Arc::clone(&env),
        parent,
        finalizer,
    });
    let reporter = Arc::new(writes::Reporter {
        writer: Arc::clone(&writer),
        parents: Arc::clone(&parents),
    });
    let syncer = Arc::new(syncer::Syncer {
        applier: apply::Applier {
            handler: Arc::clone(&handler),
            children: Arc::clone(&children),
            parents: Arc::clone(&parents),
            writer: Arc::clone(&writer),
            reporter: Arc::clone(&reporter),
            shutdown: shutdown.clone(),
            resync: spec.resync,
        },
        finalizer: finalize::Finalizer {
            handler,
            children,
            writer: Arc::clone(&writer),
            reporter,
            shutdown: shutdown.clone(),
            sync_id: spec.id.clone(),
        },
        sync_id: spec.id,
        finalize: spec.finalize,
        env,
        parents,
        writer,
        shutdown,
    });
    work::run(tx, rx, move |key| {
        let syncer = Arc::clone(&syncer);
        async move { syncer.sync_one(&key).await }
    })
    .await;
    tasks.shutdown().await;
}
