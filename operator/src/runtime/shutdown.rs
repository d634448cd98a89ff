//! The shutdown hook, the effects: minting per-parent tokens, calling the application's endpoint,
//! persisting the handshake in the parent's `status.shutdown`, and serving the application's
//! callback (`PUT /api/v1/shutdown/<resource>/<namespace>/<name>` on the core's HTTP listener,
//! `_` as the namespace of a cluster-wide parent). The decisions are in
//! [`crate::core::shutdown`].
//!
//! One [`Shutdown`] belongs to one sync registration with a hook; the sync controller asks it
//! for a [`Gate`] before it deletes children, and registers it in [`Callbacks`] so that the
//! listener finds it by the parent's resource.
//!
//! # Guarantees
//! - The token is random (256 bits from the system's generator), sent only to the application;
//!   the parent stores its SHA-256, so a restarted core still accepts the callback.
//! - Every write of the state is guarded by the parent's `resourceVersion`: a callback and a
//!   timed-out retry never overwrite each other; the loser tries again on fresh data.
//! - A wrong or missing token changes nothing (401, a log line and a Warning Event).
//! - Every transition posts an Event: `ShutdownRequested`, `ShutdownRequestFailed`,
//!   `ShutdownTimedOut`, `ShutdownConfirmed`, `ShutdownFailed`, `ShutdownCallbackRefused`.
//!
//! # Caveats
//! - The raw token lives in memory only: an attempt made after a restart of the core sends a
//!   fresh token, and from then on only the fresh one is accepted.
//! - Only `http://` endpoints are called. The call has a timeout (at most 10 s); a connection
//!   error or timeout is a failed attempt (asked again after the grace period), a `404` means
//!   "already gone" (stopped), any other answer means "requested".
//! - One hook per parent resource: two sync registrations with hooks on the same parent
//!   resource would share `status.shutdown`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Api;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::core::shutdown::{
    self as decide, Callback, Decision, Hook, Reached, Reason, STATUS_KEY, State, Target,
};
use crate::runtime::discovery::Served;
use crate::runtime::kit::Locked;
use crate::runtime::metrics::Metrics;
use crate::runtime::readmodel::ReadModel;

mod callbacks;
mod endpoint;

pub(crate) use crate::core::shutdown::{Answer, Called, Gate};
pub(crate) use callbacks::Callbacks;
pub(crate) use endpoint::{call, mint_token};

/// A parent: namespace ("" for cluster-wide) and name.
pub(crate) type Key = (String, String);

/// Writing the handshake's state failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The API server refused the patch (409: the parent changed meanwhile).
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// The patch was accepted but `status.shutdown` is not there: the parent's schema prunes it.
    #[error(
        "the parent's schema drops status.shutdown; allow it (e.g. x-kubernetes-preserve-unknown-fields on status)"
    )]
    Dropped,
}

impl WriteError {
    fn conflict(&self) -> bool {
        matches!(self, WriteError::Api(kube::Error::Api(s)) if s.code == 409)
    }
}

/// The shutdown hook of one sync registration.
pub(crate) struct Shutdown {
    /// The hook.
    pub hook: Hook,
    /// The sync registration's id.
    pub sync_id: String,
    /// The parent resource's callback path segment.
    pub resource: String,
    client: kube::Client,
    parent: Served,
    namespaces: Vec<String>,
    metrics: Arc<Metrics>,
    readmodel: Arc<ReadModel>,
    callback_base: String,
    wake: mpsc::UnboundedSender<Key>,
    /// Per parent: the raw token of the current handshake and its hash.
    tokens: Mutex<HashMap<Key, (String, String)>>,
    /// Per parent: the last state seen or written (for the read model).
    seen: Mutex<HashMap<Key, State>>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("sync_id", &self.sync_id)
            .field("hook", &self.hook)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("sync_id", &self.sync_id)
            .field("resource", &self.resource)
            .field("hook", &self.hook)
            .finish_non_exhaustive()
    }
}

