//! Timers (`@kopf.timer`): one task per matching object and timer handler, calling the handler
//! every `interval` (after `initial_delay`; only after `idle` seconds without an essential change;
//! on a sharp schedule if asked), never overlapping itself. Timers keep no progress on the object
//! (as in Kopf); their results go to `status.<id>` and their patches are applied at once.
//!
//! A permanent failure (or an arbitrary error with `errors=PERMANENT`) ends only the current tick:
//! as in Kopf 1.45.2's code (its timer loop resets the handler's state and goes on), the timer
//! ticks again after its interval — although Kopf's documentation says a timer stops then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::model::{ErrorsMode, Handler};
use crate::core::outcome::{self, CallResult};
use crate::core::patch::MergePatch;
use crate::runtime::context::{Bound, Context, ResourceCtx};
use crate::runtime::kit::Locked;
use crate::runtime::patching;
use crate::runtime::ports::Call;

/// A timer of one object: `(resource, namespace, name, handler id)`.
type TimerKey = (String, String, String, String);

/// Kopf's default interval when a timer names none.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

struct Running {
    body: watch::Sender<Arc<Value>>,
    changed: watch::Sender<Instant>,
    task: JoinHandle<()>,
}

/// The running timers of the core.
#[derive(Default)]
pub struct Timers {
    running: Mutex<HashMap<TimerKey, Running>>,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers").finish_non_exhaustive()
    }
}

