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
use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::core::shutdown::{
    self as decide, Callback, Decision, Hook, Phase, Reason, STATUS_KEY, State, Target,
};
use crate::runtime::discovery::Served;
use crate::runtime::kit::Locked;
use crate::runtime::metrics::Metrics;
use crate::runtime::readmodel::ReadModel;

mod callbacks;
mod endpoint;

pub use callbacks::Callbacks;
pub use endpoint::{NoRandomness, call, mint_token};

/// A parent: namespace ("" for cluster-wide) and name.
pub type Key = (String, String);

/// Writing the handshake's state failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
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

/// What the sync controller may do with the children now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The application stopped (or the failure strategy says delete): go on.
    Open,
    /// Not yet: look again after this long (`None`: only on a change, e.g. degraded).
    Wait(Option<Duration>),
    /// The handshake could not be advanced (e.g. a conflicting write); retry with backoff.
    Failed(String),
}

/// How the endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Called {
    /// Any answer but 404: the request is taken.
    Accepted(u16),
    /// 404: the application is already gone.
    Gone,
    /// No answer (connection error, timeout, bad URL).
    Failed(String),
}

/// The answer to a callback, as the listener turns it into HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: confirmed; the state is now Stopped.
    Confirmed,
    /// 200: the handshake was already over; nothing changed.
    AlreadyDone,
    /// 401: wrong or missing token; nothing changed.
    Refused,
    /// 404: no such parent, or no shutdown pending on it.
    Unknown(String),
    /// 400: the body is not a JSON object.
    Malformed(String),
    /// 503: the state could not be read or written (API server trouble).
    Unavailable(String),
}

impl Answer {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            Answer::Confirmed | Answer::AlreadyDone => 200,
            Answer::Refused => 401,
            Answer::Unknown(_) => 404,
            Answer::Malformed(_) => 400,
            Answer::Unavailable(_) => 503,
        }
    }

    /// A short text for the response body.
    pub fn message(&self) -> String {
        match self {
            Answer::Confirmed => "confirmed".to_owned(),
            Answer::AlreadyDone => "already confirmed".to_owned(),
            Answer::Refused => "wrong or missing token".to_owned(),
            Answer::Unknown(m) | Answer::Malformed(m) | Answer::Unavailable(m) => m.clone(),
        }
    }
}

