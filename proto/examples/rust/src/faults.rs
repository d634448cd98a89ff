//! Contract breaches on purpose, for the tests of the core's defences: a thin wrapper around the
//! SDK's services (`Operator::start_wrapped`) that answers what no SDK handler can.
//!
//! - `spec.behaviour.<id>.break_contract: true` — `Invoke` answers a response without an outcome;
//! - `spec.behaviour.<id>.invalid_patch: true` — the handler runs, and its answer's patch is
//!   replaced by bytes that are not JSON;
//! - a task's `spec.junk`: `"error"` (a gRPC error at once), `"bad-json"` (step results that are
//!   not JSON), `"no-finished"` (the stream ends without `finished`).
//!
//! Every other call goes to the SDK as it came.

use futures_util::StreamExt as _;
use operon_handler::Services;
use operon_handler::proto::{
    self as pb, handler_service_server::HandlerService, sync_service_server::SyncService,
    task_service_server::TaskService,
};
use serde_json::Value;
use tonic::{Request, Response, Status, Streaming, codegen::BoxStream};

use crate::behaviour;
use crate::ledger::{Execution, Ledger, ObjectIdentity};

/// The bytes answered as `patch_json` for `invalid_patch`, and as a step's result for
/// `junk: "bad-json"`: not JSON.
pub const NOT_JSON: &[u8] = b"{not json";

/// The SDK's services with the breaches above.
#[derive(Clone)]
pub struct Faults {
    inner: Services,
    ledger: Ledger,
}

impl Faults {
    /// Wraps the SDK's services; breaches are written to `ledger` like any run.
    pub fn new(inner: Services, ledger: Ledger) -> Self {
        Self { inner, ledger }
    }
}

/// The reason as the ledger writes it (as the SDK's `Reason::as_str`).
fn reason_name(reason: pb::Reason) -> &'static str {
    match reason {
        pb::Reason::Create => "create",
        pb::Reason::Update => "update",
        pb::Reason::Delete => "delete",
        pb::Reason::Resume => "resume",
        pb::Reason::Unspecified => "unspecified",
    }
}

/// The object of a call, if its bytes are a JSON object.
fn object(json: &[u8]) -> Option<Value> {
    serde_json::from_slice(json).ok().filter(Value::is_object)
}

#[tonic::async_trait]
impl HandlerService for Faults {
    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::Manifest>, Status> {
        self.inner.describe(request).await
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let call = request.get_ref();
        // Most calls mention no breach: they go to the SDK without being parsed twice.
        let breach = [&b"break_contract"[..], b"invalid_patch"]
            .iter()
            .any(|word| call.body_json.windows(word.len()).any(|w| w == *word));
        if !breach || call.admission.is_some() {
            return self.inner.invoke(request).await;
        }
        let script = object(&call.body_json).and_then(|body| {
            behaviour::behaviour_for(&body, &call.handler_id)
                .ok()
                .map(|b| (body, b))
        });
        let Some((body, script)) = script else {
            return self.inner.invoke(request).await;
        };
        if script.break_contract {
            let execution = Execution {
                handler: call.handler_id.clone(),
                object: ObjectIdentity::from_body(&body),
                reason: reason_name(call.reason()),
                retry: call.retry,
                attempt_id: call.attempt_id.clone(),
                ..Execution::default()
            };
            if let Err(error) = self.ledger.record(&execution, "no_outcome") {
                eprintln!("cannot write the ledger: {error}");
            }
            return Ok(Response::new(pb::InvokeResponse::default()));
        }
        let mut response = self.inner.invoke(request).await?;
        if script.invalid_patch {
            response.get_mut().patch_json = NOT_JSON.to_vec();
        }
        Ok(response)
    }

    type DaemonStream = BoxStream<pb::DaemonResponse>;

    async fn daemon(
        &self,
        request: Request<Streaming<pb::DaemonRequest>>,
    ) -> Result<Response<Self::DaemonStream>, Status> {
        self.inner.daemon(request).await
    }

    async fn r#match(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        self.inner.r#match(request).await
    }

    async fn select_resources(
        &self,
        request: Request<pb::SelectResourcesRequest>,
    ) -> Result<Response<pb::SelectResourcesResponse>, Status> {
        self.inner.select_resources(request).await
    }

    type OutboxStream = BoxStream<pb::OutboxEvent>;

    async fn outbox(
        &self,
        request: Request<pb::OutboxRequest>,
    ) -> Result<Response<Self::OutboxStream>, Status> {
        self.inner.outbox(request).await
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        self.inner.login(request).await
    }
}

#[tonic::async_trait]
impl TaskService for Faults {
    type RunTaskStream = BoxStream<pb::TaskUpdate>;

    async fn run_task(
        &self,
        request: Request<pb::TaskRequest>,
    ) -> Result<Response<Self::RunTaskStream>, Status> {
        let call = request.get_ref();
        let task = object(&call.task_json).unwrap_or_default();
        let junk = task["spec"]["junk"].as_str().map(str::to_owned);
        if junk.as_deref() == Some("error") {
            let parent = object(&call.parent_json).unwrap_or_default();
            let notes = crate::task::Notes::new(self.ledger.clone(), &call.task_id, &task, &parent);
            notes.note("started", None, Some(call.resume_from));
            notes.end("error");
            return Err(Status::internal("the task failed to start (scripted)"));
        }
        let updates = self.inner.run_task(request).await?.into_inner();
        let updates = match junk.as_deref() {
            Some("bad-json") => updates
                .map(|update| {
                    update.map(|mut update| {
                        if let Some(pb::task_update::Update::Step(step)) = &mut update.update {
                            step.result_json = NOT_JSON.to_vec();
                        }
                        update
                    })
                })
                .boxed(),
            Some("no-finished") => updates
                .filter(|update| {
                    let finished = matches!(
                        update,
                        Ok(pb::TaskUpdate {
                            update: Some(pb::task_update::Update::Finished(_))
                        })
                    );
                    std::future::ready(!finished)
                })
                .boxed(),
            _ => updates,
        };
        Ok(Response::new(updates))
    }
}

#[tonic::async_trait]
impl SyncService for Faults {
    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        self.inner.sync(request).await
    }

    async fn finalize(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::FinalizeResponse>, Status> {
        self.inner.finalize(request).await
    }
}
