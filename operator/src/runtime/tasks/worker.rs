//! A worker: one per parent with queued tasks. It takes the parent's lock, chooses the parent's
//! next task ([`crate::core::tasks::next`]), marks it Running with the finalizer, has it run
//! ([`super::call::Run`]) and records its end.

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::oneshot;
use tracing::Instrument as _;

use super::call::Run;
use super::pool::{Chosen, Pool, SlotGuard};
use super::snapshot::Registry;
use super::view::publish_running;
use super::writes::Writes;
use crate::core::tasks::{self as decide, Ending, RETRY_SOON, Start};
use crate::runtime::context::Context;
use crate::runtime::kit::{api_for, typed};
use crate::runtime::locks::{self, LockKey};
use crate::runtime::ports::TaskRequest;

/// How a worker's turn on a parent ended.
enum Turn {
    /// Nothing to run (the lock came too late: the task went).
    Idle,
    /// The task ran to its end (or was ended by the core).
    Ended(String),
    /// The task could not be started (an API error): try again later.
    Retry,
}

/// Runs the next task of a parent.
pub(super) struct Worker {
    /// The client, locks, metrics and read model.
    pub(super) env: Arc<Context>,
    /// The registrations and their stores.
    pub(super) registry: Arc<Registry>,
    /// The writes about tasks.
    pub(super) writes: Arc<Writes>,
    /// The slots (the worker's own is freed when it ends).
    pub(super) pool: Arc<Pool>,
}

impl Worker {
    /// A worker's life on `parent`, which has a slot in the pool: one turn, then the slot is
    /// freed (also when it panics or is aborted) and the pass woken.
    pub(super) async fn work(self: Arc<Self>, parent: LockKey) {
        let guard = SlotGuard {
            pool: Arc::clone(&self.pool),
            parent: parent.clone(),
        };
        match self.turn(&parent).await {
            Turn::Ended(uid) => self.pool.end(uid),
            Turn::Retry => tokio::time::sleep(RETRY_SOON).await,
            Turn::Idle => {}
        }
        drop(guard);
    }

    /// One turn on a parent: take its lock, choose its next task, run it.
    async fn turn(&self, parent: &LockKey) -> Turn {
        let _lock = self.env.locks.lock(parent.clone()).await;
        let seen = self.registry.snapshot();
        let Some((chosen, cancel)) = self.pool.choose(&self.registry, &seen, parent) else {
            return Turn::Idle;
        };
        drop(seen);
        let id = &self.registry.regs[chosen.reg].spec.id;
        // One root span per run (exported when tracing is on); the call carries its
        // `traceparent`, so the service's spans join it.
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            parent: None,
            "task",
            otel.name = format!("task {id}"),
            task = %id,
            namespace = %chosen.namespace,
            name = %chosen.name,
            parent = %parent.2,
        );
        self.start(parent, &chosen, cancel).instrument(span).await
    }

    /// Reads the chosen task fresh, adds the finalizer, reads the parent, marks the task
    /// Running, has it run, and records its end.
    async fn start(
        &self,
        parent_key: &LockKey,
        chosen: &Chosen,
        cancel: oneshot::Receiver<()>,
    ) -> Turn {
        let reg = &self.registry.regs[chosen.reg];
        let api = api_for(&self.env.client, &reg.task, Some(&chosen.namespace));
        let found = match api.get_opt(&chosen.name).await {
            Ok(found) => found
                .filter(|obj| obj.metadata.uid.as_deref() == Some(chosen.uid.as_str()))
                .map(|obj| self.registry.observe(reg, &obj)),
            Err(err) => {
                tracing::warn!(error = %err, "Cannot read the task; retrying.");
                return Turn::Retry;
            }
        };
        if let (Some(shard), Some((body, _))) = (&self.env.shard, &found) {
            // Sharding: a parent that exists must be ours (read fresh, under its lock).
            let name = decide::parent_name(body, &reg.spec.parent_field).unwrap_or_default();
            let parents = api_for(&self.env.client, &reg.parent, Some(&chosen.namespace));
            match parents.get_opt(&name).await {
                Ok(Some(p)) => {
                    let key = locks::key(&reg.parent, &chosen.namespace, &name);
                    if !shard.handles(&key, &typed(&p, &reg.parent.resource)) {
                        return Turn::Retry;
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "Cannot read the task's parent; retrying.");
                    return Turn::Retry;
                }
            }
        }
        let (body, status) = match (decide::start(found.as_ref().map(|(_, o)| o)), found) {
            (Start::Ended, _) => return Turn::Ended(chosen.uid.clone()),
            // Deleted between the choice and now: the pass's clean-up records it.
            (Start::Idle, _) | (_, None) => return Turn::Idle,
            (Start::AddFinalizer, Some((body, observed))) => {
                match self.writes.add_finalizer(reg, &body).await {
                    Ok(Some(fresh)) => (typed(&fresh, &reg.task.resource), observed.status),
                    Ok(None) => (body, observed.status),
                    Err(err) => {
                        tracing::warn!(error = %err, "Cannot add the task's finalizer; retrying.");
                        return Turn::Retry;
                    }
                }
            }
            (Start::Run, Some((body, observed))) => (body, observed.status),
        };

        // The parent, as the handler gets it.
        let parent_name = decide::parent_name(&body, &reg.spec.parent_field).unwrap_or_default();
        let parent = match api_for(&self.env.client, &reg.parent, Some(&chosen.namespace))
            .get_opt(&parent_name)
            .await
        {
            Ok(Some(p)) => typed(&p, &reg.parent.resource),
            Ok(None) => {
                let ending = Ending::no_parent(&reg.parent.resource.kind, &parent_name);
                self.writes.end(reg, &body, None, &ending, &[], None).await;
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
        let started = decide::start_of(&start);
        if let Err(err) = self
            .writes
            .patch_status(reg, &chosen.namespace, &chosen.name, &start)
            .await
        {
            let ending = Ending::unwritable(err);
            self.writes
                .end(reg, &body, None, &ending, &[], Some(&parent))
                .await;
            return Turn::Ended(chosen.uid.clone());
        }
        publish_running(&self.env.readmodel, reg, chosen, started, &resume.done);
        tracing::info!(namespace = %chosen.namespace, task = %chosen.name, resume_from = resume.from, mode = ?reg.spec.mode, "Task started.");
        // Running until this function returns; the first start (not a resumption) also tells
        // how long the task waited since its creation.
        let waited = decide::first_wait(&body, &status, now);
        let _running = self.env.metrics.task_started(&reg.spec.id, waited);

        let mut run = Run {
            readmodel: &self.env.readmodel,
            writes: &self.writes,
            reg,
            chosen,
            pool: (&self.pool, parent_key),
            started,
            steps: resume.done.clone(),
            cancel,
        };
        let request = TaskRequest {
            task_id: reg.spec.id.clone(),
            task: body.clone(),
            parent: parent.clone(),
            resume_from: resume.from,
            done_steps: resume.done,
            attempt_id: chosen.uid.clone(),
            traceparent: crate::telemetry::traceparent(&tracing::Span::current()),
        };
        let ending = run.follow(request).await;
        self.writes
            .end(reg, &body, started, &ending, &run.steps, Some(&parent))
            .await;
        Turn::Ended(chosen.uid.clone())
    }
}
