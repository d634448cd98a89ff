//! Timers' decisions (`@kopf.timer`, performed by `runtime::timers`): what one tick's answer
//! means (the pause before the next tick, its log line and metrics label), how failed attempts
//! count within a tick, when the next tick is due (idle, sharp schedule), and what a cycle does
//! for a timer the object wants.
//!
//! A permanent failure (or an arbitrary error with `errors=PERMANENT`) ends only the current tick:
//! as in Kopf 1.45.2's code (its timer loop resets the handler's state and goes on), the timer
//! ticks again after its interval — although Kopf's documentation says a timer stops then.

use std::ops::Add;
use std::time::Duration;

use serde_json::Value;

use crate::daemons::Wanted;
use crate::model::{ErrorsMode, Handler, Options};
use crate::outcome::{self, CallResult, Level};

/// Kopf's default interval when a timer names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Kopf's `str(handler)` for a timer: `Timer 'id'`.
pub fn title(id: &str) -> String {
    format!("Timer {}", outcome::py_repr(id))
}

/// The timer's interval.
pub fn interval(options: &Options) -> Duration {
    options.interval.unwrap_or(DEFAULT_INTERVAL)
}

/// What a cycle does for a timer the object wants (`None`: none runs; `Some(finished)`: one
/// was started, and its task is over or not). A running timer is fed the new body; one that
/// ended (it never does on its own) is left.
pub fn wanted(known: Option<bool>) -> Wanted {
    match known {
        None => Wanted::Start,
        Some(false) => Wanted::Feed,
        Some(true) => Wanted::Leave,
    }
}

/// How long a timer with `idle` still waits when the object's last essential change was
/// `since` ago (`None`: it is idle enough, or has no `idle`).
pub fn idle_left(idle: Option<Duration>, since: Duration) -> Option<Duration> {
    idle.filter(|idle| since < *idle).map(|idle| idle - since)
}

/// What one tick came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Done (or failed for good): the next tick after the interval, a fresh attempt.
    Again,
    /// To be retried after this delay, within the same tick.
    After(Duration),
    /// To be retried after the handler's backoff, within the same tick.
    Backoff,
}

/// One tick's answer, judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// What the tick came to.
    pub tick: Tick,
    /// The metrics' `outcome` label, if the call counts.
    pub label: Option<&'static str>,
    /// Kopf's log line, if any.
    pub log: Option<(Level, String)>,
    /// The result to put in `status.<id>`.
    pub result: Option<Value>,
}

/// How a judged call shows on the object's timeline: its outcome, and the delay before the
/// next call within the tick (`None` with [`Tick::Backoff`]: the backoff is the handler's).
pub fn shown(judged: &Judged) -> (crate::views::AttemptOutcome, Option<Duration>) {
    use crate::views::AttemptOutcome;
    let outcome = match judged.label {
        None => AttemptOutcome::NotMatched,
        Some("success") => AttemptOutcome::Succeeded,
        Some("failure") => AttemptOutcome::Failed,
        Some(_) => AttemptOutcome::Retrying,
    };
    let delay = match judged.tick {
        Tick::After(delay) => Some(delay),
        Tick::Again | Tick::Backoff => None,
    };
    (outcome, delay)
}

