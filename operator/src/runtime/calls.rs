//! The calls of a change cycle and how a call is reported: a change handler's `Invoke` (and the
//! `handler` span of its attempt), the raw-event handlers, the callback-filter questions
//! (`Match`), the log line and Warning Event of a verdict, the Events a handler asks for, and
//! the write of the cycle's patch and finalizer ([`patching::write`]). Decisions come from [`crate::core::handling`]; `runtime::processing` calls this
//! module, never the other way round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;
use tracing::Instrument;

use crate::core::backoff::Backoff;
use crate::core::finalizer;
use crate::core::handling::{self, Essence, EventOutcome, Finalizer};
use crate::core::model::Reason;
use crate::core::outcome::{self, Level, Verdict};
use crate::core::patch::MergePatch;
use crate::core::selection::{self, CauseView};
use crate::core::state::{HandlerState, State};
use crate::core::views::AttemptOutcome;
use crate::runtime::context::{Bound, Context, ResourceCtx};
use crate::runtime::events;
use crate::runtime::kit::{self, meta};
use crate::runtime::patching::{self, FinalizerAction, Written};
use crate::runtime::ports::{Answer, Call, Error as DispatchError, EventRequest, SubRecord};
use crate::telemetry;

/// A per-object logger that words its lines as Kopf does, with the object as a field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Log<'a> {
    /// `namespace/name`, or `name` for a cluster-scoped object.
    pub object: &'a str,
}

impl Log<'_> {
    /// Logs at `level`.
    pub(crate) fn at(&self, level: Level, message: &str) {
        match level {
            Level::Debug => {
                tracing::debug!(target: "kopf.objects", object = self.object, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "kopf.objects", object = self.object, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "kopf.objects", object = self.object, "{message}")
            }
        }
    }

    /// Logs each line, in order.
    pub(crate) fn lines(&self, lines: &[handling::Line]) {
        for (level, message) in lines {
            self.at(*level, message);
        }
    }

    /// Logs at DEBUG.
    pub(crate) fn debug(&self, message: &str) {
        self.at(Level::Debug, message);
    }

    /// Logs at INFO.
    pub(crate) fn info(&self, message: &str) {
        self.at(Level::Info, message);
    }

    /// Logs at ERROR.
    pub(crate) fn error(&self, message: &str) {
        self.at(Level::Error, message);
    }
}

/// The `handler` span of one attempt of a change handler (id, attempt; outcome, delay and status
/// are recorded by [`record_outcome`]), linked to the span of the handler's previous attempt on
/// this object. The attempt's start is noted in the read model (traced or not).
pub(crate) fn handler_span(env: &Context, uid: &str, id: &str, retries: u32) -> tracing::Span {
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        "handler",
        otel.name = format!("handler {id}"),
        handler.id = %id,
        attempt = i64::from(retries) + 1,
        outcome = tracing::field::Empty,
        delay = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let attempts = &env.readmodel.attempts;
    if retries > 0
        && let Some(previous) = attempts.previous(uid, id)
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.add_link(previous);
    }
    let cx = telemetry::span_context(&span);
    attempts.begin(uid, id, retries, cx, Timestamp::now());
    span
}

/// Records an attempt's verdict (`None`: not matched) on its span and in the read model.
pub(crate) fn record_outcome(
    env: &Context,
    (uid, id): (&str, &str),
    span: &tracing::Span,
    verdict: Option<&Verdict>,
) {
    let Some(verdict) = verdict else {
        span.record("outcome", "not_matched");
        env.readmodel.attempts.end(
            uid,
            id,
            AttemptOutcome::NotMatched,
            None,
            None,
            Timestamp::now(),
        );
        return;
    };
    span.record("outcome", handling::outcome_label(verdict));
    if let Some(delay) = verdict.delay() {
        span.record("delay", delay.as_secs_f64());
    }
    if handling::is_error(verdict) {
        span.record("otel.status_code", "error");
    }
    let message = verdict.failure().or_else(|| verdict.message());
    env.readmodel.attempts.end(
        uid,
        id,
        AttemptOutcome::of(&verdict.outcome),
        verdict.delay(),
        message,
        Timestamp::now(),
    );
}

/// Logs a verdict, and posts the Warning Event [`handling::warning_reason`] asks for, so that
/// users see errors with `kubectl describe`.
pub(crate) async fn report(
    env: &Context,
    log: &Log<'_>,
    body: &Value,
    retries: u32,
    verdict: &Verdict,
) {
    log.at(verdict.log.0, &verdict.log.1);
    if let Some(reason) = handling::warning_reason(verdict, retries) {
        events::post(env, body, "Warning", reason, &verdict.log.1).await;
    }
}

