//! The adapter against in-memory services: a tonic server over `tokio::io::duplex` (no sockets)
//! with fake Handler, Sync and Task services. Each call goes through the real client, the wire
//! and back, and the domain values on both ends are checked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use operon_proto::v1 as pb;
use operon_proto::v1::handler_service_server::{HandlerService, HandlerServiceServer};
use operon_proto::v1::sync_service_server::{SyncService, SyncServiceServer};
use operon_proto::v1::task_service_server::{TaskService, TaskServiceServer};
use serde_json::json;
use tonic::{Request, Response, Status};

use super::*;
use crate::core::model::{HandlerKind, Reason};
use crate::core::outcome::CallResult;
use crate::core::tasks::{Mode, StepRecord};
use crate::runtime::grpc::convert::to_duration;
use crate::runtime::ports::{
    CallError, ChildGroup, ResolvedResource, SubRecord, SubResult, SyncPort, SyncRequest,
    TaskError, TaskPort, TaskRequest, TaskUpdate,
};

/// What the fakes received.
#[derive(Default)]
struct Seen {
    invoke: Option<(pb::InvokeRequest, Option<String>, bool)>,
    sync: Option<(pb::SyncRequest, Option<String>)>,
    task: Option<(pb::TaskRequest, Option<String>)>,
}

type Shared = Arc<Mutex<Seen>>;

fn traceparent<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn selector(name: &str) -> Option<pb::ResourceSelector> {
    Some(pb::ResourceSelector {
        group: "example.com".into(),
        version: "v1".into(),
        name: name.into(),
        ..Default::default()
    })
}

fn outcome(result: pb::outcome::Result) -> Option<pb::Outcome> {
    Some(pb::Outcome {
        result: Some(result),
    })
}

struct Handlers(Shared);

