//! Views: what the dashboard shows and `/api/v1/objects` serves ([`model`]), and the pure
//! projection from what is stored on the objects to those views ([`project`]), shared by the
//! running core's read model and `operon dashboard`.

pub mod model;
pub mod project;

pub use model::{
    About, AttemptView, DiffView, EventView, HandlerDetails, HandlerStatus, HandlerView,
    ObjectDetails, ObjectPhase, ObjectView, Overview, ServiceView, Source,
};
pub use project::{
    CycleEnd, LastCycle, ObjectProgress, Observed, Storages, StoredEvent, Subject, cycle_view,
    diff_views, event_view, extra_fields, handler_ids, handler_state, handler_view, is_secret,
    not_stored, observe, outcomes, phase, refused_view, shown_diff, view,
};
