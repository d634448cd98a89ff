//! The hook's steps around the state machine: what the sync controller may do with the children
//! ([`Gate`]), what a handshake that failed records ([`give_up`]), what the endpoint's answer
//! means ([`reached`]), and how a callback is read ([`callback_token`], [`known_parent`]) and
//! answered ([`Answer`]).

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use super::{CLUSTER_SCOPE, FailureStrategy, Hook, Phase, Reason, State};

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

    /// 404 about the parent `namespace`/`name`.
    pub fn no_such_parent(namespace: &str, name: &str) -> Answer {
        Answer::Unknown(format!("no such parent: {namespace}/{name}"))
    }
}

impl Hook {
    /// How long one call of the endpoint may take: the grace period, within 1 to 10 seconds.
    pub fn call_timeout(&self) -> Duration {
        self.grace
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// How long to wait at `now` for the deadline `until`: a little after it, so that the next look
/// finds it passed.
pub fn wait_until(now: Timestamp, until: Timestamp) -> Duration {
    let d = until.duration_since(now);
    Duration::try_from(d).unwrap_or_default() + Duration::from_millis(50)
}

/// What a handshake that failed (its last attempt timed out) records and means.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The state to store (Degraded or ForcedDelete); its message is told in the Event.
    pub state: State,
    /// What the sync controller may do once it is stored.
    pub gate: Gate,
}

/// The end of the handshake `stored` after its last attempt, by the hook's failure strategy:
/// GIVE_UP keeps the children (degraded, until a change), DELETE lets them go.
pub fn give_up(stored: &State, hook: &Hook) -> Failure {
    let give_up = hook.failure == FailureStrategy::GiveUp;
    let what = if give_up {
        "the children are kept and the parent is degraded; remove status.shutdown to try again"
    } else {
        "deleting the children anyway"
    };
    let message = format!(
        "the application did not confirm its shutdown ({}) after {} attempt(s) of {:?}; failure strategy {}: {what}",
        stored.reason.as_str(),
        stored.attempts,
        hook.grace,
        hook.failure
    );
    let (phase, gate) = if give_up {
        (Phase::Degraded, Gate::Wait(None))
    } else {
        (Phase::ForcedDelete, Gate::Open)
    };
    Failure {
        state: stored.moved(phase, message),
        gate,
    }
}

/// Whether attempt `attempt` sends the token this core minted before (its hash `known`) again:
/// the same token for every attempt of one handshake, while this core knows it.
pub fn reuses_token(attempt: u32, stored: Option<&State>, known: Option<&str>) -> bool {
    attempt > 1 && known.is_some_and(|h| stored.is_some_and(|s| s.token_sha256 == h))
}

/// The Event's message when attempt `attempt` follows one that timed out.
pub fn timed_out_message(hook: &Hook, attempt: u32) -> String {
    format!(
        "no confirmation within {:?}; asking the application again (attempt {attempt} of {})",
        hook.grace,
        hook.attempts()
    )
}

/// What the endpoint's answer to attempt `attempt` means.
#[derive(Debug, Clone, PartialEq)]
pub enum Reached {
    /// It answered 404: store this Stopped state (its message is the Event's); the children
    /// may go.
    Gone(State),
    /// It took the request: tell it (the Event's message); wait for the callback.
    Asked {
        /// The HTTP status.
        code: u16,
        /// The Event's message.
        message: String,
    },
    /// It was not reached: store this waiting state (best effort; its message is the Event's);
    /// ask again after the grace period.
    Unreached {
        /// Why.
        error: String,
        /// The waiting state, with the failure as its message.
        state: State,
    },
}

/// What `called` means for attempt `attempt` at `url`, `waiting` being the state stored before
/// the call.
pub fn reached(
    called: Called,
    url: &str,
    waiting: &State,
    hook: &Hook,
    reason: Reason,
    attempt: u32,
) -> Reached {
    match called {
        Called::Gone => Reached::Gone(waiting.moved(
            Phase::Stopped,
            format!("the shutdown endpoint {url} answered 404: the application is already gone"),
        )),
        Called::Accepted(code) => Reached::Asked {
            code,
            message: format!(
                "asked the application to stop ({}) at {url}, attempt {attempt} of {}; waiting up to {:?} for its callback",
                reason.as_str(),
                hook.attempts(),
                hook.grace
            ),
        },
        Called::Failed(error) => {
            let mut state = waiting.clone();
            state.message = format!(
                "cannot reach the shutdown endpoint {url}: {error} (attempt {attempt} of {}; the next one after {:?})",
                hook.attempts(),
                hook.grace
            );
            Reached::Unreached { error, state }
        }
    }
}

/// The token of a callback's body (`{"token": "..."}`; missing: empty).
///
/// # Errors
/// [`Answer::Malformed`] when the body is not a JSON object.
pub fn callback_token(body: &[u8]) -> Result<String, Answer> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()),
        Ok(_) => Err(Answer::Malformed(
            "the body must be a JSON object".to_owned(),
        )),
        Err(err) => Err(Answer::Malformed(format!("the body is not JSON: {err}"))),
    }
}

