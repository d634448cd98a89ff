//! The shutdown hook (Krake's): the pure half.
//!
//! Before the core deletes a parent's children — all of them because the parent is being deleted
//! ([`Reason::Delete`]), or some because the sync answer no longer lists them
//! ([`Reason::Replace`]) — it asks the application to stop and waits for its confirmation. This
//! module holds the per-parent state machine ([`State`], [`decide`], [`on_callback`]), where the
//! application is reached ([`Hook::url`]) and how its per-parent token is checked
//! ([`token_sha256`], [`same`]), and the steps around the state machine (what a failed
//! handshake records, what the endpoint's answer means, how a callback is read: [`Gate`],
//! [`give_up`], [`reached`], [`callback_token`]). The runtime (`runtime::shutdown`) mints the tokens, makes the
//! HTTP calls, persists the state in the parent's `status.shutdown` and serves the callback.
//!
//! ```text
//!            request (attempt 1)           callback with the token / endpoint answers 404
//!   (none) ─────────────────────▶ Waiting ─────────────────────────────────────────▶ Stopped ─▶ go on
//!                                  │   ▲
//!              deadline passed,    │   │ request again (attempt n+1): ShutdownTimedOut
//!              attempts left ──────┘───┘
//!                                  │ deadline passed, no attempts left: failure strategy
//!                                  ├─ GIVE_UP ─▶ Degraded (children kept; a callback still counts)
//!                                  └─ DELETE ──▶ ForcedDelete ─▶ go on
//! ```

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod flow;

pub use flow::{
    Answer, Called, Failure, Gate, Reached, callback_token, give_up, known_parent, namespace_of,
    reached, refusal, reuses_token, timed_out_message, wait_until,
};

/// The key of the hook's state in the parent's `status`.
pub const STATUS_KEY: &str = "shutdown";
/// How long one attempt waits for the callback when the hook names no grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// The path segment that stands for "no namespace" in the callback URL of a cluster-wide parent
/// (`_` is never a namespace name).
pub const CLUSTER_SCOPE: &str = "_";

/// Where the application's shutdown endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Service in the parent's namespace (`{name}` in it is replaced by the parent's name),
    /// called at `http://SERVICE.NAMESPACE.svc:PORT/shutdown`.
    Service {
        /// The Service's name (template).
        name: String,
        /// Its port.
        port: u16,
    },
    /// A URL template: `{namespace}`, `{name}` and `{uid}` are replaced by the parent's.
    Template(String),
}

/// What happens when the application never confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureStrategy {
    /// Leave the children alone and mark the parent degraded; a person decides.
    #[default]
    GiveUp,
    /// Delete (or replace) the children anyway.
    Delete,
}

impl std::fmt::Display for FailureStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureStrategy::GiveUp => "GIVE_UP",
            FailureStrategy::Delete => "DELETE",
        })
    }
}

/// A registration's shutdown hook, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Where to call.
    pub endpoint: Endpoint,
    /// How long one attempt waits for the callback.
    pub grace: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// What happens after the last attempt.
    pub failure: FailureStrategy,
}

/// Why the hook's endpoint cannot be called for a parent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The Service form needs the parent's namespace.
    #[error("the shutdown hook names a Service, but the parent is cluster-wide (no namespace)")]
    NoNamespace,
    /// The URL does not start with `http://` (the only scheme the core calls).
    #[error("the shutdown URL {0:?} does not start with http://")]
    Scheme(String),
}

/// The parent the hook is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// Namespace; `None` for a cluster-wide parent.
    pub namespace: Option<&'a str>,
    /// Name.
    pub name: &'a str,
    /// UID.
    pub uid: &'a str,
}

