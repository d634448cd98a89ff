//! Daemons (`@kopf.daemon`): one long-running `Daemon` call per matching object and daemon
//! handler, fed with every new version of the object, as Kopf runs them.
//!
//! # Guarantees
//! - A daemon starts (after `initial_delay`) for every matching object that is not being
//!   deleted, and sees the object live: every new body goes down the open call.
//! - When the daemon's function ends, its outcome is judged as Kopf judges it: a success or a
//!   permanent failure ends it for good (it is not started again for that object while the core
//!   runs); a temporary or arbitrary error restarts it after the delay or backoff, with `retry`
//!   one higher, within the handler's retries and timeout.
//! - Stopping follows Kopf's ladder: the `stopped` flag first; if the handler has a
//!   `cancellation_timeout`, the daemon is cancelled after its `cancellation_backoff` (at once
//!   without one) and abandoned (the call is cancelled) `cancellation_timeout` after that.
//!   Without a timeout the core waits for the daemon for as long as it takes — and, when the
//!   object is being deleted, keeps its finalizer until every daemon has exited.
//! - A handler service that fails (down, broken stream) is logged, reported as a Warning Event
//!   and the daemon is started again after a growing backoff; nothing of it stops the core.
//! - Patches and Events a daemon sends are applied and posted as they come.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::daemons::{self, AfterExit, End, Ended, Known, Ladder, Rung, TRANSPORT, Wanted};
use crate::core::outcome::{self, CallResult, Level, Progress};
use crate::core::patch::{self, MergePatch};
use crate::core::views::{AttemptOutcome, RunKind};
use crate::runtime::context::{Bound, Context, ResourceCtx};
use crate::runtime::events;
use crate::runtime::kit::{Locked, meta};
use crate::runtime::patching;
use crate::runtime::ports::{Call, DaemonInput, Error as DispatchError, StopReason};
use crate::runtime::readmodel::{ReadModel, runs::Shown};

/// A daemon of one object: `(resource, namespace, name, handler id)`.
type DaemonKey = (String, String, String, String);

struct Running {
    uid: String,
    body: watch::Sender<Arc<Value>>,
    stop: watch::Sender<Option<StopReason>>,
    end: Arc<OnceLock<End>>,
    task: JoinHandle<()>,
}

impl Running {
    fn known(&self) -> Known {
        Known {
            end: self.end.get().copied(),
            task_finished: self.task.is_finished(),
            stopping: self.stop.borrow().is_some(),
        }
    }

    fn finished(&self) -> bool {
        self.known().finished()
    }

    fn request_stop(&self, reason: StopReason) {
        self.stop.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }
}

/// The running daemons of the core.
#[derive(Default)]
pub(crate) struct Daemons {
    running: Mutex<HashMap<DaemonKey, Running>>,
}

impl std::fmt::Debug for Daemons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemons").finish_non_exhaustive()
    }
}

fn meta_of(body: &watch::Receiver<Arc<Value>>, key: &str) -> String {
    meta(&body.borrow(), key).to_owned()
}

fn object_of(body: &Value) -> String {
    let (ns, name) = (meta(body, "namespace"), meta(body, "name"));
    if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    }
}

impl Daemons {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DaemonKey, Running>> {
        self.running.locked()
    }

    /// Makes exactly `wanted` run for this (living) object: starts the missing ones, gives the
    /// running ones the new body, and stops the others (their filters no longer match).
    pub(crate) fn sync(
        &self,
        env: &Arc<Context>,
        res: &Arc<ResourceCtx>,
        body: &Arc<Value>,
        wanted: &[&Bound],
    ) {
        let (resource, ns, name, uid) = (
            res.served.name(),
            meta(body, "namespace"),
            meta(body, "name"),
            meta(body, "uid"),
        );
        let mut running = self.lock();
        running.retain(|(r, n, o, id), daemon| {
            if *r != resource || *n != ns || *o != name {
                return true;
            }
            let handler_wanted = wanted.iter().any(|b| &b.handler.id == id);
            if daemons::still_wanted(&daemon.uid, uid, handler_wanted) {
                return true;
            }
            daemon.request_stop(StopReason::FiltersMismatch);
            // Keep it while it is exiting: never two of one daemon at a time.
            !daemon.finished()
        });
        for bound in wanted {
            let key = (
                resource.clone(),
                ns.to_owned(),
                name.to_owned(),
                bound.handler.id.clone(),
            );
            let daemon = running.get(&key);
            match daemons::wanted(daemon.map(Running::known)) {
                Wanted::Start => {}
                Wanted::Leave => continue,
                Wanted::Feed => {
                    if let Some(daemon) = daemon {
                        daemon.body.send_replace(Arc::clone(body));
                    }
                    continue;
                }
            }
            let (body_tx, body_rx) = watch::channel(Arc::clone(body));
            let (stop_tx, stop_rx) = watch::channel(None);
            let end = Arc::new(OnceLock::new());
            let task = tokio::spawn(run(
                Arc::clone(env),
                Arc::clone(res),
                (*bound).clone(),
                body_rx,
                stop_rx,
                Arc::clone(&end),
            ));
            running.insert(
                key,
                Running {
                    uid: uid.to_owned(),
                    body: body_tx,
                    stop: stop_tx,
                    end,
                    task,
                },
            );
        }
    }

