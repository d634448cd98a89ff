//! One handling cycle of one object: Kopf's `process_resource_event`, with Operon's lifecycle
//! (every due handler in one cycle, one patch per cycle). Decisions come from [`crate::core`];
//! this module calls handlers and the API server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blake2::digest::{Update, VariableOutput};
use jiff::Timestamp;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::core::cause::{self, Cause, Observation};
use crate::core::finalizer;
use crate::core::model::{Handler, HandlerKind, Options, Reason};
use crate::core::outcome::{self, CallResult, Level, Progress, Verdict};
use crate::core::patch::MergePatch;
use crate::core::persistence::diff::{self, DiffItem};
use crate::core::persistence::pyjson::py_eq;
use crate::core::selection::{self, CauseView};
use crate::core::state::{HandlerState, State};
use crate::core::views::{self, CycleEnd, Subject, handler_view};
use crate::runtime::context::{Bound, Context, ResourceCtx, Settings};
use crate::runtime::daemons::Daemons;
use crate::runtime::events;
use crate::runtime::indexing::Gate;
use crate::runtime::kit::meta;
use crate::runtime::patching::{self, FinalizerAction, Written};
use crate::runtime::ports::{Call, EventRequest, SubRecord, SubResult};
use crate::runtime::readmodel::HandlerView;
use crate::runtime::timers::Timers;
use crate::telemetry;

/// How often a deleted object's cycle looks again whether its daemons have exited.
const DAEMON_EXIT_POLL: Duration = Duration::from_millis(500);

/// Change handling: the context, and the timers and daemons it runs per object.
pub struct Handling {
    /// The shared context.
    pub ctx: Arc<Context>,
    /// The running timers.
    pub timers: Timers,
    /// The running daemons.
    pub daemons: Daemons,
    /// Closed until the indexes are fed their initial listings: no cycle runs before.
    pub indexing: Arc<Gate>,
}

impl std::fmt::Debug for Handling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handling")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// What the queue hands to a cycle.
#[derive(Debug)]
pub struct Input {
    /// The latest body.
    pub body: Arc<Value>,
    /// The watch said DELETED.
    pub gone: bool,
    /// The raw event types seen since the last cycle (for event handlers).
    pub events: Vec<&'static str>,
    /// From the initial listing and not fully handled since the start.
    pub initial: bool,
}

/// What a cycle tells the queue.
#[derive(Debug, Default)]
pub struct Output {
    /// What our write left to wait for before the next cycle.
    pub written: Written,
    /// Run again after this long even without a new event.
    pub delay: Option<Duration>,
    /// All handlers of the change are done (resume handlers are not mixed in again).
    pub fully_handled: bool,
}

/// A per-object logger that words its lines as Kopf does, with the object as a field.
struct Log<'a> {
    object: &'a str,
}

impl Log<'_> {
    fn at(&self, level: Level, message: &str) {
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
    fn debug(&self, message: &str) {
        self.at(Level::Debug, message);
    }
    fn info(&self, message: &str) {
        self.at(Level::Info, message);
    }
    fn error(&self, message: &str) {
        self.at(Level::Error, message);
    }
}

