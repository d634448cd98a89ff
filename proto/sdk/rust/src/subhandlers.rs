//! Sub-handlers (Kopf's `@kopf.subhandler`): pure decisions about one sub-handler — whether it
//! is due, sleeping or finished according to the records the core sent, and whether its outcome
//! leaves it unfinished — and the parent's outcome once its body and sub-handlers ran.

use std::time::{Duration, SystemTime};

use operon_proto::v1 as pb;

use crate::convert;
use crate::error::{DEFAULT_DELAY, HandlerResult};
use crate::options::{ErrorsMode, SubhandlerOptions};

/// Where a sub-handler stands according to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubState {
    /// It succeeded or failed for good: not run again.
    Finished,
    /// It is delayed (a retry is scheduled): not run before then.
    Sleeping(Duration),
    /// Run it now.
    Due {
        /// Its attempts so far.
        retry: u32,
        /// When its first attempt started (`None`: it never ran).
        started: Option<SystemTime>,
    },
}

/// The state of the sub-handler `full_id` among the `records` of its parent's call at `now`.
pub(crate) fn state(full_id: &str, records: &[pb::Record], now: SystemTime) -> SubState {
    let Some(record) = records.iter().find(|record| record.id == full_id) else {
        return SubState::Due {
            retry: 0,
            started: None,
        };
    };
    if record.success || record.failure {
        return SubState::Finished;
    }
    let remaining = record
        .delayed
        .as_ref()
        .and_then(convert::time)
        .and_then(|delayed| delayed.duration_since(now).ok())
        .filter(|remaining| !remaining.is_zero());
    match remaining {
        Some(remaining) => SubState::Sleeping(remaining),
        None => SubState::Due {
            retry: record.retries,
            started: record.started.as_ref().and_then(convert::time),
        },
    }
}

/// When a sub-handler that just ran (`retry` attempts before this one) with `outcome` wants to
/// be called again; `None` when the core will record it as finished (success, permanent
/// failure, an ignored error, or its last allowed attempt).
pub(crate) fn unfinished(
    outcome: &pb::outcome::Result,
    options: &SubhandlerOptions,
    retry: u32,
) -> Option<Duration> {
    let last_attempt = options.retries.is_some_and(|r| retry + 1 >= r);
    match outcome {
        pb::outcome::Result::Success(_)
        | pb::outcome::Result::PermanentError(_)
        | pb::outcome::Result::NotMatched(_) => None,
        pb::outcome::Result::SubhandlersPending(p) => Some(
            p.delay
                .as_ref()
                .map(convert::from_duration)
                .unwrap_or_default(),
        ),
        pb::outcome::Result::TemporaryError(t) => (!last_attempt).then(|| {
            t.delay
                .as_ref()
                .map(convert::from_duration)
                .unwrap_or_default()
        }),
        pb::outcome::Result::ArbitraryError(_) => match options.errors {
            Some(ErrorsMode::Ignored | ErrorsMode::Permanent) => None,
            Some(ErrorsMode::Temporary) | None => {
                (!last_attempt).then(|| options.backoff.unwrap_or(DEFAULT_DELAY))
            }
        },
    }
}

/// The outcome of a handler (or sub-handler) whose body returned `result`, given the delays of
/// its unfinished sub-handlers and a misuse of the sub-handler API, if any.
pub(crate) fn outcome(
    result: HandlerResult,
    unfinished: &[Duration],
    misuse: Option<String>,
) -> pb::outcome::Result {
    if let Some(message) = misuse {
        return pb::outcome::Result::PermanentError(pb::PermanentError { message });
    }
    match result {
        Err(error) => error.to_outcome(),
        Ok(value) => match unfinished.iter().min() {
            Some(delay) => pb::outcome::Result::SubhandlersPending(pb::SubhandlersPending {
                delay: Some(convert::duration(*delay)),
            }),
            None => pb::outcome::Result::Success(pb::Success {
                result_json: value
                    .map(|value| convert::to_json(&value))
                    .unwrap_or_default(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::HandlerError;

    fn at(seconds: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos: 0 }
    }

    fn record(id: &str) -> pb::Record {
        pb::Record {
            id: id.into(),
            started: Some(at(900)),
            ..pb::Record::default()
        }
    }

    #[test]
    fn states_from_records() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let records = vec![
            pb::Record {
                success: true,
                ..record("p/done")
            },
            pb::Record {
                failure: true,
                ..record("p/failed")
            },
            pb::Record {
                retries: 1,
                delayed: Some(at(1_005)),
                ..record("p/sleeping")
            },
            pb::Record {
                retries: 3,
                delayed: Some(at(995)),
                ..record("p/woken")
            },
        ];
        let state = |id: &str| state(id, &records, now);
        assert_eq!(state("p/done"), SubState::Finished);
        assert_eq!(state("p/failed"), SubState::Finished);
        assert_eq!(
            state("p/sleeping"),
            SubState::Sleeping(Duration::from_secs(5))
        );
        assert_eq!(
            state("p/woken"),
            SubState::Due {
                retry: 3,
                started: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(900))
            }
        );
        assert_eq!(
            state("p/new"),
            SubState::Due {
                retry: 0,
                started: None
            }
        );
    }

    #[test]
    fn unfinished_outcomes() {
        let defaults = SubhandlerOptions::new();
        let temporary = HandlerError::temporary_after("t", Duration::from_secs(3)).to_outcome();
        let other = HandlerError::from("boom").to_outcome();
        let success = pb::outcome::Result::Success(pb::Success::default());
        assert_eq!(unfinished(&success, &defaults, 0), None);
        assert_eq!(
            unfinished(&temporary, &defaults, 0),
            Some(Duration::from_secs(3))
        );
        assert_eq!(unfinished(&other, &defaults, 0), Some(DEFAULT_DELAY));
        let quick = SubhandlerOptions::new().backoff(Duration::from_secs(2));
        assert_eq!(unfinished(&other, &quick, 0), Some(Duration::from_secs(2)));
        let ignored = SubhandlerOptions::new().errors(ErrorsMode::Ignored);
        assert_eq!(unfinished(&other, &ignored, 0), None);
        // The last allowed attempt fails for good.
        let twice = SubhandlerOptions::new().retries(2);
        assert_eq!(
            unfinished(&temporary, &twice, 0),
            Some(Duration::from_secs(3))
        );
        assert_eq!(unfinished(&temporary, &twice, 1), None);
        assert_eq!(
            unfinished(&HandlerError::permanent("p").to_outcome(), &defaults, 0),
            None
        );
    }

    #[test]
    fn parent_outcomes() {
        assert_eq!(
            outcome(Ok(Some(json!({"a": 1}))), &[], None),
            pb::outcome::Result::Success(pb::Success {
                result_json: br#"{"a":1}"#.to_vec()
            })
        );
        assert_eq!(
            outcome(
                Ok(None),
                &[Duration::from_secs(9), Duration::from_secs(4)],
                None
            ),
            pb::outcome::Result::SubhandlersPending(pb::SubhandlersPending {
                delay: Some(convert::duration(Duration::from_secs(4)))
            })
        );
        // The parent's own error wins over pending sub-handlers.
        assert!(matches!(
            outcome(
                Err(HandlerError::permanent("no")),
                &[Duration::from_secs(1)],
                None
            ),
            pb::outcome::Result::PermanentError(_)
        ));
        assert!(matches!(
            outcome(Ok(None), &[], Some("misused".into())),
            pb::outcome::Result::PermanentError(e) if e.message == "misused"
        ));
    }
}
