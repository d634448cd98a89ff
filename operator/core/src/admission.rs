//! Admission webhooks (Kopf's `@kopf.on.validate` / `@kopf.on.mutate`), the pure part: which
//! handlers a review selects ([`select`]), how their answers become the AdmissionReview response
//! ([`decide`], [`response`]), and what the managed webhook configurations contain
//! ([`webhooks`]).
//!
//! The runtime (`runtime::admission`) serves HTTPS, parses the review ([`review`]), calls the
//! selected handlers over gRPC and writes the configurations; everything it decides is here.

pub mod review;
pub mod serving;
pub mod webhooks;

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::model::{Filters, ValueFilter};
pub use review::{Operation, Review, ReviewError};

/// The longest `timeoutSeconds` the API server accepts for a webhook (and Kopf's fixed value).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Which configuration a handler's webhook lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookKind {
    /// `@kopf.on.validate`: a ValidatingWebhookConfiguration entry; its patches are ignored.
    Validating,
    /// `@kopf.on.mutate`: a MutatingWebhookConfiguration entry; its patch is the response's.
    Mutating,
}

impl WebhookKind {
    /// Kopf's word for it (`WebhookType`), for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::Validating => "validating",
            WebhookKind::Mutating => "mutating",
        }
    }
}

/// Which requests of a resource a handler is for: the main resource, all subresources, or one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Subresource {
    /// The resource itself (Kopf's `subresource=None`).
    #[default]
    Main,
    /// The resource and every subresource (`subresource='*'`).
    Any,
    /// One subresource, e.g. `status`.
    Named(String),
}

impl Subresource {
    /// From the contract's optional string.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            None => Subresource::Main,
            Some("*") => Subresource::Any,
            Some(name) => Subresource::Named(name.to_owned()),
        }
    }

    fn accepts(&self, requested: Option<&str>) -> bool {
        match (self, requested) {
            (Subresource::Any, _) => true,
            (Subresource::Main, None) => true,
            (Subresource::Named(name), Some(requested)) => name == requested,
            (Subresource::Main, Some(_)) | (Subresource::Named(_), None) => false,
        }
    }
}

/// One validate or mutate handler, with Kopf's options.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionHandler {
    /// The handler's id, unique within its service; the last segment of its webhook's URL.
    pub id: String,
    /// Validating or mutating.
    pub kind: WebhookKind,
    /// Declarative filters (labels, annotations, field and value), checked against the object.
    pub filters: Filters,
    /// The service checks more filters itself (answers "not matched").
    pub has_callback_filters: bool,
    /// The operations it is for; empty means all.
    pub operations: Vec<Operation>,
    /// Which (sub)resource requests it is for.
    pub subresource: Subresource,
    /// Its webhook stays in a managed configuration when the core stops.
    pub persistent: bool,
    /// It has side effects (`sideEffects: NoneOnDryRun`).
    pub side_effects: bool,
    /// A failure of the handler (or of its service) admits the request (`failurePolicy: Ignore`).
    pub ignore_failures: bool,
    /// The webhook's `timeoutSeconds`, at most [`MAX_TIMEOUT`].
    pub timeout: Duration,
}

/// The handlers a review runs, in registration order (Kopf's `WebhooksRegistry.iter_handlers`
/// with `match`): only the one named by the webhook's URL (`hint`) if there is one; of the
/// requested operation and subresource; never a mutating handler for a deletion unless DELETE is
/// its only operation (Kopf's rule); and whose declarative filters accept the object (the new one,
/// or the old one when there is no new one). Callback filters are the service's to check.
///
/// # Caveats
/// Kopf does not check `operations` when it selects the handlers (the managed configuration's
/// rules do); this does, so that a webhook configured by hand without a path gets the same.
pub fn select<'h>(
    handlers: &'h [AdmissionHandler],
    review: &Review,
    hint: Option<&str>,
) -> Vec<&'h AdmissionHandler> {
    handlers
        .iter()
        .filter(|h| hint.is_none_or(|id| id == h.id))
        .filter(|h| h.operations.is_empty() || h.operations.contains(&review.operation))
        .filter(|h| h.subresource.accepts(review.sub_resource.as_deref()))
        .filter(|h| {
            h.kind != WebhookKind::Mutating
                || review.operation != Operation::Delete
                || h.operations == [Operation::Delete]
        })
        .filter(|h| filters_accept(&h.filters, review.body()))
        .collect()
}

