//! Operon's dashboard: Leptos components rendered on the server (no wasm), kept live by a few
//! lines of script that follow the server-sent events of `/api/v1/events`.
//!
//! The pages read a [`ReadModel`] (filled by the running core, or by `operon dashboard`'s own
//! watch of the cluster), never the API server directly. Start at [`router`] (the pages), which
//! an HTTP listener merges next to its API; [`api_router`] is that API over any read model (for
//! `operon dashboard`), and [`protect`] puts the optional bearer token in front of everything.

mod api;
mod auth;
mod listing;
mod model;
mod pages;
mod traces;

pub use api::{api_router, event_stream};
pub use auth::protect;
pub use model::{
    About, AttemptOutcome, AttemptView, ChartPoint, Charts, ChildAction, ChildView, DiffView,
    EventView, HANDLER_STATES, HandlerDetails, HandlerStatus, HandlerView, ObjectDetails,
    ObjectPhase, ObjectView, Overview, PHASES, ReadModel, RunKind, RunView, ServiceView, Source,
    TaskState, TaskView,
};
pub use pages::{Options, router, router_with};
