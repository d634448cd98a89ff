//! The writes on a sync's parent: its status (the handler's and `syncError`), the finalizer, and
//! the Warning Events about it ([`ParentWriter`]); and what the parent is told about a refused or
//! partly refused sync ([`Reporter`]).

use std::sync::Arc;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::Key;
use super::state::Parents;
use crate::core::finalizer;
use crate::core::sync::{self as decide, Ended, Refused};
use crate::runtime::context::Context;
use crate::runtime::discovery::Served;
use crate::runtime::kit::{api_for, status_code};

/// The status could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the parent's status: {0}")]
pub(super) struct StatusError(#[source] kube::Error);

/// What finalizing did with the finalizer.
pub(super) enum Released {
    /// It is removed now.
    Removed,
    /// It was not there (or the parent is gone).
    Absent,
}

/// Writes on the parents of one sync registration.
pub(super) struct ParentWriter {
    /// The client, metrics, read model.
    pub(super) env: Arc<Context>,
    /// The parent resource.
    pub(super) parent: Served,
    /// The registration's finalizer.
    pub(super) finalizer: String,
}

impl ParentWriter {
    fn api(&self, body: &Value) -> Api<DynamicObject> {
        api_for(
            &self.env.client,
            &self.parent,
            body.pointer("/metadata/namespace").and_then(Value::as_str),
        )
    }

    /// Whether the parent carries the registration's finalizer.
    pub(super) fn has_finalizer(&self, body: &Value) -> bool {
        finalizer::is_blocked(body, &self.finalizer)
    }

    /// Writes the handler's `status` and the error (or its absence), if the parent has a status
    /// subresource and anything differs.
    pub(super) async fn status(
        &self,
        body: &Value,
        status: Option<&Value>,
        error: Option<&str>,
    ) -> Result<(), StatusError> {
        self.env.active.fence().await;
        if !self.parent.has_status {
            return Ok(());
        }
        let current = body.get("status").cloned().unwrap_or(Value::Null);
        let generation = body.pointer("/metadata/generation").and_then(Value::as_i64);
        let Some(patch) = decide::status_patch(&current, status, generation, error) else {
            return Ok(());
        };
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self
            .api(body)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": patch})),
            )
            .await
        {
            Ok(_) => {
                self.env.metrics.api("patch", 200);
                Ok(())
            }
            Err(err) => {
                self.env.metrics.api("patch", status_code(&err));
                Err(StatusError(err))
            }
        }
    }

    /// Posts a Warning Event about the parent.
    pub(super) async fn warn(&self, body: &Value, message: &str) {
        let to = crate::runtime::events::Poster {
            client: &self.env.client,
            metrics: &self.env.metrics,
            readmodel: &self.env.readmodel,
        };
        crate::runtime::events::post_to(&to, body, "Warning", "SyncFailed", message).await;
    }

    /// Adds the finalizer, guarded by the resourceVersion seen.
    pub(super) async fn add_finalizer(&self, body: &Value) -> Result<(), kube::Error> {
        match finalizer::block_deletion(body, &self.finalizer) {
            Some(ops) => self.json_patch(body, ops).await,
            None => Ok(()),
        }
    }

    /// Removes the finalizer, guarded by its position; a parent that is gone is no error.
    pub(super) async fn remove_finalizer(&self, body: &Value) -> Result<Released, kube::Error> {
        let finalizers: Vec<Value> = body
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(index) = finalizers
            .iter()
            .position(|f| f.as_str() == Some(self.finalizer.as_str()))
        else {
            return Ok(Released::Absent);
        };
        let ops = json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": self.finalizer},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]);
        match self.json_patch(body, ops).await {
            Ok(()) => Ok(Released::Removed),
            // A second look at a parent whose finalizer went a moment ago (a stale cache).
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Released::Absent),
            Err(err) => Err(err),
        }
    }

    async fn json_patch(&self, body: &Value, ops: Value) -> Result<(), kube::Error> {
        self.env.active.fence().await;
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
        match self
            .api(body)
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => {
                self.env.metrics.api("patch", 200);
                Ok(())
            }
            Err(err) => {
                self.env.metrics.api("patch", status_code(&err));
                Err(err)
            }
        }
    }
}

/// Tells a parent about a refused or partly refused sync.
pub(super) struct Reporter {
    /// Writes the status and the Events.
    pub(super) writer: Arc<ParentWriter>,
    /// The parents' last failures.
    pub(super) parents: Arc<Parents>,
}

impl Reporter {
    /// Refuses a response: nothing applied, the error in the status and an Event.
    pub(super) async fn refuse(&self, key: &Key, body: &Value, refused: &Refused) -> Ended {
        let message = refused.message();
        if let Err(e) = self.writer.status(body, None, Some(&message)).await {
            tracing::warn!(error = %e, "Cannot report the refusal in the status.");
        }
        self.report(key, body, &message).await;
        Ended::Reported(message)
    }

    /// Posts a Warning Event about the parent, once per distinct message in a row.
    pub(super) async fn report(&self, key: &Key, body: &Value, message: &str) {
        let repeated = self.parents.with(key, |s| s.errors.repeats(message));
        if !repeated {
            self.writer.warn(body, message).await;
        }
    }
}
