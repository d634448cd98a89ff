//! [`Ctx`]: what a change, event, timer or admission handler gets — the call ([`Call`], by
//! `Deref`) and the effects it asks the core to perform: a merge patch, Events, sub-handlers,
//! warnings for the user whose request is under review.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use operon_proto::v1 as pb;
use serde_json::Value;
use tracing::Instrument as _;

use crate::call::Call;
use crate::error::{HandlerError, HandlerResult};
use crate::lock::lock;
use crate::options::SubhandlerOptions;
use crate::subhandlers::{self, SubState};

/// The type of a Kubernetes Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something went as expected.
    Normal,
    /// Something needs attention.
    Warning,
    /// Something failed (Kopf's `exception()`; posted as a Warning by the core).
    Error,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
            Self::Error => "Error",
        }
    }
}

/// An Event about the handled object, in the contract's form.
pub(crate) fn event(type_: EventType, reason: &str, message: &str) -> pb::Event {
    pb::Event {
        r#type: type_.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        involved_object_json: Vec::new(),
    }
}

/// Lays the JSON merge patch `patch` over `into` (objects key by key; `null`s kept, as they
/// delete in the final patch).
pub(crate) fn merge_patch(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (key, value) in patch {
                match into.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_patch(existing, value);
                    }
                    _ => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, patch) => *into = patch,
    }
}

/// What one call asks the core to do besides its outcome; shared by the handler and its
/// sub-handlers.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) patch: Option<Value>,
    pub(crate) events: Vec<pb::Event>,
    pub(crate) subhandlers: Vec<pb::SubhandlerOutcome>,
    pub(crate) warnings: Vec<String>,
    seen: HashSet<String>,
}

/// One handler's (or sub-handler's) own bookkeeping of its sub-handlers.
#[derive(Debug)]
pub(crate) struct Level {
    allows_subhandlers: bool,
    unfinished: Mutex<Vec<Duration>>,
    misuse: Mutex<Option<String>>,
}

impl Level {
    pub(crate) fn new(allows_subhandlers: bool) -> Arc<Self> {
        Arc::new(Self {
            allows_subhandlers,
            unfinished: Mutex::default(),
            misuse: Mutex::default(),
        })
    }

    fn misused(&self, message: String) {
        lock(&self.misuse).get_or_insert(message);
    }

    /// The outcome of the handler of this level, whose body returned `result`.
    pub(crate) fn outcome(&self, result: HandlerResult) -> pb::outcome::Result {
        let unfinished = lock(&self.unfinished).clone();
        subhandlers::outcome(result, &unfinished, lock(&self.misuse).take())
    }
}

/// Runs a handler's future: a panic becomes an error of type `panic`.
pub(crate) async fn catching<T, Fut>(future: Fut) -> Result<T, HandlerError>
where
    Fut: Future<Output = Result<T, HandlerError>>,
{
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the handler panicked".to_owned());
            Err(HandlerError::other("panic", message))
        }
    }
}

/// What a change handler (create, update, delete, resume, field), an event handler, a timer or
/// an admission handler (validate, mutate) gets: the call — the typed object, old/new/diff, the
/// retry count, the admission review… (all of [`Call`], by `Deref`) — and the means to ask the
/// core for effects: a merge patch, Events, sub-handlers, warnings.
///
/// ```
/// use operon_handler::{Ctx, EventType, HandlerResult};
/// use serde_json::{json, Value};
///
/// async fn create(ctx: Ctx<Value>) -> HandlerResult {
///     let size = ctx.object()["spec"]["size"].as_u64().unwrap_or(1);
///     ctx.patch(json!({"metadata": {"labels": {"size": size.to_string()}}}));
///     ctx.event(EventType::Normal, "Created", &format!("size {size}"));
///     tracing::info!(size, "Created.");
///     Ok(Some(json!({"size": size}))) // stored in status.<handler id>
/// }
/// ```
pub struct Ctx<K> {
    call: Call<K>,
    effects: Arc<Mutex<Effects>>,
    level: Arc<Level>,
    span: tracing::Span,
}

