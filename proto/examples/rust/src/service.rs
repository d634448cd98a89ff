//! The gRPC service: `Describe` answers the manifest, `Invoke` runs a scripted behaviour.
//!
//! Handler errors are outcomes in the response. gRPC status codes are only for calls that make
//! no sense: a body that is not a JSON object (`InvalidArgument`), an unknown handler id
//! (`NotFound`), a ledger that cannot be written (`Internal`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use operon_proto::v1::{
    ArbitraryError, DaemonRequest, DaemonResponse, DescribeRequest, Event, HandlerKind,
    InvokeRequest, InvokeResponse, Manifest, NotMatched, Outcome, PermanentError, Reason, Record,
    SubhandlerOutcome, SubhandlersPending, Success, TemporaryError,
    handler_service_server::HandlerService, outcome,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::{
    behaviour::{self, Behaviour, SubState, Verdict},
    config::Config,
    duration,
    ledger::{Execution, Ledger, ObjectIdentity},
    manifest,
};

/// The bytes answered as `patch_json` for `invalid_patch`: not JSON.
pub const INVALID_PATCH: &[u8] = b"{not json";

/// How many recent answers are remembered by attempt id.
const REMEMBERED_ATTEMPTS: usize = 10_000;

/// Recent answers by the core's attempt id: a repeated attempt (the core died before it could
/// persist the outcome) is answered again without running the handler again.
#[derive(Debug, Default)]
struct Answers {
    by_id: HashMap<String, InvokeResponse>,
    order: VecDeque<String>,
}

impl Answers {
    fn get(&self, id: &str) -> Option<InvokeResponse> {
        self.by_id.get(id).cloned()
    }

    fn remember(&mut self, id: String, response: &InvokeResponse) {
        if self.by_id.insert(id.clone(), response.clone()).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBERED_ATTEMPTS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}

/// The example handler service.
#[derive(Debug, Clone)]
pub struct ExampleService {
    config: Arc<Config>,
    ledger: Ledger,
    answers: Arc<Mutex<Answers>>,
}

impl ExampleService {
    /// A service with these handlers, recording executions in `ledger`.
    pub fn new(config: Config, ledger: Ledger) -> Self {
        Self {
            config: Arc::new(config),
            ledger,
            answers: Arc::default(),
        }
    }

