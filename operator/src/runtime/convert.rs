//! The edge between the wire (`operon.v1`) and the core's model. Everything a handler service
//! sends is validated here; proto types go no further.

use std::collections::BTreeMap;
use std::time::Duration;

use operon_proto::v1 as pb;
use serde_json::Value;

use crate::core::model::{ErrorsMode, Filters, Handler, HandlerKind, Options, ValueFilter};
use crate::core::outcome::CallResult;

pub use crate::core::handling::{SubAnswer, SubResult};

/// A service's manifest or answer that breaks the contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A handler has no id.
    #[error("a handler has an empty id")]
    EmptyId,
    /// Two handlers of the same kind share an id for the same resource.
    #[error("handler id {0:?} is used twice for the same kind and resource")]
    DuplicateId(String),
    /// A handler's kind is unknown to this core.
    #[error("handler {id:?} has an unknown or unsupported kind ({kind})")]
    UnsupportedKind {
        /// The handler.
        id: String,
        /// The wire value.
        kind: i32,
    },
    /// A handler names no resource.
    #[error("handler {0:?} names no resource")]
    NoResource(String),
    /// A JSON field does not hold JSON.
    #[error("{what} is not valid JSON: {source}")]
    BadJson {
        /// Which field.
        what: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A merge patch is not a JSON object.
    #[error("the patch must be a JSON object, got: {0}")]
    PatchNotObject(String),
    /// A response carries no outcome.
    #[error("the response has no outcome")]
    NoOutcome,
    /// An Event sent outside a handler call does not say which object it is about.
    #[error("an Event sent on the outbox names no involved object")]
    NoInvolvedObject,
    /// A duration is negative or out of range.
    #[error("{0} is not a valid duration")]
    BadDuration(String),
}

/// A resource as a service names it: kubectl-style.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// API group; empty for the core group or "any".
    pub group: String,
    /// Version; empty for the preferred one.
    pub version: String,
    /// Plural, singular, kind or short name.
    pub name: String,
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.group.as_str(), self.version.as_str()) {
            ("", "") => write!(f, "{}", self.name),
            (g, "") => write!(f, "{}.{g}", self.name),
            (g, v) => write!(f, "{g}/{v}/{}", self.name),
        }
    }
}

/// One handler of a service, with the resource it serves.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Which resource.
    pub selector: Selector,
    /// The handler.
    pub handler: Handler,
}

