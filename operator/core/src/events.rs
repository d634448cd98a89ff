//! Kubernetes Events as Kopf posts them (`kopf._core.engines.posting`): the object an Event is
//! about, the Event itself (its message cut to Kopf's length), and which Events are never posted.
//! The runtime (`runtime::events`) sends them.

use serde_json::{Value, json};

/// Kopf cuts messages to 1024 characters, with `...` in the middle.
pub const MAX_MESSAGE_LENGTH: usize = 1024;

/// The message cut as Kopf cuts it: at most [`MAX_MESSAGE_LENGTH`] characters, the middle
/// replaced by `...`.
pub fn cut(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    if chars.len() <= MAX_MESSAGE_LENGTH {
        return message.to_owned();
    }
    let keep = MAX_MESSAGE_LENGTH - 3;
    let head: String = chars[..keep / 2].iter().collect();
    let tail: String = chars[chars.len() - (keep - keep / 2)..].iter().collect();
    format!("{head}...{tail}")
}

/// Whether an Event about `about` is posted at all: never about an Event (that would loop).
pub fn postable(about: &Value) -> bool {
    about.get("kind").and_then(Value::as_str) != Some("Event")
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

/// The namespace an Event about the object `reference` names is posted in (`default` for a
/// cluster-wide object).
pub fn namespace_of(reference: &Value) -> String {
    reference
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned()
}

/// The Event object Kopf would post about `about` (an object or a flat reference, see
/// [`reference()`]) at `now`.
pub fn build(
    about: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Value {
    let involved = reference(about);
    let namespace = namespace_of(&involved);
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cluster_wide_objects_get_their_events_in_default() {
        let about = json!({"kind": "Namespace", "metadata": {"name": "n", "uid": "u"}});
        let now: jiff::Timestamp = "2026-11-22T01:02:03Z".parse().unwrap();
        assert_eq!(
            build(&about, "Normal", "R", "m", now)["metadata"]["namespace"],
            "default"
        );
    }

    #[test]
    fn long_messages_are_cut_in_the_middle() {
        let long = "a".repeat(600) + &"b".repeat(600);
        let cut = cut(&long);
        assert_eq!(cut.chars().count(), 1024);
        assert!(cut.starts_with('a') && cut.ends_with('b') && cut.contains("..."));
        assert_eq!(super::cut("short"), "short");
    }

    #[test]
    fn events_about_events_are_never_posted() {
        assert!(!postable(&json!({"kind": "Event"})));
        assert!(postable(&json!({"kind": "ConfigMap"})));
        assert!(postable(&json!({})));
    }
}
