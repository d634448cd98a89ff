//! The Operon core.
//!
//! `operon run` watches the resources that handler services ask for, works out what changed against
//! the last handled state stored on each object, calls the handlers over gRPC (contract:
//! [`operon_proto`]), and persists their progress on the objects in Kopf's format. Start at
//! [`cli`], which wires the pieces together; the decisions live in [`core`] (pure, no I/O).

/// The decisions, in their own crate so that no I/O can compile into them.
pub use operon_core as core;

pub mod cli;
pub mod http;
pub mod rbac;
pub mod runtime;
pub mod telemetry;
