//! How a run of a task ends ([`Ending`], with the core's own messages), and what is told about
//! the end ([`EndEvent`]).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::{Phase, TaskStatus};

/// How a run of a task ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    /// Succeeded, Failed or Cancelled.
    pub phase: Phase,
    /// Why (the handler's message, or the core's).
    pub message: String,
}

impl Ending {
    /// Failed, with `message`.
    pub fn failed(message: impl Into<String>) -> Ending {
        Ending {
            phase: Phase::Failed,
            message: message.into(),
        }
    }

    /// The handler's `finished`: Succeeded when `ok`, else Failed, with its message.
    pub fn finished(ok: bool, message: String) -> Ending {
        Ending {
            phase: if ok { Phase::Succeeded } else { Phase::Failed },
            message,
        }
    }

    /// Deleted while it ran here: the call is cancelled.
    pub fn cancelled() -> Ending {
        Ending {
            phase: Phase::Cancelled,
            message: "cancelled: the task was deleted while it ran".into(),
        }
    }

    /// Deleted while it ran, seen after a restart of the core.
    pub fn cancelled_away() -> Ending {
        Ending {
            phase: Phase::Cancelled,
            message: "cancelled: the task was deleted while it ran (the core was not running it \
                      then)"
                .into(),
        }
    }

    /// The registration's timeout passed.
    pub fn timed_out(timeout: Option<Duration>) -> Ending {
        Ending::failed(format!(
            "the task did not finish within its timeout of {:?}",
            timeout.unwrap_or_default()
        ))
    }

    /// The handler's stream ended without its result.
    pub fn unfinished() -> Ending {
        Ending::failed("the handler's stream ended without `finished` (the task's result)")
    }

    /// The parent `kind` `name` does not exist when the task is due.
    pub fn no_parent(kind: &str, name: &str) -> Ending {
        Ending::failed(format!("the parent {kind} {name:?} does not exist"))
    }

    /// Phase Running could not be written.
    pub fn unwritable(error: impl std::fmt::Display) -> Ending {
        Ending::failed(format!("cannot write the task's status: {error}"))
    }

    /// How the end is told: succeeded, cancelled, or failed (any other phase).
    pub fn outcome(&self) -> Outcome {
        match self.phase {
            Phase::Succeeded => Outcome::Succeeded,
            Phase::Cancelled => Outcome::Cancelled,
            Phase::Failed | Phase::Waiting | Phase::Running => Outcome::Failed,
        }
    }
}

/// How the end of a task is told (the log line and the Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Succeeded,
    /// It was deleted while it ran.
    Cancelled,
    /// It failed.
    Failed,
}

/// The Event about the end of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndEvent {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `TaskSucceeded`, `TaskCancelled` or `TaskFailed`.
    pub reason: &'static str,
    /// The message.
    pub message: String,
    /// Posted on the parent (when it can be read; else on the task).
    pub on_parent: bool,
}

/// The Event about `ending` of the task `kind` `name` after `steps` finished steps.
pub fn end_event(ending: &Ending, kind: &str, name: &str, steps: usize) -> EndEvent {
    match ending.outcome() {
        Outcome::Succeeded => EndEvent {
            type_: "Normal",
            reason: "TaskSucceeded",
            message: format!("{kind} {name:?} succeeded: {}", ending.message),
            on_parent: false,
        },
        Outcome::Cancelled => EndEvent {
            type_: "Normal",
            reason: "TaskCancelled",
            message: format!(
                "{kind} {name:?} was cancelled after {steps} step(s): it was deleted while it ran"
            ),
            on_parent: true,
        },
        Outcome::Failed => EndEvent {
            type_: "Warning",
            reason: "TaskFailed",
            message: format!("{kind} {name:?} failed: {}", ending.message),
            on_parent: false,
        },
    }
}

/// When the run marked by `running` (a [`super::running_patch`]) started.
pub fn start_of(running: &Value) -> Option<Timestamp> {
    running["status"]["startTime"]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
}

/// How long a task (`body`, with `status`) waited between its creation and its first start at
/// `now`; `None` for a resumption (it started before) or an unknown creation time.
pub fn first_wait(body: &Value, status: &TaskStatus, now: Timestamp) -> Option<SignedDuration> {
    body.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .filter(|_| status.start_time.is_none())
        .map(|c| now.duration_since(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_core_s_endings_say_why() {
        assert_eq!(
            Ending::finished(true, "ok".into()),
            Ending {
                phase: Phase::Succeeded,
                message: "ok".into()
            }
        );
        assert_eq!(Ending::finished(false, "no".into()).phase, Phase::Failed);
        assert_eq!(
            Ending::timed_out(Some(Duration::from_secs(3))).message,
            "the task did not finish within its timeout of 3s"
        );
        assert_eq!(
            Ending::no_parent("Cluster", "c1").message,
            "the parent Cluster \"c1\" does not exist"
        );
        assert_eq!(
            Ending::unwritable("409").message,
            "cannot write the task's status: 409"
        );
        assert_eq!(
            Ending::cancelled().message,
            "cancelled: the task was deleted while it ran"
        );
        assert_eq!(
            Ending::unfinished().message,
            "the handler's stream ended without `finished` (the task's result)"
        );
    }

    #[test]
    fn the_end_is_told_by_its_outcome() {
        let e = end_event(&Ending::finished(true, "done".into()), "Repair", "r1", 2);
        assert_eq!(
            (e.type_, e.reason, e.message.as_str(), e.on_parent),
            (
                "Normal",
                "TaskSucceeded",
                "Repair \"r1\" succeeded: done",
                false
            )
        );
        let e = end_event(&Ending::cancelled(), "Repair", "r1", 2);
        assert_eq!(
            (e.type_, e.reason, e.on_parent),
            ("Normal", "TaskCancelled", true)
        );
        assert_eq!(
            e.message,
            "Repair \"r1\" was cancelled after 2 step(s): it was deleted while it ran"
        );
        for phase in [Phase::Failed, Phase::Waiting, Phase::Running] {
            let ending = Ending {
                phase,
                message: "boom".into(),
            };
            assert_eq!(ending.outcome(), Outcome::Failed);
            let e = end_event(&ending, "Repair", "r1", 0);
            assert_eq!(
                (e.type_, e.reason, e.message.as_str()),
                ("Warning", "TaskFailed", "Repair \"r1\" failed: boom")
            );
        }
    }

    #[test]
    fn the_first_start_tells_how_long_the_task_waited() {
        let now: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let body = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            first_wait(&body, &TaskStatus::default(), now),
            Some(SignedDuration::from_secs(10))
        );
        let resumed = TaskStatus {
            start_time: Some(now),
            ..TaskStatus::default()
        };
        assert_eq!(first_wait(&body, &resumed, now), None);
        assert_eq!(
            start_of(&json!({"status": {"startTime": "2026-01-01T00:00:00Z"}})),
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(start_of(&json!({})), None);
    }
}
