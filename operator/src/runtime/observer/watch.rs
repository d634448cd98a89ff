//! The watches of `operon dashboard`: the served objects, read into the [`Store`] as they change,
//! and the Events about them.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};

use super::Store;
use crate::core::views::{Storages, observe};
use crate::runtime::events;

/// Watches the objects of `resource` in `namespace` (all when `None`) into `store`.
pub(super) async fn objects(
    store: Arc<Store>,
    storages: Arc<Storages>,
    resource: String,
    namespace: Option<String>,
    api: Api<DynamicObject>,
) {
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<HashSet<String>> = None;
    let mut counted = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(%resource, ?namespace, error = %err, "The watch failed; retrying with backoff.");
                continue;
            }
        };
        let read = |obj: &DynamicObject| match serde_json::to_value(obj) {
            Ok(body) => Some(observe(&resource, &body, &storages, Timestamp::now())),
            Err(err) => {
                tracing::error!(error = %err, "Cannot serialise a watched object.");
                None
            }
        };
        match event {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(observed) = read(&obj) {
                    if let Some(listed) = listing.as_mut() {
                        listed.insert(observed.key());
                    }
                    store.apply(observed);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = listing.take() {
                    store.sweep(&resource, namespace.as_deref(), &listed);
                }
                if !counted {
                    counted = true;
                    store.listed_once();
                }
            }
            watcher::Event::Apply(obj) => {
                if let Some(observed) = read(&obj) {
                    store.apply(observed);
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(observed) = read(&obj) {
                    store.remove(&observed.key());
                }
            }
        }
    }
}

/// Whether an Event is about an object of one of `kinds` (`(group, kind)`).
pub(super) fn is_about(event: &Event, kinds: &[(String, String)]) -> bool {
    let object = &event.involved_object;
    let group = object
        .api_version
        .as_deref()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(group, _)| group);
    kinds
        .iter()
        .any(|(g, k)| g == group && Some(k.as_str()) == object.kind.as_deref())
}

/// Watches the Events about objects of `kinds` (`(group, kind)`) into `store`.
pub(super) async fn events(store: Arc<Store>, kinds: Vec<(String, String)>, api: Api<Event>) {
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitApply(e) | watcher::Event::Apply(e)) if is_about(&e, &kinds) => {
                if let Some((uid, id, view)) = events::view_of(&e) {
                    store.event(&uid, &id, view);
                }
            }
            Ok(watcher::Event::Delete(e)) if is_about(&e, &kinds) => {
                if let Some((uid, id, _)) = events::view_of(&e) {
                    store.forget_event(&uid, &id);
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "The watch of Events failed; retrying with backoff.");
            }
        }
    }
}