fn filters_accept(filters: &Filters, body: &Value) -> bool {
    let meta = body.get("metadata");
    let metadata_ok = |pattern: &std::collections::BTreeMap<String, ValueFilter>, key: &str| {
        let content = meta.and_then(|m| m.get(key));
        pattern
            .iter()
            .all(|(k, filter)| passes(filter, content.and_then(|c| c.get(k))))
    };
    let field_ok = match &filters.field {
        None => true,
        Some(path) => {
            let value = path.iter().try_fold(body, |v, k| v.get(k.as_str()));
            match &filters.value {
                None | Some(ValueFilter::Present) => value.is_some(),
                Some(filter) => passes(filter, value),
            }
        }
    };
    metadata_ok(&filters.labels, "labels")
        && metadata_ok(&filters.annotations, "annotations")
        && field_ok
}

fn passes(filter: &ValueFilter, value: Option<&Value>) -> bool {
    match filter {
        ValueFilter::Present => value.is_some(),
        ValueFilter::Absent => value.is_none(),
        ValueFilter::Equals(expected) => value == Some(expected),
    }
}

/// How a handler refused a request, in Kopf's order of preference for the response's status:
/// an `AdmissionError` first, then a permanent, a temporary, then any other error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Kopf's `AdmissionError(message, code)`: a denial on purpose, with its code.
    Admission(Option<i32>),
    /// A permanent error.
    Permanent,
    /// A temporary error (there are no retries in admission).
    Temporary,
    /// Any other error, or a handler service that failed.
    Other,
}

/// What one handler answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The handler ran and raised nothing.
    Admitted,
    /// A callback filter said no: as if it had not been selected.
    NotMatched,
    /// The handler refused.
    Refused {
        /// Which kind of refusal.
        refusal: Refusal,
        /// Its message.
        message: String,
    },
}

/// One handler's answer: its verdict, its warnings and (mutating handlers) its merge patch.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// What it decided.
    pub verdict: Verdict,
    /// Warnings for the requesting user.
    pub warnings: Vec<String>,
    /// A JSON merge patch of the object; `None` for none.
    pub patch: Option<Value>,
}

/// A handler's call: answered, or failed on the way (service down, deadline, broken answer).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The service answered.
    Answered(Answer),
    /// The call failed; the text says why.
    Failed(String),
}

/// The decision about a review, before it is written as the response.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The status of a denial: message and HTTP code.
    pub status: Option<(String, i32)>,
    /// All warnings, in handler order.
    pub warnings: Vec<String>,
    /// The JSONPatch operations of the mutations; empty for none.
    pub patch: Vec<Value>,
}