#[tonic::async_trait]
impl HandlerService for Handlers {
    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::Manifest>, Status> {
        Ok(Response::new(pb::Manifest {
            service_name: "fake".into(),
            contract_revision: 1,
            handlers: vec![pb::Handler {
                id: "create_fn".into(),
                kind: pb::HandlerKind::Create as i32,
                resource: selector("things"),
                options: Some(pb::Options {
                    retries: Some(2),
                    timeout: Some(to_duration(Duration::from_secs(30))),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            syncs: vec![pb::SyncRegistration {
                id: "things-sync".into(),
                parent: selector("things"),
                children: vec![pb::ChildType {
                    resource: selector("configmaps"),
                    update_strategy: pb::UpdateStrategy::InPlace as i32,
                }],
                resync_period: Some(to_duration(Duration::from_secs(60))),
                ..Default::default()
            }],
            tasks: vec![pb::TaskRegistration {
                id: "repair".into(),
                task: selector("repairs"),
                parent: selector("things"),
                parent_field: "spec.thing".into(),
                mode: pb::TaskMode::Sequential as i32,
                ..Default::default()
            }],
        }))
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let timed = request.metadata().get("grpc-timeout").is_some();
        let tp = traceparent(&request);
        let request = request.into_inner();
        let admission = request.admission.is_some();
        self.0.lock().unwrap().invoke = Some((request, tp, timed));
        if admission {
            return Ok(Response::new(pb::InvokeResponse {
                outcome: outcome(pb::outcome::Result::PermanentError(pb::PermanentError {
                    message: "no".into(),
                })),
                admission_code: Some(403),
                warnings: vec!["careful".into()],
                events: vec![pb::Event {
                    reason: "Denied".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }));
        }
        Ok(Response::new(pb::InvokeResponse {
            outcome: outcome(pb::outcome::Result::Success(pb::Success {
                result_json: br#"{"done":true}"#.to_vec(),
            })),
            patch_json: br#"{"status":{"x":1}}"#.to_vec(),
            subhandlers: vec![
                pb::SubhandlerOutcome {
                    id: "create_fn/a".into(),
                    outcome: outcome(pb::outcome::Result::TemporaryError(pb::TemporaryError {
                        message: "later".into(),
                        delay: Some(to_duration(Duration::from_secs(3))),
                    })),
                    options: Some(pb::Options {
                        retries: Some(5),
                        ..Default::default()
                    }),
                },
                pb::SubhandlerOutcome {
                    id: "create_fn/b".into(),
                    outcome: None,
                    options: None,
                },
                pb::SubhandlerOutcome {
                    id: "create_fn/c".into(),
                    outcome: outcome(pb::outcome::Result::NotMatched(pb::NotMatched {})),
                    options: None,
                },
            ],
            events: vec![pb::Event {
                r#type: "Warning".into(),
                reason: "Odd".into(),
                message: "m".into(),
                involved_object_json: br#"{"kind":"Pod"}"#.to_vec(),
            }],
            ..Default::default()
        }))
    }

    type DaemonStream = BoxStream<'static, Result<pb::DaemonResponse, Status>>;

    async fn daemon(
        &self,
        _: Request<tonic::Streaming<pb::DaemonRequest>>,
    ) -> Result<Response<Self::DaemonStream>, Status> {
        Err(Status::unimplemented("daemon"))
    }

    async fn r#match(
        &self,
        _: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        Err(Status::unimplemented("match"))
    }

    async fn select_resources(
        &self,
        _: Request<pb::SelectResourcesRequest>,
    ) -> Result<Response<pb::SelectResourcesResponse>, Status> {
        Err(Status::unimplemented("select"))
    }

    type OutboxStream = BoxStream<'static, Result<pb::OutboxEvent, Status>>;

    async fn outbox(
        &self,
        _: Request<pb::OutboxRequest>,
    ) -> Result<Response<Self::OutboxStream>, Status> {
        Err(Status::unimplemented("outbox"))
    }

    async fn login(
        &self,
        _: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        Err(Status::unimplemented("login"))
    }
}

struct Syncs(Shared);

#[tonic::async_trait]
impl SyncService for Syncs {
    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let tp = traceparent(&request);
        self.0.lock().unwrap().sync = Some((request.into_inner(), tp));
        Ok(Response::new(pb::SyncResponse {
            status_json: br#"{"ready":true}"#.to_vec(),
            children_json: vec![
                br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#.to_vec(),
                b"{broken".to_vec(),
            ],
            resync_after: Some(to_duration(Duration::from_secs(7))),
            error: String::new(),
        }))
    }

    async fn finalize(
        &self,
        _: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::FinalizeResponse>, Status> {
        Err(Status::failed_precondition("not yet"))
    }
}

struct Tasks(Shared);

#[tonic::async_trait]
impl TaskService for Tasks {
    type RunTaskStream = BoxStream<'static, Result<pb::TaskUpdate, Status>>;

    async fn run_task(
        &self,
        request: Request<pb::TaskRequest>,
    ) -> Result<Response<Self::RunTaskStream>, Status> {
        let tp = traceparent(&request);
        self.0.lock().unwrap().task = Some((request.into_inner(), tp));
        use pb::task_update::Update;
        let updates = vec![
            Ok(pb::TaskUpdate {
                update: Some(Update::Step(pb::StepResult {
                    index: 1,
                    name: "drain".into(),
                    ok: true,
                    message: "drained".into(),
                    result_json: b"[1,2]".to_vec(),
                })),
            }),
            Ok(pb::TaskUpdate { update: None }),
            Ok(pb::TaskUpdate {
                update: Some(Update::Finished(pb::TaskFinished {
                    ok: true,
                    message: "all good".into(),
                })),
            }),
        ];
        Ok(Response::new(futures_util::stream::iter(updates).boxed()))
    }
}

/// The fakes served over an in-memory pipe, and the adapter connected to them.
async fn connected() -> (GrpcService, Shared) {
    let seen = Shared::default();
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let server = tonic::transport::Server::builder()
        .add_service(HandlerServiceServer::new(Handlers(Arc::clone(&seen))))
        .add_service(SyncServiceServer::new(Syncs(Arc::clone(&seen))))
        .add_service(TaskServiceServer::new(Tasks(Arc::clone(&seen))))
        .serve_with_incoming(futures_util::stream::iter([Ok::<_, std::io::Error>(
            server_io,
        )]));
    tokio::spawn(server);
    let pipe = Arc::new(Mutex::new(Some(client_io)));
    let channel = Endpoint::from_static("http://in-memory")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let io = pipe.lock().unwrap().take();
            async move {
                io.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the pipe is used"))
            }
        }))
        .await
        .unwrap();
    (
        GrpcService::over("in-memory", channel, Transport::Plaintext),
        seen,
    )
}

fn resource() -> ResolvedResource {
    ResolvedResource {
        group: "example.com".into(),
        version: "v1".into(),
        plural: "things".into(),
        kind: "Thing".into(),
        namespaced: true,
    }
}

#[tokio::test]
async fn describe_gives_the_domain_manifest() {
    let (service, _) = connected().await;
    let m = service.describe().await.unwrap();
    assert_eq!((m.service_name.as_str(), m.declared), ("fake", 1));
    let handlers = m.handlers.unwrap();
    let h = &handlers.handlers[0];
    assert_eq!(h.selector.to_string(), "example.com/v1/things");
    assert_eq!(
        (h.handler.id.as_str(), h.handler.kind),
        ("create_fn", HandlerKind::Create)
    );
    assert_eq!(h.handler.options.retries, Some(2));
    assert_eq!(h.handler.options.timeout, Some(Duration::from_secs(30)));
    let syncs = m.syncs.unwrap();
    assert_eq!(syncs[0].id, "things-sync");
    assert_eq!(syncs[0].children[0].0.name, "configmaps");
    assert_eq!(syncs[0].resync, Some(Duration::from_secs(60)));
    let tasks = m.tasks.unwrap();
    assert_eq!(
        (tasks[0].id.as_str(), tasks[0].mode),
        ("repair", Mode::Sequential)
    );
    assert_eq!(tasks[0].parent_field, "spec.thing");
    assert!(m.admission.unwrap().is_empty());
}

#[tokio::test]
async fn invoke_sends_the_call_and_validates_the_answer() {
    let (service, seen) = connected().await;
    let started = jiff::Timestamp::from_second(1_700_000_000).unwrap();
    let call = Call {
        reason: Some(Reason::Create),
        old: Some(json!({"spec": {"a": 1}})),
        new: Some(json!({"spec": {"a": 2}})),
        diff: json!([["change", ["spec", "a"], 1, 2]]),
        retry: 2,
        started: Some(started),
        subhandlers: vec![SubRecord {
            id: "create_fn/a".into(),
            started: Some(started),
            retries: 1,
            success: false,
            failure: false,
            message: Some("later".into()),
            delayed: None,
        }],
        attempt_id: "attempt-1".into(),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        ..Call::about(
            "create_fn",
            Arc::new(json!({"metadata": {"name": "t"}})),
            Duration::from_secs(5),
            resource(),
        )
    };
    let answer = service.invoke(call).await.unwrap();
    assert_eq!(
        answer.result,
        Some(CallResult::Success(Some(json!({"done": true}))))
    );
    assert_eq!(answer.patch, Some(json!({"status": {"x": 1}})));
    let subs: Vec<_> = answer
        .subhandlers
        .iter()
        .map(|s| (s.id.as_str(), &s.result))
        .collect();
    assert_eq!(
        subs,
        [
            (
                "create_fn/a",
                &SubResult::Ran(CallResult::Temporary {
                    message: "later".into(),
                    delay: Some(Duration::from_secs(3))
                })
            ),
            ("create_fn/b", &SubResult::Selected),
            ("create_fn/c", &SubResult::NotMatched),
        ]
    );
    assert_eq!(answer.subhandlers[0].options.retries, Some(5));
    assert_eq!(answer.events[0].type_, "Warning");
    assert_eq!(
        answer.events[0].involved_object,
        Some(json!({"kind": "Pod"}))
    );

    let (wire, tp, timed) = seen.lock().unwrap().invoke.take().unwrap();
    assert!(timed, "the call carries its deadline");
    assert_eq!(
        tp.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(wire.handler_id, "create_fn");
    assert_eq!(wire.reason, pb::Reason::Create as i32);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&wire.body_json).unwrap(),
        json!({"metadata": {"name": "t"}})
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&wire.new_json).unwrap(),
        json!({"spec": {"a": 2}})
    );
    assert_eq!((wire.retry, wire.attempt_id.as_str()), (2, "attempt-1"));
    assert_eq!(wire.started.map(|t| t.seconds), Some(1_700_000_000));
    assert_eq!(wire.subhandlers[0].id, "create_fn/a");
    assert_eq!(
        (
            wire.subhandlers[0].retries,
            wire.subhandlers[0].message.as_str()
        ),
        (1, "later")
    );
    let r = wire.resource.unwrap();
    assert_eq!(
        (r.plural.as_str(), r.kind.as_str(), r.namespaced),
        ("things", "Thing", true)
    );
    assert!(wire.admission.is_none());
}

