//! Admission webhooks, performed: the HTTPS listener ([`server`]), the calls of the validate and
//! mutate handlers over gRPC (`Invoke` with `admission`), and the managed webhook configurations
//! ([`manager`]). What to call and what to answer is decided in `core::admission`.
//!
//! [`start`] binds the listener at once (a port in use fails the start-up), then, in the
//! background, describes the handler services, resolves the resources of their validate/mutate
//! handlers and starts answering; until then a review is answered 503 (the API server applies
//! the webhook's failure policy). The admission handlers of a manifest are read once: a
//! redeployed service with other admission handlers needs a restart of the core.

pub(crate) mod manager;
pub(crate) mod server;
pub(crate) mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::core::admission::serving;
use crate::core::admission::webhooks::{ClientConfig, Resource};
use crate::core::admission::{AdmissionHandler, Reply, Review};
use crate::runtime::discovery;
use crate::runtime::grpc::{ClientTls, GrpcService};
use crate::runtime::kit::{self, LockedRw};
use crate::runtime::ports::{AdmissionCall, EventRequest, HandlerPort, ResolvedResource};

/// The admission options of `operon run` (Kopf's `settings.admission`).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where to listen (`--admission-listen`); port 0 picks a free one.
    pub listen: SocketAddr,
    /// The host in the webhooks' URL and the generated certificate (`--admission-host`); by
    /// default the listening address (`127.0.0.1` for an unspecified one).
    pub host: Option<String>,
    /// A root path for the webhooks' URLs (`--admission-path`), e.g. `/webhooks`.
    pub path: String,
    /// The server's certificate chain and key, PEM (`--admission-cert`, `--admission-key`);
    /// `None`: a CA and a certificate are made at start-up.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// The CA bundle the API server trusts (`--admission-ca`); by default the CA made at
    /// start-up, or the given certificate itself (as Kopf).
    pub ca: Option<PathBuf>,
    /// Where to write the CA bundle (Kopf's `cadump`; `--admission-ca-dump`).
    pub ca_dump: Option<PathBuf>,
    /// More names for the generated certificate (Kopf's `extra_sans`; `--admission-san`).
    pub extra_sans: Vec<String>,
    /// Manage the Validating/MutatingWebhookConfiguration of this name (`--admission-managed`).
    pub managed: Option<String>,
}

/// A failure to start serving admission webhooks.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A certificate, key or CA file cannot be read.
    #[error("cannot read --admission-{flag} {path}")]
    Read {
        /// The option.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA bundle cannot be written.
    #[error("cannot write --admission-ca-dump {path}")]
    Dump {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificates cannot be made or used.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The listener cannot be bound.
    #[error("cannot listen for admission webhooks on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A handler address is invalid.
    #[error(transparent)]
    Dispatch(#[from] crate::runtime::ports::Error),
}

/// One admission handler with the service that has it.
#[derive(Clone)]
pub(crate) struct Bound {
    /// The handler.
    pub handler: AdmissionHandler,
    /// Its service.
    pub service: Arc<dyn HandlerPort>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("handler", &self.handler)
            .field("service", &self.service.name())
            .finish()
    }
}

/// The handlers of one resource.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The resource as served.
    pub served: discovery::Served,
    /// Its handlers, in the order of the services and their manifests.
    pub handlers: Vec<Bound>,
}

/// Where the Events that admission handlers send are posted (as the handlers' Events of the
/// change cycles: Kopf's format, kept for the dashboard).
#[derive(Clone)]
pub(crate) struct EventSink {
    /// The API client.
    pub client: kube::Client,
    /// Metrics (API writes).
    pub metrics: Arc<crate::runtime::metrics::Metrics>,
    /// The read model (the dashboard's object page shows the Event).
    pub readmodel: Arc<crate::runtime::readmodel::ReadModel>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink").finish_non_exhaustive()
    }
}

impl EventSink {
    /// Posts `events` about `body` (or the object each names) in the background: the review's
    /// answer does not wait for them.
    pub(crate) fn post(&self, body: &Value, events: Vec<EventRequest>) {
        if events.is_empty() {
            return;
        }
        let sink = self.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let poster = crate::runtime::events::Poster {
                client: &sink.client,
                metrics: &sink.metrics,
                readmodel: &sink.readmodel,
            };
            for e in events {
                let about = e.involved_object.as_ref().unwrap_or(&body);
                crate::runtime::events::post_to(&poster, about, &e.type_, &e.reason, &e.message)
                    .await;
            }
        });
    }
}

/// What the listener answers from: empty until the services are described and the resources
/// resolved.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    ready: RwLock<Option<Arc<Vec<Route>>>>,
    sink: std::sync::OnceLock<EventSink>,
}

impl Routes {
    /// Where the handlers' Events go; `None` (tests): they are logged and dropped.
    pub(crate) fn sink(&self) -> Option<&EventSink> {
        self.sink.get()
    }

