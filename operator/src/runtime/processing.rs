//! One handling cycle of one object: Kopf's `process_resource_event`, with Operon's lifecycle
//! (every due handler in one cycle, one patch per cycle). This module loads, plans (every
//! decision is [`crate::core::handling`]'s), dispatches (calls the services and the API server
//! through [`crate::runtime::calls`]), absorbs the answers and writes.
//!
//! Read `cycle` top to bottom: the event handlers, the essence and the cause, the callback
//! filters, the timers and daemons, the finalizer decision, `handle` (each due handler through
//! `run_one`), the diff-base, the finalizer once more, the write, the dashboard's view.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use tracing::Instrument;

use crate::core::cause::Cause;
use crate::core::handling::{
    self, Entry, Essence, Groups, LoadError, Observed, Selection, Situation, cause_name,
};
use crate::core::model::Reason;
use crate::core::outcome::{self, CallResult, Progress, Verdict};
use crate::core::patch::MergePatch;
use crate::core::selection::CauseView;
use crate::core::state::{HandlerState, State};
use crate::core::views::{self, CycleEnd, ObjectPhase, Subject, handler_view};
use crate::runtime::calls::{self, Log};
use crate::runtime::context::{Bound, Context, ResourceCtx};
use crate::runtime::daemons::Daemons;
use crate::runtime::events;
use crate::runtime::indexing::Gate;
use crate::runtime::kit::meta;
use crate::runtime::patching::Written;
use crate::runtime::readmodel::HandlerView;
use crate::runtime::timers::Timers;
use crate::telemetry;