impl Hook {
    /// All attempts: the first plus the retries.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The application's endpoint for `target`.
    ///
    /// # Errors
    /// [`EndpointError`] when the Service form meets a cluster-wide parent, or the URL is not
    /// `http://`.
    pub fn url(&self, target: Target<'_>) -> Result<String, EndpointError> {
        let url = match &self.endpoint {
            Endpoint::Service { name, port } => {
                let ns = target.namespace.ok_or(EndpointError::NoNamespace)?;
                let service = name.replace("{name}", target.name);
                format!("http://{service}.{ns}.svc:{port}/shutdown")
            }
            Endpoint::Template(t) => t
                .replace("{namespace}", target.namespace.unwrap_or_default())
                .replace("{name}", target.name)
                .replace("{uid}", target.uid),
        };
        if url.starts_with("http://") {
            Ok(url)
        } else {
            Err(EndpointError::Scheme(url))
        }
    }
}

/// Why the children go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The parent is being deleted.
    Delete,
    /// The sync answer no longer lists some children (a move or a replacement).
    Replace,
}

impl Reason {
    /// `delete` or `replace`, as sent to the application.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Delete => "delete",
            Reason::Replace => "replace",
        }
    }
}

/// Where a parent's handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The application was asked to stop; waiting for its callback until the deadline.
    Waiting,
    /// The application confirmed (or its endpoint said it is gone): the children may go.
    Stopped,
    /// No confirmation after every attempt, failure strategy GIVE_UP: children kept.
    Degraded,
    /// No confirmation after every attempt, failure strategy DELETE: the children go anyway.
    ForcedDelete,
}

impl Phase {
    /// The phase's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "Waiting",
            Phase::Stopped => "Stopped",
            Phase::Degraded => "Degraded",
            Phase::ForcedDelete => "ForcedDelete",
        }
    }
}

/// The handshake's state, stored as the parent's `status.shutdown` (camelCase keys). Every key is
/// always written (absent values as `null`), so a JSON merge patch of the whole state replaces
/// the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Where the handshake is.
    pub phase: Phase,
    /// Why.
    pub reason: Reason,
    /// The current attempt, from 1.
    pub attempt: u32,
    /// All attempts allowed (retries + 1).
    pub attempts: u32,
    /// When the current attempt was made.
    pub requested_at: Timestamp,
    /// When the current attempt times out (while waiting).
    pub deadline: Option<Timestamp>,
    /// What happened last, for people.
    pub message: String,
    /// The SHA-256 (hex) of the token the application must call back with.
    pub token_sha256: String,
}

impl State {
    /// Reads `status.shutdown` from a parent's body: `Ok(None)` when absent or `null`.
    ///
    /// # Errors
    /// The parse error when something else is there.
    pub fn of(body: &Value) -> Result<Option<State>, serde_json::Error> {
        match body.pointer("/status/shutdown") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some),
        }
    }

    /// A fresh attempt: waiting until `now + grace`.
    pub fn waiting(
        hook: &Hook,
        reason: Reason,
        attempt: u32,
        now: Timestamp,
        token_sha256: String,
    ) -> State {
        State {
            phase: Phase::Waiting,
            reason,
            attempt,
            attempts: hook.attempts(),
            requested_at: now,
            deadline: Some(after(now, hook.grace)),
            message: format!(
                "asked the application to stop ({}), attempt {attempt} of {}; waiting for its callback",
                reason.as_str(),
                hook.attempts()
            ),
            token_sha256,
        }
    }

    /// This state moved to `phase` (no deadline any more) with `message`.
    pub fn moved(&self, phase: Phase, message: impl Into<String>) -> State {
        State {
            phase,
            deadline: None,
            message: message.into(),
            ..self.clone()
        }
    }

    /// The state as JSON for `status.shutdown`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `now + d`, saturating at the end of time.
