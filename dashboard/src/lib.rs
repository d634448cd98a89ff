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

pub use api::api_router;
pub use auth::protect;
pub use model::{
    About, AttemptView, DiffView, EventView, HANDLER_STATES, HandlerDetails, HandlerStatus,
    HandlerView, ObjectDetails, ObjectPhase, ObjectView, Overview, PHASES, ReadModel, ServiceView,
    Source,
};
pub use pages::{Options, router, router_with};