/// Judges a tick's answer (`None`: a callback filter said no).
pub fn judge(
    title: &str,
    handler: &Handler,
    result: Option<CallResult>,
    default_backoff: Duration,
) -> Judged {
    let judged = |tick, label, level, line: String| Judged {
        tick,
        label: Some(label),
        log: Some((level, line)),
        result: None,
    };
    match result {
        None => Judged {
            tick: Tick::Again,
            label: None,
            log: None,
            result: None,
        },
        Some(CallResult::Success(result)) => Judged {
            result,
            ..judged(
                Tick::Again,
                "success",
                Level::Info,
                format!("{title} succeeded."),
            )
        },
        Some(CallResult::Temporary { message, delay }) => judged(
            Tick::After(delay.unwrap_or_default()),
            "retry",
            Level::Error,
            format!("{title} failed temporarily: {message}"),
        ),
        Some(CallResult::Permanent { message }) => judged(
            Tick::Again, // Kopf 1.45.2 resets and ticks on (see the module's docs)
            "failure",
            Level::Error,
            format!("{title} failed permanently: {message}"),
        ),
        Some(CallResult::Arbitrary { message }) => match handler.options.errors {
            ErrorsMode::Ignored => judged(
                Tick::Again,
                "failure",
                Level::Error,
                format!("{title} failed with an exception and will ignore it: {message}"),
            ),
            ErrorsMode::Permanent => judged(
                Tick::Again, // as after a permanent error
                "failure",
                Level::Error,
                format!("{title} failed with an exception and will stop now: {message}"),
            ),
            ErrorsMode::Temporary => judged(
                Tick::Backoff,
                "failure",
                Level::Error,
                format!(
                    "{title} failed with an exception and will try again in {} seconds: {message}",
                    outcome::py_seconds(handler.options.backoff.unwrap_or(default_backoff))
                ),
            ),
        },
        Some(CallResult::SubhandlersPending { delay }) => Judged {
            tick: Tick::After(delay.unwrap_or_default()),
            label: None,
            log: None,
            result: None,
        },
    }
}

/// A tick whose call did not reach the handler service: retried after the backoff.
pub fn failed_call(title: &str, error: &str) -> Judged {
    Judged {
        tick: Tick::Backoff,
        label: Some("error"),
        log: Some((
            Level::Error,
            format!("{title} failed with an exception and will try again: {error}"),
        )),
        result: None,
    }
}

/// The attempt after a tick that came to `tick`: within one tick, failed attempts count up and
/// keep their start (as in Kopf); after a finished tick the next one starts afresh (`None`).
pub fn next_attempt<T>(tick: Tick, (retry, started): (u32, T)) -> Option<(u32, T)> {
    match tick {
        Tick::After(_) | Tick::Backoff => Some((retry + 1, started)),
        Tick::Again => None,
    }
}

/// The pause after a tick.
pub fn pause(tick: Tick, interval: Duration, backoff: Duration) -> Duration {
    match tick {
        Tick::Again => interval,
        Tick::After(delay) => delay,
        Tick::Backoff => backoff,
    }
}

