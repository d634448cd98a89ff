//! Admission handlers (`--handler validate:ID` / `--handler mutate:ID`): the core serves them as
//! webhooks and calls `Invoke` with the review in `admission`. A validate handler denies an
//! object whose `spec.field` is `"not-allowed"` (code 422); a mutate handler sets
//! `spec.injected` to 123. Both add a warning naming themselves; a denial also posts a Warning
//! Event (reason `AdmissionDenied`) about the object. A pure function of the object.

use operon_proto::v1::{
    Event, HandlerKind, InvokeResponse, Outcome, PermanentError, Success, outcome,
};
use serde_json::Value;

/// The answer of admission handler `id` of `kind` for the object under review.
pub fn admit(kind: HandlerKind, id: &str, body: &Value) -> InvokeResponse {
    let warnings = vec![format!("{id}: checked by the Rust example.")];
    let field = body.pointer("/spec/field").and_then(Value::as_str);
    if kind == HandlerKind::Validate && field == Some("not-allowed") {
        return InvokeResponse {
            outcome: Some(Outcome {
                result: Some(outcome::Result::PermanentError(PermanentError {
                    message: format!("{id}: spec.field may not be \"not-allowed\"."),
                })),
            }),
            warnings,
            admission_code: Some(422),
            events: vec![Event {
                r#type: "Warning".into(),
                reason: "AdmissionDenied".into(),
                message: format!("{id}: refused spec.field \"not-allowed\"."),
                involved_object_json: Vec::new(),
            }],
            ..InvokeResponse::default()
        };
    }
    InvokeResponse {
        outcome: Some(Outcome {
            result: Some(outcome::Result::Success(Success::default())),
        }),
        patch_json: if kind == HandlerKind::Mutate {
            br#"{"spec":{"injected":123}}"#.to_vec()
        } else {
            Vec::new()
        },
        warnings,
        ..InvokeResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_denies_the_forbidden_value_with_a_code() {
        let bad = json!({"spec": {"field": "not-allowed"}});
        let denied = admit(HandlerKind::Validate, "check", &bad);
        assert_eq!(denied.admission_code, Some(422));
        assert_eq!(denied.events[0].reason, "AdmissionDenied");
        assert!(matches!(
            denied.outcome.and_then(|o| o.result),
            Some(outcome::Result::PermanentError(e)) if e.message.contains("not-allowed")
        ));
        let good = json!({"spec": {"field": "value"}});
        let allowed = admit(HandlerKind::Validate, "check", &good);
        assert_eq!(allowed.admission_code, None);
        assert!(allowed.patch_json.is_empty());
        assert_eq!(allowed.warnings, ["check: checked by the Rust example."]);
    }

    #[test]
    fn mutation_answers_a_merge_patch() {
        let mutated = admit(HandlerKind::Mutate, "inject", &json!({"spec": {}}));
        let patch: Value = serde_json::from_slice(&mutated.patch_json).unwrap();
        assert_eq!(patch, json!({"spec": {"injected": 123}}));
    }
}
