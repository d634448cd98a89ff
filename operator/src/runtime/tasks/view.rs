//! How a task shows in the read model ([`crate::core::tasks::view`] decides): one row for the
//! task, one per finished step.

use jiff::Timestamp;

use super::Reg;
use super::pool::Chosen;
use crate::core::tasks::{self as decide, Phase, Shown, StepRecord};
use crate::runtime::readmodel::ReadModel;

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
