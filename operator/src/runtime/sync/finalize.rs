//! Finalizing a deleted parent: `Finalize` until the handler says it may go, its status written,
//! then the finalizer released.

use std::time::Duration;

use serde_json::Value;

use super::Key;
use super::syncer::{Ended, Syncer};
use super::writes::Released;
use crate::core::sync::Parent;

impl Syncer {
    /// Calls Finalize about a deleted parent and releases it when the handler is done.
    pub(super) async fn finalize(&self, key: &Key, body: &Value) -> Ended {
        let parent = Parent::of(body);
        let current = self.children.current(&parent.uid);
        let request = self.request(body, &current, true);
        let response = match self.port.finalize(request, self.deadline()).await {
            Ok(r) => r,
            Err(err) => return Ended::Failed(err.to_string()),
        };
        if let Some(error) = response.error {
            return Ended::Failed(format!("the finalize handler failed: {error}"));
        }
        let status = match response.status {
            Ok(s) => s,
            Err(e) => {
                return self
                    .refuse(key, body, &format!("the status is not JSON: {e}"))
                    .await;
            }
        };
        if status.is_some()
            && self.parents.served.has_status
            && let Err(e) = self.writer.status(body, status.as_ref(), None).await
        {
            return Ended::Failed(e.to_string());
        }
        if !response.finalized {
            let after = response
                .resync_after
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(5));
            return Ended::Done(Some(after));
        }
        match self.writer.remove_finalizer(body).await {
            Ok(Released::Removed) => {
                tracing::info!(sync = %self.spec.id, "Finalized; the finalizer is removed.");
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
