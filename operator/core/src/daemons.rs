//! Daemons' decisions (`@kopf.daemon`, performed by `runtime::daemons`): whether a cycle starts,
//! feeds or leaves an object's daemon, what an exit of the daemon's function means (end for good,
//! end on request, restart after a delay), Kopf's stopping ladder (the `stopped` flag, then
//! cancellation after `cancellation_backoff`, then abandonment after `cancellation_timeout`), and
//! the backoff after a failing handler service.
//!
//! Times are a parameter: the ladder works with any instant type (`I`), the runtime's clock.

use std::ops::Add;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::outcome::{self, Outcome, Verdict};

/// The pause before a daemon is started again after its handler service failed: 1 s, doubling up
/// to 60 s; it starts over after an exit of the daemon's function.
pub const TRANSPORT: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// Kopf's `str(handler)` for a daemon: `Daemon 'id'`.
pub fn title(id: &str) -> String {
    format!("Daemon {}", outcome::py_repr(id))
}

/// How a daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// On its own (success, permanent failure, retries used up): never again for this object.
    ForGood,
    /// Stopped by the core: it may start again when the object matches again.
    OnRequest,
}

/// What is known of an object's daemon (or timer) that a cycle wants to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Known {
    /// How it ended, once it has.
    pub end: Option<End>,
    /// Its task is over (for a daemon without an [`End`]: it panicked).
    pub task_finished: bool,
    /// A stop was requested: it is exiting.
    pub stopping: bool,
}

impl Known {
    /// It has exited, one way or the other.
    pub fn finished(&self) -> bool {
        self.end.is_some() || self.task_finished
    }
}

/// What a cycle does for a daemon or a timer that the object wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Start it (it does not run, or may run again).
    Start,
    /// It runs: give it the new body.
    Feed,
    /// Leave it as it is (exiting, or ended for good).
    Leave,
}

/// What a cycle does for a daemon the object wants, given what is known of it (`None`: none).
pub fn wanted(known: Option<Known>) -> Wanted {
    let Some(known) = known else {
        return Wanted::Start;
    };
    match known.end {
        None if known.task_finished => Wanted::Start, // it panicked: start it again
        None if known.stopping => Wanted::Leave,      // exiting: never two of one daemon at a time
        None => Wanted::Feed,
        Some(End::ForGood) => Wanted::Leave, // as in Kopf: not until the core restarts
        Some(End::OnRequest) => Wanted::Start,
    }
}

/// Whether a running daemon is still wanted: its object is the same one (a re-created object
/// of the same name has another uid) and its handler is among the wanted ones.
pub fn still_wanted(daemon_uid: &str, object_uid: &str, handler_wanted: bool) -> bool {
    daemon_uid == object_uid && handler_wanted
}

/// The `outcome` label of a daemon's exit in the metrics (a daemon that will be restarted is a
/// `retry`, also while sub-handlers are pending).
pub fn outcome_label(verdict: &Verdict) -> &'static str {
    match verdict.outcome {
        Outcome::Succeeded { .. } => "success",
        Outcome::Failed { .. } => "failure",
        Outcome::Retry { .. } | Outcome::Pending { .. } => "retry",
    }
}

/// What follows an exit of the daemon's function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// The daemon ends, with Kopf's debug line.
    End(End, String),
    /// It is started again after the delay, with `retry` one higher.
    Restart(Duration),
}

/// What follows an exit judged as `verdict` (`stop_requested`: a stop came meanwhile).
pub fn after_exit(title: &str, verdict: &Verdict, stop_requested: bool) -> AfterExit {
    if stop_requested {
        AfterExit::End(
            End::OnRequest,
            format!("{title} has exited on request and will not be retried or restarted."),
        )
    } else if verdict.is_finished() {
        AfterExit::End(
            End::ForGood,
            format!("{title} has exited on its own and will not be retried or restarted."),
        )
    } else {
        AfterExit::Restart(verdict.delay().unwrap_or_default())
    }
}

/// Kopf's line (and the Warning Event's message) when the handler service failed to run the
/// daemon; it is started again after `backoff`.
pub fn transport_failure(title: &str, error: &str, backoff: Duration) -> String {
    format!(
        "{title} could not run: {error}. It will be started again in {} seconds.",
        backoff.as_secs()
    )
}

