//! One run of a task: the service call (`RunTask`), followed to its end, its deadline or its
//! cancellation (dropping the stream cancels the call); the steps are kept, shown as they come,
//! and persisted as they come when the mode says so.

use futures_util::StreamExt;
use jiff::Timestamp;
use tokio::sync::oneshot;

use super::Reg;
use super::pool::{Chosen, Pool};
use super::view::publish_running;
use super::writes::Writes;
use crate::core::tasks::{self as decide, Ending, StepRecord};
use crate::runtime::locks::LockKey;
use crate::runtime::ports::{TaskRequest, TaskUpdate};
use crate::runtime::readmodel::ReadModel;

/// One run of a chosen task.
pub(super) struct Run<'a> {
    /// Where the running task is shown.
    pub(super) readmodel: &'a ReadModel,
    /// Persists the steps.
    pub(super) writes: &'a Writes,
    /// Its registration (the service, the mode, the timeout).
    pub(super) reg: &'a Reg,
    /// The task.
    pub(super) chosen: &'a Chosen,
    /// The worker pool, told of each step (for the parent's list of tasks), and the parent.
    pub(super) pool: (&'a Pool, &'a LockKey),
    /// When it started.
    pub(super) started: Option<Timestamp>,
    /// The steps finished so far (those of before a resumption first).
    pub(super) steps: Vec<StepRecord>,
    /// Fires when the task is deleted.
    pub(super) cancel: oneshot::Receiver<()>,
}

impl Run<'_> {
    /// Calls `RunTask` and follows its stream to the end, the deadline or a cancellation.
    pub(super) async fn follow(&mut self, request: TaskRequest) -> Ending {
        let timeout = self.reg.spec.timeout;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        let mut stream = tokio::select! {
            _ = &mut self.cancel => return Ending::cancelled(),
            () = &mut expired => return Ending::timed_out(timeout),
            answer = self.reg.port.run_task(request) => match answer {
                Ok(stream) => stream,
                Err(err) => return Ending::failed(err.to_string()),
            },
        };
        loop {
            let message = tokio::select! {
                _ = &mut self.cancel => return Ending::cancelled(),
                () = &mut expired => return Ending::timed_out(timeout),
                message = stream.next() => message,
            };
            let update = match message {
                Some(Ok(update)) => update,
                Some(Err(err)) => return Ending::failed(err.to_string()),
                None => return Ending::unfinished(),
            };
            match update {
                TaskUpdate::Finished { ok, message } => return Ending::finished(ok, message),
                TaskUpdate::Step(step) => self.step(step).await,
            }
        }
    }

    /// Records a finished step, shows it, and persists the steps when the mode says so.
    async fn step(&mut self, step: StepRecord) {
        let (reg, chosen) = (self.reg, self.chosen);
        tracing::info!(namespace = %chosen.namespace, task = %chosen.name, step = step.index, name = %step.name, ok = step.ok, "Task step finished.");
        decide::record_step(&mut self.steps, step);
        publish_running(self.readmodel, reg, chosen, self.started, &self.steps);
        let (pool, parent) = self.pool;
        pool.steps(parent, &self.steps);
        if reg.spec.mode.persists_each_step()
            && let Err(err) = self
                .writes
                .patch_status(
                    reg,
                    &chosen.namespace,
                    &chosen.name,
                    &decide::steps_patch(&self.steps),
                )
                .await
        {
            tracing::warn!(error = %err, "Cannot persist the task's steps; going on.");
        }
    }
}
