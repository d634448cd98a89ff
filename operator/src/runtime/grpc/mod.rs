//! The gRPC adapter: the one place that speaks the wire (`operon.v1`). [`GrpcService`] reaches a
//! handler service (plaintext, TLS or mutual TLS) and implements [`HandlerPort`]; its
//! [`GrpcService::sync_port`] and [`GrpcService::task_port`] reach the service's `SyncService`
//! and `TaskService` on the same connection. The conversions both ways are in [`convert`] and
//! [`manifest`].

pub(crate) mod convert;
pub(crate) mod manifest;
mod sync;
mod tasks;
#[cfg(test)]
mod tests;

pub(crate) use sync::GrpcSync;
pub(crate) use tasks::GrpcTasks;

use std::time::Duration;

use futures_util::StreamExt;
use operon_proto::v1 as pb;
use operon_proto::v1::handler_service_client::HandlerServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::runtime::ports::{
    AdmissionCall, AdmissionReply, Answer, Call, DaemonInput, DaemonOutputs, Error, HandlerPort,
    Login, Manifest, Outbox, error_chain, status_text,
};

/// The largest message the core accepts from a service.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A handler service reached over gRPC.
#[derive(Debug, Clone)]
pub(crate) struct GrpcService {
    url: String,
    client: HandlerServiceClient<Channel>,
    /// The connection, shared with the service's other gRPC services (sync, tasks).
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

/// The PEM contents the core uses for `https://` handler services: the CA that signed the
/// services' certificates and, for mutual TLS, the core's own client certificate and key.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientTls {
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
    #[cfg(test)]
    pub(crate) fn new(url: &str) -> Result<Self, Error> {
        Self::with_tls(url, None)
    }

    /// A lazily connecting client; an `https://` URL uses TLS with `tls` (which must name a CA),
    /// an `http://` URL is plaintext.
    ///
    /// # Errors
    /// [`Error::BadAddress`] for an invalid URL; [`Error::Tls`] for an `https://` URL without
    /// a CA or with certificates that cannot be used.
    pub(crate) fn with_tls(url: &str, tls: Option<&ClientTls>) -> Result<Self, Error> {
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
        Ok(Self::over(url, endpoint.connect_lazy(), transport))
    }

    /// A service reached through `channel` (any transport; tests use an in-memory one).
    fn over(url: &str, channel: Channel, transport: Transport) -> Self {
        Self {
            url: url.to_owned(),
            transport,
            client: HandlerServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            channel,
        }
    }

    /// The service's address.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The service's `SyncService`, on the same connection.
    pub(crate) fn sync_port(&self) -> GrpcSync {
        GrpcSync::new(self.channel.clone())
    }

    /// The service's `TaskService`, on the same connection.
    pub(crate) fn task_port(&self) -> GrpcTasks {
        GrpcTasks::new(self.channel.clone())
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

/// `request` with `traceparent` in its metadata, when there is one.
fn traced<T>(mut request: tonic::Request<T>, traceparent: Option<String>) -> tonic::Request<T> {
    if let Some(tp) = traceparent.and_then(|tp| tonic::metadata::MetadataValue::try_from(tp).ok()) {
        request.metadata_mut().insert("traceparent", tp);
    }
    request
}

/// The `InvokeRequest` of a call, with its deadline and trace context.
fn invoke_request(call: Call) -> tonic::Request<pb::InvokeRequest> {
    let deadline = call.deadline;
    let traceparent = call.traceparent.clone();
    let mut request = tonic::Request::new(convert::invoke_request(call));
    request.set_timeout(deadline);
    traced(request, traceparent)
}

#[tonic::async_trait]
impl HandlerPort for GrpcService {
    fn name(&self) -> &str {
        &self.url
    }

    async fn describe(&self) -> Result<Manifest, Error> {
        let mut request = tonic::Request::new(pb::DescribeRequest {
            core_version: env!("CARGO_PKG_VERSION").to_owned(),
            contract_revision: crate::core::manifest::CONTRACT_REVISION,
        });
        request.set_timeout(Duration::from_secs(10));
        let mut client = self.client.clone();
        match client.describe(request).await {
            Ok(answer) => Ok(manifest::manifest(&answer.into_inner())),
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
            // The deadline passed: whether the server said so first ("Deadline Exceeded") or
            // tonic's own timer cut the call, it is the same error, said the same way.
            Err(status)
                if status.code() == tonic::Code::DeadlineExceeded
                    || (status.code() == tonic::Code::Cancelled
                        && status.message().to_ascii_lowercase().contains("time")) =>
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

    async fn outbox(&self) -> Result<Option<Outbox>, Error> {
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
        let traceparent = call.traceparent.clone();
        let start = convert::daemon_start(call);
        let mut inputs = inputs;
        let later = futures_util::stream::poll_fn(move |cx| inputs.poll_recv(cx))
            .map(convert::daemon_request);
        let requests = futures_util::stream::iter([start]).chain(later);
        let request = traced(tonic::Request::new(requests), traceparent);
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

    async fn login(&self, reason: &str) -> Result<Option<Login>, Error> {
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
                Ok(Some(Login {
                    kubeconfig_json: r.kubeconfig_json,
                    expiration,
                }))
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(Error::Transport(status)),
        }
    }

    async fn admit(&self, call: AdmissionCall) -> Result<AdmissionReply, Error> {
        let deadline = call.deadline;
        let mut request = tonic::Request::new(convert::admission_request(call));
        request.set_timeout(deadline);
        let mut client = self.client.clone();
        // The client's own timer and the call's deadline (tonic's) are the same time.
        let response = match tokio::time::timeout(deadline, client.invoke(request)).await {
            Err(_) => return Err(Error::Deadline(deadline)),
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) =>
            {
                return Err(Error::Deadline(deadline));
            }
            Ok(Err(status)) => return Err(Error::Transport(status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        Ok(AdmissionReply {
            events: convert::event_requests(response.events.clone()),
            answer: convert::admission_answer(response),
        })
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use crate::runtime::ports::tls_hint;

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
