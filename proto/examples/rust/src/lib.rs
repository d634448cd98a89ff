//! An example Operon handler service in Rust, scripted by the objects' specs.
//!
//! Each handler declared with `--handler KIND:ID` does what `spec.behaviour.<ID>` of the handled
//! object says: succeed (with a result, a patch, an event), fail temporarily, permanently or
//! arbitrarily for a number of retries, sleep, run sub-handlers, or break the contract. Every
//! execution appends one JSON line to the ledger file, so end-to-end tests can check what ran.
//! See README.md for writing a handler service against `operon.v1`.

pub mod admission;
pub mod behaviour;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod ledger;
pub mod manifest;
pub mod server;
pub mod service;
pub mod task;
pub mod telemetry;

pub use config::Cli;
pub use server::run;