fn title(reason: Reason) -> &'static str {
    match reason {
        Reason::Create => "creation",
        Reason::Update => "updating",
        Reason::Delete => "deletion",
        Reason::Resume => "resuming",
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Runs one cycle in its own root span (`cycle`: the object's identity, then the cause). Never
/// fails: every problem is logged, posted as an Event and retried.
pub async fn process(handling: &Handling, res: &Arc<ResourceCtx>, input: Input) -> Output {
    // Kopf's initial indexing: no handler runs before every index has its initial listing.
    handling.indexing.wait().await;
    let body = input.body.as_ref();
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        parent: None,
        "cycle",
        otel.name = format!("cycle {}", res.served.name()),
        resource = %res.served.name(),
        namespace = meta(body, "namespace"),
        name = meta(body, "name"),
        uid = meta(body, "uid"),
        resource_version = meta(body, "resourceVersion"),
        cause = tracing::field::Empty,
    );
    cycle(handling, res, input).instrument(span).await
}

async fn cycle(handling: &Handling, res: &Arc<ResourceCtx>, input: Input) -> Output {
    let env = &*handling.ctx;
    let body = input.body.as_ref();
    let (namespace, name) = (meta(body, "namespace"), meta(body, "name"));
    let object = if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    };
    let log = Log { object: &object };
    env.metrics.cycle();
    let now = Timestamp::now();
    let mut patch = MergePatch::new();
    let mut predicted = body.clone();

    // Raw-event handlers: every watch event, no progress, errors ignored.
    for event_type in &input.events {
        run_event_handlers(env, res, &log, event_type, &mut predicted, &mut patch).await;
    }
    if input.gone {
        tracing::Span::current().record("cause", "gone");
        handling.timers.stop_object(res, body);
        handling.daemons.forget_object(res, body);
        log.debug("Deleted, really deleted, and we are notified.");
        env.readmodel.remove(&res.served.name(), namespace, name);
        return Output::default();
    }

    let changing: Vec<&Bound> = res
        .handlers
        .iter()
        .filter(|b| {
            !matches!(
                b.handler.kind,
                HandlerKind::Event | HandlerKind::Timer | HandlerKind::Daemon
            )
        })
        .collect();
    // Timers and daemons: spawned per object, not handled in the cycle.
    let timers: Vec<&Bound> = res
        .handlers
        .iter()
        .filter(|b| matches!(b.handler.kind, HandlerKind::Timer | HandlerKind::Daemon))
        .collect();
    let handlers: Vec<Handler> = changing.iter().map(|b| b.handler.clone()).collect();
    let mut out = Output {
        fully_handled: true,
        ..Output::default()
    };
    if handlers.is_empty() && timers.is_empty() {
        out.written = write(env, res, &log, body, patch, None).await;
        return out;
    }

    let settings = &env.settings;
    let old = match settings.diffbase.fetch(body) {
        Ok(old) => old.map(|o| settings.progress.clear(&o)),
        Err(err) => {
            refuse(
                env,
                res,
                &log,
                body,
                &format!("The stored diff-base is unusable: {err}"),
            )
            .await;
            return out;
        }
    };
    let new = settings
        .progress
        .clear(&settings.diffbase.build(body, &res.extra_fields));
    let diff = diff::diff(old.as_ref(), Some(&new));
    let deleting = finalizer::deletion_ongoing(body);
    let blocked = finalizer::is_blocked(body, &settings.finalizer);
    let detected = cause::detect(Observation {
        gone: false,
        deletion_ongoing: deleting,
        has_our_finalizer: blocked,
        has_diffbase: old.is_some(),
        changed: !diff.is_empty(),
        initial: input.initial,
    });
    tracing::Span::current().record("cause", cause_name(detected));
    let view = CauseView {
        reason: detected.reason().unwrap_or(Reason::Update),
        initial: input.initial && detected != Cause::Handle(Reason::Create),
        deleted: deleting,
        body,
        old: old.as_ref(),
        new: Some(&new),
    };
    // Timers run for every matching object that is not being deleted; like Kopf's daemons and
    // timers, they hold the finalizer so that they are stopped before the object goes.
    let mut timers_matching: Vec<&Bound> = timers
        .iter()
        .copied()
        .filter(|b| selection::body_matches(&b.handler, &view))
        .collect();
    // Callback filters (`when=` and other callables) are the service's to evaluate: asked here,
    // where Kopf evaluates them outside a handler call — before a timer or a daemon starts and
    // before the finalizer is decided on.
    if !deleting {
        let rejected = callback_rejects(env, res, &timers_matching, body, None).await;
        timers_matching.retain(|b| !rejected.contains(&b.handler.id));
    }
    let deletion_candidates: Vec<&Bound> = changing
        .iter()
        .copied()
        .filter(|b| {
            b.handler.kind == HandlerKind::Delete
                && !b.handler.options.optional
                && selection::requires_finalizer(std::slice::from_ref(&b.handler), &view)
        })
        .collect();
    let deletion_rejected =
        callback_rejects(env, res, &deletion_candidates, body, Some(Reason::Delete)).await;
    let blocking_handlers: Vec<Handler> = handlers
        .iter()
        .filter(|h| !(h.kind == HandlerKind::Delete && deletion_rejected.contains(&h.id)))
        .cloned()
        .collect();
    let (daemons_matching, timers_matching): (Vec<&Bound>, Vec<&Bound>) = timers_matching
        .into_iter()
        .partition(|b| b.handler.kind == HandlerKind::Daemon);
    // Like Kopf, the finalizer stays until every daemon of a deleted object has exited.
    let mut daemons_exiting = false;
    if deleting {
        handling.timers.stop_object(res, body);
        daemons_exiting = handling.daemons.stop_object(res, body);
    } else {
        handling.timers.sync(
            &handling.ctx,
            res,
            &input.body,
            !diff.is_empty(),
            &timers_matching,
        );
        handling
            .daemons
            .sync(&handling.ctx, res, &input.body, &daemons_matching);
    }
    let timers_matching: Vec<&Bound> = timers_matching
        .into_iter()
        .chain(daemons_matching)
        .collect();
    if !selection::any_prematch(&handlers, &view) && timers_matching.is_empty() && !daemons_exiting
    {
        // Blind to objects no handler could ever match: no state, no log lines — except that
        // our finalizer goes when nothing requires it any more (e.g. a label filter stopped
        // matching), or the object could never be deleted.
        let release = finalizer::is_blocked(body, &settings.finalizer).then(|| {
            log.debug("Removing the finalizer, as there are no handlers requiring it.");
            FinalizerAction::Remove
        });
        out.written = write(env, res, &log, body, patch, release).await;
        return out;
    }

    let must_block = selection::requires_finalizer(&blocking_handlers, &view)
        || !timers_matching.is_empty()
        || daemons_exiting;
    let mut finalizer_action = None;
    let mut changing_cause = (!handlers.is_empty()).then_some(detected);
    if must_block && !blocked && !deleting {
        log.debug("Adding the finalizer, thus preventing the actual deletion.");
        finalizer_action = Some(FinalizerAction::Add);
        changing_cause = None;
    }
    if !must_block && blocked {
        log.debug("Removing the finalizer, as there are no handlers requiring it.");
        finalizer_action = Some(FinalizerAction::Remove);
        changing_cause = None;
    }

    let mut done_or_skip = false;
    let mut views = Vec::new();
    match changing_cause {
        Some(Cause::Handle(reason)) => {
            let ctx = CycleCtx {
                env,
                res,
                log: &log,
                body,
                now,
                reason,
                old: old.as_ref(),
                new: &new,
                diff: &diff,
            };
            match handle(&ctx, &changing, &view, &mut predicted, &mut patch).await {
                Ok(result) => {
                    done_or_skip = result.done;
                    out.delay = result.delay;
                    views = result.views;
                }
                Err(message) => {
                    refuse(env, res, &log, body, &message).await;
                    return out;
                }
            }
        }
        Some(Cause::Free) => log.debug("Deletion, but we are done with it, and we do not care."),
        Some(Cause::Noop) => {
            log.debug("Something has changed, but we are not interested (the essence is the same).")
        }
        Some(Cause::Gone) | None => {}
    }
    if done_or_skip && old.as_ref().is_none_or(|o| !py_eq(o, &new)) {
        settings.diffbase.store(body, &mut patch, &new);
    }
    // Kopf's `fully_handled_once`: only a finished (or handler-less) cycle ends the resuming.
    out.fully_handled = done_or_skip;
    if daemons_exiting {
        // Look again soon: the finalizer goes once the daemons have exited.
        let poll = DAEMON_EXIT_POLL;
        out.delay = Some(out.delay.map_or(poll, |d| d.min(poll)));
    }
    if deleting
        && blocked
        && finalizer_action.is_none()
        && out.delay.is_none()
        && (done_or_skip || handlers.is_empty())
    {
        log.debug("Removing the finalizer, thus allowing the actual deletion.");
        finalizer_action = Some(FinalizerAction::Remove);
    }

    if !patch.is_empty() {
        settings.progress.touch(body, &mut patch, None);
    }
    out.written = write(env, res, &log, body, patch, finalizer_action).await;
    let end = CycleEnd {
        deleting,
        handling: matches!(changing_cause, Some(Cause::Handle(_))),
        done: done_or_skip,
        no_cause: changing_cause.is_none(),
    };
    let subject = Subject::of(res.served.name(), body);
    let view = views::cycle_view(subject, cause_name(detected), &end, views, Timestamp::now());
    if end.replaces_view() {
        if let Some(shown) = views::shown_diff(&view.resource, &diff) {
            env.readmodel.set_diff(view.key(), shown);
        }
        env.readmodel.upsert(view);
    } else {
        // A no-op or finalizer cycle says nothing new about the handlers: keep what the last
        // handling cycle showed, and only introduce objects the model does not know yet.
        env.readmodel.insert_if_absent(view);
    }
    out
}

