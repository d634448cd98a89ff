//! How a task shows in the read model: one row for the task, one per finished step; and on its
//! parent's page, one row per task in the order the parent's FIFO runs them ([`of_parent`]).

use jiff::Timestamp;

use super::{Candidate, Phase, StepRecord, TaskStatus, format_time, queue_order};
use crate::views::{HandlerStatus, HandlerView, ObjectPhase, ObjectView, TaskState, TaskView};

/// Finished tasks a parent's page lists, at most (the newest): the read model's memory per
/// parent stays bounded whatever the retention of finished tasks.
pub const FINISHED_SHOWN: usize = 10;

/// One task of a parent, for [`of_parent`].
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    /// The task's resource (`plural.group/version`).
    pub resource: &'a str,
    /// Its registration's id.
    pub task: &'a str,
    /// Its registration's priority.
    pub priority: i32,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// Its status.
    pub status: &'a TaskStatus,
    /// Its finished steps: the status' own, or, while this core runs it, the steps the core has
    /// seen finish (a parallel task persists its steps only at its end).
    pub steps: &'a [StepRecord],
    /// This core runs it right now.
    pub running: bool,
}

impl Listed<'_> {
    fn state(&self) -> TaskState {
        match (self.running, self.status.phase) {
            (true, _) | (false, Some(Phase::Running)) => TaskState::Running,
            (false, None | Some(Phase::Waiting)) => TaskState::Queued,
            (false, Some(Phase::Succeeded)) => TaskState::Succeeded,
            (false, Some(Phase::Failed)) => TaskState::Failed,
            (false, Some(Phase::Cancelled)) => TaskState::Cancelled,
        }
    }

    fn candidate(&self) -> Candidate<()> {
        Candidate {
            key: (),
            priority: self.priority,
            created: self.created,
            name: self.name.to_owned(),
            phase: self.status.phase,
            deleting: false,
            ended_here: false,
        }
    }
}

/// The rows of a parent's tasks, in the order its FIFO runs them: the running task, the queued
/// ones in [`queue_order`] (numbered from 1), then the finished ones, newest first (at most
/// [`FINISHED_SHOWN`]).
pub fn of_parent(tasks: &[Listed<'_>]) -> Vec<TaskView> {
    let rank = |t: &Listed<'_>| match t.state() {
        TaskState::Running => 0,
        TaskState::Queued => 1,
        TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled => 2,
    };
    let mut sorted: Vec<&Listed<'_>> = tasks.iter().collect();
    sorted.sort_by(|a, b| {
        rank(a).cmp(&rank(b)).then_with(|| match rank(a) {
            2 => finished_at(b).cmp(&finished_at(a)).then(a.name.cmp(b.name)),
            _ => queue_order(&a.candidate(), &b.candidate()),
        })
    });
    let mut place = 0;
    let mut finished = 0;
    let mut rows = Vec::new();
    for t in sorted {
        let state = t.state();
        match state {
            TaskState::Queued => place += 1,
            TaskState::Running => {}
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled => {
                finished += 1;
                if finished > FINISHED_SHOWN {
                    break;
                }
            }
        }
        let count = |ok: bool| {
            let n = t.steps.iter().filter(|s| s.ok == ok).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        rows.push(TaskView {
            resource: t.resource.to_owned(),
            namespace: t.namespace.to_owned(),
            name: t.name.to_owned(),
            task: t.task.to_owned(),
            state,
            place: (state == TaskState::Queued).then_some(place),
            steps: count(true) + count(false),
            failed_steps: count(false),
            started: t.status.start_time.map(format_time),
            message: t.status.message.clone().filter(|m| !m.is_empty()),
        });
    }
    rows
}

fn finished_at(t: &Listed<'_>) -> Option<Timestamp> {
    t.status.completion_time.or(t.status.start_time)
}

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

    fn status(phase: Option<Phase>, steps: &[bool], done: Option<&str>) -> TaskStatus {
        TaskStatus {
            phase,
            completion_time: done.map(|t| t.parse().unwrap()),
            steps: steps
                .iter()
                .zip(0..)
                .map(|(&ok, index)| StepRecord {
                    index,
                    name: String::new(),
                    ok,
                    message: String::new(),
                    result: None,
                })
                .collect(),
            ..TaskStatus::default()
        }
    }

    #[test]
    fn a_parents_tasks_are_listed_as_its_fifo_runs_them() {
        let at = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        let waiting = status(Some(Phase::Waiting), &[], None);
        let running = status(Some(Phase::Running), &[true], None);
        let old = status(
            Some(Phase::Succeeded),
            &[true, true],
            Some("2026-01-01T00:01:00Z"),
        );
        let new = status(
            Some(Phase::Failed),
            &[true, false],
            Some("2026-01-01T00:02:00Z"),
        );
        let unseen = TaskStatus::default();
        let t = |name, priority, created, status| Listed {
            resource: "jobs.example.com/v1",
            task: "job",
            priority,
            namespace: "ns",
            name,
            created,
            status,
            steps: &status.steps,
            running: false,
        };
        let tasks = [
            t("late", 0, at("2026-01-01T00:00:03Z"), &waiting),
            t("old", 0, at("2026-01-01T00:00:00Z"), &old),
            t("urgent", 5, at("2026-01-01T00:00:04Z"), &unseen),
            t("first", 0, at("2026-01-01T00:00:02Z"), &waiting),
            t("new", 0, at("2026-01-01T00:00:00Z"), &new),
            t("now", 0, at("2026-01-01T00:00:09Z"), &running),
        ];
        let rows = of_parent(&tasks);
        let seen: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.state.as_str(),
                    r.place,
                    r.steps,
                    r.failed_steps,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("now", "running", None, 1, 0),
                ("urgent", "queued", Some(1), 0, 0),
                ("first", "queued", Some(2), 0, 0),
                ("late", "queued", Some(3), 0, 0),
                ("new", "failed", None, 2, 1),
                ("old", "succeeded", None, 2, 0),
            ]
        );
        let many: Vec<Listed<'_>> = (0..FINISHED_SHOWN + 3)
            .map(|_| t("f", 0, None, &old))
            .collect();
        assert_eq!(of_parent(&many).len(), FINISHED_SHOWN);
    }

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
