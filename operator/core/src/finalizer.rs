//! Our finalizer on an object: whether it is there, and the JSON patches that add or remove it,
//! guarded by a resourceVersion `test` so that another controller's concurrent change makes the
//! patch fail (422) instead of being clobbered (Kopf 1.44+, PR #1252).

use serde_json::{Value, json};

/// Kopf's default finalizer.
pub const DEFAULT_FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";

fn finalizers(body: &Value) -> &[Value] {
    body.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `metadata.deletionTimestamp` is set.
pub fn deletion_ongoing(body: &Value) -> bool {
    body.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// Our finalizer is on the object.
pub fn is_blocked(body: &Value, finalizer: &str) -> bool {
    finalizers(body).iter().any(|f| f == finalizer)
}

fn rv_test(body: &Value) -> Value {
    json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": body.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null),
    })
}

/// The JSON patch that adds `finalizer`, or `None` when it is already there.
pub fn block_deletion(body: &Value, finalizer: &str) -> Option<Value> {
    if is_blocked(body, finalizer) {
        return None;
    }
    let add = if body
        .pointer("/metadata/finalizers")
        .is_some_and(Value::is_array)
    {
        json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
    } else {
        json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
    };
    Some(json!([rv_test(body), add]))
}

/// The JSON patch that removes `finalizer` (every occurrence), or `None` when it is not there.
/// Other finalizers are never touched.
pub fn allow_deletion(body: &Value, finalizer: &str) -> Option<Value> {
    let mut ops = vec![rv_test(body)];
    // Remove from the end so that the indices stay valid.
    for (i, f) in finalizers(body).iter().enumerate().rev() {
        if f == finalizer {
            ops.push(json!({"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": finalizer}));
            ops.push(json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")}));
        }
    }
    (ops.len() > 1).then(|| Value::Array(ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = DEFAULT_FINALIZER;

    #[test]
    fn adding_creates_the_list_or_appends_and_tests_the_resource_version() {
        let bare = json!({"metadata": {"resourceVersion": "7"}});
        assert_eq!(
            block_deletion(&bare, F).unwrap(),
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "add", "path": "/metadata/finalizers", "value": [F]}
            ])
        );
        let other = json!({"metadata": {"resourceVersion": "8", "finalizers": ["x/y"]}});
        assert_eq!(
            block_deletion(&other, F).unwrap()[1],
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": F})
        );
        let ours = json!({"metadata": {"finalizers": [F]}});
        assert!(block_deletion(&ours, F).is_none());
    }

    #[test]
    fn removing_touches_only_our_entry() {
        let body = json!({"metadata": {"resourceVersion": "9", "finalizers": ["a", F, "b"]}});
        let patch = allow_deletion(&body, F).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "9"},
                {"op": "test", "path": "/metadata/finalizers/1", "value": F},
                {"op": "remove", "path": "/metadata/finalizers/1"}
            ])
        );
        assert!(allow_deletion(&json!({"metadata": {"finalizers": ["a"]}}), F).is_none());
    }

    #[test]
    fn deletion_state() {
        let body =
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": [F]}});
        assert!(deletion_ongoing(&body) && is_blocked(&body, F));
        assert!(!deletion_ongoing(&json!({"metadata": {}})));
    }
}
