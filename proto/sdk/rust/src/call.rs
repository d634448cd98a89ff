//! What the core sent for one call, read once at the edge: the object (typed as the handler
//! wants it), the cause, old/new/diff, the retry count. [`Call`] is the read-only view that
//! handlers ([`crate::Ctx`]) and `when` filters see.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use operon_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admission::Admission;
use crate::convert;
use crate::error::HandlerError;

/// Why a change handler is called (the cause's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The object was created (or first seen without a last-handled state).
    Create,
    /// The object changed since it was last handled.
    Update,
    /// The object is being deleted.
    Delete,
    /// The operator (re)started and sees the object for the first time.
    Resume,
}

impl Reason {
    fn from_proto(reason: pb::Reason) -> Option<Self> {
        match reason {
            pb::Reason::Create => Some(Self::Create),
            pb::Reason::Update => Some(Self::Update),
            pb::Reason::Delete => Some(Self::Delete),
            pb::Reason::Resume => Some(Self::Resume),
            pb::Reason::Unspecified => None,
        }
    }

    /// `create`, `update`, `delete` or `resume`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Resume => "resume",
        }
    }
}

/// The resource as the core resolved it from the API server's discovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedResource {
    /// The API group (empty: the core group).
    pub group: String,
    /// The API version.
    pub version: String,
    /// The plural name.
    pub plural: String,
    /// The kind.
    pub kind: String,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
}

impl ResolvedResource {
    pub(crate) fn from_proto(r: &pb::ResolvedResource) -> Self {
        Self {
            group: r.group.clone(),
            version: r.version.clone(),
            plural: r.plural.clone(),
            kind: r.kind.clone(),
            namespaced: r.namespaced,
        }
    }
}

/// What happened to one field between the old and the new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffOp {
    /// The field appeared.
    Add,
    /// The field's value changed.
    Change,
    /// The field went away.
    Remove,
}

/// One change between the old and the new state (Kopf's `DiffItem`): lists are compared whole.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffItem {
    /// What happened.
    pub op: DiffOp,
    /// Where: the path of keys from the compared root (empty: the root itself).
    pub path: Vec<String>,
    /// The value before (`None` for an addition).
    pub old: Option<Value>,
    /// The value after (`None` for a removal).
    pub new: Option<Value>,
}

impl DiffItem {
    /// Reads Kopf's JSON tuple form `[op, [path...], old, new]`.
    fn from_value(item: &Value) -> Option<Self> {
        let [op, path, old, new] = item.as_array()?.as_slice() else {
            return None;
        };
        let op = match op.as_str()? {
            "add" => DiffOp::Add,
            "change" => DiffOp::Change,
            "remove" => DiffOp::Remove,
            _ => return None,
        };
        let path = path
            .as_array()?
            .iter()
            .map(|key| key.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        let some = |v: &Value| (!v.is_null()).then(|| v.clone());
        Some(Self {
            op,
            path,
            old: some(old),
            new: some(new),
        })
    }

    /// The path as a dotted string, e.g. `spec.size`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// Everything the core sent for one call, parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallData {
    pub(crate) reason: Option<Reason>,
    pub(crate) body: Value,
    pub(crate) old: Option<Value>,
    pub(crate) new: Option<Value>,
    pub(crate) diff: Vec<DiffItem>,
    pub(crate) event_type: Option<String>,
    pub(crate) resource: Option<ResolvedResource>,
    pub(crate) attempt_id: String,
    pub(crate) records: Vec<pb::Record>,
    /// Validate/mutate handlers: the review.
    pub(crate) admission: Option<Admission>,
}

impl CallData {
    /// Reads an `InvokeRequest`.
    ///
    /// # Errors
    /// What is wrong with the request: a body that is not a JSON object, fields that are not
    /// JSON, a diff that is not Kopf's list of tuples, an admission review that cannot be read.
    pub(crate) fn from_invoke(request: &pb::InvokeRequest) -> Result<Self, String> {
        let diff = match convert::optional_json("diff_json", &request.diff_json)? {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    DiffItem::from_value(item).ok_or_else(|| {
                        format!("diff_json has an item that is not [op, path, old, new]: {item}")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("diff_json must be a JSON list".into()),
        };
        Ok(Self {
            reason: Reason::from_proto(request.reason()),
            body: convert::object_json("body_json", &request.body_json)?,
            old: convert::optional_json("old_json", &request.old_json)?,
            new: convert::optional_json("new_json", &request.new_json)?,
            diff,
            event_type: (!request.event_type.is_empty()).then(|| request.event_type.clone()),
            resource: request.resource.as_ref().map(ResolvedResource::from_proto),
            attempt_id: request.attempt_id.clone(),
            records: request.subhandlers.clone(),
            admission: request
                .admission
                .as_ref()
                .map(Admission::from_proto)
                .transpose()?,
        })
    }
}

/// The parsed call with the handler (or sub-handler) it is for: what a `when` closure is
/// evaluated against before the object is read as its type.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) data: Arc<CallData>,
    pub(crate) handler_id: Arc<str>,
    pub(crate) retry: u32,
    pub(crate) started: Option<SystemTime>,
}

/// A read-only view of one call: the object as `K`, the cause and the handler's progress.
///
/// `K` is any type the object deserializes into: a `#[derive(CustomResource)]` type, a
/// `k8s_openapi` type, `kube::api::DynamicObject`, a plain serde struct with the fields you
/// need, or [`serde_json::Value`]. [`crate::Ctx`] dereferences to it; `when` filters receive it.
pub struct Call<K> {
    pub(crate) head: Head,
    object: Arc<K>,
}

impl<K> Clone for Call<K> {
    fn clone(&self) -> Self {
        Self {
            head: self.head.clone(),
            object: Arc::clone(&self.object),
        }
    }
}

impl<K> std::fmt::Debug for Call<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("handler_id", &self.head.handler_id)
            .field("reason", &self.head.data.reason)
            .field("name", &self.name())
            .field("retry", &self.head.retry)
            .finish_non_exhaustive()
    }
}