/// The change a change handler is called about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change<'a> {
    /// The cycle's reason.
    pub reason: Reason,
    /// What changed.
    pub essence: &'a Essence,
    /// The object's uid.
    pub uid: &'a str,
}

/// One attempt of one change handler.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The handler and its service.
    pub bound: &'a Bound,
    /// Its record.
    pub state: &'a HandlerState,
    /// Its sub-handlers' records.
    pub subs: &'a State,
    /// Time since its first attempt.
    pub runtime: Duration,
}

/// Calls one change handler (`Invoke`) about `change`, with `body` as the handlers before it
/// left it: the field's view of the change, its sub-handlers' records, a stable attempt id, its
/// deadline. Returns the answer and the call's duration in seconds (for the metrics).
pub(crate) async fn invoke_change(
    env: &Context,
    res: &ResourceCtx,
    change: &Change<'_>,
    attempt: &Attempt<'_>,
    body: Arc<Value>,
    traceparent: Option<String>,
) -> (Result<Answer, DispatchError>, f64) {
    let (handler, hs, essence) = (&attempt.bound.handler, attempt.state, change.essence);
    let (old, new, diff) =
        handling::field_view(handler, essence.old.as_ref(), &essence.new, &essence.diff);
    let call = Call {
        handler_id: handler.id.clone(),
        reason: Some(change.reason),
        body,
        old,
        new,
        diff,
        retry: hs.retries,
        started: Some(hs.started),
        subhandlers: attempt
            .subs
            .handlers
            .iter()
            .map(|(id, s)| sub_record(id, s))
            .collect(),
        event_type: String::new(),
        attempt_id: handling::attempt_id(
            change.uid,
            &handler.id,
            change.reason,
            hs.retries,
            &essence.new,
        ),
        deadline: handling::deadline(&handler.options, env.settings.call_timeout, attempt.runtime),
        traceparent,
        resource: Some(res.resolved()),
    };
    let started = Instant::now();
    env.metrics.inflight(1);
    let answer = attempt.bound.service.invoke(call).await;
    env.metrics.inflight(-1);
    (answer, started.elapsed().as_secs_f64())
}

/// A sub-handler's record as sent with its parent's call.
fn sub_record(id: &str, s: &HandlerState) -> SubRecord {
    SubRecord {
        id: id.to_owned(),
        started: Some(s.started),
        retries: s.retries,
        success: s.success,
        failure: s.failure,
        message: s.message.clone(),
        delayed: s.delayed,
    }
}

/// Writes a cycle's patch and our finalizer's change (`None`: no decision, as in a cycle with
/// nothing but event handlers).
///
/// A write that got no answer (the API server unreachable, a connection cut, a timeout) or a
/// server error (5xx, 429) is tried again, with growing pauses, until it is answered: the cycle's
/// outcome exists only in this write, and no new watch event may come to redo it (a watch
/// resumed after a cut does not list again) — the object would stay unhandled, or its handlers
/// would run twice. A refusal (4xx) is final: logged and posted as an Event; `Err` carries that
/// message, for the read model. The next change of the object tries again. (The settings may
/// bound the retries, for tests without an API server: then an unanswered write ends as before
/// the retries existed, logged, and `Ok(Nothing)`.)
pub(crate) async fn write(
    env: &Context,
    res: &ResourceCtx,
    log: &Log<'_>,
    body: &Value,
    patch: MergePatch,
    finalizer: Option<Finalizer>,
) -> Result<Written, String> {
    let action = finalizer.and_then(|f| match f {
        Finalizer::Add => Some(FinalizerAction::Add),
        Finalizer::Remove(_) => Some(FinalizerAction::Remove),
        Finalizer::Keep(_) => None,
    });
    let mut failures = 0;
    loop {
        match patching::write(env, res, body, patch.clone(), action).await {
            Ok(written) => return Ok(written),
            Err(err)
                if patching::unanswered(&err)
                    && env.settings.unanswered_writes.is_none_or(|n| failures < n) =>
            {
                failures += 1;
                let pause = Backoff::SERVICE.after(failures);
                log.error(&format!(
                    "Patching failed, trying again in {:.1}s: {}",
                    pause.as_secs_f64(),
                    kit::describe(&err)
                ));
                tokio::time::sleep(pause).await;
            }
            Err(err) => {
                let message = format!("Patching failed: {}", kit::describe(&err));
                log.error(&message);
                events::post(env, body, "Warning", "PatchFailed", &message).await;
                if patching::unanswered(&err) {
                    // Given up by the settings (tests without an API server): unknown, not refused.
                    return Ok(Written::Nothing);
                }
                return Err(message);
            }
        }
    }
}

