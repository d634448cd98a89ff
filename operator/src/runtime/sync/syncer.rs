//! The sync of one parent: under the parent's lock, find it, do what its lifecycle asks
//! ([`crate::core::sync::lifecycle`]: finalize, add the finalizer, or sync), count the end
//! ([`crate::core::sync::Errors::settle`]: the backoff) and show the parent in the read model.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument as _;

use super::Key;
use super::apply::Applier;
use super::children::body_of;
use super::finalize::Finalizer;
use super::state::Parents;
use super::writes::ParentWriter;
use crate::core::shutdown::Reason;
use crate::core::sync::{self as decide, Ended, Lifecycle, Shown};
use crate::runtime::context::Context;
use crate::runtime::locks;
use crate::runtime::shutdown::Shutdown;

/// Syncs the parents of one registration, one parent at a time.
pub(super) struct Syncer {
    /// The locks, metrics and read model.
    pub(super) env: Arc<Context>,
    /// The registration's id.
    pub(super) sync_id: String,
    /// The registration finalizes its parents.
    pub(super) finalize: bool,
    /// The parents and what is remembered about them.
    pub(super) parents: Arc<Parents>,
    /// Adds the finalizer.
    pub(super) writer: Arc<ParentWriter>,
    /// Syncs a parent.
    pub(super) applier: Applier,
    /// Finalizes a deleted parent.
    pub(super) finalizer: Finalizer,
    /// The registration's shutdown hook.
    pub(super) shutdown: Option<Arc<Shutdown>>,
}

impl Syncer {
    /// Syncs one parent; returns when to sync it again.
    pub(super) async fn sync_one(&self, key: &Key) -> Option<Duration> {
        let served = &self.parents.served;
        let _parent_lock = self
            .env
            .locks
            .lock(locks::key(served, &key.0, &key.1))
            .await;
        let Some(parent) = self.parents.find(key) else {
            self.parents.forget(key);
            self.env.readmodel.remove(&served.name(), &key.0, &key.1);
            return None;
        };
        let Some(body) = body_of(parent.as_ref(), served) else {
            tracing::error!("Cannot serialise a parent.");
            return None;
        };
        if let Some(shard) = &self.env.shard
            && !shard.handles(&locks::key(served, &key.0, &key.1), &body)
        {
            // Sharding: another shard's now (the watch will say it left).
            return None;
        }
        let span =
            tracing::info_span!("sync", sync = %self.sync_id, namespace = %key.0, name = %key.1);
        // The pass's trace span (exported when tracing is on): a root, since the log span above
        // is not traced; the Sync/Finalize call carries its `traceparent`, so the service's spans
        // join it, and the writes are its `api` children.
        let traced = tracing::info_span!(
            target: crate::telemetry::TARGET,
            parent: &span,
            "sync",
            otel.name = format!("sync {}", self.sync_id),
            sync = %self.sync_id,
            namespace = %key.0,
            name = %key.1,
        );
        let ended = self
            .sync_body(key, &body)
            .instrument(traced)
            .instrument(span)
            .await;
        let settled = self.parents.with(key, |s| s.errors.settle(ended));
        if let Some(message) = &settled.failure {
            tracing::warn!(sync = %self.sync_id, namespace = %key.0, name = %key.1, error = %message, "The sync failed; retrying with backoff.");
            self.env.metrics.sync_error(&self.sync_id, &key.0, &key.1);
        }
        self.env.metrics.sync_call(&self.sync_id, settled.outcome);
        self.publish(key, &body, settled.after);
        settled.after
    }

    fn publish(&self, key: &Key, body: &Value, after: Option<Duration>) {
        let shown = Shown {
            resource: self.parents.served.name(),
            sync_id: &self.sync_id,
            key,
            body,
            errors: self.parents.with(key, |s| s.errors.clone()),
            after,
            hook: self.shutdown.as_ref().and_then(|s| s.view(key)),
        };
        self.env
            .readmodel
            .upsert(decide::view(shown, jiff::Timestamp::now()));
    }

    async fn sync_body(&self, key: &Key, body: &Value) -> Ended {
        let deleting = body.pointer("/metadata/deletionTimestamp").is_some();
        let has_finalizer = self.writer.has_finalizer(body);
        match decide::lifecycle(deleting, self.finalize, has_finalizer) {
            Lifecycle::Leave => Ended::Done(None),
            Lifecycle::Finalize => {
                // The application stops before Finalize and before any child goes.
                if let Some(shutdown) = &self.shutdown
                    && let Some(held) = Ended::held(shutdown.gate(body, Reason::Delete).await)
                {
                    return held;
                }
                self.finalizer.finalize(key, body).await
            }
            // The watch brings the parent back with its finalizer, and it is synced then.
            Lifecycle::AddFinalizer => match self.writer.add_finalizer(body).await {
                Ok(()) => Ended::Done(None),
                Err(err) => Ended::Failed(format!("cannot add the finalizer: {err}")),
            },
            Lifecycle::Sync => self.applier.sync(key, body).await,
        }
    }
}