fn cause_name(cause: Cause) -> &'static str {
    match cause {
        Cause::Handle(r) => r.as_str(),
        Cause::Free => "free",
        Cause::Noop => "noop",
        Cause::Gone => "gone",
    }
}

struct CycleCtx<'a> {
    env: &'a Context,
    res: &'a ResourceCtx,
    log: &'a Log<'a>,
    body: &'a Value,
    now: Timestamp,
    reason: Reason,
    old: Option<&'a Value>,
    new: &'a Value,
    diff: &'a [DiffItem],
}

struct Handled {
    done: bool,
    delay: Option<Duration>,
    views: Vec<HandlerView>,
}

/// Kopf's `process_changing_cause` for one of the handler reasons.
async fn handle(
    ctx: &CycleCtx<'_>,
    changing: &[&Bound],
    view: &CauseView<'_>,
    predicted: &mut Value,
    patch: &mut MergePatch,
) -> Result<Handled, String> {
    let CycleCtx {
        env,
        log,
        body,
        now,
        reason,
        ..
    } = *ctx;
    let storage = &env.settings.progress;
    let handlers: Vec<Handler> = changing.iter().map(|b| b.handler.clone()).collect();
    let selected = selection::select(&handlers, view);
    // One function under several decorators is one id: one record, at most one run per cycle.
    let mut selected_ids: Vec<&str> = Vec::new();
    for h in &selected {
        if !selected_ids.contains(&h.id.as_str()) {
            selected_ids.push(h.id.as_str());
        }
    }
    let mut owned: Vec<&str> = Vec::new();
    for h in &handlers {
        if !owned.contains(&h.id.as_str()) {
            owned.push(h.id.as_str());
        }
    }
    let title = title(reason);

    let mut state = State::load(storage, body, owned.iter().copied(), now)
        .map_err(|(id, err)| format!("The progress record of {id:?} is unusable: {err}"))?
        .with_purpose(reason, [])
        .with_handlers(selected_ids.iter().copied(), now);
    let extras = state.extras();
    for (purpose, c) in &extras {
        let extra_title = Reason::parse(purpose).map_or_else(|| format!("{purpose:?}"), title_of);
        log.info(&format!(
            "{} is superseded by {}: {} succeeded; {} failed; {} left to the moment.",
            capitalize(&extra_title),
            title,
            c.success,
            c.failure,
            c.running
        ));
        state = state.with_purpose(reason, selected_ids.iter().copied());
    }
    if !state.extras().is_empty() {
        state.purge(storage, body, patch, owned.iter().copied());
    }

    log.debug(&format!("{} is in progress: {}", capitalize(title), body));
    if !ctx.diff.is_empty() && ctx.old.is_some() {
        log.debug(&format!(
            "{} diff: {}",
            capitalize(title),
            diff::to_value(ctx.diff)
        ));
    }
    if selected.is_empty() {
        return Ok(Handled {
            done: true,
            delay: None,
            views: Vec::new(),
        });
    }

    let mut ran: Vec<&str> = Vec::new();
    for bound in changing {
        let handler = &bound.handler;
        let chosen = selected
            .iter()
            .any(|h| h.id == handler.id && h.kind == handler.kind);
        if !chosen || ran.contains(&handler.id.as_str()) {
            continue;
        }
        ran.push(handler.id.as_str());
        let Some(hs) = state.get(&handler.id).cloned() else {
            continue;
        };
        if !hs.awakened(now) {
            continue;
        }
        match run_one(ctx, bound, &hs, predicted, patch).await {
            Some((verdict, subrefs)) => {
                // `stopped` and `delayed` count from the outcome, not from the cycle's start
                // (Kopf's `with_outcome`): a slow handler's retry is not due early.
                let finished = Timestamp::now();
                state.set(&handler.id, hs.with_verdict(&verdict, &subrefs, finished));
            }
            None => {
                // Not matched by a callback filter: as if not selected.
                let mut passive = hs;
                passive.active = false;
                state.set(&handler.id, passive);
            }
        }
    }
    state.store(storage, body, patch);
    let done = state.done();
    // The views: the cycle's handlers, each followed by its sub-handlers as this cycle leaves
    // them (their records are in the patch, not yet on the body).
    let mut after = body.clone();
    patch.apply_to(&mut after);
    let mut views = Vec::new();
    for (id, s) in state.handlers.iter().filter(|(_, s)| s.active) {
        let mut view = handler_view(id, s, now);
        view.trace_id = env
            .readmodel
            .attempts
            .of(meta(body, "uid"), id)
            .pop()
            .map(|a| a.trace_id);
        views.push(view);
        if let Ok(subs) = State::load(storage, &after, s.subrefs.iter().map(String::as_str), now) {
            views.extend(subs.handlers.iter().map(|(id, s)| handler_view(id, s, now)));
        }
    }
    if done {
        let c = state.counts();
        log.info(&format!(
            "{} is processed: {} succeeded; {} failed.",
            capitalize(title),
            c.success,
            c.failure
        ));
        state.purge(storage, body, patch, owned.iter().copied());
    }
    Ok(Handled {
        done,
        delay: if done { None } else { state.delay(now) },
        views,
    })
}