/// The shutdown hook of one sync registration.
pub struct Shutdown {
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
pub struct Setup {
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
pub struct ClearFailed(#[source] WriteError);

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
    pub fn new(setup: Setup) -> Arc<Shutdown> {
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
    pub fn view(&self, key: &Key) -> Option<State> {
        self.seen.locked().get(key).cloned()
    }

    /// Forgets a parent that is gone.
    pub fn forget(&self, key: &Key) {
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
        let ns = if namespace == decide::CLUSTER_SCOPE {
            ""
        } else {
            namespace
        };
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
    pub async fn gate(&self, body: &Value, reason: Reason) -> Gate {
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
            Decision::Wait { until } => Gate::Wait(Some(until_from(now, until))),
            Decision::Request { attempt, timed_out } => {
                self.request(body, stored.as_ref(), reason, attempt, timed_out)
                    .await
            }
            Decision::GiveUp | Decision::ForceDelete => {
                let Some(stored) = stored else {
                    return Gate::Failed("no handshake to fail".to_owned());
                };
                let give_up = self.hook.failure == decide::FailureStrategy::GiveUp;
                let what = if give_up {
                    "the children are kept and the parent is degraded; remove status.shutdown to try again"
                } else {
                    "deleting the children anyway"
                };
                let message = format!(
                    "the application did not confirm its shutdown ({}) after {} attempt(s) of {:?}; failure strategy {}: {what}",
                    stored.reason.as_str(),
                    stored.attempts,
                    self.hook.grace,
                    self.hook.failure
                );
                let phase = if give_up {
                    Phase::Degraded
                } else {
                    Phase::ForcedDelete
                };
                let next = stored.moved(phase, message.clone());
                if let Err(err) = self.write(body, Some(&next)).await {
                    return Gate::Failed(format!("cannot record the failed shutdown: {err}"));
                }
                tracing::warn!(sync = %self.sync_id, namespace = %key.0, name = %key.1, strategy = %self.hook.failure, "The application did not confirm its shutdown.");
                self.event(body, "Warning", "ShutdownFailed", &message)
                    .await;
                if give_up {
                    Gate::Wait(None)
                } else {
                    Gate::Open
                }
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
            Some((t, h)) if attempt > 1 && stored.is_some_and(|s| s.token_sha256 == h) => (t, h),
            _ => match mint_token() {
                Ok(t) => {
                    let h = decide::token_sha256(&t);
                    (t, h)
                }
                Err(e) => return Gate::Failed(e.to_string()),
            },
        };
        let now = jiff::Timestamp::now();
        let mut waiting = State::waiting(&self.hook, reason, attempt, now, hash.clone());
        let rv = match self.write(body, Some(&waiting)).await {
            Ok(rv) => rv,
            Err(err) => return Gate::Failed(format!("cannot record the shutdown request: {err}")),
        };
        self.tokens
            .locked()
            .insert(key.clone(), (token.clone(), hash));
        if timed_out {
            let message = format!(
                "no confirmation within {:?}; asking the application again (attempt {attempt} of {})",
                self.hook.grace,
                self.hook.attempts()
            );
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
        let called = match self.hook.url(target) {
            Ok(url) => {
                let payload = decide::request_body(&token, &callback, reason, target);
                let timeout = self
                    .hook
                    .grace
                    .clamp(Duration::from_secs(1), Duration::from_secs(10));
                (call(&url, &payload, timeout).await, url)
            }
            Err(err) => (Called::Failed(err.to_string()), String::new()),
        };
        let mut current = body.clone();
        if let Some(m) = current.pointer_mut("/metadata/resourceVersion") {
            *m = json!(rv);
        }
        match called {
            (Called::Gone, url) => {
                let stopped = waiting.moved(
                    Phase::Stopped,
                    format!(
                        "the shutdown endpoint {url} answered 404: the application is already gone"
                    ),
                );
                if let Err(err) = self.write(&current, Some(&stopped)).await {
                    return Gate::Failed(format!("cannot record the stopped application: {err}"));
                }
                tracing::info!(sync = %self.sync_id, namespace = %key.0, name = %key.1, "The application is already gone (404).");
                self.event(body, "Normal", "ShutdownConfirmed", &stopped.message)
                    .await;
                Gate::Open
            }
            (Called::Accepted(code), url) => {
                tracing::info!(sync = %self.sync_id, namespace = %key.0, name = %key.1, %url, code, attempt, "Asked the application to stop.");
                let message = format!(
                    "asked the application to stop ({}) at {url}, attempt {attempt} of {}; waiting up to {:?} for its callback",
                    reason.as_str(),
                    self.hook.attempts(),
                    self.hook.grace
                );
                self.event(body, "Normal", "ShutdownRequested", &message)
                    .await;
                Gate::Wait(Some(self.hook.grace))
            }
            (Called::Failed(err), url) => {
                tracing::warn!(sync = %self.sync_id, namespace = %key.0, name = %key.1, %url, error = %err, attempt, "Cannot reach the application's shutdown endpoint.");
                let message = format!(
                    "cannot reach the shutdown endpoint {url}: {err} (attempt {attempt} of {}; the next one after {:?})",
                    self.hook.attempts(),
                    self.hook.grace
                );
                waiting.message.clone_from(&message);
                // Best effort: a conflict means something newer is there (e.g. a callback).
                let _ = self.write(&current, Some(&waiting)).await;
                self.event(body, "Warning", "ShutdownRequestFailed", &message)
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
    pub async fn clear(&self, body: &Value) -> Result<(), ClearFailed> {
        let key = key_of(body);
        if body.pointer("/status/shutdown").is_none_or(Value::is_null) {
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
    pub async fn confirm(&self, namespace: &str, name: &str, body: &[u8]) -> Answer {
        let token = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            Ok(_) => return Answer::Malformed("the body must be a JSON object".to_owned()),
            Err(err) => return Answer::Malformed(format!("the body is not JSON: {err}")),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        let cluster = namespace == decide::CLUSTER_SCOPE;
        if !valid(name) || !(cluster || valid(namespace)) {
            return Answer::Unknown(format!("no such parent: {namespace}/{name}"));
        }
        if cluster == self.parent.namespaced
            || (!cluster
                && !self.namespaces.is_empty()
                && !self.namespaces.iter().any(|n| n == namespace))
        {
            return Answer::Unknown(format!("no such parent: {namespace}/{name}"));
        }
        let api = self.api((!cluster).then_some(namespace));
        for _ in 0..5 {
            // A list by name (a consistent read): the core's RBAC has `list`, not `get`.
            let params = ListParams::default().fields(&format!("metadata.name={name}"));
            let parent = match api.list(&params).await {
                Ok(list) => match list.items.into_iter().next() {
                    Some(p) => p,
                    None => {
                        return Answer::Unknown(format!("no such parent: {namespace}/{name}"));
                    }
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
                    let message = if token.is_empty() {
                        "a shutdown callback without a token was refused".to_owned()
                    } else {
                        "a shutdown callback with a wrong token was refused".to_owned()
                    };
                    tracing::warn!(sync = %self.sync_id, namespace, name, "{message}");
                    self.event(&body, "Warning", "ShutdownCallbackRefused", &message)
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

fn until_from(now: jiff::Timestamp, until: jiff::Timestamp) -> Duration {
    let d = until.duration_since(now);
    // A little after the deadline, so that the next look finds it passed.
    Duration::try_from(d).unwrap_or_default() + Duration::from_millis(50)
}

#[cfg(test)]
mod tests;
