//! What the HTTP listener serves from a running engine: readiness, metrics, the read model, the
//! dashboard's about page and the shutdown hooks' callbacks. A leaf: the engine fills it, the
//! listener reads it.

use std::sync::Arc;

use crate::runtime::kit::LockedRw;
use crate::runtime::metrics::Metrics;
use crate::runtime::readmodel::ReadModel;
use crate::runtime::watching::Readiness;

/// Shared state of the HTTP listener.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The read model.
    pub readmodel: Arc<ReadModel>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The shutdown hooks, for their callbacks.
    pub callbacks: Arc<crate::runtime::shutdown::Callbacks>,
    /// Whether every watch has its initial listing.
    pub readiness: Arc<Readiness>,
    about: std::sync::RwLock<operon_dashboard::About>,
}

impl Shared {
    /// A fresh state.
    pub(crate) fn new(readmodel: Arc<ReadModel>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Shared {
            readmodel,
            metrics,
            callbacks: Arc::default(),
            readiness: Arc::default(),
            about: Default::default(),
        })
    }

    /// Every watch has finished its initial listing.
    pub(crate) fn ready(&self) -> bool {
        self.readiness.ready()
    }
}

impl operon_dashboard::ReadModel for Shared {
    fn objects(&self) -> Vec<Arc<operon_dashboard::ObjectView>> {
        self.readmodel.objects()
    }

    fn object(&self, key: &str) -> Option<Arc<operon_dashboard::ObjectView>> {
        self.readmodel.object(key)
    }

    fn details(&self, key: &str) -> operon_dashboard::ObjectDetails {
        self.readmodel.details(key)
    }

    fn overview(&self) -> operon_dashboard::Overview {
        operon_dashboard::Overview {
            queue_depth: self.metrics.queue_depth(),
            inflight_calls: self.metrics.inflight_calls(),
        }
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.readmodel.subscribe()
    }

    fn about(&self) -> operon_dashboard::About {
        self.about.read_locked().clone()
    }

    fn charts(&self) -> Option<operon_dashboard::Charts> {
        Some(self.metrics.charts())
    }

    fn trace_object(&self, trace_id: &str) -> Option<String> {
        self.readmodel.trace_object(trace_id)
    }
}

/// How the overview shows a handler service at `address` that described itself as `manifest`.
pub(crate) fn service_view(
    address: &str,
    manifest: &crate::core::manifest::Manifest,
) -> operon_dashboard::ServiceView {
    operon_dashboard::ServiceView {
        name: address.to_owned(),
        answering: true,
        handlers: manifest.declared,
        service_name: manifest.service_name.clone(),
        contract_revision: manifest.contract_revision,
        tls: address.starts_with("https://"),
        last_error: None,
    }
}

impl Shared {
    /// Edits what the dashboard's about page shows.
    pub(crate) fn set_about(&self, edit: impl FnOnce(&mut operon_dashboard::About)) {
        edit(&mut self.about.write_locked());
    }
}
