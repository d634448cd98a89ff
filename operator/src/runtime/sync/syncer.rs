//! The sync of one parent: under the parent's lock, call the handler with the parent and its
//! children, validate the answer, apply and delete children as planned, write the status, and
//! keep the parent's error count (the backoff) and its row in the read model.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use serde_json::Value;
use tracing::Instrument as _;

use super::Key;
use super::children::{Applied, Children, body_of};
use super::state::Parents;
use super::view::{Shown, view};
use super::writes::ParentWriter;
use crate::core::backoff::Backoff;
use crate::core::shutdown::Reason;
use crate::core::sync::{self as decide, ChildKey, Desired, Parent, Step};
use crate::runtime::context::Context;
use crate::runtime::locks;
use crate::runtime::ports::{SyncPort, SyncRequest, SyncSpec};
use crate::runtime::shutdown::{Gate, Shutdown};

/// How one sync of one parent ended.
pub(super) enum Ended {
    /// Synced (or nothing to do); sync again after this long, if set.
    Done(Option<Duration>),
    /// Failed: retried with backoff.
    Failed(String),
    /// Refused or partly refused: reported on the parent, retried with backoff.
    Reported(String),
}

/// Syncs the parents of one registration.
pub(super) struct Syncer {
    /// The client, metrics, read model, locks and settings.
    pub(super) env: Arc<Context>,
    /// The registration.
    pub(super) spec: SyncSpec,
    /// The handler service's sync handlers.
    pub(super) port: Arc<dyn SyncPort>,
    /// The parents and what is remembered about them.
    pub(super) parents: Parents,
    /// The children.
    pub(super) children: Children,
    /// Writes on the parents.
    pub(super) writer: ParentWriter,
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
        let span =
            tracing::info_span!("sync", sync = %self.spec.id, namespace = %key.0, name = %key.1);
        let ended = self.sync_body(key, &body).instrument(span).await;
        let (after, outcome) = match ended {
            Ended::Done(after) => {
                self.parents.with(key, |s| {
                    s.errors = 0;
                    s.last_error = None;
                });
                (after, "success")
            }
            Ended::Failed(message) | Ended::Reported(message) => {
                tracing::warn!(sync = %self.spec.id, namespace = %key.0, name = %key.1, error = %message, "The sync failed; retrying with backoff.");
                self.env.metrics.sync_error(&self.spec.id, &key.0, &key.1);
                let errors = self.parents.with(key, |s| {
                    s.errors += 1;
                    s.total_errors += 1;
                    s.last_error = Some(message);
                    s.errors
                });
                (Some(Backoff::OBJECT.after(errors)), "error")
            }
        };
        self.env.metrics.sync_call(&self.spec.id, outcome);
        self.publish(key, &body, after);
        after
    }

    fn publish(&self, key: &Key, body: &Value, after: Option<Duration>) {
        let errors = self
            .parents
            .with(key, |s| (s.errors, s.total_errors, s.last_error.clone()));
        let shown = Shown {
            resource: self.parents.served.name(),
            sync_id: &self.spec.id,
            key,
            body,
            errors,
            after,
            hook: self.shutdown.as_ref().and_then(|s| s.view(key)),
        };
        self.env
            .readmodel
            .upsert(view(shown, jiff::Timestamp::now()));
    }

    pub(super) fn deadline(&self) -> Duration {
        self.spec
            .call_timeout
            .unwrap_or(self.env.settings.call_timeout)
    }

    /// The request about a parent and its current children.
    pub(super) fn request(
        &self,
        body: &Value,
        current: &[(usize, Arc<DynamicObject>)],
        finalizing: bool,
    ) -> SyncRequest {
        SyncRequest {
            sync_id: self.spec.id.clone(),
            parent: body.clone(),
            children: self.children.groups(current),
            finalizing,
        }
    }

    /// Refuses a response: nothing applied, the error in the status and an Event.
    pub(super) async fn refuse(&self, key: &Key, body: &Value, message: &str) -> Ended {
        let message = format!("the sync response was refused: {message}");
        if let Err(e) = self.writer.status(body, None, Some(&message)).await {
            tracing::warn!(error = %e, "Cannot report the refusal in the status.");
        }
        self.report(key, body, &message).await;
        Ended::Reported(message)
    }

    /// Posts a Warning Event about the parent, once per distinct message in a row.
    async fn report(&self, key: &Key, body: &Value, message: &str) {
        let repeated = self
            .parents
            .with(key, |s| s.last_error.as_deref() == Some(message));
        if !repeated {
            self.writer.warn(body, message).await;
        }
    }

    async fn sync_body(&self, key: &Key, body: &Value) -> Ended {
        let deleting = body.pointer("/metadata/deletionTimestamp").is_some();
        let has_finalizer = self.writer.has_finalizer(body);
        if deleting {
            if !(self.spec.finalize && has_finalizer) {
                return Ended::Done(None);
            }
            // The application stops before Finalize and before any child goes.
            if let Some(shutdown) = &self.shutdown {
                match shutdown.gate(body, Reason::Delete).await {
                    Gate::Open => {}
                    Gate::Wait(after) => return Ended::Done(after),
                    Gate::Failed(message) => return Ended::Failed(message),
                }
            }
            return self.finalize(key, body).await;
        }
        if self.spec.finalize && !has_finalizer {
            // The watch brings the parent back with its finalizer, and it is synced then.
            return match self.writer.add_finalizer(body).await {
                Ok(()) => Ended::Done(None),
                Err(err) => Ended::Failed(format!("cannot add the finalizer: {err}")),
            };
        }
        self.sync(key, body).await
    }

    /// Calls Sync and performs its answer.
    async fn sync(&self, key: &Key, body: &Value) -> Ended {
        let parent = Parent::of(body);
        let current = self.children.current(&parent.uid);
        let request = self.request(body, &current, false);
        let response = match self.port.sync(request, self.deadline()).await {
            Ok(r) => r,
            Err(err) => return Ended::Failed(err.to_string()),
        };
        if let Some(error) = response.error {
            return Ended::Failed(format!("the sync handler failed: {error}"));
        }
        let status = match response.status {
            Ok(s) => s,
            Err(e) => {
                return self
                    .refuse(key, body, &format!("the status is not JSON: {e}"))
                    .await;
            }
        };
        if status.as_ref().is_some_and(|s| !s.is_object()) {
            return self
                .refuse(key, body, "the status must be a JSON object or null")
                .await;
        }
        if status.is_some() && !self.parents.served.has_status {
            return self
                .refuse(key, body, &format!("the sync handler returned a status, but {} has no status subresource; return a null status", self.parents.served.name()))
                .await;
        }
        let mut desired_children = Vec::with_capacity(response.children.len());
        for (i, child) in response.children.into_iter().enumerate() {
            match child {
                Ok(v) => desired_children.push(v),
                Err(e) => {
                    return self
                        .refuse(key, body, &format!("child #{i} is not JSON: {e}"))
                        .await;
                }
            }
        }
        let desired = match decide::validate(&parent, &self.children.types, desired_children) {
            Ok(d) => d,
            Err(invalid) => return self.refuse(key, body, &invalid.to_string()).await,
        };
        let observed = Children::observed(&current);
        let (rollouts, applied) = self
            .parents
            .with(key, |s| (s.rollouts.clone(), s.applied.clone()));
        let existing = |d: &Desired| self.children.existing(d, &parent.uid, &applied);
        let wanted: HashSet<ChildKey> = desired.iter().map(Desired::key).collect();
        let plan = decide::plan(
            &self.children.types,
            desired,
            &observed,
            existing,
            &rollouts,
        );
        let mut failures = Vec::new();
        // With a shutdown hook, children the answer no longer lists (a move) go only once the
        // application has stopped; creations and updates go on meanwhile.
        let (gate, removals) = self.replace_gate(body, &plan.steps, &wanted).await;
        let mut removal_failed = false;
        for step in plan.steps {
            let removal = matches!(&step, Step::Delete { key, .. } if !wanted.contains(key));
            if removal && gate != Gate::Open {
                continue;
            }
            let record = |change| {
                self.parents.with(key, |s| match change {
                    Applied::Now(child, seen) => {
                        s.applied.insert(child, seen);
                    }
                    Applied::Gone(child) => {
                        s.applied.remove(&child);
                    }
                });
            };
            if let Err(e) = self.children.perform(step, record).await {
                removal_failed |= removal;
                failures.push(e.to_string());
            }
        }
        if let Some(shutdown) = &self.shutdown
            && gate == Gate::Open
            && !removal_failed
            && let Err(e) = shutdown.clear(body).await
        {
            failures.push(e.to_string());
        }
        let gate_after = match gate {
            Gate::Failed(e) => {
                failures.push(e);
                None
            }
            Gate::Wait(after) if removals => after,
            _ => None,
        };
        self.parents
            .with(key, |s| s.rollouts = plan.rollouts.clone());
        let mut problems = plan.conflicts.clone();
        if !plan.conflicts.is_empty() {
            problems.insert(0, "children not applied (name conflicts):".to_owned());
        }
        let problem = (!problems.is_empty()).then(|| problems.join(" "));
        if let Err(e) = self
            .writer
            .status(body, status.as_ref(), problem.as_deref())
            .await
        {
            failures.push(e.to_string());
        }
        if let Some(problem) = problem {
            self.report(key, body, &problem).await;
            return Ended::Reported(problem);
        }
        if !failures.is_empty() {
            return Ended::Failed(failures.join("; "));
        }
        let mut after = response
            .resync_after
            .filter(|d| !d.is_zero())
            .or(self.spec.resync);
        if !plan.rollouts.is_empty() {
            // A rollout waits for a child to settle: look again soon even without an event.
            after = Some(after.map_or(Duration::from_secs(5), |a| a.min(Duration::from_secs(5))));
        }
        if let Some(wait) = gate_after {
            after = Some(after.map_or(wait, |a| a.min(wait)));
        }
        Ended::Done(after)
    }

    /// The shutdown hook's gate for the removals in `steps` (deletions of children that are
    /// not `wanted`), and whether there are any. Without removals a finished or pending replace
    /// handshake is cleared (gate open: nothing waits).
    async fn replace_gate(
        &self,
        body: &Value,
        steps: &[Step],
        wanted: &HashSet<ChildKey>,
    ) -> (Gate, bool) {
        let Some(shutdown) = &self.shutdown else {
            return (Gate::Open, false);
        };
        let removals = steps
            .iter()
            .any(|s| matches!(s, Step::Delete { key, .. } if !wanted.contains(key)));
        if removals {
            (shutdown.gate(body, Reason::Replace).await, true)
        } else {
            (Gate::Open, false)
        }
    }
}