fn title_of(r: Reason) -> String {
    title(r).to_owned()
}

/// Calls one change handler in a `handler` span (id, attempt, outcome, delay), linked to the
/// span of the handler's previous attempt on this object. `None` means "not matched".
async fn run_one(
    ctx: &CycleCtx<'_>,
    bound: &Bound,
    hs: &HandlerState,
    predicted: &mut Value,
    patch: &mut MergePatch,
) -> Option<(Verdict, Vec<String>)> {
    let id = &bound.handler.id;
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        "handler",
        otel.name = format!("handler {id}"),
        handler.id = %id,
        attempt = i64::from(hs.retries) + 1,
        outcome = tracing::field::Empty,
        delay = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let uid = meta(ctx.body, "uid");
    let attempts = &ctx.env.readmodel.attempts;
    if hs.retries > 0
        && let Some(previous) = attempts.previous(uid, id)
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.add_link(previous);
    }
    if let Some(cx) = telemetry::span_context(&span) {
        attempts.record(uid, id, hs.retries, cx);
    }
    let result = run_one_traced(
        ctx,
        bound,
        hs,
        predicted,
        patch,
        telemetry::traceparent(&span),
    )
    .instrument(span.clone())
    .await;
    match &result {
        Some((verdict, _)) => {
            span.record("outcome", outcome_label(verdict));
            if let Some(delay) = verdict.delay {
                span.record("delay", delay.as_secs_f64());
            }
            if !verdict.finished && verdict.message.is_some() || verdict.failure.is_some() {
                span.record("otel.status_code", "error");
            }
        }
        None => {
            span.record("outcome", "not_matched");
        }
    }
    result
}