    /// The service's `TaskService`: its task types, recording in the same ledger.
    pub fn tasks(&self) -> crate::task::ExampleTasks {
        crate::task::ExampleTasks::new(Arc::clone(&self.config), self.ledger.clone())
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl HandlerService for ExampleService {
    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<Manifest>, Status> {
        let request = request.into_inner();
        eprintln!(
            "describe: core {:?}, contract revision {}",
            request.core_version, request.contract_revision
        );
        Ok(Response::new(manifest::manifest(&self.config)))
    }

    type DaemonStream = tonic::codegen::BoxStream<DaemonResponse>;

    // ---- Selectors (begin) ----
    async fn select_resources(
        &self,
        _: Request<operon_proto::v1::SelectResourcesRequest>,
    ) -> Result<Response<operon_proto::v1::SelectResourcesResponse>, Status> {
        Err(Status::unimplemented(
            "this service has no callable resource selectors",
        ))
    }

    type OutboxStream = tonic::codegen::BoxStream<operon_proto::v1::OutboxEvent>;

    async fn outbox(
        &self,
        _: Request<operon_proto::v1::OutboxRequest>,
    ) -> Result<Response<Self::OutboxStream>, Status> {
        Err(Status::unimplemented(
            "this service posts no Events outside handler calls",
        ))
    }

    async fn login(
        &self,
        _: Request<operon_proto::v1::LoginRequest>,
    ) -> Result<Response<operon_proto::v1::LoginResponse>, Status> {
        Err(Status::unimplemented("this service has no login handlers"))
    }
    // ---- Selectors (end) ----

    async fn r#match(
        &self,
        _request: Request<InvokeRequest>,
    ) -> Result<Response<operon_proto::v1::MatchResponse>, Status> {
        // This service's filters are all declarative (the core evaluates them itself).
        Ok(Response::new(operon_proto::v1::MatchResponse {
            matched: true,
        }))
    }

    async fn daemon(
        &self,
        request: Request<tonic::Streaming<DaemonRequest>>,
    ) -> Result<Response<Self::DaemonStream>, Status> {
        crate::daemon::serve(self.ledger.clone(), request.into_inner()).await
    }

    async fn invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let span = crate::telemetry::RunSpan::start(
            request.metadata(),
            &request.get_ref().handler_id,
            request.get_ref().retry,
        );
        let answer = self.invoke_traced(request).await;
        match &answer {
            Ok(response) => {
                let outcome = response.get_ref().outcome.as_ref();
                span.finish(describe_outcome(outcome), error_message(outcome));
            }
            Err(status) => span.finish("transport error", Some(status.message())),
        }
        answer
    }
}

impl ExampleService {
    async fn invoke_traced(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let request = request.into_inner();
        let Some(handler) = self.config.handler(&request.handler_id) else {
            return Err(Status::not_found(format!(
                "this service has no handler {:?}",
                request.handler_id
            )));
        };
        let body = parse_body(&request.body_json).map_err(Status::invalid_argument)?;
        if request.admission.is_some() {
            if !matches!(handler.kind, HandlerKind::Validate | HandlerKind::Mutate) {
                return Err(Status::invalid_argument(format!(
                    "{:?} is not an admission handler",
                    request.handler_id
                )));
            }
            let response = crate::admission::admit(handler.kind, &handler.id, &body);
            eprintln!(
                "admission {}: {}",
                request.handler_id,
                if response.admission_code.is_some() {
                    "denied"
                } else {
                    "allowed"
                }
            );
            return Ok(Response::new(response));
        }
        if !request.attempt_id.is_empty()
            && let Some(answer) = self.answers().get(&request.attempt_id)
        {
            eprintln!(
                "invoke {} retry {}: replayed attempt {}",
                request.handler_id, request.retry, request.attempt_id
            );
            return Ok(Response::new(answer));
        }
        let execution = Execution {
            handler: request.handler_id.clone(),
            object: ObjectIdentity::from_body(&body),
            reason: reason_name(request.reason()),
            retry: request.retry,
            event_type: request.event_type.clone(),
            attempt_id: request.attempt_id.clone(),
            traceparent,
        };
        let response = match behaviour::behaviour_for(&body, &request.handler_id) {
            Ok(behaviour) => {
                self.run(execution, &behaviour, &request.subhandlers)
                    .await?
            }
            // A script error is the handler's failure, visible on the object; not transport.
            Err(message) => {
                let verdict = Verdict::Permanent { message };
                self.ledger
                    .record(&execution, verdict.ledger_name())
                    .map_err(ledger_error)?;
                InvokeResponse {
                    outcome: to_outcome(verdict),
                    ..InvokeResponse::default()
                }
            }
        };
        eprintln!(
            "invoke {} retry {}: {}",
            request.handler_id,
            request.retry,
            describe_outcome(response.outcome.as_ref())
        );
        if !request.attempt_id.is_empty() {
            self.answers()
                .remember(request.attempt_id.clone(), &response);
        }
        Ok(Response::new(response))
    }
}

impl ExampleService {
    /// Runs a handler (and its due sub-handlers), records every execution, and answers.
    async fn run(
        &self,
        execution: Execution,
        behaviour: &Behaviour,
        records: &[Record],
    ) -> Result<InvokeResponse, Status> {
        let retry = execution.retry;
        let pending = self.ledger.start(execution.clone());
        if let Some(sleep) = behaviour.sleep {
            tokio::time::sleep(sleep).await;
        }
        let mut response = InvokeResponse::default();
        let mut patch = None;
        let mut verdict = behaviour.verdict(retry);
        let effects = produces_effects(&verdict);
        if effects {
            // The parent's own body runs first, then its sub-handlers (their patches win).
            add_effects(behaviour, &mut patch, &mut response.events);
        }
        if matches!(verdict, Verdict::Success(_)) && !behaviour.subhandlers.is_empty() {
            let mut unfinished = Vec::new();
            let now = SystemTime::now();
            for (name, sub) in &behaviour.subhandlers {
                let full_id = behaviour::subhandler_id(&execution.handler, name);
                match behaviour::sub_state(&full_id, name, records, now) {
                    SubState::Finished => {}
                    SubState::Sleeping(remaining) => unfinished.push(remaining),
                    SubState::Due { retry } => {
                        let sub_execution = Execution {
                            handler: full_id.clone(),
                            retry,
                            ..execution.clone()
                        };
                        let sub_verdict = self
                            .run_one(sub_execution, sub, &mut patch, &mut response.events)
                            .await?;
                        unfinished.extend(sub_verdict.unfinished_delay());
                        response.subhandlers.push(SubhandlerOutcome {
                            id: full_id,
                            outcome: to_outcome(sub_verdict),
                            options: None,
                        });
                    }
                }
            }
            verdict = behaviour::after_subhandlers(verdict, &unfinished);
        }
        response.patch_json = if !effects {
            Vec::new()
        } else if behaviour.invalid_patch {
            INVALID_PATCH.to_vec()
        } else {
            patch
                .map(|patch| patch.to_string().into_bytes())
                .unwrap_or_default()
        };
        pending
            .finish(verdict.ledger_name())
            .map_err(ledger_error)?;
        response.outcome = to_outcome(verdict);
        if response.outcome.is_none() {
            // break_contract: nothing at all, not even the patch.
            return Ok(InvokeResponse::default());
        }
        Ok(response)
    }

