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

use crate::core::outcome::{self, CallResult, Level, Outcome, Progress};
use crate::core::patch::MergePatch;
use crate::runtime::context::{Bound, Context, ResourceCtx};
use crate::runtime::events;
use crate::runtime::kit::Locked;
use crate::runtime::patching;
use crate::runtime::ports::{Call, DaemonInput, Error as DispatchError, StopReason};

/// A daemon of one object: `(resource, namespace, name, handler id)`.
type DaemonKey = (String, String, String, String);

/// The longest pause between restarts after the handler service failed.
const MAX_TRANSPORT_BACKOFF: Duration = Duration::from_secs(60);

/// How a daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// On its own (success, permanent failure, retries used up): never again for this object.
    ForGood,
    /// Stopped by the core: it may start again when the object matches again.
    OnRequest,
}

struct Running {
    uid: String,
    body: watch::Sender<Arc<Value>>,
    stop: watch::Sender<Option<StopReason>>,
    end: Arc<OnceLock<End>>,
    task: JoinHandle<()>,
}

impl Running {
    fn finished(&self) -> bool {
        self.end.get().is_some() || self.task.is_finished()
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
pub struct Daemons {
    running: Mutex<HashMap<DaemonKey, Running>>,
}

impl std::fmt::Debug for Daemons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemons").finish_non_exhaustive()
    }
}

