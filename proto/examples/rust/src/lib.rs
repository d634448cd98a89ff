//! An example Operon handler service in Rust on the SDK (`operon-handler`), scripted by the
//! objects' specs.
//!
//! Each handler declared with `--handler KIND:ID` does what `spec.behaviour.<ID>` of the handled
//! object says ([`behaviour`]): succeed (with a result, a patch, an event), fail temporarily,
//! permanently or arbitrarily for a number of retries, sleep, run sub-handlers — or break the
//! contract ([`faults`], a wrapper around the SDK's services). Daemons ([`daemon`]) and tasks
//! ([`task`]) are scripted the same way. Every execution appends one JSON line to the ledger
//! ([`ledger`]), so end-to-end tests can check what ran. [`app`] turns the command line into
//! registrations; the SDK does the rest (manifest, attempt cache, traces, TLS, health, drain).
//! For a first handler service, read `proto/examples/rust-website` instead.

pub mod app;
pub mod behaviour;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod faults;
pub mod handlers;
pub mod ledger;
pub mod task;

pub use app::run;
pub use config::Cli;
