//! What a handler does, as scripted in the object's `spec.behaviour.<handler id>`.
//!
//! Everything here is pure: parse a behaviour out of a body, decide the verdict for a retry
//! count, decide which sub-handlers are due, and combine merge patches.

use std::time::{Duration, SystemTime};

use operon_proto::v1::Record;
use serde_json::{Map, Value};

use crate::duration;

/// The delay of a temporary error (and of a parent waiting for its sub-handlers) when the
/// behaviour gives none.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(1);

/// The error type reported with arbitrary errors.
pub const ARBITRARY_ERROR_TYPE: &str = "RuntimeError";

/// One handler's (or sub-handler's) scripted behaviour. The default succeeds with no result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Behaviour {
    /// Answer a temporary error while `retry` is below this.
    pub fail_temporarily: u32,
    /// The delay of those temporary errors (and the parent's delay for arbitrary errors).
    pub delay: Option<Duration>,
    /// Always answer a permanent error.
    pub fail_permanently: bool,
    /// Answer an arbitrary error (`RuntimeError`) while `retry` is below this.
    pub fail_arbitrarily: u32,
    /// Sleep this long before answering.
    pub sleep: Option<Duration>,
    /// The result of a success (goes to `status.<handler id>`).
    pub result: Option<Value>,
    /// A JSON merge patch for the object.
    pub patch: Option<Value>,
    /// Answer a patch that is not JSON.
    pub invalid_patch: bool,
    /// Answer a response with no outcome at all.
    pub break_contract: bool,
    /// Answer "not matched", as a callback filter that said no.
    pub not_matched: bool,
    /// The message of the errors, instead of the generated one.
    pub message: Option<String>,
    /// A Kubernetes Event to post.
    pub event: Option<EventSpec>,
    /// Sub-handlers by name, sorted by name.
    pub subhandlers: Vec<(String, Behaviour)>,
}

/// A Kubernetes Event to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// "Normal", "Warning" or "Error"; "Normal" when not given.
    pub event_type: String,
    /// The reason; "Logging" when not given.
    pub reason: String,
    /// The message; empty when not given.
    pub message: String,
}

/// What a handler answers for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No outcome at all (`break_contract`).
    NoOutcome,
    /// A callback filter said no.
    NotMatched,
    /// Finished, with an optional result.
    Success(Option<Value>),
    /// Try again after the delay.
    Temporary {
        /// The error message.
        message: String,
        /// The delay before the next attempt.
        delay: Duration,
    },
    /// Failed for good.
    Permanent {
        /// The error message.
        message: String,
    },
    /// Any other error; `delay` is only what a parent waits for it.
    Arbitrary {
        /// The error message.
        message: String,
        /// The delay a parent assumes for this sub-handler.
        delay: Duration,
    },
    /// A parent whose sub-handlers are not all finished: call again after the delay.
    SubhandlersPending {
        /// The smallest delay among the unfinished sub-handlers.
        delay: Duration,
    },
}

impl Verdict {
    /// The `outcome` field of the ledger line.
    pub fn ledger_name(&self) -> &'static str {
        match self {
            Self::NoOutcome => "no_outcome",
            Self::NotMatched => "not_matched",
            Self::Success(_) => "success",
            Self::Temporary { .. } => "temporary",
            Self::Permanent { .. } => "permanent",
            Self::Arbitrary { .. } => "arbitrary",
            Self::SubhandlersPending { .. } => "subhandlers_pending",
        }
    }

    /// For a sub-handler: `None` if it is finished (success or permanent failure, or not
    /// matched), otherwise how long its parent should wait before trying again.
    pub fn unfinished_delay(&self) -> Option<Duration> {
        match self {
            Self::Success(_) | Self::Permanent { .. } | Self::NotMatched => None,
            Self::Temporary { delay, .. }
            | Self::Arbitrary { delay, .. }
            | Self::SubhandlersPending { delay } => Some(*delay),
            Self::NoOutcome => Some(DEFAULT_DELAY),
        }
    }
}

