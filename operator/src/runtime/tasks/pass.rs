//! The task controller's loop: a pass after every change, worker end and due expiry. A pass
//! decides about every task not running ([`crate::core::tasks::decide`]) and starts a worker
//! for every parent with queued tasks and none yet.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::Tasks;
use super::snapshot::{LoopState, RETRY_WRITES_AFTER, due, snapshot};
use super::view::{Shown, publish};
use super::worker::{Slot, SlotGuard, Turn};
use crate::core::tasks::{self as decide, Action, Ending, Phase};
use crate::runtime::locks::LockKey;

impl Tasks {
    /// The loop: a pass after every change, worker end and due expiry.
    pub(super) async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<()>) {
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

    /// Decides about every task not running: marks new ones Waiting, fails unparented ones,
    /// cleans up after deletions, expires finished ones, and starts a worker for every parent
    /// with queued tasks and none yet. Returns how long to sleep at most.
    async fn pass(
        self: &Arc<Self>,
        state: &mut LoopState,
        workers: &mut tokio::task::JoinSet<()>,
    ) -> Duration {
        let seen = snapshot(&self.regs, &self.finalizer);
        let present: HashSet<&str> = seen.iter().map(|t| t.uid.as_str()).collect();
        state.marked.retain(|u| present.contains(u.as_str()));
        state.expiring.retain(|u, _| present.contains(u.as_str()));
        state.cleaned.retain(|u, _| present.contains(u.as_str()));
        let (running, ended) = {
            let mut shared = self.workers.shared();
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
                publish(
                    &self.env.readmodel,
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
                    if let Err(err) = self.writes.mark_waiting(reg, t).await {
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
                        self.workers.shared().ended.insert(t.uid.clone());
                        let ending = Ending {
                            phase: Phase::Failed,
                            message,
                        };
                        self.writes
                            .end(reg, &t.body, None, &ending, &[], None)
                            .await;
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
                        self.writes
                            .end(reg, &t.body, started, &ending, &steps, None)
                            .await;
                    }
                }
                Action::ReleaseFinalizer => {
                    if due(&mut state.cleaned, &t.uid)
                        && let Err(err) = self
                            .writes
                            .remove_finalizer(reg, &t.namespace, &t.name)
                            .await
                    {
                        tracing::warn!(namespace = %t.namespace, task = %t.name, error = %err, "Cannot release the task's finalizer; retrying soon.");
                        wait = wait.min(RETRY_WRITES_AFTER);
                    }
                }
                Action::Expire(at) => {
                    if at <= now {
                        if due(&mut state.expiring, &t.uid) {
                            self.writes.expire(reg, t).await;
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
            let mut shared = self.workers.shared();
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
                        me.workers.shared().ended.insert(uid);
                    }
                    Turn::Retry => tokio::time::sleep(Duration::from_secs(2)).await,
                    Turn::Idle => {}
                }
                drop(guard);
            });
        }
        wait
    }
}