impl<K> Clone for Ctx<K> {
    fn clone(&self) -> Self {
        Self {
            call: self.call.clone(),
            effects: Arc::clone(&self.effects),
            level: Arc::clone(&self.level),
            span: self.span.clone(),
        }
    }
}

impl<K> std::fmt::Debug for Ctx<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl<K> Deref for Ctx<K> {
    type Target = Call<K>;

    fn deref(&self) -> &Call<K> {
        &self.call
    }
}

impl<K> Ctx<K> {
    pub(crate) fn new(
        call: Call<K>,
        effects: Arc<Mutex<Effects>>,
        level: Arc<Level>,
        span: tracing::Span,
    ) -> Self {
        Self {
            call,
            effects,
            level,
            span,
        }
    }

    /// The read-only view of the call (also reachable through `Deref`).
    pub fn call(&self) -> &Call<K> {
        &self.call
    }

    /// Adds a JSON merge patch for the handled object; the core applies the patches of a call
    /// together, in order (later ones win), in the same write as the handler's progress, whatever
    /// the outcome. Patch `status` here to write more than the handler's own result. The core
    /// refuses patches that change the object's identity (name, namespace, uid…).
    ///
    /// For a mutate handler, the patch is applied to the object under review instead (the core
    /// answers the API server with it, as a JSONPatch), unless the request is denied; a
    /// validate handler's patch is ignored.
    pub fn patch(&self, patch: Value) {
        let mut effects = lock(&self.effects);
        match &mut effects.patch {
            Some(into) => merge_patch(into, patch),
            None => effects.patch = Some(patch),
        }
    }

    /// Asks the core to post a Kubernetes Event about the handled object.
    pub fn event(&self, type_: EventType, reason: &str, message: &str) {
        lock(&self.effects)
            .events
            .push(event(type_, reason, message));
    }

    /// Adds a warning for the user who made the request under review (the AdmissionReview
    /// response's `warnings`; kubectl prints them), whether the handler admits or denies it.
    /// Validate and mutate handlers only: elsewhere there is nobody to warn, and the warnings
    /// are dropped.
    pub fn warn(&self, message: impl Into<String>) {
        lock(&self.effects).warnings.push(message.into());
    }

    /// The handler's tracing span: a child of the core's span for this call (W3C
    /// `traceparent`). The handler's future runs inside it, so `tracing::info!` and spans in the
    /// handler belong to it already; use this to parent work spawned elsewhere.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }
}