impl Behaviour {
    /// The verdict for the attempt `retry` (0 on the first), ignoring sub-handlers.
    ///
    /// Precedence: `break_contract`, `not_matched`, `fail_permanently`, `fail_temporarily`,
    /// `fail_arbitrarily`, then success with `result`.
    pub fn verdict(&self, retry: u32) -> Verdict {
        if self.break_contract {
            Verdict::NoOutcome
        } else if self.not_matched {
            Verdict::NotMatched
        } else if self.fail_permanently {
            Verdict::Permanent {
                message: self.message_or("Failing permanently, as spec.behaviour says.".into()),
            }
        } else if retry < self.fail_temporarily {
            Verdict::Temporary {
                message: self.message_or(format!(
                    "Failing temporarily on retry {retry} (until retry {}).",
                    self.fail_temporarily
                )),
                delay: self.delay.unwrap_or(DEFAULT_DELAY),
            }
        } else if retry < self.fail_arbitrarily {
            Verdict::Arbitrary {
                message: self.message_or(format!(
                    "Failing arbitrarily on retry {retry} (until retry {}).",
                    self.fail_arbitrarily
                )),
                delay: self.delay.unwrap_or(DEFAULT_DELAY),
            }
        } else {
            Verdict::Success(self.result.clone())
        }
    }

    fn message_or(&self, generated: String) -> String {
        self.message.clone().unwrap_or(generated)
    }
}

/// The behaviour of `handler_id` in `body` (`spec.behaviour.<handler_id>`, the id taken
/// literally even if it has dots or slashes); missing means the default behaviour.
pub fn behaviour_for(body: &Value, handler_id: &str) -> Result<Behaviour, String> {
    let behaviours = match body.get("spec").and_then(|spec| spec.get("behaviour")) {
        None | Some(Value::Null) => return Ok(Behaviour::default()),
        Some(Value::Object(behaviours)) => behaviours,
        Some(_) => return Err("spec.behaviour must be an object".into()),
    };
    match behaviours.get(handler_id) {
        None => Ok(Behaviour::default()),
        Some(value) => parse(value, true)
            .map_err(|error| format!("invalid spec.behaviour.{handler_id}: {error}")),
    }
}

/// Parses one behaviour object; unknown keys are ignored (other example services may know more).
fn parse(value: &Value, allow_subhandlers: bool) -> Result<Behaviour, String> {
    let fields = match value {
        Value::Null => return Ok(Behaviour::default()),
        Value::Object(fields) => fields,
        _ => return Err("a behaviour must be an object".into()),
    };
    let mut behaviour = Behaviour {
        fail_temporarily: count(fields, "fail_temporarily")?,
        delay: seconds(fields, "delay")?,
        fail_permanently: flag(fields, "fail_permanently")?,
        fail_arbitrarily: count(fields, "fail_arbitrarily")?,
        sleep: seconds(fields, "sleep")?,
        result: fields.get("result").cloned(),
        patch: None,
        invalid_patch: flag(fields, "invalid_patch")?,
        break_contract: flag(fields, "break_contract")?,
        not_matched: flag(fields, "not_matched")?,
        message: text(fields, "message")?,
        event: None,
        subhandlers: Vec::new(),
    };
    match fields.get("patch") {
        None | Some(Value::Null) => {}
        Some(patch @ Value::Object(_)) => behaviour.patch = Some(patch.clone()),
        Some(_) => return Err("patch must be an object (a JSON merge patch)".into()),
    }
    match fields.get("event") {
        None | Some(Value::Null) => {}
        Some(Value::Object(event)) => {
            behaviour.event = Some(EventSpec {
                event_type: text(event, "type")?.unwrap_or_else(|| "Normal".into()),
                reason: text(event, "reason")?.unwrap_or_else(|| "Logging".into()),
                message: text(event, "message")?.unwrap_or_default(),
            });
        }
        Some(_) => return Err("event must be an object {type, reason, message}".into()),
    }
    match fields.get("subhandlers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(_)) if !allow_subhandlers => {
            return Err("sub-handlers of sub-handlers are not supported".into());
        }
        Some(Value::Object(subhandlers)) => {
            let mut parsed = subhandlers
                .iter()
                .map(|(name, sub)| {
                    parse(sub, false)
                        .map(|sub| (name.clone(), sub))
                        .map_err(|error| format!("sub-handler {name:?}: {error}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            parsed.sort_by(|a, b| a.0.cmp(&b.0));
            behaviour.subhandlers = parsed;
        }
        Some(_) => return Err("subhandlers must be an object of name -> behaviour".into()),
    }
    Ok(behaviour)
}

/// A count of attempts: a whole number, or `true` for "always" and `false` for never.
fn count(fields: &Map<String, Value>, key: &str) -> Result<u32, String> {
    match fields.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(0),
        Some(Value::Bool(true)) => Ok(u32::MAX),
        Some(Value::Number(number)) => number
            .as_u64()
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .ok_or_else(|| format!("{key} must be a whole number, got {number}")),
        Some(other) => Err(format!("{key} must be a whole number, got {other}")),
    }
}

fn seconds(fields: &Map<String, Value>, key: &str) -> Result<Option<Duration>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number
            .as_f64()
            .and_then(duration::seconds)
            .map(Some)
            .ok_or_else(|| format!("{key} must be a non-negative number of seconds")),
        Some(other) => Err(format!("{key} must be a number of seconds, got {other}")),
    }
}

