//! Pure decisions: no kube client, no gRPC, no sockets, no clock reads (the time is a parameter).
//!
//! Values in, decisions and patches out; the runtime performs them. Start at
//! [`model`] (what a handler is), then [`persistence`] (what is stored on the objects, byte-exact
//! with Kopf).

pub mod admission;
pub mod backoff;
pub mod cause;
pub mod daemons;
pub mod discovery;
pub mod events;
pub mod finalizer;
pub mod handling;
pub mod indexing;
pub mod leadership;
pub mod login;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod namespaces;
pub mod outcome;
pub mod patch;
pub mod persistence;
pub mod queueing;
pub mod rediscovery;
pub mod registry;
pub mod selection;
pub mod selectors;
pub mod sharding;
pub mod shutdown;
pub mod state;
pub mod sync;
pub mod tasks;
pub mod timers;
pub mod views;