impl<K: DeserializeOwned> Call<K> {
    /// Reads the object as `K`.
    ///
    /// # Errors
    /// A [`HandlerError::Other`] saying why the object cannot be read as `K`.
    pub(crate) fn read(head: Head) -> Result<Self, HandlerError> {
        let object = K::deserialize(&head.data.body).map_err(|error| {
            HandlerError::other(
                "serde_json::Error",
                format!(
                    "cannot read the object as {}: {error}",
                    std::any::type_name::<K>()
                ),
            )
        })?;
        Ok(Self {
            head,
            object: Arc::new(object),
        })
    }
}

impl<K> Call<K> {
    /// The same call for a sub-handler: its own id, retry count and start.
    pub(crate) fn for_subhandler(
        &self,
        handler_id: Arc<str>,
        retry: u32,
        started: Option<SystemTime>,
    ) -> Self {
        Self {
            head: Head {
                data: Arc::clone(&self.head.data),
                handler_id,
                retry,
                started,
            },
            object: Arc::clone(&self.object),
        }
    }

    /// The object, typed.
    pub fn object(&self) -> &K {
        &self.object
    }

    /// The whole object as JSON, as the core sent it.
    pub fn body(&self) -> &Value {
        &self.head.data.body
    }

    /// `metadata.name`.
    pub fn name(&self) -> Option<&str> {
        self.body()["metadata"]["name"].as_str()
    }

    /// `metadata.namespace` (`None` for cluster-scoped objects).
    pub fn namespace(&self) -> Option<&str> {
        self.body()["metadata"]["namespace"].as_str()
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> Option<&str> {
        self.body()["metadata"]["uid"].as_str()
    }

    /// `metadata.labels[key]`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.body()["metadata"]["labels"][key].as_str()
    }

