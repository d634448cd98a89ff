//! The pass: the controller's loop. A pass runs after every change, worker end and due expiry;
//! it does what [`crate::core::tasks::PassMemory::look`] decides about every task not running
//! and starts a worker for every parent with queued tasks and none yet.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::pool::Pool;
use super::snapshot::Registry;
use super::view::{publish, publish_parents};
use super::worker::Worker;
use super::writes::Writes;
use crate::core::tasks::{
    InPass, PASS_AT_MOST, PassMemory, RETRY_SOON, RETRY_WRITES_AFTER, Shown, Todo,
};
use crate::runtime::context::Context;
use crate::runtime::locks::LockKey;

/// The loop and what it remembers between passes.
pub(super) struct Pass {
    /// The client, metrics and read model.
    env: Arc<Context>,
    /// The registrations and their stores.
    registry: Arc<Registry>,
    /// The writes about tasks.
    writes: Arc<Writes>,
    /// The workers' slots.
    pool: Arc<Pool>,
    /// What every worker does.
    worker: Arc<Worker>,
    /// The writes made, by task.
    memory: PassMemory,
    /// Read-model keys published.
    published: HashSet<(String, String, String)>,
    /// The read-model keys of the parents whose tasks are listed.
    parents: HashSet<String>,
    /// The running workers.
    workers: JoinSet<()>,
}

impl Pass {
    /// A pass over `registry`'s tasks, with its parts.
    pub(super) fn new(
        env: Arc<Context>,
        registry: Arc<Registry>,
        writes: Arc<Writes>,
        pool: Arc<Pool>,
        worker: Arc<Worker>,
    ) -> Self {
        Self {
            env,
            registry,
            writes,
            pool,
            worker,
            memory: PassMemory::default(),
            published: HashSet::new(),
            parents: HashSet::new(),
            workers: JoinSet::new(),
        }
    }

    /// The loop: a pass after every change, worker end and due expiry.
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<()>) {
        loop {
            let wait = self.pass().await;
            tokio::select! {
                woken = rx.recv() => {
                    if woken.is_none() {
                        return;
                    }
                    while rx.try_recv().is_ok() {}
                }
                Some(done) = self.workers.join_next() => {
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

    /// Does what is decided about every task not running, and starts a worker for every parent
    /// with queued tasks and none yet. Returns how long to sleep at most.
    async fn pass(&mut self) -> Duration {
        let seen = self.registry.snapshot();
        let present: HashSet<&str> = seen.iter().map(|t| t.uid.as_str()).collect();
        self.memory.keep_only(&present);
        // A running task that is deleted (or gone) is cancelled.
        let busy = self.pool.sweep(&seen, &present);
        let now = Timestamp::now();
        let mut wait = PASS_AT_MOST;
        let mut queued: BTreeSet<LockKey> = BTreeSet::new();
        let mut published = HashSet::new();
        let mut served = Vec::new();
        for t in &seen {
            let reg = &self.registry.regs[t.reg];
            // Sharding: the tasks of another shard's parents are its own to run and record.
            if let (Some(shard), Some(parent)) = (&self.env.shard, &t.parent)
                && !shard.may_work_on(parent, &reg.parent)
            {
                continue;
            }
            published.insert((reg.task.name(), t.namespace.clone(), t.name.clone()));
            served.push(t);
            let task = InPass {
                uid: &t.uid,
                observed: &t.observed,
                running: busy.running.contains_key(&t.uid),
                ended_here: busy.ended.contains(&t.uid),
            };
            let look = self
                .memory
                .look(task, reg.retention(&self.env), now, Instant::now());
            if look.show {
                let shown = Shown {
                    namespace: &t.namespace,
                    name: &t.name,
                    uid: &t.uid,
                    started: t.observed.status.start_time,
                };
                publish(
                    &self.env.readmodel,
                    reg,
                    &shown,
                    t.observed.status.phase,
                    t.observed.status.message.as_deref(),
                    &t.observed.status.steps,
                );
            }
            match look.todo {
                Todo::Nothing => {}
                Todo::MarkWaiting => {
                    if let Err(err) = self.writes.mark_waiting(reg, t).await {
                        tracing::warn!(namespace = %t.namespace, task = %t.name, error = %err, "Cannot mark the task Waiting; retrying.");
                        self.memory.unmark(&t.uid);
                        wait = wait.min(RETRY_SOON);
                    }
                }
                Todo::Queue => {
                    if let Some(parent) = &t.parent {
                        queued.insert(parent.clone());
                    }
                }
                Todo::Fail(ending) => {
                    self.pool.end(t.uid.clone());
                    self.writes
                        .end(reg, &t.body, None, &ending, &[], None)
                        .await;
                }
                Todo::RecordCancelled(ending) => {
                    let steps = &t.observed.status.steps;
                    let started = t.observed.status.start_time;
                    self.writes
                        .end(reg, &t.body, started, &ending, steps, None)
                        .await;
                }
                Todo::ReleaseFinalizer => {
                    if let Err(err) = self
                        .writes
                        .remove_finalizer(reg, &t.namespace, &t.name)
                        .await
                    {
                        tracing::warn!(namespace = %t.namespace, task = %t.name, error = %err, "Cannot release the task's finalizer; retrying soon.");
                        wait = wait.min(RETRY_WRITES_AFTER);
                    }
                }
                Todo::Expire => self.writes.expire(reg, t).await,
                Todo::WaitAtMost(left) => wait = wait.min(left),
            }
        }
        for gone in self.published.difference(&published) {
            self.env.readmodel.remove(&gone.0, &gone.1, &gone.2);
        }
        self.published = published;
        publish_parents(
            &self.env.readmodel,
            &self.registry,
            &served,
            &busy.running,
            &mut self.parents,
        );
        for parent in self.pool.claim(queued) {
            self.workers.spawn(Arc::clone(&self.worker).work(parent));
        }
        wait
    }
}
