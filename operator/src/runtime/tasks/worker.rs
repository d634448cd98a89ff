//! The workers: one per parent with queued tasks. A worker takes the parent's lock, chooses the
//! parent's next task ([`crate::core::tasks::next`]), marks it Running with the finalizer, and
//! runs it through the service ([`super::call`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use super::snapshot::snapshot;
use super::view::{Shown, publish};
use super::{Reg, Tasks};
use crate::core::tasks::{self as decide, Candidate, Ending, Phase, StepRecord, TaskStatus};
use crate::runtime::kit::{Locked, api_for, typed};
use crate::runtime::locks::LockKey;
use crate::runtime::ports::TaskRequest;

/// The task a parent's worker chose.
#[derive(Debug, Clone)]
pub(super) struct Chosen {
    /// Its registration.
    pub(super) reg: usize,
    /// Its namespace.
    pub(super) namespace: String,
    /// Its name.
    pub(super) name: String,
    /// Its uid.
    pub(super) uid: String,
}

/// A parent with a worker.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// The task it runs, once chosen.
    pub(super) task: Option<Chosen>,
    /// Cancels the running call.
    pub(super) cancel: Option<oneshot::Sender<()>>,
}

/// What the controller loop and the workers share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Parents with a worker (waiting for the parent's lock or running a task).
    pub(super) slots: HashMap<LockKey, Slot>,
    /// Tasks (uids) that this core ran to their end: never started again, even while the watch
    /// does not show their end yet.
    pub(super) ended: HashSet<String>,
}

/// The workers' shared state and the loop's wake-up.
pub(super) struct Workers {
    /// The slots and the ended tasks.
    pub(super) shared: Mutex<Shared>,
    /// Wakes the loop.
    pub(super) wake: mpsc::UnboundedSender<()>,
}

impl Workers {
    /// The shared state, locked.
    pub(super) fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.locked()
    }
}

/// How a worker's turn on a parent ended.
pub(super) enum Turn {
    /// Nothing to run (the lock came too late: the task went).
    Idle,
    /// The task ran to its end (or was ended by the core).
    Ended(String),
    /// The task could not be started (an API error): try again later.
    Retry,
}

/// Removes a worker's slot when the worker ends (also when it panics or is aborted) and wakes
/// the loop.
pub(super) struct SlotGuard {
    /// The controller.
    pub(super) controller: Arc<Tasks>,
    /// The parent.
    pub(super) parent: LockKey,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.controller.workers.shared().slots.remove(&self.parent);
        let _ = self.controller.workers.wake.send(());
    }
}

/// Shows a running task in the read model.
pub(super) fn publish_running(
    tasks: &Tasks,
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
    publish(
        &tasks.env.readmodel,
        reg,
        &shown,
        Some(Phase::Running),
        None,
        steps,
    );
}

impl Tasks {
    /// The next task of `parent` (not deleted, not ended here), registered as the slot's task
    /// with a fresh cancel channel — in one critical section with the loop's cancel checks.
    fn choose(&self, parent: &LockKey) -> Option<(Chosen, oneshot::Receiver<()>)> {
        let seen = snapshot(&self.regs, &self.finalizer);
        let mut shared = self.workers.shared();
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
    pub(super) async fn turn(&self, parent: &LockKey) -> Turn {
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
        let api = api_for(&self.env.client, &reg.task, Some(&chosen.namespace));
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
            match self.writes.add_finalizer(reg, &body).await {
                Ok(fresh) => body = typed(&fresh, &reg.task.resource),
                Err(err) => {
                    tracing::warn!(error = %err, "Cannot add the task's finalizer; retrying.");
                    return Turn::Retry;
                }
            }
        }

        // The parent, as the handler gets it.
        let parent_name = decide::parent_name(&body, &reg.spec.parent_field).unwrap_or_default();
        let parent = match api_for(&self.env.client, &reg.parent, Some(&chosen.namespace))
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
        let started = start["status"]["startTime"]
            .as_str()
            .and_then(|s| s.parse::<Timestamp>().ok());
        if let Err(err) = self
            .writes
            .patch_status(reg, &chosen.namespace, &chosen.name, &start)
            .await
        {
            let ending = Ending {
                phase: Phase::Failed,
                message: format!("cannot write the task's status: {err}"),
            };
            self.writes
                .end(reg, &body, None, &ending, &[], Some(&parent))
                .await;
            return Turn::Ended(chosen.uid.clone());
        }
        let mut steps = resume.done.clone();
        publish_running(self, reg, chosen, started, &steps);
        tracing::info!(namespace = %chosen.namespace, task = %chosen.name, resume_from = resume.from, mode = ?reg.spec.mode, "Task started.");
        // Running until this function returns; the first start (not a resumption) also tells
        // how long the task waited since its creation.
        let created = body
            .pointer("/metadata/creationTimestamp")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .filter(|_| status.start_time.is_none());
        let waited = created.map(|c| now.duration_since(c));
        let _running = self.env.metrics.task_started(&reg.spec.id, waited);

        let request = TaskRequest {
            task_id: reg.spec.id.clone(),
            task: body.clone(),
            parent: parent.clone(),
            resume_from: resume.from,
            done_steps: resume.done,
            attempt_id: chosen.uid.clone(),
            traceparent: crate::telemetry::traceparent(&tracing::Span::current()),
        };
        let ending = self
            .call(chosen, request, &mut steps, &mut cancel, started)
            .await;
        self.writes
            .end(reg, &body, started, &ending, &steps, Some(&parent))
            .await;
        Turn::Ended(chosen.uid.clone())
    }
}