/// Whether a callback's `namespace` (`_`: cluster-wide) and `name` can name a parent of a
/// resource that is `namespaced`, served in `namespaces` (empty: all).
pub fn known_parent(namespace: &str, name: &str, namespaced: bool, namespaces: &[String]) -> bool {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let cluster = namespace == CLUSTER_SCOPE;
    if !valid(name) || !(cluster || valid(namespace)) {
        return false;
    }
    cluster != namespaced
        && (cluster || namespaces.is_empty() || namespaces.iter().any(|n| n == namespace))
}

/// Why a callback with `token` was refused, as logged and told.
pub fn refusal(token: &str) -> &'static str {
    if token.is_empty() {
        "a shutdown callback without a token was refused"
    } else {
        "a shutdown callback with a wrong token was refused"
    }
}

/// The namespace of a parent named in a callback (`_`: cluster-wide, "").
pub fn namespace_of(segment: &str) -> &str {
    if segment == CLUSTER_SCOPE {
        ""
    } else {
        segment
    }
}

impl State {
    /// Whether a parent's body holds a handshake in `status.shutdown` (anything but absent or
    /// `null`, even unreadable).
    pub fn present(body: &Value) -> bool {
        body.pointer("/status/shutdown")
            .is_some_and(|v| !v.is_null())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Endpoint, token_sha256};
    use super::*;
    use serde_json::json;