fn flag(fields: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(value)) => Ok(*value),
        Some(other) => Err(format!("{key} must be true or false, got {other}")),
    }
}

fn text(fields: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(other) => Err(format!("{key} must be a string, got {other}")),
    }
}

/// The full id of a sub-handler: `<parent id>/<sub name>`.
pub fn subhandler_id(parent_id: &str, name: &str) -> String {
    format!("{parent_id}/{name}")
}

/// Where a sub-handler stands according to the records the core sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    /// It succeeded or failed permanently: never run it again.
    Finished,
    /// It is delayed until later (Kopf does not run it before then): wait this long.
    Sleeping(Duration),
    /// Run it now, with this retry count.
    Due {
        /// The attempts made so far (the record's `retries`; 0 without a record).
        retry: u32,
    },
}

/// The state of the sub-handler `full_id` among `records` at time `now`. A record matches by
/// its full id (`parent/sub`); a record with the bare sub name is accepted too.
pub fn sub_state(full_id: &str, name: &str, records: &[Record], now: SystemTime) -> SubState {
    let record = records
        .iter()
        .find(|record| record.id == full_id)
        .or_else(|| records.iter().find(|record| record.id == name));
    let Some(record) = record else {
        return SubState::Due { retry: 0 };
    };
    if record.success || record.failure {
        return SubState::Finished;
    }
    let delayed = record
        .delayed
        .and_then(|delayed| SystemTime::try_from(delayed).ok());
    match delayed.and_then(|delayed| delayed.duration_since(now).ok()) {
        Some(remaining) if !remaining.is_zero() => SubState::Sleeping(remaining),
        _ => SubState::Due {
            retry: record.retries,
        },
    }
}

/// The parent's verdict once its sub-handlers ran: its own success if none is unfinished,
/// otherwise "sub-handlers pending" with the smallest of the unfinished ones' delays (Kopf's
/// `HandlerChildrenRetry`).
pub fn after_subhandlers(own: Verdict, unfinished: &[Duration]) -> Verdict {
    match unfinished.iter().min() {
        None => own,
        Some(delay) => Verdict::SubhandlersPending { delay: *delay },
    }
}

