//! The gRPC edge: `HandlerService` (Describe, Invoke — change, event, timer and admission
//! handlers —, Match, Daemon), `SyncService` and `TaskService` over the validated
//! registrations. Handler errors are outcomes (an admission handler's error is a denial); gRPC
//! status codes are only for calls that make no sense (an unknown id, a body that is not an
//! object, an admission review for a handler of another kind) and for what this SDK does not
//! serve (UNIMPLEMENTED).

use std::sync::{Arc, Mutex};

use operon_proto::v1 as pb;
use operon_proto::v1::handler_service_server::HandlerService;
use operon_proto::v1::sync_service_server::SyncService;
use operon_proto::v1::task_service_server::TaskService;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::admission::{Admission, Verdict};
use crate::cache::{Answered, AttemptCache, REMEMBERED};
use crate::call::{CallData, Head, Reason, ResolvedResource};
use crate::convert;
use crate::ctx::{Effects, Level, catching};
use crate::daemon::{self, DaemonCall, Stopped};
use crate::lock::lock;
use crate::registry::{CONTRACT_REVISION, ChangeFn, HandlerReg, Registry, Runner};
use crate::sync::{Finalized, SyncInput, error_response};
use crate::task::TaskInput;
use crate::telemetry::{continue_trace, record_outcome};

/// What every call of the service shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    cache: AttemptCache<pb::InvokeResponse>,
    draining: watch::Receiver<bool>,
}

/// The handler service: one value implementing the three gRPC services of the contract
/// (`HandlerService`, `SyncService`, `TaskService`) for the registrations of an [`Operator`].
///
/// [`Operator::start`] and [`Operator::serve`] serve it for you. You get hold of it only with
/// [`Operator::start_wrapped`] / [`Operator::serve_wrapped`], to wrap it in services of your own
/// that see every call first (e.g. to answer some calls themselves, or to count them) and hand
/// the rest to it.
///
/// [`Operator`]: crate::Operator
/// [`Operator::start`]: crate::Operator::start
/// [`Operator::serve`]: crate::Operator::serve
/// [`Operator::start_wrapped`]: crate::Operator::start_wrapped
/// [`Operator::serve_wrapped`]: crate::Operator::serve_wrapped
#[derive(Debug, Clone)]
pub struct Services {
    shared: Arc<Shared>,
}

impl Services {
    /// A service for `registry`; `draining` turns true when the service shuts down.
    pub(crate) fn new(registry: Registry, draining: watch::Receiver<bool>) -> Self {
        Self {
            shared: Arc::new(Shared {
                registry,
                cache: AttemptCache::new(REMEMBERED),
                draining,
            }),
        }
    }

    fn handler(&self, id: &str, reason: Option<Reason>) -> Result<Arc<HandlerReg>, Status> {
        self.shared
            .registry
            .handler(id, reason)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "the handler service {:?} has no handler {id:?}",
                    self.shared.registry.manifest.service_name
                ))
            })
    }

    pub(crate) fn manifest(&self) -> &pb::Manifest {
        &self.shared.registry.manifest
    }
}

/// The outcome's name in logs and on spans.
pub(crate) fn outcome_name(outcome: &pb::outcome::Result) -> &'static str {
    match outcome {
        pb::outcome::Result::Success(_) => "success",
        pb::outcome::Result::TemporaryError(_) => "temporary_error",
        pb::outcome::Result::PermanentError(_) => "permanent_error",
        pb::outcome::Result::ArbitraryError(_) => "arbitrary_error",
        pb::outcome::Result::NotMatched(_) => "not_matched",
        pb::outcome::Result::SubhandlersPending(_) => "subhandlers_pending",
    }
}

fn error_message(outcome: &pb::outcome::Result) -> Option<&str> {
    match outcome {
        pb::outcome::Result::TemporaryError(e) => Some(&e.message),
        pb::outcome::Result::PermanentError(e) => Some(&e.message),
        pb::outcome::Result::ArbitraryError(e) => Some(&e.message),
        _ => None,
    }
}

