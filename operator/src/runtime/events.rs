//! Posting Kubernetes Events, shaped as Kopf posts them (`kopf._core.engines.posting`).

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::core::views::{self, EventView, StoredEvent};
use crate::runtime::context::Context;

/// Kopf cuts messages to 1024 characters, with `...` in the middle.
const MAX_MESSAGE_LENGTH: usize = 1024;

fn cut(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    if chars.len() <= MAX_MESSAGE_LENGTH {
        return message.to_owned();
    }
    let keep = MAX_MESSAGE_LENGTH - 3;
    let head: String = chars[..keep / 2].iter().collect();
    let tail: String = chars[chars.len() - (keep - keep / 2)..].iter().collect();
    format!("{head}...{tail}")
}

/// The object an Event is about, as Kopf's `build_object_reference` gives it: `about` is either a
/// whole object (name, uid, namespace under `metadata`) or a flat reference (`{apiVersion, kind,
/// name, uid, namespace}`, what Kopf's SDKs send for `kopf.event()` about another object).
pub fn reference(about: &Value) -> Value {
    let from = about
        .get("metadata")
        .filter(|m| m.is_object())
        .unwrap_or(about);
    json!({
        "apiVersion": about.get("apiVersion"),
        "kind": about.get("kind"),
        "name": from.get("name"),
        "uid": from.get("uid"),
        "namespace": from.get("namespace"),
    })
}

/// The Event object Kopf would post about `about` (an object or a flat reference, see
/// [`reference`]).
pub fn build(
    about: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Value {
    let involved = reference(about);
    let namespace = involved
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let second = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "generateName": "kopf-event-"},
        "action": "Action?",
        "type": type_,
        "reason": reason,
        "message": cut(message),
        "reportingComponent": "kopf",
        "reportingInstance": "dev",
        "source": {"component": "kopf"},
        "firstTimestamp": second.to_string(),
        "lastTimestamp": second.to_string(),
        "eventTime": format!("{}", now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")),
        "involvedObject": involved,
    })
}

/// An Event's fields as the views read them.
pub fn stored(event: &Event) -> StoredEvent {
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
pub fn view_of(event: &Event) -> Option<(String, String, EventView)> {
    views::event_view(stored(event))
}

/// Posts an Event about `about` (and keeps it for the dashboard's object page); returns whether
/// it was accepted. Failures are logged, never raised: an Event is worth less than the cycle
/// that wanted to post it.
pub async fn post(env: &Context, about: &Value, type_: &str, reason: &str, message: &str) -> bool {
    let to = Poster {
        client: &env.client,
        metrics: &env.metrics,
        readmodel: &env.readmodel,
    };
    post_to(&to, about, type_, reason, message).await
}

/// What posting an Event needs: the client, the metrics, and the read model that keeps it.
#[derive(Clone, Copy)]
pub struct Poster<'a> {
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
pub async fn post_to(
    env: &Poster<'_>,
    about: &Value,
    type_: &str,
    reason: &str,
    message: &str,
) -> bool {
    if about.get("kind").and_then(Value::as_str) == Some("Event") {
        return false; // never post events about events
    }
    let event = build(about, type_, reason, message, jiff::Timestamp::now());
    let namespace = event["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
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

    #[test]
    fn events_about_a_flat_reference_name_that_object() {
        // What `kopf.event(kopf.build_object_reference(owner), …)` sends: no `metadata`.
        let flat = json!({"apiVersion": "batch/v1", "kind": "Job", "name": "j",
            "uid": "u2", "namespace": "jobs"});
        let now: jiff::Timestamp = "2026-11-22T01:02:03Z".parse().unwrap();
        let e = build(&flat, "Normal", "Owner", "hello", now);
        assert_eq!(e["metadata"]["namespace"], "jobs");
        assert_eq!(
            e["involvedObject"],
            json!({"apiVersion": "batch/v1", "kind": "Job", "name": "j",
                "uid": "u2", "namespace": "jobs"})
        );
    }

    #[test]
    fn events_are_shaped_as_kopf_posts_them() {
        let about = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u1"}});
        let now: jiff::Timestamp = "2026-11-22T01:02:03.456789Z".parse().unwrap();
        let e = build(&about, "Normal", "Logging", "hello", now);
        assert_eq!(
            e["metadata"],
            json!({"namespace": "ns", "generateName": "kopf-event-"})
        );
        assert_eq!(e["source"], json!({"component": "kopf"}));
        assert_eq!(e["reportingComponent"], "kopf");
        assert_eq!(e["involvedObject"]["uid"], "u1");
        assert_eq!(e["eventTime"], "2026-11-22T01:02:03.456789Z");
        assert_eq!(e["firstTimestamp"], "2026-11-22T01:02:03Z");
    }

    #[test]
    fn long_messages_are_cut_in_the_middle() {
        let long = "a".repeat(600) + &"b".repeat(600);
        let cut = cut(&long);
        assert_eq!(cut.chars().count(), 1024);
        assert!(cut.starts_with('a') && cut.ends_with('b') && cut.contains("..."));
    }
}
