//! Calling handlers: the [`Dispatch`] port and its gRPC adapter ([`GrpcService`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use operon_proto::v1 as pb;
use operon_proto::v1::handler_service_client::HandlerServiceClient;
use serde_json::Value;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::core::model::Reason;
use crate::runtime::convert::{self, Answer, DaemonOutput};

/// A failed call: transport trouble or a broken contract — never a handler's own error, which is
/// an outcome.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not a valid URL.
    #[error("invalid handler service address {url:?}: {source}")]
    BadAddress {
        /// The address given.
        url: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// An `https://` address without the files TLS needs, or files that cannot be used.
    #[error("TLS for the handler service {url:?}: {problem}")]
    Tls {
        /// The address given.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The call did not finish within its deadline.
    #[error("the call did not finish within {0:?}")]
    Deadline(Duration),
    /// The service could not be reached or answered with a gRPC error.
    #[error("the handler service failed: {} ({:?})", status_text(.0), .0.code())]
    Transport(#[source] tonic::Status),
    /// The answer breaks the contract.
    #[error("the handler service broke the contract: {0}")]
    Contract(#[from] convert::Error),
    /// The service cannot run daemons.
    #[error("the handler service does not run daemons")]
    NoDaemons,
}

/// Why the core stops a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The object is being deleted or is gone.
    ResourceDeleted,
    /// The object no longer matches the daemon's filters.
    FiltersMismatch,
    /// The core stops or reloads its handlers.
    OperatorExiting,
}

/// What the core sends down an open daemon call after its start.
#[derive(Debug, Clone)]
pub enum DaemonInput {
    /// A newer version of the object.
    Body(Arc<Value>),
    /// Stop: gracefully (`force` false) or by cancelling the daemon.
    Stop {
        /// Why.
        reason: StopReason,
        /// Cancel rather than ask.
        force: bool,
    },
}

/// What an open daemon call sends back: validated messages, or the failure that ended it.
pub type DaemonOutputs = BoxStream<'static, Result<DaemonOutput, Error>>;

/// The record of a sub-handler as sent back to its parent's next call.
#[derive(Debug, Clone, PartialEq)]
pub struct SubRecord {
    /// Full id (`parent/sub`).
    pub id: String,
    /// First attempt.
    pub started: Option<jiff::Timestamp>,
    /// Attempts so far.
    pub retries: u32,
    /// Finished successfully.
    pub success: bool,
    /// Finished with a failure.
    pub failure: bool,
    /// Last error text.
    pub message: Option<String>,
    /// Sleeping until.
    pub delayed: Option<jiff::Timestamp>,
}

/// One call of one handler.
#[derive(Debug, Clone)]
pub struct Call {
    /// The handler.
    pub handler_id: String,
    /// The cycle's reason (`None` for event handlers).
    pub reason: Option<Reason>,
    /// The whole object.
    pub body: Value,
    /// Old and new essence and their diff.
    pub old: Option<Value>,
    /// See `old`.
    pub new: Option<Value>,
    /// Kopf's diff form.
    pub diff: Value,
    /// Attempts so far.
    pub retry: u32,
    /// First attempt.
    pub started: Option<jiff::Timestamp>,
    /// Sub-handler records.
    pub subhandlers: Vec<SubRecord>,
    /// Raw watch event type, for event handlers.
    pub event_type: String,
    /// Stable id of this attempt across restarts.
    pub attempt_id: String,
    /// The call's deadline.
    pub deadline: Duration,
    /// W3C traceparent to propagate, if any.
    pub traceparent: Option<String>,
    /// The resource as resolved by the core.
    pub resource: Option<pb::ResolvedResource>,
}

impl Call {
    /// A call of `handler_id` about `body` with no cause of its own (a raw event, a timer's
    /// tick, an index event, a filter check): no reason, no essences, no retries, no trace;
    /// set what differs with struct-update syntax.
    pub fn about(
        handler_id: &str,
        body: Value,
        deadline: Duration,
        resource: pb::ResolvedResource,
    ) -> Self {
        Call {
            handler_id: handler_id.to_owned(),
            reason: None,
            body,
            old: None,
            new: None,
            diff: Value::Array(Vec::new()),
            retry: 0,
            started: None,
            subhandlers: Vec::new(),
            event_type: String::new(),
            attempt_id: String::new(),
            deadline,
            traceparent: None,
            resource: Some(resource),
        }
    }
}

/// Something that runs handlers: a handler service.
#[tonic::async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// The address or name, for logs.
    fn name(&self) -> &str;
    /// The service's manifest.
    async fn describe(&self) -> Result<pb::Manifest, Error>;
    /// Calls one handler.
    async fn invoke(&self, call: Call) -> Result<Answer, Error>;
    /// Whether the handler's callback filters accept the object of `call`, without running it
    /// (`Match`). A service that cannot tell is taken to match.
    async fn matches(&self, call: Call) -> Result<bool, Error> {
        let _ = call;
        Ok(true)
    }
    /// Starts a daemon (`call` carries its handler, body, retry and start); `inputs` feeds it
    /// while it runs. Dropping the returned stream cancels the call.
    async fn daemon(
        &self,
        call: Call,
        inputs: tokio::sync::mpsc::Receiver<DaemonInput>,
    ) -> Result<DaemonOutputs, Error> {
        let _ = (call, inputs);
        Err(Error::NoDaemons)
    }
    /// Which of `resources` each of the service's callable selectors accepts
    /// (`SelectResources`): `(callable id, indexes into resources)`. A service that cannot tell
    /// accepts nothing.
    async fn select_resources(
        &self,
        resources: &[crate::core::selectors::Discovered],
    ) -> Result<Vec<(String, Vec<usize>)>, Error> {
        let _ = resources;
        Ok(Vec::new())
    }
    /// Opens the service's `Outbox`: the Events it posts outside handler calls, as they come.
    /// `None`: the service has none to send (it does not implement the call).
    async fn outbox(
        &self,
    ) -> Result<Option<BoxStream<'static, Result<convert::EventRequest, Error>>>, Error> {
        Ok(None)
    }
}