    /// `metadata.annotations[key]`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.body()["metadata"]["annotations"][key].as_str()
    }

    /// The handler's id (a sub-handler's: `parent/sub`).
    pub fn handler_id(&self) -> &str {
        &self.head.handler_id
    }

    /// Why a change handler is called; `None` for event handlers, timers and admission handlers
    /// (see [`Call::admission`]).
    pub fn reason(&self) -> Option<Reason> {
        self.head.data.reason
    }

    /// The old essence (the last handled state, without status and most metadata); for a
    /// field handler (and an update handler with a field), the field's old value; for an
    /// admission handler, the request's whole `oldObject`. `None` when there is none (creation,
    /// timers, events).
    pub fn old(&self) -> Option<&Value> {
        self.head.data.old.as_ref()
    }

    /// The new essence; for a field handler, the field's new value; for an admission handler,
    /// the request's whole `object` (`None` on DELETE).
    #[allow(clippy::new_ret_no_self)] // Kopf's name (`new`), beside `old`; not a constructor.
    pub fn new(&self) -> Option<&Value> {
        self.head.data.new.as_ref()
    }

    /// What changed between [`Call::old`] and [`Call::new`] (for field handlers: re-rooted at
    /// the field). Empty when nothing did or there is no old state.
    pub fn diff(&self) -> &[DiffItem] {
        &self.head.data.diff
    }

    /// The attempts made so far: 0 on the first call, 1 on the first retry, …
    pub fn retry(&self) -> u32 {
        self.head.retry
    }

    /// When the first attempt of this handler (for this change) started.
    pub fn started(&self) -> Option<SystemTime> {
        self.head.started
    }

    /// How long since [`Call::started`] (zero when unknown).
    pub fn runtime(&self) -> Duration {
        self.head
            .started
            .and_then(|started| SystemTime::now().duration_since(started).ok())
            .unwrap_or_default()
    }

    /// The raw watch event type for event handlers: `ADDED`, `MODIFIED` or `DELETED`.
    pub fn watch_event(&self) -> Option<&str> {
        self.head.data.event_type.as_deref()
    }

    /// The resource as the core resolved it.
    pub fn resource(&self) -> Option<&ResolvedResource> {
        self.head.data.resource.as_ref()
    }

    /// The core's id of this attempt (same object, handler, change and retry → same id; for an
    /// admission handler: same review and handler); empty when the core sent none.
    pub fn attempt_id(&self) -> &str {
        &self.head.data.attempt_id
    }

    /// The admission review, for validate and mutate handlers (`None` for the others): the
    /// operation, subresource, dry run, user… See [`Admission`].
    pub fn admission(&self) -> Option<&Admission> {
        self.head.data.admission.as_ref()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// A head for a first call of handler `h` on `body`.
    pub(crate) fn head(body: Value) -> Head {
        Head {
            data: Arc::new(CallData {
                body,
                ..CallData::default()
            }),
            handler_id: Arc::from("h"),
            retry: 0,
            started: None,
        }
    }

    #[test]
    fn reads_invoke_requests() {
        let request = pb::InvokeRequest {
            handler_id: "h".into(),
            reason: pb::Reason::Update as i32,
            body_json: br#"{"metadata": {"name": "a", "namespace": "ns", "labels": {"x": "1"}}}"#
                .to_vec(),
            old_json: br#"{"spec": {"size": 1}}"#.to_vec(),
            new_json: br#"{"spec": {"size": 2}}"#.to_vec(),
            diff_json:
                br#"[["change", ["spec", "size"], 1, 2], ["add", ["spec", "x"], null, "y"]]"#
                    .to_vec(),
            retry: 2,
            attempt_id: "abc".into(),
            ..Default::default()
        };
        let data = CallData::from_invoke(&request).unwrap();
        assert_eq!(data.reason, Some(Reason::Update));
        assert_eq!(data.new, Some(json!({"spec": {"size": 2}})));
        assert_eq!(data.diff.len(), 2);
        assert_eq!(data.diff[0].op, DiffOp::Change);
        assert_eq!(data.diff[0].dotted(), "spec.size");
        assert_eq!(data.diff[1].old, None);
        let call = Call::<Value>::read(Head {
            data: Arc::new(data),
            handler_id: Arc::from("h"),
            retry: 2,
            started: None,
        })
        .unwrap();
        assert_eq!(call.name(), Some("a"));
        assert_eq!(call.namespace(), Some("ns"));
        assert_eq!(call.label("x"), Some("1"));
        assert_eq!(call.retry(), 2);
        assert_eq!(call.attempt_id(), "abc");
    }

    #[test]
    fn refuses_broken_requests() {
        let bad = |request: pb::InvokeRequest| CallData::from_invoke(&request).unwrap_err();
        assert!(bad(pb::InvokeRequest::default()).contains("body_json"));
        let body = br#"{"metadata": {}}"#.to_vec();
        assert!(
            bad(pb::InvokeRequest {
                body_json: body.clone(),
                diff_json: br#"[["move", [], 1, 2]]"#.to_vec(),
                ..Default::default()
            })
            .contains("diff_json")
        );
        assert!(
            bad(pb::InvokeRequest {
                body_json: body,
                old_json: b"{".to_vec(),
                ..Default::default()
            })
            .contains("old_json")
        );
    }

    #[derive(Debug, serde::Deserialize)]
    struct Strict {
        #[allow(dead_code)]
        spec: u32,
    }

    #[test]
    fn typed_objects_that_do_not_fit_are_other_errors() {
        let error = Call::<Strict>::read(head(json!({"spec": "x"}))).unwrap_err();
        assert!(
            matches!(&error, HandlerError::Other { error_type, .. } if error_type == "serde_json::Error")
        );
        assert!(error.message().contains("cannot read the object as"));
    }
}
