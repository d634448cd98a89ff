//! How a parent of a sync registration shows in the read model: the sync as one handler row
//! (and the shutdown hook as another, when it has one).

use std::time::Duration;

use serde_json::Value;

use super::Errors;
use crate::shutdown::{Phase, State};
use crate::views::{HandlerStatus, HandlerView, ObjectPhase, ObjectView};

/// What the read model shows of one parent.
#[derive(Debug)]
pub struct Shown<'a> {
    /// The parent resource's name.
    pub resource: String,
    /// The sync registration.
    pub sync_id: &'a str,
    /// The parent's namespace ("" for cluster-wide) and name.
    pub key: &'a (String, String),
    /// Its body.
    pub body: &'a Value,
    /// Its failures.
    pub errors: Errors,
    /// When it is synced again.
    pub after: Option<Duration>,
    /// The shutdown hook's state, if it has one.
    pub hook: Option<State>,
}

/// The read model's view of a parent at `now`.
pub fn view(s: Shown<'_>, now: jiff::Timestamp) -> ObjectView {
    let Errors {
        in_a_row: errors,
        total,
        last: message,
    } = s.errors;
    let failing = errors > 0;
    let hook = s.hook.map(|s| HandlerView {
        id: "shutdown-hook".into(),
        state: match s.phase {
            Phase::Waiting => HandlerStatus::Pending,
            Phase::Stopped | Phase::ForcedDelete => HandlerStatus::Succeeded,
            Phase::Degraded => HandlerStatus::Failed,
        },
        retries: s.attempt.saturating_sub(1),
        started: Some(s.requested_at.to_string()),
        delayed: s.deadline.map(|d| d.to_string()),
        message: Some(format!("{}: {}", s.phase.as_str(), s.message)),
        trace_id: None,
    });
    let phase = match &hook {
        Some(h) if h.state == HandlerStatus::Failed => ObjectPhase::Failed,
        Some(h) if h.state == HandlerStatus::Pending => ObjectPhase::InProgress,
        _ if failing => ObjectPhase::Retrying,
        _ => ObjectPhase::Handled,
    };
    ObjectView {
        resource: s.resource,
        namespace: s.key.0.clone(),
        name: s.key.1.clone(),
        uid: s
            .body
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        phase,
        cause: "sync".into(),
        handlers: std::iter::once(HandlerView {
            id: s.sync_id.to_owned(),
            state: if failing {
                HandlerStatus::Retrying
            } else {
                HandlerStatus::Succeeded
            },
            retries: u32::try_from(total).unwrap_or(u32::MAX),
            started: None,
            delayed: if failing {
                s.after
                    .and_then(|a| jiff::SignedDuration::try_from(a).ok())
                    .and_then(|a| now.checked_add(a).ok())
                    .map(|t| t.to_string())
            } else {
                None
            },
            message,
            trace_id: None,
        })
        .chain(hook)
        .collect(),
        updated: now.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_parent_shows_retrying_with_its_next_attempt() {
        let key = ("ns".to_owned(), "p".to_owned());
        let body = serde_json::json!({"metadata": {"uid": "u1"}});
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let shown = |(in_a_row, total, last)| Shown {
            resource: "things.example.com/v1".into(),
            sync_id: "s",
            key: &key,
            body: &body,
            errors: Errors {
                in_a_row,
                total,
                last,
            },
            after: Some(Duration::from_secs(2)),
            hook: None,
        };
        let v = view(shown((2, 5, Some("boom".into()))), now);
        assert_eq!(
            (v.phase.as_str(), v.uid.as_str(), v.cause.as_str()),
            ("retrying", "u1", "sync")
        );
        let h = &v.handlers[0];
        assert_eq!((h.state.as_str(), h.retries), ("retrying", 5));
        assert_eq!(h.delayed.as_deref(), Some("2025-01-01T00:00:02Z"));
        assert_eq!(h.message.as_deref(), Some("boom"));
        let v = view(shown((0, 5, None)), now);
        assert_eq!(
            (v.phase.as_str(), v.handlers[0].state.as_str()),
            ("handled", "succeeded")
        );
        assert_eq!(v.handlers[0].delayed, None);
    }
}