/// Change handling: the context, and the timers and daemons it runs per object.
pub(crate) struct Handling {
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
pub(crate) struct Input {
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
pub(crate) struct Output {
    /// What our write left to wait for before the next cycle.
    pub written: Written,
    /// Run again after this long even without a new event.
    pub delay: Option<Duration>,
    /// All handlers of the change are done (resume handlers are not mixed in again).
    pub fully_handled: bool,
    /// The cycle left nothing to do on the body it wrote: every handler done, no delay, and no
    /// raw-event handler, timer or daemon that must see every event. The watch event of exactly
    /// the version it wrote then runs no cycle (`Slot::observe`).
    pub quiet_echo: bool,
}

/// Runs one cycle in its own root span (`cycle`: the object's identity, then the cause). Never
/// fails: every problem is logged, posted as an Event and retried.
pub(crate) async fn process(handling: &Handling, res: &Arc<ResourceCtx>, input: Input) -> Output {
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
    let object = calls::object_name(body);
    let log = Log { object: &object };
    env.metrics.cycle();
    let now = Timestamp::now();
    let mut patch = MergePatch::new();
    // What the object will be after this cycle's patch: shared with the body until a handler's
    // patch or result changes it (most cycles never copy the object).
    let mut predicted = Arc::clone(&input.body);
    let groups = Groups::of(&res.handlers);

    // Raw-event handlers: every watch event, no progress, errors ignored.
    let events = (groups.events.as_slice(), input.events.as_slice());
    calls::run_event_handlers(env, res, &log, events, &mut predicted, &mut patch).await;
    if input.gone {
        tracing::Span::current().record("cause", "gone");
        handling.timers.stop_object(res, body);
        handling.daemons.forget_object(res, body);
        log.debug("Deleted, really deleted, and we are notified.");
        env.readmodel.remove(&res.served.name(), namespace, name);
        return Output::default();
    }
    let mut out = Output {
        fully_handled: true,
        ..Output::default()
    };
    if groups.is_idle() {
        out.written = calls::write(env, res, &log, body, patch, None)
            .await
            .unwrap_or_default();
        return out;
    }

    let settings = &env.settings;
    let (diffbase, progress) = (&settings.diffbase, &settings.progress);
    let essence = match Essence::load(diffbase, progress, body, &res.extra_fields) {
        Ok(essence) => essence,
        Err(err) => {
            refuse(env, res, &log, body, &err.to_string()).await;
            return out;
        }
    };
    let observed = Observed::of(body, &settings.finalizer, &essence, input.initial);
    let (deleting, detected) = (observed.deleting, observed.cause);
    tracing::Span::current().record("cause", cause_name(detected));
    let view = observed.view(body, &essence);
    // Callback filters (`when=` and other callables) are the service's to evaluate: asked here,
    // where Kopf evaluates them outside a handler call — before a timer or a daemon starts and
    // before the finalizer is decided on.
    let spawned = handling::spawned_matching(&groups.spawned, &view);
    let questions = handling::spawned_questions(&spawned, deleting);
    let spawned_rejected = calls::callback_rejects(env, res, &questions, &input.body, None).await;
    let questions = handling::deletion_questions(&groups.changing, &view);
    let deletion_rejected =
        calls::callback_rejects(env, res, &questions, &input.body, Some(Reason::Delete)).await;
    let (timers_matching, daemons_matching) = handling::split_spawned(spawned, &spawned_rejected);
    // Like Kopf, the finalizer stays until every daemon of a deleted object has exited.
    let mut daemons_exiting = false;
    if deleting {
        handling.timers.stop_object(res, body);
        daemons_exiting = handling.daemons.stop_object(res, body);
    } else {
        let changed = !essence.diff.is_empty();
        let ctx = &handling.ctx;
        handling
            .timers
            .sync(ctx, res, &input.body, changed, &timers_matching);
        handling
            .daemons
            .sync(ctx, res, &input.body, &daemons_matching);
    }
    let situation = Situation::of(
        &observed,
        &groups.changing,
        &view,
        &deletion_rejected,
        !timers_matching.is_empty() || !daemons_matching.is_empty(),
        daemons_exiting,
    );
    let (finalizer, changing_cause) = match handling::entry(&situation, detected) {
        Entry::Blind(finalizer) => {
            if let Some(line) = finalizer.log_line() {
                log.debug(line);
            }
            out.written = calls::write(env, res, &log, body, patch, Some(finalizer))
                .await
                .unwrap_or_default();
            return out;
        }
        Entry::Proceed { finalizer, cause } => (finalizer, cause),
    };
    if let Some(line) = finalizer.log_line() {
        log.debug(line);
    }

    let mut done_or_skip = false;
    let mut essence_kept = false;
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
                essence: &essence,
            };
            match handle(&ctx, &groups.changing, &view, &mut predicted, &mut patch).await {
                Ok(result) => {
                    done_or_skip = result.done;
                    essence_kept = result.essence_kept;
                    out.delay = result.delay;
                    views = result.views;
                }
                Err(err) => {
                    refuse(env, res, &log, body, &err.to_string()).await;
                    return out;
                }
            }
        }
        Some(cause) => {
            if let Some(line) = handling::unhandled_line(cause) {
                log.debug(line);
            }
        }
        None => {}
    }
    if done_or_skip && essence.differs_from_stored() {
        settings.diffbase.store(body, &mut patch, &essence.new);
    }
    // Kopf's `fully_handled_once`: only a finished (or handler-less) cycle ends the resuming.
    out.fully_handled = done_or_skip;
    out.delay = handling::next_delay(out.delay, daemons_exiting);
    let settled = handling::settle(&situation, finalizer, done_or_skip, out.delay);
    if settled != finalizer
        && let Some(line) = settled.log_line()
    {
        log.debug(line);
    }

    if !patch.is_empty() {
        settings.progress.touch(body, &mut patch, None);
    }
    out.quiet_echo = done_or_skip
        && essence_kept
        && out.delay.is_none()
        && !deleting
        && groups.events.is_empty()
        && groups.spawned.is_empty();
    let written = calls::write(env, res, &log, body, patch, Some(settled)).await;
    let diff = essence.diff;
    let end = CycleEnd {
        deleting,
        handling: matches!(changing_cause, Some(Cause::Handle(_))),
        done: done_or_skip,
        no_cause: changing_cause.is_none(),
    };
    let subject = Subject::of(res.served.name(), body);
    let mut view = views::cycle_view(subject, cause_name(detected), &end, views, Timestamp::now());
    out.written = match written {
        Ok(written) => written,
        Err(message) => {
            // Nothing of this cycle was stored: the page must not say it was handled.
            views::not_stored(&mut view, &message);
            Written::Nothing
        }
    };
    if end.replaces_view() || view.phase == ObjectPhase::Failed {
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

struct CycleCtx<'a> {
    env: &'a Context,
    res: &'a ResourceCtx,
    log: &'a Log<'a>,
    body: &'a Value,
    now: Timestamp,
    reason: Reason,
    essence: &'a Essence,
}

