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

mod children;
mod finalize;
mod state;
mod syncer;
mod view;
mod work;
mod writes;

use std::sync::Arc;

use futures_util::StreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use crate::core::sync::ChildType;
use crate::runtime::context::Context;
use crate::runtime::kit::{api_for, resolve_until_found as resolve};
use crate::runtime::ports::SyncPort;
use crate::runtime::shutdown::{Callbacks, Shutdown};

pub use crate::runtime::ports::SyncSpec;

/// The field manager of Operon's server-side applies.
pub const FIELD_MANAGER: &str = "operon";

/// Parent key: namespace ("" for cluster-wide) and name.
type Key = (String, String);

/// Runs the controller of one sync registration, served through `port`, until aborted.
/// Everything that fails is retried and reported.
pub async fn serve(
    env: Arc<Context>,
    callbacks: Arc<Callbacks>,
    spec: SyncSpec,
    port: Arc<dyn SyncPort>,
) {
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
    let syncer = Arc::new(syncer::Syncer {
        children: children::Children {
            env: Arc::clone(&env),
            types,
            kinds: children,
        },
        writer: writes::ParentWriter {
            env: Arc::clone(&env),
            parent: parent.clone(),
            finalizer,
        },
        parents: state::Parents::new(parent, parents),
        env,
        spec,
        port,
        shutdown,
    });
    work::run(tx, rx, move |key| {
        let syncer = Arc::clone(&syncer);
        async move { syncer.sync_one(&key).await }
    })
    .await;
    tasks.shutdown().await;
}
