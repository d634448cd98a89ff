//! Credentials from the handler services' login handlers (`--login`; Kopf's `@kopf.on.login`),
//! renewed without restarting anything: the core's one [`kube::Client`] (cloned into every watch,
//! cycle and controller) sends through [`Refreshing`], which holds the client built from the
//! current credentials and swaps it when the service logs in again — on a 401 Unauthorized from
//! the API server (the request is then repeated once with the new credentials, as Kopf's
//! re-authenticating requests do) and shortly before the credentials' expiration.
//!
//! # Caveats
//! A watch stream that is already open keeps its connection; its next request (at the latest
//! after the watch's 290-second timeout) uses the new credentials.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;

use crate::core::backoff::Backoff;
use crate::core::login::{self, Reason};
use crate::runtime::grpc::{ClientTls, GrpcService};
use crate::runtime::kit::LockedRw;
use crate::runtime::ports::HandlerPort as _;

/// A login failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A handler address is invalid.
    #[error(transparent)]
    Dispatch(#[from] crate::runtime::ports::Error),
    /// No service answered with credentials.
    #[error("no handler service answered Login with credentials")]
    NoCredentials,
    /// A service's kubeconfig is not one.
    #[error("the kubeconfig from {service}'s Login is invalid: {problem}")]
    BadKubeconfig {
        /// The service.
        service: String,
        /// What is wrong.
        problem: String,
    },
    /// The client cannot be built from the credentials.
    #[error("cannot build a client from {service}'s credentials")]
    Client {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// Credentials as a client, and when they expire.
struct Credentials {
    client: kube::Client,
    expiration: Option<jiff::Timestamp>,
}

/// The services that log in.
#[derive(Clone)]
struct Services(Vec<GrpcService>);

impl Services {
    /// The first service's credentials.
    async fn login(&self, reason: Reason) -> Result<Credentials, Error> {
        for service in &self.0 {
            let Some(login) = service.login(reason.as_str()).await? else {
                continue;
            };
            let (kubeconfig, expiration) = (login.kubeconfig_json, login.expiration);
            let bad = |problem: String| Error::BadKubeconfig {
                service: service.url().to_owned(),
                problem,
            };
            let kubeconfig: kube::config::Kubeconfig =
                serde_json::from_slice(&kubeconfig).map_err(|e| bad(e.to_string()))?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| bad(e.to_string()))?;
            let client = kube::Client::try_from(crate::runtime::kit::client_config(config))
                .map_err(|source| Error::Client {
                    service: service.url().to_owned(),
                    source,
                })?;
            return Ok(Credentials { client, expiration });
        }
        Err(Error::NoCredentials)
    }
}

/// The current client, its generation, and the login in progress.
struct State {
    current: std::sync::RwLock<(kube::Client, u64, Option<jiff::Timestamp>)>,
    relogin: tokio::sync::Mutex<()>,
    renewed: tokio::sync::Notify,
    services: Services,
}

/// A tower service that sends through the client of the current credentials (see the module).
#[derive(Clone)]
pub(crate) struct Refreshing {
    state: Arc<State>,
}

impl Refreshing {
    fn current(&self) -> (kube::Client, u64) {
        let current = self.state.current.read_locked();
        (current.0.clone(), current.1)
    }

    /// Logs in again unless someone did since `seen` (one login for many failed requests).
    async fn relogin(&self, seen: u64, reason: Reason) {
        let _one = self.state.relogin.lock().await;
        if !login::still_needed(seen, self.current().1) {
            return;
        }
        tracing::info!(reason = reason.as_str(), "Logging in again.");
        match self.state.services.login(reason).await {
            Ok(credentials) => {
                let mut current = self.state.current.write_locked();
                *current = (credentials.client, seen + 1, credentials.expiration);
                drop(current);
                self.state.renewed.notify_waiters();
                tracing::info!(expiration = ?credentials.expiration, "Logged in again; the new credentials are in use.");
            }
            Err(err) => {
                tracing::error!(error = %err, "Logging in again failed; the current credentials stay.");
            }
        }
    }

    /// Renews the credentials before they expire, for as long as the core runs.
    async fn renew_before_expiration(self) {
        loop {
            let (generation, expiration) = {
                let current = self.state.current.read_locked();
                (current.1, current.2)
            };
            match expiration {
                Some(at) => {
                    let delay = login::renewal_delay(jiff::Timestamp::now(), at);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {
                            self.relogin(generation, Reason::Expiring).await;
                            if login::still_needed(generation, self.current().1) {
                                // The login failed: try again a little later, not in a loop.
                                tokio::time::sleep(login::RENEWAL_RETRY).await;
                            }
                        }
                        () = self.state.renewed.notified() => {}
                    }
                }
                None => self.state.renewed.notified().await,
            }
        }
    }
}

impl tower::Service<Request<Body>> for Refreshing {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await?.to_vec();
            let again = |bytes: Vec<u8>| {
                let mut r = Request::new(Body::from(bytes));
                *r.method_mut() = parts.method.clone();
                *r.uri_mut() = parts.uri.clone();
                *r.version_mut() = parts.version;
                *r.headers_mut() = parts.headers.clone();
                r
            };
            let (client, generation) = this.current();
            let response = client.send(again(bytes.clone())).await?;
            if response.status() != http::StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            tracing::warn!(uri = %parts.uri, "The API server answered 401 Unauthorized.");
            this.relogin(generation, Reason::Unauthorized).await;
            let (client, _) = this.current();
            client.send(again(bytes)).await
        })
    }
}

/// The core's client from the services' `Login` (waiting until one answers with credentials),
/// renewed as the module says for as long as the returned task runs.
///
/// # Errors
/// Invalid handler addresses; credentials that cannot make a client.
pub(crate) async fn client(
    urls: &[String],
    tls: Option<&ClientTls>,
) -> Result<(kube::Client, tokio::task::JoinHandle<()>), Error> {
    let services = Services(
        urls.iter()
            .map(|u| GrpcService::with_tls(u, tls))
            .collect::<Result<_, _>>()?,
    );
    let mut delay = Backoff::SERVICE.first;
    let credentials = loop {
        match services.login(Reason::Start).await {
            Ok(c) => break c,
            Err(err @ (Error::BadKubeconfig { .. } | Error::Client { .. })) => return Err(err),
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?delay, "No credentials from the handler services yet.");
                tokio::time::sleep(delay).await;
                delay = Backoff::SERVICE.next(delay);
            }
        }
    };
    let namespace = credentials.client.default_namespace().to_owned();
    tracing::info!(expiration = ?credentials.expiration, "Logged in with the handler service's credentials.");
    let refreshing = Refreshing {
        state: Arc::new(State {
            current: std::sync::RwLock::new((credentials.client, 0, credentials.expiration)),
            relogin: tokio::sync::Mutex::new(()),
            renewed: tokio::sync::Notify::new(),
            services,
        }),
    };
    let renewal = tokio::spawn(refreshing.clone().renew_before_expiration());
    Ok((kube::Client::new(refreshing, namespace), renewal))
}
