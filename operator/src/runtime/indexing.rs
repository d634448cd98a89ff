//! Kopf's indexes (`@kopf.index`), fed by the core: the index itself lives in the handler
//! service (it is injected into the service's own handlers and filters); the core sends it every
//! watch event of the indexed resource, in watch order and before the object's own cycle, and
//! after every complete listing the list of what exists, so that the service drops what is gone.
//! Until every watch of every indexed resource has fed its first listing, no cycle runs
//! ([`Gate`]) — Kopf's initial indexing, without its worker-limit deadlock (Kopf #1243): the
//! feeding happens in the watch tasks, not in the workers that wait.
//!
//! The contract is `HANDLER_KIND_INDEX` in `proto/operon/v1/handler.proto`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::core::backoff::Backoff;
use crate::core::indexing;
use crate::runtime::context::{Bound, ResourceCtx};
use crate::runtime::ports::Call;

/// The longest pause between two attempts to reach a service that does not answer.
const RETRY: Backoff = Backoff::SERVICE;

/// Holds every cycle until each indexed watch scope has fed its first listing.
#[derive(Debug)]
pub(crate) struct Gate {
    pending: tokio::sync::watch::Sender<usize>,
}

impl Gate {
    /// A gate that opens after `scopes` first listings; open at once when `scopes` is 0.
    pub(crate) fn new(scopes: usize) -> Self {
        Gate {
            pending: tokio::sync::watch::Sender::new(scopes),
        }
    }

    /// One watch scope has fed its first listing.
    pub(crate) fn listed(&self) {
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Whether every indexed scope has fed its first listing.
    pub(crate) fn is_open(&self) -> bool {
        *self.pending.borrow() == 0
    }

    /// Waits until the gate is open.
    pub(crate) async fn wait(&self) {
        if self.is_open() {
            return;
        }
        let mut rx = self.pending.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

pub(crate) use crate::core::indexing::{Event, Listing};

/// Tells every index handler of `res` about one event of one object. Returns when every handler
/// has answered: transport failures are retried with backoff (an index must not miss an event);
/// a handler's own error is logged and not retried (the service forgets the object's
/// contribution, as Kopf does).
pub(crate) async fn feed(res: &ResourceCtx, event: Event, body: &Value, call_timeout: Duration) {
    for bound in &res.indexers {
        deliver(res, bound, event.as_str(), body, call_timeout).await;
    }
}

/// Tells every index handler of `res` which objects of one watch scope (`namespace`, `None` for
/// all namespaces or a cluster-wide resource) exist after a complete listing.
pub(crate) async fn listed<'a>(
    res: &ResourceCtx,
    namespace: Option<&str>,
    objects: impl IntoIterator<Item = (&'a str, &'a str)>,
    call_timeout: Duration,
) {
    if res.indexers.is_empty() {
        return;
    }
    let body = indexing::listing_body(namespace, objects);
    for bound in &res.indexers {
        deliver(res, bound, indexing::LISTED, &body, call_timeout).await;
    }
}

async fn deliver(
    res: &ResourceCtx,
    bound: &Bound,
    event_type: &'static str,
    body: &Value,
    call_timeout: Duration,
) {
    let handler = &bound.handler;
    let object = indexing::object_name(body);
    let mut delay = RETRY.first;
    let body = Arc::new(body.clone());
    loop {
        let call = Call {
            event_type: event_type.to_owned(),
            ..Call::about(
                &handler.id,
                Arc::clone(&body),
                handler.options.call_timeout.unwrap_or(call_timeout),
                res.resolved(),
            )
        };
        match bound.service.invoke(call).await {
            Ok(answer) => {
                match indexing::failure(answer.result.as_ref()) {
                    None => {
                        tracing::debug!(object = %object, handler = %handler.id, event = event_type, "Indexing handler {:?} succeeded.", handler.id);
                    }
                    // The service words its own log line (Kopf's), as it does for every
                    // handler; the core's is for debugging only.
                    Some(message) => {
                        tracing::debug!(object = %object, handler = %handler.id, event = event_type, "Indexing handler {:?} failed: {}", handler.id, message);
                    }
                }
                return;
            }
            Err(err) => {
                tracing::warn!(service = bound.service.name(), handler = %handler.id, error = %err, retry_in = ?delay, "The handler service did not take an index event; retrying.");
                tokio::time::sleep(delay).await;
                delay = RETRY.next(delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_gate_opens_after_every_scope_listed() {
        let gate = Arc::new(Gate::new(2));
        assert!(!gate.is_open());
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.wait().await }
        });
        gate.listed();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.listed();
        waiter.await.unwrap();
        assert!(gate.is_open());
        // More than expected does not wrap around.
        gate.listed();
        assert!(gate.is_open());
        Gate::new(0).wait().await;
    }
}
