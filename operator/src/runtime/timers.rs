//! Timers (`@kopf.timer`): one task per matching object and timer handler, calling the handler
//! every `interval` (after `initial_delay`; only after `idle` seconds without an essential change;
//! on a sharp schedule if asked), never overlapping itself. Timers keep no progress on the object
//! (as in Kopf); their results go to `status.<id>` and their patches are applied at once.
//!
//! What a tick's answer means, and when the next tick comes, is decided in `core::timers`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::daemons::Wanted;
use crate::core::outcome;
use crate::core::patch::{self, MergePatch};
use crate::core::timers::{self, Tick};
use crate::core::views::RunKind;
use crate::runtime::context::{Bound, Context, ResourceCtx};
use crate::runtime::kit::{Locked, meta};
use crate::runtime::patching;
use crate::runtime::ports::Call;
use crate::runtime::readmodel::ReadModel;

/// A timer of one object: `(resource, namespace, name, handler id)`.
type TimerKey = (String, String, String, String);

struct Running {
    body: watch::Sender<Arc<Value>>,
    changed: watch::Sender<Instant>,
    task: JoinHandle<()>,
}

/// The running timers of the core.
#[derive(Default)]
pub(crate) struct Timers {
    running: Mutex<HashMap<TimerKey, Running>>,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers").finish_non_exhaustive()
    }
}