    /// Runs one sub-handler, records it, and adds its patch and event to the parent's.
    async fn run_one(
        &self,
        execution: Execution,
        behaviour: &Behaviour,
        patch: &mut Option<Value>,
        events: &mut Vec<Event>,
    ) -> Result<Verdict, Status> {
        let retry = execution.retry;
        let pending = self.ledger.start(execution);
        if let Some(sleep) = behaviour.sleep {
            tokio::time::sleep(sleep).await;
        }
        let verdict = behaviour.verdict(retry);
        if produces_effects(&verdict) {
            add_effects(behaviour, patch, events);
        }
        pending
            .finish(verdict.ledger_name())
            .map_err(ledger_error)?;
        Ok(verdict)
    }
}

/// Parses `body_json`: it must be a JSON object.
pub fn parse_body(body_json: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body_json) {
        Ok(body @ Value::Object(_)) => Ok(body),
        Ok(_) => Err("body_json must be a JSON object (the Kubernetes object)".into()),
        Err(error) => Err(format!("body_json is not valid JSON: {error}")),
    }
}

/// The reason as written in the ledger.
pub fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::Create => "create",
        Reason::Update => "update",
        Reason::Delete => "delete",
        Reason::Resume => "resume",
        Reason::Unspecified => "unspecified",
    }
}

/// Whether a handler with this verdict ran its body (so its patch and event count): not when
/// it broke the contract or a filter said no.
fn produces_effects(verdict: &Verdict) -> bool {
    !matches!(verdict, Verdict::NoOutcome | Verdict::NotMatched)
}

fn add_effects(behaviour: &Behaviour, patch: &mut Option<Value>, events: &mut Vec<Event>) {
    if let Some(own) = &behaviour.patch {
        match patch {
            Some(patch) => behaviour::merge_patches(patch, own),
            None => *patch = Some(own.clone()),
        }
    }
    if let Some(event) = &behaviour.event {
        events.push(Event {
            r#type: event.event_type.clone(),
            reason: event.reason.clone(),
            message: event.message.clone(),
            involved_object_json: Vec::new(),
        });
    }
}

