//! Views: what the dashboard shows and `/api/v1/objects` serves ([`model`]), and the pure
//! projection from what is stored on the objects to those views ([`project`]), shared by the
//! running core's read model and `operon dashboard`; the overview's live charts ([`series`]).

pub mod model;
pub mod project;
pub mod series;

pub use model::{
    About, AttemptOutcome, AttemptView, ChildAction, ChildView, DiffView, EventView,
    HandlerDetails, HandlerStatus, HandlerView, ObjectDetails, ObjectPhase, ObjectView, Overview,
    RolloutView, RunKind, RunView, ServiceView, Source, TaskState, TaskView,
};
pub use project::{
    CycleEnd, LastCycle, ObjectProgress, Observed, Storages, StoredEvent, Subject, cycle_view,
    diff_views, event_view, extra_fields, handler_ids, handler_state, handler_view, is_secret,
    not_stored, observe, outcomes, phase, refused_view, shown_diff, view,
};
pub use series::{ChartPoint, Charts, Counted, Series};
