//! Wiring: describe the handler services, resolve their resources, watch them, feed the queue,
//! serve HTTP, and stop cleanly on SIGTERM.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::watcher;

use crate::core::backoff::Backoff;
use crate::core::model::HandlerKind;
use crate::core::namespaces::Namespaces;
use crate::core::persistence::{DiffBaseStorage, KeyConvention, ProgressStorage};
use crate::core::selectors::Selector;
use crate::runtime::context::{Bound, Context, ResourceCtx, Settings};
use crate::runtime::discovery;
use crate::runtime::grpc::GrpcService;
use crate::runtime::kit;
use crate::runtime::metrics::Metrics;
use crate::runtime::ports::{
    HandlerPort, Manifest, Registration, SyncPort, SyncSpec, TaskPort, TaskSpec, WideRegistration,
};
use crate::runtime::processing::Handling;
use crate::runtime::queue::{Key, Observed, Queue, Seen};
use crate::runtime::readmodel::ReadModel;
use crate::runtime::selecting;
use crate::runtime::serving::Shared;
use crate::runtime::sync;
use crate::runtime::watching::{Subscription, Watches};

/// The core's configuration (`operon run`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Handler service addresses.
    pub handlers: Vec<String>,
    /// Namespaces to serve, by name or Kopf's pattern; empty (and no regexes) means all.
    pub namespaces: Vec<String>,
    /// Namespaces to serve whose whole name matches one of these regular expressions.
    pub namespace_regexes: Vec<String>,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The annotation prefix (Kopf's `kopf.zalando.org`).
    pub prefix: String,
    /// Where progress records are kept (`--progress-storage`).
    pub progress: ProgressStorage,
    /// Where the diff-base is kept (`--diffbase-storage`).
    pub diffbase: DiffBaseStorage,
    /// The finalizer name.
    pub finalizer: String,
    /// Cycles running at once, at most.
    pub workers: usize,
    /// Backoff for arbitrary errors.
    pub default_backoff: Duration,
    /// Deadline of one handler call.
    pub call_timeout: Duration,
    /// How long to wait for our own write to come back through the watch.
    pub consistency_timeout: Duration,
    /// Restart a watch that has been silent this long.
    pub watch_silence_timeout: Duration,
    /// How long in-flight cycles may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// The dashboard's options (token, Jaeger UI).
    pub dashboard: operon_dashboard::Options,
    /// TLS towards `https://` handler services (CA, client identity); `None`: plaintext only.
    pub handler_tls: Option<crate::runtime::grpc::ClientTls>,
    /// The core's URL as applications reach it, for shutdown-hook callbacks; `None`:
    /// `http://<http>`.
    pub callback_url: Option<String>,
    /// How long finished tasks are kept when their registration does not say
    /// (`--task-retention`).
    pub task_retention: Duration,
    /// Admission webhooks (`--admission-listen` & co.); `None`: not served.
    pub admission: Option<crate::runtime::admission::Config>,
    /// How often the API resources are discovered again when a handler's selector names no
    /// single resource (`--rescan-interval`).
    pub rescan_interval: Duration,
    /// The credentials come from the handler services' `Login` (`--login`), not the kubeconfig.
    pub login: bool,
}

