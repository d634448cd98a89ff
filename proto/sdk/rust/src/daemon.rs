//! Daemons: one long-running function per object over the bidirectional `Daemon` call (see
//! "Daemons" in handler.proto). [`DaemonCtx`] sees the object live, the stop request as
//! [`Stopped`], and sends patches and Events as they are made.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use operon_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};
use tracing::Instrument as _;

use crate::call::ResolvedResource;
use crate::ctx::{EventType, catching, event};
use crate::error::HandlerError;
use crate::lock::lock;

/// Why a daemon is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The object is being deleted (or is gone).
    ResourceDeleted,
    /// The object no longer matches the daemon's filters.
    FiltersMismatch,
    /// The core is stopping, or reloading this service's handlers.
    OperatorExiting,
    /// This handler service is shutting down (SIGTERM/SIGINT). Whatever the daemon returns then
    /// is not reported: the call ends without an exit, so the core starts the daemon again once
    /// a service serves it.
    ServiceExiting,
}

impl StopReason {
    fn from_proto(reason: pb::DaemonStopReason) -> Self {
        match reason {
            pb::DaemonStopReason::ResourceDeleted => Self::ResourceDeleted,
            pb::DaemonStopReason::FiltersMismatch => Self::FiltersMismatch,
            pb::DaemonStopReason::OperatorExiting | pb::DaemonStopReason::Unspecified => {
                Self::OperatorExiting
            }
        }
    }
}

/// A daemon's stop flag (Kopf's `stopped`): set when the core asks the daemon to exit. A daemon
/// should check it (or await it) and return soon after. A daemon that does not is cancelled
/// (its future dropped) when the core forces the stop.
#[derive(Debug, Clone)]
pub struct Stopped(watch::Receiver<Option<StopReason>>);

impl Stopped {
    pub(crate) fn new(rx: watch::Receiver<Option<StopReason>>) -> Self {
        Self(rx)
    }

    /// Whether the daemon was asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Why, once asked.
    pub fn reason(&self) -> Option<StopReason> {
        *self.0.borrow()
    }

    /// Waits until the daemon is asked to stop.
    pub async fn wait(&self) -> StopReason {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.unwrap_or(StopReason::OperatorExiting),
            // The call is gone: as good as a stop.
            Err(_) => StopReason::OperatorExiting,
        }
    }

    /// Sleeps for `duration` unless asked to stop first; true when asked (Kopf's
    /// `stopped.wait(t)`): `while !ctx.stopped().sleep(interval).await { … }`.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.wait() => true,
            () = tokio::time::sleep(duration) => self.is_stopped(),
        }
    }
}

type Sender = mpsc::UnboundedSender<Result<pb::DaemonResponse, Status>>;

/// What the daemon's call is about, shared by the clones of its context.
#[derive(Debug)]
pub(crate) struct DaemonCall {
    pub(crate) handler_id: String,
    pub(crate) retry: u32,
    pub(crate) started: Option<SystemTime>,
    pub(crate) attempt_id: String,
    pub(crate) resource: Option<ResolvedResource>,
    pub(crate) body: watch::Receiver<Arc<Value>>,
    pub(crate) stopped: Stopped,
    pub(crate) out: Sender,
    pub(crate) span: tracing::Span,
}

/// What a daemon gets: the object, kept fresh by the core for as long as the daemon runs, the
/// stop flag, and the means to patch the object and post Events at once.
///
/// ```
/// use std::time::Duration;
/// use operon_handler::{DaemonCtx, HandlerError};
/// use serde_json::{json, Value};
///
/// async fn monitor(ctx: DaemonCtx<Value>) -> Result<(), HandlerError> {
///     let mut ticks = 0;
///     while !ctx.stopped().sleep(Duration::from_secs(10)).await {
///         ticks += 1;
///         let size = ctx.object()["spec"]["size"].clone(); // the latest version
///         ctx.patch(json!({"status": {"monitor": {"ticks": ticks, "size": size}}}));
///     }
///     Ok(()) // asked to stop: exit
/// }
/// ```
pub struct DaemonCtx<K> {
    call: Arc<DaemonCall>,
    typed: Arc<Mutex<(Arc<Value>, Arc<K>)>>,
}