/// The type of a failed outcome's error, as Kopf names its exceptions (an arbitrary error's
/// own type): in the span's log with the message.
fn error_type(outcome: &pb::outcome::Result) -> Option<&str> {
    match outcome {
        pb::outcome::Result::TemporaryError(_) => Some("TemporaryError"),
        pb::outcome::Result::PermanentError(_) => Some("PermanentError"),
        pb::outcome::Result::ArbitraryError(e) => Some(&e.error_type),
        _ => None,
    }
}

fn answer(outcome: pb::outcome::Result) -> pb::Outcome {
    pb::Outcome {
        result: Some(outcome),
    }
}

/// `namespace/name` (or `name`) of a body, for logs.
fn object_name(body: &serde_json::Value) -> String {
    let meta = &body["metadata"];
    match (meta["namespace"].as_str(), meta["name"].as_str()) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_owned(),
        _ => String::new(),
    }
}

/// Runs one call of a change/event/timer/admission handler: the callback filters, then the
/// handler with its effects collected; for an admission call, with the warnings and the code of
/// a denial.
async fn run_call(
    reg: Arc<HandlerReg>,
    run: ChangeFn,
    head: Head,
    span: tracing::Span,
) -> pb::InvokeResponse {
    if !reg.options.filters.matches(&head) {
        return pb::InvokeResponse {
            outcome: Some(answer(pb::outcome::Result::NotMatched(pb::NotMatched {}))),
            ..pb::InvokeResponse::default()
        };
    }
    let effects = Arc::new(Mutex::new(Effects::default()));
    let level = Level::new(reg.kind.is_change());
    let admission = head.data.admission.is_some();
    let result = catching(run(
        head,
        Arc::clone(&effects),
        Arc::clone(&level),
        span.clone(),
    ))
    .instrument(span)
    .await;
    let admission_code = match &result {
        Err(error) if admission => error.admission_code(),
        _ => None,
    };
    let outcome = level.outcome(result);
    let effects = std::mem::take(&mut *lock(&effects));
    pb::InvokeResponse {
        outcome: Some(answer(outcome)),
        patch_json: effects
            .patch
            .as_ref()
            .map(convert::to_json)
            .unwrap_or_default(),
        subhandlers: effects.subhandlers,
        events: effects.events,
        // Only a request under review has a user to warn.
        warnings: if admission {
            effects.warnings
        } else {
            Vec::new()
        },
        admission_code,
    }
}

type BoxStream<T> = tonic::codegen::BoxStream<T>;

fn unbounded_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<Result<T, Status>>,
) -> BoxStream<T> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    }))
}

