//! Stop requests (SIGTERM, SIGINT), listened for from the process's first moment.
//!
//! A listener registered only when the engine first waits on it leaves a window at start-up
//! (connecting, discovery, asking the handler services for their manifests) in which a SIGTERM
//! ends the process with the signal's default action: exit status -15 instead of a clean stop,
//! as a Pod deleted right after it started would see. [`install`] registers the listeners as the
//! runtime starts; [`stop_requested`] resolves once one of them fired, however early.

use std::sync::OnceLock;

use tokio::sync::watch;

static STOP: OnceLock<watch::Sender<bool>> = OnceLock::new();

/// Registers the SIGTERM and SIGINT listeners (once; later calls do nothing). Call it inside
/// the async runtime, before anything that may take a while.
pub(crate) fn install() {
    STOP.get_or_init(|| {
        let (stop, _) = watch::channel(false);
        let signalled = stop.clone();
        match listen() {
            Ok(fired) => {
                tokio::spawn(async move {
                    fired.await;
                    signalled.send_replace(true);
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "Cannot listen for SIGTERM; only SIGINT stops the core cleanly.");
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    signalled.send_replace(true);
                });
            }
        }
        stop
    });
}

/// Resolves once a stop was requested (at once if one already was).
pub(crate) async fn stop_requested() {
    install();
    let Some(stop) = STOP.get() else { return };
    let mut requested = stop.subscribe();
    // The sender lives in the static for the whole process: this ends only on a signal.
    let _ = requested.wait_for(|stop| *stop).await;
}

/// The listeners, registered now; the future resolves on the first signal.
#[cfg(unix)]
fn listen() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn listen() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
