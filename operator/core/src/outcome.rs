//! What one call's result means for the handler: Kopf's `execute_handler_once`, including the
//! strict limit checks before a call and the retries/timeout look-ahead after an error. The log
//! messages are Kopf's, word for word (its e2e tests and users' log searches depend on them).

use std::time::Duration;

use serde_json::Value;

use crate::model::{ErrorsMode, Handler};

/// Kopf's default for a temporary error without an explicit delay and for arbitrary errors.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// What a handler service answered for one call, after validation at the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// Finished; the result (if any) goes to `status.<id>`.
    Success(Option<Value>),
    /// Try again after the delay (`None`: at once).
    Temporary {
        /// The error's text.
        message: String,
        /// When to retry.
        delay: Option<Duration>,
    },
    /// Failed for good.
    Permanent {
        /// The error's text.
        message: String,
    },
    /// Any other error (an exception); its meaning depends on the errors mode.
    Arbitrary {
        /// The error's text.
        message: String,
    },
    /// Sub-handlers are still running; call again after the delay.
    SubhandlersPending {
        /// When to call again.
        delay: Option<Duration>,
    },
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Routine.
    Debug,
    /// Progress worth seeing.
    Info,
    /// An error of the handler (Kopf logs these at ERROR).
    Error,
}

/// Where one call leaves the handler: finished (succeeded or failed) or to be called again.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished: a success, or an error the errors mode ignores. The result (if any) goes to
    /// `status.<id>`.
    Succeeded {
        /// The result to deliver to `status.<id>`.
        result: Option<Value>,
    },
    /// Finished with a failure; the text is stored as the record's `message`.
    Failed {
        /// The stored text.
        message: String,
    },
    /// Not finished: an error to retry; the text is stored as the record's `message` meanwhile.
    Retry {
        /// The stored text.
        message: String,
        /// When to call again (`None`: at once).
        delay: Option<Duration>,
    },
    /// Not finished: its sub-handlers are still running.
    Pending {
        /// When to call again (`None`: at once).
        delay: Option<Duration>,
    },
}

/// The decision about one call: where it leaves the handler, and Kopf's log line for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Where the call leaves the handler.
    pub outcome: Outcome,
    /// Kopf's log line for it.
    pub log: (Level, String),
}

impl Verdict {
    /// The handler is finished (success or failure) for this cycle.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Succeeded { .. } | Outcome::Failed { .. }
        )
    }

    /// The failure's text, when it finished with a failure.
    pub fn failure(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Failed { message } => Some(message),
            _ => None,
        }
    }

    /// The text to store while it retries (not for a final outcome).
    pub fn message(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Retry { message, .. } => Some(message),
            _ => None,
        }
    }

    /// When to call again, for a non-final outcome.
    pub fn delay(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Retry { delay, .. } | Outcome::Pending { delay } => delay,
            Outcome::Succeeded { .. } | Outcome::Failed { .. } => None,
        }
    }

    /// The result to deliver to `status.<id>`.
    pub fn result(&self) -> Option<&Value> {
        match &self.outcome {
            Outcome::Succeeded { result } => result.as_ref(),
            _ => None,
        }
    }
}

/// How far the handler has come in this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Attempts made so far.
    pub retries: u32,
    /// Time since the first attempt.
    pub runtime: Duration,
}

/// Kopf's `str(handler)`.
pub fn title(handler: &Handler) -> String {
    format!("Handler {}", py_repr(&handler.id))
}

/// The strict checks before a call: the handler is out of time or out of attempts.
pub fn precheck(handler: &Handler, progress: Progress) -> Option<Verdict> {
    precheck_as(&title(handler), handler, progress)
}

/// [`precheck`] with another title than Kopf's `Handler 'id'`.
pub fn precheck_as(title: &str, handler: &Handler, progress: Progress) -> Option<Verdict> {
    let message = if handler
        .options
        .timeout
        .is_some_and(|t| progress.runtime >= t)
    {
        format!(
            "{title} has timed out after {}.",
            py_timedelta(progress.runtime)
        )
    } else if handler
        .options
        .retries
        .is_some_and(|r| progress.retries >= r)
    {
        format!("{title} has exceeded {} retries.", progress.retries)
    } else {
        return None;
    };
    Some(failed(message))
}

/// Judges one call's result.
pub fn judge(
    handler: &Handler,
    progress: Progress,
    result: CallResult,
    default_backoff: Duration,
) -> Verdict {
    judge_as(&title(handler), handler, progress, result, default_backoff)
}

