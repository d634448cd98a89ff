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
//!
//! # Parts
//! Each with one job; they share what they need through `Arc`s, and every decision is in
//! [`crate::core::tasks`].
//! - `snapshot::Registry`: the registrations and their stores; every task as seen (`Seen`).
//! - `pass::Pass`: the loop and what it remembers between passes; does what
//!   [`crate::core::tasks::PassMemory::look`] decides about every task not running, and claims
//!   a worker for every parent with queued tasks.
//! - `pool::Pool`: the workers' slots (which task each runs, how to cancel it) and the tasks
//!   ended here; chooses a parent's next task ([`crate::core::tasks::next`]).
//! - `worker::Worker`: one turn on a parent: its lock, its next task read fresh
//!   ([`crate::core::tasks::start`]), the finalizer, the parent, phase Running, the run, the end.
//! - `call::Run`: one run of a task: the service call and its stream, its steps.
//! - `writes::Writes`: the writes about tasks (status, finalizer, deletion, Events).

mod call;
mod pass;
mod pool;
mod snapshot;
mod view;
mod worker;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::reflector::{Store, store::Writer};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::runtime::context::Context;
use crate::runtime::discovery::Served;
use crate::runtime::ports::TaskPort;
use crate::runtime::watching::{Subscription, reflect};

pub(crate) use crate::runtime::ports::TaskSpec;

/// One registration, resolved and watched.
pub(super) struct Reg {
    /// The registration.
    spec: TaskSpec,
    /// Its service's task handlers.
    port: Arc<dyn TaskPort>,
    /// The task resource.
    task: Served,
    /// The parent resource.
    parent: Served,
    /// The task resource's stores.
    stores: Vec<Store<DynamicObject>>,
}

impl Reg {
    fn retention(&self, env: &Context) -> Duration {
        self.spec.retention.unwrap_or(env.task_retention)
    }
}

fn text<'a>(body: &'a Value, pointer: &str) -> &'a str {
    body.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The watches of one task registration: its resources, resolved, and one shared-watch
/// subscription per served scope of the task resource (the engine makes them before the watches
/// start).
#[derive(Debug)]
pub(crate) struct Watched {
    /// The task resource.
    pub task: Served,
    /// The parents' resource (read, not watched).
    pub parent: Served,
    /// The task resource's subscriptions.
    pub tasks: Vec<Subscription>,
}

/// Runs the controller of the task registrations `specs` (each with the task handlers of its
/// service and its watches) until aborted. A registration whose task resource has no status
/// subresource is skipped with an error.
pub(crate) async fn serve(env: Arc<Context>, specs: Vec<(TaskSpec, Arc<dyn TaskPort>, Watched)>) {
    if specs.is_empty() {
        return;
    }
    let (wake, rx) = mpsc::unbounded_channel::<()>();
    let mut watches = tokio::task::JoinSet::new();
    let mut regs = Vec::new();
    for (spec, port, watched) in specs {
        let Watched {
            task,
            parent,
            tasks: subscriptions,
        } = watched;
        if !task.has_status {
            tracing::error!(task = %spec.id, resource = %task.name(), "Cannot serve a task registration: the task resource has no status subresource (its CRD needs `subresources: {{status: {{}}}}`).");
            // Not served: nothing to wait for.
            for mut subscription in subscriptions {
                subscription.listed();
            }
            continue;
        }
        let mut stores = Vec::new();
        for subscription in subscriptions {
            let writer = Writer::new(task.resource.clone());
            stores.push(writer.as_reader());
            let wake = wake.clone();
            watches.spawn(reflect(subscription, writer, move |_| {
                let _ = wake.send(());
            }));
        }
        tracing::info!(task = %spec.id, resource = %task.name(), parent = %parent.name(), mode = ?spec.mode, "Serving the task registration.");
        regs.push(Reg {
            port,
            spec,
            task,
            parent,
            stores,
        });
    }
    for store in regs.iter().flat_map(|r| &r.stores) {
        let _ = store.wait_until_ready().await;
    }
    // A standby (leader election) or a paused replica (peering) keeps its caches warm only.
    env.active.wait().await;
    let finalizer = format!("{}/task", env.prefix);
    let registry = Arc::new(snapshot::Registry {
        regs,
        finalizer: finalizer.clone(),
    });
    let writes = Arc::new(writes::Writes {
        env: Arc::clone(&env),
        finalizer,
    });
    let pool = Arc::new(pool::Pool::new(wake));
    let worker = Arc::new(worker::Worker {
        env: Arc::clone(&env),
        registry: Arc::clone(&registry),
        writes: Arc::clone(&writes),
        pool: Arc::clone(&pool),
    });
    pass::Pass::new(env, registry, writes, pool, worker)
        .run(rx)
        .await;
    watches.shutdown().await;
}
