//! Posting Kubernetes Events, shaped as Kopf posts them (`kopf._core.engines.posting`).

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;

pub(crate) use crate::core::events::{build, reference};
use crate::core::events::{namespace_of, postable};
use crate::core::views::{self, EventView, StoredEvent};
use crate::runtime::context::Context;

/// An Event's fields as the views read them.
pub(crate) fn stored(event: &Event) -> StoredEvent {
    StoredEvent {
        about: event.involved_object.uid.clone(),
        uid: event.metadata.uid.clone(),
        name: event.metadata.name.clone(),
        last_timestamp: event.last_timestamp.as_ref().map(|t| t.0),
        event_time: event.event_time.as_ref().map(|t| t.0),
        first_timestamp: event.first_timestamp.as_ref().map(|t| t.0),
        created: event.metadata.creation_timestamp.as_ref().map(|t| t.0),
        series_count: event.series.as_ref().and_then(|s| s.count),
        count: event.count,
        type_: event.type_.clone(),
        reason: event.reason.clone(),
        message: event.message.clone(),
    }
}

/// An Event as the dashboard shows it, with the uid of the object it is about and its own id
/// (see [`views::event_view`]).
pub(crate) fn view_of(event: &Event) -> Option<(String, String, EventView)> {
    views::event_view(stored(event))
}

/// Posts an Event about `about` (and keeps it for the dashboard's object page); returns whether
/// it was accepted. Failures are logged, never raised: an Event is worth less than the cycle
/// that wanted to post it.
pub(crate) async fn post(
    env: &Context,
    about: &Value,
    type_: &str,
    reason: &str,
    message: &str,
) -> bool {
    let to = Poster {
        client: &env.client,
        metrics: &env.metrics,
        readmodel: &env.readmodel,
    };
    post_to(&to, about, type_, reason, message).await
}

/// What posting an Event needs: the client, the metrics, and the read model that keeps it.
#[derive(Clone, Copy)]
pub(crate) struct Poster<'a> {
    /// The API client.
    pub client: &'a kube::Client,
    /// Metrics (API writes).
    pub metrics: &'a crate::runtime::metrics::Metrics,
    /// The read model (the dashboard's object page shows the Event).
    pub readmodel: &'a crate::runtime::readmodel::ReadModel,
}

impl std::fmt::Debug for Poster<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster").finish_non_exhaustive()
    }
}

/// [`post`] for callers without a [`Context`] (the sync controllers).
pub(crate) async fn post_to(
    env: &Poster<'_>,
    about: &Value,
    type_: &str,
    reason: &str,
    message: &str,
) -> bool {
    if !postable(about) {
        return false; // never post events about events
    }
    let event = build(about, type_, reason, message, jiff::Timestamp::now());
    let namespace = namespace_of(&event["metadata"]);
    let event: Event = match serde_json::from_value(event) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(error = %err, "Cannot build an Event.");
            return false;
        }
    };
    let api: Api<Event> = Api::namespaced(env.client.clone(), &namespace);
    let params = PostParams::default();
    match crate::telemetry::api_write("post", api.create(&params, &event)).await {
        Ok(posted) => {
            env.metrics.api("post", 201);
            if let Some((_, _, view)) = view_of(&posted) {
                let involved = reference(about);
                let uid = involved.get("uid").and_then(Value::as_str);
                env.readmodel.add_event(uid.unwrap_or_default(), view);
            }
            true
        }
        Err(err) => {
            env.metrics
                .api("post", crate::runtime::kit::status_code(&err));
            tracing::warn!(error = %err, reason, "Failed to post an Event.");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_read_from_the_api_object() {
        let e: Event = serde_json::from_value(json!({
            "metadata": {"name": "kopf-event-x", "namespace": "ns", "uid": "e-1",
                "creationTimestamp": "2026-01-02T03:00:00Z"},
            "involvedObject": {"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "uid": "u-1", "name": "ex1"},
            "type": "Error", "reason": "Logging", "message": "Handler 'a' succeeded.",
            "lastTimestamp": "2026-01-02T03:04:05Z", "count": 2,
            "eventTime": "2026-01-02T03:04:04.500000Z", "firstTimestamp": "2026-01-02T03:04:01Z",
            "series": {"count": 7, "lastObservedTime": "2026-01-02T03:04:05.000000Z"},
        }))
        .unwrap();
        let at = |t: &str| t.parse::<jiff::Timestamp>().ok();
        assert_eq!(
            stored(&e),
            StoredEvent {
                about: Some("u-1".into()),
                uid: Some("e-1".into()),
                name: Some("kopf-event-x".into()),
                last_timestamp: at("2026-01-02T03:04:05Z"),
                event_time: at("2026-01-02T03:04:04.5Z"),
                first_timestamp: at("2026-01-02T03:04:01Z"),
                created: at("2026-01-02T03:00:00Z"),
                series_count: Some(7),
                count: Some(2),
                type_: Some("Error".into()),
                reason: Some("Logging".into()),
                message: Some("Handler 'a' succeeded.".into()),
            }
        );
        let (about, id, view) = view_of(&e).unwrap();
        assert_eq!((about.as_str(), id.as_str()), ("u-1", "e-1"));
        assert_eq!(view.time, "2026-01-02T03:04:05Z");
        assert_eq!((view.type_.as_str(), view.count), ("Error", 7));
    }
}
