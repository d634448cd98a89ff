//! The service call of one task run: `RunTask`, followed to its end, its deadline or its
//! cancellation (dropping the stream cancels the call); sequential steps are persisted as they
//! come.

use futures_util::StreamExt;
use jiff::Timestamp;
use tokio::sync::oneshot;

use super::Tasks;
use super::worker::{Chosen, publish_running};
use crate::core::tasks::{self as decide, Ending, Mode, Phase, StepRecord};
use crate::runtime::ports::{TaskRequest, TaskUpdate};

impl Tasks {
    /// Calls `RunTask` and follows its stream to the end, the deadline or a cancellation.
    pub(super) async fn call(
        &self,
        chosen: &Chosen,
        request: TaskRequest,
        steps: &mut Vec<StepRecord>,
        cancel: &mut oneshot::Receiver<()>,
        started: Option<Timestamp>,
    ) -> Ending {
        let reg = &self.regs[chosen.reg];
        let deadline = reg.spec.timeout.map(|t| tokio::time::Instant::now() + t);
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        let cancelled = || Ending {
            phase: Phase::Cancelled,
            message: "cancelled: the task was deleted while it ran".into(),
        };
        let late = || Ending {
            phase: Phase::Failed,
            message: format!(
                "the task did not finish within its timeout of {:?}",
                reg.spec.timeout.unwrap_or_default()
            ),
        };
        let failed = |message: String| Ending {
            phase: Phase::Failed,
            message,
        };
        let mut stream = tokio::select! {
            _ = &mut *cancel => return cancelled(),
            () = &mut expired => return late(),
            answer = reg.port.run_task(request) => match answer {
                Ok(stream) => stream,
                Err(err) => return failed(err.to_string()),
            },
        };
        loop {
            let message = tokio::select! {
                _ = &mut *cancel => return cancelled(),
                () = &mut expired => return late(),
                message = stream.next() => message,
            };
            let update = match message {
                Some(Ok(update)) => update,
                Some(Err(err)) => return failed(err.to_string()),
                None => {
                    return failed(
                        "the handler's stream ended without `finished` (the task's result)".into(),
                    );
                }
            };
            match update {
                TaskUpdate::Finished { ok, message } => {
                    return Ending {
                        phase: if ok { Phase::Succeeded } else { Phase::Failed },
                        message,
                    };
                }
                TaskUpdate::Step(step) => {
                    tracing::info!(namespace = %chosen.namespace, task = %chosen.name, step = step.index, name = %step.name, ok = step.ok, "Task step finished.");
                    decide::record_step(steps, step);
                    publish_running(self, reg, chosen, started, steps);
                    if reg.spec.mode == Mode::Sequential
                        && let Err(err) = self
                            .writes
                            .patch_status(
                                reg,
                                &chosen.namespace,
                                &chosen.name,
                                &decide::steps_patch(steps),
                            )
                            .await
                    {
                        tracing::warn!(error = %err, "Cannot persist the task's steps; going on.");
                    }
                }
            }
        }
    }
}