/// A handler service reached over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcService {
    url: String,
    client: HandlerServiceClient<Channel>,
    /// The connection, shared with the service's other gRPC services (tasks).
    channel: Channel,
    /// How the service is reached: a closed connection over TLS may be a refused handshake.
    transport: Transport,
}

/// How a handler service is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `http://`.
    Plaintext,
    /// `https://` without a client certificate.
    Tls,
    /// `https://` with the core's client certificate.
    MutualTls,
}

impl Transport {
    /// What a connection closed during or right after the handshake most likely means.
    fn closed_hint(self) -> Option<&'static str> {
        match self {
            Transport::Plaintext => None,
            Transport::Tls => {
                Some("if the service requires mutual TLS, give the core --tls-cert and --tls-key")
            }
            Transport::MutualTls => Some(
                "the handler service may have refused the core's client certificate: check \
                 --tls-cert/--tls-key against the CA the service accepts clients from",
            ),
        }
    }
}

impl GrpcService {
    /// The service's address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks the service's login handlers for credentials (`Login`): a kubeconfig (JSON) and
    /// when it expires; `None` when the service has none (or does not implement the call).
    ///
    /// # Errors
    /// [`Error::Transport`] when the service fails or cannot be reached.
    pub async fn login(
        &self,
        reason: &str,
    ) -> Result<Option<(Vec<u8>, Option<jiff::Timestamp>)>, Error> {
        let mut client = self.client.clone();
        let request = pb::LoginRequest {
            reason: reason.to_owned(),
        };
        match client.login(request).await {
            Ok(r) => {
                let r = r.into_inner();
                if r.kubeconfig_json.is_empty() {
                    return Ok(None);
                }
                let expiration = r
                    .expiration
                    .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok());
                Ok(Some((r.kubeconfig_json, expiration)))
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(Error::Transport(status)),
        }
    }
}

