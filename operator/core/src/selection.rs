//! Which handlers a cycle runs: Kopf's `ChangingRegistry.iter_handlers`, `match` and `prematch`,
//! over the declarative filters. Callback filters (Python `when=`) are the service's business:
//! it answers "not matched" at call time.

use serde_json::Value;

use crate::model::{Handler, HandlerKind, Reason, ValueFilter};

/// The parts of a changing cause that selection looks at.
#[derive(Debug, Clone, Copy)]
pub struct CauseView<'a> {
    /// The cycle's reason.
    pub reason: Reason,
    /// The first cycle of an object from the initial listing (resume handlers are mixed in).
    pub initial: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleted: bool,
    /// The whole object.
    pub body: &'a Value,
    /// The old essence (the diff-base), if any.
    pub old: Option<&'a Value>,
    /// The new essence.
    pub new: Option<&'a Value>,
}

/// Kopf's registration attributes, derived from the handler kind.
struct Traits {
    reason: Option<Reason>,
    initial: bool,
    field_needs_change: bool,
}

fn traits(handler: &Handler) -> Option<Traits> {
    let (reason, initial, field_needs_change) = match handler.kind {
        HandlerKind::Create => (Some(Reason::Create), false, false),
        HandlerKind::Update => (Some(Reason::Update), false, true),
        HandlerKind::Delete => (Some(Reason::Delete), false, false),
        HandlerKind::Resume => (None, true, false),
        HandlerKind::Field => (None, false, true),
        HandlerKind::Event | HandlerKind::Timer | HandlerKind::Daemon | HandlerKind::Index => {
            return None;
        }
    };
    Some(Traits {
        reason,
        initial,
        field_needs_change,
    })
}

/// The change handlers to run in a cycle, in registration order.
pub fn select<'h>(handlers: &'h [Handler], cause: &CauseView<'_>) -> Vec<&'h Handler> {
    handlers
        .iter()
        .filter(|handler| {
            let Some(t) = traits(handler) else {
                return false;
            };
            if t.reason.is_some_and(|r| r != cause.reason) {
                return false;
            }
            if t.initial && !cause.initial {
                return false; // resume handlers only in the first cycle after the start
            }
            if t.initial && cause.deleted && !handler.options.deleted {
                return false; // nor for deleted objects, unless asked for
            }
            prematch(handler, cause) && matches_field_changes(handler, &t, cause)
        })
        .collect()
}

/// Whether any change handler could ever apply to this object (Kopf's `prematch`): when none
/// can, the object is left alone — no diff-base, no log lines.
pub fn any_prematch(handlers: &[Handler], cause: &CauseView<'_>) -> bool {
    handlers
        .iter()
        .any(|h| traits(h).is_some() && prematch(h, cause))
}

/// Whether the object needs our finalizer: a non-optional delete handler matches it.
///
/// # Caveats
/// Callback filters cannot be evaluated here; a delete handler with callback filters counts as
/// matching (the finalizer is held, and the handler may then answer "not matched").
pub fn requires_finalizer(handlers: &[Handler], cause: &CauseView<'_>) -> bool {
    handlers
        .iter()
        .any(|h| h.kind == HandlerKind::Delete && !h.options.optional && prematch(h, cause))
}

fn prematch(handler: &Handler, cause: &CauseView<'_>) -> bool {
    let meta = cause.body.get("metadata");
    matches_metadata(&handler.filters.labels, meta.and_then(|m| m.get("labels")))
        && matches_metadata(
            &handler.filters.annotations,
            meta.and_then(|m| m.get("annotations")),
        )
        && matches_field_values(handler, cause)
}

fn matches_metadata(
    pattern: &std::collections::BTreeMap<String, ValueFilter>,
    content: Option<&Value>,
) -> bool {
    pattern.iter().all(|(key, filter)| {
        let value = content.and_then(|c| c.get(key));
        passes(filter, value)
    })
}

/// Kopf's value test: PRESENT, ABSENT, or equality (an absent value equals nothing).
fn passes(filter: &ValueFilter, value: Option<&Value>) -> bool {
    match filter {
        ValueFilter::Present => value.is_some(),
        ValueFilter::Absent => value.is_none(),
        ValueFilter::Equals(expected) => value == Some(expected),
    }
}

fn matches_field_values(handler: &Handler, cause: &CauseView<'_>) -> bool {
    let Some(field) = &handler.filters.field else {
        return true;
    };
    let old = lookup(cause.old, field);
    let new = lookup(cause.new, field);
    let values = [new, old];
    match &handler.filters.value {
        None | Some(ValueFilter::Present) => values.iter().any(Option::is_some),
        Some(filter) => values.iter().any(|v| passes(filter, *v)),
    }
}

fn matches_field_changes(handler: &Handler, t: &Traits, cause: &CauseView<'_>) -> bool {
    let Some(field) = &handler.filters.field else {
        return true;
    };
    let old = lookup(cause.old, field);
    let new = lookup(cause.new, field);
    (!t.field_needs_change || old != new)
        && handler.filters.old.as_ref().is_none_or(|f| passes(f, old))
        && handler.filters.new.as_ref().is_none_or(|f| passes(f, new))
}

/// The value at a dotted path, if every step exists (Kopf's `dicts.resolve`).
pub fn lookup<'v>(value: Option<&'v Value>, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value?, |v, key| v.get(key.as_str()))
}