/// What a [`Shutdown`] needs from its sync controller.
pub(crate) struct Setup {
    /// The hook.
    pub hook: Hook,
    /// The sync registration's id.
    pub sync_id: String,
    /// The Kubernetes client.
    pub client: kube::Client,
    /// The parent resource.
    pub parent: Served,
    /// Namespaces served; empty means all.
    pub namespaces: Vec<String>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The read model (Events).
    pub readmodel: Arc<ReadModel>,
    /// The core's URL as the application reaches it (`--callback-url`).
    pub callback_base: String,
    /// Wakes the sync controller for a parent.
    pub wake: mpsc::UnboundedSender<Key>,
}

/// Clearing a finished handshake failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot clear status.shutdown: {0}")]
pub(crate) struct ClearFailed(#[source] WriteError);

fn key_of(body: &Value) -> Key {
    let s = |p: &str| {
        body.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

impl Shutdown {
    /// A hook for one sync registration.
    pub(crate) fn new(setup: Setup) -> Arc<Shutdown> {
        Arc::new(Shutdown {
            resource: decide::resource_segment(
                &setup.parent.resource.plural,
                &setup.parent.resource.group,
            ),
            hook: setup.hook,
            sync_id: setup.sync_id,
            client: setup.client,
            parent: setup.parent,
            namespaces: setup.namespaces,
            metrics: setup.metrics,
            readmodel: setup.readmodel,
            callback_base: setup.callback_base,
            wake: setup.wake,
            tokens: Mutex::default(),
            seen: Mutex::default(),
        })
    }

    /// The last state seen or written for a parent (for the read model).
    pub(crate) fn view(&self, key: &Key) -> Option<State> {
        self.seen.locked().get(key).cloned()
    }

    /// Forgets a parent that is gone.
    pub(crate) fn forget(&self, key: &Key) {
        self.seen.locked().remove(key);
        self.tokens.locked().remove(key);
    }

    fn remember(&self, key: &Key, state: Option<&State>) {
        let mut seen = self.seen.locked();
        match state {
            Some(s) => {
                seen.insert(key.clone(), s.clone());
            }
            None => {
                seen.remove(key);
            }
        }
    }

    fn wake(&self, namespace: &str, name: &str) {
        let ns = decide::namespace_of(namespace);
        let _ = self.wake.send((ns.to_owned(), name.to_owned()));
    }

    fn api(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if self.parent.namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &self.parent.resource)
            }
            _ => Api::all_with(self.client.clone(), &self.parent.resource),
        }
    }

    async fn event(&self, about: &Value, type_: &str, reason: &str, message: &str) {
        let to = crate::runtime::events::Poster {
            client: &self.client,
            metrics: &self.metrics,
            readmodel: &self.readmodel,
        };
        crate::runtime::events::post_to(&to, about, type_, reason, message).await;
    }

    /// Writes `state` (`None`: removes it) into the parent's `status.shutdown`, guarded by the
    /// body's `resourceVersion`; returns the parent's new `resourceVersion`.
    async fn write(&self, body: &Value, state: Option<&State>) -> Result<String, WriteError> {
        let (ns, name) = key_of(body);
        let rv = body
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let patch = json!({
            "metadata": {"resourceVersion": rv},
            "status": {STATUS_KEY: state.map_or(Value::Null, State::to_value)},
        });
        let api = self.api((!ns.is_empty()).then_some(ns.as_str()));
        let params = PatchParams::default();
        let result = if self.parent.has_status {
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await
        } else {
            api.patch(&name, &params, &Patch::Merge(&patch)).await
        };
        match result {
            Ok(obj) => {
                self.metrics.api("patch", 200);
                if state.is_some() && obj.data.pointer("/status/shutdown").is_none() {
                    return Err(WriteError::Dropped);
                }
                self.remember(&(ns, name), state);
                Ok(obj.metadata.resource_version.unwrap_or_default())
            }
            Err(err) => {
                self.metrics
                    .api("patch", crate::runtime::kit::status_code(&err));
                Err(err.into())
            }
        }
    }

    /// Whether the parent's children may go now for `reason`; advances the handshake (asks the
    /// application, retries, applies the failure strategy) as the stored state and the clock
    /// say.
    pub(crate) async fn gate(&self, body: &Value, reason: Reason) -> Gate {
        let key = key_of(body);
        let stored = match State::of(body) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(namespace = %key.0, name = %key.1, error = %err, "The parent's status.shutdown is unreadable; starting the handshake over.");
                None
            }
        };
        self.remember(&key, stored.as_ref());
        let now = jiff::Timestamp::now();
        match decide::decide(stored.as_ref(), &self.hook, reason, now) {
            Decision::Proceed => Gate::Open,
            Decision::Hold => Gate::Wait(None),
            Decision::Wait { until } => Gate::Wait(Some(decide::wait_until(now, until))),
            Decision::Request { attempt, timed_out } => {
                self.request(body, stored.as_ref(), reason, attempt, timed_out)
                    .await
            }
            Decision::GiveUp | Decision::ForceDelete => {
                let Some(stored) = stored else {
                    return Gate::Failed("no handshake to fail".to_owned());
                };
                let failure = decide::give_up(&stored, &self.hook);
                if let Err(err) = self.write(body, Some(&failure.state)).await {
                    return Gate::Failed(format!("cannot record the failed shutdown: {err}"));
                }
                tracing::warn!(sync = %self.sync_id, namespace = %key.0, name = %key.1, strategy = %self.hook.failure, "The application did not confirm its shutdown.");
                self.event(body, "Warning", "ShutdownFailed", &failure.state.message)
                    .await;
                failure.gate
            }
        }
    }

    /// Makes attempt `attempt`: records the waiting state first (so the callback can be
    /// checked), then calls the application.
    async fn request(
        &self,
        body: &Value,
        stored: Option<&State>,
        reason: Reason,
        attempt: u32,
        timed_out: bool,
    ) -> Gate {
        let key = key_of(body);
        let uid = body
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let target = Target {
            namespace: (!key.0.is_empty()).then_some(key.0.as_str()),
            name: &key.1,
            uid: &uid,
        };
        // The same token for every attempt of one handshake, while this core knows it.
        let known = self.tokens.locked().get(&key).cloned();
        let (token, hash) = match known {
            Some((t, h)) if decide::reuses_token(attempt, stored, Some(&h)) => (t, h),
            _ => match mint_token() {
                Ok(t) => {
                    let h = decide::token_sha256(&t);
                    (t, h)
                }
                Err(e) => return Gate::Failed(e.to_string()),
            },
        };
        let now = jiff::Timestamp::now();
        let waiting = State::waiting(&self.hook, reason, attempt, now, hash.clone());
        let rv = match self.write(body, Some(&waiting)).await {
            Ok(rv) => rv,
            Err(err) => return Gate::Failed(format!("cannot record the shutdown request: {err}")),
        };
        self.tokens
            .locked()
            .insert(key.clone(), (token.clone(), hash));
        if timed_out {
            let message = decide::timed_out_message(&self.hook, attempt);
            tracing::warn!(sync = %self.sync_id, namespace = %key.0, name = %key.1, attempt, "The shutdown timed out; asking again.");
            self.event(body, "Warning", "ShutdownTimedOut", &message)
                .await;
        }
        let callback = decide::callback_url(
            &self.callback_base,
            &self.resource,
            target.namespace,
            target.name,
        );
        let (called, url) = match self.hook.url(target) {
            Ok(url) => {
                let payload = decide::request_body(&token, &callback, reason, target);
                (call(&url, &payload, self.hook.call_timeout()).await, url)
            }
            Err(err) => (Called::Failed(err.to_string()), String::new()),
        };
        let mut current = body.clone();
        if let Some(m) = current.pointer_mut("/metadata/resourceVersion") {
            *m = json!(rv);
        }
        match decide::reached(called, &url, &waiting, &self.hook, reason, attempt) {
            Reached::Gone(stopped) => {
                if let Err(err) = self.write(&current, Some(&stopped)).await {
                    return Gate::Failed(format!("cannot record the stopped application: {err}"));
                }
                tracing::info!(sync = %self.sync_id, namespace = %key.0, name = %key.1, "The application is already gone (404).");
                self.event(body, "Normal", "ShutdownConfirmed", &stopped.message)
                    .await;
                Gate::Open
            }
            Reached::Asked { code, message } => {
                tracing::info!(sync = %self.sync_id, namespace = %key.0, name = %key.1, %url, code, attempt, "Asked the application to stop.");
                self.event(body, "Normal", "ShutdownRequested", &message)
                    .await;
                Gate::Wait(Some(self.hook.grace))
            }
            Reached::Unreached { error, state } => {
                tracing::warn!(sync = %self.sync_id, namespace = %key.0, name = %key.1, %url, error = %error, attempt, "Cannot reach the application's shutdown endpoint.");
                // Best effort: a conflict means something newer is there (e.g. a callback).
                let _ = self.write(&current, Some(&state)).await;
                self.event(body, "Warning", "ShutdownRequestFailed", &state.message)
                    .await;
                Gate::Wait(Some(self.hook.grace))
            }
        }
    }

    /// Removes a finished replace handshake (the children it was about are gone), so that the
    /// next move asks the application again.
    ///
    /// # Errors
    /// The failed write.
    pub(crate) async fn clear(&self, body: &Value) -> Result<(), ClearFailed> {
        let key = key_of(body);
        if !State::present(body) {
            self.remember(&key, None);
            return Ok(());
        }
        match self.write(body, None).await {
            Ok(_) => {}
            // The parent changed meanwhile: its watch event brings the next sync, which clears.
            Err(err) if err.conflict() => return Ok(()),
            Err(err) => return Err(ClearFailed(err)),
        }
        self.tokens.locked().remove(&key);
        Ok(())
    }

    /// Judges a callback for the parent `namespace`/`name` (`_`: cluster-wide) with `body`
    /// (`{"token": "..."}`).
    pub(crate) async fn confirm(&self, namespace: &str, name: &str, body: &[u8]) -> Answer {
        let token = match decide::callback_token(body) {
            Ok(token) => token,
            Err(answer) => return answer,
        };
        if !decide::known_parent(namespace, name, self.parent.namespaced, &self.namespaces) {
            return Answer::no_such_parent(namespace, name);
        }
        let cluster = namespace == decide::CLUSTER_SCOPE;
        let api = self.api((!cluster).then_some(namespace));
        for _ in 0..5 {
            // A list by name (a consistent read): the core's RBAC has `list`, not `get`.
            let params = ListParams::default().fields(&format!("metadata.name={name}"));
            let parent = match api.list(&params).await {
                Ok(list) => match list.items.into_iter().next() {
                    Some(p) => p,
                    None => return Answer::no_such_parent(namespace, name),
                },
                Err(err) => return Answer::Unavailable(format!("cannot read the parent: {err}")),
            };
            let mut body = match serde_json::to_value(&parent) {
                Ok(b) => b,
                Err(err) => return Answer::Unavailable(format!("cannot read the parent: {err}")),
            };
            if let Some(map) = body.as_object_mut() {
                map.insert("apiVersion".into(), json!(self.parent.resource.api_version));
                map.insert("kind".into(), json!(self.parent.resource.kind));
            }
            let stored = match State::of(&body) {
                Ok(s) => s,
                Err(err) => {
                    return Answer::Unknown(format!("status.shutdown is unreadable: {err}"));
                }
            };
            match decide::on_callback(stored.as_ref(), &token) {
                Callback::NotPending => {
                    return Answer::Unknown(format!(
                        "no shutdown is pending for {namespace}/{name}"
                    ));
                }
                Callback::AlreadyDone => return Answer::AlreadyDone,
                Callback::Refuse => {
                    let message = decide::refusal(&token);
                    tracing::warn!(sync = %self.sync_id, namespace, name, "{message}");
                    self.event(&body, "Warning", "ShutdownCallbackRefused", message)
                        .await;
                    return Answer::Refused;
                }
                Callback::Confirm(stopped) => match self.write(&body, Some(&stopped)).await {
                    Ok(_) => {
                        tracing::info!(sync = %self.sync_id, namespace, name, "The application confirmed its shutdown.");
                        self.event(&body, "Normal", "ShutdownConfirmed", &stopped.message)
                            .await;
                        self.wake(namespace, name);
                        return Answer::Confirmed;
                    }
                    Err(err) if err.conflict() => continue,
                    Err(err) => {
                        return Answer::Unavailable(format!(
                            "cannot record the confirmation: {err}"
                        ));
                    }
                },
            }
        }
        Answer::Unavailable("the parent kept changing; try again".to_owned())
    }
}

#[cfg(test)]
mod tests;
