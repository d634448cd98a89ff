//! The SDK's gRPC edge, served on 127.0.0.1 and called the way the core calls it: the manifest
//! and the revision check, the attempt cache, callback filters, sub-handlers, daemons, tasks,
//! syncs, health, reflection and the graceful stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use operon_handler::proto as pb;
use operon_handler::{
    Call, Ctx, DaemonCtx, Desired, HandlerError, HandlerOptions, HandlerResult, Operator,
    SubhandlerOptions, SyncCtx, SyncOptions, TaskCtx,
};
use pb::handler_service_client::HandlerServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

mod common;
use common::start;

fn invoke(id: &str, retry: u32, attempt: &str, body: Value) -> pb::InvokeRequest {
    pb::InvokeRequest {
        handler_id: id.into(),
        reason: pb::Reason::Create as i32,
        body_json: body.to_string().into_bytes(),
        retry,
        attempt_id: attempt.into(),
        ..Default::default()
    }
}

fn result(response: &pb::InvokeResponse) -> &pb::outcome::Result {
    response
        .outcome
        .as_ref()
        .and_then(|o| o.result.as_ref())
        .expect("an outcome")
}

fn widget(name: &str, size: u32) -> Value {
    json!({"metadata": {"name": name, "namespace": "ns", "uid": "u1"}, "spec": {"size": size}})
}

async fn noop(_: Ctx<Value>) -> HandlerResult {
    Ok(None)
}

