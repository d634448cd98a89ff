//! Operon handler services in Rust.
//!
//! The Operon core watches the cluster, stores handler progress on the objects, retries, holds
//! finalizers and applies children; it calls a handler service over gRPC (`operon.v1`, the
//! crate `operon-proto`) for what is specific to an operator. This crate is that service:
//! register handlers on an [`Operator`], Kopf-style, and serve them with
//! [`Operator::serve_from_env`].
//!
//! ```no_run
//! use operon_handler::{Ctx, HandlerError, HandlerResult, Operator};
//! use serde_json::{json, Value};
//!
//! async fn create_widget(ctx: Ctx<Value>) -> HandlerResult {
//!     if ctx.retry() == 0 {
//!         return Err(HandlerError::temporary("not ready yet"));
//!     }
//!     Ok(Some(json!({"created": true}))) // → status.create_widget
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), operon_handler::Error> {
//!     Operator::new("widgets-operator")
//!         .on_create("widgets.example.com", create_widget)
//!         .serve_from_env()
//!         .await
//! }
//! ```
//!
//! Start with [`Operator`] (the registrations), [`Ctx`] (what a handler gets),
//! [`HandlerError`] (how it fails), [`HandlerOptions`] (ids, retries, filters); then
//! [`DaemonCtx`], [`SyncCtx`]/[`Desired`] and [`TaskCtx`] for daemons, sync handlers and tasks;
//! [`Admission`] for validating and mutating admission webhooks ([`Operator::on_validate`],
//! [`Operator::on_mutate`]); [`ServeConfig`] for the flags and environment. The README has the
//! full reference.
//!
//! Built in: the attempt cache (a repeated attempt is answered without running the handler
//! again), W3C trace context (handler spans are children of the core's), OTLP export, TLS and
//! mutual TLS, `grpc.health.v1.Health` (also alone, in plaintext, for the kubelet's probes:
//! [`ServeConfig::health_listen()`]), server reflection, a manifest check against the core's
//! contract revision, and a graceful shutdown on SIGTERM/SIGINT.

mod admission;
mod cache;
mod call;
mod convert;
mod ctx;
mod daemon;
mod error;
mod filters;
mod lock;
mod operator;
mod options;
mod registry;
mod resource;
mod serve;
mod service;
mod subhandlers;
mod sync;
mod task;
mod telemetry;

pub use admission::{Admission, Operation, UnknownOperation, UserInfo};
pub use call::{Call, DiffItem, DiffOp, Reason, ResolvedResource};
pub use ctx::{Ctx, EventType, SubhandlerState};
pub use daemon::{DaemonCtx, StopReason, Stopped};
pub use error::{BoxError, DEFAULT_DELAY, HandlerError, HandlerResult};
pub use filters::Filter;
pub use operator::Operator;
pub use options::{ErrorsMode, HandlerOptions, SubhandlerOptions};
pub use registry::{CONTRACT_REVISION, RegistrationError};
pub use resource::Resource;
pub use serve::{
    DEFAULT_LISTEN, DEFAULT_SHUTDOWN_GRACE, Error, Running, ServeConfig, TlsFiles, USAGE,
};
pub use service::Services;
pub use sync::{
    ChildGroup, Desired, Finalized, ShutdownFailure, ShutdownHook, SyncCtx, SyncOptions,
    UnknownUpdateStrategy, UpdateStrategy,
};
pub use task::{StepRecord, TaskCtx, TaskMode, TaskOptions};

/// The contract's generated types (crate `operon-proto`), e.g. for [`Operator::manifest`].
pub use operon_proto::v1 as proto;