fn meta(body: &Value, field: &str) -> String {
    body.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl Timers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TimerKey, Running>> {
        self.running.locked()
    }

    /// Makes exactly `wanted` run for this object: starts the missing ones, gives the running
    /// ones the new body (and restarts their idle clock on an essential change), stops the rest.
    pub fn sync(
        &self,
        env: &Arc<Context>,
        res: &Arc<ResourceCtx>,
        body: &Arc<Value>,
        essential_change: bool,
        wanted: &[&Bound],
    ) {
        let (resource, ns, name) = (
            res.served.name(),
            meta(body, "namespace"),
            meta(body, "name"),
        );
        let mut running = self.lock();
        running.retain(|(r, n, o, id), timer| {
            let keep = *r != resource
                || *n != ns
                || *o != name
                || wanted.iter().any(|b| &b.handler.id == id);
            if !keep {
                timer.task.abort();
            }
            keep
        });
        for bound in wanted {
            let key = (
                resource.clone(),
                ns.clone(),
                name.clone(),
                bound.handler.id.clone(),
            );
            match running.get(&key) {
                Some(timer) if !timer.task.is_finished() => {
                    timer.body.send_replace(Arc::clone(body));
                    if essential_change {
                        timer.changed.send_replace(Instant::now());
                    }
                }
                Some(_) => {} // it ended (it never does on its own): leave it
                None => {
                    let (body_tx, body_rx) = watch::channel(Arc::clone(body));
                    let (changed_tx, changed_rx) = watch::channel(Instant::now());
                    let task = tokio::spawn(run(
                        Arc::clone(env),
                        Arc::clone(res),
                        (*bound).clone(),
                        body_rx,
                        changed_rx,
                    ));
                    running.insert(
                        key,
                        Running {
                            body: body_tx,
                            changed: changed_tx,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// Stops every timer of the object (it is being deleted or is gone).
    pub fn stop_object(&self, res: &ResourceCtx, body: &Value) {
        self.sync_none(
            &res.served.name(),
            &meta(body, "namespace"),
            &meta(body, "name"),
        );
    }

    /// Stops every timer (the core stops, or reloads its handlers).
    pub fn stop_all(&self) {
        for (_, timer) in self.lock().drain() {
            timer.task.abort();
        }
    }

    fn sync_none(&self, resource: &str, ns: &str, name: &str) {
        self.lock().retain(|(r, n, o, _), timer| {
            let keep = r != resource || n != ns || o != name;
            if !keep {
                timer.task.abort();
            }
            keep
        });
    }
}

fn log(object: &str, level: outcome::Level, message: &str) {
    match level {
        outcome::Level::Debug => tracing::debug!(target: "kopf.objects", object, "{message}"),
        outcome::Level::Info => tracing::info!(target: "kopf.objects", object, "{message}"),
        outcome::Level::Error => tracing::error!(target: "kopf.objects", object, "{message}"),
    }
}

fn title(handler: &Handler) -> String {
    format!("Timer {}", outcome::py_repr(&handler.id))
}

async fn run(
    env: Arc<Context>,
    res: Arc<ResourceCtx>,
    bound: Bound,
    body: watch::Receiver<Arc<Value>>,
    changed: watch::Receiver<Instant>,
) {
    let handler = &bound.handler;
    let options = &handler.options;
    let interval = options.interval.unwrap_or(DEFAULT_INTERVAL);
    let backoff = options.backoff.unwrap_or(env.settings.default_backoff);
    if let Some(delay) = options.initial_delay {
        tokio::time::sleep(delay).await;
    }
    let mut schedule = Instant::now();
    let mut attempt: Option<(u32, jiff::Timestamp)> = None;
    loop {
        if let Some(idle) = options.idle {
            loop {
                let since = changed.borrow().elapsed();
                if since >= idle {
                    break;
                }
                tokio::time::sleep(idle - since).await;
            }
        }
        let current = Arc::clone(&body.borrow());
        let object = format!("{}/{}", meta(&current, "namespace"), meta(&current, "name"));
        // Within one tick, failed attempts count up and keep their start, as in Kopf.
        let started = *attempt.get_or_insert((0, jiff::Timestamp::now()));
        let outcome = tick(&env, &res, &bound, &current, &object, started).await;
        attempt = match outcome {
            Tick::After(_) | Tick::Backoff => Some((started.0 + 1, started.1)),
            Tick::Again => None,
        };
        let next_pause = match outcome {
            Tick::Again => interval,
            Tick::After(delay) => delay,
            Tick::Backoff => backoff,
        };
        if options.sharp && next_pause == interval {
            schedule += interval;
            if schedule < Instant::now() {
                schedule = Instant::now();
            }
            tokio::time::sleep_until(schedule).await;
        } else {
            tokio::time::sleep(next_pause).await;
            schedule = Instant::now();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Tick {
    Again,
    After(Duration),
    Backoff,
}

async fn tick(
    env: &Context,
    res: &ResourceCtx,
    bound: &Bound,
    body: &Value,
    object: &str,
    (retry, started): (u32, jiff::Timestamp),
) -> Tick {
    let handler = &bound.handler;
    let title = title(handler);
    // A tick is a root span of its own (it is no processing cycle), its call's traceparent.
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        parent: None,
        "timer",
        otel.name = format!("timer {}", handler.id),
        handler.id = %handler.id,
        object,
        attempt = i64::from(retry) + 1,
    );
    let call = Call {
        retry,
        started: Some(started),
        traceparent: crate::telemetry::traceparent(&span),
        ..Call::about(
            &handler.id,
            body.clone(),
            handler
                .options
                .call_timeout
                .unwrap_or(env.settings.call_timeout),
            res.resolved(),
        )
    };
    let started = std::time::Instant::now();
    env.metrics.inflight(1);
    let answer = tracing::Instrument::instrument(bound.service.invoke(call), span).await;
    env.metrics.inflight(-1);
    let seconds = started.elapsed().as_secs_f64();
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            env.metrics.handler(&handler.id, "error", seconds);
            log(
                object,
                outcome::Level::Error,
                &format!("{title} failed with an exception and will try again: {err}"),
            );
            return Tick::Backoff;
        }
    };
    let mut patch = MergePatch::new();
    if let Some(p) = &answer.patch {
        patch.merge_from(p);
    }
    let tick = match answer.result {
        None => Tick::Again,
        Some(CallResult::Success(result)) => {
            env.metrics.handler(&handler.id, "success", seconds);
            log(object, outcome::Level::Info, &format!("{title} succeeded."));
            if let Some(value) = result {
                patch.merge_from(&json!({"status": {handler.id.clone(): value}}));
            }
            Tick::Again
        }
        Some(CallResult::Temporary { message, delay }) => {
            env.metrics.handler(&handler.id, "retry", seconds);
            log(
                object,
                outcome::Level::Error,
                &format!("{title} failed temporarily: {message}"),
            );
            Tick::After(delay.unwrap_or_default())
        }
        Some(CallResult::Permanent { message }) => {
            env.metrics.handler(&handler.id, "failure", seconds);
            log(
                object,
                outcome::Level::Error,
                &format!("{title} failed permanently: {message}"),
            );
            Tick::Again // Kopf 1.45.2 resets and ticks on (see the module's docs)
        }
        Some(CallResult::Arbitrary { message }) => {
            env.metrics.handler(&handler.id, "failure", seconds);
            match handler.options.errors {
                ErrorsMode::Ignored => {
                    log(
                        object,
                        outcome::Level::Error,
                        &format!("{title} failed with an exception and will ignore it: {message}"),
                    );
                    Tick::Again
                }
                ErrorsMode::Permanent => {
                    log(
                        object,
                        outcome::Level::Error,
                        &format!("{title} failed with an exception and will stop now: {message}"),
                    );
                    Tick::Again // as after a permanent error
                }
                ErrorsMode::Temporary => {
                    log(
                        object,
                        outcome::Level::Error,
                        &format!(
                            "{title} failed with an exception and will try again in {} seconds: {message}",
                            backoff_text(handler, env)
                        ),
                    );
                    Tick::Backoff
                }
            }
        }
        Some(CallResult::SubhandlersPending { delay }) => Tick::After(delay.unwrap_or_default()),
    };
    if !patch.is_empty()
        && let Err(err) = patching::write(env, res, body, patch, None).await
    {
        log(
            object,
            outcome::Level::Error,
            &format!("{title}: patching failed: {err}"),
        );
    }
    tick
}

fn backoff_text(handler: &Handler, env: &Context) -> String {
    let secs = handler
        .options
        .backoff
        .unwrap_or(env.settings.default_backoff)
        .as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}")
    } else {
        format!("{secs}")
    }
}
