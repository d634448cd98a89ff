//! Stop requests: SIGTERM/SIGINT, and waiting for work unless a stop comes first.

/// Runs `work` until it ends or a stop is requested (then says `why` and returns `None`).
pub(super) async fn until_stopped<T>(
    stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    work: impl std::future::Future<Output = T>,
    why: &str,
) -> Option<T> {
    tokio::select! {
        value = work => Some(value),
        () = stop => {
            tracing::info!("{why}");
            None
        }
    }
}

pub(super) async fn shutdown_signal() {
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