impl<K: Send + Sync + 'static> Ctx<K> {
    /// Runs a sub-handler with the default options: see [`Ctx::subhandler_with`].
    pub async fn subhandler<F, Fut>(&self, id: &str, f: F) -> SubhandlerState
    where
        F: FnOnce(Ctx<K>) -> Fut,
        Fut: Future<Output = HandlerResult>,
    {
        self.subhandler_with(id, SubhandlerOptions::default(), f)
            .await
    }

    /// Runs `f` as the sub-handler `id` of this handler (Kopf's `@kopf.subhandler`), unless it
    /// already finished or is waiting for a retry. Its progress is recorded on the object as
    /// its own handler's, `<parent id>/<id>`, and judged by the core with its own `options`.
    ///
    /// Returns where the sub-handler stands ([`SubhandlerState`]). Call it from the handler's
    /// body, once per sub-handler and call, as many as the object
    /// needs (e.g. one per item of a list in the spec); the order of the calls is the order they
    /// run in. Sub-handlers may have sub-handlers of their own. Their patches and Events join
    /// the parent's.
    ///
    /// # Guarantees
    /// When the handler returns `Ok` while any of its sub-handlers is unfinished (it failed
    /// temporarily, or waits for a retry), the answer is "sub-handlers pending": the core
    /// calls the handler again after the shortest of their delays, without counting it as a
    /// retry, and the finished sub-handlers are not run again. The handler's own result goes to
    /// `status.<id>` once all are finished. A sub-handler that failed for good counts as
    /// finished (as in Kopf).
    ///
    /// # Errors
    /// Misuse fails the handler for good (a [`crate::HandlerError::Permanent`] outcome), with a
    /// message saying what is wrong: an `id` that is empty or has a `/`, the same `id` twice in
    /// one call, or a sub-handler in an event handler or a timer (only change handlers have
    /// them, as in Kopf).
    pub async fn subhandler_with<F, Fut>(
        &self,
        id: &str,
        options: SubhandlerOptions,
        f: F,
    ) -> SubhandlerState
    where
        F: FnOnce(Ctx<K>) -> Fut,
        Fut: Future<Output = HandlerResult>,
    {
        let parent = self.call.handler_id();
        if !self.level.allows_subhandlers {
            self.level.misused(format!(
                "handler {parent:?} ran sub-handler {id:?}, but only change handlers \
                 (create, update, delete, resume, field) have sub-handlers"
            ));
            return SubhandlerState::Misused;
        }
        if id.is_empty() || id.contains('/') {
            self.level.misused(format!(
                "handler {parent:?} ran a sub-handler with the id {id:?}: sub-handler ids must \
                 be non-empty and have no '/'"
            ));
            return SubhandlerState::Misused;
        }
        let full_id = format!("{parent}/{id}");
        if !lock(&self.effects).seen.insert(full_id.clone()) {
            self.level.misused(format!(
                "handler {parent:?} ran sub-handler {id:?} twice in one call: sub-handler ids \
                 must be unique"
            ));
            return SubhandlerState::Misused;
        }
        let (retry, started) =
            match subhandlers::state(&full_id, &self.call.head.data.records, SystemTime::now()) {
                SubState::Finished => return SubhandlerState::Finished,
                SubState::Sleeping(remaining) => {
                    lock(&self.level.unfinished).push(remaining);
                    return SubhandlerState::Pending;
                }
                SubState::Due { retry, started } => (retry, started),
            };
        let span = tracing::info_span!(
            parent: &self.span,
            "subhandler",
            otel.name = format!("handler {full_id}"),
            handler.id = %full_id,
            attempt = i64::from(retry) + 1,
        );
        let level = Level::new(true);
        let ctx = Ctx {
            call: self
                .call
                .for_subhandler(Arc::from(full_id.as_str()), retry, started),
            effects: Arc::clone(&self.effects),
            level: Arc::clone(&level),
            span: span.clone(),
        };
        let result = catching(f(ctx)).instrument(span).await;
        let outcome = level.outcome(result);
        tracing::debug!(handler = %full_id, retry, outcome = crate::service::outcome_name(&outcome), "Sub-handler ran.");
        let unfinished = subhandlers::unfinished(&outcome, &options, retry);
        if let Some(delay) = unfinished {
            lock(&self.level.unfinished).push(delay);
        }
        lock(&self.effects).subhandlers.push(pb::SubhandlerOutcome {
            id: full_id,
            outcome: Some(pb::Outcome {
                result: Some(outcome),
            }),
            options: options.to_proto(),
        });
        if unfinished.is_some() {
            SubhandlerState::Pending
        } else {
            SubhandlerState::Finished
        }
    }
}

/// Where a sub-handler stands after [`Ctx::subhandler`]: what the handler may tell its own
/// answer (or its logs) by. The SDK answers "sub-handlers pending" by itself; this is for
/// information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubhandlerState {
    /// It succeeded or failed for good, in this call or an earlier one: it does not run again.
    Finished,
    /// It runs again later: it failed temporarily in this call, or waits for its retry.
    Pending,
    /// The call was a misuse (see the errors of [`Ctx::subhandler_with`]): the handler fails
    /// for good.
    Misused,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patches_deeply() {
        let mut patch = json!({"spec": {"a": 1, "b": {"c": 2}}, "status": {"x": 1}});
        merge_patch(
            &mut patch,
            json!({"spec": {"b": {"d": 3}, "e": null}, "status": "flat"}),
        );
        assert_eq!(
            patch,
            json!({"spec": {"a": 1, "b": {"c": 2, "d": 3}, "e": null}, "status": "flat"})
        );
    }
}