/// Calls one change handler and stores its sub-handlers' states. `None` means "not matched".
async fn run_one_traced(
    ctx: &CycleCtx<'_>,
    bound: &Bound,
    hs: &HandlerState,
    predicted: &mut Value,
    patch: &mut MergePatch,
    traceparent: Option<String>,
) -> Option<(Verdict, Vec<String>)> {
    let CycleCtx {
        env,
        res,
        log,
        body,
        now,
        reason,
        ..
    } = *ctx;
    let handler = &bound.handler;
    let storage = &env.settings.progress;
    let progress = Progress {
        retries: hs.retries,
        runtime: hs.runtime(now),
    };
    log.debug(&format!("{} is invoked.", outcome::title(handler)));
    if let Some(verdict) = outcome::precheck(handler, progress) {
        report(env, log, body, progress.retries, &verdict).await;
        return Some((verdict, Vec::new()));
    }
    let subs =
        State::load(storage, body, hs.subrefs.iter().map(String::as_str), now).unwrap_or_default();
    let (old, new, diff) = field_view(handler, ctx.old, ctx.new, ctx.diff);
    let call = Call {
        handler_id: handler.id.clone(),
        reason: Some(reason),
        body: predicted.clone(),
        old,
        new,
        diff,
        retry: hs.retries,
        started: Some(hs.started),
        subhandlers: subs
            .handlers
            .iter()
            .map(|(id, s)| SubRecord {
                id: id.clone(),
                started: Some(s.started),
                retries: s.retries,
                success: s.success,
                failure: s.failure,
                message: s.message.clone(),
                delayed: s.delayed,
            })
            .collect(),
        event_type: String::new(),
        attempt_id: attempt_id(body, &handler.id, reason, hs.retries, ctx.new),
        deadline: deadline(&handler.options, &env.settings, progress.runtime),
        traceparent,
        resource: Some(res.resolved()),
    };
    let started = Instant::now();
    env.metrics.inflight(1);
    let answer = bound.service.invoke(call).await;
    env.metrics.inflight(-1);
    let seconds = started.elapsed().as_secs_f64();
    let (result, sub_outcomes) = match answer {
        Ok(answer) => {
            let Some(result) = answer.result else {
                env.metrics.handler(&handler.id, "not_matched", seconds);
                return None;
            };
            if let Some(handler_patch) = &answer.patch {
                if let Err(problem) = check_handler_patch(handler_patch) {
                    let verdict = outcome::judge(
                        handler,
                        progress,
                        CallResult::Arbitrary {
                            message: format!("The handler's patch is refused: {problem}"),
                        },
                        env.settings.default_backoff,
                    );
                    env.metrics.handler(&handler.id, "error", seconds);
                    report(env, log, body, progress.retries, &verdict).await;
                    return Some((verdict, Vec::new()));
                }
                MergePatch::from_value(handler_patch.clone())
                    .unwrap_or_default()
                    .apply_to(predicted);
                patch.merge_from(handler_patch);
            }
            post_events(env, log, body, &answer.events).await;
            (result, answer.subhandlers)
        }
        Err(err) => (
            CallResult::Arbitrary {
                message: err.to_string(),
            },
            Vec::new(),
        ),
    };
    // Sub-handlers first (Kopf logs them before their parent): their states are stored under
    // their own ids and listed in the parent's `subrefs`.
    let mut subs = subs;
    let mut subrefs = Vec::new();
    for sub in sub_outcomes {
        let id = sub.id;
        if !id.starts_with(&format!("{}/", handler.id)) {
            log.error(&format!(
                "{} reported a sub-handler {id:?} that is not its own; ignored.",
                outcome::title(handler)
            ));
            continue;
        }
        let sub_state = subs.get(&id).cloned().unwrap_or_else(|| {
            let mut fresh = HandlerState::from_scratch(now, Some(reason));
            fresh.active = true;
            fresh
        });
        let result = match sub.result {
            SubResult::NotMatched => continue,
            SubResult::Selected => {
                // Recorded now, so that its `started` (and timeout) begin with the parent's call.
                subs.set(&id, sub_state);
                subrefs.push(id);
                continue;
            }
            SubResult::Ran(result) => result,
        };
        let sub_handler = Handler {
            id: id.clone(),
            kind: handler.kind,
            filters: Default::default(),
            has_callback_filters: false,
            options: sub.options,
        };
        let sub_progress = Progress {
            retries: sub_state.retries,
            runtime: sub_state.runtime(now),
        };
        let sub_verdict = outcome::precheck(&sub_handler, sub_progress).unwrap_or_else(|| {
            outcome::judge(
                &sub_handler,
                sub_progress,
                result,
                env.settings.default_backoff,
            )
        });
        log.at(sub_verdict.log.0, &sub_verdict.log.1);
        if let Some(value) = &sub_verdict.result {
            deliver_result(&id, value, predicted, patch);
        }
        subs.set(
            &id,
            sub_state.with_verdict(&sub_verdict, &[], Timestamp::now()),
        );
        subrefs.push(id);
    }

    let verdict = outcome::judge(handler, progress, result, env.settings.default_backoff);
    env.metrics
        .handler(&handler.id, outcome_label(&verdict), seconds);
    report(env, log, body, progress.retries, &verdict).await;
    if let Some(value) = &verdict.result {
        deliver_result(&handler.id, value, predicted, patch);
    }
    subs.store(storage, body, patch);
    Some((verdict, subrefs))
}

