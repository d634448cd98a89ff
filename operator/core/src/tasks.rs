//! Tasks, the decisions: operations on a parent (a repair of a `Cluster`, a backup…) that run
//! one at a time per parent, in FIFO order, and record their progress in their own status
//! (the Elassandra operator's model; `handler.proto`, "Tasks").
//!
//! Everything here is pure: the task's status document ([`TaskStatus`] and the merge patches that
//! move it from phase to phase), the order in which the waiting tasks of one parent start
//! ([`next`]), where a sequential task resumes after a restart of the core ([`resume`]), and what
//! the core does about one observed task ([`decide`]) and what a pass of the controller does
//! about it ([`PassMemory::look`]), how a chosen task starts ([`start`]), how a run ends
//! ([`Ending`], [`end_event`]) and how a task shows in the read model ([`view`]). The runtime
//! (`runtime::tasks`) performs the decisions.
//!
//! # The status document
//! ```yaml
//! status:
//!   phase: Running            # Waiting | Running | Succeeded | Failed | Cancelled
//!   startTime: "2026-12-04T12:00:00.123Z"
//!   completionTime: …         # when it ended (terminal phases)
//!   durationMs: 5012          # completionTime - startTime
//!   message: "…"              # the handler's final message, or why the core failed it
//!   steps: [{index: 0, name: "drain", ok: true, message: "", result: {…}}]
//!   observedGeneration: 1
//! ```
//!
//! # Guarantees
//! - A terminal phase (Succeeded, Failed, Cancelled) is never run again.
//! - A task that was Running when the core stopped starts before any waiting task of its parent.

use std::cmp::Ordering;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp, Unit};
use serde_json::{Map, Value, json};

mod ending;
mod pass;
mod view;

pub use ending::{EndEvent, Ending, Outcome, end_event, first_wait, start_of};
pub use pass::{
    InPass, Look, PASS_AT_MOST, PassMemory, RETRY_SOON, RETRY_WRITES_AFTER, Start, Todo, cancels,
    start,
};
pub use view::{FINISHED_SHOWN, Listed, Shown, of_parent, view};

/// A task's phase (`status.phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Seen, queued behind other work on its parent.
    Waiting,
    /// The handler runs it.
    Running,
    /// The handler finished it successfully.
    Succeeded,
    /// The handler finished it unsuccessfully, or the core could not run it.
    Failed,
    /// Deleted while it ran: the call was cancelled.
    Cancelled,
}

impl Phase {
    /// As written in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "Waiting",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Cancelled => "Cancelled",
        }
    }

    /// Reads `status.phase`; anything else is no phase.
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "Waiting" => Phase::Waiting,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            "Cancelled" => Phase::Cancelled,
            _ => return None,
        })
    }

    /// Succeeded, Failed or Cancelled: never run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a task's steps run and are persisted (`TaskMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Steps may run at once; the status is written at the end; a restart runs it again.
    Parallel,
    /// Steps run one after another; `status.steps` is written after each; a restart resumes.
    Sequential,
}

impl Mode {
    /// Whether `status.steps` is written after each step (else once, at the end).
    pub fn persists_each_step(self) -> bool {
        self == Mode::Sequential
    }
}

/// One finished step (`status.steps[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// 0-based, in the order the steps ran.
    pub index: u32,
    /// The step's name.
    pub name: String,
    /// False: the step failed.
    pub ok: bool,
    /// The step's message.
    pub message: String,
    /// The step's JSON result, if any.
    pub result: Option<Value>,
}

impl StepRecord {
    /// As stored in `status.steps[]`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("index".into(), json!(self.index));
        m.insert("name".into(), json!(self.name));
        m.insert("ok".into(), json!(self.ok));
        m.insert("message".into(), json!(self.message));
        if let Some(result) = &self.result {
            m.insert("result".into(), result.clone());
        }
        Value::Object(m)
    }

    /// Reads one `status.steps[]` entry; `None` when it has no valid index.
    pub fn from_json(v: &Value) -> Option<StepRecord> {
        let index = u32::try_from(v.get("index")?.as_u64()?).ok()?;
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(StepRecord {
            index,
            name: text("name"),
            ok: v.get("ok").and_then(Value::as_bool).unwrap_or(false),
            message: text("message"),
            result: v.get("result").filter(|r| !r.is_null()).cloned(),
        })
    }
}