    fn hook(retries: u32, failure: FailureStrategy) -> Hook {
        Hook {
            endpoint: Endpoint::Template("http://app/{name}".into()),
            grace: Duration::from_secs(10),
            retries,
            failure,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn waiting(h: &Hook, attempt: u32) -> State {
        State::waiting(
            h,
            Reason::Delete,
            attempt,
            t("2026-12-04T12:00:00Z"),
            token_sha256("tok"),
        )
    }

    #[test]
    fn a_failed_handshake_degrades_or_lets_the_children_go() {
        let h = hook(1, FailureStrategy::GiveUp);
        let f = give_up(&waiting(&h, 2), &h);
        assert_eq!((f.state.phase, f.gate), (Phase::Degraded, Gate::Wait(None)));
        assert_eq!(
            f.state.message,
            "the application did not confirm its shutdown (delete) after 2 attempt(s) of 10s; \
             failure strategy GIVE_UP: the children are kept and the parent is degraded; remove \
             status.shutdown to try again"
        );
        assert_eq!(f.state.deadline, None);
        let h = hook(1, FailureStrategy::Delete);
        let f = give_up(&waiting(&h, 2), &h);
        assert_eq!((f.state.phase, f.gate), (Phase::ForcedDelete, Gate::Open));
        assert!(
            f.state
                .message
                .ends_with("failure strategy DELETE: deleting the children anyway")
        );
    }

    #[test]
    fn the_token_is_reused_for_later_attempts_of_the_same_handshake_only() {
        let h = hook(2, FailureStrategy::GiveUp);
        let s = waiting(&h, 1);
        let known = token_sha256("tok");
        assert!(reuses_token(2, Some(&s), Some(&known)));
        assert!(!reuses_token(1, Some(&s), Some(&known)), "a new handshake");
        assert!(!reuses_token(2, Some(&s), Some("other")), "another core's");
        assert!(!reuses_token(2, Some(&s), None), "not known here");
        assert!(!reuses_token(2, None, Some(&known)));
    }

    #[test]
    fn the_endpoint_s_answer_is_told_and_recorded() {
        let h = hook(1, FailureStrategy::GiveUp);
        let w = waiting(&h, 1);
        let Reached::Gone(stopped) = reached(Called::Gone, "http://a", &w, &h, Reason::Delete, 1)
        else {
            panic!("404 is gone");
        };
        assert_eq!(stopped.phase, Phase::Stopped);
        assert_eq!(
            stopped.message,
            "the shutdown endpoint http://a answered 404: the application is already gone"
        );
        assert_eq!(
            reached(
                Called::Accepted(202),
                "http://a",
                &w,
                &h,
                Reason::Replace,
                1
            ),
            Reached::Asked {
                code: 202,
                message: "asked the application to stop (replace) at http://a, attempt 1 of 2; \
                          waiting up to 10s for its callback"
                    .into()
            }
        );
        let Reached::Unreached { error, state } = reached(
            Called::Failed("refused".into()),
            "http://a",
            &w,
            &h,
            Reason::Delete,
            1,
        ) else {
            panic!("no answer");
        };
        assert_eq!(error, "refused");
        assert_eq!((state.phase, state.deadline), (Phase::Waiting, w.deadline));
        assert_eq!(
            state.message,
            "cannot reach the shutdown endpoint http://a: refused (attempt 1 of 2; the next one \
             after 10s)"
        );
        assert_eq!(
            timed_out_message(&h, 2),
            "no confirmation within 10s; asking the application again (attempt 2 of 2)"
        );
    }

    #[test]
    fn callbacks_are_read_and_checked() {
        assert_eq!(callback_token(br#"{"token": "t"}"#), Ok("t".into()));
        assert_eq!(callback_token(b"{}"), Ok(String::new()));
        assert!(matches!(callback_token(b"[]"), Err(Answer::Malformed(_))));
        assert!(matches!(callback_token(b"no"), Err(Answer::Malformed(_))));
        let all: &[String] = &[];
        assert!(known_parent("ns", "db", true, all));
        assert!(
            !known_parent("_", "db", true, all),
            "a namespaced parent needs one"
        );
        assert!(known_parent("_", "n1", false, all));
        assert!(!known_parent("ns", "n1", false, all));
        assert!(!known_parent("ns", "DB", true, all));
        assert!(!known_parent("", "db", true, all));
        let served = &["a".to_owned()];
        assert!(known_parent("a", "db", true, served));
        assert!(!known_parent("b", "db", true, served));
        assert_eq!(
            refusal(""),
            "a shutdown callback without a token was refused"
        );
        assert_eq!(
            refusal("x"),
            "a shutdown callback with a wrong token was refused"
        );
        assert_eq!((namespace_of("_"), namespace_of("ns")), ("", "ns"));
        assert_eq!(
            Answer::no_such_parent("ns", "db"),
            Answer::Unknown("no such parent: ns/db".into())
        );
    }

    #[test]
    fn waits_end_a_little_after_the_deadline_and_calls_are_bounded() {
        let now = t("2026-12-04T12:00:00Z");
        assert_eq!(
            wait_until(now, t("2026-12-04T12:00:01Z")),
            Duration::from_millis(1050)
        );
        assert_eq!(wait_until(now, now), Duration::from_millis(50));
        let mut h = hook(0, FailureStrategy::GiveUp);
        assert_eq!(h.call_timeout(), Duration::from_secs(10));
        h.grace = Duration::from_millis(10);
        assert_eq!(h.call_timeout(), Duration::from_secs(1));
        h.grace = Duration::from_secs(60);
        assert_eq!(h.call_timeout(), Duration::from_secs(10));
        assert!(State::present(&json!({"status": {"shutdown": "garbage"}})));
        assert!(!State::present(&json!({"status": {"shutdown": null}})));
        assert!(!State::present(&json!({})));
    }
}