fn meta(body: &Value, field: &str) -> String {
    body.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn object_of(body: &Value) -> String {
    let (ns, name) = (meta(body, "namespace"), meta(body, "name"));
    if ns.is_empty() {
        name
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
    pub fn sync(
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
            let is_wanted = daemon.uid == uid && wanted.iter().any(|b| &b.handler.id == id);
            if is_wanted {
                return true;
            }
            daemon.request_stop(StopReason::FiltersMismatch);
            // Keep it while it is exiting: never two of one daemon at a time.
            !daemon.finished()
        });
        for bound in wanted {
            let key = (
                resource.clone(),
                ns.clone(),
                name.clone(),
                bound.handler.id.clone(),
            );
            if let Some(daemon) = running.get(&key) {
                match daemon.end.get() {
                    None if daemon.task.is_finished() => {} // it panicked: start it again
                    None if daemon.stop.borrow().is_some() => continue, // exiting
                    None => {
                        daemon.body.send_replace(Arc::clone(body));
                        continue;
                    }
                    Some(End::ForGood) => continue, // as in Kopf: not until the core restarts
                    Some(End::OnRequest) => {}
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
                    uid: uid.clone(),
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
    pub fn stop_object(&self, res: &ResourceCtx, body: &Value) -> bool {
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
    pub fn forget_object(&self, res: &ResourceCtx, body: &Value) {
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

    /// Stops every daemon (the core stops, or reloads its handlers) and waits for them — each
    /// within its own cancellation options, all within `grace`; then cancels what remains.
    pub async fn stop_all(&self, grace: Duration) {
        let daemons: Vec<Running> = self.lock().drain().map(|(_, d)| d).collect();
        for daemon in &daemons {
            daemon.request_stop(StopReason::OperatorExiting);
        }
        let deadline = Instant::now() + grace;
        for daemon in daemons {
            let mut task = daemon.task;
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
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
    let mut daemon = Daemon {
        object,
        title: format!("Daemon {}", outcome::py_repr(&bound.handler.id)),
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

/// Where the stopping ladder is.
#[derive(Debug, Clone, Copy)]
enum Ladder {
    Running,
    /// The `stopped` flag is set; cancel at this time, if ever.
    Signalled(Option<Instant>),
    /// Cancelled; abandon at this time, if ever.
    Cancelled(Option<Instant>),
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
        let mut transport_backoff = Duration::from_secs(1);
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
            let attempt = self.attempt(retry, started).await;
            let seconds = call_started.elapsed().as_secs_f64();
            match attempt {
                Attempt::Exited(None) => return End::OnRequest,
                Attempt::Exited(Some(result)) => {
                    transport_backoff = Duration::from_secs(1);
                    let verdict = outcome::judge_as(
                        &self.title,
                        &handler,
                        progress,
                        result,
                        self.env.settings.default_backoff,
                    );
                    let label = match verdict.outcome {
                        Outcome::Succeeded { .. } => "success",
                        Outcome::Failed { .. } => "failure",
                        Outcome::Retry { .. } | Outcome::Pending { .. } => "retry",
                    };
                    self.env.metrics.handler(&handler.id, label, seconds);
                    self.log(verdict.log.0, &verdict.log.1);
                    if let Some(value) = verdict.result().cloned() {
                        let patch = json!({"status": {handler.id.clone(): value}});
                        self.apply(Some(patch), &[]).await;
                    }
                    if self.stop_requested() {
                        self.log(
                            Level::Debug,
                            &format!(
                                "{} has exited on request and will not be retried or restarted.",
                                self.title
                            ),
                        );
                        return End::OnRequest;
                    }
                    if verdict.is_finished() {
                        self.log(
                            Level::Debug,
                            &format!(
                                "{} has exited on its own and will not be retried or restarted.",
                                self.title
                            ),
                        );
                        return End::ForGood;
                    }
                    if self
                        .sleep_or_stop(verdict.delay().unwrap_or_default())
                        .await
                    {
                        return End::OnRequest;
                    }
                    retry += 1;
                }
                Attempt::Stopped => return End::OnRequest,
                Attempt::Failed(err) => {
                    self.env.metrics.handler(&handler.id, "error", seconds);
                    let message = format!(
                        "{} could not run: {err}. It will be started again in {} seconds.",
                        self.title,
                        transport_backoff.as_secs()
                    );
                    self.log(Level::Error, &message);
                    let body = Arc::clone(&self.body.borrow());
                    events::post(&self.env, &body, "Warning", "DaemonFailed", &message).await;
                    if self.sleep_or_stop(transport_backoff).await {
                        return End::OnRequest;
                    }
                    transport_backoff = (transport_backoff * 2).min(MAX_TRANSPORT_BACKOFF);
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
            body: (*body).clone(),
            old: None,
            new: None,
            diff: json!([]),
            retry,
            started: Some(started),
            subhandlers: Vec::new(),
            event_type: String::new(),
            attempt_id: format!(
                "{}/{}/daemon/{retry}/{}",
                meta(&body, "uid"),
                handler.id,
                started.as_millisecond()
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
            let next = match ladder {
                Ladder::Running => None,
                Ladder::Signalled(at) | Ladder::Cancelled(at) => at,
            };
            let running = matches!(ladder, Ladder::Running);
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
                    if backoff.is_some() {
                        self.log(Level::Debug, &format!("{} is signalled to exit gracefully.", self.title));
                    }
                    // As in Kopf, only a daemon with a cancellation timeout is ever cancelled.
                    let cancel_at = Instant::now() + backoff.unwrap_or_default();
                    ladder = Ladder::Signalled(timeout.map(|_| cancel_at));
                }
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    match ladder {
                        Ladder::Signalled(_) => {
                            self.log(Level::Debug, &format!("{} is signalled to exit by force.", self.title));
                            let reason = (*self.stop.borrow()).unwrap_or(StopReason::OperatorExiting);
                            let _ = inputs.send(DaemonInput::Stop { reason, force: true }).await;
                            ladder = Ladder::Cancelled(timeout.map(|t| Instant::now() + t));
                        }
                        Ladder::Cancelled(_) | Ladder::Running => {
                            tracing::warn!(target: "kopf.objects", object = self.object.as_str(),
                                "{} did not exit in time. Leaving it orphaned.", self.title);
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
                    Some(Err(_)) | None if !running => return Attempt::Stopped,
                    Some(Err(err)) => return Attempt::Failed(err),
                    None => {
                        return Attempt::Failed(DispatchError::Transport(tonic::Status::unavailable(
                            "the daemon's call ended without an outcome",
                        )));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use kube::api::ApiResource;

    use super::*;
    use crate::core::model::{Handler, HandlerKind, Options};
    use crate::core::persistence::{DiffBaseStorage, KeyConvention, ProgressStorage};
    use crate::runtime::context::Settings;
    use crate::runtime::discovery::Served;
    use crate::runtime::ports::{Answer, DaemonOutput, DaemonOutputs, HandlerPort, Manifest};

    /// What the fake service's daemon does in one call.
    #[derive(Debug, Clone, Copy)]
    enum Script {
        /// Exits at once with this outcome.
        Exit(fn() -> CallResult),
        /// Runs until a stop of this force (or never), then ends without an outcome.
        UntilStop(Option<bool>),
    }

    /// Per call of the fake: its retry, and what came down the call at what (paused) time.
    type Calls = Arc<Mutex<Vec<(u32, Vec<(String, Instant)>)>>>;

    #[derive(Default)]
    struct Fake {
        scripts: Mutex<VecDeque<Script>>,
        calls: Calls,
    }

    #[tonic::async_trait]
    impl HandlerPort for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        async fn describe(&self) -> Result<Manifest, DispatchError> {
            unimplemented!()
        }
        async fn invoke(&self, _: Call) -> Result<Answer, DispatchError> {
            unimplemented!()
        }
        async fn daemon(
            &self,
            call: Call,
            mut inputs: mpsc::Receiver<DaemonInput>,
        ) -> Result<DaemonOutputs, DispatchError> {
            let script = self
                .scripts
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Script::UntilStop(None));
            let calls = Arc::clone(&self.calls);
            let index = {
                let mut calls = calls.lock().unwrap();
                calls.push((call.retry, Vec::new()));
                calls.len() - 1
            };
            let (tx, mut rx) = mpsc::channel(4);
            tokio::spawn(async move {
                match script {
                    Script::Exit(result) => {
                        let _ = tx
                            .send(Ok(DaemonOutput {
                                patch: None,
                                events: Vec::new(),
                                exit: Some(Some(result())),
                            }))
                            .await;
                    }
                    Script::UntilStop(on) => {
                        while let Some(input) = inputs.recv().await {
                            let (text, force) = match input {
                                DaemonInput::Body(_) => ("body".to_owned(), None),
                                DaemonInput::Stop { reason, force } => {
                                    (format!("stop {reason:?} force={force}"), Some(force))
                                }
                            };
                            calls.lock().unwrap()[index].1.push((text, Instant::now()));
                            if force.is_some() && force == on {
                                return; // ends the call without an outcome
                            }
                        }
                    }
                }
                drop(tx);
            });
            Ok(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
        }
    }

    fn env() -> Arc<Context> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let convention = KeyConvention::new("kopf.zalando.org", true).unwrap();
        Arc::new(Context {
            client: kube::Client::try_from(config).unwrap(),
            settings: Settings {
                diffbase: DiffBaseStorage::new(convention.clone(), "last-handled-configuration"),
                progress: ProgressStorage::new(convention),
                finalizer: "kopf.zalando.org/KopfFinalizerMarker".into(),
                default_backoff: Duration::from_secs(60),
                call_timeout: Duration::from_secs(60),
            },
            metrics: Arc::default(),
            readmodel: Arc::default(),
            locks: Default::default(),
            namespaces: Vec::new(),
            prefix: "kopf.zalando.org".into(),
            callback_base: String::new(),
            tls: None,
            task_retention: Duration::from_secs(60),
        })
    }

    fn bound(fake: &Arc<Fake>, options: Options) -> (Arc<ResourceCtx>, Bound) {
        let bound = Bound {
            handler: Handler {
                id: "d1".into(),
                kind: HandlerKind::Daemon,
                filters: Default::default(),
                has_callback_filters: false,
                options,
            },
            service: Arc::clone(fake) as Arc<dyn HandlerPort>,
        };
        let res = Arc::new(ResourceCtx {
            served: Served {
                resource: ApiResource {
                    group: "kopf.dev".into(),
                    version: "v1".into(),
                    api_version: "kopf.dev/v1".into(),
                    kind: "KopfExample".into(),
                    plural: "kopfexamples".into(),
                },
                namespaced: true,
                has_status: false,
            },
            handlers: vec![bound.clone()],
            indexers: Vec::new(),
            extra_fields: Vec::new(),
        });
        (res, bound)
    }

    fn body() -> Arc<Value> {
        Arc::new(json!({"metadata": {"namespace": "ns", "name": "obj", "uid": "u1"}}))
    }

    /// Lets the spawned tasks run on the paused clock for `d`.
    async fn pass(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn temporary_errors_restart_it_with_a_higher_retry_and_success_ends_it_for_good() {
        let fake = Arc::new(Fake::default());
        fake.scripts.lock().unwrap().extend([
            Script::Exit(|| CallResult::Temporary {
                message: "later".into(),
                delay: Some(Duration::from_secs(5)),
            }),
            Script::Exit(|| CallResult::Arbitrary {
                message: "boom".into(),
            }),
            Script::Exit(|| CallResult::Success(None)),
        ]);
        let (env, (res, bound)) = (env(), bound(&fake, Options::default()));
        let daemons = Daemons::default();
        let body = body();
        daemons.sync(&env, &res, &body, &[&bound]);
        pass(Duration::from_secs(4)).await;
        assert_eq!(fake.calls.lock().unwrap().len(), 1, "the delay is kept");
        pass(Duration::from_secs(2)).await;
        assert_eq!(fake.calls.lock().unwrap().len(), 2);
        pass(Duration::from_secs(61)).await; // the default backoff of an arbitrary error
        let retries: Vec<u32> = fake.calls.lock().unwrap().iter().map(|c| c.0).collect();
        assert_eq!(retries, vec![0, 1, 2]);
        assert_eq!(env.metrics.daemons_running(), 0);
        // Ended for good: another cycle does not start it again.
        daemons.sync(&env, &res, &body, &[&bound]);
        pass(Duration::from_secs(5)).await;
        assert_eq!(fake.calls.lock().unwrap().len(), 3);
        assert!(!daemons.stop_object(&res, &body));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_sets_the_flag_then_cancels_after_the_backoff_and_holds_until_the_exit() {
        let fake = Arc::new(Fake::default());
        fake.scripts
            .lock()
            .unwrap()
            .push_back(Script::UntilStop(Some(true)));
        let options = Options {
            cancellation_backoff: Some(Duration::from_secs(2)),
            cancellation_timeout: Some(Duration::from_secs(10)),
            ..Options::default()
        };
        let (env, (res, bound)) = (env(), bound(&fake, options));
        let daemons = Daemons::default();
        let body = body();
        daemons.sync(&env, &res, &body, &[&bound]);
        pass(Duration::from_secs(1)).await;
        assert_eq!(env.metrics.daemons_running(), 1);
        let fresh = Arc::new(
            json!({"metadata": {"namespace": "ns", "name": "obj", "uid": "u1"}, "spec": {"x": 1}}),
        );
        daemons.sync(&env, &res, &fresh, &[&bound]);
        pass(Duration::from_millis(10)).await;
        assert!(daemons.stop_object(&res, &body), "it is still exiting");
        pass(Duration::from_secs(1)).await;
        assert!(
            daemons.stop_object(&res, &body),
            "the flag alone does not stop it"
        );
        pass(Duration::from_secs(2)).await;
        assert!(
            !daemons.stop_object(&res, &body),
            "cancelled, it has exited"
        );
        let calls = fake.calls.lock().unwrap().clone();
        let seen: Vec<&str> = calls[0].1.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            seen,
            [
                "body",
                "stop ResourceDeleted force=false",
                "stop ResourceDeleted force=true"
            ]
        );
        let (graceful, forced) = (calls[0].1[1].1, calls[0].1[2].1);
        assert_eq!(forced - graceful, Duration::from_secs(2));
        // Deleted, it is not started again.
        assert_eq!(calls.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_cancellation_timeout_it_is_never_cancelled_and_the_deletion_waits() {
        let fake = Arc::new(Fake::default());
        fake.scripts
            .lock()
            .unwrap()
            .push_back(Script::UntilStop(Some(true)));
        let options = Options {
            cancellation_backoff: Some(Duration::from_secs(1)),
            ..Options::default()
        };
        let (env, (res, bound)) = (env(), bound(&fake, options));
        let daemons = Daemons::default();
        let body = body();
        daemons.sync(&env, &res, &body, &[&bound]);
        pass(Duration::from_secs(1)).await;
        assert!(daemons.stop_object(&res, &body));
        pass(Duration::from_secs(600)).await;
        assert!(daemons.stop_object(&res, &body), "still waited for");
        let calls = fake.calls.lock().unwrap().clone();
        let seen: Vec<&str> = calls[0].1.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(seen, ["stop ResourceDeleted force=false"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemon_that_ignores_every_stop_is_abandoned_after_the_cancellation_timeout() {
        let fake = Arc::new(Fake::default());
        let options = Options {
            cancellation_timeout: Some(Duration::from_secs(3)),
            ..Options::default()
        };
        let (env, (res, bound)) = (env(), bound(&fake, options));
        let daemons = Daemons::default();
        let body = body();
        daemons.sync(&env, &res, &body, &[&bound]);
        pass(Duration::from_secs(1)).await;
        assert!(daemons.stop_object(&res, &body));
        pass(Duration::from_secs(2)).await;
        assert!(daemons.stop_object(&res, &body));
        pass(Duration::from_secs(2)).await;
        assert!(!daemons.stop_object(&res, &body), "abandoned");
        let calls = fake.calls.lock().unwrap().clone();
        let seen: Vec<&str> = calls[0].1.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            seen,
            [
                "stop ResourceDeleted force=false",
                "stop ResourceDeleted force=true"
            ],
            "no backoff: cancelled at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn filters_that_stop_matching_stop_it_and_matching_again_starts_it_again() {
        let fake = Arc::new(Fake::default());
        fake.scripts.lock().unwrap().extend([
            Script::UntilStop(Some(false)),
            Script::UntilStop(Some(false)),
        ]);
        let (env, (res, bound)) = (env(), bound(&fake, Options::default()));
        let daemons = Daemons::default();
        let body = body();
        daemons.sync(&env, &res, &body, &[&bound]);
        pass(Duration::from_secs(1)).await;
        daemons.sync(&env, &res, &body, &[]);
        pass(Duration::from_secs(1)).await;
        daemons.sync(&env, &res, &body, &[&bound]);
        pass(Duration::from_secs(1)).await;
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].1[0].0, "stop FiltersMismatch force=false");
        daemons.stop_all(Duration::from_secs(5)).await;
        assert_eq!(env.metrics.daemons_running(), 0);
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(calls[1].1[0].0, "stop OperatorExiting force=false");
    }
}