    /// Asks every daemon of the object to stop (it is being deleted); true while any of them has
    /// not exited yet — the object's finalizer must stay until then.
    pub(crate) fn stop_object(&self, res: &ResourceCtx, body: &Value) -> bool {
        let (resource, ns, name) = (
            res.served.name(),
            meta(body, "namespace"),
            meta(body, "name"),
        );
        let running = self.lock();
        let mut exiting = false;
        for ((r, n, o, _), daemon) in running.iter() {
            if *r == resource && *n == ns && *o == name && !daemon.finished() {
                daemon.request_stop(StopReason::ResourceDeleted);
                exiting = true;
            }
        }
        exiting
    }

    /// The object is gone: stop its daemons and forget them.
    pub(crate) fn forget_object(&self, res: &ResourceCtx, body: &Value) {
        let (resource, ns, name) = (
            res.served.name(),
            meta(body, "namespace"),
            meta(body, "name"),
        );
        self.lock().retain(|(r, n, o, _), daemon| {
            let keep = *r != resource || *n != ns || *o != name;
            if !keep {
                daemon.request_stop(StopReason::ResourceDeleted);
            }
            keep
        });
    }

    /// Stops the daemons of object `ns`/`name` of the resource `plural.group` (in any version)
    /// and waits for them to exit — each within its own cancellation options, all within
    /// `grace`, then cancels what remains: the object is handed over to another shard, whose
    /// daemons must not overlap with ours.
    pub(crate) async fn stop_handed_over(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        grace: Duration,
    ) {
        let daemons: Vec<Running> = self
            .lock()
            .extract_if(|(r, n, o, _), _| {
                crate::runtime::timers::unversioned(r) == resource && n == ns && o == name
            })
            .map(|(_, d)| d)
            .collect();
        if !stop_and_wait(daemons, grace).await {
            tracing::warn!(object = %format!("{ns}/{name}"), "A daemon did not exit in time before its object was handed over; it was cancelled.");
        }
    }

    /// Stops every daemon (the core stops, or reloads its handlers) and waits for them — each
    /// within its own cancellation options, all within `grace`; then cancels what remains.
    pub(crate) async fn stop_all(&self, grace: Duration) {
        let daemons: Vec<Running> = self.lock().drain().map(|(_, d)| d).collect();
        stop_and_wait(daemons, grace).await;
    }
}

/// Asks `daemons` to stop (the operator exits, for them) and waits for them, all within `grace`,
/// then cancels what remains; `false` when some had to be cancelled.
async fn stop_and_wait(daemons: Vec<Running>, grace: Duration) -> bool {
    for daemon in &daemons {
        daemon.request_stop(StopReason::OperatorExiting);
    }
    let deadline = Instant::now() + grace;
    let mut all_exited = true;
    for daemon in daemons {
        let mut task = daemon.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
            all_exited = false;
        }
    }
    all_exited
}

async fn run(
    env: Arc<Context>,
    res: Arc<ResourceCtx>,
    bound: Bound,
    body: watch::Receiver<Arc<Value>>,
    stop: watch::Receiver<Option<StopReason>>,
    end: Arc<OnceLock<End>>,
) {
    env.metrics.daemons(1);
    let object = object_of(&body.borrow());
    let key = ReadModel::key(
        &res.served.name(),
        &meta_of(&body, "namespace"),
        &meta_of(&body, "name"),
    );
    let now = jiff::Timestamp::now();
    let shown = (env.readmodel.runs).start(key, &bound.handler.id, RunKind::Daemon, now);
    let mut daemon = Daemon {
        shown,
        object,
        title: daemons::title(&bound.handler.id),
        env,
        res,
        bound,
        body,
        stop,
    };
    let ended = daemon.guard().await;
    let _ = end.set(ended);
    daemon.env.metrics.daemons(-1);
}

/// One daemon of one object, across its restarts.
struct Daemon {
    env: Arc<Context>,
    res: Arc<ResourceCtx>,
    bound: Bound,
    object: String,
    /// Its row on the object page's "Daemons and timers" panel.
    shown: Shown,
    title: String,
    body: watch::Receiver<Arc<Value>>,
    stop: watch::Receiver<Option<StopReason>>,
}

