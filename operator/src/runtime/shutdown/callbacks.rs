//! Where the HTTP listener finds the shutdown hooks: the registry of the running sync
//! controllers' hooks, by the parent's resource.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Answer, Shutdown};
use crate::runtime::kit::LockedRw;

/// The shutdown hooks of the running sync controllers, by the parent's resource
/// ([`decide::resource_segment`]): where the listener sends callbacks.
#[derive(Debug, Default)]
pub(crate) struct Callbacks {
    targets: RwLock<HashMap<String, HashMap<String, Arc<Shutdown>>>>,
}

impl Callbacks {
    /// Registers (or replaces, after a reload) the hook of one sync registration.
    pub(crate) fn register(&self, hook: Arc<Shutdown>) {
        let mut targets = self.targets.write_locked();
        targets
            .entry(hook.resource.clone())
            .or_default()
            .insert(hook.sync_id.clone(), hook);
    }

    /// Handles `PUT /api/v1/shutdown/<resource>/<namespace>/<name>` with `body`.
    pub(crate) async fn callback(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        body: &[u8],
    ) -> Answer {
        let hooks: Vec<Arc<Shutdown>> = self
            .targets
            .read_locked()
            .get(resource)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let Some(first) = hooks.first() else {
            return Answer::Unknown(format!("no shutdown hook is served for {resource:?}"));
        };
        let answer = first.confirm(namespace, name, body).await;
        if answer == Answer::Confirmed {
            for other in &hooks[1..] {
                other.wake(namespace, name);
            }
        }
        answer
    }
}
