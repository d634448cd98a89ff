//! The registration's sync handlers, as the controller calls them: Sync and Finalize about a
//! parent and its current children, within the call's deadline.

use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use serde_json::Value;

use super::children::Children;
use crate::runtime::ports::{CallError, FinalizeAnswer, SyncAnswer, SyncPort, SyncRequest};

/// Calls the registration's handlers.
pub(super) struct Handler {
    /// The handler service's sync handlers.
    pub(super) port: Arc<dyn SyncPort>,
    /// The registration's id.
    pub(super) sync_id: String,
    /// How long a call may take.
    pub(super) deadline: Duration,
    /// The children (their groups, as the handler gets them).
    pub(super) children: Arc<Children>,
}

impl Handler {
    /// The request about a parent and its current children.
    fn request(
        &self,
        body: &Value,
        current: &[(usize, Arc<DynamicObject>)],
        finalizing: bool,
    ) -> SyncRequest {
        SyncRequest {
            sync_id: self.sync_id.clone(),
            parent: body.clone(),
            children: self.children.groups(current),
            finalizing,
            traceparent: crate::telemetry::traceparent(&tracing::Span::current()),
        }
    }

    /// Calls Sync about the parent `body` with its `current` children.
    pub(super) async fn sync(
        &self,
        body: &Value,
        current: &[(usize, Arc<DynamicObject>)],
    ) -> Result<SyncAnswer, CallError> {
        let request = self.request(body, current, false);
        self.port.sync(request, self.deadline).await
    }

    /// Calls Finalize about the deleted parent `body` with its `current` children.
    pub(super) async fn finalize(
        &self,
        body: &Value,
        current: &[(usize, Arc<DynamicObject>)],
    ) -> Result<FinalizeAnswer, CallError> {
        let request = self.request(body, current, true);
        self.port.finalize(request, self.deadline).await
    }
}
