//! Daemons: one open `Daemon` call per object, scripted by `spec.behaviour.<handler id>`.
//!
//! The script (all keys optional):
//! - `fail_temporarily: N` — while `retry < N`, exit at once with a temporary error (1 s delay);
//! - `tick: SECONDS` (default 0.5) — every tick, send a merge patch
//!   `status.<id> = {"ticks": n, "seen": <spec.value of the latest body>, "retry": r}`, which shows
//!   that the daemon sees the object live and that its patches are applied;
//! - `exit_after: N` — exit successfully after N ticks;
//! - `linger: SECONDS` — when asked to stop, keep running this long before exiting (to show that
//!   the core holds the finalizer until the daemon has exited).
//!
//! A graceful stop ends the daemon with success; a forced stop ends it without an outcome. The
//! ledger gets one line when the daemon starts (`started`) and one when it ends (`success`,
//! `temporary`, `stopped`, `cancelled`).

use std::time::Duration;

use operon_proto::v1::{
    DaemonRequest, DaemonResponse, Outcome, Success, TemporaryError, daemon_request, outcome,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::{Response, Status, Streaming};

use crate::ledger::{Execution, Ledger, ObjectIdentity};

type Sender = mpsc::Sender<Result<DaemonResponse, Status>>;

/// Serves one `Daemon` call.
///
/// # Errors
/// `InvalidArgument` when the first message is not `start` or its body is not a JSON object.
pub async fn serve(
    ledger: Ledger,
    mut requests: Streaming<DaemonRequest>,
) -> Result<Response<tonic::codegen::BoxStream<DaemonResponse>>, Status> {
    let start = match requests.message().await? {
        Some(DaemonRequest {
            message: Some(daemon_request::Message::Start(start)),
        }) => start,
        _ => {
            return Err(Status::invalid_argument(
                "the first message must be `start`",
            ));
        }
    };
    let body: Value = serde_json::from_slice(&start.body_json)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Status::invalid_argument("the body is not a JSON object"))?;
    let (tx, rx) = mpsc::channel(16);
    let execution = Execution {
        handler: start.handler_id.clone(),
        object: ObjectIdentity::from_body(&body),
        reason: "daemon",
        retry: start.retry,
        attempt_id: start.attempt_id.clone(),
        ..Execution::default()
    };
    tokio::spawn(run(ledger, execution, body, requests, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    Ok(Response::new(Box::pin(stream)))
}

fn exit(outcome: outcome::Result) -> DaemonResponse {
    DaemonResponse {
        exit: Some(Outcome {
            result: Some(outcome),
        }),
        ..DaemonResponse::default()
    }
}

async fn run(
    ledger: Ledger,
    execution: Execution,
    mut body: Value,
    mut requests: Streaming<DaemonRequest>,
    tx: Sender,
) {
    let id = execution.handler.clone();
    let script = body["spec"]["behaviour"][&id].clone();
    let _ = ledger.record(&execution, "started");
    let fail_times = script["fail_temporarily"].as_u64().unwrap_or(0);
    if u64::from(execution.retry) < fail_times {
        let _ = ledger.record(&execution, "temporary");
        let _ = tx
            .send(Ok(exit(outcome::Result::TemporaryError(TemporaryError {
                message: "Simulated failure.".into(),
                delay: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            }))))
            .await;
        return;
    }
    let tick = Duration::from_secs_f64(script["tick"].as_f64().unwrap_or(0.5).max(0.05));
    let exit_after = script["exit_after"].as_u64();
    let linger = Duration::from_secs_f64(script["linger"].as_f64().unwrap_or(0.0).max(0.0));
    let mut ticks = 0u64;
    let mut interval = tokio::time::interval(tick);
    let stop_force = loop {
        tokio::select! {
            _ = interval.tick() => {
                ticks += 1;
                let patch = json!({"status": {id.clone(): {
                    "ticks": ticks, "seen": body["spec"]["value"].clone(), "retry": execution.retry,
                }}});
                let message = DaemonResponse {
                    patch_json: patch.to_string().into_bytes(),
                    ..DaemonResponse::default()
                };
                if tx.send(Ok(message)).await.is_err() {
                    let _ = ledger.record(&execution, "cancelled");
                    return;
                }
                if exit_after.is_some_and(|n| ticks >= n) {
                    break None;
                }
            }
            message = requests.message() => match message {
                Ok(Some(DaemonRequest { message: Some(daemon_request::Message::BodyJson(json)) })) => {
                    if let Ok(fresh) = serde_json::from_slice::<Value>(&json) {
                        body = fresh;
                    }
                }
                Ok(Some(DaemonRequest { message: Some(daemon_request::Message::Stop(stop)) })) => {
                    break Some(stop.force);
                }
                // The call is cancelled or closed: a forced stop.
                Ok(None) | Err(_) => break Some(true),
                Ok(Some(_)) => {}
            },
        }
    };
    match stop_force {
        None => {
            let _ = ledger.record(&execution, "success");
            let _ = tx
                .send(Ok(exit(outcome::Result::Success(Success::default()))))
                .await;
        }
        Some(false) => {
            tokio::time::sleep(linger).await;
            let _ = ledger.record(&execution, "stopped");
            let _ = tx
                .send(Ok(exit(outcome::Result::Success(Success::default()))))
                .await;
        }
        Some(true) => {
            let _ = ledger.record(&execution, "cancelled");
        }
    }
}