impl<K> Clone for DaemonCtx<K> {
    fn clone(&self) -> Self {
        Self {
            call: Arc::clone(&self.call),
            typed: Arc::clone(&self.typed),
        }
    }
}

impl<K> std::fmt::Debug for DaemonCtx<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonCtx")
            .field("handler_id", &self.call.handler_id)
            .field("retry", &self.call.retry)
            .finish_non_exhaustive()
    }
}

impl<K: DeserializeOwned> DaemonCtx<K> {
    /// The context of a daemon call whose first body reads as `K`.
    ///
    /// # Errors
    /// Why the first body cannot be read as `K`.
    pub(crate) fn read(call: Arc<DaemonCall>) -> Result<Self, HandlerError> {
        let body = Arc::clone(&call.body.borrow());
        let object = read::<K>(&body)?;
        Ok(Self {
            call,
            typed: Arc::new(Mutex::new((body, Arc::new(object)))),
        })
    }

    /// The latest version of the object that reads as `K` (a version that does not is skipped,
    /// with a warning in the log).
    pub fn object(&self) -> Arc<K> {
        let latest = Arc::clone(&self.call.body.borrow());
        let mut typed = lock(&self.typed);
        if !Arc::ptr_eq(&typed.0, &latest) {
            match read::<K>(&latest) {
                Ok(object) => *typed = (latest, Arc::new(object)),
                Err(error) => {
                    tracing::warn!(handler = %self.call.handler_id, error = %error.message(), "A new version of the object cannot be read; the daemon keeps the previous one.");
                    typed.0 = latest;
                }
            }
        }
        Arc::clone(&typed.1)
    }
}

fn read<K: DeserializeOwned>(body: &Value) -> Result<K, HandlerError> {
    K::deserialize(body).map_err(|error| {
        HandlerError::other(
            "serde_json::Error",
            format!(
                "cannot read the object as {}: {error}",
                std::any::type_name::<K>()
            ),
        )
    })
}

impl<K> DaemonCtx<K> {
    /// The latest version of the whole object, as JSON.
    pub fn body(&self) -> Arc<Value> {
        Arc::clone(&self.call.body.borrow())
    }

    /// Waits for the next version of the object; false when no more will come (the call
    /// ended).
    pub async fn changed(&self) -> bool {
        let mut body = self.call.body.clone();
        body.changed().await.is_ok()
    }

    /// `metadata.name` of the latest version.
    pub fn name(&self) -> Option<String> {
        self.body()["metadata"]["name"].as_str().map(str::to_owned)
    }

    /// `metadata.namespace` of the latest version.
    pub fn namespace(&self) -> Option<String> {
        self.body()["metadata"]["namespace"]
            .as_str()
            .map(str::to_owned)
    }

    /// The daemon's handler id.
    pub fn handler_id(&self) -> &str {
        &self.call.handler_id
    }

    /// The attempts before this one (0 on the first start; a daemon that failed is started
    /// again with `retry + 1`).
    pub fn retry(&self) -> u32 {
        self.call.retry
    }

    /// When the first attempt started.
    pub fn started(&self) -> Option<SystemTime> {
        self.call.started
    }

    /// The core's id of this attempt, for logs and traces.
    pub fn attempt_id(&self) -> &str {
        &self.call.attempt_id
    }

    /// The resource as the core resolved it.
    pub fn resource(&self) -> Option<&ResolvedResource> {
        self.call.resource.as_ref()
    }

    /// The stop flag.
    pub fn stopped(&self) -> &Stopped {
        &self.call.stopped
    }

