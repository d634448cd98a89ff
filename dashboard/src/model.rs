//! The read model the dashboard shows: every watched object with each handler's progress. The
//! core fills it as it handles objects; `operon dashboard` fills it from the objects' Kopf-format
//! annotations. Pages read it through [`ReadModel`], never the API server.
//!
//! The trait's required methods are what every model has (objects, overview figures, changes);
//! the provided ones ([`ReadModel::object`], [`ReadModel::details`], [`ReadModel::about`]) have
//! defaults, so a model can fill them in when it has the data. [`ObjectDetails`] and [`About`]
//! are `#[non_exhaustive]`: build them with `Default::default()` and set the fields you have.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// The phases an object can be in, from the most to the least urgent (the list page sorts
/// phases in this order).
pub const PHASES: [&str; 6] = [
    "failed",
    "retrying",
    "in-progress",
    "deleting",
    "pending",
    "handled",
];

/// The states a handler can be in.
pub const HANDLER_STATES: [&str; 4] = ["failed", "retrying", "pending", "succeeded"];

/// One handler's state on one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandlerView {
    /// Handler (or sub-handler) id; a sub-handler's id is its parent's id, `/`, its own.
    pub id: String,
    /// `pending`, `retrying`, `succeeded` or `failed`.
    pub state: &'static str,
    /// Attempts so far.
    pub retries: u32,
    /// First attempt (RFC 3339).
    pub started: Option<String>,
    /// Next attempt, when retrying (RFC 3339).
    pub delayed: Option<String>,
    /// Last error text.
    pub message: Option<String>,
    /// The trace id of the last attempt, if traced.
    pub trace_id: Option<String>,
}

/// One object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectView {
    /// `plural.group/version`.
    pub resource: String,
    /// Namespace (empty for cluster-wide objects).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// `handled`, `in-progress`, `retrying`, `failed`, `deleting` or `pending` (one of
    /// [`PHASES`]; `pending`: never handled yet).
    pub phase: &'static str,
    /// The last cycle's cause (`create`, `update`, `delete`, `resume`, `noop`…).
    pub cause: String,
    /// Handlers of the current (or last) cycle.
    pub handlers: Vec<HandlerView>,
    /// When this view last changed (RFC 3339).
    pub updated: String,
}

impl ObjectView {
    /// The object's key in a read model: `resource/namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.resource, self.namespace, self.name)
    }
}

/// Figures about the core as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overview {
    /// Objects waiting for a worker.
    pub queue_depth: i64,
    /// Handler calls in flight.
    pub inflight_calls: i64,
}

/// One Kubernetes Event about an object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventView {
    /// When it last happened (RFC 3339).
    pub time: String,
    /// `Normal`, `Warning` (Kopf also posts `Error`).
    #[serde(rename = "type")]
    pub type_: String,
    /// The reason (`Logging`, `HandlerFailed`, …).
    pub reason: String,
    /// The message.
    pub message: String,
    /// How many times it happened.
    pub count: u32,
}

/// One difference between the last handled state of an object and its state now (a Kopf diff
/// item), with the values as compact JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffView {
    /// `add`, `change` or `remove`.
    pub op: String,
    /// The dotted field path (`spec.replicas`); empty for the whole object.
    pub path: String,
    /// The value before, as JSON.
    pub old: Option<String>,
    /// The value after, as JSON.
    pub new: Option<String>,
}

/// One traced attempt of a handler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptView {
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// When it started (RFC 3339).
    pub started: Option<String>,
    /// Its OpenTelemetry trace id (32 hex digits).
    pub trace_id: String,
}

/// What only a handler's row on the object page shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HandlerDetails {
    /// When the outcome became final (RFC 3339): the page shows the duration.
    pub stopped: Option<String>,
    /// The reason of the cycle that created the record (`create`, `update`, …).
    pub purpose: Option<String>,
    /// Every traced attempt, oldest first (without it, the page links the last attempt's trace
    /// from [`HandlerView::trace_id`]).
    pub attempts: Vec<AttemptView>,
}

/// What only an object's own page shows; every part may be empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ObjectDetails {
    /// What changed since the object was last handled (never filled for Secrets).
    pub diff: Vec<DiffView>,
    /// Recent Kubernetes Events about the object, newest first.
    pub events: Vec<EventView>,
    /// Per handler id.
    pub handlers: BTreeMap<String, HandlerDetails>,
}

