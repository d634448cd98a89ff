//! Admission webhooks (Kopf's `@kopf.on.validate` / `@kopf.on.mutate`): the review a validate or
//! mutate handler is called for ([`Admission`]), read once at the edge from the contract's
//! `AdmissionCall`, and the verdict a call's outcome stands for. The core serves the webhook
//! over HTTPS and calls `Invoke` with the review; this module is pure.

use std::collections::BTreeMap;

use operon_proto::v1 as pb;
use serde::Deserialize;
use serde_json::Value;

use crate::convert;

/// An operation an admission request is for (the AdmissionReview's `operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `CREATE`.
    Create,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `CONNECT` (e.g. `kubectl exec`, `port-forward`).
    Connect,
}

impl Operation {
    /// The API server's name: `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`Operation`] (`"PATCH"`); see [`Operation`]'s `FromStr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {0:?} (CREATE, UPDATE, DELETE or CONNECT)")]
pub struct UnknownOperation(pub String);

impl From<std::convert::Infallible> for UnknownOperation {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl std::str::FromStr for Operation {
    type Err = UnknownOperation;

    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`, in any case (as Kopf's and the Go SDK's
    /// `operations`).
    fn from_str(text: &str) -> Result<Self, UnknownOperation> {
        match text.to_ascii_uppercase().as_str() {
            "CREATE" => Ok(Self::Create),
            "UPDATE" => Ok(Self::Update),
            "DELETE" => Ok(Self::Delete),
            "CONNECT" => Ok(Self::Connect),
            _ => Err(UnknownOperation(text.to_owned())),
        }
    }
}

impl TryFrom<&str> for Operation {
    type Error = UnknownOperation;

    fn try_from(text: &str) -> Result<Self, UnknownOperation> {
        text.parse()
    }
}

impl TryFrom<String> for Operation {
    type Error = UnknownOperation;

    fn try_from(text: String) -> Result<Self, UnknownOperation> {
        text.parse()
    }
}

/// The user who made an admission request (the AdmissionReview's `userInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct UserInfo {
    /// The user's name, e.g. `system:serviceaccount:ns:sa` or `kubernetes-admin`.
    pub username: String,
    /// The user's uid (often empty).
    pub uid: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// What the authenticator adds (e.g. scopes).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The admission review a validate or mutate handler is called for: the AdmissionReview's
/// request (`admission.k8s.io/v1`) as the API server sent it to the core, and the webhook call's
/// HTTP headers. Reached through [`crate::Call::admission`] (and so `ctx.admission()`).
///
/// For these calls, [`crate::Call::body`] (and the typed object) is the request's `object`, or
/// its `oldObject` when there is none (on DELETE); [`crate::Call::old`] and
/// [`crate::Call::new`] are the whole `oldObject` and `object` (`None` when absent), and
/// [`crate::Call::diff`] their diff.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    operation: Operation,
    subresource: Option<String>,
    dry_run: bool,
    user_info: UserInfo,
    headers: BTreeMap<String, String>,
    sslpeer: Option<Value>,
    request: Value,
}

impl Admission {
    /// Reads the contract's `AdmissionCall`.
    ///
    /// # Errors
    /// What is wrong with it: a request that is not a JSON object, an operation the API server
    /// does not make, a `userInfo` of the wrong shape, a certificate that is not JSON.
    pub(crate) fn from_proto(call: &pb::AdmissionCall) -> Result<Self, String> {
        let request = convert::object_json("admission.request_json", &call.request_json)?;
        let operation = match request.get("operation") {
            Some(Value::String(text)) => text
                .parse::<Operation>()
                .map_err(|error| format!("admission.request_json has an {error}"))?,
            _ => return Err("admission.request_json has no operation".into()),
        };
        let subresource = request
            .get("subResource")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let dry_run = request
            .get("dryRun")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let user_info = match request.get("userInfo") {
            None | Some(Value::Null) => UserInfo::default(),
            Some(info) => UserInfo::deserialize(info)
                .map_err(|error| format!("admission.request_json has a bad userInfo: {error}"))?,
        };
        Ok(Self {
            operation,
            subresource,
            dry_run,
            user_info,
            headers: call
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            sslpeer: convert::optional_json("admission.sslpeer_json", &call.sslpeer_json)?,
            request,
        })
    }

    /// The operation under review.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The subresource under review (`status`, `scale`…); `None` for the resource itself.
    pub fn subresource(&self) -> Option<&str> {
        self.subresource.as_deref()
    }

    /// Whether the request will not be persisted (`kubectl --dry-run=server`): a handler with
    /// side effects ([`crate::HandlerOptions::side_effects`]) must not perform them then.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The user who made the request.
    pub fn user_info(&self) -> &UserInfo {
        &self.user_info
    }