/// [`judge`] with another title than Kopf's `Handler 'id'` (e.g. `Daemon 'id'`).
pub fn judge_as(
    title: &str,
    handler: &Handler,
    progress: Progress,
    result: CallResult,
    default_backoff: Duration,
) -> Verdict {
    let options = &handler.options;
    let backoff = options.backoff.unwrap_or(default_backoff);
    let retries_ahead = options.retries.is_some_and(|r| progress.retries + 1 >= r);
    let times_out_after = |delay: Duration| {
        options
            .timeout
            .is_some_and(|t| progress.runtime + delay >= t)
    };
    let timeout_text = || options.timeout.map(py_seconds).unwrap_or_default();
    let retries_text = || options.retries.map(|r| r.to_string()).unwrap_or_default();
    match result {
        CallResult::Success(result) => Verdict {
            outcome: Outcome::Succeeded { result },
            log: (Level::Info, format!("{title} succeeded.")),
        },
        CallResult::SubhandlersPending { delay } => Verdict {
            outcome: Outcome::Pending { delay },
            log: (
                Level::Debug,
                format!("{title} has unfinished sub-handlers. Will retry soon."),
            ),
        },
        CallResult::Temporary { message, delay } => {
            if times_out_after(delay.unwrap_or_default()) {
                failed(format!(
                    "{title} failed temporarily but will time out after {} seconds: {message}",
                    timeout_text()
                ))
            } else if retries_ahead {
                failed(format!(
                    "{title} failed temporarily but will exceed {} retries: {message}",
                    retries_text()
                ))
            } else {
                retry(
                    format!("{title} failed temporarily: {message}"),
                    message,
                    delay,
                )
            }
        }
        CallResult::Permanent { message } => {
            failed_with(format!("{title} failed permanently: {message}"), message)
        }
        CallResult::Arbitrary { message } => match options.errors {
            ErrorsMode::Ignored => Verdict {
                outcome: Outcome::Succeeded { result: None },
                log: (
                    Level::Error,
                    format!("{title} failed with an exception and will ignore it: {message}"),
                ),
            },
            ErrorsMode::Temporary if times_out_after(backoff) => failed(format!(
                "{title} failed with an exception and will stop now \
                 (it would time out in {} seconds on the next attempt): {message}",
                timeout_text()
            )),
            ErrorsMode::Temporary if retries_ahead => failed(format!(
                "{title} failed with an exception and will stop now \
                 (it would exceed {} retries on the next attempt): {message}",
                retries_text()
            )),
            ErrorsMode::Temporary => retry(
                format!(
                    "{title} failed with an exception and will try again in {} seconds: {message}",
                    py_seconds(backoff)
                ),
                message,
                Some(backoff),
            ),
            ErrorsMode::Permanent => failed_with(
                format!("{title} failed with an exception and will stop now: {message}"),
                message,
            ),
        },
    }
}

/// A final failure whose stored message is the log line itself (Kopf's HandlerTimeoutError and
/// HandlerRetriesError carry the formatted text).
fn failed(line: String) -> Verdict {
    failed_with(line.clone(), line)
}

fn failed_with(line: String, message: String) -> Verdict {
    Verdict {
        outcome: Outcome::Failed { message },
        log: (Level::Error, line),
    }
}

/// A call that never reached the handler service (no connection could be made): not an attempt.
/// The handler is called again after `delay`; the record keeps its retry count (apply it with
/// [`crate::state::HandlerState::with_undelivered`]), so an outage of the service never uses up a
/// handler's `retries=`. Its `timeout=` still counts the time, as Kopf's counts an operator's
/// downtime.
pub fn undelivered(title: &str, message: String, delay: Duration) -> Verdict {
    retry(
        format!("{title} could not be called (not counted as an attempt): {message}"),
        message,
        Some(delay),
    )
}

fn retry(line: String, message: String, delay: Option<Duration>) -> Verdict {
    Verdict {
        outcome: Outcome::Retry { message, delay },
        log: (Level::Error, line),
    }
}

/// Python's `repr()` of a string, as in Kopf's `f"Handler {id!r}"`.
pub fn py_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Seconds as Python prints a number: `60`, `1.5`.
pub fn py_seconds(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}")
    } else {
        format!("{secs}")
    }
}