/// The verdict as the contract's outcome; `None` for [`Verdict::NoOutcome`].
pub fn to_outcome(verdict: Verdict) -> Option<Outcome> {
    let result = match verdict {
        Verdict::NoOutcome => return None,
        Verdict::NotMatched => outcome::Result::NotMatched(NotMatched {}),
        Verdict::Success(result) => outcome::Result::Success(Success {
            result_json: result
                .map(|result| result.to_string().into_bytes())
                .unwrap_or_default(),
        }),
        Verdict::Temporary { message, delay } => outcome::Result::TemporaryError(TemporaryError {
            message,
            delay: Some(duration::to_proto(delay)),
        }),
        Verdict::Permanent { message } => {
            outcome::Result::PermanentError(PermanentError { message })
        }
        Verdict::Arbitrary { message, .. } => outcome::Result::ArbitraryError(ArbitraryError {
            message,
            error_type: behaviour::ARBITRARY_ERROR_TYPE.into(),
        }),
        Verdict::SubhandlersPending { delay } => {
            outcome::Result::SubhandlersPending(SubhandlersPending {
                delay: Some(duration::to_proto(delay)),
            })
        }
    };
    Some(Outcome {
        result: Some(result),
    })
}

fn describe_outcome(outcome: Option<&Outcome>) -> &'static str {
    match outcome.and_then(|outcome| outcome.result.as_ref()) {
        None => "no outcome",
        Some(outcome::Result::Success(_)) => "success",
        Some(outcome::Result::TemporaryError(_)) => "temporary error",
        Some(outcome::Result::PermanentError(_)) => "permanent error",
        Some(outcome::Result::ArbitraryError(_)) => "arbitrary error",
        Some(outcome::Result::NotMatched(_)) => "not matched",
        Some(outcome::Result::SubhandlersPending(_)) => "sub-handlers pending",
    }
}

/// The error message of a failed outcome.
fn error_message(outcome: Option<&Outcome>) -> Option<&str> {
    match outcome.and_then(|outcome| outcome.result.as_ref()) {
        Some(outcome::Result::TemporaryError(e)) => Some(&e.message),
        Some(outcome::Result::PermanentError(e)) => Some(&e.message),
        Some(outcome::Result::ArbitraryError(e)) => Some(&e.message),
        _ => None,
    }
}

fn ledger_error(error: std::io::Error) -> Status {
    Status::internal(format!("cannot write the ledger: {error}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bodies() {
        assert!(parse_body(br#"{"metadata": {}}"#).is_ok());
        assert!(
            parse_body(b"{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(parse_body(b"").is_err());
        assert!(parse_body(b"[1]").unwrap_err().contains("JSON object"));
    }

    #[test]
    fn outcomes() {
        assert_eq!(to_outcome(Verdict::NoOutcome), None);
        let success = to_outcome(Verdict::Success(Some(json!({"a": 1})))).unwrap();
        let Some(outcome::Result::Success(success)) = success.result else {
            panic!("not a success")
        };
        assert_eq!(success.result_json, br#"{"a":1}"#);
        let empty = to_outcome(Verdict::Success(None)).unwrap();
        let Some(outcome::Result::Success(empty)) = empty.result else {
            panic!("not a success")
        };
        assert!(empty.result_json.is_empty());
        let arbitrary = to_outcome(Verdict::Arbitrary {
            message: "m".into(),
            delay: behaviour::DEFAULT_DELAY,
        })
        .unwrap();
        let Some(outcome::Result::ArbitraryError(arbitrary)) = arbitrary.result else {
            panic!("not arbitrary")
        };
        assert_eq!(arbitrary.error_type, "RuntimeError");
        assert_eq!(reason_name(Reason::Resume), "resume");
    }
}
