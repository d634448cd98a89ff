//! Wiring: describe the handler services, resolve their resources, watch them, feed the queue,
//! serve HTTP, and stop cleanly on SIGTERM.
//!
//! One *generation* serves one set of manifests: [`discover`] describes the services and resolves
//! what they name (the decisions about what they declare are in [`crate::core::registry`]), the
//! shared watches ([`crate::runtime::watching`]) feed change handling ([`intake`], the queue,
//! [`crate::runtime::processing`]), the sync controllers and the task controller. A service that
//! starts describing other handlers ends the generation and the next one starts.

mod discover;
mod error;
mod intake;
mod served_by;
mod sharded;
mod signals;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::core::namespaces::Namespaces;
use crate::core::persistence::{DiffBaseStorage, KeyConvention, ProgressStorage};
use crate::core::registry;
use crate::runtime::context::{Context, ResourceCtx, Settings};
use crate::runtime::discovery;
use crate::runtime::metrics::Metrics;
use crate::runtime::processing::Handling;
use crate::runtime::queue::Queue;
use crate::runtime::readmodel::ReadModel;
use crate::runtime::selecting;
use crate::runtime::serving::Shared;
use crate::runtime::sync;
use crate::runtime::watching::{Subscription, Watches};

use discover::{Resolved, Services};
pub(crate) use error::Error;
use intake::{Scope, watch};
pub(crate) use served_by::served_by;
use signals::until_stopped;

/// The core's configuration (`operon run`).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Leader election and Kopf's peering (`--leader-election`, `--peering`).
    pub coordination: crate::runtime::leadership::Config,
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

