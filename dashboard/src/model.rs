//! The read model the dashboard shows: every watched object with each handler's progress. The
//! core fills it as it handles objects; `operon dashboard` fills it from the objects' Kopf-format
//! annotations. Pages read it through [`ReadModel`], never the API server. The views themselves
//! are `operon_core::views`' (the core builds them without depending on the dashboard).
//!
//! The trait's required methods are what every model has (objects, overview figures, changes);
//! the provided ones ([`ReadModel::object`], [`ReadModel::details`], [`ReadModel::about`]) have
//! defaults, so a model can fill them in when it has the data. [`ObjectDetails`] and [`About`]
//! are `#[non_exhaustive]`: build them with `Default::default()` and set the fields you have.

use std::sync::Arc;

use tokio::sync::broadcast;

pub use operon_core::views::{
    About, AttemptOutcome, AttemptView, ChartPoint, Charts, ChildAction, ChildView, DiffView,
    EventView, HandlerDetails, HandlerStatus, HandlerView, ObjectDetails, ObjectPhase, ObjectView,
    Overview, RunKind, RunView, ServiceView, Source, TaskState, TaskView,
};

/// The phases an object can be in, from the most to the least urgent (the list page sorts
/// phases in this order).
pub const PHASES: [ObjectPhase; 6] = ObjectPhase::ALL;

/// The states a handler can be in.
pub const HANDLER_STATES: [HandlerStatus; 4] = HandlerStatus::ALL;

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

    /// The overview's live charts (the last 15 minutes of the core's own counters). The
    /// default has none (`operon dashboard` sees no queue and no calls).
    fn charts(&self) -> Option<Charts> {
        None
    }

    /// The key of the object that one of the kept attempts with this trace id (32 hex digits)
    /// belongs to. The dashboard fetches from Jaeger only the traces this knows. The default
    /// knows none.
    fn trace_object(&self, trace_id: &str) -> Option<String> {
        let _ = trace_id;
        None
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders of views for tests.

    use super::*;

    /// A view with one handler in `state`.
    pub(crate) fn object(namespace: &str, name: &str, phase: ObjectPhase) -> ObjectView {
        ObjectView {
            resource: "widgets.example.com/v1".into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            phase,
            cause: "create".into(),
            handlers: vec![handler("create_fn", HandlerStatus::Succeeded)],
            updated: "2026-01-02T03:04:05Z".into(),
        }
    }

    /// A handler view.
    pub(crate) fn handler(id: &str, state: HandlerStatus) -> HandlerView {
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
        pub(crate) charts: Option<Charts>,
    }

    impl Fake {
        pub(crate) fn new(objects: Vec<ObjectView>) -> Self {
            Fake {
                objects,
                details: ObjectDetails::default(),
                about: About::default(),
                changes: broadcast::channel(16).0,
                charts: None,
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
        fn charts(&self) -> Option<Charts> {
            self.charts.clone()
        }
        fn trace_object(&self, trace_id: &str) -> Option<String> {
            let known = self
                .details
                .handlers
                .values()
                .flat_map(|h| &h.attempts)
                .any(|a| a.trace_id.as_deref() == Some(trace_id));
            known.then(|| self.objects.first().map(ObjectView::key))?
        }
    }
}
