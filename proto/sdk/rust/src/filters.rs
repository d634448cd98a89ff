//! Filters: the declarative ones travel in the manifest and the core evaluates them; `when`
//! closures stay here and are evaluated by this service — in `Match` and before every call —
//! as the contract's callback filters (`Filters.has_callback_filters`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use operon_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::call::{Call, Head};

/// A test on one value (a label, an annotation, the value at a field): equal to a JSON literal,
/// present, or absent. Strings, numbers, booleans and [`serde_json::Value`]s convert into
/// [`Filter::Equals`].
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// The value must equal this JSON value (a label or annotation: this string).
    Equals(Value),
    /// The value must be present (any value).
    Present,
    /// The value must be absent.
    Absent,
}

impl Filter {
    pub(crate) fn to_proto(&self) -> pb::ValueFilter {
        use pb::value_filter::Test;
        pb::ValueFilter {
            test: Some(match self {
                Self::Equals(value) => Test::EqualsJson(crate::convert::to_json(value)),
                Self::Present => Test::Present(true),
                Self::Absent => Test::Absent(true),
            }),
        }
    }
}

impl From<Value> for Filter {
    fn from(value: Value) -> Self {
        Self::Equals(value)
    }
}

impl From<&str> for Filter {
    fn from(value: &str) -> Self {
        Self::Equals(Value::String(value.to_owned()))
    }
}

impl From<String> for Filter {
    fn from(value: String) -> Self {
        Self::Equals(Value::String(value))
    }
}

impl From<bool> for Filter {
    fn from(value: bool) -> Self {
        Self::Equals(Value::Bool(value))
    }
}

impl From<i64> for Filter {
    fn from(value: i64) -> Self {
        Self::Equals(Value::from(value))
    }
}

impl From<i32> for Filter {
    fn from(value: i32) -> Self {
        Self::Equals(Value::from(value))
    }
}

/// A `when` closure with its object type erased.
#[derive(Clone)]
pub(crate) struct When(Arc<dyn Fn(&Head) -> bool + Send + Sync>);

impl When {
    /// Erases `f`: the object is read as `K` for it; an object that cannot be read as `K`
    /// passes (the handler's own call then reports why it cannot read the object).
    pub(crate) fn new<K, F>(f: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(&Call<K>) -> bool + Send + Sync + 'static,
    {
        Self(Arc::new(move |head: &Head| {
            match Call::<K>::read(head.clone()) {
                Ok(call) => f(&call),
                Err(_) => true,
            }
        }))
    }

    pub(crate) fn matches(&self, head: &Head) -> bool {
        (self.0)(head)
    }
}

impl fmt::Debug for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("When(..)")
    }
}

/// The filters of one registration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    pub(crate) labels: BTreeMap<String, Filter>,
    pub(crate) annotations: BTreeMap<String, Filter>,
    pub(crate) field: Option<String>,
    pub(crate) value: Option<Filter>,
    pub(crate) old: Option<Filter>,
    pub(crate) new: Option<Filter>,
    pub(crate) when: Vec<When>,
}

impl Filters {
    /// Whether every `when` closure accepts the call (true without any).
    pub(crate) fn matches(&self, head: &Head) -> bool {
        self.when.iter().all(|when| when.matches(head))
    }

    /// The declarative part for the manifest, with `has_callback_filters` when there are
    /// `when` closures.
    pub(crate) fn to_proto(&self) -> pb::Filters {
        let map = |m: &BTreeMap<String, Filter>| {
            m.iter().map(|(k, f)| (k.clone(), f.to_proto())).collect()
        };
        pb::Filters {
            labels: map(&self.labels),
            annotations: map(&self.annotations),
            field: self.field.clone().unwrap_or_default(),
            value: self.value.as_ref().map(Filter::to_proto),
            old: self.old.as_ref().map(Filter::to_proto),
            new: self.new.as_ref().map(Filter::to_proto),
            has_callback_filters: !self.when.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::call::tests::head;

    #[test]
    fn declarative_filters_in_the_manifest() {
        let mut filters = Filters::default();
        filters.labels.insert("app".into(), "web".into());
        filters.labels.insert("tier".into(), Filter::Present);
        filters.annotations.insert("skip".into(), Filter::Absent);
        filters.field = Some("spec.size".into());
        filters.value = Some(3.into());
        let proto = filters.to_proto();
        use pb::value_filter::Test;
        assert_eq!(
            proto.labels["app"].test,
            Some(Test::EqualsJson(br#""web""#.to_vec()))
        );
        assert_eq!(proto.labels["tier"].test, Some(Test::Present(true)));
        assert_eq!(proto.annotations["skip"].test, Some(Test::Absent(true)));
        assert_eq!(proto.field, "spec.size");
        assert_eq!(
            proto.value.unwrap().test,
            Some(Test::EqualsJson(b"3".to_vec()))
        );
        assert!(!proto.has_callback_filters);
    }

    #[derive(serde::Deserialize)]
    struct Widget {
        spec: Spec,
    }

    #[derive(serde::Deserialize)]
    struct Spec {
        size: u32,
    }

    #[test]
    fn when_closures_are_callback_filters() {
        let mut filters = Filters::default();
        filters
            .when
            .push(When::new(|call: &Call<Widget>| call.object().spec.size > 2));
        assert!(filters.to_proto().has_callback_filters);
        assert!(filters.matches(&head(json!({"spec": {"size": 3}}))));
        assert!(!filters.matches(&head(json!({"spec": {"size": 1}}))));
        // An object the closure's type cannot read passes: the call itself says why.
        assert!(filters.matches(&head(json!({"spec": {}}))));
        filters
            .when
            .push(When::new(|call: &Call<Value>| call.name() == Some("a")));
        assert!(!filters.matches(&head(json!({"spec": {"size": 3}}))));
        assert!(filters.matches(&head(
            json!({"metadata": {"name": "a"}, "spec": {"size": 3}})
        )));
    }
}