/// A validated manifest.
#[derive(Debug, Clone, Default)]
pub struct Registrations {
    /// The handlers this core runs.
    pub handlers: Vec<Registration>,
    /// Handlers of kinds this core does not run yet (sync, tasks): `(id, kind)`.
    pub unsupported: Vec<(String, &'static str)>,
    /// Handlers whose selector names no single resource (`everything`, `category`,
    /// `callable_id`): served on every resource that discovery finds matching.
    pub wide: Vec<WideRegistration>,
}

/// One handler of a service whose selector names no single resource.
#[derive(Debug, Clone)]
pub struct WideRegistration {
    /// Which resources.
    pub selector: crate::core::selectors::WideSelector,
    /// The handler.
    pub handler: Handler,
}

/// The wide part of a resource selector, if it has one.
fn wide_selector(r: &pb::ResourceSelector) -> Option<crate::core::selectors::WideSelector> {
    use crate::core::selectors::{Pick, WideSelector};
    let pick = if r.everything {
        Pick::Everything
    } else if !r.category.is_empty() {
        Pick::Category(r.category.clone())
    } else if !r.callable_id.is_empty() {
        Pick::Callable(r.callable_id.clone())
    } else {
        return None;
    };
    Some(WideSelector {
        group: (r.core_group || !r.group.is_empty()).then(|| r.group.clone()),
        version: (!r.version.is_empty()).then(|| r.version.clone()),
        pick,
    })
}

/// Validates a manifest into registrations.
///
/// # Errors
/// The first contract violation found.
pub fn manifest(m: &pb::Manifest) -> Result<Registrations, Error> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Registrations::default();
    for h in &m.handlers {
        if h.id.is_empty() {
            return Err(Error::EmptyId);
        }
        // One function under several decorators (`@on.resume` + `@on.create`) is one id with
        // several kinds: one progress record, run at most once per cycle (Kopf's dedup). One id
        // may serve several resources (handlers registered in a loop): Kopf keys them per
        // resource, and so do the progress records (they live on each object).
        let resource_key = h.resource.as_ref().map(|r| format!("{r:?}"));
        if !seen.insert((h.id.clone(), h.kind, resource_key)) {
            return Err(Error::DuplicateId(h.id.clone()));
        }
        let kind = match pb::HandlerKind::try_from(h.kind) {
            Ok(pb::HandlerKind::Create) => HandlerKind::Create,
            Ok(pb::HandlerKind::Update) => HandlerKind::Update,
            Ok(pb::HandlerKind::Delete) => HandlerKind::Delete,
            Ok(pb::HandlerKind::Resume) => HandlerKind::Resume,
            Ok(pb::HandlerKind::Field) => HandlerKind::Field,
            Ok(pb::HandlerKind::Event) => HandlerKind::Event,
            Ok(pb::HandlerKind::Timer) => HandlerKind::Timer,
            Ok(pb::HandlerKind::Daemon) => HandlerKind::Daemon,
            Ok(pb::HandlerKind::Index) => HandlerKind::Index,
            // Admission webhooks are served apart (`runtime::admission::registrations`).
            Ok(pb::HandlerKind::Validate | pb::HandlerKind::Mutate) => continue,
            Ok(kind @ (pb::HandlerKind::Sync | pb::HandlerKind::Task)) => {
                out.unsupported.push((h.id.clone(), kind.as_str_name()));
                continue;
            }
            _ => {
                return Err(Error::UnsupportedKind {
                    id: h.id.clone(),
                    kind: h.kind,
                });
            }
        };
        let filters = h.filters.clone().unwrap_or_default();
        let options = h.options.clone().unwrap_or_default();
        if let Some(selector) = h.resource.as_ref().and_then(wide_selector) {
            out.wide.push(WideRegistration {
                selector,
                handler: Handler {
                    id: h.id.clone(),
                    kind,
                    has_callback_filters: filters.has_callback_filters,
                    filters: convert_filters(&h.id, filters)?,
                    options: convert_options(&h.id, options)?,
                },
            });
            continue;
        }
        let resource = h
            .resource
            .as_ref()
            .filter(|r| !r.name.is_empty())
            .ok_or_else(|| Error::NoResource(h.id.clone()))?;
        out.handlers.push(Registration {
            selector: Selector {
                group: resource.group.clone(),
                version: resource.version.clone(),
                name: resource.name.clone(),
            },
            handler: Handler {
                id: h.id.clone(),
                kind,
                has_callback_filters: filters.has_callback_filters,
                filters: convert_filters(&h.id, filters)?,
                options: convert_options(&h.id, options)?,
            },
        });
    }
    Ok(out)
}

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

fn convert_options(id: &str, o: pb::Options) -> Result<Options, Error> {
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
pub fn duration(what: &str, d: prost_types::Duration) -> Result<Duration, Error> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::BadDuration(what.to_owned()));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A [`Duration`] on the wire.
pub fn to_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A timestamp on the wire.
pub fn to_timestamp(t: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

fn json(what: &str, bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::BadJson {
        what: what.to_owned(),
        source,
    })
}

/// A validated answer to one Invoke.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The handler's outcome; `None` means "not matched" (a callback filter said no).
    pub result: Option<CallResult>,
    /// A merge patch for the object (a JSON object), if any.
    pub patch: Option<Value>,
    /// Sub-handler outcomes.
    pub subhandlers: Vec<SubAnswer>,
    /// Events to post.
    pub events: Vec<EventRequest>,
}

/// An Event a handler asks the core to post.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRequest {
    /// Normal, Warning or Error.
    pub type_: String,
    /// A CamelCase reason.
    pub reason: String,
    /// The text.
    pub message: String,
    /// Another object than the handled one, if any.
    pub involved_object: Option<Value>,
}