/// Whether an event handler, a timer or a daemon matches an object (its field filter looks at the
/// body).
pub fn body_matches(handler: &Handler, cause: &CauseView<'_>) -> bool {
    let meta = cause.body.get("metadata");
    let field_ok = match &handler.filters.field {
        None => true,
        Some(field) => {
            let value = lookup(Some(cause.body), field);
            match &handler.filters.value {
                None | Some(ValueFilter::Present) => value.is_some(),
                Some(filter) => passes(filter, value),
            }
        }
    };
    matches!(
        handler.kind,
        HandlerKind::Event | HandlerKind::Timer | HandlerKind::Daemon
    ) && field_ok
        && matches_metadata(&handler.filters.labels, meta.and_then(|m| m.get("labels")))
        && matches_metadata(
            &handler.filters.annotations,
            meta.and_then(|m| m.get("annotations")),
        )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Filters, Options};

    fn handler(id: &str, kind: HandlerKind) -> Handler {
        Handler {
            id: id.into(),
            kind,
            filters: Filters::default(),
            has_callback_filters: false,
            options: Options::default(),
        }
    }

    fn field(mut h: Handler, path: &str) -> Handler {
        h.filters.field = Some(path.split('.').map(String::from).collect());
        h
    }

    fn ids(selected: Vec<&Handler>) -> Vec<&str> {
        selected.iter().map(|h| h.id.as_str()).collect()
    }

    fn view<'a>(
        reason: Reason,
        body: &'a Value,
        old: Option<&'a Value>,
        new: &'a Value,
    ) -> CauseView<'a> {
        CauseView {
            reason,
            initial: false,
            deleted: false,
            body,
            old,
            new: Some(new),
        }
    }

    #[test]
    fn handlers_follow_their_reason_and_resume_only_initially() {
        let all = [
            handler("c", HandlerKind::Create),
            handler("u", HandlerKind::Update),
            handler("d", HandlerKind::Delete),
            handler("r", HandlerKind::Resume),
            handler("e", HandlerKind::Event),
        ];
        let body = json!({"spec": {"x": 1}});
        let create = view(Reason::Create, &body, None, &body);
        assert_eq!(ids(select(&all, &create)), ["c"]);
        let update = CauseView {
            initial: true,
            ..view(Reason::Update, &body, Some(&body), &body)
        };
        assert_eq!(ids(select(&all, &update)), ["u", "r"]);
        let deleting = CauseView {
            initial: true,
            deleted: true,
            ..view(Reason::Delete, &body, Some(&body), &body)
        };
        assert_eq!(ids(select(&all, &deleting)), ["d"]);
        let mut resume_deleted = handler("r2", HandlerKind::Resume);
        resume_deleted.options.deleted = true;
        assert_eq!(ids(select(&[resume_deleted], &deleting)), ["r2"]);
    }

    #[test]
    fn field_handlers_fire_only_when_their_field_changed_including_creation() {
        let all = [field(handler("f", HandlerKind::Field), "spec.field")];
        let old = json!({"spec": {"field": "a", "other": 1}});
        let same = json!({"spec": {"field": "a", "other": 2}});
        let changed = json!({"spec": {"field": "b"}});
        assert!(select(&all, &view(Reason::Update, &same, Some(&old), &same)).is_empty());
        assert_eq!(
            ids(select(
                &all,
                &view(Reason::Update, &changed, Some(&old), &changed)
            )),
            ["f"]
        );
        // absent -> value on creation counts as a change
        assert_eq!(
            ids(select(
                &all,
                &view(Reason::Create, &changed, None, &changed)
            )),
            ["f"]
        );
    }

    #[test]
    fn old_and_new_filters_apply_to_the_field_values() {
        let mut h = field(handler("u", HandlerKind::Update), "spec.field");
        h.filters.old = Some(ValueFilter::Equals(json!("a")));
        h.filters.new = Some(ValueFilter::Equals(json!("b")));
        let all = [h];
        let old = json!({"spec": {"field": "a"}});
        let to_b = json!({"spec": {"field": "b"}});
        let to_c = json!({"spec": {"field": "c"}});
        assert_eq!(
            ids(select(
                &all,
                &view(Reason::Update, &to_b, Some(&old), &to_b)
            )),
            ["u"]
        );
        assert!(select(&all, &view(Reason::Update, &to_c, Some(&old), &to_c)).is_empty());
    }

    #[test]
    fn label_filters_support_values_presence_and_absence() {
        let mut h = handler("c", HandlerKind::Create);
        h.filters
            .labels
            .insert("app".into(), ValueFilter::Equals(json!("web")));
        h.filters.labels.insert("skip".into(), ValueFilter::Absent);
        let all = [h];
        let yes = json!({"metadata": {"labels": {"app": "web"}}});
        let wrong = json!({"metadata": {"labels": {"app": "db"}}});
        let skipped = json!({"metadata": {"labels": {"app": "web", "skip": ""}}});
        assert_eq!(
            ids(select(&all, &view(Reason::Create, &yes, None, &yes))),
            ["c"]
        );
        assert!(select(&all, &view(Reason::Create, &wrong, None, &wrong)).is_empty());
        assert!(select(&all, &view(Reason::Create, &skipped, None, &skipped)).is_empty());
    }

    #[test]
    fn only_mandatory_matching_delete_handlers_require_the_finalizer() {
        let body = json!({"metadata": {"labels": {"app": "web"}}});
        let cause = view(Reason::Create, &body, None, &body);
        let mut optional = handler("d", HandlerKind::Delete);
        optional.options.optional = true;
        assert!(!requires_finalizer(&[optional], &cause));
        assert!(requires_finalizer(
            &[handler("d", HandlerKind::Delete)],
            &cause
        ));
        let mut other = handler("d", HandlerKind::Delete);
        other
            .filters
            .labels
            .insert("app".into(), ValueFilter::Equals(json!("db")));
        assert!(!requires_finalizer(&[other], &cause));
        assert!(!requires_finalizer(
            &[handler("c", HandlerKind::Create)],
            &cause
        ));
    }
}