/// How one call of the daemon ended.
enum Attempt {
    /// The function returned or raised (`None`: a callback filter said no).
    Exited(Option<CallResult>),
    /// It ended after a stop request without saying how, or was abandoned.
    Stopped,
    /// The handler service failed.
    Failed(DispatchError),
}

/// How a call that ended without an outcome counts (see [`daemons::ended`]).
fn attempt_ended(ladder: &Ladder<Instant>, error: Option<DispatchError>) -> Attempt {
    match daemons::ended(ladder, error) {
        Ended::Stopped => Attempt::Stopped,
        Ended::Failed(Some(err)) => Attempt::Failed(err),
        Ended::Failed(None) => Attempt::Failed(DispatchError::Transport(
            tonic::Status::unavailable("the daemon's call ended without an outcome"),
        )),
    }
}

impl Daemon {
    fn log(&self, level: Level, message: &str) {
        let object = self.object.as_str();
        match level {
            Level::Debug => tracing::debug!(target: "kopf.objects", object, "{message}"),
            Level::Info => tracing::info!(target: "kopf.objects", object, "{message}"),
            Level::Error => tracing::error!(target: "kopf.objects", object, "{message}"),
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Sleeps, unless a stop comes first; true when it did.
    async fn sleep_or_stop(&mut self, delay: Duration) -> bool {
        if self.stop_requested() {
            return true;
        }
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => self.stop_requested(),
            () = async { let _ = stop.wait_for(Option::is_some).await; } => true,
        }
    }

    /// Runs the daemon until it ends for good or is stopped.
    async fn guard(&mut self) -> End {
        let handler = self.bound.handler.clone();
        if let Some(delay) = handler.options.initial_delay
            && self.sleep_or_stop(delay).await
        {
            return End::OnRequest;
        }
        let started = jiff::Timestamp::now();
        let clock = Instant::now();
        let mut retry = 0u32;
        let mut transport_backoff = TRANSPORT.first;
        loop {
            if self.stop_requested() {
                return End::OnRequest;
            }
            let progress = Progress {
                retries: retry,
                runtime: clock.elapsed(),
            };
            if let Some(verdict) = outcome::precheck_as(&self.title, &handler, progress) {
                self.log(verdict.log.0, &verdict.log.1);
                return End::ForGood;
            }
            self.log(Level::Debug, &format!("{} is invoked.", self.title));
            let call_started = std::time::Instant::now();
            // The read model's timeline: each run of the daemon, its restarts and why.
            let (env, uid) = (
                Arc::clone(&self.env),
                meta(&self.body.borrow(), "uid").to_owned(),
            );
            let now = jiff::Timestamp::now();
            env.readmodel
                .attempts
                .begin(&uid, &handler.id, retry, None, now);
            let key = self.shown.key().to_owned();
            env.readmodel.runs.call(&key, &handler.id, retry);
            let noted = |outcome, delay, message: Option<&str>| {
                let now = jiff::Timestamp::now();
                (env.readmodel.attempts).end(&uid, &handler.id, outcome, delay, message, now);
                (env.readmodel.runs).ended(&key, &handler.id, outcome, message, now);
            };
            let attempt = self.attempt(retry, started).await;
            let seconds = call_started.elapsed().as_secs_f64();
            match attempt {
                Attempt::Exited(None) => {
                    noted(AttemptOutcome::NotMatched, None, None);
                    return End::OnRequest;
                }
                Attempt::Exited(Some(result)) => {
                    transport_backoff = TRANSPORT.first;
                    let verdict = outcome::judge_as(
                        &self.title,
                        &handler,
                        progress,
                        result,
                        self.env.settings.default_backoff,
                    );
                    let label = daemons::outcome_label(&verdict);
                    self.env.metrics.handler(&handler.id, label, seconds);
                    let why = verdict.failure().or_else(|| verdict.message());
                    noted(AttemptOutcome::of(&verdict.outcome), verdict.delay(), why);
                    self.log(verdict.log.0, &verdict.log.1);
                    if let Some(value) = verdict.result() {
                        let patch = patch::status_result(&handler.id, value);
                        self.apply(Some(patch), &[]).await;
                    }
                    match daemons::after_exit(&self.title, &verdict, self.stop_requested()) {
                        AfterExit::End(end, line) => {
                            self.log(Level::Debug, &line);
                            return end;
                        }
                        AfterExit::Restart(delay) => {
                            if self.sleep_or_stop(delay).await {
                                return End::OnRequest;
                            }
                        }
                    }
                    retry += 1;
                }
                Attempt::Stopped => {
                    noted(AttemptOutcome::Stopped, None, None);
                    return End::OnRequest;
                }
                Attempt::Failed(err) => {
                    self.env.metrics.handler(&handler.id, "error", seconds);
                    let why = err.to_string();
                    noted(
                        AttemptOutcome::Retrying,
                        Some(transport_backoff),
                        Some(&why),
                    );
                    let message = daemons::transport_failure(
                        &self.title,
                        &err.to_string(),
                        transport_backoff,
                    );
                    self.log(Level::Error, &message);
                    let body = Arc::clone(&self.body.borrow());
                    events::post(&self.env, &body, "Warning", "DaemonFailed", &message).await;
                    if self.sleep_or_stop(transport_backoff).await {
                        return End::OnRequest;
                    }
                    transport_backoff = TRANSPORT.next(transport_backoff);
                }
            }
        }
    }

    /// Applies a daemon's patch and posts its events.
    async fn apply(&self, patch: Option<Value>, requests: &[crate::runtime::ports::EventRequest]) {
        let body = Arc::clone(&self.body.borrow());
        if let Some(patch) = patch {
            let mut merge = MergePatch::new();
            merge.merge_from(&patch);
            if let Err(err) = patching::write(&self.env, &self.res, &body, merge, None).await {
                self.log(
                    Level::Error,
                    &format!("{}: patching failed: {err}", self.title),
                );
            }
        }
        for e in requests {
            let target = e.involved_object.as_ref().unwrap_or(&body);
            if !events::post(&self.env, target, &e.type_, &e.reason, &e.message).await {
                self.log(
                    Level::Debug,
                    &format!("Failed to post an event: {}", e.message),
                );
            }
        }
    }

    /// One call of the daemon, from its start to its exit (or its abandonment).
    async fn attempt(&mut self, retry: u32, started: jiff::Timestamp) -> Attempt {
        let handler = &self.bound.handler;
        let body = Arc::clone(&self.body.borrow_and_update());
        let call = Call {
            handler_id: handler.id.clone(),
            reason: None,
            body: Arc::clone(&body),
            old: None,
            new: None,
            diff: json!([]),
            retry,
            started: Some(started),
            subhandlers: Vec::new(),
            event_type: String::new(),
            attempt_id: daemons::attempt_id(
                meta(&body, "uid"),
                &handler.id,
                retry,
                started.as_millisecond(),
            ),
            deadline: Duration::ZERO,
            traceparent: None,
            resource: Some(self.res.resolved()),
        };
        let (inputs, receiver) = mpsc::channel(16);
        let mut outputs = match self.bound.service.daemon(call, receiver).await {
            Ok(outputs) => outputs,
            Err(err) => return Attempt::Failed(err),
        };
        let (backoff, timeout) = (
            handler.options.cancellation_backoff,
            handler.options.cancellation_timeout,
        );
        let mut ladder = Ladder::Running;
        let mut body_open = true;
        let (mut body_rx, mut stop_rx) = (self.body.clone(), self.stop.clone());
        loop {
            let next = ladder.due();
            let running = ladder.is_running();
            tokio::select! {
                changed = body_rx.changed(), if body_open => {
                    if changed.is_ok() {
                        let fresh = Arc::clone(&body_rx.borrow_and_update());
                        let _ = inputs.send(DaemonInput::Body(fresh)).await;
                    } else {
                        body_open = false;
                    }
                }
                reason = async { stop_rx.wait_for(Option::is_some).await.ok().and_then(|r| *r) }, if running => {
                    let reason = reason.unwrap_or(StopReason::OperatorExiting);
                    let _ = inputs.send(DaemonInput::Stop { reason, force: false }).await;
                    let (signalled, line) = Ladder::signalled(&self.title, backoff, timeout, Instant::now());
                    if let Some(line) = line {
                        self.log(Level::Debug, &line);
                    }
                    ladder = signalled;
                }
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    match ladder.climb(&self.title, timeout) {
                        Rung::Cancel(abandon_after, line) => {
                            self.log(Level::Debug, &line);
                            let reason = (*self.stop.borrow()).unwrap_or(StopReason::OperatorExiting);
                            let _ = inputs.send(DaemonInput::Stop { reason, force: true }).await;
                            ladder = Ladder::cancelled(abandon_after, Instant::now());
                        }
                        Rung::Abandon(line) => {
                            tracing::warn!(target: "kopf.objects", object = self.object.as_str(), "{line}");
                            return Attempt::Stopped; // dropping the call cancels it
                        }
                    }
                }
                message = outputs.next() => match message {
                    Some(Ok(output)) => {
                        self.apply(output.patch, &output.events).await;
                        if let Some(exit) = output.exit {
                            return Attempt::Exited(exit);
                        }
                    }
                    Some(Err(err)) => return attempt_ended(&ladder, Some(err)),
                    None => return attempt_ended(&ladder, None),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
