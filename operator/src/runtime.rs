//! Effects at the edge: watching, queueing, calling handlers over gRPC, writing to the API
//! server, and the read model. Start at [`engine::run`].

pub mod admission;
pub mod calls;
pub mod context;
pub mod daemons;
pub mod discovery;
pub mod engine;
pub mod events;
pub mod grpc;
pub mod indexing;
pub mod kit;
pub mod locks;
pub mod login;
pub mod metrics;
pub mod observer;
pub mod outbox;
pub mod patching;
pub mod ports;
pub mod processing;
pub mod queue;
pub mod readmodel;
pub mod selecting;
pub mod serving;
pub mod shutdown;
pub mod sync;
pub mod tasks;
pub mod timers;
pub mod watching;
