//! Tasks, the effects: one controller serves every task registration (`Manifest.tasks`) of the
//! described services. It watches the task resources, groups the tasks by parent (namespace and
//! the name at the registration's `parent_field`), runs one task per parent at a time through
//! `TaskService.RunTask` on the service's address, and records each task's progress in its status
//! ([`crate::core::tasks`] decides what to write).
//!
//! # Guarantees
//! - Per parent, one task runs at a time, in the order of [`crate::core::tasks::next`]: a task
//!   that was Running when the core stopped, then priority, creation time and name. The parent
//!   is chosen for, and its lock ([`crate::runtime::locks`]) taken, before the task is chosen,
//!   so a task never runs during one of the parent's handling cycles or syncs, and the order is
//!   decided when the task can actually start.
//! - A task is marked Waiting when first seen and runs only after that write. A terminal phase
//!   is never run again.
//! - A sequential task persists `status.steps` after each step; after a restart of the core it
//!   resumes at its first unfinished step (`TaskRequest.resume_from`, `done_steps`). A parallel
//!   task writes its steps once, at the end, and runs again from the start after a restart.
//! - While a task runs, it carries the finalizer `<prefix>/task`, so that deleting it is seen
//!   even across a restart of the core: the call is cancelled (the stream is dropped, which the
//!   service sees), phase Cancelled is recorded, an Event `TaskCancelled` is posted on the parent,
//!   the finalizer is released, and the parent's next task starts.
//! - A task whose parent does not exist when it is due fails at once (phase Failed, with a
//!   message naming the parent). So does a task whose `parent_field` is missing.
//! - A broken handler (an error status, a dead service, a stream that ends without `finished`,
//!   a step result that is not JSON) fails the task with the reason in `status.message`, a
//!   Warning Event `TaskFailed` and a log line; the core goes on with the next task.
//! - Finished tasks are deleted the registration's `retention` (else `--task-retention`) after
//!   their `completionTime`.
//!
//! # Caveats
//! - A task deleted while it waits simply goes: it never ran, nothing is recorded.
//! - The core's stop (SIGTERM, a reload) cancels running calls too, but records nothing: the
//!   task stays Running and is resumed (sequential) or run again (parallel) by the next core.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use operon_proto::v1 as pb;
use operon_proto::v1::task_service_client::TaskServiceClient;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::core::tasks::{
    self as decide, Action, Candidate, Ending, Mode, Observed, Phase, StepRecord, TaskStatus,
};
use crate::runtime::context::Context;
use crate::runtime::convert::{self, Selector};
use crate::runtime::discovery::{self, Served};
use crate::runtime::dispatch::GrpcService;
use crate::runtime::kit::Locked;
use crate::runtime::locks::{self, LockKey};
use crate::runtime::readmodel::{HandlerStatus, HandlerView, ObjectPhase, ObjectView};
use crate::runtime::sync::selector;

/// The default of `--task-retention`: finished tasks are kept a day.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A manifest's task registration that breaks the contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registration has no id.
    #[error("a task registration has no id")]
    EmptyId,
    /// Two registrations share an id.
    #[error("task registration {0:?} is defined twice")]
    DuplicateId(String),
    /// The task or the parent resource is not named.
    #[error("task registration {0:?} names no task resource or no parent resource")]
    NoResource(String),
    /// Two registrations share a task resource.
    #[error("task registrations {0:?} and {1:?} name the same task resource")]
    SameTaskResource(String, String),
    /// No `parent_field`.
    #[error("task registration {0:?} has no parent_field (the path naming the parent)")]
    NoParentField(String),
    /// An unknown mode.
    #[error("task registration {id:?}: unknown mode {value}")]
    Mode {
        /// The registration.
        id: String,
        /// The value sent.
        value: i32,
    },
    /// A bad duration.
    #[error("task registration {id:?}: {source}")]
    Duration {
        /// The registration.
        id: String,
        /// The problem.
        #[source]
        source: convert::Error,
    },
}

/// One task registration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Its id (`TaskRequest.task_id`).
    pub id: String,
    /// The task resource.
    pub task: Selector,
    /// The parent resource.
    pub parent: Selector,
    /// The dotted path in a task naming its parent.
    pub parent_field: String,
    /// Parallel or sequential.
    pub mode: Mode,
    /// Higher first among the waiting tasks of a parent.
    pub priority: i32,
    /// How long finished tasks are kept; `None`: the core's default.
    pub retention: Option<Duration>,
    /// A deadline for the whole call; `None`: none.
    pub timeout: Option<Duration>,
}