    /// The routes, once ready.
    pub(crate) fn get(&self) -> Option<Arc<Vec<Route>>> {
        self.ready.read_locked().clone()
    }

    fn set(&self, routes: Vec<Route>) {
        *self.ready.write_locked() = Some(Arc::new(routes));
    }
}

/// The running admission webhooks; [`Handle::stop`] ends them.
#[derive(Debug)]
pub(crate) struct Handle {
    server: tokio::task::JoinHandle<()>,
    setup: tokio::task::JoinHandle<()>,
    routes: Arc<Routes>,
    managed: Option<manager::Manager>,
}

impl Handle {
    /// Stops answering; a managed configuration keeps only the persistent handlers' webhooks
    /// (as Kopf leaves it on exit).
    pub(crate) async fn stop(self) {
        self.setup.abort();
        if let (Some(manager), Some(routes)) = (&self.managed, self.routes.get()) {
            manager.clean_up(&routes).await;
        }
        self.server.abort();
    }
}

/// Binds the listener and starts serving admission webhooks for the validate/mutate handlers of
/// the services at `urls` (see the module's docs).
///
/// # Errors
/// Unreadable or unusable certificates, a listener that cannot be bound, a bad handler address.
pub(crate) async fn start(
    config: Config,
    sink: EventSink,
    urls: &[String],
    handler_tls: Option<&ClientTls>,
) -> Result<Handle, Error> {
    let client = sink.client.clone();
    let read = |flag: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| Error::Read {
            flag,
            path: path.display().to_string(),
            source,
        })
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let accessible_ip = serving::accessible_ip(local.ip());
    let host = config.host.clone().unwrap_or_else(|| accessible_ip.clone());
    let material = match &config.cert {
        Some((cert, key)) => {
            let cert_pem = read("cert", cert)?;
            let ca_pem = match &config.ca {
                Some(ca) => read("ca", ca)?,
                None => cert_pem.clone(),
            };
            tls::Material {
                key_pem: read("key", key)?,
                cert_pem,
                ca_pem,
            }
        }
        None => {
            let names = serving::certificate_names(&host, &accessible_ip, &config.extra_sans);
            let mut material = tls::generate(&names)?;
            if let Some(ca) = &config.ca {
                material.ca_pem = read("ca", ca)?;
            }
            material
        }
    };
    if let Some(dump) = &config.ca_dump {
        std::fs::write(dump, &material.ca_pem).map_err(|source| Error::Dump {
            path: dump.display().to_string(),
            source,
        })?;
    }
    let tls_config = tls::server_config(&material)?;
    let path = serving::root_path(&config.path);
    let url = serving::base_url(&host, local.port(), &path);
    tracing::info!(listen = %local, url = %url, "Listening for admission webhooks.");

    let mut services: Vec<Arc<dyn HandlerPort>> = Vec::new();
    for u in urls {
        services.push(Arc::new(GrpcService::with_tls(u, handler_tls)?));
    }
    let routes = Arc::new(Routes::default());
    let _ = routes.sink.set(sink);
    let server = tokio::spawn(server::serve(
        listener,
        tokio_rustls::TlsAcceptor::from(tls_config),
        Arc::clone(&routes),
        path.clone(),
    ));
    let managed = config.managed.clone().map(|name| manager::Manager {
        client: client.clone(),
        name,
        client_config: ClientConfig {
            url: url.clone(),
            ca_bundle: Some(material.ca_pem.clone()),
        },
    });
    let setup = tokio::spawn({
        let routes = Arc::clone(&routes);
        let managed = managed.clone();
        async move {
            let found = discover(&client, &services).await;
            let count: usize = found.iter().map(|r| r.handlers.len()).sum();
            tracing::info!(
                handlers = count,
                resources = found.len(),
                "Admission webhooks are served."
            );
            routes.set(found);
            if let (Some(manager), Some(found)) = (managed, routes.get()) {
                manager.keep_up_to_date(&found).await;
            }
        }
    });
    Ok(Handle {
        server,
        setup,
        routes,
        managed,
    })
}

/// Describes every service (until it answers) and resolves its admission handlers' resources
/// (until they exist), as the engine does for the other handlers.
async fn discover(client: &kube::Client, services: &[Arc<dyn HandlerPort>]) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    for service in services {
        let manifest = kit::describe_until_answered(service.as_ref()).await;
        let regs = match manifest.admission {
            Ok(regs) => regs,
            Err(err) => {
                tracing::error!(service = service.name(), error = %err, "The service's admission handlers are not served.");
                continue;
            }
        };
        for (selector, handler) in regs {
            let served = kit::resolve_until_found(client, &selector).await;
            tracing::debug!(handler = %handler.id, kind = handler.kind.as_str(), resource = %served.name(), "Admission handler served.");
            let bound = Bound {
                handler,
                service: Arc::clone(service),
            };
            match routes.iter_mut().find(|r| {
                r.served.resource.group == served.resource.group
                    && r.served.resource.plural == served.resource.plural
            }) {
                Some(route) => route.handlers.push(bound),
                None => routes.push(Route {
                    served,
                    handlers: vec![bound],
                }),
            }
        }
    }
    routes
}

