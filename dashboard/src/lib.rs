//! Operon's dashboard: Leptos components rendered on the server (no wasm) and an axum [`router`].
//!
//! The pages read a read model (filled by the running core, or by `operon dashboard`'s own watch of
//! the cluster), never the API server directly. Start at [`router`].

mod model;
mod pages;

pub use model::{HandlerView, ObjectView, Overview, ReadModel};
pub use pages::router;