pub fn after(now: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// What to do next for a parent whose children are about to go for `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ask the application (again): mint or reuse the token, persist [`State::waiting`], call.
    Request {
        /// The attempt to make, from 1.
        attempt: u32,
        /// The previous attempt timed out (worth an Event).
        timed_out: bool,
    },
    /// Keep waiting for the callback until then.
    Wait {
        /// The current attempt's deadline.
        until: Timestamp,
    },
    /// The application stopped (or the failure strategy says delete): the children may go.
    Proceed,
    /// The last attempt timed out and the strategy is GIVE_UP: mark the parent degraded.
    GiveUp,
    /// The last attempt timed out and the strategy is DELETE: record it and go on.
    ForceDelete,
    /// Degraded: hold the children until a person decides (or a late callback comes).
    Hold,
}

/// Decides the next step from the stored state (`None`: no handshake yet).
///
/// A handshake made for the other reason counts while it waits or once stopped (the
/// application stops either way); after it failed (degraded or forced), a new reason starts a
/// new handshake.
pub fn decide(state: Option<&State>, hook: &Hook, reason: Reason, now: Timestamp) -> Decision {
    let Some(state) = state else {
        return Decision::Request {
            attempt: 1,
            timed_out: false,
        };
    };
    match state.phase {
        Phase::Stopped => Decision::Proceed,
        Phase::ForcedDelete | Phase::Degraded if state.reason != reason => Decision::Request {
            attempt: 1,
            timed_out: false,
        },
        Phase::ForcedDelete => Decision::Proceed,
        Phase::Degraded => Decision::Hold,
        Phase::Waiting => match state.deadline {
            Some(until) if now < until => Decision::Wait { until },
            _ if state.attempt < hook.attempts() => Decision::Request {
                attempt: state.attempt.saturating_add(1),
                timed_out: true,
            },
            _ => match hook.failure {
                FailureStrategy::GiveUp => Decision::GiveUp,
                FailureStrategy::Delete => Decision::ForceDelete,
            },
        },
    }
}

/// The answer to a callback.
#[derive(Debug, Clone, PartialEq)]
pub enum Callback {
    /// The token matches a pending handshake: store this state (Stopped).
    Confirm(State),
    /// The token matches, and the handshake is already over: nothing to store.
    AlreadyDone,
    /// Wrong or missing token: refused, nothing changes.
    Refuse,
    /// No handshake on this parent.
    NotPending,
}

/// Judges a callback with `token` against the stored state.
pub fn on_callback(state: Option<&State>, token: &str) -> Callback {
    let Some(state) = state else {
        return Callback::NotPending;
    };
    if token.is_empty()
        || !same(
            token_sha256(token).as_bytes(),
            state.token_sha256.as_bytes(),
        )
    {
        return Callback::Refuse;
    }
    match state.phase {
        Phase::Waiting | Phase::Degraded => Callback::Confirm(state.moved(
            Phase::Stopped,
            format!(
                "the application confirmed that it stopped ({}) after attempt {} of {}",
                state.reason.as_str(),
                state.attempt,
                state.attempts
            ),
        )),
        Phase::Stopped | Phase::ForcedDelete => Callback::AlreadyDone,
    }
}