/// The task registrations of a manifest.
///
/// # Errors
/// The first contract violation.
pub fn registrations(m: &pb::Manifest) -> Result<Vec<TaskSpec>, Error> {
    let mut out: Vec<TaskSpec> = Vec::new();
    for t in &m.tasks {
        if t.id.is_empty() {
            return Err(Error::EmptyId);
        }
        if out.iter().any(|o| o.id == t.id) {
            return Err(Error::DuplicateId(t.id.clone()));
        }
        let (Some(task), Some(parent)) = (selector(t.task.as_ref()), selector(t.parent.as_ref()))
        else {
            return Err(Error::NoResource(t.id.clone()));
        };
        if let Some(other) = out.iter().find(|o| o.task == task) {
            return Err(Error::SameTaskResource(other.id.clone(), t.id.clone()));
        }
        if t.parent_field.trim().is_empty() {
            return Err(Error::NoParentField(t.id.clone()));
        }
        let mode = match pb::TaskMode::try_from(t.mode) {
            Ok(pb::TaskMode::Unspecified | pb::TaskMode::Parallel) => Mode::Parallel,
            Ok(pb::TaskMode::Sequential) => Mode::Sequential,
            Err(_) => {
                return Err(Error::Mode {
                    id: t.id.clone(),
                    value: t.mode,
                });
            }
        };
        let duration = |d: Option<prost_types::Duration>, what: &str| {
            d.map(|d| convert::duration(what, d))
                .transpose()
                .map(|d| d.filter(|d| !d.is_zero()))
                .map_err(|source| Error::Duration {
                    id: t.id.clone(),
                    source,
                })
        };
        out.push(TaskSpec {
            id: t.id.clone(),
            task,
            parent,
            parent_field: t.parent_field.trim().to_owned(),
            mode,
            priority: t.priority,
            retention: duration(t.retention, "retention")?,
            timeout: duration(t.timeout, "timeout")?,
        });
    }
    Ok(out)
}

/// One registration, resolved and watched.
struct Reg {
    spec: TaskSpec,
    client: TaskServiceClient<Channel>,
    task: Served,
    parent: Served,
    stores: Vec<Store<DynamicObject>>,
}

impl Reg {
    fn retention(&self, env: &Context) -> Duration {
        self.spec.retention.unwrap_or(env.task_retention)
    }
}

/// The task a parent's worker chose.
#[derive(Debug, Clone)]
struct Chosen {
    reg: usize,
    namespace: String,
    name: String,
    uid: String,
}

/// A parent with a worker.
#[derive(Debug, Default)]
struct Slot {
    task: Option<Chosen>,
    cancel: Option<oneshot::Sender<()>>,
}

/// What the controller loop and the workers share.
#[derive(Debug, Default)]
struct Shared {
    /// Parents with a worker (waiting for the parent's lock or running a task).
    slots: HashMap<LockKey, Slot>,
    /// Tasks (uids) that this core ran to their end: never started again, even while the watch
    /// does not show their end yet.
    ended: HashSet<String>,
}

struct Controller {
    env: Arc<Context>,
    regs: Vec<Reg>,
    finalizer: String,
    shared: Mutex<Shared>,
    wake: mpsc::UnboundedSender<()>,
}

/// One task as seen in the stores.
struct Seen {
    reg: usize,
    namespace: String,
    name: String,
    uid: String,
    body: Value,
    created: Option<Timestamp>,
    observed: Observed,
    parent: Option<LockKey>,
}

/// What the loop remembers between passes.
#[derive(Default)]
struct LoopState {
    /// Waiting written (or being written) by this core.
    marked: HashSet<String>,
    /// Deleted by retention, and when.
    expiring: HashMap<String, std::time::Instant>,
    /// Deletions recorded after a restart or finalizers released, and when.
    cleaned: HashMap<String, std::time::Instant>,
    /// Read-model keys published.
    published: HashSet<(String, String, String)>,
}

async fn resolve(client: &kube::Client, selector: &Selector) -> Served {
    let mut delay = Duration::from_secs(1);
    loop {
        match discovery::resolve(client, selector).await {
            Ok(served) => return served,
            Err(err) => {
                tracing::warn!(resource = %selector, error = %err, retry_in = ?delay, "Cannot serve the resource yet.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
        }
    }
}

fn api_for(client: &kube::Client, served: &Served, ns: &str) -> Api<DynamicObject> {
    if served.namespaced && !ns.is_empty() {
        Api::namespaced_with(client.clone(), ns, &served.resource)
    } else {
        Api::all_with(client.clone(), &served.resource)
    }
}

/// The object as JSON with its `apiVersion` and `kind` (items of a list come without them).
fn typed(obj: &DynamicObject, resource: &ApiResource) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), json!(resource.api_version));
        map.insert("kind".into(), json!(resource.kind));
    }
    v
}

/// How long a clean-up or a deletion that the watch does not show done yet waits before it is
/// tried again.
const RETRY_WRITES_AFTER: Duration = Duration::from_secs(10);

/// Whether a write about `uid` is due: never tried, or tried [`RETRY_WRITES_AFTER`] ago (it
/// failed, or its effect is not visible yet); records the try.
fn due(tried: &mut HashMap<String, std::time::Instant>, uid: &str) -> bool {
    let now = std::time::Instant::now();
    match tried.get(uid) {
        Some(at) if now.duration_since(*at) < RETRY_WRITES_AFTER => false,
        _ => {
            tried.insert(uid.to_owned(), now);
            true
        }
    }
}

fn text<'a>(body: &'a Value, pointer: &str) -> &'a str {
    body.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Runs the controller of the task registrations `specs` (each with the address of its service)
