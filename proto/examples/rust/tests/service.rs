//! The service over real gRPC on 127.0.0.1: in-process, and the binary itself.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Parser as _;
use operon_example_handler::{Cli, app};
use operon_handler::Running;
use operon_proto::v1::{
    DescribeRequest, HandlerKind, InvokeRequest, InvokeResponse, Reason, Record, TaskRequest,
    handler_service_client::HandlerServiceClient, outcome, task_service_client::TaskServiceClient,
    task_update,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::{Code, transport::Channel};

/// Starts the example as its command line `args` say (plus a fresh ledger and a free port).
async fn start(dir: &Path, args: &[&str]) -> Running {
    let ledger = dir.join("ledger.jsonl");
    let cli = Cli::parse_from(
        [
            "operon-example-handler",
            "--listen",
            "127.0.0.1:0",
            "--ledger",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([ledger.display().to_string()])
        .chain(args.iter().map(|a| (*a).to_owned())),
    );
    let running = app::start(&cli).await.unwrap();
    assert!(running.addr().ip().is_loopback());
    running
}

/// A running service with its ledger in a fresh directory.
struct Harness {
    dir: PathBuf,
    server: Running,
    client: HandlerServiceClient<Channel>,
}

impl Harness {
    async fn start(name: &str, handlers: &[&str]) -> Self {
        let dir = temp_dir(name);
        let mut args = vec!["--resource", "kopf.dev/v1/kopfexamples"];
        for handler in handlers {
            args.extend(["--handler", handler]);
        }
        let server = start(&dir, &args).await;
        let client = HandlerServiceClient::connect(format!("http://{}", server.addr()))
            .await
            .unwrap();
        Self {
            dir,
            server,
            client,
        }
    }

    async fn invoke(&mut self, request: InvokeRequest) -> InvokeResponse {
        self.client.invoke(request).await.unwrap().into_inner()
    }

    fn ledger(&self) -> Vec<Value> {
        read_ledger(&self.dir.join("ledger.jsonl"))
    }

    async fn stop(self) {
        self.server.stop().await.unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "operon-example-handler-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_ledger(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn object(behaviour: Value) -> Vec<u8> {
    json!({
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfExample",
        "metadata": {"name": "obj", "namespace": "ns", "uid": "uid-1", "generation": 2},
        "spec": {"behaviour": behaviour},
    })
    .to_string()
    .into_bytes()
}

fn request(handler_id: &str, behaviour: Value, retry: u32) -> InvokeRequest {
    InvokeRequest {
        handler_id: handler_id.into(),
        reason: Reason::Create.into(),
        body_json: object(behaviour),
        retry,
        ..InvokeRequest::default()
    }
}

fn result(response: &InvokeResponse) -> &outcome::Result {
    response
        .outcome
        .as_ref()
        .and_then(|outcome| outcome.result.as_ref())
        .expect("an outcome")
}

fn outcomes(ledger: &[Value]) -> Vec<(String, String)> {
    ledger
        .iter()
        .map(|line| {
            (
                line["handler"].as_str().unwrap().to_owned(),
                line["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn describe_lists_the_handlers() {
    let mut harness = Harness::start(
        "describe",
        &[
            "create:c1,retries=3,errors=permanent",
            "field:f1=spec.field",
            "event:e1",
        ],
    )
    .await;
    let manifest = harness
        .client
        .describe(DescribeRequest {
            core_version: "test".into(),
            contract_revision: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(manifest.service_name, "operon-example-handler");
    assert_eq!(manifest.contract_revision, 1);
    let handlers: Vec<(&str, HandlerKind)> = manifest
        .handlers
        .iter()
        .map(|h| (h.id.as_str(), h.kind()))
        .collect();
    assert_eq!(
        handlers,
        [
            ("c1", HandlerKind::Create),
            ("f1/spec.field", HandlerKind::Field),
            ("e1", HandlerKind::Event)
        ]
    );
    assert_eq!(
        manifest.handlers[0].options.clone().unwrap().retries,
        Some(3)
    );
    assert_eq!(
        manifest.handlers[1].filters.as_ref().unwrap().field,
        "spec.field"
    );
    assert_eq!(
        manifest.handlers[2].resource.as_ref().unwrap().name,
        "kopfexamples"
    );
    harness.stop().await;
}

#[tokio::test]
async fn fails_temporarily_by_retry_count_and_writes_the_ledger() {
    let mut harness = Harness::start("temporary", &["create:c1"]).await;
    let behaviour = json!({"c1": {"fail_temporarily": 2, "delay": 3, "result": {"ok": true}}});
    for retry in 0..2 {
        let response = harness
            .invoke(request("c1", behaviour.clone(), retry))
            .await;
        let outcome::Result::TemporaryError(error) = result(&response) else {
            panic!("retry {retry}: {response:?}")
        };
        assert_eq!(error.delay.unwrap().seconds, 3);
    }
    let response = harness.invoke(request("c1", behaviour, 2)).await;
    let outcome::Result::Success(success) = result(&response) else {
        panic!("{response:?}")
    };
    assert_eq!(success.result_json, br#"{"ok":true}"#);

    let ledger = harness.ledger();
    assert_eq!(ledger.len(), 3);
    let retries: Vec<u64> = ledger
        .iter()
        .map(|l| l["retry"].as_u64().unwrap())
        .collect();
    assert_eq!(retries, [0, 1, 2]);
    let names: Vec<&str> = ledger
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["temporary", "temporary", "success"]);
    let line = &ledger[2];
    assert!(line["ts"].as_f64().unwrap() > 1.6e9);
    assert_eq!(line["handler"], "c1");
    assert_eq!(line["uid"], "uid-1");
    assert_eq!(line["namespace"], "ns");
    assert_eq!(line["name"], "obj");
    assert_eq!(line["generation"], 2);
    assert_eq!(line["reason"], "create");
    harness.stop().await;
}

#[tokio::test]
async fn missing_behaviour_succeeds_and_failures_are_outcomes() {
    let mut harness = Harness::start("outcomes", &["create:c1", "update:u1"]).await;
    let response = harness.invoke(request("c1", json!({}), 0)).await;
    let outcome::Result::Success(success) = result(&response) else {
        panic!("{response:?}")
    };
    assert!(success.result_json.is_empty());
    assert!(response.patch_json.is_empty());

    let permanent = json!({"u1": {"fail_permanently": true, "patch": {"status": {"x": 1}},
                                  "event": {"type": "Warning", "reason": "Boom", "message": "m"}}});
    let response = harness.invoke(request("u1", permanent, 0)).await;
    assert!(matches!(
        result(&response),
        outcome::Result::PermanentError(_)
    ));
    assert_eq!(
        serde_json::from_slice::<Value>(&response.patch_json).unwrap(),
        json!({"status": {"x": 1}})
    );
    assert_eq!(response.events.len(), 1);
    assert_eq!(response.events[0].r#type, "Warning");
    assert_eq!(response.events[0].reason, "Boom");

    let arbitrary = json!({"c1": {"fail_arbitrarily": 1}});
    let response = harness.invoke(request("c1", arbitrary.clone(), 0)).await;
    let outcome::Result::ArbitraryError(error) = result(&response) else {
        panic!("{response:?}")
    };
    assert_eq!(error.error_type, "RuntimeError");
    let response = harness.invoke(request("c1", arbitrary, 1)).await;
    assert!(matches!(result(&response), outcome::Result::Success(_)));

    // Not scripted here (the Rust example declares no `when` filters): the script's error.
    let response = harness
        .invoke(request("c1", json!({"c1": {"not_matched": true}}), 0))
        .await;
    assert!(
        matches!(result(&response), outcome::Result::PermanentError(e) if e.message.contains("not_matched"))
    );

    let response = harness
        .invoke(request("c1", json!({"c1": {"invalid_patch": true}}), 0))
        .await;
    assert!(serde_json::from_slice::<Value>(&response.patch_json).is_err());

    let response = harness
        .invoke(request("c1", json!({"c1": {"break_contract": true}}), 0))
        .await;
    assert_eq!(response, InvokeResponse::default());

    let response = harness
        .invoke(request("c1", json!({"c1": {"fail_temporarily": "x"}}), 0))
        .await;
    let outcome::Result::PermanentError(error) = result(&response) else {
        panic!("{response:?}")
    };
    assert!(
        error.message.contains("spec.behaviour.c1"),
        "{}",
        error.message
    );

    let names: Vec<String> = outcomes(&harness.ledger())
        .into_iter()
        .map(|o| o.1)
        .collect();
    assert_eq!(
        names,
        [
            "success",
            "permanent",
            "arbitrary",
            "success",
            "permanent",
            "success",
            "no_outcome",
            "permanent"
        ]
    );
    harness.stop().await;
}

#[tokio::test]
async fn subhandlers_that_finished_are_not_run_again() {
    let mut harness = Harness::start("subhandlers", &["create:c1"]).await;
    let behaviour = json!({"c1": {"result": "parent", "subhandlers": {
        "b": {"fail_temporarily": 1, "delay": 4},
        "a": {"patch": {"status": {"a": 1}}},
        "c": {"fail_permanently": true},
        "d": {"fail_temporarily": 3, "delay": 2},
    }}});

    // First call: everything runs, in sorted order; b and d are not finished.
    let response = harness.invoke(request("c1", behaviour.clone(), 0)).await;
    let ids: Vec<&str> = response.subhandlers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["c1/a", "c1/b", "c1/c", "c1/d"]);
    let outcome::Result::SubhandlersPending(pending) = result(&response) else {
        panic!("{response:?}")
    };
    assert_eq!(pending.delay.unwrap().seconds, 2);
    assert_eq!(
        serde_json::from_slice::<Value>(&response.patch_json).unwrap(),
        json!({"status": {"a": 1}})
    );

    // Second call: a succeeded and c failed for good, so neither runs; b runs with its own
    // record's retry count and now succeeds; d is still delayed.
    let mut second = request("c1", behaviour.clone(), 1);
    second.subhandlers = vec![
        Record {
            id: "c1/a".into(),
            retries: 1,
            success: true,
            ..Record::default()
        },
        Record {
            id: "c1/b".into(),
            retries: 1,
            ..Record::default()
        },
        Record {
            id: "c1/c".into(),
            retries: 1,
            failure: true,
            ..Record::default()
        },
        Record {
            id: "c1/d".into(),
            retries: 1,
            delayed: Some(prost_types::Timestamp::from(
                std::time::SystemTime::now() + Duration::from_secs(60),
            )),
            ..Record::default()
        },
    ];
    let response = harness.invoke(second.clone()).await;
    let ids: Vec<&str> = response.subhandlers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["c1/b"]);
    assert!(matches!(
        response.subhandlers[0].outcome.as_ref().unwrap().result,
        Some(outcome::Result::Success(_))
    ));
    let outcome::Result::SubhandlersPending(pending) = result(&response) else {
        panic!("{response:?}")
    };
    assert!(pending.delay.unwrap().seconds >= 58, "{pending:?}");

    // Third call: d is due with 3 retries done, so it succeeds, and so does the parent.
    second.retry = 2;
    second.subhandlers[1].success = true;
    second.subhandlers[3] = Record {
        id: "c1/d".into(),
        retries: 3,
        ..Record::default()
    };
    let response = harness.invoke(second).await;
    let ids: Vec<&str> = response.subhandlers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["c1/d"]);
    let outcome::Result::Success(success) = result(&response) else {
        panic!("{response:?}")
    };
    assert_eq!(success.result_json, br#""parent""#);

    let ledger = harness.ledger();
    let expected = [
        ("c1/a", "success"),
        ("c1/b", "temporary"),
        ("c1/c", "permanent"),
        ("c1/d", "temporary"),
        ("c1", "subhandlers_pending"),
        ("c1/b", "success"),
        ("c1", "subhandlers_pending"),
        ("c1/d", "success"),
        ("c1", "success"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(h, o)| ((*h).to_owned(), (*o).to_owned()))
        .collect();
    assert_eq!(outcomes(&ledger), expected);
    let retries: Vec<u64> = ledger
        .iter()
        .map(|l| l["retry"].as_u64().unwrap())
        .collect();
    assert_eq!(retries, [0, 0, 0, 0, 0, 1, 1, 3, 2]);
    harness.stop().await;
}

#[tokio::test]
async fn garbage_is_rejected_with_status_codes() {
    let mut harness = Harness::start("garbage", &["create:c1"]).await;
    let mut bad = request("c1", json!({}), 0);
    bad.body_json = b"{not json".to_vec();
    let status = harness.client.invoke(bad.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("body_json"),
        "{}",
        status.message()
    );
    bad.body_json = b"[1, 2]".to_vec();
    let status = harness.client.invoke(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = harness
        .client
        .invoke(request("nope", json!({}), 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(harness.ledger().is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn a_call_cut_by_its_deadline_is_recorded_as_cancelled() {
    let mut harness = Harness::start("deadline", &["create:c1"]).await;
    let mut call = tonic::Request::new(request("c1", json!({"c1": {"sleep": 5}}), 0));
    call.set_timeout(Duration::from_millis(200));
    let status = harness.client.invoke(call).await.unwrap_err();
    // tonic's server enforces `grpc-timeout` itself and answers Cancelled ("Timeout expired").
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    let mut ledger = Vec::new();
    for _ in 0..50 {
        ledger = harness.ledger();
        if !ledger.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        outcomes(&ledger),
        [("c1".to_owned(), "cancelled".to_owned())]
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_binary_announces_its_port_and_stops_on_sigterm() {
    let dir = temp_dir("binary");
    let ledger = dir.join("ledger.jsonl");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_operon-example-handler"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--resource",
            "kopf.dev/v1/kopfexamples",
        ])
        .args([
            "--handler",
            "create:c1",
            "--handler",
            "delete:d1",
            "--optional-delete",
        ])
        .arg("--ledger")
        .arg(&ledger)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.strip_prefix("listening on 127.0.0.1:").unwrap();
    let port: u16 = addr.parse().unwrap();
    assert_ne!(port, 0);

    let mut client = HandlerServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    // A core of an older contract revision is refused, with what to do.
    let old = client
        .describe(DescribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::FailedPrecondition);
    assert!(old.message().contains("upgrade the core"), "{old:?}");
    let manifest = client
        .describe(DescribeRequest {
            core_version: "test".into(),
            contract_revision: operon_handler::CONTRACT_REVISION,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(manifest.handlers.len(), 2);
    assert!(manifest.handlers[1].options.clone().unwrap().optional);
    let response = client
        .invoke(request("c1", json!({}), 0))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(result(&response), outcome::Result::Success(_)));
    assert_eq!(read_ledger(&ledger).len(), 1);
    drop(client);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(stdout.next_line().await.unwrap(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_repeated_attempt_is_answered_again_without_running_the_handler() {
    let mut harness = Harness::start("replay", &["create:c1"]).await;
    let behaviour = json!({"c1": {"result": {"n": 1}}});
    let mut first = request("c1", behaviour.clone(), 0);
    first.attempt_id = "attempt-1".into();
    let answer = harness.invoke(first.clone()).await;
    // The core died before persisting: it asks again with the same attempt id.
    let again = harness.invoke(first).await;
    assert_eq!(answer, again);
    assert_eq!(harness.ledger().len(), 1, "the handler ran once");
    // A different attempt runs.
    let mut next = request("c1", behaviour, 1);
    next.attempt_id = "attempt-2".into();
    harness.invoke(next).await;
    assert_eq!(harness.ledger().len(), 2);
    harness.stop().await;
}

/// A service with one sequential task type, over real gRPC.
async fn task_harness(name: &str) -> (PathBuf, Running, TaskServiceClient<Channel>) {
    let dir = temp_dir(name);
    let server = start(
        &dir,
        &[
            "--resource",
            "kopf.dev/v1/kopfexamples",
            "--handler",
            "create:c1",
            "--task",
            "t1:e2e/v1/jobs:kopf.dev/v1/kopfexamples:spec.parent:sequential",
        ],
    )
    .await;
    let client = TaskServiceClient::connect(format!("http://{}", server.addr()))
        .await
        .unwrap();
    (dir, server, client)
}

fn task_request(spec: Value, resume_from: u32) -> TaskRequest {
    TaskRequest {
        task_id: "t1".into(),
        task_json: json!({"metadata": {"name": "job", "uid": "u1"}, "spec": spec})
            .to_string()
            .into_bytes(),
        parent_json: br#"{"metadata": {"name": "p1"}}"#.to_vec(),
        resume_from,
        ..TaskRequest::default()
    }
}

#[tokio::test]
async fn a_task_streams_its_steps_from_where_it_resumes_and_ends_with_finished() {
    let (dir, server, mut client) = task_harness("task-resume").await;
    let request = task_request(json!({"steps": 4, "stepSeconds": 0.01}), 2);
    let mut stream = client.run_task(request).await.unwrap().into_inner();
    let mut steps = Vec::new();
    let finished = loop {
        match stream.message().await.unwrap().unwrap().update.unwrap() {
            task_update::Update::Step(s) => steps.push(s),
            task_update::Update::Finished(f) => break f,
        }
    };
    assert!(finished.ok, "{finished:?}");
    let indexes: Vec<u32> = steps.iter().map(|s| s.index).collect();
    assert_eq!(indexes, [2, 3], "steps 0 and 1 are not run again");
    let result: Value = serde_json::from_slice(&steps[0].result_json).unwrap();
    assert_eq!(result, json!({"step": 2, "parent": "p1"}));
    assert!(stream.message().await.unwrap().is_none());
    let ledger = read_ledger(&dir.join("ledger.jsonl"));
    assert_eq!(ledger[0]["outcome"], "started");
    assert_eq!(ledger[0]["resume_from"], 2);
    assert_eq!(ledger.last().unwrap()["outcome"], "succeeded");
    server.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_task_sees_that_the_core_dropped_its_call() {
    let (dir, server, mut client) = task_harness("task-cancel").await;
    let request = task_request(json!({"steps": 3, "stepSeconds": 30}), 0);
    let stream = client.run_task(request).await.unwrap().into_inner();
    let path = dir.join("ledger.jsonl");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !read_ledger(&path)
        .iter()
        .any(|l| l["outcome"] == "step_started")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the step never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ledger = read_ledger(&path);
        if let Some(cancelled) = ledger.iter().find(|l| l["outcome"] == "cancelled") {
            assert_eq!(cancelled["step"], 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service did not see the cancellation: {ledger:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