/// For field handlers, old/new/diff are the field's, not the object's (Kopf's `adjust_cause`).
fn field_view(
    handler: &Handler,
    old: Option<&Value>,
    new: &Value,
    full: &[DiffItem],
) -> (Option<Value>, Option<Value>, Value) {
    match &handler.filters.field {
        Some(field) => (
            old.and_then(|o| diff::resolve(o, field)).cloned(),
            diff::resolve(new, field).cloned(),
            diff::to_value(&diff::reduce(full, field)),
        ),
        None => (old.cloned(), Some(new.clone()), diff::to_value(full)),
    }
}

fn deadline(options: &Options, settings: &Settings, runtime: Duration) -> Duration {
    let mut d = options.call_timeout.unwrap_or(settings.call_timeout);
    if let Some(total) = options.timeout {
        d = d.min(total.saturating_sub(runtime).max(Duration::from_secs(1)));
    }
    d
}

fn outcome_label(v: &Verdict) -> &'static str {
    match (v.finished, v.failure.is_some()) {
        (true, false) => "success",
        (true, true) => "failure",
        (false, _) if v.message.is_some() => "retry",
        (false, _) => "pending",
    }
}

/// A stable id for this attempt: same object, handler, change and attempt → same id.
fn attempt_id(body: &Value, handler: &str, reason: Reason, retry: u32, new: &Value) -> String {
    let mut hasher = blake2::Blake2bVar::new(16).expect("16 is a valid blake2b output size");
    for part in [
        meta(body, "uid"),
        handler,
        reason.as_str(),
        &retry.to_string(),
        &crate::core::persistence::pyjson::dumps(new),
    ] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    let mut out = [0u8; 16];
    hasher
        .finalize_variable(&mut out)
        .expect("the buffer has the configured size");
    out.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses handler patches that would change the object's identity.
fn check_handler_patch(patch: &Value) -> Result<(), String> {
    let m = patch.get("metadata");
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
    ] {
        if m.and_then(|m| m.get(field)).is_some() {
            return Err(format!("it changes metadata.{field}"));
        }
    }
    Ok(())
}

