//! The one HTTP listener: dashboard, JSON API, server-sent events, metrics and probes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Json};
use axum::{
    Router,
    routing::{get, put},
};

use crate::runtime::serving::Shared;

/// Errors of the HTTP listener.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// The listener's routes; with a token in `options`, every route but the probes and the
/// shutdown-hook callback (which carries its own token) requires it.
pub(crate) fn router_with(shared: Arc<Shared>, options: &operon_dashboard::Options) -> Router {
    let callbacks = Router::new()
        .route(
            "/api/v1/shutdown/{resource}/{namespace}/{name}",
            put(shutdown_callback),
        )
        .with_state(Arc::clone(&shared));
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/objects", get(objects))
        .route("/api/v1/events", get(events))
        .with_state(Arc::clone(&shared))
        .merge(operon_dashboard::router_with(shared, options));
    // Merged after `protect`, so its layer does not cover the callback.
    operon_dashboard::protect(routes, options.token.as_deref()).merge(callbacks)
}

/// `PUT /api/v1/shutdown/{resource}/{namespace}/{name}` with `{"token": "..."}`: an application
/// reports that it stopped (see [`crate::runtime::shutdown`]); `_` is the namespace of a
/// cluster-wide parent. 200 confirmed, 401 wrong or missing token, 404 no such parent or no
/// shutdown pending, 400 not a JSON object.
async fn shutdown_callback(
    State(shared): State<Arc<Shared>>,
    Path((resource, namespace, name)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let answer = shared
        .callbacks
        .callback(&resource, &namespace, &name, &body)
        .await;
    let code = StatusCode::from_u16(answer.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(serde_json::json!({"message": answer.message()})))
}

/// 200 once every watch has listed: also on a standby (leader election) or a paused replica
/// (peering), which is ready to take over; the body then says its role.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    use operon_dashboard::ReadModel as _;
    let (code, state) = if shared.ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "listing")
    };
    match shared.about().role {
        Some(role) => (code, format!("{state}; {role}")),
        None => (code, state.to_owned()),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::runtime::metrics::CONTENT_TYPE)],
        shared.metrics.render(),
    )
}

/// The JSON API's headers: never sniffed as another type, never cached (live data).
const API_HEADERS: [(header::HeaderName, &str); 2] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
];

async fn objects(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = Json(serde_json::json!({
        "objects": shared.readmodel.objects(),
        "queue_depth": shared.metrics.queue_depth(),
        "inflight_calls": shared.metrics.inflight_calls(),
    }));
    (API_HEADERS, body)
}

async fn events(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let stream =
        Sse::new(operon_dashboard::event_stream(shared.as_ref())).keep_alive(KeepAlive::default());
    (API_HEADERS, stream)
}

/// Binds the listener.
///
/// # Errors
/// [`Error::Bind`] if the address cannot be bound.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves [`router_with`] (the options given, else the environment's) on `listener` until the task is dropped.
///
/// # Errors
/// [`Error::Serve`] if serving fails.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    options: operon_dashboard::Options,
) -> Result<(), Error> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP listener is up.");
    }
    axum::serve(listener, router_with(shared, &options))
        .await
        .map_err(Error::Serve)
}