/// Posts the Events a handler asked for (about the object, or another one it names).
pub(crate) async fn post_events(
    env: &Context,
    log: &Log<'_>,
    body: &Value,
    requests: &[EventRequest],
) {
    for e in requests {
        let target = e.involved_object.as_ref().unwrap_or(body);
        if !events::post(env, target, &e.type_, &e.reason, &e.message).await {
            log.debug(&format!("Failed to post an event: {}", e.message));
        }
    }
}

/// Calls the raw-event handlers that match the object about each watch event seen (`events`:
/// the handlers, the event types): no progress, errors logged and ignored; their patches and
/// results go into `patch` (results also onto `predicted`).
pub(crate) async fn run_event_handlers(
    env: &Context,
    res: &ResourceCtx,
    log: &Log<'_>,
    (handlers, event_types): (&[&Bound], &[&'static str]),
    predicted: &mut Arc<Value>,
    patch: &mut MergePatch,
) {
    for event_type in event_types {
        run_event_handlers_once(env, res, log, handlers, event_type, predicted, patch).await;
    }
}

/// [`run_event_handlers`] about one watch event.
async fn run_event_handlers_once(
    env: &Context,
    res: &ResourceCtx,
    log: &Log<'_>,
    handlers: &[&Bound],
    event_type: &'static str,
    predicted: &mut Arc<Value>,
    patch: &mut MergePatch,
) {
    let body = Arc::clone(predicted);
    let view = CauseView {
        reason: Reason::Update,
        initial: false,
        deleted: finalizer::deletion_ongoing(&body),
        body: &body,
        old: None,
        new: None,
    };
    for bound in handlers {
        let handler = &bound.handler;
        if !selection::body_matches(handler, &view) {
            continue;
        }
        let call = Call {
            started: Some(Timestamp::now()),
            event_type: event_type.to_owned(),
            ..Call::about(
                &handler.id,
                Arc::clone(&body),
                handling::deadline(&handler.options, env.settings.call_timeout, Duration::ZERO),
                res.resolved(),
            )
        };
        let span = tracing::info_span!(
            target: telemetry::TARGET,
            "handler",
            otel.name = format!("handler {}", handler.id),
            handler.id = %handler.id,
            attempt = 1_i64,
            event = event_type,
        );
        let call = Call {
            traceparent: telemetry::traceparent(&span),
            ..call
        };
        let started = Instant::now();
        env.metrics.inflight(1);
        let answer = bound.service.invoke(call).instrument(span).await;
        env.metrics.inflight(-1);
        let seconds = started.elapsed().as_secs_f64();
        let title = outcome::title(handler);
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                env.metrics.handler(&handler.id, "failure", seconds);
                log.error(&handling::event_failure(&title, &err.to_string()));
                continue;
            }
        };
        match handling::event_outcome(&title, answer.result) {
            EventOutcome::NotMatched => env.metrics.handler(&handler.id, "not_matched", seconds),
            EventOutcome::Failed(line) => {
                env.metrics.handler(&handler.id, "failure", seconds);
                log.error(&line);
            }
            EventOutcome::Succeeded(result) => {
                env.metrics.handler(&handler.id, "success", seconds);
                log.info(&format!("{title} succeeded."));
                if let Some(p) = answer
                    .patch
                    .as_ref()
                    .filter(|p| handling::check_handler_patch(p).is_ok())
                {
                    patch.merge_from(p);
                }
                if let Some(value) = result {
                    handling::deliver_result(&handler.id, &value, Arc::make_mut(predicted), patch);
                }
                post_events(env, log, &body, &answer.events).await;
            }
        }
    }
}

/// Asks the services whether the callback filters of `questions` accept the object (`Match`);
/// returns the ids of the handlers they reject. A service that cannot answer is taken to
/// accept: the finalizer is kept rather than lost.
pub(crate) async fn callback_rejects(
    env: &Context,
    res: &ResourceCtx,
    questions: &[&Bound],
    body: &Arc<Value>,
    reason: Option<Reason>,
) -> Vec<String> {
    let mut rejected = Vec::new();
    for bound in questions {
        let handler = &bound.handler;
        let call = Call {
            reason,
            ..Call::about(
                &handler.id,
                Arc::clone(body),
                handling::deadline(&handler.options, env.settings.call_timeout, Duration::ZERO),
                res.resolved(),
            )
        };
        match bound.service.matches(call).await {
            Ok(true) => {}
            Ok(false) => rejected.push(handler.id.clone()),
            Err(err) => {
                tracing::warn!(handler = %handler.id, error = %err, "Cannot evaluate the handler's callback filters; taking them as matching.");
            }
        }
    }
    rejected
}

/// The object's name as Kopf's log lines show it: `namespace/name`, or `name`.
pub(crate) fn object_name(body: &Value) -> String {
    let (namespace, name) = (meta(body, "namespace"), meta(body, "name"));
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}