    /// Sends a JSON merge patch for the object; the core applies it at once.
    pub fn patch(&self, patch: Value) {
        let _ = self.call.out.send(Ok(pb::DaemonResponse {
            patch_json: crate::convert::to_json(&patch),
            ..pb::DaemonResponse::default()
        }));
    }

    /// Asks the core to post a Kubernetes Event about the object, at once.
    pub fn event(&self, type_: EventType, reason: &str, message: &str) {
        let _ = self.call.out.send(Ok(pb::DaemonResponse {
            events: vec![event(type_, reason, message)],
            ..pb::DaemonResponse::default()
        }));
    }

    /// The daemon's tracing span (the daemon's future runs inside it).
    pub fn span(&self) -> &tracing::Span {
        &self.call.span
    }
}

/// An erased daemon function.
pub(crate) type DaemonFn = Arc<
    dyn Fn(Arc<DaemonCall>) -> futures_util::future::BoxFuture<'static, Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// Runs one daemon call to its end: the daemon function in its own task, fed with the core's
/// messages; a graceful stop sets the flag, a forced stop (or a cancelled call) drops the
/// daemon's future and ends the call without an exit, as does the service's own shutdown
/// (`draining`) once the daemon returned.
pub(crate) async fn supervise(
    daemon: DaemonFn,
    call: Arc<DaemonCall>,
    mut requests: Streaming<pb::DaemonRequest>,
    body: watch::Sender<Arc<Value>>,
    stop: watch::Sender<Option<StopReason>>,
    mut draining: watch::Receiver<bool>,
) {
    let out = call.out.clone();
    let id = call.handler_id.clone();
    let span = call.span.clone();
    let future = daemon(Arc::clone(&call));
    drop(call);
    let mut task = tokio::spawn(catching(future).instrument(span));
    let mut draining_open = true;
    let result = loop {
        tokio::select! {
            joined = &mut task => break joined.unwrap_or_else(|error| Err(HandlerError::other("panic", error.to_string()))),
            message = requests.next() => match message {
                Some(Ok(pb::DaemonRequest { message: Some(pb::daemon_request::Message::BodyJson(json)) })) => {
                    match crate::convert::object_json("body_json", &json) {
                        Ok(fresh) => { body.send_replace(Arc::new(fresh)); }
                        Err(problem) => tracing::warn!(handler = %id, %problem, "The core sent a body that is not an object; ignored."),
                    }
                }
                Some(Ok(pb::DaemonRequest { message: Some(pb::daemon_request::Message::Stop(s)) })) => {
                    if s.force {
                        tracing::info!(handler = %id, "The daemon is cancelled (forced stop).");
                        task.abort();
                        return;
                    }
                    let reason = StopReason::from_proto(s.reason());
                    tracing::info!(handler = %id, ?reason, "The daemon is asked to stop.");
                    stop.send_if_modified(|current| current.replace(reason).is_none());
                }
                Some(Ok(_)) => {}
                // The core ended or cancelled the call: a forced stop.
                Some(Err(_)) | None => {
                    tracing::info!(handler = %id, "The daemon's call ended; the daemon is cancelled.");
                    task.abort();
                    return;
                }
            },
            changed = draining.changed(), if draining_open => {
                if changed.is_err() || *draining.borrow() {
                    draining_open = false;
                    stop.send_if_modified(|current| current.replace(StopReason::ServiceExiting).is_none());
                }
            }
        }
    };
    if matches!(*stop.borrow(), Some(StopReason::ServiceExiting)) {
        tracing::info!(handler = %id, "The daemon exited for the service's shutdown; the core will start it again.");
        return;
    }
    let outcome = match result {
        Ok(_) => pb::outcome::Result::Success(pb::Success::default()),
        Err(error) => error.to_outcome(),
    };
    tracing::info!(handler = %id, outcome = crate::service::outcome_name(&outcome), "The daemon exited.");
    let _ = out.send(Ok(pb::DaemonResponse {
        exit: Some(pb::Outcome {
            result: Some(outcome),
        }),
        ..pb::DaemonResponse::default()
    }));
}