/// The PEM contents the core uses for `https://` handler services: the CA that signed the
/// services' certificates and, for mutual TLS, the core's own client certificate and key.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// The CA certificate(s) that the services' certificates must chain to.
    pub ca: Option<Vec<u8>>,
    /// The core's client certificate and private key (mutual TLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl GrpcService {
    /// A lazily connecting client: a service that is down makes calls fail, not the start-up.
    ///
    /// # Errors
    /// [`Error::BadAddress`] for an invalid URL; [`Error::Tls`] for an `https://` URL.
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::with_tls(url, None)
    }

    /// As [`GrpcService::new`]; an `https://` URL uses TLS with `tls` (which must name a CA),
    /// an `http://` URL is plaintext.
    ///
    /// # Errors
    /// [`Error::BadAddress`] for an invalid URL; [`Error::Tls`] for an `https://` URL without
    /// a CA or with certificates that cannot be used.
    pub fn with_tls(url: &str, tls: Option<&ClientTls>) -> Result<Self, Error> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| Error::BadAddress {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            let tls_error = |problem: String| Error::Tls {
                url: url.to_owned(),
                problem,
            };
            let Some(ca) = tls.and_then(|t| t.ca.as_ref()) else {
                return Err(tls_error(
                    "an https:// handler service needs --tls-ca (the CA of its certificate)".into(),
                ));
            };
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = tls.and_then(|t| t.identity.as_ref()) {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| tls_error(error_chain(&e)))?;
        }
        let transport = match (
            url.starts_with("https://"),
            tls.and_then(|t| t.identity.as_ref()),
        ) {
            (false, _) => Transport::Plaintext,
            (true, None) => Transport::Tls,
            (true, Some(_)) => Transport::MutualTls,
        };
        let channel = endpoint.connect_lazy();
        Ok(Self {
            url: url.to_owned(),
            transport,
            client: HandlerServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            channel,
        })
    }

    /// The lazily connecting channel to the service (plaintext or TLS, as configured), for its
    /// other gRPC services on the same address (`TaskService`).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

