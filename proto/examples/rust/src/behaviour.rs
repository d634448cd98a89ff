//! What a handler does, as scripted in the object's `spec.behaviour.<handler id>`.
//!
//! Everything here is pure: parse a behaviour out of a body and decide the verdict for a retry
//! count. Which sub-handlers are due is the SDK's business (`Ctx::subhandler`).

use std::time::Duration;

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
}

impl Verdict {
    /// The `outcome` field of the ledger line.
    pub fn ledger_name(&self) -> &'static str {
        match self {
            Self::NoOutcome => "no_outcome",
            Self::Success(_) => "success",
            Self::Temporary { .. } => "temporary",
            Self::Permanent { .. } => "permanent",
            Self::Arbitrary { .. } => "arbitrary",
        }
    }
}

impl Behaviour {
    /// The verdict for the attempt `retry` (0 on the first), ignoring sub-handlers.
    ///
    /// Precedence: `break_contract`, `fail_permanently`, `fail_temporarily`,
    /// `fail_arbitrarily`, then success with `result`.
    pub fn verdict(&self, retry: u32) -> Verdict {
        if self.break_contract {
            Verdict::NoOutcome
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
    if flag(fields, "not_matched")? {
        // Answered by `when` filters in the SDK, which this example does not declare (the core
        // would ask `Match` before every call); the Go example scripts it.
        return Err("not_matched is not scripted by the Rust example".into());
    }
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
            json!({"h": {"not_matched": true}}),
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
            default_delay.verdict(0),
            Verdict::Temporary {
                message: "Failing temporarily on retry 0 (until retry 1).".into(),
                delay: DEFAULT_DELAY
            }
        );
    }

    #[test]
    fn precedence_and_names() {
        let all = Behaviour {
            break_contract: true,
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
}
