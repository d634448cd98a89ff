//! The end-to-end harness: every test of Operon against the real control plane uses it.
//!
//! - [`plane`] connects to the local plane of `tests/cluster/up.sh`, starting it when needed.
//! - [`with_temp_ns`] gives a test a fresh namespace and deletes it afterwards, even on failure.
//! - [`apply_yaml`] applies multi-document YAML; [`wait_for`] polls a condition with a deadline
//!   and fails with what it last saw.

mod apply;
mod namespace;
mod plane;
mod wait;

pub use apply::{apply_yaml, delete_yaml};
pub use namespace::with_temp_ns;
pub use plane::{Plane, plane};
pub use wait::wait_for;
