//! Waiting for work unless a stop (SIGTERM/SIGINT, see [`crate::runtime::signals`]) comes first.

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