/// Where a read model's data comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The running core (`operon run`): it knows its queue and calls.
    #[default]
    Core,
    /// The objects' annotations, watched by `operon dashboard`: no queue, no calls.
    Cluster,
}

/// A handler service, as the core sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    /// Its address.
    pub name: String,
    /// Whether it answered the last call.
    pub answering: bool,
    /// How many handlers it serves.
    pub handlers: usize,
}

/// Facts about the model as a whole, for the overview.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct About {
    /// Where the data comes from.
    pub source: Source,
    /// The served resources (`plural.group/version`), also those without objects.
    pub resources: Vec<String>,
    /// The handler services.
    pub services: Vec<ServiceView>,
}

/// What the dashboard reads.
pub trait ReadModel: Send + Sync + 'static {
    /// Every object, ordered by resource, namespace and name. The views are shared, not copied:
    /// a page over 10,000 objects costs 10,000 reference counts, not 10,000 deep copies.
    fn objects(&self) -> Vec<Arc<ObjectView>>;
    /// Figures about the core.
    fn overview(&self) -> Overview;
    /// Changes as JSON lines (`{"type":"upsert","object":…}` or `{"type":"remove","key":…}`).
    fn subscribe(&self) -> broadcast::Receiver<String>;

    /// One object by its [`ObjectView::key`]. The default searches [`ReadModel::objects`].
    fn object(&self, key: &str) -> Option<Arc<ObjectView>> {
        self.objects().into_iter().find(|o| o.key() == key)
    }

    /// What the object's page shows besides its view. The default has nothing.
    fn details(&self, key: &str) -> ObjectDetails {
        let _ = key;
        ObjectDetails::default()
    }

    /// Facts about the model as a whole. The default: the core, no declared resources.
    fn about(&self) -> About {
        About::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders of views for tests.

    use super::*;

    /// A view with one handler in `state`.
    pub(crate) fn object(namespace: &str, name: &str, phase: &'static str) -> ObjectView {
        ObjectView {
            resource: "widgets.example.com/v1".into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            phase,
            cause: "create".into(),
            handlers: vec![handler("create_fn", "succeeded")],
            updated: "2026-01-02T03:04:05Z".into(),
        }
    }

    /// A handler view.
    pub(crate) fn handler(id: &str, state: &'static str) -> HandlerView {
        HandlerView {
            id: id.into(),
            state,
            retries: 0,
            started: Some("2026-01-02T03:04:00Z".into()),
            delayed: None,
            message: None,
            trace_id: None,
        }
    }

    /// Builder-style changes.
    pub(crate) trait ObjectExt {
        fn resource(self, resource: &str) -> Self;
        fn handlers(self, handlers: Vec<HandlerView>) -> Self;
        fn updated(self, updated: &str) -> Self;
    }

    impl ObjectExt for ObjectView {
        fn resource(mut self, resource: &str) -> Self {
            self.resource = resource.into();
            self
        }
        fn handlers(mut self, handlers: Vec<HandlerView>) -> Self {
            self.handlers = handlers;
            self
        }
        fn updated(mut self, updated: &str) -> Self {
            self.updated = updated.into();
            self
        }
    }

    /// An in-memory model.
    pub(crate) struct Fake {
        pub(crate) objects: Vec<ObjectView>,
        pub(crate) details: ObjectDetails,
        pub(crate) about: About,
        pub(crate) changes: broadcast::Sender<String>,
    }

    impl Fake {
        pub(crate) fn new(objects: Vec<ObjectView>) -> Self {
            Fake {
                objects,
                details: ObjectDetails::default(),
                about: About::default(),
                changes: broadcast::channel(16).0,
            }
        }
    }

    impl ReadModel for Fake {
        fn objects(&self) -> Vec<Arc<ObjectView>> {
            self.objects.iter().cloned().map(Arc::new).collect()
        }
        fn overview(&self) -> Overview {
            Overview {
                queue_depth: 3,
                inflight_calls: 2,
            }
        }
        fn subscribe(&self) -> broadcast::Receiver<String> {
            self.changes.subscribe()
        }
        fn details(&self, _key: &str) -> ObjectDetails {
            self.details.clone()
        }
        fn about(&self) -> About {
            self.about.clone()
        }
    }
}