/// The attempt id of one call of a daemon: `<uid>/<handler>/daemon/<retry>/<started ms>`.
pub fn attempt_id(uid: &str, handler: &str, retry: u32, started_ms: i64) -> String {
    format!("{uid}/{handler}/daemon/{retry}/{started_ms}")
}

/// Where the stopping ladder of one call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ladder<I> {
    /// No stop requested.
    Running,
    /// The `stopped` flag is set; cancel at this time, if ever.
    Signalled(Option<I>),
    /// Cancelled; abandon at this time, if ever.
    Cancelled(Option<I>),
}

/// The next rung when the ladder's time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rung {
    /// Cancel the daemon (a forced stop), with the debug line; abandon it this long after the
    /// cancellation, if ever (see [`Ladder::cancelled`]).
    Cancel(Option<Duration>, String),
    /// Leave it orphaned (the call is dropped), with the warning line.
    Abandon(String),
}

impl<I: Copy + Add<Duration, Output = I>> Ladder<I> {
    /// Cancelled at `now`: abandoned `after` that, if ever (see [`Rung::Cancel`]).
    pub fn cancelled(after: Option<Duration>, now: I) -> Ladder<I> {
        Ladder::Cancelled(after.map(|t| now + t))
    }

    /// No stop was requested yet.
    pub fn is_running(&self) -> bool {
        matches!(self, Ladder::Running)
    }

    /// When the next rung is due, if ever.
    pub fn due(&self) -> Option<I> {
        match *self {
            Ladder::Running => None,
            Ladder::Signalled(at) | Ladder::Cancelled(at) => at,
        }
    }

    /// A stop was requested at `now`: the graceful stop is sent. As in Kopf, only a daemon with
    /// a cancellation timeout is ever cancelled, `backoff` after the flag (at once without one).
    /// Also the debug line to log, if any (only with a backoff).
    pub fn signalled(
        title: &str,
        backoff: Option<Duration>,
        timeout: Option<Duration>,
        now: I,
    ) -> (Ladder<I>, Option<String>) {
        let line = backoff.map(|_| format!("{title} is signalled to exit gracefully."));
        let cancel_at = now + backoff.unwrap_or_default();
        (Ladder::Signalled(timeout.map(|_| cancel_at)), line)
    }

    /// The ladder's time has come: cancel after the flag, abandon after the cancel.
    pub fn climb(self, title: &str, timeout: Option<Duration>) -> Rung {
        match self {
            Ladder::Signalled(_) => {
                Rung::Cancel(timeout, format!("{title} is signalled to exit by force."))
            }
            Ladder::Cancelled(_) | Ladder::Running => Rung::Abandon(format!(
                "{title} did not exit in time. Leaving it orphaned."
            )),
        }
    }
}

/// How a call that ended without an outcome (its stream failed with `error`, or closed with
/// `None`) counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended<E> {
    /// It was being stopped: it stopped.
    Stopped,
    /// The handler service failed (`None`: the call closed without an outcome).
    Failed(Option<E>),
}

