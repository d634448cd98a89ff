//! Finalizing a deleted parent: `Finalize` until the handler says it may go, its status written,
//! then the finalizer released.

use std::sync::Arc;

use serde_json::Value;

use super::Key;
use super::children::Children;
use super::handler::Handler;
use super::writes::{ParentWriter, Released, Reporter};
use crate::core::sync::{self as decide, Ended, Parent, Unusable};
use crate::runtime::shutdown::Shutdown;

/// Finalizes the deleted parents of a registration that finalizes.
pub(super) struct Finalizer {
    /// The handlers.
    pub(super) handler: Arc<Handler>,
    /// The children (sent with the call).
    pub(super) children: Arc<Children>,
    /// Writes the status and releases the finalizer.
    pub(super) writer: Arc<ParentWriter>,
    /// Tells the parent about refusals.
    pub(super) reporter: Arc<Reporter>,
    /// The registration's shutdown hook (forgets a finalized parent).
    pub(super) shutdown: Option<Arc<Shutdown>>,
    /// The registration's id.
    pub(super) sync_id: String,
}

impl Finalizer {
    /// Calls Finalize about a deleted parent and releases it when the handler is done.
    pub(super) async fn finalize(&self, key: &Key, body: &Value) -> Ended {
        let parent = Parent::of(body);
        let current = self.children.current(&parent.uid);
        let response = match self.handler.finalize(body, &current).await {
            Ok(r) => r,
            Err(err) => return Ended::Failed(err.to_string()),
        };
        let status = match decide::read_final(response.error, response.status) {
            Ok(s) => s,
            Err(Unusable::Failed(ended)) => return ended,
            Err(Unusable::Refused(refused)) => {
                return self.reporter.refuse(key, body, &refused).await;
            }
        };
        if status.is_some()
            && self.writer.parent.has_status
            && let Err(e) = self.writer.status(body, status.as_ref(), None).await
        {
            return Ended::Failed(e.to_string());
        }
        if let Some(after) = decide::finalize_again(response.finalized, response.resync_after) {
            return Ended::Done(Some(after));
        }
        match self.writer.remove_finalizer(body).await {
            Ok(Released::Removed) => {
                tracing::info!(sync = %self.sync_id, "Finalized; the finalizer is removed.");
                if let Some(shutdown) = &self.shutdown {
                    shutdown.forget(key);
                }
                Ended::Done(None)
            }
            Ok(Released::Absent) => Ended::Done(None),
            Err(err) => Ended::Failed(format!("cannot remove the finalizer: {err}")),
        }
    }
}