struct Handled {
    done: bool,
    /// The cycle's write leaves the essence as it is (see `Essence::kept_by`).
    essence_kept: bool,
    delay: Option<Duration>,
    views: Vec<HandlerView>,
}

/// Kopf's `process_changing_cause` for one of the handler reasons: calls the due handlers and
/// stores their records.
///
/// # Errors
/// A stored progress record is unreadable (the object is then refused).
async fn handle(
    ctx: &CycleCtx<'_>,
    changing: &[&Bound],
    view: &CauseView<'_>,
    predicted: &mut Arc<Value>,
    patch: &mut MergePatch,
) -> Result<Handled, LoadError> {
    let CycleCtx {
        env,
        log,
        body,
        now,
        reason,
        ..
    } = *ctx;
    let storage = &env.settings.progress;
    let selection = Selection::of(changing, view);
    let prepared = handling::prepare(storage, body, reason, ctx.essence, &selection, now, patch)?;
    log.lines(&prepared.lines);
    let mut state = prepared.state;
    if selection.ids.is_empty() {
        return Ok(Handled {
            done: true,
            essence_kept: false,
            delay: None,
            views: Vec::new(),
        });
    }

    for bound in selection.due(&state, now) {
        let Some(hs) = state.get(&bound.handler.id).cloned() else {
            continue;
        };
        match run_one(ctx, bound, &hs, predicted, patch).await {
            Some(ran) => {
                // `stopped` and `delayed` count from the outcome, not from the cycle's start
                // (Kopf's `with_outcome`): a slow handler's retry is not due early.
                let finished = Timestamp::now();
                let next = if ran.attempted {
                    hs.with_verdict(&ran.verdict, &ran.subrefs, finished)
                } else {
                    hs.with_undelivered(&ran.verdict, finished)
                };
                state.set(&bound.handler.id, next);
            }
            None => {
                // Not matched by a callback filter: as if not selected.
                let mut passive = hs;
                passive.active = false;
                state.set(&bound.handler.id, passive);
            }
        }
    }
    state.store(storage, body, patch);
    // The views: the cycle's handlers, each followed by its sub-handlers as this cycle leaves
    // them (their records are in the patch, not yet on the body).
    let mut after = body.clone();
    patch.apply_to(&mut after);
    let mut views = Vec::new();
    for (id, s) in state.handlers.iter().filter(|(_, s)| s.active) {
        let mut view = handler_view(id, s, now);
        view.trace_id = env.readmodel.attempts.last_trace(meta(body, "uid"), id);
        views.push(view);
        if let Ok(subs) = State::load(storage, &after, s.subrefs.iter().map(String::as_str), now) {
            views.extend(subs.handlers.iter().map(|(id, s)| handler_view(id, s, now)));
        }
    }
    // Kept by the read model for as long as the object is watched: no spare capacity.
    views.shrink_to_fit();
    let settings = &env.settings;
    let essence_kept =
        ctx.essence
            .kept_by(&settings.diffbase, storage, &after, &ctx.res.extra_fields);
    let concluded = handling::conclude(&state, storage, body, patch, &selection.owned, reason, now);
    if let Some(line) = &concluded.line {
        log.info(line);
    }
    Ok(Handled {
        essence_kept,
        done: concluded.done,
        delay: concluded.delay,
        views,
    })
}

/// Calls one change handler in its `handler` span ([`calls::handler_span`]). `None` means "not
/// matched".
async fn run_one(
    ctx: &CycleCtx<'_>,
    bound: &Bound,
    hs: &HandlerState,
    predicted: &mut Arc<Value>,
    patch: &mut MergePatch,
) -> Option<Ran> {
    let span = calls::handler_span(
        ctx.env,
        meta(ctx.body, "uid"),
        &bound.handler.id,
        hs.retries,
    );
    let traceparent = telemetry::traceparent(&span);
    let result = run_one_traced(ctx, bound, hs, predicted, patch, traceparent)
        .instrument(span.clone())
        .await;
    let handler = (meta(ctx.body, "uid"), bound.handler.id.as_str());
    calls::record_outcome(ctx.env, handler, &span, result.as_ref().map(|r| &r.verdict));
    result
}

