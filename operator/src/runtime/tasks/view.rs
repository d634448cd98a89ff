//! How a task shows in the read model ([`crate::core::tasks::view`] decides): one row for the
//! task, one per finished step; and its parent's list of tasks ([`crate::core::tasks::of_parent`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;

use super::Reg;
use super::pool::Chosen;
use super::snapshot::{Registry, Seen};
use crate::core::tasks::{self as decide, Listed, Phase, Shown, StepRecord};
use crate::runtime::readmodel::ReadModel;

/// Shows every parent's tasks (`tasks`, those this core serves; `running`, the uids of those
/// running here, with the steps seen finish so far) on the parent's page, in the order its FIFO
/// runs them; clears the lists of the parents in `shown` (those listed by the last pass) that
/// have no task any more, and leaves `shown` as the parents listed now.
pub(super) fn publish_parents(
    readmodel: &ReadModel,
    registry: &Registry,
    tasks: &[&Seen],
    running: &HashMap<String, Vec<StepRecord>>,
    shown: &mut HashSet<String>,
) {
    let mut by_parent: BTreeMap<String, Vec<Listed<'_>>> = BTreeMap::new();
    let resources: Vec<String> = registry.regs.iter().map(|r| r.task.name()).collect();
    for t in tasks {
        let reg = &registry.regs[t.reg];
        let Ok(parent) = &t.observed.parent else {
            continue;
        };
        let namespace = if reg.parent.namespaced {
            t.namespace.as_str()
        } else {
            ""
        };
        let key = format!("{}/{namespace}/{parent}", reg.parent.name());
        let status = &t.observed.status;
        let live = running.get(&t.uid);
        by_parent.entry(key).or_default().push(Listed {
            resource: &resources[t.reg],
            task: &reg.spec.id,
            priority: reg.spec.priority,
            namespace: &t.namespace,
            name: &t.name,
            created: t.created,
            status,
            steps: live
                .filter(|seen| seen.len() > status.steps.len())
                .map_or(&status.steps, |seen| seen),
            running: live.is_some(),
        });
    }
    let now: HashSet<String> = by_parent.keys().cloned().collect();
    for gone in shown.difference(&now) {
        readmodel.set_tasks(gone.clone(), Vec::new());
    }
    for (key, listed) in by_parent {
        readmodel.set_tasks(key, decide::of_parent(&listed));
    }
    *shown = now;
}

/// Shows a task in the read model.
pub(super) fn publish(
    readmodel: &ReadModel,
    reg: &Reg,
    t: &Shown<'_>,
    phase: Option<Phase>,
    message: Option<&str>,
    steps: &[StepRecord],
) {
    readmodel.upsert(decide::view(
        &reg.spec.id,
        reg.task.name(),
        t,
        (phase, message),
        steps,
        Timestamp::now(),
    ));
}

/// Shows a running task in the read model.
pub(super) fn publish_running(
    readmodel: &ReadModel,
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
    publish(readmodel, reg, &shown, Some(Phase::Running), None, steps);
}