/// A status's message with the chain of its causes, so that a refused TLS handshake says why
/// ("invalid peer certificate: UnknownIssuer") instead of only "transport error".
fn status_text(status: &tonic::Status) -> String {
    let text = match std::error::Error::source(status) {
        Some(source) => format!("{}: {}", status.message(), error_chain(source)),
        None => status.message().to_owned(),
    };
    match tls_hint(&text) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

/// The connection ended during or right after the handshake.
fn closed_early(status: &tonic::Status) -> bool {
    let text = status_text(status);
    let text = text.to_ascii_lowercase();
    ["connection closed", "broken pipe", "connection reset"]
        .iter()
        .any(|t| text.contains(t))
}

/// What a TLS failure most likely means, for the log line that reports it.
fn tls_hint(text: &str) -> Option<&'static str> {
    const REFUSED_BY_PEER: [&str; 4] = [
        "alert: UnknownCA",
        "alert: BadCertificate",
        "alert: CertificateRequired",
        "alert: DecryptError",
    ];
    if REFUSED_BY_PEER.iter().any(|a| text.contains(a)) {
        Some(
            "the handler service refused the core's client certificate: check --tls-cert/--tls-key \
             and the CA the service accepts clients from",
        )
    } else if text.contains("invalid peer certificate") {
        Some("the handler service's certificate is not trusted: check --tls-ca and its names")
    } else {
        None
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

fn reason(r: Option<Reason>) -> i32 {
    (match r {
        None => pb::Reason::Unspecified,
        Some(Reason::Create) => pb::Reason::Create,
        Some(Reason::Update) => pb::Reason::Update,
        Some(Reason::Delete) => pb::Reason::Delete,
        Some(Reason::Resume) => pb::Reason::Resume,
    }) as i32
}

fn daemon_request(input: DaemonInput) -> pb::DaemonRequest {
    use pb::daemon_request::Message;
    let message = match input {
        DaemonInput::Body(body) => Message::BodyJson(to_json(&body)),
        DaemonInput::Stop { reason, force } => Message::Stop(pb::DaemonStop {
            reason: (match reason {
                StopReason::ResourceDeleted => pb::DaemonStopReason::ResourceDeleted,
                StopReason::FiltersMismatch => pb::DaemonStopReason::FiltersMismatch,
                StopReason::OperatorExiting => pb::DaemonStopReason::OperatorExiting,
            }) as i32,
            force,
        }),
    };
    pb::DaemonRequest {
        message: Some(message),
    }
}

fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The `InvokeRequest` of a call, with its deadline and trace context.
fn invoke_request(call: Call) -> tonic::Request<pb::InvokeRequest> {
    let mut request = tonic::Request::new(pb::InvokeRequest {
        handler_id: call.handler_id,
        reason: reason(call.reason),
        body_json: to_json(&call.body),
        old_json: call.old.as_ref().map(to_json).unwrap_or_default(),
        new_json: call.new.as_ref().map(to_json).unwrap_or_default(),
        diff_json: to_json(&call.diff),
        retry: call.retry,
        started: call.started.map(convert::to_timestamp),
        subhandlers: call
            .subhandlers
            .into_iter()
            .map(|s| pb::Record {
                id: s.id,
                started: s.started.map(convert::to_timestamp),
                retries: s.retries,
                success: s.success,
                failure: s.failure,
                message: s.message.unwrap_or_default(),
                delayed: s.delayed.map(convert::to_timestamp),
            })
            .collect(),
        event_type: call.event_type,
        attempt_id: call.attempt_id,
        resource: call.resource,
        admission: None,
    });
    request.set_timeout(call.deadline);
    if let Some(tp) = call
        .traceparent
        .and_then(|tp| tonic::metadata::MetadataValue::try_from(tp).ok())
    {
        request.metadata_mut().insert("traceparent", tp);
    }
    request
}

#[tonic::async_trait]
impl Dispatch for GrpcService {
    fn name(&self) -> &str {
        &self.url
    }

    async fn describe(&self) -> Result<pb::Manifest, Error> {
        let mut request = tonic::Request::new(pb::DescribeRequest {
            core_version: env!("CARGO_PKG_VERSION").to_owned(),
            contract_revision: 1,
        });
        request.set_timeout(Duration::from_secs(10));
        let mut client = self.client.clone();
        match client.describe(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => match self.transport.closed_hint() {
                Some(hint) if closed_early(&status) => Err(Error::Tls {
                    url: self.url.clone(),
                    problem: format!("{}; {hint}", status_text(&status)),
                }),
                _ => Err(Error::Transport(status)),
            },
        }
    }

    async fn invoke(&self, call: Call) -> Result<Answer, Error> {
        let deadline = call.deadline;
        let request = invoke_request(call);
        let mut client = self.client.clone();
        // The client-side timer too: a server that never answers must not hold the worker.
        let response =
            tokio::time::timeout(deadline + Duration::from_secs(1), client.invoke(request))
                .await
                .map_err(|_| Error::Deadline(deadline))?;
        match response {
            Ok(r) => Ok(convert::answer(r.into_inner())?),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) && status.message().to_ascii_lowercase().contains("time") =>
            {
                Err(Error::Deadline(deadline))
            }
            Err(status) => Err(Error::Transport(status)),
        }
    }

    async fn select_resources(
        &self,
        resources: &[crate::core::selectors::Discovered],
    ) -> Result<Vec<(String, Vec<usize>)>, Error> {
        let request = pb::SelectResourcesRequest {
            resources: resources.iter().map(convert::discovered).collect(),
        };
        let mut client = self.client.clone();
        let response =
            tokio::time::timeout(Duration::from_secs(60), client.select_resources(request))
                .await
                .map_err(|_| Error::Deadline(Duration::from_secs(60)))?;
        match response {
            Ok(r) => Ok(r
                .into_inner()
                .selections
                .into_iter()
                .map(|s| {
                    let accepted = s
                        .accepted
                        .into_iter()
                        .filter_map(|i| usize::try_from(i).ok())
                        .filter(|i| *i < resources.len())
                        .collect();
                    (s.callable_id, accepted)
                })
                .collect()),
            // UNIMPLEMENTED too: a service that declares callables must answer for them.
            Err(status) => Err(Error::Transport(status)),
        }
    }

    async fn outbox(
        &self,
    ) -> Result<Option<BoxStream<'static, Result<convert::EventRequest, Error>>>, Error> {
        let mut client = self.client.clone();
        let request = pb::OutboxRequest {
            core_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        match client.outbox(request).await {
            Ok(stream) => Ok(Some(
                stream
                    .into_inner()
                    .map(|m| {
                        let m = m.map_err(Error::Transport)?;
                        convert::outboxed(m).map_err(Error::Contract)
                    })
                    .boxed(),
            )),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(Error::Transport(status)),
        }
    }

    async fn matches(&self, call: Call) -> Result<bool, Error> {
        let deadline = call.deadline;
        let request = invoke_request(call);
        let mut client = self.client.clone();
        let response =
            tokio::time::timeout(deadline + Duration::from_secs(1), client.r#match(request))
                .await
                .map_err(|_| Error::Deadline(deadline))?;
        match response {
            Ok(r) => Ok(r.into_inner().matched),
            // A service written before `Match` existed: as before, the handler is taken to match.
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(true),
            Err(status) => Err(Error::Transport(status)),
        }
    }

    async fn daemon(
        &self,
        call: Call,
        inputs: tokio::sync::mpsc::Receiver<DaemonInput>,
    ) -> Result<DaemonOutputs, Error> {
        use pb::daemon_request::Message;
        let start = pb::DaemonRequest {
            message: Some(Message::Start(pb::DaemonStart {
                handler_id: call.handler_id,
                body_json: to_json(&call.body),
                resource: call.resource,
                retry: call.retry,
                started: call.started.map(convert::to_timestamp),
                attempt_id: call.attempt_id,
            })),
        };
        let mut inputs = inputs;
        let later =
            futures_util::stream::poll_fn(move |cx| inputs.poll_recv(cx)).map(daemon_request);
        let requests = futures_util::stream::iter([start]).chain(later);
        let mut request = tonic::Request::new(requests);
        if let Some(tp) = call
            .traceparent
            .and_then(|tp| tonic::metadata::MetadataValue::try_from(tp).ok())
        {
            request.metadata_mut().insert("traceparent", tp);
        }
        let mut client = self.client.clone();
        let connect = Duration::from_secs(10);
        let responses = tokio::time::timeout(connect, client.daemon(request))
            .await
            .map_err(|_| Error::Deadline(connect))?
            .map_err(Error::Transport)?
            .into_inner();
        Ok(responses
            .map(|message| match message {
                Ok(m) => Ok(convert::daemon_output(m)?),
                Err(status) => Err(Error::Transport(status)),
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_needs_a_ca_and_http_stays_plaintext() {
        let err = GrpcService::with_tls("https://handler:50051", None).unwrap_err();
        assert!(err.to_string().contains("needs --tls-ca"), "{err}");
        let plain = GrpcService::with_tls("http://handler:50051", None).unwrap();
        assert_eq!(plain.transport, Transport::Plaintext);
    }

    #[test]
    fn a_refused_handshake_is_explained() {
        let text = "transport error: received fatal alert: UnknownCA";
        assert!(
            tls_hint(text)
                .unwrap()
                .contains("refused the core's client certificate")
        );
        let text = "invalid peer certificate: UnknownIssuer";
        assert!(tls_hint(text).unwrap().contains("not trusted"));
        assert_eq!(tls_hint("connection refused"), None);
        assert!(Transport::Tls.closed_hint().unwrap().contains("--tls-cert"));
        assert_eq!(Transport::Plaintext.closed_hint(), None);
    }
}
