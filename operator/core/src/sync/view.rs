//! How a parent of a sync registration shows in the read model: the sync as one handler row
//! (and the shutdown hook as another, when it has one).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{ChildKey, Errors, Progress, Rollout};
use crate::shutdown::{Phase, State};
use crate::views::{
    ChildAction, ChildView, HandlerStatus, HandlerView, ObjectPhase, ObjectView, RolloutView,
};

/// Children shown per parent, at most.
pub const CHILDREN_SHOWN: usize = 200;

/// The children of a parent as a sync left them: what was `done` to some (applied, deleted, held
/// back), the other `desired` ones unchanged; `kinds` names the declared types by index. At most
/// [`CHILDREN_SHOWN`], desired ones first in their order, then deletions.
pub fn children_view(
    kinds: &[String],
    desired: &[ChildKey],
    done: &[(ChildKey, ChildAction)],
) -> Vec<ChildView> {
    let action_of = |key: &ChildKey| done.iter().find(|(k, _)| k == key).map(|(_, a)| *a);
    let view = |(index, namespace, name): &ChildKey, action| ChildView {
        kind: kinds.get(*index).cloned().unwrap_or_default(),
        namespace: namespace.clone().unwrap_or_default(),
        name: name.clone(),
        action,
    };
    let wanted = desired
        .iter()
        .map(|k| view(k, action_of(k).unwrap_or(ChildAction::Unchanged)));
    let gone = done
        .iter()
        .filter(|(k, _)| !desired.contains(k))
        .map(|(k, a)| view(k, *a));
    wanted.chain(gone).take(CHILDREN_SHOWN).collect()
}

/// The rolling updates in progress: every rolling child type with a child still to roll or one
/// rolling now, how far it is, and the child being rolled (`web-1: recreated, waiting for the
/// new one`).
pub fn rollouts_view(
    kinds: &[String],
    rollouts: &BTreeMap<usize, Rollout>,
    progress: &BTreeMap<usize, Progress>,
) -> Vec<RolloutView> {
    progress
        .iter()
        .filter(|(t, p)| p.current < p.total || rollouts.contains_key(t))
        .map(|(t, p)| RolloutView {
            kind: kinds.get(*t).map_or("child", String::as_str).to_owned(),
            current: p.current,
            total: p.total,
            rolling: rollouts.get(t).map(|r| {
                let how = if r.recreating {
                    "recreated, waiting for the new one"
                } else {
                    "updated in place, waiting for it to settle"
                };
                format!("{}: {how}", r.key.2)
            }),
        })
        .collect()
}

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
    fn children_show_what_the_sync_did_and_the_rest_unchanged() {
        let kinds = vec!["ConfigMap".to_owned(), "Pod".to_owned()];
        let key = |t, n: &str| (t, Some("ns".to_owned()), n.to_owned());
        let desired = [key(0, "a"), key(0, "b"), key(1, "p")];
        let done = [
            (key(0, "a"), ChildAction::Applied),
            (key(1, "p"), ChildAction::Pending),
            (key(1, "old"), ChildAction::Deleted),
        ];
        let shown: Vec<(String, String, ChildAction)> = children_view(&kinds, &desired, &done)
            .into_iter()
            .map(|c| (c.kind, c.name, c.action))
            .collect();
        assert_eq!(
            shown,
            [
                ("ConfigMap".into(), "a".into(), ChildAction::Applied),
                ("ConfigMap".into(), "b".into(), ChildAction::Unchanged),
                ("Pod".into(), "p".into(), ChildAction::Pending),
                ("Pod".into(), "old".into(), ChildAction::Deleted),
            ]
        );
        let many: Vec<ChildKey> = (0..CHILDREN_SHOWN + 5)
            .map(|n| key(0, &n.to_string()))
            .collect();
        assert_eq!(children_view(&kinds, &many, &[]).len(), CHILDREN_SHOWN);
        let rolling = Rollout {
            key: key(1, "p"),
            recreating: true,
            old_uid: "u".into(),
        };
        let progress = |current, total| Progress { current, total };
        // Pods: 1 of 3 as desired, p rolling; ConfigMaps (also rolling): done and nothing
        // rolling (not shown); a third type: 0 of 2, between two children.
        let rollouts = BTreeMap::from([(1, rolling)]);
        let progresses = BTreeMap::from([
            (0, progress(2, 2)),
            (1, progress(1, 3)),
            (2, progress(0, 2)),
        ]);
        let shown = rollouts_view(&kinds, &rollouts, &progresses);
        assert_eq!(
            shown,
            [
                RolloutView {
                    kind: "Pod".into(),
                    current: 1,
                    total: 3,
                    rolling: Some("p: recreated, waiting for the new one".into()),
                },
                RolloutView {
                    kind: "child".into(),
                    current: 0,
                    total: 2,
                    rolling: None,
                },
            ]
        );
        // The last child settling: all as desired, still shown until it has settled.
        let done = BTreeMap::from([(1, progress(3, 3))]);
        assert_eq!(rollouts_view(&kinds, &rollouts, &done)[0].current, 3);
        assert!(rollouts_view(&kinds, &BTreeMap::new(), &done).is_empty());
    }

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
