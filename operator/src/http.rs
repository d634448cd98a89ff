//! The one HTTP listener: dashboard, JSON API, metrics and probes.

use std::net::SocketAddr;

use axum::{Router, routing::get};

/// Errors of the HTTP listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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

/// The listener's routes: probes here, everything else from the dashboard.
pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .merge(operon_dashboard::router())
}

/// Serves [`router`] on `addr` until the process is interrupted.
///
/// # Errors
/// [`Error::Bind`] if the address cannot be bound, [`Error::Serve`] if serving fails.
pub async fn serve(addr: SocketAddr) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    tracing::info!(%addr, "HTTP listener is up.");
    axum::serve(listener, router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(Error::Serve)
}