/// Kopf's `build_response`, decided: admitted when no selected handler refused (a failed call
/// counts as a refusal unless the handler ignores failures); the status of the most preferred
/// refusal ([`Refusal`]'s order, then handler order) with its code (500 by default); every
/// warning; and the mutating handlers' merge patches, applied in order to the object, as a
/// JSONPatch of the object (only when admitted).
pub fn decide(review: &Review, replies: &[(&AdmissionHandler, Reply)]) -> Decision {
    let mut warnings = Vec::new();
    let mut refusals: Vec<(Refusal, String)> = Vec::new();
    let mut patches = Vec::new();
    for (handler, reply) in replies {
        match reply {
            Reply::Failed(why) if handler.ignore_failures => {
                let _ = why; // the runtime logs it; the request goes on.
            }
            Reply::Failed(why) => refusals.push((
                Refusal::Other,
                format!("The admission handler {:?} failed: {why}", handler.id),
            )),
            Reply::Answered(answer) => {
                warnings.extend(answer.warnings.iter().cloned());
                match &answer.verdict {
                    Verdict::NotMatched => {}
                    Verdict::Admitted => {
                        if handler.kind == WebhookKind::Mutating
                            && let Some(patch) = &answer.patch
                        {
                            patches.push(patch);
                        }
                    }
                    Verdict::Refused { refusal, message } => {
                        refusals.push((*refusal, message.clone()));
                    }
                }
            }
        }
    }
    // A stable sort keeps the handlers' order among refusals of one kind.
    refusals.sort_by_key(|(refusal, _)| match refusal {
        Refusal::Admission(_) => 0,
        Refusal::Permanent => 1,
        Refusal::Temporary => 2,
        Refusal::Other => 9,
    });
    let status = refusals.first().map(|(refusal, message)| {
        let code = match refusal {
            Refusal::Admission(Some(code)) if *code != 0 => *code,
            _ => 500,
        };
        (message.clone(), code)
    });
    let allowed = status.is_none();
    let patch = if allowed && !patches.is_empty() {
        json_patch_of(review.body(), &patches)
    } else {
        Vec::new()
    };
    Decision {
        allowed,
        status,
        warnings,
        patch,
    }
}

/// The JSONPatch that takes `body` to `body` with the merge patches applied in order (Kopf's
/// `Patch.as_json_patch`: the merge patch applied to a copy, then diffed; no `test` operations).
pub fn json_patch_of(body: &Value, merge_patches: &[&Value]) -> Vec<Value> {
    let mut target = body.clone();
    for patch in merge_patches {
        json_patch::merge(&mut target, patch);
    }
    let ops = json_patch::diff(body, &target);
    match serde_json::to_value(ops) {
        Ok(Value::Array(ops)) => ops,
        _ => Vec::new(),
    }
}