/// Validates an Invoke response.
///
/// # Errors
/// The first contract violation: no outcome, a patch that is not a JSON object, bad JSON.
pub fn answer(r: pb::InvokeResponse) -> Result<Answer, Error> {
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
pub fn discovered(d: &crate::core::selectors::Discovered) -> pb::DiscoveredResource {
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
pub fn outboxed(m: pb::OutboxEvent) -> Result<EventRequest, Error> {
    let event = m.event.ok_or(Error::NoInvolvedObject)?;
    let request = event_requests(vec![event])?
        .pop()
        .ok_or(Error::NoInvolvedObject)?;
    if request.involved_object.is_none() {
        return Err(Error::NoInvolvedObject);
    }
    Ok(request)
}

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

/// One message of a running daemon, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonOutput {
    /// A merge patch to apply now.
    pub patch: Option<Value>,
    /// Events to post.
    pub events: Vec<EventRequest>,
    /// The last message: how the daemon's function ended (`Some(None)`: a callback filter said
    /// no).
    pub exit: Option<Option<CallResult>>,
}

/// Validates one message of a `Daemon` call.
///
/// # Errors
/// A patch that is not a JSON object, bad JSON, an exit without an outcome.
pub fn daemon_output(r: pb::DaemonResponse) -> Result<DaemonOutput, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn manifests_reject_duplicates_and_missing_resources() {
        let h = |id: &str| pb::Handler {
            id: id.into(),
            kind: pb::HandlerKind::Create as i32,
            resource: Some(pb::ResourceSelector {
                group: "g".into(),
                version: "v1".into(),
                name: "things".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = pb::Manifest {
            handlers: vec![h("a"), h("a")],
            ..Default::default()
        };
        assert!(matches!(manifest(&m), Err(Error::DuplicateId(_))));
        // The same id under another kind is one function with two decorators.
        let mut resume = h("a");
        resume.kind = pb::HandlerKind::Resume as i32;
        let m = pb::Manifest {
            handlers: vec![h("a"), resume],
            ..Default::default()
        };
        assert_eq!(manifest(&m).unwrap().handlers.len(), 2);
        // The same id and kind for another resource: handlers registered in a loop.
        let mut other = h("a");
        if let Some(r) = other.resource.as_mut() {
            r.name = "others".into();
        }
        let m = pb::Manifest {
            handlers: vec![h("a"), other],
            ..Default::default()
        };
        assert_eq!(manifest(&m).unwrap().handlers.len(), 2);
        let mut bad = h("b");
        bad.resource = None;
        let m = pb::Manifest {
            handlers: vec![bad],
            ..Default::default()
        };
        assert!(matches!(manifest(&m), Err(Error::NoResource(_))));
    }

    #[test]
    fn filters_and_options_convert() {
        let mut h = pb::Handler {
            id: "f".into(),
            kind: pb::HandlerKind::Field as i32,
            resource: Some(pb::ResourceSelector {
                group: String::new(),
                version: "v1".into(),
                name: "pods".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut filters = pb::Filters {
            field: "spec.field".into(),
            ..Default::default()
        };
        filters.labels.insert(
            "app".into(),
            pb::ValueFilter {
                test: Some(pb::value_filter::Test::EqualsJson(b"\"web\"".to_vec())),
            },
        );
        h.filters = Some(filters);
        h.options = Some(pb::Options {
            retries: Some(3),
            backoff: Some(to_duration(Duration::from_secs(1))),
            errors: pb::ErrorsMode::Permanent as i32,
            ..Default::default()
        });
        let regs = manifest(&pb::Manifest {
            handlers: vec![h],
            ..Default::default()
        })
        .unwrap();
        let handler = &regs.handlers[0].handler;
        assert_eq!(handler.kind, HandlerKind::Field);
        assert_eq!(
            handler.filters.field,
            Some(vec!["spec".to_owned(), "field".to_owned()])
        );
        assert_eq!(
            handler.filters.labels["app"],
            ValueFilter::Equals(serde_json::json!("web"))
        );
        assert_eq!(handler.options.retries, Some(3));
        assert_eq!(handler.options.errors, ErrorsMode::Permanent);
    }
}
