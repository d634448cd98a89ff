//! Which kind of change an object shows: Kopf's changing-cause rules (`detect_changing_cause`),
//! checked in Kopf's order: GONE, FREE, DELETE, CREATE, RESUME, NOOP, UPDATE.

use crate::model::Reason;

/// What the core observed about one object, reduced to what decides the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The watch said DELETED: the object is gone from the cluster.
    pub gone: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deletion_ongoing: bool,
    /// Our finalizer is on the object.
    pub has_our_finalizer: bool,
    /// A diff-base (last handled essence) is stored on the object.
    pub has_diffbase: bool,
    /// The essence differs from the diff-base.
    pub changed: bool,
    /// The object came from the initial listing and has not been fully handled since the start.
    pub initial: bool,
}

/// The cause of a change-handling cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Deleted from the cluster; nothing to do but to say goodbye.
    Gone,
    /// Being deleted and our finalizer is already off: nothing to do.
    Free,
    /// A cycle with handlers: create, update, delete or resume.
    Handle(Reason),
    /// Nothing essential changed.
    Noop,
}

impl Cause {
    /// The reason, for causes that run handlers.
    pub fn reason(self) -> Option<Reason> {
        match self {
            Cause::Handle(reason) => Some(reason),
            Cause::Gone | Cause::Free | Cause::Noop => None,
        }
    }
}

/// Detects the cause exactly as Kopf does.
///
/// Creation never mixes with resuming: an object without a diff-base is a CREATE even when it
/// comes from the initial listing. With changes, resume handlers are mixed into the UPDATE cycle
/// by the caller (the `initial` flag), not by a separate cause.
pub fn detect(observation: Observation) -> Cause {
    let Observation {
        gone,
        deletion_ongoing,
        has_our_finalizer,
        has_diffbase,
        changed,
        initial,
    } = observation;
    if gone {
        Cause::Gone
    } else if deletion_ongoing && !has_our_finalizer {
        Cause::Free
    } else if deletion_ongoing {
        Cause::Handle(Reason::Delete)
    } else if !has_diffbase {
        Cause::Handle(Reason::Create)
    } else if !changed && initial {
        Cause::Handle(Reason::Resume)
    } else if !changed {
        Cause::Noop
    } else {
        Cause::Handle(Reason::Update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Observation {
        Observation {
            gone: false,
            deletion_ongoing: false,
            has_our_finalizer: false,
            has_diffbase: true,
            changed: false,
            initial: false,
        }
    }

    #[test]
    fn gone_wins_over_everything() {
        let o = Observation {
            gone: true,
            deletion_ongoing: true,
            has_our_finalizer: true,
            ..live()
        };
        assert_eq!(detect(o), Cause::Gone);
    }

    #[test]
    fn deletion_without_our_finalizer_is_free() {
        let o = Observation {
            deletion_ongoing: true,
            ..live()
        };
        assert_eq!(detect(o), Cause::Free);
    }

    #[test]
    fn deletion_with_our_finalizer_is_delete_even_without_a_diffbase() {
        let o = Observation {
            deletion_ongoing: true,
            has_our_finalizer: true,
            has_diffbase: false,
            ..live()
        };
        assert_eq!(detect(o), Cause::Handle(Reason::Delete));
    }

    #[test]
    fn no_diffbase_is_create_even_on_the_initial_listing() {
        let o = Observation {
            has_diffbase: false,
            initial: true,
            changed: true,
            ..live()
        };
        assert_eq!(detect(o), Cause::Handle(Reason::Create));
    }

    #[test]
    fn unchanged_on_the_initial_listing_is_resume_otherwise_noop() {
        assert_eq!(
            detect(Observation {
                initial: true,
                ..live()
            }),
            Cause::Handle(Reason::Resume)
        );
        assert_eq!(detect(live()), Cause::Noop);
    }

    #[test]
    fn changed_is_update_also_on_the_initial_listing() {
        assert_eq!(
            detect(Observation {
                changed: true,
                ..live()
            }),
            Cause::Handle(Reason::Update)
        );
        let o = Observation {
            changed: true,
            initial: true,
            ..live()
        };
        assert_eq!(detect(o), Cause::Handle(Reason::Update));
    }
}