/// The AdmissionReview response for a decision (the request's `apiVersion`, its `uid`).
pub fn response(review: &Review, decision: &Decision) -> Value {
    use base64::Engine as _;
    let mut body = Map::new();
    body.insert("uid".into(), Value::String(review.uid.clone()));
    body.insert("allowed".into(), Value::Bool(decision.allowed));
    if !decision.warnings.is_empty() {
        body.insert("warnings".into(), json!(decision.warnings));
    }
    if let Some((message, code)) = &decision.status {
        body.insert("status".into(), json!({"message": message, "code": code}));
    }
    if !decision.patch.is_empty() {
        let text = Value::Array(decision.patch.clone()).to_string();
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        body.insert("patch".into(), Value::String(encoded));
        body.insert("patchType".into(), Value::String("JSONPatch".into()));
    }
    json!({
        "apiVersion": review.api_version,
        "kind": "AdmissionReview",
        "response": body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn handler(id: &str, kind: WebhookKind) -> AdmissionHandler {
        AdmissionHandler {
            id: id.into(),
            kind,
            filters: Filters::default(),
            has_callback_filters: false,
            operations: Vec::new(),
            subresource: Subresource::Main,
            persistent: false,
            side_effects: false,
            ignore_failures: false,
            timeout: MAX_TIMEOUT,
        }
    }

    fn review(operation: &str, sub: Option<&str>, object: Value) -> Review {
        let mut request = json!({
            "uid": "u-1",
            "kind": {"group": "kopf.dev", "version": "v1", "kind": "KopfExample"},
            "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"},
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
        });
        if let Some(sub) = sub {
            request["subResource"] = json!(sub);
        }
        let text = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                          "request": request})
        .to_string();
        Review::parse(text.as_bytes()).unwrap()
    }

    fn obj() -> Value {
        json!({"metadata": {"name": "x", "labels": {"somelabel": "somevalue"}},
               "spec": {"field": "value"}})
    }

    fn ids(selected: &[&AdmissionHandler]) -> Vec<String> {
        selected.iter().map(|h| h.id.clone()).collect()
    }

    #[test]
    fn selection_follows_hint_operations_subresource_and_filters() {
        let mut create_only = handler("create-only", WebhookKind::Validating);
        create_only.operations = vec![Operation::Create];
        let mut status = handler("status", WebhookKind::Validating);
        status.subresource = Subresource::Named("status".into());
        let mut any = handler("any", WebhookKind::Validating);
        any.subresource = Subresource::Any;
        let mut labelled = handler("labelled", WebhookKind::Mutating);
        labelled
            .filters
            .labels
            .insert("somelabel".into(), ValueFilter::Equals(json!("somevalue")));
        let mut valued = handler("valued", WebhookKind::Validating);
        valued.filters.field = Some(vec!["spec".into(), "field".into()]);
        valued.filters.value = Some(ValueFilter::Equals(json!("not-allowed")));
        let all = vec![create_only, status, any, labelled, valued];

        let r = review("CREATE", None, obj());
        assert_eq!(
            ids(&select(&all, &r, None)),
            ["create-only", "any", "labelled"]
        );
        assert_eq!(ids(&select(&all, &r, Some("any"))), ["any"]);
        assert!(select(&all, &r, Some("nope")).is_empty());
        let r = review("UPDATE", Some("status"), obj());
        assert_eq!(ids(&select(&all, &r, None)), ["status", "any"]);
        let mut o = obj();
        o["spec"]["field"] = json!("not-allowed");
        o["metadata"]["labels"] = json!({});
        let r = review("UPDATE", None, o);
        assert_eq!(ids(&select(&all, &r, None)), ["any", "valued"]);
    }

    #[test]
    fn mutating_handlers_skip_deletions_unless_only_for_them() {
        let plain = handler("plain", WebhookKind::Mutating);
        let mut deleting = handler("deleting", WebhookKind::Mutating);
        deleting.operations = vec![Operation::Delete];
        let validating = handler("validating", WebhookKind::Validating);
        let all = vec![plain, deleting, validating];
        let text = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": "DELETE", "userInfo": {}, "object": null,
                        "oldObject": obj()}})
        .to_string();
        let r = Review::parse(text.as_bytes()).unwrap();
        assert_eq!(r.body(), &obj(), "the old object is the body of a deletion");
        assert_eq!(ids(&select(&all, &r, None)), ["deleting", "validating"]);
    }

    fn answered(verdict: Verdict, warnings: &[&str], patch: Option<Value>) -> Reply {
        Reply::Answered(Answer {
            verdict,
            warnings: warnings.iter().map(|w| (*w).to_owned()).collect(),
            patch,
        })
    }

    #[test]
    fn all_admitted_gives_warnings_and_the_mutations_as_a_json_patch() {
        let v = handler("v", WebhookKind::Validating);
        let m = handler("m", WebhookKind::Mutating);
        let r = review("CREATE", None, obj());
        let replies = [
            (
                &v,
                answered(
                    Verdict::Admitted,
                    &["one"],
                    Some(json!({"spec": {"ignored": 1}})),
                ),
            ),
            (
                &m,
                answered(
                    Verdict::Admitted,
                    &["two"],
                    Some(json!({"spec": {"injected": 123}})),
                ),
            ),
        ];
        let decision = decide(&r, &replies);
        assert!(decision.allowed);
        assert_eq!(decision.status, None);
        assert_eq!(decision.warnings, ["one", "two"]);
        assert_eq!(
            decision.patch,
            [json!({"op": "add", "path": "/spec/injected", "value": 123})]
        );
        let resp = response(&r, &decision);
        assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(resp["kind"], "AdmissionReview");
        assert_eq!(resp["response"]["uid"], "u-1");
        assert_eq!(resp["response"]["allowed"], true);
        assert_eq!(resp["response"]["patchType"], "JSONPatch");
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(resp["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(
            ops,
            json!([{"op": "add", "path": "/spec/injected", "value": 123}])
        );
        assert!(resp["response"].get("status").is_none());
    }

    #[test]
    fn refusals_deny_preferring_admission_errors_with_their_code() {
        let a = handler("a", WebhookKind::Validating);
        let b = handler("b", WebhookKind::Validating);
        let c = handler("c", WebhookKind::Mutating);
        let r = review("CREATE", None, obj());
        let other = Verdict::Refused {
            refusal: Refusal::Other,
            message: "boom".into(),
        };
        let admission = Verdict::Refused {
            refusal: Refusal::Admission(Some(555)),
            message: "Go away!".into(),
        };
        let permanent_first = Verdict::Refused {
            refusal: Refusal::Permanent,
            message: "a permanent error".into(),
        };
        let replies = [
            (&a, answered(other, &[], None)),
            (&a, answered(permanent_first, &[], None)),
            (&b, answered(admission, &["w"], None)),
            (
                &c,
                answered(Verdict::Admitted, &[], Some(json!({"spec": {"x": 1}}))),
            ),
        ];
        let decision = decide(&r, &replies);
        assert!(!decision.allowed);
        assert_eq!(decision.status, Some(("Go away!".into(), 555)));
        assert_eq!(decision.warnings, ["w"]);
        assert!(decision.patch.is_empty(), "no patch for a denied request");
        let resp = response(&r, &decision);
        assert_eq!(resp["response"]["status"]["code"], 555);
        assert!(resp["response"].get("patch").is_none());

        // Without an admission error, a permanent error wins over others; code 500 by default.
        let permanent = Verdict::Refused {
            refusal: Refusal::Permanent,
            message: "perm".into(),
        };
        let temporary = Verdict::Refused {
            refusal: Refusal::Temporary,
            message: "temp".into(),
        };
        let replies = [
            (&a, answered(temporary, &[], None)),
            (&b, answered(permanent, &[], None)),
        ];
        assert_eq!(decide(&r, &replies).status, Some(("perm".into(), 500)));
        let zero = Verdict::Refused {
            refusal: Refusal::Admission(None),
            message: "no code".into(),
        };
        assert_eq!(
            decide(&r, &[(&a, answered(zero, &[], None))]).status,
            Some(("no code".into(), 500))
        );
    }

    #[test]
    fn a_failed_call_denies_unless_failures_are_ignored() {
        let strict = handler("strict", WebhookKind::Validating);
        let mut lenient = handler("lenient", WebhookKind::Validating);
        lenient.ignore_failures = true;
        let r = review("CREATE", None, obj());
        let down = || Reply::Failed("the handler service is unreachable".into());
        let decision = decide(&r, &[(&lenient, down())]);
        assert!(decision.allowed);
        let decision = decide(&r, &[(&lenient, down()), (&strict, down())]);
        assert!(!decision.allowed);
        let (message, code) = decision.status.unwrap();
        assert_eq!(code, 500);
        assert!(
            message.contains("\"strict\"") && message.contains("unreachable"),
            "{message}"
        );
        let nm = [(&strict, answered(Verdict::NotMatched, &[], None))];
        assert!(decide(&r, &nm).allowed);
    }

    #[test]
    fn merge_patches_become_json_patches_relative_to_the_object() {
        let body = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"list": [1, 2]}});
        let p1 = json!({"metadata": {"labels": {"a": null, "c": "3"}}});
        let p2 = json!({"spec": {"list": [3], "new": {"deep": true}}, "metadata": {"labels": {"b": "2"}}});
        let ops = json_patch_of(&body, &[&p1, &p2]);
        let mut applied = body.clone();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.clone())).unwrap();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(
            applied,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}},
                   "spec": {"list": [3], "new": {"deep": true}}})
        );
        assert!(ops.iter().all(|op| op["op"] != "test"));
        // Setting what is already there, or removing what is absent, is no operation.
        let noop = json!({"metadata": {"labels": {"a": "1", "zzz": null}}});
        assert!(json_patch_of(&body, &[&noop]).is_empty());
    }
}
