//! [`TaskPort`] over gRPC (`TaskService`).

use futures_util::StreamExt;
use operon_proto::v1 as pb;
use operon_proto::v1::task_service_client::TaskServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

use super::MAX_MESSAGE;
use crate::core::tasks::StepRecord;
use crate::runtime::ports::{CallError, TaskError, TaskPort, TaskRequest, TaskUpdate, TaskUpdates};

/// A service's `TaskService`.
#[derive(Debug, Clone)]
pub(crate) struct GrpcTasks {
    client: TaskServiceClient<Channel>,
}

impl GrpcTasks {
    /// The `TaskService` reached through `channel`.
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            client: TaskServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
        }
    }
}

fn failed(status: &tonic::Status) -> CallError {
    CallError::Failed {
        rpc: "RunTask",
        message: status.message().to_owned(),
        code: format!("{:?}", status.code()),
    }
}

/// The request on the wire, with its `traceparent` in the metadata.
fn request(r: TaskRequest) -> tonic::Request<pb::TaskRequest> {
    let message = pb::TaskRequest {
        task_id: r.task_id,
        task_json: serde_json::to_vec(&r.task).unwrap_or_default(),
        parent_json: serde_json::to_vec(&r.parent).unwrap_or_default(),
        resume_from: r.resume_from,
        done_steps: r
            .done_steps
            .iter()
            .map(|s| pb::StepResult {
                index: s.index,
                name: s.name.clone(),
                ok: s.ok,
                message: s.message.clone(),
                result_json: s
                    .result
                    .as_ref()
                    .map(|r| r.to_string().into_bytes())
                    .unwrap_or_default(),
            })
            .collect(),
        attempt_id: r.attempt_id,
    };
    super::traced(tonic::Request::new(message), r.traceparent)
}

/// One message of the stream, validated.
fn update(message: Result<pb::TaskUpdate, tonic::Status>) -> Result<TaskUpdate, TaskError> {
    match message.map_err(|status| failed(&status))?.update {
        None => Err(TaskError::Empty),
        Some(pb::task_update::Update::Finished(f)) => Ok(TaskUpdate::Finished {
            ok: f.ok,
            message: f.message,
        }),
        Some(pb::task_update::Update::Step(s)) => {
            let result = if s.result_json.is_empty() {
                None
            } else {
                match serde_json::from_slice::<Value>(&s.result_json) {
                    Ok(v) => Some(v),
                    Err(source) => {
                        return Err(TaskError::StepResult {
                            index: s.index,
                            name: s.name,
                            source,
                        });
                    }
                }
            };
            Ok(TaskUpdate::Step(StepRecord {
                index: s.index,
                name: s.name,
                ok: s.ok,
                message: s.message,
                result,
            }))
        }
    }
}

#[tonic::async_trait]
impl TaskPort for GrpcTasks {
    async fn run_task(&self, request: TaskRequest) -> Result<TaskUpdates, CallError> {
        let mut client = self.client.clone();
        let stream = client
            .run_task(self::request(request))
            .await
            .map_err(|status| failed(&status))?
            .into_inner();
        Ok(stream.map(update).boxed())
    }
}