/// How a call that ended without an outcome counts, given the ladder.
pub fn ended<I: Copy + Add<Duration, Output = I>, E>(
    ladder: &Ladder<I>,
    error: Option<E>,
) -> Ended<E> {
    if ladder.is_running() {
        Ended::Failed(error)
    } else {
        Ended::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Level;

    /// A test clock: seconds.
    type T = Duration;

    fn verdict(outcome: Outcome) -> Verdict {
        Verdict {
            outcome,
            log: (Level::Info, String::new()),
        }
    }

    #[test]
    fn a_wanted_daemon_is_started_fed_or_left() {
        assert_eq!(wanted(None), Wanted::Start);
        let running = Known::default();
        assert_eq!(wanted(Some(running)), Wanted::Feed);
        let exiting = Known {
            stopping: true,
            ..running
        };
        assert_eq!(wanted(Some(exiting)), Wanted::Leave);
        let panicked = Known {
            task_finished: true,
            stopping: true,
            ..running
        };
        assert_eq!(wanted(Some(panicked)), Wanted::Start);
        let done = |end| Known {
            end: Some(end),
            task_finished: true,
            stopping: false,
        };
        assert_eq!(wanted(Some(done(End::ForGood))), Wanted::Leave);
        assert_eq!(wanted(Some(done(End::OnRequest))), Wanted::Start);
        assert!(done(End::ForGood).finished() && !running.finished());
    }

    #[test]
    fn a_daemon_of_another_uid_or_handler_is_not_wanted() {
        assert!(still_wanted("u1", "u1", true));
        assert!(!still_wanted("u1", "u2", true));
        assert!(!still_wanted("u1", "u1", false));
    }

    #[test]
    fn exits_end_the_daemon_or_restart_it() {
        let t = title("d1");
        assert_eq!(t, "Daemon 'd1'");
        let ok = verdict(Outcome::Succeeded { result: None });
        let retry = verdict(Outcome::Retry {
            message: "x".into(),
            delay: Some(Duration::from_secs(5)),
        });
        assert_eq!(
            after_exit(&t, &retry, true),
            AfterExit::End(
                End::OnRequest,
                "Daemon 'd1' has exited on request and will not be retried or restarted.".into()
            )
        );
        assert_eq!(
            after_exit(&t, &ok, false),
            AfterExit::End(
                End::ForGood,
                "Daemon 'd1' has exited on its own and will not be retried or restarted.".into()
            )
        );
        let failed = verdict(Outcome::Failed {
            message: "no".into(),
        });
        assert!(matches!(
            after_exit(&t, &failed, false),
            AfterExit::End(End::ForGood, _)
        ));
        assert_eq!(
            after_exit(&t, &retry, false),
            AfterExit::Restart(Duration::from_secs(5))
        );
        let pending = verdict(Outcome::Pending { delay: None });
        assert_eq!(
            after_exit(&t, &pending, false),
            AfterExit::Restart(Duration::ZERO)
        );
    }

    #[test]
    fn outcome_labels_count_restarts_as_retries() {
        assert_eq!(
            outcome_label(&verdict(Outcome::Succeeded { result: None })),
            "success"
        );
        assert_eq!(
            outcome_label(&verdict(Outcome::Failed {
                message: String::new()
            })),
            "failure"
        );
        assert_eq!(
            outcome_label(&verdict(Outcome::Pending { delay: None })),
            "retry"
        );
    }

    #[test]
    fn the_transport_backoff_doubles_to_a_minute() {
        let mut delay = TRANSPORT.first;
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(delay.as_secs());
            delay = TRANSPORT.next(delay);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            transport_failure("Daemon 'd'", "down", Duration::from_secs(4)),
            "Daemon 'd' could not run: down. It will be started again in 4 seconds."
        );
        assert_eq!(attempt_id("u", "d", 2, 17), "u/d/daemon/2/17");
    }

    #[test]
    fn the_ladder_cancels_after_the_backoff_and_abandons_after_the_timeout() {
        let s = Duration::from_secs;
        let (ladder, line): (Ladder<T>, _) =
            Ladder::signalled("D", Some(s(2)), Some(s(10)), s(100));
        assert_eq!(ladder, Ladder::Signalled(Some(s(102))));
        assert_eq!(line.as_deref(), Some("D is signalled to exit gracefully."));
        assert_eq!(ladder.due(), Some(s(102)));
        let Rung::Cancel(after, line) = ladder.climb("D", Some(s(10))) else {
            panic!("cancelled first");
        };
        assert_eq!(line, "D is signalled to exit by force.");
        let cancelled = Ladder::cancelled(after, s(102));
        assert_eq!(cancelled, Ladder::Cancelled(Some(s(112))));
        assert_eq!(
            cancelled.climb("D", Some(s(10))),
            Rung::Abandon("D did not exit in time. Leaving it orphaned.".into())
        );
    }

    #[test]
    fn without_a_timeout_the_ladder_never_cancels_and_without_a_backoff_it_cancels_at_once() {
        let s = Duration::from_secs;
        let (ladder, line): (Ladder<T>, _) = Ladder::signalled("D", Some(s(1)), None, s(0));
        assert_eq!((ladder.due(), line.is_some()), (None, true));
        let (ladder, line): (Ladder<T>, _) = Ladder::signalled("D", None, Some(s(3)), s(7));
        assert_eq!((ladder.due(), line), (Some(s(7)), None));
    }

    #[test]
    fn a_call_that_ends_while_stopping_stopped() {
        let running: Ladder<T> = Ladder::Running;
        assert_eq!(ended(&running, Some("e")), Ended::Failed(Some("e")));
        assert_eq!(ended::<T, &str>(&running, None), Ended::Failed(None));
        let stopping: Ladder<T> = Ladder::Signalled(None);
        assert_eq!(ended(&stopping, Some("e")), Ended::Stopped);
    }
}