impl Timers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TimerKey, Running>> {
        self.running.locked()
    }

    /// Makes exactly `wanted` run for this object: starts the missing ones, gives the running
    /// ones the new body (and restarts their idle clock on an essential change), stops the rest.
    pub(crate) fn sync(
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
                ns.to_owned(),
                name.to_owned(),
                bound.handler.id.clone(),
            );
            let timer = running.get(&key);
            match timers::wanted(timer.map(|t| t.task.is_finished())) {
                Wanted::Feed => {
                    if let Some(timer) = timer {
                        timer.body.send_replace(Arc::clone(body));
                        if essential_change {
                            timer.changed.send_replace(Instant::now());
                        }
                    }
                }
                Wanted::Leave => {} // it ended (it never does on its own): leave it
                Wanted::Start => {
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
    pub(crate) fn stop_object(&self, res: &ResourceCtx, body: &Value) {
        self.sync_none(
            &res.served.name(),
            meta(body, "namespace"),
            meta(body, "name"),
        );
    }

    /// Stops every timer of object `ns`/`name` of the resource `plural.group` (in any version):
    /// the object is handed over to another shard.
    pub(crate) fn stop_handed_over(&self, resource: &str, ns: &str, name: &str) {
        self.lock().retain(|(r, n, o, _), timer| {
            let keep = unversioned(r) != resource || n != ns || o != name;
            if !keep {
                timer.task.abort();
            }
            keep
        });
    }

    /// Stops every timer (the core stops, or reloads its handlers).
    pub(crate) fn stop_all(&self) {
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

/// `plural.group` of a resource's `plural.group/version` name.
pub(crate) fn unversioned(resource: &str) -> &str {
    resource.rsplit_once('/').map_or(resource, |(r, _)| r)
}

fn log(object: &str, level: outcome::Level, message: &str) {
    match level {
        outcome::Level::Debug => tracing::debug!(target: "kopf.objects", object, "{message}"),
        outcome::Level::Info => tracing::info!(target: "kopf.objects", object, "{message}"),
        outcome::Level::Error => tracing::error!(target: "kopf.objects", object, "{message}"),
    }
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
    let interval = timers::interval(options);
    let backoff = options.backoff.unwrap_or(env.settings.default_backoff);
    let key = {
        let body = body.borrow();
        ReadModel::key(
            &res.served.name(),
            meta(&body, "namespace"),
            meta(&body, "name"),
        )
    };
    // Its row on the object page's "Daemons and timers" panel, while this task lives.
    let shown =
        (env.readmodel.runs).start(key, &handler.id, RunKind::Timer, jiff::Timestamp::now());
    let next = |wait: std::time::Duration| {
        let now = jiff::Timestamp::now();
        let at = now.checked_add(wait).unwrap_or(now);
        env.readmodel.runs.next(shown.key(), &handler.id, at);
    };
    if let Some(delay) = options.initial_delay {
        next(delay);
        tokio::time::sleep(delay).await;
    }
    let mut schedule = Instant::now();
    let mut attempt: Option<(u32, jiff::Timestamp)> = None;
    loop {
        loop {
            let since = changed.borrow().elapsed();
            let Some(left) = timers::idle_left(options.idle, since) else {
                break;
            };
            tokio::time::sleep(left).await;
        }
        let current = Arc::clone(&body.borrow());
        let object = format!("{}/{}", meta(&current, "namespace"), meta(&current, "name"));
        // Within one tick, failed attempts count up and keep their start, as in Kopf.
        let started = *attempt.get_or_insert((0, jiff::Timestamp::now()));
        let outcome = tick(
            &env,
            (&res, shown.key()),
            &bound,
            &current,
            &object,
            started,
        )
        .await;
        attempt = timers::next_attempt(outcome, started);
        let pause = timers::pause(outcome, interval, backoff);
        let slot = timers::next_slot(options.sharp, pause, interval, schedule, Instant::now());
        next(slot.map_or(pause, |s| s.saturating_duration_since(Instant::now())));
        match slot {
            Some(slot) => {
                schedule = slot;
                tokio::time::sleep_until(schedule).await;
            }
            None => {
                tokio::time::sleep(pause).await;
                schedule = Instant::now();
            }
        }
    }
}

async fn tick(
    env: &Context,
    (res, key): (&ResourceCtx, &str),
    bound: &Bound,
    body: &Arc<Value>,
    object: &str,
    (retry, started): (u32, jiff::Timestamp),
) -> Tick {
    let handler = &bound.handler;
    let title = timers::title(&handler.id);
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
            Arc::clone(body),
            handler
                .options
                .call_timeout
                .unwrap_or(env.settings.call_timeout),
            res.resolved(),
        )
    };
    let uid = meta(body, "uid");
    let cx = crate::telemetry::span_context(&span);
    (env.readmodel.attempts).tick(uid, &handler.id, retry, cx, jiff::Timestamp::now());
    env.readmodel.runs.call(key, &handler.id, retry);
    let started = std::time::Instant::now();
    env.metrics.inflight(1);
    let answer = tracing::Instrument::instrument(bound.service.invoke(call), span).await;
    env.metrics.inflight(-1);
    let seconds = started.elapsed().as_secs_f64();
    let (judged, mut changes) = match answer {
        Ok(answer) => {
            let mut changes = MergePatch::new();
            if let Some(p) = &answer.patch {
                changes.merge_from(p);
            }
            let judged =
                timers::judge(&title, handler, answer.result, env.settings.default_backoff);
            (judged, changes)
        }
        Err(err) => (
            timers::failed_call(&title, &err.to_string()),
            MergePatch::new(),
        ),
    };
    if let Some(label) = judged.label {
        env.metrics.handler(&handler.id, label, seconds);
    }
    let (outcome, delay) = timers::shown(&judged);
    let why = judged
        .log
        .as_ref()
        .filter(|(level, _)| *level == outcome::Level::Error);
    let why = why.map(|(_, line)| line.as_str());
    let now = jiff::Timestamp::now();
    (env.readmodel.attempts).end(uid, &handler.id, outcome, delay, why, now);
    (env.readmodel.runs).ended(key, &handler.id, outcome, why, now);
    if let Some((level, line)) = &judged.log {
        log(object, *level, line);
    }
    if let Some(value) = &judged.result {
        changes.merge_from(&patch::status_result(&handler.id, value));
    }
    if !changes.is_empty()
        && let Err(err) = patching::write(env, res, body, changes, None).await
    {
        log(
            object,
            outcome::Level::Error,
            &format!("{title}: patching failed: {err}"),
        );
    }
    judged.tick
}