/// Runs the core until SIGTERM/SIGINT.
///
/// A handler service that starts describing other handlers (it was redeployed) is noticed within
/// 15 seconds, and the core reloads: it stops its watches after the cycles in flight, describes
/// the services again and serves the new handlers — without exiting.
///
/// # Errors
/// Start-up failures (configuration, manifests, listener).
pub(crate) async fn run(config: Config) -> Result<(), Error> {
    // Listened for from here on (and by the process since it started): a stop while the core
    // still waits for its credentials ends it cleanly too.
    let stop = crate::runtime::signals::stop_requested();
    tokio::pin!(stop);
    let connecting = async {
        if config.login {
            let (client, renewal) =
                crate::runtime::login::client(&config.handlers, config.handler_tls.as_ref())
                    .await?;
            Ok::<_, Error>((client, Some(renewal)))
        } else {
            let kube_config = kube::Config::infer().await.map_err(Error::KubeConfig)?;
            Ok((
                kube::Client::try_from(crate::runtime::kit::client_config(kube_config))
                    .map_err(Error::Kube)?,
                None,
            ))
        }
    };
    let Some(connected) = until_stopped(
        stop.as_mut(),
        connecting,
        "Stopped before the core had its credentials.",
    )
    .await
    else {
        return Ok(());
    };
    let (client, renewal) = connected?;
    KeyConvention::new(config.prefix.clone(), true).map_err(|e| Error::Prefix(e.to_string()))?;
    let settings = Settings {
        diffbase: config.diffbase.clone(),
        progress: config.progress.clone(),
        finalizer: config.finalizer.clone(),
        default_backoff: config.default_backoff,
        call_timeout: config.call_timeout,
        unanswered_writes: None,
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
    let leadership = crate::runtime::leadership::Leadership::start(
        &client,
        config.coordination.clone(),
        &metrics,
        {
            let shared = Arc::clone(&shared);
            move |role| shared.set_about(|about| about.role = role)
        },
    );
    let active = leadership.active();
    // Sharding: the ring's live members, followed for as long as the core runs.
    let ring = config
        .coordination
        .shards
        .as_ref()
        .map(|ring| crate::runtime::sharding::members::start(&client, ring, &metrics));
    let members = ring.as_ref().map(|(members, _)| members.clone());
    let mut after_pause = false;
    let result = loop {
        let generation = Generation {
            config: &config,
            client: &client,
            settings: &settings,
            metrics: &metrics,
            readmodel: &readmodel,
            shared: &shared,
            active: &active,
            members: members.as_ref(),
            after_pause,
        };
        after_pause = false;
        match generation.serve(stop.as_mut()).await {
            Ok(Ending::Stop) => break Ok(()),
            Ok(Ending::Reload(service)) => {
                tracing::warn!(service = %service, "A handler service changed its manifest; reloading its handlers.");
            }
            Ok(Ending::Paused) => {
                after_pause = true;
                tracing::info!(
                    "Handling stopped; the watches start again and stay warm until it may resume."
                );
            }
            Err(err) => break Err(err),
        }
    };
    // After the last cycle: the Lease and the peering record are given back.
    leadership.release().await;
    if let Some((_, follower)) = ring {
        follower.abort();
    }
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
    /// Handling must stop (Kopf's peering paused it): start over as a standby.
    Paused,
}

/// Everything a generation shares with the next.
struct Generation<'a> {
    config: &'a Config,
    client: &'a kube::Client,
    settings: &'a Settings,
    metrics: &'a Arc<Metrics>,
    readmodel: &'a Arc<ReadModel>,
    shared: &'a Arc<Shared>,
    active: &'a crate::runtime::leadership::Active,
    /// Sharding: the ring's live members.
    members: Option<&'a tokio::sync::watch::Receiver<Arc<crate::core::sharding::Ring>>>,
    /// The previous generation ended in a pause: its objects are not new to the operator (no
    /// resume handlers for them, as in Kopf).
    after_pause: bool,
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
            active,
            members,
            after_pause,
        } = *self;
        let client = client.clone();
        let settings = settings.clone();
        let readmodel = Arc::clone(readmodel);
        shared.readiness.reset();

        // Describe every service (retrying until it answers; a stop request ends the wait) and
        // put together what they declare.
        let services = Services::connect(&config.handlers, config.handler_tls.as_ref())?;
        let Some(manifests) = until_stopped(
            stop.as_mut(),
            discover::describe_all(&services.handlers),
            "Stop requested while waiting for the handler services.",
        )
        .await
        else {
            return Ok(Ending::Stop);
        };
        let names = services.names();
        let registry = registry::collect(&manifests, &names, config.admission.is_some())?;
        for (i, id, kind) in &registry.unsupported {
            tracing::warn!(service = names[*i], handler = %id, kind, "This core does not run handlers of this kind yet; skipping it.");
        }
        for i in &registry.admission_unserved {
            tracing::warn!(
                service = names[*i],
                "The service has admission handlers (validate/mutate), which are served only with --admission-listen."
            );
        }
        let namespaces = Namespaces::with_regexes(&config.namespaces, &config.namespace_regexes)?;
        if matches!(namespaces, Namespaces::Patterns(..))
            && (!registry.syncs.is_empty() || !registry.tasks.is_empty())
        {
            return Err(Error::NamespacePatterns(
                [config.namespaces.clone(), config.namespace_regexes.clone()]
                    .concat()
                    .join(" "),
            ));
        }

        // Resolve every resource, before anything is watched.
        let Some(resolved) = until_stopped(
            stop.as_mut(),
            discover::resolve(&client, &registry, &services),
            "Stop requested while waiting for the resources.",
        )
        .await
        else {
            return Ok(Ending::Stop);
        };
        let Resolved {
            resources,
            tracker,
            syncs: sync_resources,
            tasks: task_resources,
        } = resolved?;
        let registry::Registry {
            wide, syncs, tasks, ..
        } = registry;

        shared.set_about(|about| {
            about.resources = resources.iter().map(|r| r.served.name()).collect();
            about.services = services
                .handlers
                .iter()
                .zip(&manifests)
                .map(|(s, m)| crate::runtime::serving::service_view(s.name(), m))
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
        let shard = sharded::shard(
            config, members, &client, metrics, &locks, active, &resources,
        )?;
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
            task_retention: config.task_retention,
            active: active.clone(),
            shard: shard.clone(),
        });
        let handling = Arc::new(Handling {
            ctx: Arc::clone(&ctx),
            timers: Default::default(),
            daemons: Default::default(),
            indexing: Arc::clone(&gate),
        });
        if let Some(shard) = &shard {
            shard.set_stop_object(sharded::stopper(&handling));
        }
        let queue = Queue::new(
            Arc::clone(&handling),
            resources.clone(),
            config.workers,
            config.consistency_timeout,
            !after_pause,
        );

        let shared_watches = Watches::new(
            client.clone(),
            config.watch_silence_timeout,
            Arc::clone(&namespaces),
            Arc::clone(&shared.readiness),
            shard.clone(),
        );
        let mut watches = Vec::new();
        let mut watches_of: BTreeMap<selecting::ResourceKey, Vec<tokio::task::AbortHandle>> =
            BTreeMap::new();
        let spawn_watches = |index: usize, res: &Arc<ResourceCtx>, initial: bool| {
            let mut handles = Vec::new();
            handles.extend(sharded::claims(shard.as_ref(), &res.served, scopes_of(res)));
            for ns in scopes_of(res) {
                let subscription = shared_watches.subscribe(&res.served, ns.as_deref(), true);
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
        let subscribe = |served: &discovery::Served, sharded: bool| -> Vec<Subscription> {
            ctx.scopes(served.namespaced)
                .iter()
                .map(|ns| shared_watches.subscribe(served, ns.as_deref(), sharded))
                .collect()
        };
        for ((spec, i), (parent, children)) in syncs.into_iter().zip(sync_resources) {
            watches.extend(sharded::claims(
                shard.as_ref(),
                &parent,
                ctx.scopes(parent.namespaced),
            ));
            let watched = sync::Watched {
                parents: subscribe(&parent, true),
                parent,
                children: children
                    .into_iter()
                    .map(|child| {
                        let subscriptions = subscribe(&child, false);
                        (child, subscriptions)
                    })
                    .collect(),
            };
            let (ctx, callbacks) = (Arc::clone(&ctx), Arc::clone(&shared.callbacks));
            let port = Arc::clone(&services.syncs[i]);
            watches.push(tokio::spawn(sync::serve(
                ctx, callbacks, spec, port, watched,
            )));
        }
        let tasks = tasks
            .into_iter()
            .zip(task_resources)
            .map(|((spec, i), (task, parent))| {
                let scopes = ctx.scopes(parent.namespaced);
                watches.extend(sharded::follow_parents(
                    shard.as_ref(),
                    &shared_watches,
                    &parent,
                    scopes,
                ));
                let watched = crate::runtime::tasks::Watched {
                    tasks: subscribe(&task, false),
                    task,
                    parent,
                };
                (spec, Arc::clone(&services.tasks[i]), watched)
            })
            .collect();
        watches.push(tokio::spawn(crate::runtime::tasks::serve(
            Arc::clone(&ctx),
            tasks,
        )));
        shared_watches.start();
        watches.extend(shard.as_ref().and_then(|s| s.start_rebalancing()));

        let outboxes: Vec<_> = services
            .handlers
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
                let (found, scanned) = match selecting::matches(&client, &services.handlers, &wide)
                    .await
                {
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
                    let res = match discover::newly_discovered(served, regs, &services) {
                        Ok(res) => Arc::new(res),
                        Err(err) => {
                            tracing::error!(error = %err, "Cannot serve a newly discovered resource.");
                            continue;
                        }
                    };
                    let index = queue.add_resource(Arc::clone(&res));
                    let handles = spawn_watches(index, &res, false);
                    watches_of
                        .entry(key)
                        .or_default()
                        .extend(handles.iter().map(tokio::task::JoinHandle::abort_handle));
                }
            }
        };
        let manifest_watch = tokio::spawn(discover::watch_manifests(
            Arc::clone(shared),
            services.handlers.clone(),
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
            () = active.lost() => {
                tracing::warn!(reason = %active.why_not().unwrap_or_default(), "Handling stops: finishing the cycles in flight.");
                Ending::Paused
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