/// until aborted. A registration whose resources are not found is waited for; one whose task
/// resource has no status subresource, or whose address is invalid, is skipped with an error.
pub async fn serve(env: Arc<Context>, specs: Vec<(TaskSpec, String)>) {
    if specs.is_empty() {
        return;
    }
    let (wake, rx) = mpsc::unbounded_channel::<()>();
    let mut watches = tokio::task::JoinSet::new();
    let mut regs = Vec::new();
    for (spec, url) in specs {
        let channel = match GrpcService::with_tls(&url, env.tls.as_ref()) {
            Ok(service) => service.channel(),
            Err(err) => {
                tracing::error!(task = %spec.id, error = %err, "Cannot serve a task registration.");
                continue;
            }
        };
        let task = resolve(&env.client, &spec.task).await;
        let parent = resolve(&env.client, &spec.parent).await;
        if !task.has_status {
            tracing::error!(task = %spec.id, resource = %task.name(), "Cannot serve a task registration: the task resource has no status subresource (its CRD needs `subresources: {{status: {{}}}}`).");
            continue;
        }
        let scopes: Vec<Option<String>> = if task.namespaced && !env.namespaces.is_empty() {
            env.namespaces.iter().cloned().map(Some).collect()
        } else {
            vec![None]
        };
        let mut stores = Vec::new();
        for ns in scopes {
            let writer = Writer::new(task.resource.clone());
            stores.push(writer.as_reader());
            let api = api_for(&env.client, &task, ns.as_deref().unwrap_or(""));
            let wake = wake.clone();
            watches.spawn(async move {
                let mut stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .reflect(writer)
                    .boxed();
                while let Some(next) = stream.next().await {
                    match next {
                        Ok(_) => {
                            let _ = wake.send(());
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "The tasks' watch failed; retrying.");
                        }
                    }
                }
            });
        }
        tracing::info!(task = %spec.id, resource = %task.name(), parent = %parent.name(), mode = ?spec.mode, "Serving the task registration.");
        regs.push(Reg {
            client: TaskServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
            spec,
            task,
            parent,
            stores,
        });
    }
    for store in regs.iter().flat_map(|r| &r.stores) {
        let _ = store.wait_until_ready().await;
    }
    let finalizer = format!("{}/task", env.prefix);
    let controller = Arc::new(Controller {
        env,
        regs,
        finalizer,
        shared: Mutex::default(),
        wake,
    });
    controller.run(rx).await;
    watches.shutdown().await;
}

/// The request with the current span's `traceparent` in its metadata, when traced.
fn traced(request: pb::TaskRequest) -> tonic::Request<pb::TaskRequest> {
    let mut request = tonic::Request::new(request);
    if let Some(tp) = crate::telemetry::traceparent(&tracing::Span::current())
        .and_then(|tp| tonic::metadata::MetadataValue::try_from(tp).ok())
    {
        request.metadata_mut().insert("traceparent", tp);
    }
    request
}

/// How a worker's turn on a parent ended.
enum Turn {
    /// Nothing to run (the lock came too late: the task went).
    Idle,
    /// The task ran to its end (or was ended by the core).
    Ended(String),
    /// The task could not be started (an API error): try again later.
    Retry,
}

/// Removes a worker's slot when the worker ends (also when it panics or is aborted) and wakes
/// the loop.
struct SlotGuard {
    controller: Arc<Controller>,
    parent: LockKey,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.controller.shared().slots.remove(&self.parent);
        let _ = self.controller.wake.send(());
    }
}