/// When a sharp timer ticks next: on its schedule, one `interval` after the last slot (never in
/// the past). `None`: not sharp, or a pause that is not the interval — sleep for the pause.
pub fn next_slot<I: Copy + Ord + Add<Duration, Output = I>>(
    sharp: bool,
    pause: Duration,
    interval: Duration,
    schedule: I,
    now: I,
) -> Option<I> {
    (sharp && pause == interval).then(|| (schedule + interval).max(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HandlerKind, Options};
    use serde_json::json;

    fn handler(errors: ErrorsMode) -> Handler {
        Handler {
            id: "t1".into(),
            kind: HandlerKind::Timer,
            filters: Default::default(),
            has_callback_filters: false,
            options: Options {
                errors,
                ..Options::default()
            },
        }
    }

    fn line(j: &Judged) -> &str {
        j.log.as_ref().map_or("", |(_, l)| l.as_str())
    }

    #[test]
    fn a_judged_call_shows_on_the_timeline_with_its_outcome_and_delay() {
        use crate::views::AttemptOutcome as A;
        let t = title("t1");
        let h = handler(ErrorsMode::Temporary);
        let b = Duration::from_secs(60);
        let ok = judge(&t, &h, Some(CallResult::Success(None)), b);
        assert_eq!(shown(&ok), (A::Succeeded, None));
        let later = CallResult::Temporary {
            message: "later".into(),
            delay: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            shown(&judge(&t, &h, Some(later), b)),
            (A::Retrying, Some(Duration::from_secs(3)))
        );
        assert_eq!(shown(&judge(&t, &h, None, b)), (A::NotMatched, None));
        assert_eq!(shown(&failed_call(&t, "down")).0, A::Retrying);
    }

    #[test]
    fn answers_decide_the_next_tick_the_line_and_the_label() {
        let t = title("t1");
        let h = handler(ErrorsMode::Temporary);
        let b = Duration::from_secs(60);
        let ok = judge(&t, &h, Some(CallResult::Success(Some(json!(1)))), b);
        assert_eq!(
            (ok.tick, ok.label, line(&ok), ok.result.clone()),
            (
                Tick::Again,
                Some("success"),
                "Timer 't1' succeeded.",
                Some(json!(1))
            )
        );
        let temporary = CallResult::Temporary {
            message: "later".into(),
            delay: Some(Duration::from_secs(3)),
        };
        let j = judge(&t, &h, Some(temporary), b);
        assert_eq!(j.tick, Tick::After(Duration::from_secs(3)));
        assert_eq!(line(&j), "Timer 't1' failed temporarily: later");
        let j = judge(
            &t,
            &h,
            Some(CallResult::Permanent {
                message: "no".into(),
            }),
            b,
        );
        assert_eq!((j.tick, j.label), (Tick::Again, Some("failure")));
        let j = judge(&t, &h, None, b);
        assert_eq!((j.tick, j.label, j.log), (Tick::Again, None, None));
        let j = judge(
            &t,
            &h,
            Some(CallResult::SubhandlersPending { delay: None }),
            b,
        );
        assert_eq!((j.tick, j.label), (Tick::After(Duration::ZERO), None));
        let j = failed_call(&t, "down");
        assert_eq!((j.tick, j.label), (Tick::Backoff, Some("error")));
        assert_eq!(
            line(&j),
            "Timer 't1' failed with an exception and will try again: down"
        );
    }

    #[test]
    fn arbitrary_errors_follow_the_errors_mode() {
        let t = title("t1");
        let boom = || {
            Some(CallResult::Arbitrary {
                message: "boom".into(),
            })
        };
        let b = Duration::from_millis(1500);
        let j = judge(&t, &handler(ErrorsMode::Temporary), boom(), b);
        assert_eq!(j.tick, Tick::Backoff);
        assert_eq!(
            line(&j),
            "Timer 't1' failed with an exception and will try again in 1.5 seconds: boom"
        );
        let j = judge(&t, &handler(ErrorsMode::Permanent), boom(), b);
        assert_eq!(j.tick, Tick::Again);
        assert!(line(&j).ends_with("will stop now: boom"));
        let j = judge(&t, &handler(ErrorsMode::Ignored), boom(), b);
        assert_eq!(j.tick, Tick::Again);
        assert!(line(&j).ends_with("will ignore it: boom"));
    }

    #[test]
    fn attempts_count_up_within_a_tick_and_the_pause_follows_the_tick() {
        assert_eq!(next_attempt(Tick::Backoff, (1, "t0")), Some((2, "t0")));
        assert_eq!(
            next_attempt(Tick::After(Duration::ZERO), (0, "t0")),
            Some((1, "t0"))
        );
        assert_eq!(next_attempt(Tick::Again, (4, "t0")), None);
        let (i, b) = (Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(pause(Tick::Again, i, b), i);
        assert_eq!(pause(Tick::Backoff, i, b), b);
        assert_eq!(
            pause(Tick::After(Duration::from_secs(2)), i, b),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn sharp_timers_keep_their_schedule_but_never_tick_in_the_past() {
        let s = Duration::from_secs;
        assert_eq!(next_slot(true, s(10), s(10), s(100), s(103)), Some(s(110)));
        assert_eq!(
            next_slot(true, s(10), s(10), s(100), s(125)),
            Some(s(125)),
            "late: at once"
        );
        assert_eq!(next_slot(true, s(3), s(10), s(100), s(103)), None);
        assert_eq!(next_slot(false, s(10), s(10), s(100), s(103)), None);
    }

    #[test]
    fn idle_timers_wait_for_quiet_and_others_do_not() {
        let s = Duration::from_secs;
        assert_eq!(idle_left(Some(s(10)), s(4)), Some(s(6)));
        assert_eq!(idle_left(Some(s(10)), s(10)), None);
        assert_eq!(idle_left(None, s(0)), None);
        assert_eq!(interval(&Options::default()), DEFAULT_INTERVAL);
    }

    #[test]
    fn a_wanted_timer_is_started_fed_or_left() {
        assert_eq!(wanted(None), Wanted::Start);
        assert_eq!(wanted(Some(false)), Wanted::Feed);
        assert_eq!(wanted(Some(true)), Wanted::Leave);
    }
}
