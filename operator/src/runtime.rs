//! Effects at the edge: watching, queueing, calling handlers over gRPC, writing to the API
//! server, and the read model. Start at [`engine::run`].

pub(crate) mod admission;
pub(crate) mod calls;
pub(crate) mod context;
pub(crate) mod daemons;
pub(crate) mod discovery;
pub(crate) mod engine;
pub(crate) mod events;
pub(crate) mod grpc;
pub(crate) mod indexing;
pub(crate) mod kit;
pub(crate) mod leadership;
pub(crate) mod locks;
pub(crate) mod login;
pub(crate) mod metrics;
pub(crate) mod observer;
pub(crate) mod outbox;
pub(crate) mod patching;
pub(crate) mod ports;
pub(crate) mod processing;
pub(crate) mod queue;
pub(crate) mod readmodel;
pub(crate) mod selecting;
pub(crate) mod serving;
pub(crate) mod sharding;
pub(crate) mod shutdown;
pub(crate) mod signals;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod timers;
pub(crate) mod watching;