#[tonic::async_trait]
impl HandlerService for Services {
    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::Manifest>, Status> {
        let request = request.into_inner();
        if request.contract_revision < CONTRACT_REVISION {
            let message = format!(
                "the handler service {:?} needs handler contract revision {CONTRACT_REVISION} or \
                 later, but the core (version {:?}) speaks revision {}: upgrade the core \
                 (`operon --version` prints its revision)",
                self.manifest().service_name,
                request.core_version,
                request.contract_revision
            );
            tracing::error!(core_version = %request.core_version, core_revision = request.contract_revision, needed = CONTRACT_REVISION, "The core is too old for this service.");
            return Err(Status::failed_precondition(message));
        }
        tracing::info!(core_version = %request.core_version, core_revision = request.contract_revision, "The core asked for the manifest.");
        Ok(Response::new(self.manifest().clone()))
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let id = request.get_ref().handler_id.clone();
        let retry = request.get_ref().retry;
        let span = tracing::info_span!(
            "handler",
            otel.name = format!("handler {id}"),
            otel.kind = "server",
            handler.id = %id,
            attempt = i64::from(retry) + 1,
            object = tracing::field::Empty,
            admission.operation = tracing::field::Empty,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        continue_trace(&span, request.metadata());
        let request = request.into_inner();
        let data = CallData::from_invoke(&request).map_err(Status::invalid_argument)?;
        let reg = self.handler(&id, data.reason)?;
        let Runner::Call(run) = &reg.runner else {
            return Err(Status::invalid_argument(format!(
                "{id:?} is a daemon: it runs through the Daemon call, not Invoke"
            )));
        };
        match (reg.kind.is_admission(), data.admission.is_some()) {
            (true, false) => {
                return Err(Status::invalid_argument(format!(
                    "{id:?} is a {} handler: it is called with an admission review                      (`admission`)",
                    reg.kind.name()
                )));
            }
            (false, true) => {
                return Err(Status::invalid_argument(format!(
                    "{id:?} is a {} handler, not an admission (validate/mutate) handler",
                    reg.kind.name()
                )));
            }
            (true, true) | (false, false) => {}
        }
        let run = Arc::clone(run);
        let object = object_name(&data.body);
        span.record("object", object.as_str());
        let operation = data.admission.as_ref().map(Admission::operation);
        if let Some(operation) = operation {
            span.record("admission.operation", operation.as_str());
        }
        let head = Head {
            data: Arc::new(data),
            handler_id: Arc::from(id.as_str()),
            retry,
            started: request.started.as_ref().and_then(convert::time),
        };
        let (response, answered) = self
            .shared
            .cache
            .answer(&request.attempt_id, || {
                run_call(Arc::clone(&reg), run, head, span.clone())
            })
            .await;
        let result = response.outcome.as_ref().and_then(|o| o.result.as_ref());
        let outcome = match (result, operation) {
            (Some(result), Some(_)) => Verdict::of(result).as_str(),
            (Some(result), None) => outcome_name(result),
            (None, _) => "none",
        };
        let error = result.and_then(error_message);
        let error_type = result.and_then(error_type);
        record_outcome(&span, outcome, error);
        match (answered, operation) {
            (Answered::Ran, Some(operation)) => {
                let code = response.admission_code;
                tracing::info!(parent: &span, handler = %id, %object, %operation, verdict = outcome, code, error, "Admission handler answered.");
            }
            (Answered::Ran, None) => {
                tracing::info!(parent: &span, handler = %id, %object, retry, outcome, error, error.type = error_type, "Handler answered.");
            }
            (Answered::Replayed, _) => {
                tracing::info!(parent: &span, handler = %id, %object, retry, outcome, attempt_id = %request.attempt_id, "Repeated attempt answered from the cache; the handler did not run again.");
            }
        }
        Ok(Response::new(response))
    }

    async fn r#match(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        let request = request.into_inner();
        let data = CallData::from_invoke(&request).map_err(Status::invalid_argument)?;
        let reg = self.handler(&request.handler_id, data.reason)?;
        if reg.options.filters.when.is_empty() {
            return Ok(Response::new(pb::MatchResponse { matched: true }));
        }
        let head = Head {
            data: Arc::new(data),
            handler_id: Arc::from(request.handler_id.as_str()),
            retry: request.retry,
            started: request.started.as_ref().and_then(convert::time),
        };
        let matched = reg.options.filters.matches(&head);
        tracing::debug!(handler = %request.handler_id, object = %object_name(&head.data.body), matched, "Callback filters evaluated.");
        Ok(Response::new(pb::MatchResponse { matched }))
    }

    type DaemonStream = BoxStream<pb::DaemonResponse>;

