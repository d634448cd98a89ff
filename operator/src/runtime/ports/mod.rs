//! The ports through which the core talks to a handler service — [`HandlerPort`] (handlers,
//! admission, login, the outbox), [`SyncPort`] (sync handlers) and [`TaskPort`] (tasks) — and the
//! domain types they speak. The gRPC adapter (`runtime::grpc`) implements them; nothing else in
//! the runtime sees the wire.

mod calls;
mod handler;

pub(crate) use crate::core::manifest::{
    AdmissionRegistrationError, ContractError, Manifest, Registration, Registrations,
    SyncRegistrationError, SyncSpec, TaskRegistrationError, TaskSpec, WideRegistration,
};
pub(crate) use calls::{
    CallError, ChildGroup, FinalizeAnswer, SyncAnswer, SyncRequest, TaskError, TaskRequest,
    TaskUpdate, TaskUpdates,
};
pub(crate) use handler::{
    AdmissionAnswerError, AdmissionCall, AdmissionReply, Answer, Call, DaemonInput, DaemonOutput,
    EventRequest, Login, ResolvedResource, StopReason, SubAnswer, SubRecord, SubResult,
};

use std::time::Duration;

use futures_util::stream::BoxStream;

/// A failed call of a handler service: transport trouble or a broken contract — never a
/// handler's own error, which is an outcome.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
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
    Contract(#[from] ContractError),
    /// The service cannot run daemons.
    #[error("the handler service does not run daemons")]
    NoDaemons,
}

impl Error {
    /// The call certainly never reached the service: no connection could be made (the service
    /// is down, restarting, or not listening yet). Such a call is no attempt of the handler.
    pub(crate) fn undelivered(&self) -> bool {
        matches!(self, Error::Transport(status)
            if status.code() == tonic::Code::Unavailable
                && status_text(status).contains("connect error"))
    }
}

/// A status's message with the chain of its causes, so that a refused TLS handshake says why
/// ("invalid peer certificate: UnknownIssuer") instead of only "transport error".
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let text = match std::error::Error::source(status) {
        Some(source) => format!("{}: {}", status.message(), error_chain(source)),
        None => status.message().to_owned(),
    };
    match tls_hint(&text) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

/// What a TLS failure most likely means, for the log line that reports it.
pub(crate) fn tls_hint(text: &str) -> Option<&'static str> {
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

/// An error with its causes, each once.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
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

/// What an open daemon call sends back: validated messages, or the failure that ended it.
pub(crate) type DaemonOutputs = BoxStream<'static, Result<DaemonOutput, Error>>;

/// The Events a service posts outside handler calls, as they come.
pub(crate) type Outbox = BoxStream<'static, Result<EventRequest, Error>>;

/// A handler service: its manifest, its handlers (change, event, timer, daemon, index, filter
/// checks), its admission handlers, its login handlers and its outbox.
#[tonic::async_trait]
pub(crate) trait HandlerPort: Send + Sync + 'static {
    /// The address or name, for logs.
    fn name(&self) -> &str;
    /// The service's manifest (`Describe`), validated part by part.
    async fn describe(&self) -> Result<Manifest, Error>;
    /// Calls one handler (`Invoke`).
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
    async fn outbox(&self) -> Result<Option<Outbox>, Error> {
        Ok(None)
    }
    /// Asks the service's login handlers for credentials (`Login`); `None` when the service has
    /// none (or does not implement the call).
    async fn login(&self, reason: &str) -> Result<Option<Login>, Error> {
        let _ = reason;
        Ok(None)
    }
    /// Calls one admission handler about a review (`Invoke` with `admission`), within the
    /// call's deadline ([`Error::Deadline`] when late).
    async fn admit(&self, call: AdmissionCall) -> Result<AdmissionReply, Error> {
        let _ = call;
        Err(Error::Transport(tonic::Status::unimplemented(
            "the service runs no admission handlers",
        )))
    }
}

/// A service's sync handlers (`SyncService`).
#[tonic::async_trait]
pub(crate) trait SyncPort: Send + Sync + 'static {
    /// Asks for a parent's desired children and status (`Sync`), within `deadline`.
    async fn sync(&self, request: SyncRequest, deadline: Duration)
    -> Result<SyncAnswer, CallError>;
    /// Asks whether a deleted parent may go (`Finalize`), within `deadline`.
    async fn finalize(
        &self,
        request: SyncRequest,
        deadline: Duration,
    ) -> Result<FinalizeAnswer, CallError>;
}

/// A service's task handlers (`TaskService`).
#[tonic::async_trait]
pub(crate) trait TaskPort: Send + Sync + 'static {
    /// Runs a task (`RunTask`): its steps and its end come down the stream; dropping the stream
    /// cancels the call.
    async fn run_task(&self, request: TaskRequest) -> Result<TaskUpdates, CallError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_connection_is_an_undelivered_call() {
        let refused = tonic::Status::unavailable("tcp connect error");
        assert!(Error::Transport(refused).undelivered());
        // The connection broke during the call: the handler may have run.
        let broken = tonic::Status::unavailable("h2 protocol error: connection reset");
        assert!(!Error::Transport(broken).undelivered());
        assert!(!Error::Transport(tonic::Status::internal("connect error")).undelivered());
        assert!(!Error::Deadline(Duration::from_secs(1)).undelivered());
    }
}
