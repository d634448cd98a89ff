//! `operon dashboard`: the dashboard alone, filled from the cluster instead of a running core.
//!
//! It lists and watches the given resources and reads each object's Kopf-format annotations —
//! the diff-base and one progress record per handler, found by scanning the annotation keys under
//! the prefix — plus the Kubernetes Events about the objects. So it shows the progress of any
//! operator that persists in Kopf's format: Operon, and Kopf itself.
//!
//! What an object's annotations say is decided by pure functions in [`crate::core::views`]
//! ([`observe`](crate::core::views::observe), then [`view`](crate::core::views::view) with the
//! object's Events); [`Store`] keeps the results as the dashboard's read model; [`run`] wires
//! the watches (`watch`) and the HTTP listener.
//!
//! # Caveats
//! Kopf (and Operon) purge the progress records when a cycle ends, also after a permanent
//! failure. What a finished cycle did is known from what was seen while it ran
//! ([`LastCycle`](crate::core::views::LastCycle): Kopf writes each handler's outcome in a patch
//! of its own), else from the Events posted about it (`Handler 'x' failed permanently: …`:
//! Operon posts them for errors; Kopf 1.45 only with `settings.posting.loggers = True`), which
//! expire (one hour by default). A handler whose final outcome is written in the same patch that
//! purges the records, after a restart of `operon dashboard` or without such Events, shows as
//! handled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::DynamicObject;

use crate::core::persistence::keys::KeyError;
use crate::core::selectors::Selector;
use crate::core::views::Storages;
use crate::runtime::discovery::{self, Served};

mod store;
mod watch;

pub(crate) use store::Store;

/// What `operon dashboard` needs.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The resources to show, kubectl-style (see [`parse_selector`]).
    pub resources: Vec<Selector>,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The annotation prefix (Kopf's `kopf.zalando.org`).
    pub prefix: String,
    /// The dashboard's options (token, Jaeger UI).
    pub dashboard: operon_dashboard::Options,
}

/// A failure that stops `operon dashboard`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The Kubernetes configuration could not be loaded.
    #[error("cannot load the Kubernetes configuration")]
    KubeConfig(#[source] kube::config::InferConfigError),
    /// No client could be built from the configuration.
    #[error("cannot connect to Kubernetes")]
    Kube(#[source] kube::Error),
    /// The annotation prefix is invalid.
    #[error("invalid --prefix: {0}")]
    Prefix(#[from] KeyError),
    /// A `--resource` cannot be read.
    #[error(
        "invalid --resource {0:?}: expected PLURAL[.GROUP], VERSION/PLURAL or GROUP/VERSION/PLURAL"
    )]
    Resource(String),
    /// The HTTP listener failed.
    #[error(transparent)]
    Http(#[from] crate::http::Error),
}

/// Reads a kubectl-style resource: `GROUP/VERSION/PLURAL`, `VERSION/PLURAL` (core group),
/// `PLURAL.GROUP`, `PLURAL.VERSION.GROUP` or a bare plural, singular, kind or short name.
///
/// # Errors
/// [`Error::Resource`] for empty parts or more than three `/`-separated parts.
pub(crate) fn parse_selector(text: &str) -> Result<Selector, Error> {
    let bad = || Error::Resource(text.to_owned());
    let parts: Vec<&str> = text.trim().split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let selector = |group: &str, version: &str, name: &str| Selector {
        group: group.to_owned(),
        version: version.to_owned(),
        name: name.to_owned(),
    };
    match parts.as_slice() {
        [group, version, name] => Ok(selector(group, version, name)),
        [version, name] => Ok(selector("", version, name)),
        [dotted] => match dotted.split_once('.') {
            None => Ok(selector("", "", dotted)),
            Some((name, rest)) => match rest.split_once('.') {
                Some((version, group)) if looks_like_version(version) => {
                    Ok(selector(group, version, name))
                }
                _ => Ok(selector(rest, "", name)),
            },
        },
        _ => Err(bad()),
    }
}

fn looks_like_version(text: &str) -> bool {
    text.strip_prefix('v')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// The listener's routes: the dashboard, its API, and the probes; behind the token if set.
pub(crate) fn router(store: Arc<Store>, options: &operon_dashboard::Options) -> axum::Router {
    let ready = Arc::clone(&store);
    let model: Arc<dyn operon_dashboard::ReadModel> = store;
    let routes = operon_dashboard::router_with(Arc::clone(&model), options)
        .merge(operon_dashboard::api_router(model))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    if ready.ready() {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "listing")
                    }
                }
            }),
        );
    operon_dashboard::protect(routes, options.token.as_deref())
}

/// Serves the dashboard from the cluster until SIGTERM/SIGINT.
///
/// # Errors
/// Start-up failures: the Kubernetes configuration, the prefix, the listener.
pub(crate) async fn run(config: Config) -> Result<(), Error> {
    let storages = Arc::new(Storages::new(&config.prefix)?);
    let kube_config = kube::Config::infer().await.map_err(Error::KubeConfig)?;
    let client = kube::Client::try_from(crate::runtime::kit::client_config(kube_config))
        .map_err(Error::Kube)?;
    let store = Arc::new(Store::default());

    let listener = crate::http::bind(config.http).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "The dashboard is up.");
    }
    let app = router(Arc::clone(&store), &config.dashboard);
    let http = tokio::spawn(async move { axum::serve(listener, app).await });

    let resolving = async {
        let mut served = Vec::new();
        for selector in &config.resources {
            let found = resolve_until_found(&client, selector).await;
            tracing::info!(resource = %found.name(), "Showing the resource.");
            served.push(found);
        }
        served
    };
    // A resource not served yet is waited for, until a stop.
    let served = tokio::select! {
        served = resolving => served,
        () = crate::runtime::signals::stop_requested() => {
            http.abort();
            return Ok(());
        }
    };
    store.set_resources(served.iter().map(Served::name).collect());

    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut tasks = Vec::new();
    for res in &served {
        let res_scopes = if res.namespaced {
            scopes.clone()
        } else {
            vec![None]
        };
        for ns in res_scopes {
            let api: Api<DynamicObject> = match &ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &res.resource),
                None => Api::all_with(client.clone(), &res.resource),
            };
            tasks.push(tokio::spawn(watch::objects(
                Arc::clone(&store),
                Arc::clone(&storages),
                res.name(),
                ns,
                api,
            )));
        }
    }
    store.expect_watches(tasks.len());
    let kinds: Vec<(String, String)> = served
        .iter()
        .map(|s| (s.resource.group.clone(), s.resource.kind.clone()))
        .collect();
    for ns in &scopes {
        let api: Api<Event> = match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        tasks.push(tokio::spawn(watch::events(
            Arc::clone(&store),
            kinds.clone(),
            api,
        )));
    }

    let result = tokio::select! {
        () = crate::runtime::signals::stop_requested() => Ok(()),
        served = http => match served {
            Ok(Err(err)) => Err(Error::Http(crate::http::Error::Serve(err))),
            _ => Ok(()),
        },
    };
    for task in &tasks {
        task.abort();
    }
    tracing::info!("Stopped.");
    result
}

async fn resolve_until_found(client: &kube::Client, selector: &Selector) -> Served {
    let mut delay = Duration::from_secs(1);
    loop {
        match discovery::resolve(client, selector).await {
            Ok(served) => return served,
            Err(err) => {
                tracing::warn!(resource = %selector, error = %err, retry_in = ?delay, "Cannot show the resource yet.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
        }
    }
}

#[cfg(test)]
mod tests;