    async fn daemon(
        &self,
        request: Request<Streaming<pb::DaemonRequest>>,
    ) -> Result<Response<Self::DaemonStream>, Status> {
        let metadata = request.metadata().clone();
        let mut requests = request.into_inner();
        let start = match requests.message().await? {
            Some(pb::DaemonRequest {
                message: Some(pb::daemon_request::Message::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a Daemon call must be `start`",
                ));
            }
        };
        let id = start.handler_id.clone();
        let reg = self.handler(&id, None)?;
        let Runner::Daemon(run) = &reg.runner else {
            return Err(Status::invalid_argument(format!(
                "{id:?} is not a daemon: it runs through Invoke"
            )));
        };
        let body = convert::object_json("body_json", &start.body_json)
            .map_err(Status::invalid_argument)?;
        let object = object_name(&body);
        let span = tracing::info_span!(
            "daemon",
            otel.name = format!("daemon {id}"),
            otel.kind = "server",
            handler.id = %id,
            attempt = i64::from(start.retry) + 1,
            object = %object,
        );
        continue_trace(&span, &metadata);
        let resource = start.resource.as_ref().map(ResolvedResource::from_proto);
        let started = start.started.as_ref().and_then(convert::time);
        let (out, rx) = mpsc::unbounded_channel();
        let head = Head {
            data: Arc::new(CallData {
                body: body.clone(),
                resource: resource.clone(),
                attempt_id: start.attempt_id.clone(),
                ..CallData::default()
            }),
            handler_id: Arc::from(id.as_str()),
            retry: start.retry,
            started,
        };
        if !reg.options.filters.matches(&head) {
            tracing::info!(handler = %id, %object, "The daemon's callback filters do not match; not started.");
            let _ = out.send(Ok(pb::DaemonResponse {
                exit: Some(answer(pb::outcome::Result::NotMatched(pb::NotMatched {}))),
                ..pb::DaemonResponse::default()
            }));
            return Ok(Response::new(unbounded_stream(rx)));
        }
        tracing::info!(parent: &span, handler = %id, %object, retry = start.retry, "The daemon starts.");
        let (body_tx, body_rx) = watch::channel(Arc::new(body));
        let (stop_tx, stop_rx) = watch::channel(None);
        let call = Arc::new(DaemonCall {
            handler_id: id,
            retry: start.retry,
            started,
            attempt_id: start.attempt_id,
            resource,
            body: body_rx,
            stopped: Stopped::new(stop_rx),
            out,
            span,
        });
        tokio::spawn(daemon::supervise(
            Arc::clone(run),
            call,
            requests,
            body_tx,
            stop_tx,
            self.shared.draining.clone(),
        ));
        Ok(Response::new(unbounded_stream(rx)))
    }

    async fn select_resources(
        &self,
        _: Request<pb::SelectResourcesRequest>,
    ) -> Result<Response<pb::SelectResourcesResponse>, Status> {
        Err(Status::unimplemented(
            "this handler service (the Rust SDK) has no callable resource selectors",
        ))
    }

    type OutboxStream = BoxStream<pb::OutboxEvent>;

    async fn outbox(
        &self,
        _: Request<pb::OutboxRequest>,
    ) -> Result<Response<Self::OutboxStream>, Status> {
        Err(Status::unimplemented(
            "this handler service (the Rust SDK) posts no Events outside handler calls",
        ))
    }

    async fn login(
        &self,
        _: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        Err(Status::unimplemented(
            "this handler service (the Rust SDK) has no login handlers",
        ))
    }
}

