//! The Operon core.
//!
//! `operon run` watches the resources that handler services ask for, works out what changed against
//! the last handled state stored on each object, calls the handlers over gRPC (contract:
//! [`operon_proto`]), and persists their progress on the objects in Kopf's format. Start at
//! [`cli`], which wires the pieces together; the decisions live in `operon_core` (pure, no
//! I/O), imported here as `core`.
//!
//! Only [`cli`] is public (the binary's entry point): every other module is private to the crate,
//! so the compiler reports code that nothing uses, and `operator/tests/layering.rs` keeps the
//! modules' layering (see `operator/ARCHITECTURE.md`).

/// The decisions, in their own crate so that no I/O can compile into them.
use operon_core as core;

pub mod cli;
mod http;
mod rbac;
mod runtime;
mod telemetry;
