//! Feeding Kopf's indexes (`@kopf.index`, performed by `runtime::indexing`): the raw event an
//! index handler is told, the body of a complete listing, the name of what was fed in the logs,
//! and the keys of one watch scope's current listing.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::outcome::CallResult;

/// The raw watch event an index handler is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An object of a (re)listing.
    Added,
    /// A new or changed object (the watch does not tell them apart).
    Modified,
    /// A deleted object.
    Deleted,
}

impl Event {
    /// The event type as the index handler is told it.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Added => "ADDED",
            Event::Modified => "MODIFIED",
            Event::Deleted => "DELETED",
        }
    }
}

/// The event type of a complete listing.
pub const LISTED: &str = "LISTED";

/// The body of a complete listing of one watch scope (`namespace`, `None` for all namespaces or
/// a cluster-wide resource): which objects exist, as `[namespace, name]` pairs.
pub fn listing_body<'a>(
    namespace: Option<&str>,
    objects: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Value {
    let objects: Vec<[&str; 2]> = objects.into_iter().map(|(ns, n)| [ns, n]).collect();
    json!({ "namespace": namespace, "objects": objects })
}

/// The name of what was fed, for the logs: `namespace/name` (`name` when cluster-wide) of an
/// object, `[namespace/](listing)` of a listing's body.
pub fn object_name(body: &Value) -> String {
    let meta = |field: &str| {
        body.pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    match (meta("namespace"), meta("name")) {
        ("", "") => body
            .get("namespace")
            .and_then(Value::as_str)
            .map_or_else(|| "(listing)".to_owned(), |ns| format!("{ns}/(listing)")),
        ("", name) => name.to_owned(),
        (ns, name) => format!("{ns}/{name}"),
    }
}

/// The message of an index handler's failure (`None`: it succeeded, or was not matched).
pub fn failure(result: Option<&CallResult>) -> Option<&str> {
    match result? {
        CallResult::Temporary { message, .. }
        | CallResult::Permanent { message }
        | CallResult::Arbitrary { message } => Some(message),
        CallResult::SubhandlersPending { .. } => Some(""),
        CallResult::Success(_) => None,
    }
}

/// What one watch scope of an indexed resource has fed: the keys of its current listing.
#[derive(Debug, Default)]
pub struct Listing {
    objects: Option<HashSet<(String, String)>>,
}

impl Listing {
    /// A (re)listing begins.
    pub fn begin(&mut self) {
        self.objects = Some(HashSet::new());
    }

    /// An object of the listing.
    pub fn add(&mut self, namespace: &str, name: &str) {
        if let Some(objects) = self.objects.as_mut() {
            objects.insert((namespace.to_owned(), name.to_owned()));
        }
    }

    /// The listing is complete: what it held, once.
    pub fn finish(&mut self) -> Option<HashSet<(String, String)>> {
        self.objects.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_handed_out_once() {
        let mut listing = Listing::default();
        listing.add("ns", "ignored-before-begin");
        listing.begin();
        listing.add("ns", "a");
        listing.add("", "b");
        let done = listing.finish().unwrap();
        assert_eq!(done.len(), 2);
        assert!(done.contains(&("ns".to_owned(), "a".to_owned())));
        assert!(listing.finish().is_none());
    }

    #[test]
    fn what_was_fed_is_named_for_the_logs() {
        assert_eq!(
            object_name(&json!({"metadata": {"namespace": "ns", "name": "a"}})),
            "ns/a"
        );
        assert_eq!(object_name(&json!({"metadata": {"name": "a"}})), "a");
        let listing = listing_body(Some("ns"), [("ns", "a")]);
        assert_eq!(
            listing,
            json!({"namespace": "ns", "objects": [["ns", "a"]]})
        );
        assert_eq!(object_name(&listing), "ns/(listing)");
        assert_eq!(object_name(&listing_body(None, [])), "(listing)");
    }

    #[test]
    fn only_errors_are_failures() {
        assert_eq!(failure(None), None);
        assert_eq!(failure(Some(&CallResult::Success(None))), None);
        let boom = CallResult::Arbitrary {
            message: "boom".into(),
        };
        assert_eq!(failure(Some(&boom)), Some("boom"));
        assert_eq!(
            failure(Some(&CallResult::SubhandlersPending { delay: None })),
            Some("")
        );
        assert_eq!(Event::Deleted.as_str(), "DELETED");
    }
}