#[tokio::test]
async fn describe_answers_the_manifest_and_refuses_an_old_core() {
    let (running, channel) =
        start(Operator::new("svc").on_create("widgets.example.com", noop)).await;
    let mut client = HandlerServiceClient::new(channel);
    let old = client
        .describe(pb::DescribeRequest {
            core_version: "0.0.1".into(),
            contract_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), tonic::Code::FailedPrecondition);
    assert!(
        old.message().contains("needs handler contract revision 1"),
        "{old:?}"
    );
    let manifest = client
        .describe(pb::DescribeRequest {
            core_version: "0.1.0".into(),
            contract_revision: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(manifest.service_name, "svc");
    assert_eq!(manifest.handlers[0].id, "noop");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_repeated_attempt_is_answered_without_running_again() {
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let operator = Operator::new("svc").on_create_with(
        "widgets.example.com",
        HandlerOptions::new().id("count"),
        move |ctx: Ctx<Value>| {
            let runs = Arc::clone(&counted);
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                ctx.patch(json!({"metadata": {"labels": {"run": n.to_string()}}}));
                Ok(Some(json!({"run": n})))
            }
        },
    );
    let (running, channel) = start(operator).await;
    let mut client = HandlerServiceClient::new(channel);
    let first = client
        .invoke(invoke("count", 0, "attempt-1", widget("a", 1)))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .invoke(invoke("count", 0, "attempt-1", widget("a", 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(first.patch_json, br#"{"metadata":{"labels":{"run":"1"}}}"#);
    let other = client
        .invoke(invoke("count", 1, "attempt-2", widget("a", 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let pb::outcome::Result::Success(success) = result(&other) else {
        panic!("not a success: {other:?}");
    };
    assert_eq!(success.result_json, br#"{"run":2}"#);
    running.stop().await.unwrap();
}

#[derive(serde::Deserialize)]
struct Widget {
    spec: Spec,
}

#[derive(serde::Deserialize)]
struct Spec {
    size: u32,
}

async fn typed(ctx: Ctx<Widget>) -> HandlerResult {
    let size: u32 = ctx.label("size").unwrap_or("x").parse()?;
    if ctx.object().spec.size > size {
        return Err(HandlerError::temporary_after(
            "too big",
            Duration::from_secs(2),
        ));
    }
    Ok(None)
}

#[tokio::test]
async fn errors_are_outcomes_and_callback_filters_answer_not_matched() {
    let operator = Operator::new("svc").on_create_with(
        "widgets.example.com",
        HandlerOptions::new().when(|call: &Call<Widget>| call.object().spec.size < 10),
        typed,
    );
    let (running, channel) = start(operator).await;
    let mut client = HandlerServiceClient::new(channel);
    let call = |size: u32, label: &str| {
        let mut body = widget("a", size);
        body["metadata"]["labels"] = json!({"size": label});
        invoke("typed", 0, "", body)
    };
    // `?` on a ParseIntError: an arbitrary error, judged by the core per the errors mode.
    let response = client.invoke(call(1, "x")).await.unwrap().into_inner();
    let pb::outcome::Result::ArbitraryError(e) = result(&response) else {
        panic!("{response:?}")
    };
    assert_eq!(e.error_type, "ParseIntError");
    let response = client.invoke(call(5, "3")).await.unwrap().into_inner();
    let pb::outcome::Result::TemporaryError(e) = result(&response) else {
        panic!("{response:?}")
    };
    assert_eq!(
        (e.message.as_str(), e.delay.unwrap().seconds),
        ("too big", 2)
    );
    // The object the handler cannot read: an arbitrary error that says why.
    let response = client
        .invoke(invoke("typed", 0, "", json!({"spec": {}})))
        .await
        .unwrap()
        .into_inner();
    let pb::outcome::Result::ArbitraryError(e) = result(&response) else {
        panic!("{response:?}")
    };
    assert!(e.message.contains("missing field `size`"), "{e:?}");
    // The callback filter: Match, and the call itself.
    let matched = |size| {
        let mut client = client.clone();
        async move {
            client
                .r#match(call(size, "100"))
                .await
                .unwrap()
                .into_inner()
                .matched
        }
    };
    assert!(matched(3).await);
    assert!(!matched(30).await);
    let response = client.invoke(call(30, "100")).await.unwrap().into_inner();
    assert!(matches!(
        result(&response),
        pb::outcome::Result::NotMatched(_)
    ));
    assert!(response.patch_json.is_empty());
    // Unknown handlers and broken bodies are transport errors.
    let missing = client
        .invoke(invoke("nope", 0, "", widget("a", 1)))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let broken = client
        .invoke(pb::InvokeRequest {
            body_json: b"[]".to_vec(),
            ..invoke("typed", 0, "", json!({}))
        })
        .await
        .unwrap_err();
    assert_eq!(broken.code(), tonic::Code::InvalidArgument);
    running.stop().await.unwrap();
}

async fn parent(ctx: Ctx<Value>) -> HandlerResult {
    ctx.subhandler("a", |sub: Ctx<Value>| async move {
        sub.patch(json!({"status": {"a": sub.retry()}}));
        Ok(Some(json!("a done")))
    })
    .await;
    ctx.subhandler_with(
        "b",
        SubhandlerOptions::new().retries(3),
        |sub: Ctx<Value>| async move {
            if sub.retry() == 0 {
                return Err(HandlerError::temporary_after(
                    "not yet",
                    Duration::from_secs(7),
                ));
            }
            Ok(None)
        },
    )
    .await;
    Ok(Some(json!("parent done")))
}

#[tokio::test]
async fn subhandlers_run_until_all_are_finished() {
    let (running, channel) =
        start(Operator::new("svc").on_create("widgets.example.com", parent)).await;
    let mut client = HandlerServiceClient::new(channel);
    let first = client
        .invoke(invoke("parent", 0, "p1", widget("a", 1)))
        .await
        .unwrap()
        .into_inner();
    let pb::outcome::Result::SubhandlersPending(pending) = result(&first) else {
        panic!("{first:?}")
    };
    assert_eq!(pending.delay.unwrap().seconds, 7);
    let ids: Vec<&str> = first.subhandlers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["parent/a", "parent/b"]);
    assert_eq!(
        first.subhandlers[1].options.as_ref().unwrap().retries,
        Some(3)
    );
    assert_eq!(first.patch_json, br#"{"status":{"a":0}}"#);
    // The core records them and calls again: `a` is done, `b` is due.
    let records = vec![
        pb::Record {
            id: "parent/a".into(),
            retries: 1,
            success: true,
            ..Default::default()
        },
        pb::Record {
            id: "parent/b".into(),
            retries: 1,
            ..Default::default()
        },
    ];
    let second = client
        .invoke(pb::InvokeRequest {
            subhandlers: records,
            ..invoke("parent", 0, "p2", widget("a", 1))
        })
        .await
        .unwrap()
        .into_inner();
    let pb::outcome::Result::Success(success) = result(&second) else {
        panic!("{second:?}")
    };
    assert_eq!(success.result_json, br#""parent done""#);
    let ids: Vec<&str> = second.subhandlers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["parent/b"]);
    running.stop().await.unwrap();
}

async fn ticker(ctx: DaemonCtx<Widget>) -> Result<(), HandlerError> {
    let mut ticks = 0;
    while !ctx.stopped().sleep(Duration::from_millis(20)).await {
        ticks += 1;
        ctx.patch(json!({"status": {"ticks": ticks, "size": ctx.object().spec.size}}));
    }
    Ok(())
}

async fn next_daemon(
    stream: &mut tonic::Streaming<pb::DaemonResponse>,
) -> Option<pb::DaemonResponse> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a daemon message in time")
        .unwrap()
}

#[tokio::test]
async fn daemons_see_the_object_live_and_stop_when_asked() {
    let (running, channel) =
        start(Operator::new("svc").daemon("widgets.example.com", ticker)).await;
    let mut client = HandlerServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let start = pb::DaemonRequest {
        message: Some(pb::daemon_request::Message::Start(pb::DaemonStart {
            handler_id: "ticker".into(),
            body_json: widget("a", 1).to_string().into_bytes(),
            ..Default::default()
        })),
    };
    tx.send(start).await.unwrap();
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut stream = client.daemon(requests).await.unwrap().into_inner();
    let first = next_daemon(&mut stream).await.unwrap();
    assert!(String::from_utf8_lossy(&first.patch_json).contains(r#""size":1"#));
    tx.send(pb::DaemonRequest {
        message: Some(pb::daemon_request::Message::BodyJson(
            widget("a", 9).to_string().into_bytes(),
        )),
    })
    .await
    .unwrap();
    loop {
        let message = next_daemon(&mut stream).await.unwrap();
        if String::from_utf8_lossy(&message.patch_json).contains(r#""size":9"#) {
            break;
        }
    }
    tx.send(pb::DaemonRequest {
        message: Some(pb::daemon_request::Message::Stop(pb::DaemonStop {
            reason: pb::DaemonStopReason::ResourceDeleted as i32,
            force: false,
        })),
    })
    .await
    .unwrap();
    let exit = loop {
        let message = next_daemon(&mut stream).await.expect("an exit");
        if let Some(exit) = message.exit {
            break exit;
        }
    };
    assert!(matches!(exit.result, Some(pb::outcome::Result::Success(_))));
    assert!(
        next_daemon(&mut stream).await.is_none(),
        "the call ends after the exit"
    );
    running.stop().await.unwrap();
}

async fn steps(ctx: TaskCtx<Value, Value>) -> Result<String, HandlerError> {
    ctx.step("one", || async { Ok(Some(json!(1))) }).await?;
    ctx.step("two", || async {
        Err(HandlerError::permanent("two failed"))
    })
    .await?;
    Ok("unreachable".into())
}

async fn sync_site(ctx: SyncCtx<Value>) -> Result<Desired, HandlerError> {
    Ok(Desired::new()
        .status(json!({"children": ctx.children("ConfigMap").len()}))
        .child(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ctx.name()}})))
}

#[tokio::test]
async fn tasks_stream_their_steps_and_syncs_answer_children() {
    let operator = Operator::new("svc")
        .task(
            "backups.example.com",
            "sites.example.com",
            "spec.site",
            steps,
        )
        .sync_with(
            "sites.example.com",
            SyncOptions::new().owns("v1/configmaps"),
            sync_site,
        );
    let (running, channel) = start(operator).await;
    let mut tasks = pb::task_service_client::TaskServiceClient::new(channel.clone());
    let mut stream = tasks
        .run_task(pb::TaskRequest {
            task_id: "steps".into(),
            task_json: br#"{"metadata": {"name": "t"}}"#.to_vec(),
            parent_json: br#"{"metadata": {"name": "p"}}"#.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut updates = Vec::new();
    while let Some(update) = stream.message().await.unwrap() {
        updates.push(update.update.unwrap());
    }
    use pb::task_update::Update;
    assert!(
        matches!(&updates[0], Update::Step(s) if s.index == 0 && s.ok && s.result_json == b"1")
    );
    assert!(
        matches!(&updates[1], Update::Step(s) if s.index == 1 && !s.ok && s.message == "two failed")
    );
    assert!(matches!(&updates[2], Update::Finished(f) if !f.ok && f.message == "two failed"));
    assert_eq!(updates.len(), 3);

    let mut syncs = pb::sync_service_client::SyncServiceClient::new(channel);
    let answer = syncs
        .sync(pb::SyncRequest {
            sync_id: "sync_site".into(),
            parent_json: br#"{"metadata": {"name": "p"}}"#.to_vec(),
            children: vec![pb::ChildGroup {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                objects_json: vec![br#"{"metadata": {"name": "p"}}"#.to_vec()],
            }],
            finalizing: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status_json, br#"{"children":1}"#);
    assert_eq!(answer.children_json.len(), 1);
    let finalized = syncs
        .finalize(pb::SyncRequest {
            sync_id: "sync_site".into(),
            parent_json: br#"{"metadata": {"name": "p"}}"#.to_vec(),
            children: vec![],
            finalizing: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(finalized.finalized);
    running.stop().await.unwrap();
}

async fn slow(_: Ctx<Value>) -> HandlerResult {
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Some(json!("finished")))
}

#[tokio::test]
async fn health_reflection_and_a_graceful_stop() {
    let (running, channel) =
        start(Operator::new("svc").on_create("widgets.example.com", slow)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "operon.v1.HandlerService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            channel.clone(),
        );
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"operon.v1.HandlerService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    // A call in flight when the stop comes finishes; new connections are refused afterwards.
    let mut client = HandlerServiceClient::new(channel);
    let in_flight = tokio::spawn(async move {
        client
            .invoke(invoke("slow", 0, "s1", widget("a", 1)))
            .await
            .map(|r| r.into_inner())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = running.addr();
    running.stop().await.unwrap();
    let answer = in_flight
        .await
        .unwrap()
        .expect("the call in flight is answered");
    assert!(matches!(result(&answer), pb::outcome::Result::Success(_)));
    assert!(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .is_err()
    );
}
