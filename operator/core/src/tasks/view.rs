//! How a task shows in the read model: one row for the task, one per finished step.

use jiff::Timestamp;

use super::{Phase, StepRecord, format_time};
use crate::views::{HandlerStatus, HandlerView, ObjectPhase, ObjectView};

/// A task as the read model shows it.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its uid.
    pub uid: &'a str,
    /// When it started.
    pub started: Option<Timestamp>,
}

/// The read model's view at `now` of task `t` of registration `id` on `resource`, in `phase`
/// with `message` and `steps`.
pub fn view(
    id: &str,
    resource: String,
    t: &Shown<'_>,
    (phase, message): (Option<Phase>, Option<&str>),
    steps: &[StepRecord],
    now: Timestamp,
) -> ObjectView {
    let (object_phase, state) = match phase {
        None | Some(Phase::Waiting) => (ObjectPhase::Pending, HandlerStatus::Pending),
        Some(Phase::Running) => (ObjectPhase::InProgress, HandlerStatus::Pending),
        Some(Phase::Succeeded) => (ObjectPhase::Handled, HandlerStatus::Succeeded),
        Some(Phase::Failed) => (ObjectPhase::Failed, HandlerStatus::Failed),
        Some(Phase::Cancelled) => (ObjectPhase::Handled, HandlerStatus::Failed),
    };
    let phase_text = phase.map_or("New", Phase::as_str);
    let mut handlers = vec![HandlerView {
        id: id.to_owned(),
        state,
        retries: 0,
        started: t.started.map(format_time),
        delayed: None,
        message: Some(match message.filter(|m| !m.is_empty()) {
            Some(m) => format!("{phase_text}: {m}"),
            None => phase_text.to_owned(),
        }),
        trace_id: None,
    }];
    handlers.extend(steps.iter().map(|s| HandlerView {
        id: if s.name.is_empty() {
            format!("{id}/{}", s.index)
        } else {
            format!("{id}/{}-{}", s.index, s.name)
        },
        state: if s.ok {
            HandlerStatus::Succeeded
        } else {
            HandlerStatus::Failed
        },
        retries: 0,
        started: None,
        delayed: None,
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        trace_id: None,
    }));
    ObjectView {
        resource,
        namespace: t.namespace.to_owned(),
        name: t.name.to_owned(),
        uid: t.uid.to_owned(),
        phase: object_phase,
        cause: format!("task {phase_text}"),
        handlers,
        updated: now.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_task_shows_pending_with_its_steps() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let shown = Shown {
            namespace: "ns",
            name: "r1",
            uid: "u",
            started: None,
        };
        let steps = [
            StepRecord {
                index: 0,
                name: "drain".into(),
                ok: true,
                message: String::new(),
                result: None,
            },
            StepRecord {
                index: 1,
                name: String::new(),
                ok: false,
                message: "no".into(),
                result: None,
            },
        ];
        let v = view(
            "repair",
            "repairs".into(),
            &shown,
            (Some(Phase::Running), None),
            &steps,
            now,
        );
        assert_eq!(
            (v.phase.as_str(), v.cause.as_str()),
            ("in-progress", "task Running")
        );
        let ids: Vec<_> = v
            .handlers
            .iter()
            .map(|h| (h.id.as_str(), h.state.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("repair", "pending"),
                ("repair/0-drain", "succeeded"),
                ("repair/1", "failed")
            ]
        );
        assert_eq!(v.handlers[0].message.as_deref(), Some("Running"));
        assert_eq!(v.updated, "2026-01-01T00:00:00Z");
        let v = view(
            "repair",
            "repairs".into(),
            &shown,
            (Some(Phase::Cancelled), Some("gone")),
            &[],
            now,
        );
        assert_eq!(
            (v.phase.as_str(), v.handlers[0].state.as_str()),
            ("handled", "failed")
        );
        assert_eq!(v.handlers[0].message.as_deref(), Some("Cancelled: gone"));
    }
}