/// Kopf's `deliver_results`: a dict result is merged into `status.<id>`, anything else replaces it.
fn deliver_result(id: &str, value: &Value, predicted: &mut Value, patch: &mut MergePatch) {
    let fragment = json!({"status": {id: value}});
    MergePatch::from_value(fragment.clone())
        .unwrap_or_default()
        .apply_to(predicted);
    if value.is_object() {
        patch.merge_from(&fragment);
    } else {
        patch.set(&["status", id], value.clone());
    }
}

/// Logs a verdict, and posts an Event for errors so that users see them with `kubectl describe`:
/// for a handler's first failure in a cycle and for its final failure — not for every retry,
/// which would flood the API server with Events for a handler that retries every second.
async fn report(env: &Context, log: &Log<'_>, body: &Value, retries: u32, verdict: &Verdict) {
    log.at(verdict.log.0, &verdict.log.1);
    if verdict.log.0 != Level::Error {
        return;
    }
    let reason = if verdict.failure.is_some() {
        "HandlerFailed"
    } else if retries == 0 {
        "HandlerRetrying"
    } else {
        return;
    };
    events::post(env, body, "Warning", reason, &verdict.log.1).await;
}

async fn post_events(env: &Context, log: &Log<'_>, body: &Value, requests: &[EventRequest]) {
    for e in requests {
        let target = e.involved_object.as_ref().unwrap_or(body);
        if !events::post(env, target, &e.type_, &e.reason, &e.message).await {
            log.debug(&format!("Failed to post an event: {}", e.message));
        }
    }
}