/// Python's `str(timedelta)`: `0:01:05.250000`, `1 day, 2:00:00`.
fn py_timedelta(d: Duration) -> String {
    let total = d.as_secs();
    let (days, rest) = (total / 86_400, total % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let micros = d.subsec_micros();
    let mut out = match days {
        0 => String::new(),
        1 => "1 day, ".to_owned(),
        n => format!("{n} days, "),
    };
    out.push_str(&format!("{h}:{m:02}:{s:02}"));
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Filters, HandlerKind, Options};

    fn handler(options: Options) -> Handler {
        Handler {
            id: "create_fn".into(),
            kind: HandlerKind::Create,
            filters: Filters::default(),
            has_callback_filters: false,
            options,
        }
    }

    fn at(retries: u32, secs: u64) -> Progress {
        Progress {
            retries,
            runtime: Duration::from_secs(secs),
        }
    }

    #[test]
    fn success_is_final_and_logged_as_kopf_does() {
        let v = judge(
            &handler(Options::default()),
            at(0, 0),
            CallResult::Success(None),
            DEFAULT_BACKOFF,
        );
        assert!(v.is_finished() && v.failure().is_none());
        assert_eq!(
            v.log,
            (Level::Info, "Handler 'create_fn' succeeded.".into())
        );
    }

    #[test]
    fn temporary_errors_retry_after_their_delay() {
        let v = judge(
            &handler(Options::default()),
            at(0, 0),
            CallResult::Temporary {
                message: "Not ready yet.".into(),
                delay: Some(Duration::from_secs(30)),
            },
            DEFAULT_BACKOFF,
        );
        assert!(!v.is_finished());
        assert_eq!(v.delay(), Some(Duration::from_secs(30)));
        assert_eq!(v.message(), Some("Not ready yet."));
        assert_eq!(
            v.log.1,
            "Handler 'create_fn' failed temporarily: Not ready yet."
        );
    }

    #[test]
    fn the_retries_look_ahead_makes_the_last_allowed_failure_final() {
        let options = Options {
            retries: Some(3),
            ..Options::default()
        };
        let temp = || CallResult::Temporary {
            message: "x".into(),
            delay: None,
        };
        assert!(!judge(&handler(options.clone()), at(1, 0), temp(), DEFAULT_BACKOFF).is_finished());
        let v = judge(&handler(options.clone()), at(2, 0), temp(), DEFAULT_BACKOFF);
        assert!(v.is_finished());
        assert_eq!(
            v.failure(),
            Some("Handler 'create_fn' failed temporarily but will exceed 3 retries: x")
        );
        let pre = precheck(&handler(options), at(3, 0)).expect("out of retries");
        assert_eq!(
            pre.failure(),
            Some("Handler 'create_fn' has exceeded 3 retries.")
        );
    }

    #[test]
    fn the_timeout_look_ahead_counts_the_next_delay() {
        let options = Options {
            timeout: Some(Duration::from_secs(10)),
            ..Options::default()
        };
        let v = judge(
            &handler(options.clone()),
            at(1, 5),
            CallResult::Temporary {
                message: "slow".into(),
                delay: Some(Duration::from_secs(5)),
            },
            DEFAULT_BACKOFF,
        );
        assert!(v.is_finished());
        assert!(
            v.log.1.contains("will time out after 10 seconds: slow"),
            "{v:?}"
        );
        let pre = precheck(&handler(options), at(1, 65)).expect("timed out");
        assert_eq!(
            pre.log.1,
            "Handler 'create_fn' has timed out after 0:01:05."
        );
    }

    #[test]
    fn arbitrary_errors_follow_the_errors_mode() {
        let err = || CallResult::Arbitrary {
            message: "boom".into(),
        };
        let temporary = judge(
            &handler(Options::default()),
            at(0, 0),
            err(),
            DEFAULT_BACKOFF,
        );
        assert_eq!(temporary.delay(), Some(DEFAULT_BACKOFF));
        assert_eq!(
            temporary.log.1,
            "Handler 'create_fn' failed with an exception and will try again in 60 seconds: boom"
        );
        let permanent = Options {
            errors: ErrorsMode::Permanent,
            ..Options::default()
        };
        let v = judge(&handler(permanent), at(0, 0), err(), DEFAULT_BACKOFF);
        assert_eq!(v.failure(), Some("boom"));
        let ignored = Options {
            errors: ErrorsMode::Ignored,
            ..Options::default()
        };
        let v = judge(&handler(ignored), at(0, 0), err(), DEFAULT_BACKOFF);
        assert!(v.is_finished() && v.failure().is_none());
    }

    #[test]
    fn python_formatting_helpers() {
        assert_eq!(py_repr("a/b"), "'a/b'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(
            py_timedelta(Duration::from_micros(90_061_000_001)),
            "1 day, 1:01:01.000001"
        );
    }
}