/// A task's status, as read from the object (leniently: unknown or broken fields are absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskStatus {
    /// `status.phase`; `None` before the core saw the task.
    pub phase: Option<Phase>,
    /// When it (first) started.
    pub start_time: Option<Timestamp>,
    /// When it ended.
    pub completion_time: Option<Timestamp>,
    /// `status.message`.
    pub message: Option<String>,
    /// The finished steps, by index.
    pub steps: Vec<StepRecord>,
}

impl TaskStatus {
    /// Reads the status of a task body (the whole object).
    pub fn of(body: &Value) -> TaskStatus {
        let Some(status) = body.get("status") else {
            return TaskStatus::default();
        };
        let time = |k: &str| {
            status
                .get(k)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Timestamp>().ok())
        };
        let mut steps: Vec<StepRecord> = status
            .get("steps")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(StepRecord::from_json).collect())
            .unwrap_or_default();
        steps.sort_by_key(|s| s.index);
        steps.dedup_by_key(|s| s.index);
        TaskStatus {
            phase: status
                .get("phase")
                .and_then(Value::as_str)
                .and_then(Phase::parse),
            start_time: time("startTime"),
            completion_time: time("completionTime"),
            message: status
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned),
            steps,
        }
    }
}

/// A time as the status stores it: RFC 3339, UTC, milliseconds.
pub fn format_time(t: Timestamp) -> String {
    t.round(Unit::Millisecond).unwrap_or(t).to_string()
}

fn generation_of(body: &Value) -> Option<i64> {
    body.pointer("/metadata/generation").and_then(Value::as_i64)
}

/// The merge patch (of the whole object, for the status subresource) that marks a newly seen
/// task Waiting.
pub fn waiting_patch(body: &Value) -> Value {
    json!({"status": {"phase": "Waiting", "observedGeneration": generation_of(body)}})
}

/// The merge patch that marks a task Running at `now`. A sequential task resumed after a restart
/// keeps its first `startTime` and its finished steps; a parallel one starts over.
pub fn running_patch(body: &Value, mode: Mode, now: Timestamp) -> Value {
    let status = TaskStatus::of(body);
    let resumed = mode == Mode::Sequential && status.phase == Some(Phase::Running);
    let start = match (resumed, status.start_time) {
        (true, Some(t)) => t,
        _ => now,
    };
    let mut patch = json!({
        "phase": "Running",
        "startTime": format_time(start),
        "completionTime": null,
        "durationMs": null,
        "message": null,
        "observedGeneration": generation_of(body),
    });
    if !resumed {
        patch["steps"] = Value::Null;
    }
    json!({"status": patch})
}

/// `steps` as the status stores them.
pub fn steps_json(steps: &[StepRecord]) -> Value {
    Value::Array(steps.iter().map(StepRecord::to_json).collect())
}

/// The merge patch that persists the steps of a sequential task so far.
pub fn steps_patch(steps: &[StepRecord]) -> Value {
    json!({"status": {"steps": steps_json(steps)}})
}

/// The merge patch that ends a task: terminal phase, completion time, duration (from
/// `started`, when known), message and the steps.
pub fn finish_patch(
    ending: &Ending,
    started: Option<Timestamp>,
    now: Timestamp,
    steps: &[StepRecord],
) -> Value {
    let duration_ms = started.map(|s| {
        let d = now.duration_since(s);
        u64::try_from(d.as_millis()).unwrap_or(0)
    });
    json!({"status": {
        "phase": ending.phase.as_str(),
        "completionTime": format_time(now),
        "durationMs": duration_ms,
        "message": ending.message,
        "steps": steps_json(steps),
    }})
}

/// Adds (or replaces, by index) a finished step; the list stays sorted by index.
pub fn record_step(steps: &mut Vec<StepRecord>, step: StepRecord) {
    match steps.binary_search_by_key(&step.index, |s| s.index) {
        Ok(i) => steps[i] = step,
        Err(i) => steps.insert(i, step),
    }
}

/// Where a run starts: the first step to run and the steps finished before it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resume {
    /// The index of the first step to run (`TaskRequest.resume_from`).
    pub from: u32,
    /// The steps finished before it (`TaskRequest.done_steps`).
    pub done: Vec<StepRecord>,
}

/// Where a run of a task with `status` starts: a sequential task that was Running resumes at its
/// first unfinished step (the steps 0..k it persisted are not run again); everything else starts
/// at step 0.
pub fn resume(mode: Mode, status: &TaskStatus) -> Resume {
    if mode != Mode::Sequential || status.phase != Some(Phase::Running) {
        return Resume::default();
    }
    let done: Vec<StepRecord> = status
        .steps
        .iter()
        .enumerate()
        .take_while(|(i, s)| u32::try_from(*i).ok() == Some(s.index))
        .map(|(_, s)| s.clone())
        .collect();
    Resume {
        from: u32::try_from(done.len()).unwrap_or(u32::MAX),
        done,
    }
}