/// An object the core cannot handle as it is: say so where the user looks, change nothing.
async fn refuse(env: &Context, res: &ResourceCtx, log: &Log<'_>, body: &Value, message: &str) {
    log.error(&format!(
        "{message} The object is left alone until it is fixed."
    ));
    events::post(env, body, "Warning", "InvalidObject", message).await;
    let subject = Subject::of(res.served.name(), body);
    env.readmodel
        .upsert(views::refused_view(subject, message, Timestamp::now()));
}

async fn run_event_handlers(
    env: &Context,
    res: &ResourceCtx,
    log: &Log<'_>,
    event_type: &'static str,
    predicted: &mut Value,
    patch: &mut MergePatch,
) {
    let body = predicted.clone();
    let view = CauseView {
        reason: Reason::Update,
        initial: false,
        deleted: finalizer::deletion_ongoing(&body),
        body: &body,
        old: None,
        new: None,
    };
    for bound in res
        .handlers
        .iter()
        .filter(|b| b.handler.kind == HandlerKind::Event)
    {
        let handler = &bound.handler;
        if !selection::body_matches(handler, &view) {
            continue;
        }
        let call = Call {
            started: Some(Timestamp::now()),
            event_type: event_type.to_owned(),
            ..Call::about(
                &handler.id,
                body.clone(),
                deadline(&handler.options, &env.settings, Duration::ZERO),
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
        match answer {
            Ok(answer) => match answer.result {
                Some(CallResult::Success(result)) => {
                    env.metrics.handler(&handler.id, "success", seconds);
                    log.info(&format!("{title} succeeded."));
                    if let Some(p) = answer
                        .patch
                        .as_ref()
                        .filter(|p| check_handler_patch(p).is_ok())
                    {
                        patch.merge_from(p);
                    }
                    if let Some(value) = result {
                        deliver_result(&handler.id, &value, predicted, patch);
                    }
                    post_events(env, log, &body, &answer.events).await;
                }
                None => env.metrics.handler(&handler.id, "not_matched", seconds),
                Some(other) => {
                    env.metrics.handler(&handler.id, "failure", seconds);
                    let message = match other {
                        CallResult::Temporary { message, .. }
                        | CallResult::Permanent { message }
                        | CallResult::Arbitrary { message } => message,
                        CallResult::Success(_) | CallResult::SubhandlersPending { .. } => {
                            String::new()
                        }
                    };
                    log.error(&format!(
                        "{title} failed with an exception and will ignore it: {message}"
                    ));
                }
            },
            Err(err) => {
                env.metrics.handler(&handler.id, "failure", seconds);
                log.error(&format!(
                    "{title} failed with an exception and will ignore it: {err}"
                ));
            }
        }
    }
    let _ = res;
}

/// Asks the services whether the callback filters of `candidates` accept the object (`Match`);
/// returns the ids of the handlers they reject. Handlers without callback filters are not asked.
/// A service that cannot answer is taken to accept: the finalizer is kept rather than lost.
async fn callback_rejects(
    env: &Context,
    res: &ResourceCtx,
    candidates: &[&Bound],
    body: &Value,
    reason: Option<Reason>,
) -> Vec<String> {
    let mut rejected = Vec::new();
    for bound in candidates.iter().filter(|b| b.handler.has_callback_filters) {
        let handler = &bound.handler;
        let call = Call {
            reason,
            ..Call::about(
                &handler.id,
                body.clone(),
                deadline(&handler.options, &env.settings, Duration::ZERO),
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

async fn write(
    env: &Context,
    res: &ResourceCtx,
    log: &Log<'_>,
    body: &Value,
    patch: MergePatch,
    finalizer: Option<FinalizerAction>,
) -> Written {
    match patching::write(env, res, body, patch, finalizer).await {
        Ok(written) => written,
        Err(err) => {
            log.error(&format!("Patching failed: {err}"));
            events::post(env, body, "Warning", "PatchFailed", &err.to_string()).await;
            Written::Nothing
        }
    }
}
