//! A pass of the task controller: what it does about each task that this core does not run
//! ([`PassMemory::look`]), what it remembers between passes so that a write is not repeated too
//! soon, whether a running task is cancelled ([`cancels`]), and how a run starts ([`start`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::{Action, Ending, Observed, Phase, decide};

/// How long a clean-up or a deletion that the watch does not show done yet waits before it is
/// tried again.
pub const RETRY_WRITES_AFTER: Duration = Duration::from_secs(10);
/// How soon a failed write of phase Waiting is tried again (a worker whose task could not be
/// started waits as long before its parent is looked at again).
pub const RETRY_SOON: Duration = Duration::from_secs(2);
/// The longest a pass sleeps without a change, a worker's end or a due expiry.
pub const PASS_AT_MOST: Duration = Duration::from_secs(60);

/// One task in a pass.
#[derive(Debug, Clone, Copy)]
pub struct InPass<'a> {
    /// Its uid.
    pub uid: &'a str,
    /// What is observed on it.
    pub observed: &'a Observed,
    /// A worker of this core runs it now.
    pub running: bool,
    /// This core ran it to its end (or failed it), whether or not the watch shows that yet.
    pub ended_here: bool,
}

/// What a pass does about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    /// Show its status in the read model (not while it runs here, nor while the watch does not
    /// show the end this core gave it yet: the end was shown then).
    pub show: bool,
    /// What to do.
    pub todo: Todo,
}

/// What a pass does about one task that this core does not run.
#[derive(Debug, Clone, PartialEq)]
pub enum Todo {
    /// Nothing now.
    Nothing,
    /// Write phase Waiting; when the write fails, [`PassMemory::unmark`] it and look again
    /// within [`RETRY_SOON`].
    MarkWaiting,
    /// It is queued on its parent: the parent needs a worker.
    Queue,
    /// Fail it (it names no parent) with this ending; it counts as ended here.
    Fail(Ending),
    /// Deleted while it ran, when the core was not running it: record this ending with its
    /// steps and start time, post the Event, release the finalizer.
    RecordCancelled(Ending),
    /// Deleted after its end with the core's finalizer on: release the finalizer (when that
    /// fails, look again within [`RETRY_WRITES_AFTER`]).
    ReleaseFinalizer,
    /// Its retention passed: delete it.
    Expire,
    /// Its retention ends in this long: look again by then.
    WaitAtMost(Duration),
}

/// What the pass remembers between passes, by task uid: the writes it made and when.
#[derive(Debug, Default)]
pub struct PassMemory {
    /// Waiting written (or being written) by this core.
    marked: HashSet<String>,
    /// Deleted by retention, and when.
    expiring: HashMap<String, Instant>,
    /// Deletions recorded after a restart or finalizers released, and when.
    cleaned: HashMap<String, Instant>,
}

/// Whether a write about `uid` is due at `clock`: never tried, or tried [`RETRY_WRITES_AFTER`]
/// ago (it failed, or its effect is not visible yet); records the try.
fn due(tried: &mut HashMap<String, Instant>, uid: &str, clock: Instant) -> bool {
    match tried.get(uid) {
        Some(at) if clock.duration_since(*at) < RETRY_WRITES_AFTER => false,
        _ => {
            tried.insert(uid.to_owned(), clock);
            true
        }
    }
}

impl PassMemory {
    /// Forgets the tasks that are not `present` any more.
    pub fn keep_only(&mut self, present: &HashSet<&str>) {
        self.marked.retain(|u| present.contains(u.as_str()));
        self.expiring.retain(|u, _| present.contains(u.as_str()));
        self.cleaned.retain(|u, _| present.contains(u.as_str()));
    }

    /// The write of phase Waiting on `uid` failed: it is due again.
    pub fn unmark(&mut self, uid: &str) {
        self.marked.remove(uid);
    }