#[tokio::test]
async fn admission_calls_carry_the_review_and_answer_a_verdict() {
    let (service, seen) = connected().await;
    let reply = service
        .admit(AdmissionCall {
            handler_id: "check".into(),
            body: json!({"metadata": {"name": "t"}}),
            old: None,
            new: Some(json!({"spec": {}})),
            diff: json!([]),
            attempt_id: "admission:u:check".into(),
            resource: resource(),
            request: json!({"uid": "u"}),
            headers: [("x-h".to_owned(), "v".to_owned())].into(),
            deadline: Duration::from_secs(5),
        })
        .await
        .unwrap();
    let answer = reply.answer.unwrap();
    assert_eq!(
        answer.verdict,
        crate::core::admission::Verdict::Refused {
            refusal: crate::core::admission::Refusal::Admission(Some(403)),
            message: "no".into()
        }
    );
    assert_eq!(answer.warnings, ["careful"]);
    assert_eq!(reply.events.unwrap()[0].reason, "Denied");
    let (wire, _, _) = seen.lock().unwrap().invoke.take().unwrap();
    let admission = wire.admission.unwrap();
    assert_eq!(admission.headers["x-h"], "v");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&admission.request_json).unwrap(),
        json!({"uid": "u"})
    );
}

#[tokio::test]
async fn sync_sends_the_children_and_keeps_what_does_not_parse() {
    let (service, seen) = connected().await;
    let port = service.sync_port();
    let request = SyncRequest {
        sync_id: "things-sync".into(),
        parent: json!({"kind": "Thing", "metadata": {"name": "t"}}),
        children: vec![ChildGroup {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            objects: vec![json!({"kind": "ConfigMap", "metadata": {"name": "old"}})],
        }],
        finalizing: false,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    };
    let answer = port.sync(request, Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer.error, None);
    assert_eq!(answer.status.unwrap(), Some(json!({"ready": true})));
    assert_eq!(answer.children.len(), 2);
    assert_eq!(
        answer.children[0].as_ref().unwrap()["metadata"]["name"],
        "c"
    );
    assert!(
        answer.children[1].is_err(),
        "kept as its error, refused later"
    );
    assert_eq!(answer.resync_after, Some(Duration::from_secs(7)));
    let (wire, tp) = seen.lock().unwrap().sync.take().unwrap();
    assert_eq!(
        tp.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "the sync's trace context travels with the call"
    );
    assert_eq!(wire.sync_id, "things-sync");
    assert_eq!(wire.children[0].kind, "ConfigMap");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&wire.children[0].objects_json[0]).unwrap()["metadata"]
            ["name"],
        "old"
    );
    let failed = port
        .finalize(
            SyncRequest {
                sync_id: "things-sync".into(),
                parent: json!({}),
                children: Vec::new(),
                finalizing: true,
                traceparent: None,
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(
        failed,
        CallError::Failed {
            rpc: "Finalize",
            message: "not yet".into(),
            code: "FailedPrecondition".into()
        }
    );
    assert_eq!(
        failed.to_string(),
        "the Finalize call failed: not yet (FailedPrecondition)"
    );
}

#[tokio::test]
async fn a_task_call_streams_its_steps_and_end() {
    let (service, seen) = connected().await;
    let port = service.task_port();
    let done = StepRecord {
        index: 0,
        name: "prepare".into(),
        ok: true,
        message: String::new(),
        result: Some(json!({"n": 1})),
    };
    let mut updates = port
        .run_task(TaskRequest {
            task_id: "repair".into(),
            task: json!({"metadata": {"name": "r1"}}),
            parent: json!({"metadata": {"name": "t"}}),
            resume_from: 1,
            done_steps: vec![done],
            attempt_id: "uid-1".into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        })
        .await
        .unwrap();
    let step = updates.next().await.unwrap().unwrap();
    assert_eq!(
        step,
        TaskUpdate::Step(StepRecord {
            index: 1,
            name: "drain".into(),
            ok: true,
            message: "drained".into(),
            result: Some(json!([1, 2])),
        })
    );
    let empty = updates.next().await.unwrap().unwrap_err();
    assert!(matches!(empty, TaskError::Empty), "{empty}");
    assert_eq!(
        updates.next().await.unwrap().unwrap(),
        TaskUpdate::Finished {
            ok: true,
            message: "all good".into()
        }
    );
    assert!(updates.next().await.is_none());
    let (wire, tp) = seen.lock().unwrap().task.take().unwrap();
    assert!(tp.is_some());
    assert_eq!(
        (
            wire.task_id.as_str(),
            wire.resume_from,
            wire.attempt_id.as_str()
        ),
        ("repair", 1, "uid-1")
    );
    assert_eq!(wire.done_steps[0].name, "prepare");
    assert_eq!(wire.done_steps[0].result_json, br#"{"n":1}"#);
}
