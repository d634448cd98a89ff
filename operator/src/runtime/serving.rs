//! What the HTTP listener serves from a running engine: readiness, metrics, the read model, the
//! dashboard's about page and the shutdown hooks' callbacks. A leaf: the engine fills it, the
//! listener reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::runtime::kit::LockedRw;
use crate::runtime::metrics::Metrics;
use crate::runtime::readmodel::ReadModel;

/// Counts the watches that have finished their initial listing against those expected.
#[derive(Debug)]
pub struct Readiness {
    total: AtomicUsize,
    listed: AtomicUsize,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            total: AtomicUsize::new(usize::MAX),
            listed: AtomicUsize::new(0),
        }
    }
}

impl Readiness {
    /// Not ready until [`Readiness::expect`] says how many watches to wait for.
    pub fn reset(&self) {
        self.listed.store(0, Ordering::Relaxed);
        self.total.store(usize::MAX, Ordering::Relaxed);
    }
    /// Ready once `total` watches have listed.
    pub fn expect(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
    }
    /// One more watch has its initial listing.
    pub fn listed(&self) {
        self.listed.fetch_add(1, Ordering::Relaxed);
    }
    /// Every expected watch has listed.
    pub fn ready(&self) -> bool {
        self.listed.load(Ordering::Relaxed) >= self.total.load(Ordering::Relaxed)
    }
}

/// Shared state of the HTTP listener.
#[derive(Debug)]
pub struct Shared {
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
    pub fn new(readmodel: Arc<ReadModel>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Shared {
            readmodel,
            metrics,
            callbacks: Arc::default(),
            readiness: Arc::default(),
            about: Default::default(),
        })
    }

    /// Every watch has finished its initial listing.
    pub fn ready(&self) -> bool {
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
}

impl Shared {
    /// Edits what the dashboard's about page shows.
    pub fn set_about(&self, edit: impl FnOnce(&mut operon_dashboard::About)) {
        edit(&mut self.about.write_locked());
    }
}