    /// What to do about `task` at `now` (`clock`: the same moment, monotonic), `retention`
    /// being the time a finished task is kept ([`decide`]): a new task is marked Waiting once,
    /// a task ended here is neither queued nor failed again, clean-ups and deletions are
    /// repeated only every [`RETRY_WRITES_AFTER`].
    pub fn look(
        &mut self,
        task: InPass<'_>,
        retention: Duration,
        now: Timestamp,
        clock: Instant,
    ) -> Look {
        if task.running {
            return Look {
                show: false,
                todo: Todo::Nothing,
            };
        }
        let ended_here = task.ended_here;
        let stale = ended_here && !task.observed.status.phase.is_some_and(Phase::is_terminal);
        let todo = match decide(task.observed, retention) {
            Action::MarkWaiting if !ended_here && self.marked.insert(task.uid.to_owned()) => {
                Todo::MarkWaiting
            }
            Action::Queue if !ended_here => Todo::Queue,
            Action::Fail(message) if !ended_here => Todo::Fail(Ending::failed(message)),
            Action::RecordCancelled if due(&mut self.cleaned, task.uid, clock) => {
                Todo::RecordCancelled(Ending::cancelled_away())
            }
            Action::ReleaseFinalizer if due(&mut self.cleaned, task.uid, clock) => {
                Todo::ReleaseFinalizer
            }
            Action::Expire(at) if at <= now => {
                if due(&mut self.expiring, task.uid, clock) {
                    Todo::Expire
                } else {
                    Todo::Nothing
                }
            }
            Action::Expire(at) => {
                Duration::try_from(at.duration_since(now)).map_or(Todo::Nothing, Todo::WaitAtMost)
            }
            Action::Nothing
            | Action::MarkWaiting
            | Action::Queue
            | Action::Fail(_)
            | Action::RecordCancelled
            | Action::ReleaseFinalizer => Todo::Nothing,
        };
        Look { show: !stale, todo }
    }
}

/// Whether the running task `seen` (`None`: no longer in the stores) is cancelled: it is gone or
/// being deleted.
pub fn cancels(seen: Option<&Observed>) -> bool {
    seen.is_none_or(|t| t.deleting)
}

/// How a worker goes on with the task it chose, read fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Nothing to run: the task went (or another one has its name), or it is being deleted
    /// (the pass records that).
    Idle,
    /// It already ended: never run again.
    Ended,
    /// Add the core's finalizer first, then run it.
    AddFinalizer,
    /// Run it.
    Run,
}