/// A task of one parent, as the queue sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<K> {
    /// The runtime's identity of the task.
    pub key: K,
    /// Its registration's priority (higher first).
    pub priority: i32,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// `metadata.name`.
    pub name: String,
    /// Its phase.
    pub phase: Option<Phase>,
    /// It is being deleted.
    pub deleting: bool,
    /// This core ran it to its end (the watch may not show that yet).
    pub ended_here: bool,
}

/// The queue order among the waiting tasks of one parent: a task that was already Running (the
/// core stopped under it) first; then priority, higher first; then creation time; then name.
pub fn queue_order<K>(a: &Candidate<K>, b: &Candidate<K>) -> Ordering {
    let running = |c: &Candidate<K>| c.phase != Some(Phase::Running);
    running(a)
        .cmp(&running(b))
        .then(b.priority.cmp(&a.priority))
        .then(a.created.cmp(&b.created))
        .then(a.name.cmp(&b.name))
}

/// The task of one parent to run next, among `candidates` (the tasks of that parent): the
/// ones seen as Waiting or Running, not being deleted, not run to their end by this core, in
/// [`queue_order`].
pub fn next<K>(candidates: &[Candidate<K>]) -> Option<&Candidate<K>> {
    candidates
        .iter()
        .filter(|c| {
            matches!(c.phase, Some(Phase::Waiting | Phase::Running)) && !c.deleting && !c.ended_here
        })
        .min_by(|a, b| queue_order(a, b))
}

/// What the core knows about one task that it does not run right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Its status.
    pub status: TaskStatus,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// It carries the core's task finalizer.
    pub finalizer: bool,
    /// Its parent's name, or why it names none.
    pub parent: Result<String, NoParent>,
}

/// What to do about a task that the core does not run right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing (e.g. deleted without our finalizer: it simply goes).
    Nothing,
    /// First seen: write phase Waiting.
    MarkWaiting,
    /// It is queued on its parent.
    Queue,
    /// It names no parent: fail it with this message.
    Fail(String),
    /// Deleted while it ran, but its run ended without the core (the core restarted): record
    /// phase Cancelled, post the Event, release the finalizer.
    RecordCancelled,
    /// Deleted after its end with our finalizer still on: release the finalizer.
    ReleaseFinalizer,
    /// Finished: delete it at this time (the retention after its completion).
    Expire(Timestamp),
}

/// What the core does about a task that it does not run right now, `retention` being the time a
/// finished task is kept.
pub fn decide(task: &Observed, retention: Duration) -> Action {
    let phase = task.status.phase;
    if task.deleting {
        return match (task.finalizer, phase) {
            (false, _) => Action::Nothing,
            (true, Some(p)) if p.is_terminal() => Action::ReleaseFinalizer,
            (true, _) => Action::RecordCancelled,
        };
    }
    match phase {
        Some(p) if p.is_terminal() => {
            let end = task
                .status
                .completion_time
                .or(task.status.start_time)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            let keep = SignedDuration::try_from(retention).unwrap_or(SignedDuration::MAX);
            Action::Expire(end.checked_add(keep).unwrap_or(Timestamp::MAX))
        }
        None => match &task.parent {
            Err(missing) => Action::Fail(missing.to_string()),
            Ok(_) => Action::MarkWaiting,
        },
        Some(_) => match &task.parent {
            Err(missing) => Action::Fail(missing.to_string()),
            Ok(_) => Action::Queue,
        },
    }
}

/// Why a task names no parent (the message goes into the task's status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoParent {
    /// The field is not there.
    #[error("the task names no parent: {0} is not set")]
    Unset(String),
    /// The field is empty or not a string.
    #[error("the task names no parent: {0} must be a non-empty string")]
    NotAName(String),
}