/// A failure that stops the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes configuration was found or it is unusable.
    #[error("cannot connect to Kubernetes")]
    Kube(#[source] kube::Error),
    /// The Kubernetes configuration could not be loaded.
    #[error("cannot load the Kubernetes configuration")]
    KubeConfig(#[source] kube::config::InferConfigError),
    /// A handler address is invalid.
    #[error(transparent)]
    Dispatch(#[from] crate::runtime::ports::Error),
    /// A service's manifest breaks the contract.
    #[error("the manifest of {service} is invalid: {source}")]
    Manifest {
        /// The service.
        service: String,
        /// The problem.
        #[source]
        source: Arc<crate::runtime::ports::ContractError>,
    },
    /// Two services define the same handler id for one resource.
    #[error("handler id {id:?} for {resource} is defined by both {first} and {second}")]
    Conflict {
        /// The id.
        id: String,
        /// The resource.
        resource: String,
        /// One service.
        first: String,
        /// The other.
        second: String,
    },
    /// A service's sync registrations break the contract.
    #[error("the sync registrations of {service} are invalid: {source}")]
    Sync {
        /// The service.
        service: String,
        /// The problem.
        #[source]
        source: Arc<crate::runtime::ports::SyncRegistrationError>,
    },
    /// Two services declare a sync registration of the same id.
    #[error("sync registration {id:?} is defined by both {first} and {second}")]
    SyncConflict {
        /// The id.
        id: String,
        /// One service.
        first: String,
        /// The other.
        second: String,
    },
    /// A service's task registrations break the contract.
    #[error("the task registrations of {service} are invalid: {source}")]
    Tasks {
        /// The service.
        service: String,
        /// The problem.
        #[source]
        source: Arc<crate::runtime::ports::TaskRegistrationError>,
    },
    /// Two services declare task registrations for the same task resource.
    #[error(
        "the task resource {resource} is registered by both {first} (task {first_id:?}) and {second} (task {second_id:?})"
    )]
    TaskConflict {
        /// The task resource.
        resource: String,
        /// One service.
        first: String,
        /// Its registration.
        first_id: String,
        /// The other service.
        second: String,
        /// Its registration.
        second_id: String,
    },
    /// Namespace patterns with sync or task registrations, which watch namespaces by name.
    #[error(
        "namespace patterns ({0}) are served for handlers only: sync and task registrations need namespaces by name (or -A)"
    )]
    NamespacePatterns(String),
    /// The credentials from the handler services' login handlers are unusable.
    #[error(transparent)]
    Login(#[from] crate::runtime::login::Error),
    /// A `--namespace-regex` does not compile.
    #[error(transparent)]
    NamespaceRegex(#[from] crate::core::namespaces::BadRegex),
    /// The annotation prefix is invalid.
    #[error("invalid --prefix: {0}")]
    Prefix(String),
    /// The HTTP listener failed.
    #[error(transparent)]
    Http(#[from] crate::http::Error),
    /// The admission webhooks cannot be served.
    #[error(transparent)]
    Admission(#[from] crate::runtime::admission::Error),
}

async fn describe_until_answered(service: &dyn HandlerPort) -> Manifest {
    kit::until_ok(
        Backoff::SERVICE,
        "The handler service does not answer Describe yet.",
        service.name(),
        || service.describe(),
    )
    .await
}

/// The resources that the handler services at `urls` use — served by change handlers, sync
/// parents and children, tasks and their parents — each with what the core does with it,
/// resolved through discovery as [`run`] resolves them (for `operon rbac --handler`). Unlike
/// [`run`], it does not wait: a service that does not answer or a resource that is not found is
/// an error.
///
/// # Errors
/// Configuration, an unanswered `Describe`, an invalid manifest, a resource not found.
pub async fn served_by(
    urls: &[String],
    tls: Option<&crate::runtime::grpc::ClientTls>,
) -> Result<Vec<(discovery::Served, crate::rbac::Access)>, ServedByError> {
    use crate::rbac::Access;
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| ServedByError::Engine(Error::KubeConfig(e)))?;
    let client = kube::Client::try_from(crate::runtime::kit::identified(kube_config))
        .map_err(|e| ServedByError::Engine(Error::Kube(e)))?;
    let mut selectors = std::collections::BTreeSet::new();
    let mut services: Vec<Arc<dyn HandlerPort>> = Vec::new();
    let mut wide = Vec::new();
    for url in urls {
        let service = GrpcService::with_tls(url, tls).map_err(Error::from)?;
        let manifest = service.describe().await.map_err(Error::from)?;
        let regs = manifest.handlers.map_err(|source| Error::Manifest {
            service: url.clone(),
            source,
        })?;
        wide.extend(regs.wide.iter().cloned().map(|r| (r, services.len())));
        services.push(Arc::new(service));
        selectors.extend(
            regs.handlers
                .into_iter()
                .map(|r| (r.selector, Access::Served)),
        );
        let syncs = manifest.syncs.map_err(|source| Error::Sync {
            service: url.clone(),
            source,
        })?;
        for spec in syncs {
            selectors.insert((spec.parent, Access::Served));
            selectors.extend(spec.children.into_iter().map(|(c, _)| (c, Access::Child)));
        }
        let tasks = manifest.tasks.map_err(|source| Error::Tasks {
            service: url.clone(),
            source,
        })?;
        for spec in tasks {
            selectors.insert((spec.task, Access::Task));
            selectors.insert((spec.parent, Access::TaskParent));
        }
    }
    let mut served = Vec::new();
    for (selector, access) in &selectors {
        served.push((discovery::resolve(&client, selector).await?, *access));
    }
    // What the wide selectors (EVERYTHING, categories, callables) match now; resources that
    // appear later need the rules to be generated again.
    if !wide.is_empty() {
        for (s, _) in selecting::matches(&client, &services, &wide).await?.0 {
            if !served.iter().any(|(t, _)| same_resource(t, &s)) {
                served.push((s, Access::Served));
            }
        }
    }
    Ok(served)
}

/// Why [`served_by`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ServedByError {
    /// As the engine fails.
    #[error(transparent)]
    Engine(#[from] Error),
    /// Discovery failed or found nothing.
    #[error(transparent)]
    Discovery(#[from] discovery::Error),
}

/// Runs the core until SIGTERM/SIGINT.
///
/// A handler service that starts describing other handlers (it was redeployed) is noticed within
/// 15 seconds, and the core reloads: it stops its watches after the cycles in flight, describes
/// the services again and serves the new handlers — without exiting.
///
/// # Errors
/// Start-up failures (configuration, manifests, listener).
pub async fn run(config: Config) -> Result<(), Error> {
    let (client, renewal) = if config.login {
        let (client, renewal) =
            crate::runtime::login::client(&config.handlers, config.handler_tls.as_ref()).await?;
        (client, Some(renewal))
    } else {
        let kube_config = kube::Config::infer().await.map_err(Error::KubeConfig)?;
        (
            kube::Client::try_from(crate::runtime::kit::identified(kube_config))
                .map_err(Error::Kube)?,
            None,
        )
    };
    KeyConvention::new(config.prefix.clone(), true).map_err(|e| Error::Prefix(e.to_string()))?;
    let settings = Settings {
        diffbase: config.diffbase.clone(),
        progress: config.progress.clone(),
        finalizer: config.finalizer.clone(),
        default_backoff: config.default_backoff,
        call_timeout: config.call_timeout,
    };
    let metrics = Arc::new(Metrics::default());
    let readmodel = Arc::new(ReadModel::default());
    let shared = Shared::new(Arc::clone(&readmodel), Arc::clone(&metrics));

    let listener = crate::http::bind(config.http).await?;
    let http = tokio::spawn(crate::http::serve(
        listener,
        Arc::clone(&shared),
        config.dashboard.clone(),
    ));
    let admission = match config.admission.clone() {
        Some(admission) => Some(
            crate::runtime::admission::start(
                admission,
                crate::runtime::admission::EventSink {
                    client: client.clone(),
                    metrics: Arc::clone(&metrics),
                    readmodel: Arc::clone(&readmodel),
                },
                &config.handlers,
                config.handler_tls.as_ref(),
            )
            .await?,
        ),
        None => None,
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let result = loop {
        let generation = Generation {
            config: &config,
            client: &client,
            settings: &settings,
            metrics: &metrics,
            readmodel: &readmodel,
            shared: &shared,
        };
        match generation.serve(stop.as_mut()).await {
            Ok(Ending::Stop) => break Ok(()),
            Ok(Ending::Reload(service)) => {
                tracing::warn!(service = %service, "A handler service changed its manifest; reloading its handlers.");
            }
            Err(err) => break Err(err),
        }
    };
    if let Some(admission) = admission {
        admission.stop().await;
    }
    http.abort();
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    tracing::info!("Stopped.");
    result
}

/// How one generation of the engine (one set of manifests) ended.
enum Ending {
    /// SIGTERM/SIGINT.
    Stop,
    /// A service now describes other handlers: start over with the new manifests.
    Reload(String),
}

/// Everything a generation shares with the next.
struct Generation<'a> {
    config: &'a Config,
    client: &'a kube::Client,
    settings: &'a Settings,
    metrics: &'a Arc<Metrics>,
    readmodel: &'a Arc<ReadModel>,
    shared: &'a Arc<Shared>,
}

impl Generation<'_> {
    /// Describes the services, serves their resources until a stop or a manifest change.
    async fn serve(
        &self,
        mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<Ending, Error> {
        let Generation {
            config,
            client,
            settings,
            metrics,
            readmodel,
            shared,
        } = *self;
        let client = client.clone();
        let settings = settings.clone();
        let readmodel = Arc::clone(readmodel);
        shared.readiness.reset();

        // Describe every service (retrying until it answers) and bind its handlers.
        let mut services: Vec<Arc<dyn HandlerPort>> = Vec::new();
        let mut sync_ports: Vec<Arc<dyn SyncPort>> = Vec::new();
        let mut task_ports: Vec<Arc<dyn TaskPort>> = Vec::new();
        for url in &config.handlers {
            let service = GrpcService::with_tls(url, config.handler_tls.as_ref())?;
            sync_ports.push(Arc::new(service.sync_port()));
            task_ports.push(Arc::new(service.task_port()));
            services.push(Arc::new(service));
        }
        let mut manifests = Vec::new();
        for service in &services {
            // A service that is down is waited for, but a stop request ends the wait at once.
            let manifest = tokio::select! {
                manifest = describe_until_answered(service.as_ref()) => manifest,
                () = stop.as_mut() => {
                    tracing::info!("Stop requested while waiting for the handler services.");
                    return Ok(Ending::Stop);
                }
            };
            tracing::info!(service = service.name(), name = %manifest.service_name, handlers = manifest.declared, "Handler service described.");
            manifests.push(manifest);
        }
        let mut by_selector: BTreeMap<Selector, Vec<(Registration, usize)>> = BTreeMap::new();
        let mut wide: Vec<(WideRegistration, usize)> = Vec::new();
        let mut syncs = Vec::new();
        let mut tasks = Vec::new();
        for (i, manifest) in manifests.iter().enumerate() {
            let specs = manifest.tasks.clone().map_err(|source| Error::Tasks {
                service: services[i].name().to_owned(),
                source,
            })?;
            tasks.extend(specs.into_iter().map(|s| (s, i)));
            let specs = manifest.syncs.clone().map_err(|source| Error::Sync {
                service: services[i].name().to_owned(),
                source,
            })?;
            syncs.extend(specs.into_iter().map(|s| (s, i)));
            let regs = manifest
                .handlers
                .clone()
                .map_err(|source| Error::Manifest {
                    service: services[i].name().to_owned(),
                    source,
                })?;
            for (id, kind) in &regs.unsupported {
                tracing::warn!(service = services[i].name(), handler = %id, kind, "This core does not run handlers of this kind yet; skipping it.");
            }
            if config.admission.is_none() && manifest.declares_admission() {
                tracing::warn!(
                    service = services[i].name(),
                    "The service has admission handlers (validate/mutate), which are served only with --admission-listen."
                );
            }
            wide.extend(regs.wide.into_iter().map(|r| (r, i)));
            for reg in regs.handlers {
                let list = by_selector.entry(reg.selector.clone()).or_default();
                if let Some((other, j)) = list
                    .iter()
                    .find(|(r, j)| r.handler.id == reg.handler.id && *j != i)
                {
                    return Err(Error::Conflict {
                        id: other.handler.id.clone(),
                        resource: reg.selector.to_string(),
                        first: services[*j].name().to_owned(),
                        second: services[i].name().to_owned(),
                    });
                }
                list.push((reg, i));
            }
        }

        let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
        unique_across_services(&syncs, &tasks, &names)?;

        // Resolve every selector. Selectors that name one resource (`'namespace'` and
        // `('v1', 'namespace')`) are served as one resource with one watch, as Kopf merges them;
        // the same handler reached through both is served once.
        let mut merged: Vec<(discovery::Served, Vec<(crate::core::model::Handler, usize)>)> =
            Vec::new();
        for (selector, regs) in by_selector {
            let served = tokio::select! {
                served = kit::resolve_until_found(&client, &selector) => served,
                () = stop.as_mut() => {
                    tracing::info!("Stop requested while waiting for the resources.");
                    return Ok(Ending::Stop);
                }
            };
            let slot = match merged.iter().position(|(s, _)| same_resource(s, &served)) {
                Some(slot) => slot,
                None => {
                    merged.push((served, Vec::new()));
                    merged.len() - 1
                }
            };
            let (served, list) = &mut merged[slot];
            let regs = regs.into_iter().map(|(r, i)| (r.handler, i));
            merge_handlers(served, list, regs, &services, &selector.to_string())?;
        }
        let named_keys: std::collections::BTreeSet<selecting::ResourceKey> =
            merged.iter().map(|(s, _)| selecting::key_of(s)).collect();
        // Selectors that name no single resource (EVERYTHING, categories, callables): every
        // resource that discovery finds matching, merged with the named ones.
        let namespaces = Namespaces::with_regexes(&config.namespaces, &config.namespace_regexes)?;
        if matches!(namespaces, Namespaces::Patterns(..))
            && (!syncs.is_empty() || !tasks.is_empty())
        {
            return Err(Error::NamespacePatterns(
                [config.namespaces.clone(), config.namespace_regexes.clone()]
                    .concat()
                    .join(" "),
            ));
        }
        let mut tracker = None;
        if !wide.is_empty() {
            let (found, _) = tokio::select! {
                found = matches_until_scanned(&client, &services, &wide) => found,
                () = stop.as_mut() => return Ok(Ending::Stop),
            };
            tracker = Some(selecting::Tracker::new(named_keys, &found));
            for (served, regs) in found {
                let slot = match merged.iter().position(|(s, _)| same_resource(s, &served)) {
                    Some(slot) => slot,
                    None => {
                        merged.push((served, Vec::new()));
                        merged.len() - 1
                    }
                };
                let (served, list) = &mut merged[slot];
                let regs = regs.into_iter().map(|(r, i)| (r.handler, i));
                merge_handlers(served, list, regs, &services, "a wide selector")?;
            }
        }
        let mut resources = Vec::new();
        for (served, regs) in merged {
            tracing::info!(resource = %served.name(), namespaced = served.namespaced, status_subresource = served.has_status, "Serving the resource.");
            resources.push(Arc::new(resource_ctx(served, &regs, &services)));
        }

        shared.set_about(|about| {
            about.resources = resources.iter().map(|r| r.served.name()).collect();
            about.services = services
                .iter()
                .zip(&manifests)
                .map(|(s, m)| operon_dashboard::ServiceView {
                    name: s.name().to_owned(),
                    answering: true,
                    handlers: m.declared,
                })
                .collect();
        });

        let locks = Arc::new(crate::runtime::locks::ParentLocks::default());
        let scopes_of = |res: &ResourceCtx| -> Vec<Option<String>> {
            match &namespaces {
                Namespaces::Named(names) if res.served.namespaced => {
                    names.iter().cloned().map(Some).collect()
                }
                _ => vec![None],
            }
        };
        let namespaces = Arc::new(namespaces.clone());
        let indexed_scopes = resources
            .iter()
            .filter(|r| !r.indexers.is_empty())
            .map(|r| scopes_of(r).len())
            .sum();
        if indexed_scopes > 0 {
            tracing::info!(
                scopes = indexed_scopes,
                "Handlers wait until the indexes are fed their initial listings."
            );
        }
        let gate = Arc::new(crate::runtime::indexing::Gate::new(indexed_scopes));
        let ctx = Arc::new(Context {
            client: client.clone(),
            metrics: Arc::clone(metrics),
            readmodel,
            locks: Arc::clone(&locks),
            settings,
            namespaces: config.namespaces.clone(),
            prefix: config.prefix.clone(),
            callback_base: config
                .callback_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.http)),
            tls: config.handler_tls.clone(),
            task_retention: config.task_retention,
        });
        let handling = Arc::new(Handling {
            ctx: Arc::clone(&ctx),
            timers: Default::default(),
            daemons: Default::default(),
            indexing: Arc::clone(&gate),
        });
        let queue = Queue::new(
            Arc::clone(&handling),
            resources.clone(),
            config.workers,
            config.consistency_timeout,
        );

        // The resources of the syncs (parents, children) and tasks (tasks, parents), resolved
        // before anything is watched, as the change handlers' are.
        let (sync_resources, task_resources) = tokio::select! {
            resolved = resolve_controllers(&client, &syncs, &tasks) => resolved,
            () = stop.as_mut() => {
                tracing::info!("Stop requested while waiting for the resources.");
                return Ok(Ending::Stop);
            }
        };
        let shared_watches = Watches::new(
            client.clone(),
            config.watch_silence_timeout,
            Arc::clone(&namespaces),
            Arc::clone(&shared.readiness),
        );
        let mut watches = Vec::new();
        let mut watches_of: BTreeMap<selecting::ResourceKey, Vec<tokio::task::AbortHandle>> =
            BTreeMap::new();
        let spawn_watches = |index: usize, res: &Arc<ResourceCtx>, initial: bool| {
            let mut handles = Vec::new();
            for ns in scopes_of(res) {
                let subscription = shared_watches.subscribe(&res.served, ns.as_deref());
                handles.push(tokio::spawn(watch(
                    Scope {
                        queue: Arc::clone(&queue),
                        res: Arc::clone(res),
                        gate: Arc::clone(&gate),
                        index,
                        namespace: ns,
                        call_timeout: config.call_timeout,
                        initial,
                    },
                    subscription,
                )));
            }
            handles
        };
        for (index, res) in resources.iter().enumerate() {
            let handles = spawn_watches(index, res, true);
            watches_of
                .entry(selecting::key_of(&res.served))
                .or_default()
                .extend(handles.iter().map(tokio::task::JoinHandle::abort_handle));
            watches.extend(handles);
        }
        // The sync and task controllers subscribe before the watches start: a resource that they
        // share with change handling (or with each other) is listed and watched once.
        let subscribe = |served: &discovery::Served| -> Vec<Subscription> {
            ctx.scopes(served.namespaced)
                .iter()
                .map(|ns| shared_watches.subscribe(served, ns.as_deref()))
                .collect()
        };
        for ((spec, i), (parent, children)) in syncs.into_iter().zip(sync_resources) {
            let watched = sync::Watched {
                parents: subscribe(&parent),
                parent,
                children: children
                    .into_iter()
                    .map(|child| {
                        let subscriptions = subscribe(&child);
                        (child, subscriptions)
                    })
                    .collect(),
            };
            let (ctx, callbacks) = (Arc::clone(&ctx), Arc::clone(&shared.callbacks));
            let port = Arc::clone(&sync_ports[i]);
            watches.push(tokio::spawn(sync::serve(
                ctx, callbacks, spec, port, watched,
            )));
        }
        let tasks = tasks
            .into_iter()
            .zip(task_resources)
            .map(|((spec, i), (task, parent))| {
                let watched = crate::runtime::tasks::Watched {
                    tasks: subscribe(&task),
                    task,
                    parent,
                };
                (spec, Arc::clone(&task_ports[i]), watched)
            })
            .collect();
        watches.push(tokio::spawn(crate::runtime::tasks::serve(
            Arc::clone(&ctx),
            tasks,
        )));
        shared_watches.start();

        let outboxes: Vec<_> = services
            .iter()
            .map(|service| {
                tokio::spawn(crate::runtime::outbox::serve(
                    Arc::clone(service),
                    client.clone(),
                    Arc::clone(metrics),
                    Arc::clone(&ctx.readmodel),
                ))
            })
            .collect();
        let rescan = async {
            let Some(mut tracker) = tracker else {
                return std::future::pending::<String>().await;
            };
            loop {
                tokio::time::sleep(config.rescan_interval).await;
                let (found, scanned) = match selecting::matches(&client, &services, &wide).await {
                    Ok(found) => found,
                    Err(err) => {
                        tracing::warn!(error = %err, "Re-discovering the API resources failed; trying again later.");
                        continue;
                    }
                };
                let (serve, stop) = match tracker.rediscovered(found, &scanned) {
                    selecting::Rediscovery::Reload(why) => return why,
                    selecting::Rediscovery::Changes { serve, stop } => (serve, stop),
                };
                for key in stop {
                    tracing::info!(resource = %format!("{}.{}/{}", key.2, key.0, key.1), "A resource is no longer served: it is gone or no longer matches.");
                    for h in watches_of.remove(&key).unwrap_or_default() {
                        h.abort();
                    }
                    shared_watches.stop_resource(&key);
                }
                for (served, regs) in serve {
                    // A resource that appeared (a CRD installed): served from now on, with
                    // watches of its own; the others are not touched.
                    tracing::info!(resource = %served.name(), namespaced = served.namespaced, "Serving a newly discovered resource.");
                    let key = selecting::key_of(&served);
                    let mut list = Vec::new();
                    let regs = regs.into_iter().map(|(r, i)| (r.handler, i));
                    if let Err(err) =
                        merge_handlers(&served, &mut list, regs, &services, "a wide selector")
                    {
                        tracing::error!(error = %err, "Cannot serve a newly discovered resource.");
                        continue;
                    }
                    let res = Arc::new(resource_ctx(served, &list, &services));
                    let index = queue.add_resource(Arc::clone(&res));
                    let handles = spawn_watches(index, &res, false);
                    watches_of
                        .entry(key)
                        .or_default()
                        .extend(handles.iter().map(tokio::task::JoinHandle::abort_handle));
                }
            }
        };
        let manifest_watch = tokio::spawn(watch_manifests(
            Arc::clone(shared),
            services.clone(),
            manifests,
        ));
        let ending = tokio::select! {
            () = stop.as_mut() => {
                tracing::info!("Stop requested; finishing the cycles in flight.");
                Ending::Stop
            }
            changed = manifest_watch => match changed {
                Ok(service) => Ending::Reload(service),
                Err(_) => Ending::Stop,
            },
            changed = rescan => {
                tracing::warn!(resource = %changed, "The resources that wide selectors match changed; reloading.");
                Ending::Reload(changed)
            }
        };
        for w in &watches {
            w.abort();
        }
        for handles in watches_of.values() {
            for h in handles {
                h.abort();
            }
        }
        for o in &outboxes {
            o.abort();
        }
        shared_watches.stop_all();
        queue.shutdown(config.shutdown_grace).await;
        handling.timers.stop_all();
        handling.daemons.stop_all(config.shutdown_grace).await;
        Ok(ending)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Re-describes the services now and then; returns the name of one whose manifest changed.
async fn watch_manifests(
    shared: Arc<Shared>,
    services: Vec<Arc<dyn HandlerPort>>,
    manifests: Vec<Manifest>,
) -> String {
    loop {
        tokio::time::sleep(Duration::from_secs(15)).await;
        for (i, (service, known)) in services.iter().zip(&manifests).enumerate() {
            let answer = service.describe().await;
            shared.set_about(|about| {
                if let Some(view) = about.services.get_mut(i) {
                    view.answering = answer.is_ok();
                }
            });
            if let Ok(current) = answer
                && &current != known
            {
                tracing::warn!(
                    service = service.name(),
                    "The handler service now describes different handlers."
                );
                return service.name().to_owned();
            }
        }
    }
}

/// A resource with the handlers bound to their services.
fn resource_ctx(
    served: discovery::Served,
    regs: &[(crate::core::model::Handler, usize)],
    services: &[Arc<dyn HandlerPort>],
) -> ResourceCtx {
    let (indexers, handlers): (Vec<Bound>, Vec<Bound>) = regs
        .iter()
        .map(|(handler, i)| Bound {
            handler: handler.clone(),
            service: Arc::clone(&services[*i]),
        })
        .partition(|b| b.handler.kind == HandlerKind::Index);
    let mut extra_fields: Vec<Vec<String>> = handlers
        .iter()
        .filter_map(|b| b.handler.filters.field.clone())
        .collect();
    extra_fields.sort();
    extra_fields.dedup();
    ResourceCtx {
        served,
        handlers,
        indexers,
        extra_fields,
    }
}

/// Adds handlers (with their service's index) to a resource's list: a handler id of two services
/// is a conflict; the same id and kind reached through two selectors is served once.
fn merge_handlers(
    served: &discovery::Served,
    list: &mut Vec<(crate::core::model::Handler, usize)>,
    regs: impl IntoIterator<Item = (crate::core::model::Handler, usize)>,
    services: &[Arc<dyn HandlerPort>],
    selector: &str,
) -> Result<(), Error> {
    for (handler, i) in regs {
        match list.iter().find(|(h, _)| h.id == handler.id) {
            Some((_, j)) if *j != i => {
                return Err(Error::Conflict {
                    id: handler.id.clone(),
                    resource: served.name(),
                    first: services[*j].name().to_owned(),
                    second: services[i].name().to_owned(),
                });
            }
            Some((h, _)) if h.kind == handler.kind => {
                tracing::debug!(handler = %handler.id, resource = %served.name(), selector = %selector, "The handler is registered for this resource under another selector too; serving it once.");
            }
            _ => list.push((handler, i)),
        }
    }
    Ok(())
}

/// A sync id or a task resource is declared by one service only: two services with the same sync
/// id (its finalizer and status are keyed by the id) or the same task resource (one controller
/// per task object) are refused at start. `names` are the services' names by index.
fn unique_across_services(
    syncs: &[(SyncSpec, usize)],
    tasks: &[(TaskSpec, usize)],
    names: &[&str],
) -> Result<(), Error> {
    for (k, (spec, i)) in syncs.iter().enumerate() {
        if let Some((_, j)) = syncs[..k].iter().find(|(o, j)| o.id == spec.id && j != i) {
            return Err(Error::SyncConflict {
                id: spec.id.clone(),
                first: names[*j].to_owned(),
                second: names[*i].to_owned(),
            });
        }
    }
    for (k, (spec, i)) in tasks.iter().enumerate() {
        if let Some((other, j)) = tasks[..k]
            .iter()
            .find(|(o, j)| o.task == spec.task && j != i)
        {
            return Err(Error::TaskConflict {
                resource: spec.task.to_string(),
                first: names[*j].to_owned(),
                first_id: other.id.clone(),
                second: names[*i].to_owned(),
                second_id: spec.id.clone(),
            });
        }
    }
    Ok(())
}

async fn matches_until_scanned(
    client: &kube::Client,
    services: &[Arc<dyn HandlerPort>],
    wide: &[(WideRegistration, usize)],
) -> (
    selecting::Matches,
    std::collections::BTreeSet<selecting::ResourceKey>,
) {
    kit::until_ok(
        Backoff::DISCOVERY,
        "Cannot discover the API resources yet.",
        "wide selectors",
        || selecting::matches(client, services, wide),
    )
    .await
}

/// The resources of sync registrations (parent, children) and task registrations (task, parent),
/// each resolved with backoff until it is served.
async fn resolve_controllers(
    client: &kube::Client,
    syncs: &[(SyncSpec, usize)],
    tasks: &[(TaskSpec, usize)],
) -> (
    Vec<(discovery::Served, Vec<discovery::Served>)>,
    Vec<(discovery::Served, discovery::Served)>,
) {
    let mut sync_resources = Vec::new();
    for (spec, _) in syncs {
        let parent = kit::resolve_until_found(client, &spec.parent).await;
        let mut children = Vec::new();
        for (selector, _) in &spec.children {
            children.push(kit::resolve_until_found(client, selector).await);
        }
        sync_resources.push((parent, children));
    }
    let mut task_resources = Vec::new();
    for (spec, _) in tasks {
        task_resources.push((
            kit::resolve_until_found(client, &spec.task).await,
            kit::resolve_until_found(client, &spec.parent).await,
        ));
    }
    (sync_resources, task_resources)
}

/// Two selectors resolved to the same resource (group, version and plural).
fn same_resource(a: &discovery::Served, b: &discovery::Served) -> bool {
    (&a.resource.group, &a.resource.version, &a.resource.plural)
        == (&b.resource.group, &b.resource.version, &b.resource.plural)
}

fn key_of(index: usize, obj: &DynamicObject) -> Key {
    (
        index,
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Change handling's end of one shared watch: a resource in one namespace (or all).
struct Scope {
    queue: Arc<Queue>,
    res: Arc<ResourceCtx>,
    gate: Arc<crate::runtime::indexing::Gate>,
    index: usize,
    namespace: Option<String>,
    call_timeout: Duration,
    /// A watch of the start (counted for the index gate), not one added later.
    initial: bool,
}

impl Scope {
    /// Feeds the index handlers (if any), then queues the object for its cycle (if the resource
    /// has other handlers).
    async fn observe(&self, obj: &DynamicObject, seen: Seen) {
        use crate::runtime::indexing::{self, Event};
        if !self.res.indexers.is_empty() {
            let event = match seen {
                Seen::Listed => Event::Added,
                Seen::Applied => Event::Modified,
                Seen::Deleted => Event::Deleted,
            };
            match serde_json::to_value(obj) {
                Ok(body) => indexing::feed(&self.res, event, &body, self.call_timeout).await,
                Err(err) => tracing::error!(error = %err, "Cannot serialise a watched object."),
            }
        }
        if !self.res.handlers.is_empty() {
            observe(&self.queue, key_of(self.index, obj), obj, seen);
        }
    }
}

/// Takes the events of one shared watch into change handling: listings sweep the queue and feed
/// the indexes; every object goes to its queue slot.
async fn watch(scope: Scope, mut subscription: Subscription) {
    let Scope {
        index,
        ref namespace,
        ..
    } = scope;
    let mut counted = false;
    let mut indexed = crate::runtime::indexing::Listing::default();
    let mut listing: Option<HashSet<Key>> = None;
    while let Some(event) = subscription.next().await {
        match &*event {
            watcher::Event::Init => {
                listing = Some(HashSet::new());
                indexed.begin();
            }
            watcher::Event::InitApply(obj) => {
                let key = key_of(index, obj);
                indexed.add(&key.1, &key.2);
                if let Some(l) = listing.as_mut() {
                    l.insert(key);
                }
                scope.observe(obj, Seen::Listed).await;
            }
            watcher::Event::InitDone => {
                if let Some(listed) = listing.take() {
                    scope.queue.sweep(index, namespace.as_deref(), &listed);
                }
                if let Some(listed) = indexed.finish() {
                    crate::runtime::indexing::listed(
                        &scope.res,
                        namespace.as_deref(),
                        listed.iter().map(|(ns, n)| (ns.as_str(), n.as_str())),
                        scope.call_timeout,
                    )
                    .await;
                }
                if !counted {
                    counted = true;
                    subscription.listed();
                    if scope.initial && !scope.res.indexers.is_empty() {
                        scope.gate.listed();
                    }
                }
            }
            watcher::Event::Apply(obj) => scope.observe(obj, Seen::Applied).await,
            watcher::Event::Delete(obj) => scope.observe(obj, Seen::Deleted).await,
        }
    }
}

fn observe(queue: &Arc<Queue>, key: Key, obj: &DynamicObject, seen: Seen) {
    match serde_json::to_string(obj) {
        Ok(json) => queue.observe(
            key,
            Observed::new(json, obj.metadata.resource_version.clone()),
            seen,
        ),
        Err(err) => tracing::error!(error = %err, "Cannot serialise a watched object."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tasks::Mode;

    fn selector(name: &str) -> Selector {
        Selector {
            group: "example.com".into(),
            version: "v1".into(),
            name: name.into(),
        }
    }

    fn sync(id: &str) -> SyncSpec {
        SyncSpec {
            id: id.into(),
            parent: selector("things"),
            children: Vec::new(),
            resync: None,
            finalize: false,
            call_timeout: None,
            shutdown: None,
        }
    }

    fn task(id: &str, resource: &str) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            task: selector(resource),
            parent: selector("things"),
            parent_field: "spec.thing".into(),
            mode: Mode::Parallel,
            priority: 0,
            retention: None,
            timeout: None,
        }
    }

    #[test]
    fn two_services_cannot_declare_one_sync_id_or_task_resource() {
        let names = ["http://a", "http://b"];
        let fine = unique_across_services(
            &[(sync("s1"), 0), (sync("s2"), 1)],
            &[(task("t", "repairs"), 0), (task("t", "backups"), 1)],
            &names,
        );
        assert!(fine.is_ok());
        let err =
            unique_across_services(&[(sync("s"), 0), (sync("s"), 1)], &[], &names).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sync registration \"s\" is defined by both http://a and http://b"
        );
        let err = unique_across_services(
            &[],
            &[(task("fix", "repairs"), 0), (task("mend", "repairs"), 1)],
            &names,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the task resource example.com/v1/repairs is registered by both http://a (task \"fix\") and http://b (task \"mend\")"
        );
    }
}