impl Controller {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.locked()
    }

    /// The loop: a pass after every change, worker end and due expiry.
    async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<()>) {
        let mut workers = tokio::task::JoinSet::new();
        let mut state = LoopState::default();
        loop {
            let wait = self.pass(&mut state, &mut workers).await;
            tokio::select! {
                woken = rx.recv() => {
                    if woken.is_none() {
                        return;
                    }
                    while rx.try_recv().is_ok() {}
                }
                Some(done) = workers.join_next() => {
                    if let Err(err) = done
                        && err.is_panic()
                    {
                        tracing::error!(error = %err, "A task worker crashed.");
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Every task in the stores.
    fn snapshot(&self) -> Vec<Seen> {
        let mut out = Vec::new();
        for (index, reg) in self.regs.iter().enumerate() {
            for obj in reg.stores.iter().flat_map(Store::state) {
                let body = typed(&obj, &reg.task.resource);
                let namespace = obj.metadata.namespace.clone().unwrap_or_default();
                let name = obj.metadata.name.clone().unwrap_or_default();
                let parent = decide::parent_name(&body, &reg.spec.parent_field);
                let observed = Observed {
                    status: TaskStatus::of(&body),
                    deleting: obj.metadata.deletion_timestamp.is_some(),
                    finalizer: obj
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| *f == self.finalizer),
                    parent: parent.clone(),
                };
                out.push(Seen {
                    reg: index,
                    uid: obj.metadata.uid.clone().unwrap_or_default(),
                    created: obj
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .and_then(|t| t.0.to_string().parse().ok()),
                    parent: parent.ok().map(|p| locks::key(&reg.parent, &namespace, &p)),
                    namespace,
                    name,
                    body,
                    observed,
                });
            }
        }
        out
    }

    /// Decides about every task not running: marks new ones Waiting, fails unparented ones,
    /// cleans up after deletions, expires finished ones, and starts a worker for every parent
    /// with queued tasks and none yet. Returns how long to sleep at most.
    async fn pass(
        self: &Arc<Self>,
        state: &mut LoopState,
        workers: &mut tokio::task::JoinSet<()>,
    ) -> Duration {
        let seen = self.snapshot();
        let present: HashSet<&str> = seen.iter().map(|t| t.uid.as_str()).collect();
        state.marked.retain(|u| present.contains(u.as_str()));
        state.expiring.retain(|u, _| present.contains(u.as_str()));
        state.cleaned.retain(|u, _| present.contains(u.as_str()));
        let (running, ended) = {
            let mut shared = self.shared();
            shared.ended.retain(|u| present.contains(u.as_str()));
            // A running task that is deleted (or gone) is cancelled.
            let mut running = HashSet::new();
            for slot in shared.slots.values_mut() {
                let Some(chosen) = &slot.task else { continue };
                running.insert(chosen.uid.clone());
                let gone = seen
                    .iter()
                    .find(|t| t.uid == chosen.uid)
                    .is_none_or(|t| t.observed.deleting);
                if gone && let Some(cancel) = slot.cancel.take() {
                    let _ = cancel.send(());
                }
            }
            (running, shared.ended.clone())
        };
        let now = Timestamp::now();
        let mut wait = Duration::from_secs(60);
        let mut queued: BTreeSet<LockKey> = BTreeSet::new();
        let mut published = HashSet::new();
        for t in &seen {
            let reg = &self.regs[t.reg];
            published.insert((reg.task.name(), t.namespace.clone(), t.name.clone()));
            let ended_here = ended.contains(&t.uid);
            if running.contains(&t.uid) {
                continue;
            }
            // A task this core just ended shows its end (published then) until the watch
            // brings the final status.
            let stale = ended_here && !t.observed.status.phase.is_some_and(Phase::is_terminal);
            if !stale {
                let shown = Shown {
                    namespace: &t.namespace,
                    name: &t.name,
                    uid: &t.uid,
                    started: t.observed.status.start_time,
                };
                self.publish(
                    reg,
                    &shown,
                    t.observed.status.phase,
                    t.observed.status.message.as_deref(),
                    &t.observed.status.steps,
                );
            }
            match decide::decide(&t.observed, reg.retention(&self.env)) {
                Action::Nothing => {}
                Action::MarkWaiting if !ended_here && state.marked.insert(t.uid.clone()) => {
                    if let Err(err) = self.mark_waiting(t).await {
                        tracing::warn!(namespace = %t.namespace, task = %t.name, error = %err, "Cannot mark the task Waiting; retrying.");
                        state.marked.remove(&t.uid);
                        wait = wait.min(Duration::from_secs(2));
                    }
                }
                Action::MarkWaiting => {}
                Action::Queue => {
                    if !ended_here && let Some(parent) = &t.parent {
                        queued.insert(parent.clone());
                    }
                }
                Action::Fail(message) => {
                    if !ended_here {
                        self.shared().ended.insert(t.uid.clone());
                        let ending = Ending {
                            phase: Phase::Failed,
                            message,
                        };
                        self.end(t.reg, &t.body, None, &ending, &[], None).await;
                    }
                }
                Action::RecordCancelled => {
                    if due(&mut state.cleaned, &t.uid) {
                        let ending = Ending {
                            phase: Phase::Cancelled,
                            message: "cancelled: the task was deleted while it ran (the core was \
                                      not running it then)"
                                .into(),
                        };
                        let steps = t.observed.status.steps.clone();
                        let started = t.observed.status.start_time;
                        self.end(t.reg, &t.body, started, &ending, &steps, None)
                            .await;
                    }
                }
                Action::ReleaseFinalizer => {
                    if due(&mut state.cleaned, &t.uid)
                        && let Err(err) = self.remove_finalizer(t.reg, &t.namespace, &t.name).await
                    {
                        tracing::warn!(namespace = %t.namespace, task = %t.name, error = %err, "Cannot release the task's finalizer; retrying soon.");
                        wait = wait.min(RETRY_WRITES_AFTER);
                    }
                }
                Action::Expire(at) => {
                    if at <= now {
                        if due(&mut state.expiring, &t.uid) {
                            self.expire(t).await;
                        }
                    } else if let Ok(left) = Duration::try_from(at.duration_since(now)) {
                        wait = wait.min(left);
                    }
                }
            }
        }
        for gone in state.published.difference(&published) {
            self.env.readmodel.remove(&gone.0, &gone.1, &gone.2);
        }
        state.published = published;
        let fresh: Vec<LockKey> = {
            let mut shared = self.shared();
            queued
                .into_iter()
                .filter(|p| {
                    let free = !shared.slots.contains_key(p);
                    if free {
                        shared.slots.insert(p.clone(), Slot::default());
                    }
                    free
                })
                .collect()
        };
        for parent in fresh {
            let me = Arc::clone(self);
            workers.spawn(async move {
                let guard = SlotGuard {
                    controller: Arc::clone(&me),
                    parent: parent.clone(),
                };
                let turn = me.turn(&parent).await;
                match turn {
                    Turn::Ended(uid) => {
                        me.shared().ended.insert(uid);
                    }
                    Turn::Retry => tokio::time::sleep(Duration::from_secs(2)).await,
                    Turn::Idle => {}
                }
                drop(guard);
            });
        }
        wait
    }

    /// The next task of `parent` (not deleted, not ended here), registered as the slot's task
    /// with a fresh cancel channel — in one critical section with the loop's cancel checks.
    fn choose(&self, parent: &LockKey) -> Option<(Chosen, oneshot::Receiver<()>)> {
        let seen = self.snapshot();
        let mut shared = self.shared();
        let candidates: Vec<Candidate<usize>> = seen
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.parent.as_ref() == Some(parent)
                    && !t.observed.deleting
                    && !shared.ended.contains(&t.uid)
            })
            .map(|(i, t)| Candidate {
                key: i,
                priority: self.regs[t.reg].spec.priority,
                created: t.created,
                name: t.name.clone(),
                phase: t.observed.status.phase,
            })
            .collect();
        let next = decide::next(&candidates)?;
        let t = &seen[next.key];
        let chosen = Chosen {
            reg: t.reg,
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            uid: t.uid.clone(),
        };
        let (tx, rx) = oneshot::channel();
        let slot = shared.slots.entry(parent.clone()).or_default();
        slot.task = Some(chosen.clone());
        slot.cancel = Some(tx);
        Some((chosen, rx))
    }

    /// One worker turn on a parent: take its lock, choose its next task, run it.
    async fn turn(&self, parent: &LockKey) -> Turn {
        let _lock = self.env.locks.lock(parent.clone()).await;
        let Some((chosen, cancel)) = self.choose(parent) else {
            return Turn::Idle;
        };
        // One root span per run (exported when tracing is on); the call carries its
        // `traceparent`, so the service's spans join it.
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            parent: None,
            "task",
            otel.name = format!("task {}", self.regs[chosen.reg].spec.id),
            task = %self.regs[chosen.reg].spec.id,
            namespace = %chosen.namespace,
            name = %chosen.name,
            parent = %parent.2,
        );
        self.run_task(&chosen, cancel).instrument(span).await
    }

    async fn run_task(&self, chosen: &Chosen, mut cancel: oneshot::Receiver<()>) -> Turn {
        let reg = &self.regs[chosen.reg];
        let api = api_for(&self.env.client, &reg.task, &chosen.namespace);
        let obj = match api.get_opt(&chosen.name).await {
            Ok(Some(obj)) if obj.metadata.uid.as_deref() == Some(chosen.uid.as_str()) => obj,
            Ok(_) => return Turn::Idle,
            Err(err) => {
                tracing::warn!(error = %err, "Cannot read the task; retrying.");
                return Turn::Retry;
            }
        };
        let mut body = typed(&obj, &reg.task.resource);
        let status = TaskStatus::of(&body);
        if status.phase.is_some_and(Phase::is_terminal) {
            return Turn::Ended(chosen.uid.clone());
        }
        if obj.metadata.deletion_timestamp.is_some() {
            // Deleted between the choice and now: the loop's clean-up records it.
            return Turn::Idle;
        }
        let has_finalizer = obj
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| *f == self.finalizer);
        if !has_finalizer {
            match self.add_finalizer(chosen.reg, &body).await {
                Ok(fresh) => body = typed(&fresh, &reg.task.resource),
                Err(err) => {
                    tracing::warn!(error = %err, "Cannot add the task's finalizer; retrying.");
                    return Turn::Retry;
                }
            }
        }

        // The parent, as the handler gets it.
        let parent_name = decide::parent_name(&body, &reg.spec.parent_field).unwrap_or_default();
        let parent = match api_for(&self.env.client, &reg.parent, &chosen.namespace)
            .get_opt(&parent_name)
            .await
        {
            Ok(Some(p)) => typed(&p, &reg.parent.resource),
            Ok(None) => {
                let ending = Ending {
                    phase: Phase::Failed,
                    message: format!(
                        "the parent {} {parent_name:?} does not exist",
                        reg.parent.resource.kind
                    ),
                };
                self.end(chosen.reg, &body, None, &ending, &[], None).await;
                return Turn::Ended(chosen.uid.clone());
            }
            Err(err) => {
                tracing::warn!(error = %err, "Cannot read the task's parent; retrying.");
                return Turn::Retry;
            }
        };

        // Running.
        let now = Timestamp::now();
        let resume = decide::resume(reg.spec.mode, &status);
        let start = decide::running_patch(&body, reg.spec.mode, now);
        let started = start["status"]["startTime"]
            .as_str()
            .and_then(|s| s.parse::<Timestamp>().ok());
        if let Err(err) = self
            .patch_status(chosen.reg, &chosen.namespace, &chosen.name, &start)
            .await
        {
            let ending = Ending {
                phase: Phase::Failed,
                message: format!("cannot write the task's status: {err}"),
            };
            self.end(chosen.reg, &body, None, &ending, &[], Some(&parent))
                .await;
            return Turn::Ended(chosen.uid.clone());
        }
        let mut steps = resume.done.clone();
        self.publish_running(reg, chosen, started, &steps);
        tracing::info!(namespace = %chosen.namespace, task = %chosen.name, resume_from = resume.from, mode = ?reg.spec.mode, "Task started.");
        // Running until this function returns; the first start (not a resumption) also tells
        // how long the task waited since its creation.
        let created = obj
            .metadata
            .creation_timestamp
            .as_ref()
            .filter(|_| status.start_time.is_none());
        let waited = created.map(|c| now.duration_since(c.0));
        let _running = self.env.metrics.task_started(&reg.spec.id, waited);

        let request = pb::TaskRequest {
            task_id: reg.spec.id.clone(),
            task_json: serde_json::to_vec(&body).unwrap_or_default(),
            parent_json: serde_json::to_vec(&parent).unwrap_or_default(),
            resume_from: resume.from,
            done_steps: resume
                .done
                .iter()
                .map(|s| pb::StepResult {
                    index: s.index,
                    name: s.name.clone(),
                    ok: s.ok,
                    message: s.message.clone(),
                    result_json: s
                        .result
                        .as_ref()
                        .map(|r| r.to_string().into_bytes())
                        .unwrap_or_default(),
                })
                .collect(),
            attempt_id: chosen.uid.clone(),
        };
        let ending = self
            .call(chosen, request, &mut steps, &mut cancel, started)
            .await;
        self.end(chosen.reg, &body, started, &ending, &steps, Some(&parent))
            .await;
        Turn::Ended(chosen.uid.clone())
    }

    /// Calls `RunTask` and follows its stream to the end, the deadline or a cancellation
    /// (dropping the stream cancels the call). Sequential steps are persisted as they come.
    async fn call(
        &self,
        chosen: &Chosen,
        request: pb::TaskRequest,
        steps: &mut Vec<StepRecord>,
        cancel: &mut oneshot::Receiver<()>,
        started: Option<Timestamp>,
    ) -> Ending {
        let reg = &self.regs[chosen.reg];
        let deadline = reg.spec.timeout.map(|t| tokio::time::Instant::now() + t);
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        let cancelled = || Ending {
            phase: Phase::Cancelled,
            message: "cancelled: the task was deleted while it ran".into(),
        };
        let late = || Ending {
            phase: Phase::Failed,
            message: format!(
                "the task did not finish within its timeout of {:?}",
                reg.spec.timeout.unwrap_or_default()
            ),
        };
        let failed = |message: String| Ending {
            phase: Phase::Failed,
            message,
        };
        let mut client = reg.client.clone();
        let mut stream = tokio::select! {
            _ = &mut *cancel => return cancelled(),
            () = &mut expired => return late(),
            answer = client.run_task(traced(request)) => match answer {
                Ok(r) => r.into_inner(),
                Err(status) => return failed(format!("the RunTask call failed: {} ({:?})", status.message(), status.code())),
            },
        };
        loop {
            let message = tokio::select! {
                _ = &mut *cancel => return cancelled(),
                () = &mut expired => return late(),
                message = stream.message() => message,
            };
            let update = match message {
                Ok(Some(pb::TaskUpdate { update: Some(u) })) => u,
                Ok(Some(pb::TaskUpdate { update: None })) => {
                    return failed(
                        "the handler sent an update with neither a step nor the end".into(),
                    );
                }
                Ok(None) => {
                    return failed(
                        "the handler's stream ended without `finished` (the task's result)".into(),
                    );
                }
                Err(status) => {
                    return failed(format!(
                        "the RunTask call failed: {} ({:?})",
                        status.message(),
                        status.code()
                    ));
                }
            };
            match update {
                pb::task_update::Update::Finished(f) => {
                    return Ending {
                        phase: if f.ok {
                            Phase::Succeeded
                        } else {
                            Phase::Failed
                        },
                        message: f.message,
                    };
                }
                pb::task_update::Update::Step(s) => {
                    let result = if s.result_json.is_empty() {
                        None
                    } else {
                        match serde_json::from_slice::<Value>(&s.result_json) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                return failed(format!(
                                    "the result of step {} ({:?}) is not JSON: {e}",
                                    s.index, s.name
                                ));
                            }
                        }
                    };
                    tracing::info!(namespace = %chosen.namespace, task = %chosen.name, step = s.index, name = %s.name, ok = s.ok, "Task step finished.");
                    decide::record_step(
                        steps,
                        StepRecord {
                            index: s.index,
                            name: s.name,
                            ok: s.ok,
                            message: s.message,
                            result,
                        },
                    );
                    self.publish_running(reg, chosen, started, steps);
                    if reg.spec.mode == Mode::Sequential
                        && let Err(err) = self
                            .patch_status(
                                chosen.reg,
                                &chosen.namespace,
                                &chosen.name,
                                &decide::steps_patch(steps),
                            )
                            .await
                    {
                        tracing::warn!(error = %err, "Cannot persist the task's steps; going on.");
                    }
                }
            }
        }
    }

    /// Ends a task: the final status, the Events, the log line, the read model, and the
    /// finalizer released. `parent` is the parent's body when known (for the Events).
    async fn end(
        &self,
        reg: usize,
        body: &Value,
        started: Option<Timestamp>,
        ending: &Ending,
        steps: &[StepRecord],
        parent: Option<&Value>,
    ) {
        let r = &self.regs[reg];
        let ns = text(body, "/metadata/namespace");
        let name = text(body, "/metadata/name");
        let now = Timestamp::now();
        let patch = decide::finish_patch(ending, started, now, steps);
        if let Err(err) = self.patch_status(reg, ns, name, &patch).await {
            tracing::warn!(namespace = ns, task = name, error = %err, "Cannot record the task's end.");
        }
        let ran = started.map(|s| now.duration_since(s));
        self.env.metrics.task_ended(&r.spec.id, ending.phase, ran);
        let kind = &r.task.resource.kind;
        match ending.phase {
            Phase::Succeeded => {
                tracing::info!(namespace = ns, task = name, message = %ending.message, "Task succeeded.");
                self.event(
                    body,
                    "Normal",
                    "TaskSucceeded",
                    &format!("{kind} {name:?} succeeded: {}", ending.message),
                )
                .await;
            }
            Phase::Cancelled => {
                tracing::info!(
                    namespace = ns,
                    task = name,
                    steps = steps.len(),
                    "Task cancelled."
                );
                let parent = match parent {
                    Some(p) => Some(p.clone()),
                    None => self.parent_of(reg, body).await,
                };
                let message = format!(
                    "{kind} {name:?} was cancelled after {} step(s): it was deleted while it ran",
                    steps.len()
                );
                self.event(
                    parent.as_ref().unwrap_or(body),
                    "Normal",
                    "TaskCancelled",
                    &message,
                )
                .await;
            }
            Phase::Failed | Phase::Waiting | Phase::Running => {
                tracing::error!(namespace = ns, task = name, message = %ending.message, "Task failed.");
                self.event(
                    body,
                    "Warning",
                    "TaskFailed",
                    &format!("{kind} {name:?} failed: {}", ending.message),
                )
                .await;
            }
        }
        let shown = Shown {
            namespace: ns,
            name,
            uid: text(body, "/metadata/uid"),
            started,
        };
        self.publish(r, &shown, Some(ending.phase), Some(&ending.message), steps);
        if let Err(err) = self.remove_finalizer(reg, ns, name).await {
            tracing::warn!(namespace = ns, task = name, error = %err, "Cannot release the task's finalizer; the next pass retries.");
        }
    }

    async fn parent_of(&self, reg: usize, body: &Value) -> Option<Value> {
        let r = &self.regs[reg];
        let name = decide::parent_name(body, &r.spec.parent_field).ok()?;
        let ns = text(body, "/metadata/namespace");
        api_for(&self.env.client, &r.parent, ns)
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .map(|p| typed(&p, &r.parent.resource))
    }

    async fn event(&self, about: &Value, type_: &str, reason: &str, message: &str) {
        let to = crate::runtime::events::Poster {
            client: &self.env.client,
            metrics: &self.env.metrics,
            readmodel: &self.env.readmodel,
        };
        crate::runtime::events::post_to(&to, about, type_, reason, message).await;
    }

    fn count<T>(&self, verb: &'static str, result: &Result<T, kube::Error>) {
        let code = match result {
            Ok(_) => 200,
            Err(err) => crate::runtime::kit::status_code(err),
        };
        self.env.metrics.api(verb, code);
    }

    async fn patch_status(
        &self,
        reg: usize,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<(), kube::Error> {
        let api = api_for(&self.env.client, &self.regs[reg].task, ns);
        let result = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
        self.count("patch", &result);
        result.map(|_| ())
    }

    /// Writes phase Waiting, guarded by the resourceVersion seen (a concurrent start wins).
    async fn mark_waiting(&self, t: &Seen) -> Result<(), kube::Error> {
        let mut patch = decide::waiting_patch(&t.body);
        patch["metadata"] = json!({"resourceVersion": text(&t.body, "/metadata/resourceVersion")});
        self.patch_status(t.reg, &t.namespace, &t.name, &patch)
            .await
    }

    async fn add_finalizer(&self, reg: usize, body: &Value) -> Result<DynamicObject, kube::Error> {
        let rv = body
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let ops = if body
            .pointer("/metadata/finalizers")
            .is_some_and(Value::is_array)
        {
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                   {"op": "add", "path": "/metadata/finalizers/-", "value": self.finalizer}])
        } else {
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                   {"op": "add", "path": "/metadata/finalizers", "value": [self.finalizer]}])
        };
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
        let api = api_for(
            &self.env.client,
            &self.regs[reg].task,
            text(body, "/metadata/namespace"),
        );
        let result = api
            .patch(
                text(body, "/metadata/name"),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await;
        self.count("patch", &result);
        result
    }

    /// Removes our finalizer (reading the object fresh; a few tries on conflicts).
    async fn remove_finalizer(&self, reg: usize, ns: &str, name: &str) -> Result<(), kube::Error> {
        let api = api_for(&self.env.client, &self.regs[reg].task, ns);
        let mut tries = 0;
        loop {
            tries += 1;
            let Some(obj) = api.get_opt(name).await? else {
                return Ok(());
            };
            let Some(index) = obj
                .metadata
                .finalizers
                .iter()
                .flatten()
                .position(|f| *f == self.finalizer)
            else {
                return Ok(());
            };
            let ops = json!([
                {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": self.finalizer},
                {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
            ]);
            let patch: json_patch::Patch =
                serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
            let result = api
                .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await;
            self.count("patch", &result);
            match result {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if (s.code == 409 || s.code == 422) && tries < 5 => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Deletes a finished task whose retention has passed.
    async fn expire(&self, t: &Seen) {
        let api = api_for(&self.env.client, &self.regs[t.reg].task, &t.namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(t.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let result = api.delete(&t.name, &params).await;
        self.count("delete", &result);
        match result {
            Ok(_) => {
                tracing::info!(namespace = %t.namespace, task = %t.name, "Deleted a finished task after its retention.");
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => {
                tracing::warn!(namespace = %t.namespace, task = %t.name, error = %err, "Cannot delete a finished task.");
            }
        }
    }

    fn publish_running(
        &self,
        reg: &Reg,
        chosen: &Chosen,
        started: Option<Timestamp>,
        steps: &[StepRecord],
    ) {
        let shown = Shown {
            namespace: &chosen.namespace,
            name: &chosen.name,
            uid: &chosen.uid,
            started,
        };
        self.publish(reg, &shown, Some(Phase::Running), None, steps);
    }

    /// Shows a task in the read model: one row for the task, one per finished step.
    fn publish(
        &self,
        reg: &Reg,
        t: &Shown<'_>,
        phase: Option<Phase>,
        message: Option<&str>,
        steps: &[StepRecord],
    ) {
        self.env
            .readmodel
            .upsert(view(reg, t, phase, message, steps));
    }
}

/// A task as the read model shows it.
struct Shown<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    started: Option<Timestamp>,
}

/// The read model's view of a task.
fn view(
    reg: &Reg,
    t: &Shown<'_>,
    phase: Option<Phase>,
    message: Option<&str>,
    steps: &[StepRecord],
) -> ObjectView {
    let (object_phase, state) = match phase {
        None | Some(Phase::Waiting) => (ObjectPhase::Pending, HandlerStatus::Pending),
        Some(Phase::Running) => (ObjectPhase::InProgress, HandlerStatus::Pending),
        Some(Phase::Succeeded) => (ObjectPhase::Handled, HandlerStatus::Succeeded),
        Some(Phase::Failed) => (ObjectPhase::Failed, HandlerStatus::Failed),
        Some(Phase::Cancelled) => (ObjectPhase::Handled, HandlerStatus::Failed),
    };
    let phase_text = phase.map_or("New", Phase::as_str);
    let mut handlers = vec![HandlerView {
        id: reg.spec.id.clone(),
        state,
        retries: 0,
        started: t.started.map(decide::format_time),
        delayed: None,
        message: Some(match message.filter(|m| !m.is_empty()) {
            Some(m) => format!("{phase_text}: {m}"),
            None => phase_text.to_owned(),
        }),
        trace_id: None,
    }];
    handlers.extend(steps.iter().map(|s| HandlerView {
        id: if s.name.is_empty() {
            format!("{}/{}", reg.spec.id, s.index)
        } else {
            format!("{}/{}-{}", reg.spec.id, s.index, s.name)
        },
        state: if s.ok {
            HandlerStatus::Succeeded
        } else {
            HandlerStatus::Failed
        },
        retries: 0,
        started: None,
        delayed: None,
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        trace_id: None,
    }));
    ObjectView {
        resource: reg.task.name(),
        namespace: t.namespace.to_owned(),
        name: t.name.to_owned(),
        uid: t.uid.to_owned(),
        phase: object_phase,
        cause: format!("task {phase_text}"),
        handlers,
        updated: Timestamp::now().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(name: &str) -> Option<pb::ResourceSelector> {
        Some(pb::ResourceSelector {
            group: "example.com".into(),
            version: "v1".into(),
            name: name.into(),
            ..Default::default()
        })
    }

    fn manifest() -> pb::Manifest {
        pb::Manifest {
            tasks: vec![pb::TaskRegistration {
                id: "repair".into(),
                task: sel("repairs"),
                parent: sel("clusters"),
                parent_field: "spec.cluster".into(),
                mode: pb::TaskMode::Sequential as i32,
                priority: 5,
                retention: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                timeout: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn registrations_are_read() {
        let regs = registrations(&manifest()).unwrap();
        assert_eq!(regs.len(), 1);
        let r = &regs[0];
        assert_eq!(r.mode, Mode::Sequential);
        assert_eq!(r.priority, 5);
        assert_eq!(r.retention, Some(Duration::from_secs(30)));
        assert_eq!(r.timeout, None);
        assert_eq!(r.parent_field, "spec.cluster");
        let mut unspecified = manifest();
        unspecified.tasks[0].mode = 0;
        assert_eq!(registrations(&unspecified).unwrap()[0].mode, Mode::Parallel);
    }

    #[test]
    fn registrations_are_validated() {
        let broken = |edit: fn(&mut pb::TaskRegistration)| {
            let mut m = manifest();
            edit(&mut m.tasks[0]);
            registrations(&m).unwrap_err()
        };
        assert!(matches!(broken(|t| t.id.clear()), Error::EmptyId));
        assert!(matches!(broken(|t| t.task = None), Error::NoResource(_)));
        assert!(matches!(
            broken(|t| t.parent = sel("")),
            Error::NoResource(_)
        ));
        assert!(matches!(
            broken(|t| t.parent_field = " ".into()),
            Error::NoParentField(_)
        ));
        assert!(matches!(broken(|t| t.mode = 7), Error::Mode { .. }));
        assert!(matches!(
            broken(|t| t.timeout = Some(prost_types::Duration {
                seconds: -1,
                nanos: 0
            })),
            Error::Duration { .. }
        ));
        let mut twice = manifest();
        twice.tasks.push(twice.tasks[0].clone());
        assert!(matches!(registrations(&twice), Err(Error::DuplicateId(_))));
        twice.tasks[1].id = "other".into();
        let err = registrations(&twice).unwrap_err();
        assert!(matches!(err, Error::SameTaskResource(..)));
        assert!(err.to_string().contains("the same task resource"));
    }
}