/// The parent's name at `parent_field` (a dotted path such as `spec.cluster`) of a task body.
///
/// # Errors
/// [`NoParent`] when the field is missing, empty or not a string.
pub fn parent_name(body: &Value, parent_field: &str) -> Result<String, NoParent> {
    let mut v = body;
    for part in parent_field.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return Err(NoParent::Unset(parent_field.to_owned())),
        }
    }
    match v.as_str() {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(NoParent::NotAName(parent_field.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cand(name: &str, priority: i32, created: &str, phase: Option<Phase>) -> Candidate<String> {
        Candidate {
            key: name.to_owned(),
            priority,
            created: Some(ts(created)),
            name: name.to_owned(),
            phase,
            deleting: false,
            ended_here: false,
        }
    }

    fn step(index: u32) -> StepRecord {
        StepRecord {
            index,
            name: format!("s{index}"),
            ok: true,
            message: String::new(),
            result: None,
        }
    }

    const W: Option<Phase> = Some(Phase::Waiting);

    #[test]
    fn fifo_by_creation_time_then_name() {
        let c = vec![
            cand("b", 0, "2026-01-01T00:00:01Z", W),
            cand("c", 0, "2026-01-01T00:00:00Z", W),
            cand("a", 0, "2026-01-01T00:00:01Z", W),
        ];
        assert_eq!(next(&c).unwrap().name, "c");
        let mut sorted = c.clone();
        sorted.sort_by(queue_order);
        let names: Vec<&str> = sorted.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["c", "a", "b"]);
    }

    #[test]
    fn priority_reorders_waiting_work_but_a_running_task_goes_first() {
        let c = vec![
            cand("old", 0, "2026-01-01T00:00:00Z", W),
            cand("urgent", 10, "2026-01-01T00:00:05Z", W),
        ];
        assert_eq!(next(&c).unwrap().name, "urgent");
        let mut with_running = c.clone();
        with_running.push(cand(
            "was-running",
            0,
            "2026-01-01T00:00:09Z",
            Some(Phase::Running),
        ));
        assert_eq!(next(&with_running).unwrap().name, "was-running");
    }

    #[test]
    fn deleted_tasks_and_tasks_ended_here_are_not_chosen() {
        let c = vec![
            Candidate {
                deleting: true,
                ..cand("deleted", 10, "2026-01-01T00:00:00Z", W)
            },
            Candidate {
                ended_here: true,
                ..cand("ended", 10, "2026-01-01T00:00:00Z", Some(Phase::Running))
            },
            cand("next", 0, "2026-01-01T00:00:09Z", W),
        ];
        assert_eq!(next(&c).unwrap().name, "next");
        assert_eq!(next(&c[..2]), None);
    }

    #[test]
    fn terminal_and_unseen_tasks_never_run() {
        let c = vec![
            cand("done", 0, "2026-01-01T00:00:00Z", Some(Phase::Succeeded)),
            cand("failed", 0, "2026-01-01T00:00:00Z", Some(Phase::Failed)),
            cand(
                "cancelled",
                0,
                "2026-01-01T00:00:00Z",
                Some(Phase::Cancelled),
            ),
            cand("unseen", 0, "2026-01-01T00:00:00Z", None),
        ];
        assert_eq!(next(&c), None);
        for p in [Phase::Succeeded, Phase::Failed, Phase::Cancelled] {
            assert!(p.is_terminal());
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert!(!Phase::Running.is_terminal());
        assert_eq!(Phase::parse("SUCCEED"), None);
    }

    #[test]
    fn status_is_read_leniently() {
        let body = json!({"status": {
            "phase": "Running", "startTime": "2026-01-01T00:00:00Z", "message": "m",
            "steps": [{"index": 1, "name": "b", "ok": true}, {"index": 0, "name": "a", "ok": false,
                       "message": "x", "result": {"n": 1}}, {"name": "no index"}],
        }});
        let s = TaskStatus::of(&body);
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.start_time, Some(ts("2026-01-01T00:00:00Z")));
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[0].name, "a");
        assert_eq!(s.steps[0].result, Some(json!({"n": 1})));
        assert_eq!(TaskStatus::of(&json!({})), TaskStatus::default());
        assert_eq!(
            TaskStatus::of(&json!({"status": {"phase": 3, "steps": "no"}})),
            TaskStatus::default()
        );
    }

    #[test]
    fn a_sequential_task_resumes_at_its_first_unfinished_step() {
        let running = |steps: Vec<StepRecord>| TaskStatus {
            phase: Some(Phase::Running),
            steps,
            ..TaskStatus::default()
        };
        let r = resume(Mode::Sequential, &running(vec![step(0), step(1)]));
        assert_eq!(r.from, 2);
        assert_eq!(r.done, vec![step(0), step(1)]);
        // A gap: resume at the first missing index, with the contiguous prefix only.
        let r = resume(Mode::Sequential, &running(vec![step(0), step(2)]));
        assert_eq!((r.from, r.done.len()), (1, 1));
        // A parallel task starts over; so does a task that never ran.
        assert_eq!(
            resume(Mode::Parallel, &running(vec![step(0)])),
            Resume::default()
        );
        assert!(Mode::Sequential.persists_each_step());
        assert!(!Mode::Parallel.persists_each_step());
        let waiting = TaskStatus {
            phase: Some(Phase::Waiting),
            steps: vec![step(0)],
            ..TaskStatus::default()
        };
        assert_eq!(resume(Mode::Sequential, &waiting), Resume::default());
    }

    #[test]
    fn running_keeps_the_first_start_of_a_resumed_sequential_task() {
        let now = ts("2026-01-01T00:01:00Z");
        let body = json!({"metadata": {"generation": 2}, "status": {
            "phase": "Running", "startTime": "2026-01-01T00:00:00Z", "steps": [{"index": 0}]}});
        let p = running_patch(&body, Mode::Sequential, now);
        assert_eq!(p["status"]["startTime"], "2026-01-01T00:00:00Z");
        assert!(
            p["status"].get("steps").is_none(),
            "the finished steps stay"
        );
        assert_eq!(p["status"]["observedGeneration"], 2);
        let p = running_patch(&body, Mode::Parallel, now);
        assert_eq!(p["status"]["startTime"], "2026-01-01T00:01:00Z");
        assert_eq!(p["status"]["steps"], Value::Null);
        let fresh = json!({"status": {"phase": "Waiting"}});
        let p = running_patch(&fresh, Mode::Sequential, now);
        assert_eq!(p["status"]["startTime"], "2026-01-01T00:01:00Z");
        assert_eq!(
            waiting_patch(&body),
            json!({"status": {"phase": "Waiting", "observedGeneration": 2}})
        );
    }

    #[test]
    fn the_end_records_phase_times_duration_message_and_steps() {
        let mut steps = vec![];
        record_step(&mut steps, step(1));
        record_step(&mut steps, step(0));
        record_step(
            &mut steps,
            StepRecord {
                ok: false,
                ..step(1)
            },
        );
        assert_eq!(steps.len(), 2);
        assert!(!steps[1].ok);
        let ending = Ending {
            phase: Phase::Failed,
            message: "boom".into(),
        };
        let p = finish_patch(
            &ending,
            Some(ts("2026-01-01T00:00:00Z")),
            ts("2026-01-01T00:00:01.5Z"),
            &steps,
        );
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(p["status"]["durationMs"], 1500);
        assert_eq!(p["status"]["completionTime"], "2026-01-01T00:00:01.5Z");
        assert_eq!(p["status"]["message"], "boom");
        assert_eq!(p["status"]["steps"][1]["ok"], false);
        assert_eq!(steps_patch(&steps)["status"]["steps"][0]["index"], 0);
    }

    #[test]
    fn decisions() {
        let obs = |phase: Option<Phase>, deleting: bool, finalizer: bool| Observed {
            status: TaskStatus {
                phase,
                completion_time: Some(ts("2026-01-01T00:00:00Z")),
                ..TaskStatus::default()
            },
            deleting,
            finalizer,
            parent: Ok("p".into()),
        };
        let day = Duration::from_secs(86_400);
        assert_eq!(decide(&obs(None, false, false), day), Action::MarkWaiting);
        assert_eq!(decide(&obs(W, false, false), day), Action::Queue);
        assert_eq!(
            decide(&obs(Some(Phase::Running), false, true), day),
            Action::Queue
        );
        assert_eq!(
            decide(&obs(Some(Phase::Succeeded), false, false), day),
            Action::Expire(ts("2026-01-02T00:00:00Z"))
        );
        assert_eq!(decide(&obs(W, true, false), day), Action::Nothing);
        assert_eq!(
            decide(&obs(Some(Phase::Running), true, true), day),
            Action::RecordCancelled
        );
        assert_eq!(
            decide(&obs(Some(Phase::Cancelled), true, true), day),
            Action::ReleaseFinalizer
        );
        let orphan = Observed {
            parent: Err(NoParent::Unset("spec.cluster".into())),
            ..obs(None, false, false)
        };
        assert_eq!(
            decide(&orphan, day),
            Action::Fail("the task names no parent: spec.cluster is not set".into())
        );
    }

    #[test]
    fn the_parent_is_named_at_a_dotted_path() {
        let body = json!({"spec": {"cluster": "c1", "empty": "", "n": 3}});
        assert_eq!(parent_name(&body, "spec.cluster").unwrap(), "c1");
        assert!(
            parent_name(&body, "spec.missing")
                .unwrap_err()
                .to_string()
                .contains("spec.missing is not set")
        );
        assert!(parent_name(&body, "spec.empty").is_err());
        assert!(parent_name(&body, "spec.n").is_err());
    }
}
