//! An AdmissionReview request (admission.k8s.io/v1, also v1beta1), validated: what the core
//! needs of it to select handlers and answer, plus the raw `request` to forward to them.

use serde_json::Value;

/// The API operation under review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `CREATE`.
    Create,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `CONNECT`.
    Connect,
}

impl Operation {
    /// The API server's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    /// Parses the API server's word (exactly, upper case).
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }
}

/// Why a body is not a usable AdmissionReview (answered with HTTP 400 and this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// The JSON is not an AdmissionReview.
    #[error("the body is not an AdmissionReview (kind {kind:?}, apiVersion {api_version:?})")]
    NotAReview {
        /// The `kind` found.
        kind: String,
        /// The `apiVersion` found.
        api_version: String,
    },
    /// A field the review must have is missing or has the wrong type.
    #[error("the AdmissionReview has no valid {0}")]
    Missing(&'static str),
    /// The operation is not one of CREATE, UPDATE, DELETE, CONNECT.
    #[error("the AdmissionReview's operation {0:?} is unknown")]
    UnknownOperation(String),
}

/// A validated review request.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// The request's `apiVersion`, echoed in the response.
    pub api_version: String,
    /// `request.uid`, echoed in the response.
    pub uid: String,
    /// `request.resource.group`.
    pub group: String,
    /// `request.resource.version`.
    pub version: String,
    /// `request.resource.resource` (the plural).
    pub plural: String,
    /// `request.subResource`, e.g. `status`.
    pub sub_resource: Option<String>,
    /// `request.operation`.
    pub operation: Operation,
    /// `request.dryRun`.
    pub dry_run: bool,
    /// `request.object`, if not null.
    pub object: Option<Value>,
    /// `request.oldObject`, if not null.
    pub old_object: Option<Value>,
    /// The whole `request`, as the API server sent it (forwarded to the handlers).
    pub request: Value,
}

impl Review {
    /// Parses and validates a review. As Kopf, it requires the user info and at least one of
    /// the new and the old object.
    ///
    /// # Errors
    /// A [`ReviewError`] naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReviewError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ReviewError::NotJson(e.to_string()))?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let kind = text(value.get("kind")).unwrap_or_default();
        let api_version = text(value.get("apiVersion")).unwrap_or_default();
        if kind != "AdmissionReview" || !api_version.starts_with("admission.k8s.io/") {
            return Err(ReviewError::NotAReview { kind, api_version });
        }
        let request = value
            .get("request")
            .filter(|r| r.is_object())
            .ok_or(ReviewError::Missing("request"))?;
        let uid = text(request.get("uid")).ok_or(ReviewError::Missing("request.uid"))?;
        let resource = request
            .get("resource")
            .filter(|r| r.is_object())
            .ok_or(ReviewError::Missing("request.resource"))?;
        let group = text(resource.get("group")).unwrap_or_default();
        let version = text(resource.get("version")).unwrap_or_default();
        let plural = text(resource.get("resource"))
            .filter(|p| !p.is_empty())
            .ok_or(ReviewError::Missing("request.resource.resource"))?;
        let operation =
            text(request.get("operation")).ok_or(ReviewError::Missing("request.operation"))?;
        let operation =
            Operation::parse(&operation).ok_or(ReviewError::UnknownOperation(operation))?;
        if !request.get("userInfo").is_some_and(Value::is_object) {
            return Err(ReviewError::Missing("request.userInfo"));
        }
        let object = request.get("object").filter(|o| o.is_object()).cloned();
        let old_object = request.get("oldObject").filter(|o| o.is_object()).cloned();
        if object.is_none() && old_object.is_none() {
            return Err(ReviewError::Missing("request.object or request.oldObject"));
        }
        Ok(Review {
            api_version,
            uid,
            group,
            version,
            plural,
            sub_resource: text(request.get("subResource")).filter(|s| !s.is_empty()),
            operation,
            dry_run: request
                .get("dryRun")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            object,
            old_object,
            request: request.clone(),
        })
    }

    /// The object the handlers look at: the new one, or the old one when there is no new one
    /// (a deletion).
    pub fn body(&self) -> &Value {
        static EMPTY: Value = Value::Null;
        self.object
            .as_ref()
            .or(self.old_object.as_ref())
            .unwrap_or(&EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(request: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    }

    fn parse(v: &Value) -> Result<Review, ReviewError> {
        Review::parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_full_review_parses() {
        let v = review(json!({
            "uid": "705ab4f5", "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"},
            "subResource": "status", "operation": "UPDATE", "userInfo": {"username": "admin"},
            "dryRun": true, "object": {"spec": {"a": 1}}, "oldObject": {"spec": {"a": 0}},
        }));
        let r = parse(&v).unwrap();
        assert_eq!(r.uid, "705ab4f5");
        assert_eq!(
            (r.group.as_str(), r.version.as_str(), r.plural.as_str()),
            ("kopf.dev", "v1", "kopfexamples")
        );
        assert_eq!(r.sub_resource.as_deref(), Some("status"));
        assert_eq!(r.operation, Operation::Update);
        assert!(r.dry_run);
        assert_eq!(r.body(), &json!({"spec": {"a": 1}}));
        assert_eq!(r.request, v["request"]);
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(
            Review::parse(b"{nope"),
            Err(ReviewError::NotJson(_))
        ));
        assert!(matches!(
            parse(&json!({"kind": "Pod", "apiVersion": "v1"})),
            Err(ReviewError::NotAReview { .. })
        ));
        let base = json!({"uid": "u", "resource": {"group": "", "version": "v1", "resource": "pods"},
                          "operation": "CREATE", "userInfo": {}, "object": {}});
        assert!(parse(&review(base.clone())).is_ok());
        for (field, expected) in [
            ("uid", "request.uid"),
            ("resource", "request.resource"),
            ("operation", "request.operation"),
            ("userInfo", "request.userInfo"),
            ("object", "request.object or request.oldObject"),
        ] {
            let mut r = base.clone();
            r.as_object_mut().unwrap().remove(field);
            assert_eq!(
                parse(&review(r)).unwrap_err(),
                ReviewError::Missing(expected)
            );
        }
        let mut r = base;
        r["operation"] = json!("PATCH");
        assert_eq!(
            parse(&review(r)).unwrap_err().to_string(),
            "the AdmissionReview's operation \"PATCH\" is unknown"
        );
        assert_eq!(
            parse(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}))
                .unwrap_err(),
            ReviewError::Missing("request")
        );
    }
}