    /// The request's uid (the AdmissionReview's `request.uid`).
    pub fn uid(&self) -> &str {
        self.request
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The webhook call's HTTP headers (names in lower case), e.g. `user-agent`.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// The TLS client certificate of the caller, in Python's `getpeercert()` shape (Kopf's
    /// `sslpeer`); `None` when the caller presented none (the API server presents none unless
    /// configured to).
    pub fn sslpeer(&self) -> Option<&Value> {
        self.sslpeer.as_ref()
    }

    /// The whole AdmissionReview request: `uid`, `kind`, `resource`, `subResource`, `operation`,
    /// `userInfo`, `name`, `namespace`, `dryRun`, `object`, `oldObject`, `options`…
    pub fn request(&self) -> &Value {
        &self.request
    }
}

/// What an admission handler's answer means for the request, for logs and spans (Go SDK's
/// names: `allowed`, `denied`, `not_matched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The handler succeeded: it admits the request.
    Allowed,
    /// The handler failed (on purpose or not): the request is denied.
    Denied,
    /// A callback filter said no: the handler has no say.
    NotMatched,
}

impl Verdict {
    /// The verdict of an admission handler's outcome.
    pub(crate) fn of(outcome: &pb::outcome::Result) -> Self {
        match outcome {
            pb::outcome::Result::Success(_) => Self::Allowed,
            pb::outcome::Result::NotMatched(_) => Self::NotMatched,
            pb::outcome::Result::TemporaryError(_)
            | pb::outcome::Result::PermanentError(_)
            | pb::outcome::Result::ArbitraryError(_)
            | pb::outcome::Result::SubhandlersPending(_) => Self::Denied,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::NotMatched => "not_matched",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(request: Value) -> pb::AdmissionCall {
        pb::AdmissionCall {
            request_json: request.to_string().into_bytes(),
            headers: [("User-Agent".to_owned(), "kube-apiserver".to_owned())].into(),
            sslpeer_json: Vec::new(),
        }
    }

    #[test]
    fn reads_the_review() {
        let admission = Admission::from_proto(&call(json!({
            "uid": "r1",
            "operation": "UPDATE",
            "subResource": "status",
            "dryRun": true,
            "userInfo": {"username": "alice", "groups": ["devs"], "extra": {"scopes": ["a"]}},
            "object": {"metadata": {"name": "w"}},
        })))
        .unwrap();
        assert_eq!(admission.operation(), Operation::Update);
        assert_eq!(admission.subresource(), Some("status"));
        assert!(admission.dry_run());
        assert_eq!(admission.uid(), "r1");
        assert_eq!(admission.user_info().username, "alice");
        assert_eq!(admission.user_info().groups, ["devs"]);
        assert_eq!(admission.user_info().extra["scopes"], ["a"]);
        assert_eq!(admission.headers()["user-agent"], "kube-apiserver");
        assert_eq!(admission.sslpeer(), None);
        assert_eq!(admission.request()["object"]["metadata"]["name"], "w");

        let minimal = Admission::from_proto(&call(json!({"operation": "DELETE"}))).unwrap();
        assert_eq!(minimal.operation(), Operation::Delete);
        assert_eq!(minimal.subresource(), None);
        assert!(!minimal.dry_run());
        assert_eq!(minimal.user_info(), &UserInfo::default());
    }

    #[test]
    fn refuses_broken_reviews() {
        let bad = |request: Value| Admission::from_proto(&call(request)).unwrap_err();
        assert!(bad(json!({})).contains("no operation"));
        assert!(bad(json!({"operation": "PATCH"})).contains("unknown operation \"PATCH\""));
        assert!(
            bad(json!({"operation": "CREATE", "userInfo": {"groups": "x"}})).contains("userInfo")
        );
        assert!(
            Admission::from_proto(&pb::AdmissionCall::default())
                .unwrap_err()
                .contains("admission.request_json")
        );
    }

    #[test]
    fn operations_by_name() {
        assert_eq!("CREATE".parse(), Ok(Operation::Create));
        assert_eq!(Operation::try_from("connect"), Ok(Operation::Connect));
        assert_eq!(Operation::Delete.to_string(), "DELETE");
        assert_eq!(
            Operation::try_from("PATCH".to_owned())
                .unwrap_err()
                .to_string(),
            "unknown operation \"PATCH\" (CREATE, UPDATE, DELETE or CONNECT)"
        );
    }

    #[test]
    fn verdicts() {
        let of = |o| Verdict::of(&o).as_str();
        assert_eq!(
            of(pb::outcome::Result::Success(pb::Success::default())),
            "allowed"
        );
        assert_eq!(
            of(pb::outcome::Result::NotMatched(pb::NotMatched {})),
            "not_matched"
        );
        assert_eq!(
            of(pb::outcome::Result::PermanentError(
                pb::PermanentError::default()
            )),
            "denied"
        );
        assert_eq!(
            of(pb::outcome::Result::ArbitraryError(
                pb::ArbitraryError::default()
            )),
            "denied"
        );
    }
}
