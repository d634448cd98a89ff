//! Events that handler services post outside handler calls (Kopf's `kopf.event()` & co. from a
//! daemon thread, a startup handler, a background task): the core keeps one `Outbox` call open
//! to each service and posts every Event that comes down it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::core::backoff::Backoff;
use crate::runtime::events::{Poster, post_to};
use crate::runtime::metrics::Metrics;
use crate::runtime::ports::HandlerPort;
use crate::runtime::readmodel::ReadModel;

/// The longest pause before the call is opened again after a failure.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// Keeps the service's outbox open and posts what comes, until the service says it has none
/// (UNIMPLEMENTED) or the task is aborted. A service that is down or a call that ends is retried
/// with a growing delay; an Event that breaks the contract (no involved object) is logged.
pub(crate) async fn serve(
    service: Arc<dyn HandlerPort>,
    client: kube::Client,
    metrics: Arc<Metrics>,
    readmodel: Arc<ReadModel>,
) {
    let poster = Poster {
        client: &client,
        metrics: &metrics,
        readmodel: &readmodel,
    };
    let mut delay = BACKOFF.first;
    loop {
        match service.outbox().await {
            Ok(None) => {
                tracing::debug!(
                    service = service.name(),
                    "The handler service has no outbox."
                );
                return;
            }
            Ok(Some(mut stream)) => {
                while let Some(item) = stream.next().await {
                    delay = BACKOFF.first;
                    match item {
                        Ok(e) => {
                            let about = e.involved_object.unwrap_or_default();
                            if !post_to(&poster, &about, &e.type_, &e.reason, &e.message).await {
                                tracing::debug!(service = service.name(), message = %e.message, "Failed to post an event.");
                            }
                        }
                        Err(err) => {
                            tracing::warn!(service = service.name(), error = %err, "The handler service's outbox failed.");
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::debug!(service = service.name(), error = %err, retry_in = ?delay, "Cannot open the handler service's outbox yet.");
            }
        }
        tokio::time::sleep(delay).await;
        delay = BACKOFF.next(delay);
    }
}