/// What one call of a change handler left.
struct Ran {
    /// The verdict on it.
    verdict: Verdict,
    /// The sub-handlers it ran (for the parent's `subrefs`).
    subrefs: Vec<String>,
    /// Whether it counts as an attempt (a call that never reached the service does not).
    attempted: bool,
}

impl Ran {
    fn attempt(verdict: Verdict, subrefs: Vec<String>) -> Self {
        Ran {
            verdict,
            subrefs,
            attempted: true,
        }
    }
}

/// Calls one change handler and absorbs its answer: its patch, Events, sub-handlers and result;
/// the sub-handlers' records are stored. `None` means "not matched".
async fn run_one_traced(
    ctx: &CycleCtx<'_>,
    bound: &Bound,
    hs: &HandlerState,
    predicted: &mut Arc<Value>,
    patch: &mut MergePatch,
    traceparent: Option<String>,
) -> Option<Ran> {
    let CycleCtx {
        env,
        res,
        log,
        body,
        now,
        reason,
        essence,
    } = *ctx;
    let handler = &bound.handler;
    let storage = &env.settings.progress;
    let backoff = env.settings.default_backoff;
    let progress = Progress {
        retries: hs.retries,
        runtime: hs.runtime(now),
    };
    log.debug(&format!("{} is invoked.", outcome::title(handler)));
    if let Some(verdict) = outcome::precheck(handler, progress) {
        calls::report(env, log, body, progress.retries, &verdict).await;
        return Some(Ran::attempt(verdict, Vec::new()));
    }
    let mut subs =
        State::load(storage, body, hs.subrefs.iter().map(String::as_str), now).unwrap_or_default();
    let change = calls::Change {
        reason,
        essence,
        uid: meta(body, "uid"),
    };
    let attempt = calls::Attempt {
        bound,
        state: hs,
        subs: &subs,
        runtime: progress.runtime,
    };
    let (answer, seconds) = calls::invoke_change(
        env,
        res,
        &change,
        &attempt,
        Arc::clone(predicted),
        traceparent,
    )
    .await;
    let (result, sub_answers) = match answer {
        Ok(answer) => {
            let Some(result) = answer.result else {
                env.metrics.handler(&handler.id, "not_matched", seconds);
                return None;
            };
            if let Some(handler_patch) = &answer.patch {
                if let Err(problem) = handling::check_handler_patch(handler_patch) {
                    let refused = handling::refused(&problem);
                    let verdict = outcome::judge(handler, progress, refused, backoff);
                    env.metrics.handler(&handler.id, "error", seconds);
                    calls::report(env, log, body, progress.retries, &verdict).await;
                    return Some(Ran::attempt(verdict, Vec::new()));
                }
                handling::apply_handler_patch(handler_patch, Arc::make_mut(predicted), patch);
            }
            calls::post_events(env, log, body, &answer.events).await;
            (result, answer.subhandlers)
        }
        Err(err) if err.undelivered() => {
            let delay = handler.options.backoff.unwrap_or(backoff);
            let verdict = outcome::undelivered(&outcome::title(handler), err.to_string(), delay);
            env.metrics.handler(&handler.id, "error", seconds);
            calls::report(env, log, body, progress.retries, &verdict).await;
            return Some(Ran {
                verdict,
                subrefs: Vec::new(),
                attempted: false,
            });
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
    let absorbed = if sub_answers.is_empty() {
        handling::Absorbed::default()
    } else {
        handling::absorb_subhandlers(
            handler,
            reason,
            &mut subs,
            sub_answers,
            now,
            Timestamp::now(),
            backoff,
            Arc::make_mut(predicted),
            patch,
        )
    };
    log.lines(&absorbed.lines);

    let verdict = outcome::judge(handler, progress, result, backoff);
    env.metrics
        .handler(&handler.id, handling::outcome_label(&verdict), seconds);
    calls::report(env, log, body, progress.retries, &verdict).await;
    if let Some(value) = verdict.result() {
        handling::deliver_result(&handler.id, value, Arc::make_mut(predicted), patch);
    }
    subs.store(storage, body, patch);
    Some(Ran::attempt(verdict, absorbed.subrefs))
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

#[cfg(test)]
mod tests;