/// The resource of a route, for a webhook's rules.
pub(crate) fn resource_of(served: &discovery::Served) -> Resource {
    Resource {
        group: served.resource.group.clone(),
        version: served.resource.version.clone(),
        plural: served.resource.plural.clone(),
    }
}

/// Calls one admission handler for a review (never fails: a failure is a [`Reply::Failed`]).
pub(crate) async fn call(
    bound: &Bound,
    served: &discovery::Served,
    review: &Review,
    headers: &HashMap<String, String>,
    sink: Option<&EventSink>,
) -> Reply {
    let diff =
        crate::core::persistence::diff::diff(review.old_object.as_ref(), review.object.as_ref());
    let deadline = serving::call_deadline(bound.handler.timeout);
    let call = AdmissionCall {
        handler_id: bound.handler.id.clone(),
        body: review.body().clone(),
        old: review.old_object.clone(),
        new: review.object.clone(),
        diff: crate::core::persistence::diff::to_value(&diff),
        attempt_id: serving::attempt_id(&review.uid, &bound.handler.id),
        resource: ResolvedResource {
            group: served.resource.group.clone(),
            version: served.resource.version.clone(),
            plural: served.resource.plural.clone(),
            kind: served.resource.kind.clone(),
            namespaced: served.namespaced,
        },
        request: review.request.clone(),
        headers: headers.clone(),
        deadline,
    };
    let reply = match bound.service.admit(call).await {
        Ok(reply) => reply,
        Err(crate::runtime::ports::Error::Deadline(_)) => {
            return Reply::Failed(format!(
                "its service did not answer within {:.1} seconds",
                deadline.as_secs_f64()
            ));
        }
        Err(crate::runtime::ports::Error::Transport(status)) => {
            return Reply::Failed(format!(
                "its service {} failed: {} ({:?})",
                bound.service.name(),
                status.message(),
                status.code()
            ));
        }
        Err(err) => {
            return Reply::Failed(format!(
                "its service {} failed: {err}",
                bound.service.name()
            ));
        }
    };
    // The handler's Events (`kopf.info()` & co. in a webhook) are posted as a cycle's are.
    match reply.events {
        Ok(events) => match sink {
            Some(sink) => sink.post(review.body(), events),
            None if !events.is_empty() => {
                tracing::warn!(handler = %bound.handler.id, events = events.len(), "Events of an admission handler cannot be posted here.");
            }
            None => {}
        },
        Err(err) => {
            tracing::warn!(handler = %bound.handler.id, error = %err, "An admission handler's Events break the contract; not posted.");
        }
    }
    match reply.answer {
        Ok(answer) => Reply::Answered(answer),
        Err(why) => Reply::Failed(format!("its answer breaks the contract: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::admission::{MAX_TIMEOUT, Subresource, WebhookKind};

    fn served() -> discovery::Served {
        discovery::Served {
            resource: kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk("kopf.dev", "v1", "KopfExample"),
                "kopfexamples",
            ),
            namespaced: true,
            has_status: true,
        }
    }

    fn bound(url: &str, timeout: Duration) -> Bound {
        Bound {
            handler: AdmissionHandler {
                id: "check".into(),
                kind: WebhookKind::Validating,
                filters: Default::default(),
                has_callback_filters: false,
                operations: Vec::new(),
                subresource: Subresource::Main,
                persistent: false,
                side_effects: false,
                ignore_failures: false,
                timeout,
            },
            service: Arc::new(GrpcService::new(url).unwrap()),
        }
    }

    fn review() -> Review {
        let text = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": "CREATE", "userInfo": {}, "object": {},
                        "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"}}});
        Review::parse(text.to_string().as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn a_silent_or_dead_service_is_a_failed_reply_before_the_webhook_times_out() {
        // A service that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let started = std::time::Instant::now();
        let b = bound(&format!("http://{addr}"), Duration::from_secs(1));
        let reply = call(&b, &served(), &review(), &HashMap::new(), None).await;
        assert!(
            matches!(&reply, Reply::Failed(why) if why.contains("did not answer within 0.5 seconds")),
            "{reply:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered before the API server gives up"
        );

        // Nothing listens: a failure that names the service.
        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = format!("http://{}", free.local_addr().unwrap());
        drop(free);
        let reply = call(
            &bound(&dead, MAX_TIMEOUT),
            &served(),
            &review(),
            &HashMap::new(),
            None,
        )
        .await;
        assert!(
            matches!(&reply, Reply::Failed(why) if why.contains(&dead)),
            "{reply:?}"
        );
    }
}
