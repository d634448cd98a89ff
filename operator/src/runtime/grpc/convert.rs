//! The edge between the wire (`operon.v1`) and the core's model, for handler calls: requests
//! built from domain calls, answers validated into domain answers. Everything a handler service
//! sends is validated here; proto types go no further.

use std::collections::BTreeMap;
use std::time::Duration;

use operon_proto::v1 as pb;
use serde_json::Value;

use crate::core::model::{ErrorsMode, Filters, Options, Reason, ValueFilter};
use crate::core::outcome::CallResult;
use crate::runtime::ports::{
    AdmissionAnswerError, AdmissionCall, Answer, Call, ContractError as Error, DaemonInput,
    DaemonOutput, EventRequest, ResolvedResource, StopReason, SubAnswer, SubRecord, SubResult,
};

pub(crate) fn convert_filters(id: &str, f: pb::Filters) -> Result<Filters, Error> {
    let map = |m: std::collections::HashMap<String, pb::ValueFilter>, what: &str| {
        m.into_iter()
            .filter_map(|(k, v)| {
                value_filter(&format!("{what} filter {k:?} of handler {id:?}"), v)
                    .transpose()
                    .map(|r| r.map(|v| (k, v)))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
    };
    let one = |v: Option<pb::ValueFilter>, what: &str| {
        v.map(|v| value_filter(&format!("{what} filter of handler {id:?}"), v))
            .transpose()
            .map(Option::flatten)
    };
    Ok(Filters {
        labels: map(f.labels, "label")?,
        annotations: map(f.annotations, "annotation")?,
        field: (!f.field.is_empty()).then(|| f.field.split('.').map(String::from).collect()),
        value: one(f.value, "value")?,
        old: one(f.old, "old")?,
        new: one(f.new, "new")?,
    })
}

fn value_filter(what: &str, v: pb::ValueFilter) -> Result<Option<ValueFilter>, Error> {
    use pb::value_filter::Test;
    Ok(match v.test {
        None => None,
        Some(Test::Present(true)) => Some(ValueFilter::Present),
        Some(Test::Absent(true)) => Some(ValueFilter::Absent),
        Some(Test::Present(false) | Test::Absent(false)) => None,
        Some(Test::EqualsJson(bytes)) => Some(ValueFilter::Equals(json(what, &bytes)?)),
    })
}

pub(crate) fn convert_options(id: &str, o: pb::Options) -> Result<Options, Error> {
    let d = |v: Option<prost_types::Duration>, what: &str| {
        v.map(|v| duration(&format!("{what} of handler {id:?}"), v))
            .transpose()
    };
    Ok(Options {
        retries: o.retries,
        timeout: d(o.timeout, "timeout")?,
        backoff: d(o.backoff, "backoff")?,
        errors: match pb::ErrorsMode::try_from(o.errors) {
            Ok(pb::ErrorsMode::Permanent) => ErrorsMode::Permanent,
            Ok(pb::ErrorsMode::Ignored) => ErrorsMode::Ignored,
            _ => ErrorsMode::Temporary,
        },
        optional: o.optional,
        deleted: o.deleted,
        call_timeout: d(o.call_timeout, "call timeout")?,
        interval: d(o.interval, "interval")?,
        idle: d(o.idle, "idle")?,
        initial_delay: d(o.initial_delay, "initial delay")?,
        sharp: o.sharp,
        cancellation_backoff: d(o.cancellation_backoff, "cancellation backoff")?,
        cancellation_timeout: d(o.cancellation_timeout, "cancellation timeout")?,
    })
}

/// A wire duration as a [`Duration`].
///
/// # Errors
/// [`Error::BadDuration`] when negative or out of range.
pub(crate) fn duration(what: &str, d: prost_types::Duration) -> Result<Duration, Error> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::BadDuration(what.to_owned()));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A [`Duration`] on the wire (what services send; the tests play services).
#[cfg(test)]
pub(crate) fn to_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A timestamp on the wire.
pub(crate) fn to_timestamp(t: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

pub(crate) fn json(what: &str, bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::BadJson {
        what: what.to_owned(),
        source,
    })
}

pub(crate) fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn reason(r: Option<Reason>) -> i32 {
    (match r {
        None => pb::Reason::Unspecified,
        Some(Reason::Create) => pb::Reason::Create,
        Some(Reason::Update) => pb::Reason::Update,
        Some(Reason::Delete) => pb::Reason::Delete,
        Some(Reason::Resume) => pb::Reason::Resume,
    }) as i32
}

/// The resource on the wire.
pub(crate) fn resolved(r: ResolvedResource) -> pb::ResolvedResource {
    pb::ResolvedResource {
        group: r.group,
        version: r.version,
        plural: r.plural,
        kind: r.kind,
        namespaced: r.namespaced,
    }
}

fn record(s: SubRecord) -> pb::Record {
    pb::Record {
        id: s.id,
        started: s.started.map(to_timestamp),
        retries: s.retries,
        success: s.success,
        failure: s.failure,
        message: s.message.unwrap_or_default(),
        delayed: s.delayed.map(to_timestamp),
    }
}

/// The `InvokeRequest` of a call (without its deadline and trace context).
pub(crate) fn invoke_request(call: Call) -> pb::InvokeRequest {
    pb::InvokeRequest {
        handler_id: call.handler_id,
        reason: reason(call.reason),
        body_json: to_json(&call.body),
        old_json: call.old.as_ref().map(to_json).unwrap_or_default(),
        new_json: call.new.as_ref().map(to_json).unwrap_or_default(),
        diff_json: to_json(&call.diff),
        retry: call.retry,
        started: call.started.map(to_timestamp),
        subhandlers: call.subhandlers.into_iter().map(record).collect(),
        event_type: call.event_type,
        attempt_id: call.attempt_id,
        resource: call.resource.map(resolved),
        admission: None,
    }
}

/// The `InvokeRequest` of an admission call (without its deadline).
pub(crate) fn admission_request(call: AdmissionCall) -> pb::InvokeRequest {
    pb::InvokeRequest {
        handler_id: call.handler_id,
        body_json: to_json(&call.body),
        old_json: call.old.as_ref().map(to_json).unwrap_or_default(),
        new_json: call.new.as_ref().map(to_json).unwrap_or_default(),
        diff_json: to_json(&call.diff),
        attempt_id: call.attempt_id,
        resource: Some(resolved(call.resource)),
        admission: Some(pb::AdmissionCall {
            request_json: to_json(&call.request),
            headers: call.headers,
            sslpeer_json: Vec::new(),
        }),
        ..Default::default()
    }
}

/// The first message of a `Daemon` call.
pub(crate) fn daemon_start(call: Call) -> pb::DaemonRequest {
    use pb::daemon_request::Message;
    pb::DaemonRequest {
        message: Some(Message::Start(pb::DaemonStart {
            handler_id: call.handler_id,
            body_json: to_json(&call.body),
            resource: call.resource.map(resolved),
            retry: call.retry,
            started: call.started.map(to_timestamp),
            attempt_id: call.attempt_id,
        })),
    }
}

/// A later message of a `Daemon` call.
pub(crate) fn daemon_request(input: DaemonInput) -> pb::DaemonRequest {
    use pb::daemon_request::Message;
    let message = match input {
        DaemonInput::Body(body) => Message::BodyJson(to_json(&body)),
        DaemonInput::Stop { reason, force } => Message::Stop(pb::DaemonStop {
            reason: (match reason {
                StopReason::ResourceDeleted => pb::DaemonStopReason::ResourceDeleted,
                StopReason::FiltersMismatch => pb::DaemonStopReason::FiltersMismatch,
                StopReason::OperatorExiting => pb::DaemonStopReason::OperatorExiting,
            }) as i32,
            force,
        }),
    };
    pb::DaemonRequest {
        message: Some(message),
    }
}

/// Validates an Invoke response.
///
/// # Errors
/// The first contract violation: no outcome, a patch that is not a JSON object, bad JSON.
pub(crate) fn answer(r: pb::InvokeResponse) -> Result<Answer, Error> {
    let result = outcome("the outcome", r.outcome)?;
    let patch = merge_patch(&r.patch_json)?;
    let subhandlers = r
        .subhandlers
        .into_iter()
        .map(|s| {
            let what = format!("sub-handler {:?}", s.id);
            let result = match s.outcome {
                None => SubResult::Selected,
                Some(o) => match outcome(&what, Some(o))? {
                    Some(result) => SubResult::Ran(result),
                    None => SubResult::NotMatched,
                },
            };
            Ok(SubAnswer {
                options: convert_options(&s.id, s.options.unwrap_or_default())?,
                id: s.id,
                result,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Answer {
        result,
        patch,
        subhandlers,
        events: event_requests(r.events)?,
    })
}

/// A handler's merge patch: empty means none; otherwise a JSON object.
fn merge_patch(bytes: &[u8]) -> Result<Option<Value>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let patch = json("the patch", bytes)?;
    if !patch.is_object() {
        return Err(Error::PatchNotObject(patch.to_string()));
    }
    Ok(Some(patch))
}

/// A discovered resource on the wire (`SelectResources`).
pub(crate) fn discovered(d: &crate::core::selectors::Discovered) -> pb::DiscoveredResource {
    pb::DiscoveredResource {
        group: d.group.clone(),
        version: d.version.clone(),
        plural: d.plural.clone(),
        kind: d.kind.clone(),
        singular: d.singular.clone(),
        short_names: d.short_names.clone(),
        categories: d.categories.clone(),
        subresources: d.subresources.clone(),
        namespaced: d.namespaced,
        preferred: d.preferred,
        verbs: d.verbs.clone(),
    }
}

/// An Event from a service's `Outbox`: it must name the object it is about.
///
/// # Errors
/// [`Error::NoInvolvedObject`] without one; [`Error::BadJson`] for one that is not JSON.
pub(crate) fn outboxed(m: pb::OutboxEvent) -> Result<EventRequest, Error> {
    let event = m.event.ok_or(Error::NoInvolvedObject)?;
    let request = event_requests(vec![event])?
        .pop()
        .ok_or(Error::NoInvolvedObject)?;
    if request.involved_object.is_none() {
        return Err(Error::NoInvolvedObject);
    }
    Ok(request)
}

/// The Events of an answer.
///
/// # Errors
/// [`Error::BadJson`] for an involved object that is not JSON.
pub(crate) fn event_requests(events: Vec<pb::Event>) -> Result<Vec<EventRequest>, Error> {
    events
        .into_iter()
        .map(|e| {
            Ok(EventRequest {
                involved_object: if e.involved_object_json.is_empty() {
                    None
                } else {
                    Some(json("an event's involved object", &e.involved_object_json)?)
                },
                type_: if e.r#type.is_empty() {
                    "Normal".into()
                } else {
                    e.r#type
                },
                reason: e.reason,
                message: e.message,
            })
        })
        .collect()
}

/// Validates one message of a `Daemon` call.
///
/// # Errors
/// A patch that is not a JSON object, bad JSON, an exit without an outcome.
pub(crate) fn daemon_output(r: pb::DaemonResponse) -> Result<DaemonOutput, Error> {
    Ok(DaemonOutput {
        patch: merge_patch(&r.patch_json)?,
        events: event_requests(r.events)?,
        exit: match r.exit {
            None => None,
            Some(o) => Some(outcome("the daemon's exit", Some(o))?),
        },
    })
}

fn outcome(what: &str, o: Option<pb::Outcome>) -> Result<Option<CallResult>, Error> {
    use pb::outcome::Result as R;
    let Some(result) = o.and_then(|o| o.result) else {
        return Err(Error::NoOutcome);
    };
    let delay = |d: Option<prost_types::Duration>| {
        d.map(|d| duration(&format!("the delay of {what}"), d))
            .transpose()
    };
    Ok(Some(match result {
        R::Success(s) => CallResult::Success(if s.result_json.is_empty() {
            None
        } else {
            Some(json(&format!("the result of {what}"), &s.result_json)?)
        }),
        R::TemporaryError(e) => CallResult::Temporary {
            message: e.message,
            delay: delay(e.delay)?,
        },
        R::PermanentError(e) => CallResult::Permanent { message: e.message },
        R::ArbitraryError(e) => CallResult::Arbitrary { message: e.message },
        R::NotMatched(_) => return Ok(None),
        R::SubhandlersPending(p) => CallResult::SubhandlersPending {
            delay: delay(p.delay)?,
        },
    }))
}

/// An `InvokeResponse` of an admission handler as the core's answer.
///
/// # Errors
/// What breaks the contract: no outcome, a patch that is not a JSON object.
pub(crate) fn admission_answer(
    r: pb::InvokeResponse,
) -> Result<crate::core::admission::Answer, AdmissionAnswerError> {
    use crate::core::admission::{Refusal, Verdict};
    use pb::outcome::Result as R;
    let admission = r.admission_code.map(|c| Refusal::Admission(Some(c)));
    let refused = |refusal: Refusal, message: String| Verdict::Refused {
        refusal: admission.unwrap_or(refusal),
        message,
    };
    let verdict = match r.outcome.and_then(|o| o.result) {
        None => return Err(AdmissionAnswerError::NoOutcome),
        Some(R::Success(_)) => Verdict::Admitted,
        Some(R::NotMatched(_)) => Verdict::NotMatched,
        Some(R::PermanentError(e)) => refused(Refusal::Permanent, e.message),
        Some(R::TemporaryError(e)) => refused(Refusal::Temporary, e.message),
        Some(R::ArbitraryError(e)) => {
            let message = if e.message.is_empty() {
                e.error_type
            } else {
                e.message
            };
            refused(Refusal::Other, message)
        }
        Some(R::SubhandlersPending(_)) => refused(
            Refusal::Other,
            "sub-handlers are not run in admission webhooks".into(),
        ),
    };
    let patch = if r.patch_json.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&r.patch_json) {
            Ok(p) if p.is_object() => Some(p),
            Ok(_) => return Err(AdmissionAnswerError::PatchNotObject),
            Err(e) => return Err(AdmissionAnswerError::BadPatch(e)),
        }
    };
    Ok(crate::core::admission::Answer {
        verdict,
        warnings: r.warnings,
        patch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::admission::{Refusal, Verdict};

    #[test]
    fn a_patch_must_be_a_json_object() {
        let r = pb::InvokeResponse {
            outcome: Some(pb::Outcome {
                result: Some(pb::outcome::Result::Success(pb::Success::default())),
            }),
            patch_json: b"{not json".to_vec(),
            ..Default::default()
        };
        let err = answer(r.clone()).unwrap_err();
        assert!(
            err.to_string().contains("the patch is not valid JSON"),
            "{err}"
        );
        let r = pb::InvokeResponse {
            patch_json: b"[1]".to_vec(),
            ..r
        };
        assert!(matches!(answer(r), Err(Error::PatchNotObject(_))));
    }

    #[test]
    fn a_response_without_outcome_breaks_the_contract() {
        assert!(matches!(
            answer(pb::InvokeResponse::default()),
            Err(Error::NoOutcome)
        ));
    }

    #[test]
    fn daemon_messages_carry_patches_events_and_the_exit_last() {
        let update = daemon_output(pb::DaemonResponse {
            patch_json: br#"{"status":{"d":1}}"#.to_vec(),
            events: vec![pb::Event {
                reason: "Ping".into(),
                ..pb::Event::default()
            }],
            exit: None,
        })
        .unwrap();
        assert_eq!(update.patch, Some(serde_json::json!({"status": {"d": 1}})));
        assert_eq!(update.events[0].type_, "Normal");
        assert_eq!(update.exit, None);
        let exit = daemon_output(pb::DaemonResponse {
            exit: Some(pb::Outcome {
                result: Some(pb::outcome::Result::PermanentError(pb::PermanentError {
                    message: "no".into(),
                })),
            }),
            ..pb::DaemonResponse::default()
        })
        .unwrap();
        assert_eq!(
            exit.exit,
            Some(Some(CallResult::Permanent {
                message: "no".into()
            }))
        );
        assert!(matches!(
            daemon_output(pb::DaemonResponse {
                exit: Some(pb::Outcome::default()),
                ..pb::DaemonResponse::default()
            }),
            Err(Error::NoOutcome)
        ));
        assert!(matches!(
            daemon_output(pb::DaemonResponse {
                patch_json: b"[1]".to_vec(),
                ..pb::DaemonResponse::default()
            }),
            Err(Error::PatchNotObject(_))
        ));
    }

    fn outcome(result: pb::outcome::Result) -> Option<pb::Outcome> {
        Some(pb::Outcome {
            result: Some(result),
        })
    }

    #[test]
    fn answers_become_verdicts() {
        let a = admission_answer(pb::InvokeResponse {
            outcome: outcome(pb::outcome::Result::Success(Default::default())),
            patch_json: br#"{"spec":{"x":1}}"#.to_vec(),
            warnings: vec!["w".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.verdict, Verdict::Admitted);
        assert_eq!(a.warnings, ["w"]);
        assert_eq!(a.patch, Some(serde_json::json!({"spec": {"x": 1}})));

        let denied = admission_answer(pb::InvokeResponse {
            outcome: outcome(pb::outcome::Result::PermanentError(pb::PermanentError {
                message: "Go away!".into(),
            })),
            admission_code: Some(555),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            denied.verdict,
            Verdict::Refused {
                refusal: Refusal::Admission(Some(555)),
                message: "Go away!".into()
            }
        );
        let arbitrary = admission_answer(pb::InvokeResponse {
            outcome: outcome(pb::outcome::Result::ArbitraryError(pb::ArbitraryError {
                message: String::new(),
                error_type: "ZeroDivisionError".into(),
            })),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            arbitrary.verdict,
            Verdict::Refused {
                refusal: Refusal::Other,
                message: "ZeroDivisionError".into()
            }
        );
        assert!(admission_answer(pb::InvokeResponse::default()).is_err());
        assert!(
            admission_answer(pb::InvokeResponse {
                outcome: outcome(pb::outcome::Result::Success(Default::default())),
                patch_json: b"[]".to_vec(),
                ..Default::default()
            })
            .is_err()
        );
    }
}