/// The SHA-256 of a token, lowercase hex: what is stored instead of the token.
pub fn token_sha256(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The path segment naming a resource in the callback URL: `plural.group`, or `plural` for the
/// core group.
pub fn resource_segment(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

/// The callback URL the application calls back:
/// `<base>/api/v1/shutdown/<resource>/<namespace or _>/<name>`.
pub fn callback_url(base: &str, resource: &str, namespace: Option<&str>, name: &str) -> String {
    format!(
        "{}/api/v1/shutdown/{resource}/{}/{name}",
        base.trim_end_matches('/'),
        namespace.unwrap_or(CLUSTER_SCOPE)
    )
}

/// The JSON body of the call to the application's endpoint.
pub fn request_body(token: &str, callback: &str, reason: Reason, target: Target<'_>) -> Value {
    serde_json::json!({
        "token": token,
        "callback": callback,
        "reason": reason.as_str(),
        "namespace": target.namespace.unwrap_or_default(),
        "name": target.name,
        "uid": target.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hook(retries: u32, failure: FailureStrategy) -> Hook {
        Hook {
            endpoint: Endpoint::Template("http://app/{namespace}/{name}/{uid}".into()),
            grace: Duration::from_secs(10),
            retries,
            failure,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const T0: &str = "2026-12-04T12:00:00Z";

    #[test]
    fn endpoints_are_resolved() {
        let target = Target {
            namespace: Some("ns"),
            name: "db",
            uid: "u-1",
        };
        assert_eq!(
            hook(0, FailureStrategy::GiveUp).url(target).unwrap(),
            "http://app/ns/db/u-1"
        );
        let service = Hook {
            endpoint: Endpoint::Service {
                name: "{name}-shutdown".into(),
                port: 8080,
            },
            ..hook(0, FailureStrategy::GiveUp)
        };
        assert_eq!(
            service.url(target).unwrap(),
            "http://db-shutdown.ns.svc:8080/shutdown"
        );
        let cluster = Target {
            namespace: None,
            ..target
        };
        assert_eq!(service.url(cluster), Err(EndpointError::NoNamespace));
        let https = Hook {
            endpoint: Endpoint::Template("https://app/{name}".into()),
            ..hook(0, FailureStrategy::GiveUp)
        };
        assert!(matches!(https.url(target), Err(EndpointError::Scheme(_))));
    }

    #[test]
    fn a_first_request_then_waiting_until_the_deadline() {
        let h = hook(1, FailureStrategy::GiveUp);
        assert_eq!(
            decide(None, &h, Reason::Delete, t(T0)),
            Decision::Request {
                attempt: 1,
                timed_out: false
            }
        );
        let s = State::waiting(&h, Reason::Delete, 1, t(T0), token_sha256("tok"));
        assert_eq!(s.deadline, Some(t("2026-12-04T12:00:10Z")));
        assert_eq!(s.attempts, 2);
        assert_eq!(
            decide(Some(&s), &h, Reason::Delete, t("2026-12-04T12:00:09Z")),
            Decision::Wait {
                until: t("2026-12-04T12:00:10Z")
            }
        );
        // Timed out, a retry left.
        assert_eq!(
            decide(Some(&s), &h, Reason::Delete, t("2026-12-04T12:00:10Z")),
            Decision::Request {
                attempt: 2,
                timed_out: true
            }
        );
    }

    #[test]
    fn the_failure_strategy_applies_after_the_last_attempt() {
        for (failure, expected) in [
            (FailureStrategy::GiveUp, Decision::GiveUp),
            (FailureStrategy::Delete, Decision::ForceDelete),
        ] {
            let h = hook(1, failure);
            let s = State::waiting(&h, Reason::Delete, 2, t(T0), token_sha256("tok"));
            assert_eq!(
                decide(Some(&s), &h, Reason::Delete, t("2026-12-04T12:01:00Z")),
                expected
            );
        }
        let h = hook(0, FailureStrategy::GiveUp);
        let s = State::waiting(&h, Reason::Delete, 1, t(T0), token_sha256("tok"));
        let degraded = s.moved(Phase::Degraded, "gave up");
        assert_eq!(degraded.deadline, None);
        assert_eq!(
            decide(Some(&degraded), &h, Reason::Delete, t(T0)),
            Decision::Hold
        );
        let forced = s.moved(Phase::ForcedDelete, "deleting anyway");
        assert_eq!(
            decide(Some(&forced), &h, Reason::Delete, t(T0)),
            Decision::Proceed
        );
    }

    #[test]
    fn reasons_carry_over_while_pending_not_after_a_failure() {
        let h = hook(0, FailureStrategy::GiveUp);
        let replace = State::waiting(&h, Reason::Replace, 1, t(T0), token_sha256("tok"));
        assert!(matches!(
            decide(Some(&replace), &h, Reason::Delete, t(T0)),
            Decision::Wait { .. }
        ));
        let stopped = replace.moved(Phase::Stopped, "stopped");
        assert_eq!(
            decide(Some(&stopped), &h, Reason::Delete, t(T0)),
            Decision::Proceed
        );
        let degraded = replace.moved(Phase::Degraded, "gave up");
        assert_eq!(
            decide(Some(&degraded), &h, Reason::Delete, t(T0)),
            Decision::Request {
                attempt: 1,
                timed_out: false
            }
        );
    }

    #[test]
    fn callbacks_need_the_token() {
        let h = hook(0, FailureStrategy::GiveUp);
        assert_eq!(on_callback(None, "tok"), Callback::NotPending);
        let s = State::waiting(&h, Reason::Delete, 1, t(T0), token_sha256("tok"));
        assert_eq!(on_callback(Some(&s), "wrong"), Callback::Refuse);
        assert_eq!(on_callback(Some(&s), ""), Callback::Refuse);
        let Callback::Confirm(stopped) = on_callback(Some(&s), "tok") else {
            panic!("the right token confirms");
        };
        assert_eq!(stopped.phase, Phase::Stopped);
        assert_eq!(stopped.deadline, None);
        assert_eq!(stopped.token_sha256, s.token_sha256);
        assert_eq!(on_callback(Some(&stopped), "tok"), Callback::AlreadyDone);
        assert_eq!(on_callback(Some(&stopped), "x"), Callback::Refuse);
        // A late callback still counts after giving up (Krake: from DEGRADED too).
        let degraded = s.moved(Phase::Degraded, "gave up");
        assert!(matches!(
            on_callback(Some(&degraded), "tok"),
            Callback::Confirm(_)
        ));
    }

    #[test]
    fn tokens_are_hashed_and_compared_in_full() {
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }

    #[test]
    fn the_state_round_trips_through_the_status() {
        let h = hook(2, FailureStrategy::Delete);
        let s = State::waiting(&h, Reason::Replace, 1, t(T0), token_sha256("tok"));
        let v = s.to_value();
        assert_eq!(v["phase"], "Waiting");
        assert_eq!(v["reason"], "replace");
        assert_eq!(v["requestedAt"], "2026-12-04T12:00:00Z");
        assert_eq!(v["tokenSha256"], token_sha256("tok"));
        let body = json!({"status": {"shutdown": v, "other": 1}});
        assert_eq!(State::of(&body).unwrap(), Some(s.clone()));
        // Moved states write `deadline: null`, so a merge patch removes the old deadline.
        assert!(s.moved(Phase::Stopped, "ok").to_value()["deadline"].is_null());
        assert_eq!(State::of(&json!({"status": {}})).unwrap(), None);
        assert_eq!(
            State::of(&json!({"status": {"shutdown": null}})).unwrap(),
            None
        );
        assert!(State::of(&json!({"status": {"shutdown": "garbage"}})).is_err());
    }

    #[test]
    fn callback_urls_and_request_bodies() {
        assert_eq!(
            callback_url(
                "http://127.0.0.1:8080/",
                "sites.e2e.operon.dev",
                Some("ns"),
                "db"
            ),
            "http://127.0.0.1:8080/api/v1/shutdown/sites.e2e.operon.dev/ns/db"
        );
        assert_eq!(
            callback_url("http://core", "nodes", None, "n1"),
            "http://core/api/v1/shutdown/nodes/_/n1"
        );
        assert_eq!(resource_segment("configmaps", ""), "configmaps");
        assert_eq!(
            resource_segment("sites", "e2e.operon.dev"),
            "sites.e2e.operon.dev"
        );
        let body = request_body(
            "tok",
            "http://core/cb",
            Reason::Delete,
            Target {
                namespace: Some("ns"),
                name: "db",
                uid: "u",
            },
        );
        assert_eq!(
            body,
            json!({"token": "tok", "callback": "http://core/cb", "reason": "delete",
                   "namespace": "ns", "name": "db", "uid": "u"})
        );
    }
}