#[tonic::async_trait]
impl SyncService for Services {
    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let (span, input) = self.sync_input("sync", request)?;
        let reg = Arc::clone(&self.shared.registry.syncs[&*input.sync_id]);
        let object = object_name(&input.body);
        let result = catching((reg.sync)(&input)).instrument(span.clone()).await;
        let response = match result {
            Ok(desired) => desired.to_proto(),
            Err(error) => error_response(error.message()),
        };
        let error = (!response.error.is_empty()).then_some(response.error.as_str());
        record_outcome(
            &span,
            if error.is_some() { "error" } else { "success" },
            error,
        );
        tracing::info!(parent: &span, sync = %input.sync_id, %object, children = response.children_json.len(), error, "Sync answered.");
        Ok(Response::new(response))
    }

    async fn finalize(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::FinalizeResponse>, Status> {
        let (span, input) = self.sync_input("finalize", request)?;
        let reg = Arc::clone(&self.shared.registry.syncs[&*input.sync_id]);
        let object = object_name(&input.body);
        let result = match &reg.options.finalizer {
            Some(finalize) => catching(finalize(&input)).instrument(span.clone()).await,
            None => Ok(Finalized::done()),
        };
        let response = match result {
            Ok(finalized) => finalized.to_proto(),
            Err(error) => pb::FinalizeResponse {
                error: error.message(),
                ..pb::FinalizeResponse::default()
            },
        };
        let error = (!response.error.is_empty()).then_some(response.error.as_str());
        record_outcome(
            &span,
            if error.is_some() { "error" } else { "success" },
            error,
        );
        tracing::info!(parent: &span, sync = %input.sync_id, %object, finalized = response.finalized, error, "Finalize answered.");
        Ok(Response::new(response))
    }
}

impl Services {
    /// The call's span (`sync <id>` or `finalize <id>`, after `call`), a child of the core's,
    /// and its parsed request.
    fn sync_input(
        &self,
        call: &str,
        request: Request<pb::SyncRequest>,
    ) -> Result<(tracing::Span, SyncInput), Status> {
        let id = request.get_ref().sync_id.clone();
        let span = tracing::info_span!(
            "sync",
            otel.name = format!("{call} {id}"),
            otel.kind = "server",
            sync.id = %id,
            finalizing = request.get_ref().finalizing,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        continue_trace(&span, request.metadata());
        if !self.shared.registry.syncs.contains_key(&id) {
            return Err(Status::not_found(format!(
                "the handler service {:?} has no sync registration {id:?}",
                self.manifest().service_name
            )));
        }
        let input =
            SyncInput::read(request.get_ref(), span.clone()).map_err(Status::invalid_argument)?;
        Ok((span, input))
    }
}

#[tonic::async_trait]
impl TaskService for Services {
    type RunTaskStream = BoxStream<pb::TaskUpdate>;

    async fn run_task(
        &self,
        request: Request<pb::TaskRequest>,
    ) -> Result<Response<Self::RunTaskStream>, Status> {
        let id = request.get_ref().task_id.clone();
        let span = tracing::info_span!(
            "task",
            otel.name = format!("task {id}"),
            otel.kind = "server",
            task.id = %id,
            resume_from = request.get_ref().resume_from,
        );
        continue_trace(&span, request.metadata());
        let Some(reg) = self.shared.registry.tasks.get(&id).cloned() else {
            return Err(Status::not_found(format!(
                "the handler service {:?} has no task type {id:?}",
                self.manifest().service_name
            )));
        };
        let (tx, mut rx) = mpsc::channel(16);
        let input = Arc::new(
            TaskInput::read(request.get_ref(), tx.clone(), span.clone())
                .map_err(Status::invalid_argument)?,
        );
        let task = object_name(&input.task);
        tracing::info!(parent: &span, task_id = %id, %task, resume_from = input.resume_from, "Task run starts.");
        tokio::spawn(async move {
            let run = catching((reg.run)(input)).instrument(span.clone());
            tokio::select! {
                result = run => {
                    let (ok, message) = match result {
                        Ok(message) => (true, message),
                        Err(error) => (false, error.message()),
                    };
                    tracing::info!(parent: &span, task_id = %id, %task, ok, %message, "Task run finished.");
                    let _ = tx
                        .send(Ok(pb::TaskUpdate {
                            update: Some(pb::task_update::Update::Finished(pb::TaskFinished { ok, message })),
                        }))
                        .await;
                }
                () = tx.closed() => {
                    tracing::info!(parent: &span, task_id = %id, %task, "Task run cancelled by the core.");
                }
            }
        });
        Ok(Response::new(Box::pin(futures_util::stream::poll_fn(
            move |cx| rx.poll_recv(cx),
        ))))
    }
}