/// How a worker goes on with the task it chose, as read fresh (`None`: gone, or not the task
/// chosen).
pub fn start(task: Option<&Observed>) -> Start {
    match task {
        None => Start::Idle,
        Some(t) if t.status.phase.is_some_and(Phase::is_terminal) => Start::Ended,
        Some(t) if t.deleting => Start::Idle,
        Some(t) if !t.finalizer => Start::AddFinalizer,
        Some(_) => Start::Run,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NoParent, TaskStatus};
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn obs(phase: Option<Phase>, deleting: bool, finalizer: bool) -> Observed {
        Observed {
            status: TaskStatus {
                phase,
                completion_time: Some(ts("2026-01-01T00:00:00Z")),
                ..TaskStatus::default()
            },
            deleting,
            finalizer,
            parent: Ok("p".into()),
        }
    }

    fn task(observed: &Observed) -> InPass<'_> {
        InPass {
            uid: "u",
            observed,
            running: false,
            ended_here: false,
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_new_task_is_marked_waiting_once_and_again_after_a_failed_write() {
        let mut memory = PassMemory::default();
        let (now, clock) = (ts("2026-01-01T00:00:00Z"), Instant::now());
        let new = obs(None, false, false);
        let look = memory.look(task(&new), DAY, now, clock);
        assert_eq!(
            look,
            Look {
                show: true,
                todo: Todo::MarkWaiting
            }
        );
        assert_eq!(memory.look(task(&new), DAY, now, clock).todo, Todo::Nothing);
        memory.unmark("u");
        assert_eq!(
            memory.look(task(&new), DAY, now, clock).todo,
            Todo::MarkWaiting
        );
        // A task gone from the stores is forgotten.
        memory.keep_only(&HashSet::new());
        assert_eq!(
            memory.look(task(&new), DAY, now, clock).todo,
            Todo::MarkWaiting
        );
    }

    #[test]
    fn a_running_task_is_left_to_its_worker_and_an_ended_one_is_not_queued_again() {
        let mut memory = PassMemory::default();
        let (now, clock) = (ts("2026-01-01T00:00:00Z"), Instant::now());
        let waiting = obs(Some(Phase::Waiting), false, false);
        assert_eq!(
            memory.look(task(&waiting), DAY, now, clock).todo,
            Todo::Queue
        );
        let running = InPass {
            running: true,
            ..task(&waiting)
        };
        assert_eq!(
            memory.look(running, DAY, now, clock),
            Look {
                show: false,
                todo: Todo::Nothing
            }
        );
        // Ended here, the watch still shows it Waiting: not shown (its end was), not queued.
        let ended = InPass {
            ended_here: true,
            ..task(&waiting)
        };
        assert_eq!(
            memory.look(ended, DAY, now, clock),
            Look {
                show: false,
                todo: Todo::Nothing
            }
        );
        let orphan = Observed {
            parent: Err(NoParent::Unset("spec.cluster".into())),
            ..obs(None, false, false)
        };
        assert_eq!(
            memory.look(task(&orphan), DAY, now, clock).todo,
            Todo::Fail(Ending {
                phase: Phase::Failed,
                message: "the task names no parent: spec.cluster is not set".into()
            })
        );
        let orphan_ended = InPass {
            ended_here: true,
            ..task(&orphan)
        };
        assert_eq!(
            memory.look(orphan_ended, DAY, now, clock).todo,
            Todo::Nothing
        );
        // Its end shows in the watch: shown again.
        let done = obs(Some(Phase::Succeeded), false, false);
        let ended = InPass {
            ended_here: true,
            ..task(&done)
        };
        assert!(memory.look(ended, DAY, now, clock).show);
    }

    #[test]
    fn clean_ups_and_expiries_are_repeated_only_after_a_while() {
        let mut memory = PassMemory::default();
        let clock = Instant::now();
        let now = ts("2026-01-01T12:00:00Z");
        let deleted = obs(Some(Phase::Running), true, true);
        assert_eq!(
            memory.look(task(&deleted), DAY, now, clock).todo,
            Todo::RecordCancelled(Ending {
                phase: Phase::Cancelled,
                message: "cancelled: the task was deleted while it ran (the core was not \
                          running it then)"
                    .into()
            })
        );
        assert_eq!(
            memory.look(task(&deleted), DAY, now, clock).todo,
            Todo::Nothing
        );
        let later = clock + RETRY_WRITES_AFTER;
        assert!(matches!(
            memory.look(task(&deleted), DAY, now, later).todo,
            Todo::RecordCancelled(_)
        ));
        let released = obs(Some(Phase::Cancelled), true, true);
        let mut memory = PassMemory::default();
        assert_eq!(
            memory.look(task(&released), DAY, now, clock).todo,
            Todo::ReleaseFinalizer
        );
        assert_eq!(
            memory.look(task(&released), DAY, now, clock).todo,
            Todo::Nothing
        );
        // Finished at midnight, kept a day: wait until then, then delete once.
        let done = obs(Some(Phase::Succeeded), false, false);
        assert_eq!(
            memory.look(task(&done), DAY, now, clock).todo,
            Todo::WaitAtMost(Duration::from_secs(12 * 3600))
        );
        let next_day = ts("2026-01-02T00:00:00Z");
        assert_eq!(
            memory.look(task(&done), DAY, next_day, clock).todo,
            Todo::Expire
        );
        assert_eq!(
            memory.look(task(&done), DAY, next_day, clock).todo,
            Todo::Nothing
        );
        assert_eq!(
            memory.look(task(&done), DAY, next_day, later).todo,
            Todo::Expire
        );
    }

    #[test]
    fn a_running_task_is_cancelled_when_gone_or_deleted_and_a_chosen_one_starts_so() {
        assert!(cancels(None));
        assert!(cancels(Some(&obs(Some(Phase::Running), true, true))));
        assert!(!cancels(Some(&obs(Some(Phase::Running), false, true))));
        assert_eq!(start(None), Start::Idle);
        assert_eq!(
            start(Some(&obs(Some(Phase::Failed), true, true))),
            Start::Ended
        );
        assert_eq!(
            start(Some(&obs(Some(Phase::Waiting), true, true))),
            Start::Idle
        );
        assert_eq!(
            start(Some(&obs(Some(Phase::Waiting), false, false))),
            Start::AddFinalizer
        );
        assert_eq!(
            start(Some(&obs(Some(Phase::Running), false, true))),
            Start::Run
        );
    }
}