/// Combines two JSON merge patches: `patch` is laid over `into`, objects key by key, nulls
/// kept (they delete in the final patch).
pub fn merge_patches(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (key, value) in patch {
                match into.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_patches(existing, value);
                    }
                    _ => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (into, patch) => *into = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(behaviour: Value) -> Value {
        json!({"metadata": {"name": "x"}, "spec": {"behaviour": behaviour}})
    }

    #[test]
    fn missing_behaviour_succeeds() {
        let default = Behaviour::default();
        assert_eq!(behaviour_for(&json!({}), "h").unwrap(), default);
        assert_eq!(behaviour_for(&json!({"spec": {}}), "h").unwrap(), default);
        assert_eq!(
            behaviour_for(&body(json!({"other": {}})), "h").unwrap(),
            default
        );
        assert_eq!(default.verdict(0), Verdict::Success(None));
        assert!(behaviour_for(&json!({"spec": {"behaviour": 3}}), "h").is_err());
    }

    #[test]
    fn handler_ids_are_taken_literally() {
        let body = body(json!({"update_fn/spec.field": {"fail_permanently": true}}));
        assert!(
            behaviour_for(&body, "update_fn/spec.field")
                .unwrap()
                .fail_permanently
        );
    }

    #[test]
    fn parses_every_field() {
        let behaviour = behaviour_for(
            &body(json!({"h": {
                "fail_temporarily": 2, "delay": 0.5, "fail_arbitrarily": 3, "sleep": 2,
                "result": {"a": [1, 2]}, "patch": {"status": {"x": 1}}, "invalid_patch": false,
                "message": "boom", "event": {"type": "Warning", "reason": "Test"},
                "unknown_key": "ignored",
            }})),
            "h",
        )
        .unwrap();
        assert_eq!(behaviour.fail_temporarily, 2);
        assert_eq!(behaviour.delay, Some(Duration::from_millis(500)));
        assert_eq!(behaviour.fail_arbitrarily, 3);
        assert_eq!(behaviour.sleep, Some(Duration::from_secs(2)));
        assert_eq!(behaviour.result, Some(json!({"a": [1, 2]})));
        assert_eq!(behaviour.patch, Some(json!({"status": {"x": 1}})));
        assert_eq!(behaviour.message.as_deref(), Some("boom"));
        let event = behaviour.event.unwrap();
        assert_eq!(
            (
                event.event_type.as_str(),
                event.reason.as_str(),
                event.message.as_str()
            ),
            ("Warning", "Test", "")
        );
    }

    #[test]
    fn rejects_wrong_types() {
        for bad in [
            json!({"h": 1}),
            json!({"h": {"fail_temporarily": "2"}}),
            json!({"h": {"fail_temporarily": -1}}),
            json!({"h": {"fail_temporarily": 1.5}}),
            json!({"h": {"delay": -1}}),
            json!({"h": {"sleep": "long"}}),
            json!({"h": {"fail_permanently": 1}}),
            json!({"h": {"patch": [1]}}),
            json!({"h": {"event": "x"}}),
            json!({"h": {"event": {"reason": 3}}}),
            json!({"h": {"subhandlers": [1]}}),
            json!({"h": {"subhandlers": {"a": {"subhandlers": {"b": {}}}}}}),
            json!({"h": {"subhandlers": {"a": {"delay": "x"}}}}),
        ] {
            let error = behaviour_for(&body(bad.clone()), "h").unwrap_err();
            assert!(
                error.starts_with("invalid spec.behaviour.h: "),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn temporary_failures_by_retry() {
        let behaviour = Behaviour {
            fail_temporarily: 2,
            delay: Some(Duration::from_secs(3)),
            result: Some(json!("done")),
            ..Behaviour::default()
        };
        for retry in 0..2 {
            match behaviour.verdict(retry) {
                Verdict::Temporary { delay, .. } => assert_eq!(delay, Duration::from_secs(3)),
                other => panic!("retry {retry}: {other:?}"),
            }
        }
        assert_eq!(behaviour.verdict(2), Verdict::Success(Some(json!("done"))));
        assert_eq!(behaviour.verdict(7).ledger_name(), "success");
        let default_delay = Behaviour {
            fail_temporarily: 1,
            ..Behaviour::default()
        };
        assert_eq!(
            default_delay.verdict(0).unfinished_delay(),
            Some(DEFAULT_DELAY)
        );
    }

    #[test]
    fn precedence_and_names() {
        let all = Behaviour {
            break_contract: true,
            not_matched: true,
            fail_permanently: true,
            fail_temporarily: 5,
            fail_arbitrarily: 9,
            ..Behaviour::default()
        };
        assert_eq!(all.verdict(0).ledger_name(), "no_outcome");
        let all = Behaviour {
            break_contract: false,
            ..all
        };
        assert_eq!(all.verdict(0).ledger_name(), "not_matched");
        let all = Behaviour {
            not_matched: false,
            ..all
        };
        assert_eq!(all.verdict(0).ledger_name(), "permanent");
        let all = Behaviour {
            fail_permanently: false,
            ..all
        };
        assert_eq!(all.verdict(4).ledger_name(), "temporary");
        assert_eq!(all.verdict(5).ledger_name(), "arbitrary");
        assert_eq!(all.verdict(9).ledger_name(), "success");
        let forever = behaviour_for(&body(json!({"h": {"fail_temporarily": true}})), "h").unwrap();
        assert_eq!(forever.verdict(1_000_000).ledger_name(), "temporary");
        let custom = Behaviour {
            fail_permanently: true,
            message: Some("nope".into()),
            ..Behaviour::default()
        };
        assert_eq!(
            custom.verdict(0),
            Verdict::Permanent {
                message: "nope".into()
            }
        );
    }

    #[test]
    fn subhandlers_are_sorted() {
        let behaviour = behaviour_for(
            &body(json!({"h": {"subhandlers": {"b": {"fail_permanently": true}, "a": {}}}})),
            "h",
        )
        .unwrap();
        let names: Vec<&str> = behaviour
            .subhandlers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(behaviour.subhandlers[1].1.fail_permanently);
    }

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            ..Record::default()
        }
    }

    #[test]
    fn sub_states_from_records() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = prost_types::Timestamp {
            seconds: 1_005,
            nanos: 0,
        };
        let earlier = prost_types::Timestamp {
            seconds: 995,
            nanos: 0,
        };
        let records = vec![
            Record {
                success: true,
                ..record("h/done")
            },
            Record {
                failure: true,
                ..record("h/failed")
            },
            Record {
                retries: 2,
                delayed: Some(later),
                ..record("h/sleeping")
            },
            Record {
                retries: 3,
                delayed: Some(earlier),
                ..record("h/woken")
            },
            Record {
                retries: 1,
                ..record("h/retrying")
            },
            Record {
                retries: 4,
                ..record("bare")
            },
        ];
        let state = |name: &str| sub_state(&subhandler_id("h", name), name, &records, now);
        assert_eq!(state("done"), SubState::Finished);
        assert_eq!(state("failed"), SubState::Finished);
        assert_eq!(
            state("sleeping"),
            SubState::Sleeping(Duration::from_secs(5))
        );
        assert_eq!(state("woken"), SubState::Due { retry: 3 });
        assert_eq!(state("retrying"), SubState::Due { retry: 1 });
        assert_eq!(state("bare"), SubState::Due { retry: 4 });
        assert_eq!(state("new"), SubState::Due { retry: 0 });
    }

    #[test]
    fn parent_waits_for_the_earliest_unfinished() {
        let own = Verdict::Success(Some(json!(1)));
        assert_eq!(after_subhandlers(own.clone(), &[]), own);
        assert_eq!(
            after_subhandlers(own, &[Duration::from_secs(5), Duration::from_secs(2)]),
            Verdict::SubhandlersPending {
                delay: Duration::from_secs(2)
            }
        );
        assert_eq!(
            Verdict::Permanent {
                message: String::new()
            }
            .unfinished_delay(),
            None
        );
        assert_eq!(Verdict::NoOutcome.unfinished_delay(), Some(DEFAULT_DELAY));
    }

    #[test]
    fn merge_patches_deeply() {
        let mut patch = json!({"spec": {"a": 1, "b": {"c": 2}}, "status": {"x": 1}});
        merge_patches(
            &mut patch,
            &json!({"spec": {"b": {"d": 3}, "e": null}, "status": "flat"}),
        );
        assert_eq!(
            patch,
            json!({"spec": {"a": 1, "b": {"c": 2, "d": 3}, "e": null}, "status": "flat"})
        );
    }
}
