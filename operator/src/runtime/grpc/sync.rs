//! [`SyncPort`] over gRPC (`SyncService`).

use std::time::Duration;

use operon_proto::v1 as pb;
use operon_proto::v1::sync_service_client::SyncServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

use super::MAX_MESSAGE;
use super::convert::{duration, to_json};
use crate::runtime::ports::{CallError, FinalizeAnswer, SyncAnswer, SyncPort, SyncRequest};

/// A service's `SyncService`.
#[derive(Debug, Clone)]
pub(crate) struct GrpcSync {
    client: SyncServiceClient<Channel>,
}

impl GrpcSync {
    /// The `SyncService` reached through `channel`.
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            client: SyncServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
        }
    }
}

/// The request on the wire.
fn request(r: SyncRequest) -> pb::SyncRequest {
    pb::SyncRequest {
        sync_id: r.sync_id,
        parent_json: to_json(&r.parent),
        children: r
            .children
            .into_iter()
            .map(|g| pb::ChildGroup {
                api_version: g.api_version,
                kind: g.kind,
                objects_json: g.objects.iter().map(to_json).collect(),
            })
            .collect(),
        finalizing: r.finalizing,
    }
}

/// The request with the sync span's `traceparent` in its metadata.
fn traced_request(r: SyncRequest) -> tonic::Request<pb::SyncRequest> {
    let traceparent = r.traceparent.clone();
    super::traced(tonic::Request::new(request(r)), traceparent)
}

/// A status as sent: empty or `null` is none.
fn status(raw: &[u8]) -> Result<Option<Value>, serde_json::Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(raw)?;
    Ok((!v.is_null()).then_some(v))
}

fn resync_after(d: Option<prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| duration("resync_after", d).ok())
}

fn error(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Awaits a call within the deadline (plus a second for the transport).
async fn answer<T>(
    rpc: &'static str,
    deadline: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(deadline + Duration::from_secs(1), call).await {
        Err(_) => Err(CallError::Deadline { rpc, deadline }),
        Ok(Err(status)) => Err(CallError::Failed {
            rpc,
            message: status.message().to_owned(),
            code: format!("{:?}", status.code()),
        }),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

#[tonic::async_trait]
impl SyncPort for GrpcSync {
    async fn sync(
        &self,
        request: SyncRequest,
        deadline: Duration,
    ) -> Result<SyncAnswer, CallError> {
        let mut call = traced_request(request);
        call.set_timeout(deadline);
        let mut client = self.client.clone();
        let r = answer("Sync", deadline, client.sync(call)).await?;
        Ok(SyncAnswer {
            error: error(r.error),
            status: status(&r.status_json),
            children: r
                .children_json
                .iter()
                .map(|raw| serde_json::from_slice(raw))
                .collect(),
            resync_after: resync_after(r.resync_after),
        })
    }

    async fn finalize(
        &self,
        request: SyncRequest,
        deadline: Duration,
    ) -> Result<FinalizeAnswer, CallError> {
        let mut call = traced_request(request);
        call.set_timeout(deadline);
        let mut client = self.client.clone();
        let r = answer("Finalize", deadline, client.finalize(call)).await?;
        Ok(FinalizeAnswer {
            error: error(r.error),
            status: status(&r.status_json),
            finalized: r.finalized,
            resync_after: resync_after(r.resync_after),
        })
    }
}
