//! What every controller of one engine generation shares (the client, metrics, read model,
//! per-object locks and settings), and the served resources with their bound handlers.
//!
//! A leaf of the runtime: it imports no controller, so every controller can import it.

use std::sync::Arc;
use std::time::Duration;

use crate::core::model::Handler;
use crate::core::persistence::diff::FieldPath;
use crate::core::persistence::{DiffBaseStorage, ProgressStorage};
use crate::runtime::discovery::Served;
use crate::runtime::leadership::Active;
use crate::runtime::locks::ParentLocks;
use crate::runtime::metrics::Metrics;
use crate::runtime::ports::{HandlerPort, ResolvedResource};
use crate::runtime::readmodel::ReadModel;
use crate::runtime::sharding::Shard;

/// Settings of change handling.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where the diff-base lives.
    pub diffbase: DiffBaseStorage,
    /// Where progress records live.
    pub progress: ProgressStorage,
    /// Our finalizer.
    pub finalizer: String,
    /// Backoff for arbitrary errors without a handler backoff.
    pub default_backoff: Duration,
    /// Deadline of one call without a handler call timeout.
    pub call_timeout: Duration,
    /// How often a write that got no answer is sent again (see `calls::write`): `None`, until it
    /// is answered (the core); a number in tests whose API server is never there.
    pub unanswered_writes: Option<u32>,
}

/// The one runtime context: change handling, the sync controllers and the tasks all take it.
pub(crate) struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The read model (the dashboard).
    pub readmodel: Arc<ReadModel>,
    /// Per-object locks: a cycle, a sync and a task on one object never overlap.
    pub locks: Arc<ParentLocks>,
    /// Settings of change handling.
    pub settings: Settings,
    /// Namespaces served; empty means all (sync and tasks; change handling also takes patterns).
    pub namespaces: Vec<String>,
    /// The annotation prefix (finalizers of syncs and tasks are under it).
    pub prefix: String,
    /// The core's URL as applications reach it, for the shutdown hook's callbacks.
    pub callback_base: String,
    /// How long finished tasks are kept when their registration does not say.
    pub task_retention: Duration,
    /// Whether this replica may handle now (leader election, Kopf's peering): every controller
    /// waits on it before it starts work.
    pub active: Active,
    /// Sharding: this shard (`None`: every object is this core's).
    pub shard: Option<Arc<Shard>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("namespaces", &self.namespaces)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The scopes in which a resource is watched: one per served namespace when the resource is
    /// namespaced and namespaces are named, else one cluster-wide scope.
    pub(crate) fn scopes(&self, namespaced: bool) -> Vec<Option<String>> {
        if namespaced && !self.namespaces.is_empty() {
            self.namespaces.iter().cloned().map(Some).collect()
        } else {
            vec![None]
        }
    }
}

impl Context {
    /// A context for unit tests: Kopf's default storages and finalizer, a client that reaches
    /// nothing (127.0.0.1:9, so writes fail fast), fresh metrics and read model.
    #[cfg(test)]
    pub(crate) fn for_tests() -> std::sync::Arc<Context> {
        use crate::core::persistence::KeyConvention;
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a valid URL"));
        let convention = KeyConvention::new("kopf.zalando.org", true).expect("a valid prefix");
        std::sync::Arc::new(Context {
            client: kube::Client::try_from(config).expect("a client"),
            settings: Settings {
                diffbase: DiffBaseStorage::new(convention.clone(), "last-handled-configuration"),
                progress: ProgressStorage::new(convention),
                finalizer: "kopf.zalando.org/KopfFinalizerMarker".into(),
                default_backoff: Duration::from_secs(60),
                call_timeout: Duration::from_secs(60),
                unanswered_writes: Some(0),
            },
            metrics: Arc::default(),
            readmodel: Arc::default(),
            locks: Default::default(),
            namespaces: Vec::new(),
            prefix: "kopf.zalando.org".into(),
            callback_base: String::new(),
            task_retention: Duration::from_secs(60),
            active: Active::always(),
            shard: None,
        })
    }
}

/// A handler bound to the service that runs it.
#[derive(Clone)]
pub(crate) struct Bound {
    /// The handler.
    pub handler: Handler,
    /// Its service.
    pub service: Arc<dyn HandlerPort>,
}

impl AsRef<Handler> for Bound {
    fn as_ref(&self) -> &Handler {
        &self.handler
    }
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("handler", &self.handler.id)
            .field("service", &self.service.name())
            .finish()
    }
}

/// A served resource and its handlers.
#[derive(Debug)]
pub(crate) struct ResourceCtx {
    /// The resource.
    pub served: Served,
    /// Its handlers, in registration order (index handlers excepted).
    pub handlers: Vec<Bound>,
    /// Its index handlers (`@kopf.index`): fed every watch event by `runtime::indexing`.
    pub indexers: Vec<Bound>,
    /// The fields of field-filtered handlers (kept in the essence).
    pub extra_fields: Vec<FieldPath>,
}

impl ResourceCtx {
    /// The resource as sent to handler services.
    pub(crate) fn resolved(&self) -> ResolvedResource {
        let r = &self.served.resource;
        ResolvedResource {
            group: r.group.clone(),
            version: r.version.clone(),
            plural: r.plural.clone(),
            kind: r.kind.clone(),
            namespaced: self.served.namespaced,
        }
    }
}
