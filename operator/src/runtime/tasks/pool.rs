//! The worker pool: one slot per parent with a worker, the task each runs (with the means to
//! cancel it), and the tasks this core ran to their end. The pass and the workers share it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::snapshot::{Registry, Seen};
use crate::core::tasks::{self as decide, Candidate, StepRecord};
use crate::runtime::kit::Locked;
use crate::runtime::locks::LockKey;

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
struct Slot {
    /// The task it runs, once chosen.
    task: Option<Chosen>,
    /// Cancels the running call.
    cancel: Option<oneshot::Sender<()>>,
    /// The steps of the running task finished so far, as the core has seen them.
    steps: Vec<StepRecord>,
}

/// What the pass and the workers share.
#[derive(Debug, Default)]
struct Shared {
    /// Parents with a worker (waiting for the parent's lock or running a task).
    slots: HashMap<LockKey, Slot>,
    /// Tasks (uids) that this core ran to their end: never started again, even while the watch
    /// does not show their end yet.
    ended: HashSet<String>,
}

/// The workers' slots and the tasks ended here; wakes the pass when a worker ends.
pub(super) struct Pool {
    /// The slots and the ended tasks.
    shared: Mutex<Shared>,
    /// Wakes the pass.
    wake: mpsc::UnboundedSender<()>,
}

/// What the pool tells a pass.
pub(super) struct Busy {
    /// The tasks running here (uids), with the steps seen finish so far.
    pub(super) running: HashMap<String, Vec<StepRecord>>,
    /// The tasks this core ran to their end.
    pub(super) ended: HashSet<String>,
}

impl Pool {
    /// An empty pool that wakes the pass through `wake`.
    pub(super) fn new(wake: mpsc::UnboundedSender<()>) -> Self {
        Self {
            shared: Mutex::default(),
            wake,
        }
    }

    /// Forgets the ended tasks that are not `present` any more, cancels every running task that
    /// is gone or being deleted ([`decide::cancels`]), and tells what runs and what ended here.
    pub(super) fn sweep(&self, seen: &[Seen], present: &HashSet<&str>) -> Busy {
        let mut shared = self.shared.locked();
        shared.ended.retain(|u| present.contains(u.as_str()));
        let mut running = HashMap::new();
        for slot in shared.slots.values_mut() {
            let Some(chosen) = &slot.task else { continue };
            running.insert(chosen.uid.clone(), slot.steps.clone());
            let observed = seen
                .iter()
                .find(|t| t.uid == chosen.uid)
                .map(|t| &t.observed);
            if decide::cancels(observed)
                && let Some(cancel) = slot.cancel.take()
            {
                let _ = cancel.send(());
            }
        }
        Busy {
            running,
            ended: shared.ended.clone(),
        }
    }

    /// Records the steps of `parent`'s running task finished so far and wakes the pass, so that
    /// the parent's list of tasks shows them (also those of a parallel task, which persists its
    /// steps only at its end).
    pub(super) fn steps(&self, parent: &LockKey, steps: &[StepRecord]) {
        if let Some(slot) = self.shared.locked().slots.get_mut(parent) {
            slot.steps = steps.to_vec();
        }
        let _ = self.wake.send(());
    }

    /// Records that this core ran the task `uid` to its end.
    pub(super) fn end(&self, uid: String) {
        self.shared.locked().ended.insert(uid);
    }

    /// Takes a slot for every `queued` parent without one; the parents that need a worker.
    pub(super) fn claim(&self, queued: BTreeSet<LockKey>) -> Vec<LockKey> {
        let mut shared = self.shared.locked();
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
    }

    /// The next task of `parent` among `seen` ([`decide::next`]), registered as the slot's task
    /// with a fresh cancel channel — in one critical section with the pass's cancel checks.
    pub(super) fn choose(
        &self,
        registry: &Registry,
        seen: &[Seen],
        parent: &LockKey,
    ) -> Option<(Chosen, oneshot::Receiver<()>)> {
        let mut shared = self.shared.locked();
        let candidates: Vec<Candidate<usize>> = seen
            .iter()
            .enumerate()
            .filter(|(_, t)| t.parent.as_ref() == Some(parent))
            .map(|(i, t)| Candidate {
                key: i,
                priority: registry.regs[t.reg].spec.priority,
                created: t.created,
                name: t.name.clone(),
                phase: t.observed.status.phase,
                deleting: t.observed.deleting,
                ended_here: shared.ended.contains(&t.uid),
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

    /// Frees the slot of `parent` and wakes the pass.
    fn release(&self, parent: &LockKey) {
        self.shared.locked().slots.remove(parent);
        let _ = self.wake.send(());
    }
}

/// Frees a worker's slot when the worker ends (also when it panics or is aborted) and wakes
/// the pass.
pub(super) struct SlotGuard {
    /// The pool.
    pub(super) pool: Arc<Pool>,
    /// The parent.
    pub(super) parent: LockKey,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.pool.release(&self.parent);
    }
}
