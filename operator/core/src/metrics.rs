//! The values of the metrics' labels that follow from outcomes (the runtime's `runtime::metrics`
//! counts them).

use crate::tasks::Phase;

/// The `outcome` label of a task that ended in `phase` (an end in a phase that is not an end is a
/// failure, as the task's Event says).
pub fn task_outcome(phase: Phase) -> &'static str {
    match phase {
        Phase::Succeeded => "succeeded",
        Phase::Cancelled => "cancelled",
        Phase::Failed | Phase::Waiting | Phase::Running => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_that_ends_unfinished_failed() {
        assert_eq!(task_outcome(Phase::Succeeded), "succeeded");
        assert_eq!(task_outcome(Phase::Cancelled), "cancelled");
        for phase in [Phase::Failed, Phase::Waiting, Phase::Running] {
            assert_eq!(task_outcome(phase), "failed");
        }
    }
}
