//! The sync of a parent that is not being deleted: call Sync with the parent and its children,
//! check the answer ([`crate::core::sync::read_answer`], [`crate::core::sync::validate`]),
//! plan ([`crate::core::sync::plan`]), apply and delete children as planned — removals only once
//! the shutdown hook's gate is open — and write the parent's status.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Key;
use super::children::{Applied, Children};
use super::handler::Handler;
use super::state::Parents;
use super::writes::{ParentWriter, Reporter};
use crate::core::shutdown::Reason;
use crate::core::sync::{
    self as decide, ChildKey, Desired, Ended, Parent, Refused, Rollout, Step, Unusable,
};
use crate::core::views::ChildAction;
use crate::runtime::shutdown::{Gate, Shutdown};

/// Syncs a parent: its handler's answer, performed.
pub(super) struct Applier {
    /// The handlers.
    pub(super) handler: Arc<Handler>,
    /// The children.
    pub(super) children: Arc<Children>,
    /// The parents and what is remembered about them.
    pub(super) parents: Arc<Parents>,
    /// Writes the parent's status.
    pub(super) writer: Arc<ParentWriter>,
    /// Tells the parent about refusals and problems.
    pub(super) reporter: Arc<Reporter>,
    /// The registration's shutdown hook.
    pub(super) shutdown: Option<Arc<Shutdown>>,
    /// The registration's resync period.
    pub(super) resync: Option<Duration>,
}

impl Applier {
    /// Calls Sync and performs its answer.
    pub(super) async fn sync(&self, key: &Key, body: &Value) -> Ended {
        let parent = Parent::of(body);
        let current = self.children.current(&parent.uid);
        let response = match self.handler.sync(body, &current).await {
            Ok(r) => r,
            Err(err) => return Ended::Failed(err.to_string()),
        };
        let served = &self.parents.served;
        let (status, desired_children) = match decide::read_answer(
            response.error,
            response.status,
            response.children,
            served.has_status,
            &served.name(),
        ) {
            Ok(answer) => answer,
            Err(Unusable::Failed(ended)) => return ended,
            Err(Unusable::Refused(refused)) => {
                return self.reporter.refuse(key, body, &refused).await;
            }
        };
        let desired = match decide::validate(&parent, &self.children.types, desired_children) {
            Ok(d) => d,
            Err(invalid) => {
                return self
                    .reporter
                    .refuse(key, body, &Refused::from(invalid))
                    .await;
            }
        };
        let observed = Children::observed(&current);
        let (rollouts, applied) = self
            .parents
            .with(key, |s| (s.rollouts.clone(), s.applied.clone()));
        let existing = |d: &Desired| self.children.existing(d, &parent.uid, &applied);
        let wanted_order: Vec<ChildKey> = desired.iter().map(Desired::key).collect();
        let wanted: HashSet<ChildKey> = wanted_order.iter().cloned().collect();
        let plan = decide::plan(
            &self.children.types,
            desired,
            &observed,
            existing,
            &rollouts,
        );
        let mut failures = Vec::new();
        let mut done = Vec::new();
        // With a shutdown hook, children the answer no longer lists (a move) go only once the
        // application has stopped; creations and updates go on meanwhile.
        let (gate, removals) = self.replace_gate(body, &plan.steps, &wanted).await;
        let mut removal_failed = false;
        for step in plan.steps {
            let gated = decide::gated(&step, &wanted, &gate);
            let (child, action) = match &step {
                Step::Apply(d) => (d.key(), ChildAction::Applied),
                Step::Delete { key, .. } => (key.clone(), ChildAction::Deleted),
            };
            if !gated.now {
                done.push((child, ChildAction::Pending));
                continue;
            }
            let record = |change| {
                self.parents.with(key, |s| match change {
                    Applied::Now(child, seen) => {
                        s.applied.insert(child, seen);
                    }
                    Applied::Gone(child) => {
                        s.applied.remove(&child);
                    }
                });
            };
            if let Err(e) = self.children.perform(step, record).await {
                removal_failed |= gated.removal;
                failures.push(e.to_string());
                done.push((child, ChildAction::Pending));
            } else {
                done.push((child, action));
            }
        }
        self.show_children(key, &wanted_order, &done, (&plan.rollouts, &plan.progress));
        if let Some(shutdown) = &self.shutdown
            && decide::clears(&gate, removal_failed)
            && let Err(e) = shutdown.clear(body).await
        {
            failures.push(e.to_string());
        }
        let (gate_failure, gate_wait) = decide::after_gate(gate, removals);
        failures.extend(gate_failure);
        self.parents
            .with(key, |s| s.rollouts = plan.rollouts.clone());
        let problem = decide::problem(&plan.conflicts);
        if let Err(e) = self
            .writer
            .status(body, status.as_ref(), problem.as_deref())
            .await
        {
            failures.push(e.to_string());
        }
        if let Some(problem) = &problem {
            self.reporter.report(key, body, problem).await;
        }
        let after = decide::next_sync(
            response.resync_after,
            self.resync,
            !plan.rollouts.is_empty(),
            gate_wait,
        );
        decide::outcome(problem, &failures, after)
    }

    /// Shows on the parent's page what this sync did with its children.
    fn show_children(
        &self,
        key: &Key,
        desired: &[ChildKey],
        done: &[(ChildKey, ChildAction)],
        (rollouts, progress): (
            &BTreeMap<usize, Rollout>,
            &BTreeMap<usize, decide::Progress>,
        ),
    ) {
        let kinds: Vec<String> = (self.children.kinds.iter())
            .map(|(served, _)| served.resource.kind.clone())
            .collect();
        let readmodel = &self.children.env.readmodel;
        let parent = format!("{}/{}/{}", self.parents.served.name(), key.0, key.1);
        readmodel.set_children(
            parent,
            decide::children_view(&kinds, desired, done),
            decide::rollouts_view(&kinds, rollouts, progress),
        );
    }

    /// The shutdown hook's gate for the removals in `steps` (deletions of children that are
    /// not `wanted`), and whether there are any. Without removals a finished or pending replace
    /// handshake is cleared (gate open: nothing waits).
    async fn replace_gate(
        &self,
        body: &Value,
        steps: &[Step],
        wanted: &HashSet<ChildKey>,
    ) -> (Gate, bool) {
        let Some(shutdown) = &self.shutdown else {
            return (Gate::Open, false);
        };
        if decide::has_removals(steps, wanted) {
            (shutdown.gate(body, Reason::Replace).await, true)
        } else {
            (Gate::Open, false)
        }
    }
}
