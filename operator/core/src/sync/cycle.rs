//! One sync of one parent around the handler's answer: what to do with the parent
//! ([`lifecycle`]), whether an answer can be performed ([`read_answer`], [`read_final`]), which
//! steps the shutdown hook holds back ([`gated`]), when to sync again ([`next_sync`],
//! [`finalize_again`]), how a sync ends ([`outcome`]) and how its end is counted
//! ([`Errors::settle`]).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::{ChildKey, Existing, Invalid, Step};
use crate::backoff::Backoff;
use crate::shutdown::Gate;

/// How one sync (or finalize) of one parent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Synced (or nothing to do); sync again after this long, if set.
    Done(Option<Duration>),
    /// Failed: retried with backoff.
    Failed(String),
    /// Refused or partly refused: reported on the parent, retried with backoff.
    Reported(String),
}

impl Ended {
    /// What the shutdown hook's `gate` means before a deleted parent is finalized: `None` when
    /// the application stopped and finalizing goes on.
    pub fn held(gate: Gate) -> Option<Ended> {
        match gate {
            Gate::Open => None,
            Gate::Wait(after) => Some(Ended::Done(after)),
            Gate::Failed(message) => Some(Ended::Failed(message)),
        }
    }
}

/// What a sync does with a parent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Deleted, and not the registration's to finalize: nothing.
    Leave,
    /// Deleted with the registration's finalizer: (the shutdown hook, then) Finalize.
    Finalize,
    /// The registration finalizes and the finalizer is missing: add it (the watch brings the
    /// parent back with it, and it is synced then).
    AddFinalizer,
    /// Sync it.
    Sync,
}

/// What a sync does first with a parent that is `deleting` or not, for a registration that
/// does or does not `finalize`, when the parent `has_finalizer` or not.
pub fn lifecycle(deleting: bool, finalize: bool, has_finalizer: bool) -> Lifecycle {
    match (deleting, finalize, has_finalizer) {
        (true, true, true) => Lifecycle::Finalize,
        (true, _, _) => Lifecycle::Leave,
        (false, true, false) => Lifecycle::AddFinalizer,
        (false, _, _) => Lifecycle::Sync,
    }
}

/// Why an answer is refused: nothing of it is applied, the parent is told.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The status does not parse.
    #[error("the status is not JSON: {0}")]
    StatusNotJson(#[source] serde_json::Error),
    /// The status is not an object.
    #[error("the status must be a JSON object or null")]
    StatusNotObject,
    /// A status for a parent resource (named) without a status subresource.
    #[error(
        "the sync handler returned a status, but {0} has no status subresource; return a null status"
    )]
    NoStatusSubresource(String),
    /// A child (by position) does not parse.
    #[error("child #{0} is not JSON: {1}")]
    ChildNotJson(usize, #[source] serde_json::Error),
    /// The desired children are invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl Refused {
    /// As written in `status.syncError` and told in the Event.
    pub fn message(&self) -> String {
        format!("the sync response was refused: {self}")
    }
}

/// Why an answer cannot be performed.
#[derive(Debug)]
pub enum Unusable {
    /// The handler failed: this is the end.
    Failed(Ended),
    /// The answer is refused.
    Refused(Refused),
}

/// The status and the desired children of a Sync answer, when they can be performed: the
/// handler's `error` fails the sync; a status that is not a JSON object (or `null`), a status
/// for a parent resource (`resource`) without a status subresource (`has_status`), or a child
/// that is not JSON refuses it.
///
/// # Errors
/// [`Unusable`], as above.
pub fn read_answer(
    error: Option<String>,
    status: Result<Option<Value>, serde_json::Error>,
    children: Vec<Result<Value, serde_json::Error>>,
    has_status: bool,
    resource: &str,
) -> Result<(Option<Value>, Vec<Value>), Unusable> {
    if let Some(error) = error {
        return Err(Unusable::Failed(Ended::Failed(format!(
            "the sync handler failed: {error}"
        ))));
    }
    let refused = |r| Err(Unusable::Refused(r));
    let status = match status {
        Ok(s) => s,
        Err(e) => return refused(Refused::StatusNotJson(e)),
    };
    if status.as_ref().is_some_and(|s| !s.is_object()) {
        return refused(Refused::StatusNotObject);
    }
    if status.is_some() && !has_status {
        return refused(Refused::NoStatusSubresource(resource.to_owned()));
    }
    let mut desired = Vec::with_capacity(children.len());
    for (i, child) in children.into_iter().enumerate() {
        match child {
            Ok(v) => desired.push(v),
            Err(e) => return refused(Refused::ChildNotJson(i, e)),
        }
    }
    Ok((status, desired))
}

/// The status of a Finalize answer, when it can be performed (the handler's `error` fails it, a
/// status that is not JSON refuses it).
///
/// # Errors
/// [`Unusable`], as above.
pub fn read_final(
    error: Option<String>,
    status: Result<Option<Value>, serde_json::Error>,
) -> Result<Option<Value>, Unusable> {
    if let Some(error) = error {
        return Err(Unusable::Failed(Ended::Failed(format!(
            "the finalize handler failed: {error}"
        ))));
    }
    status.map_err(|e| Unusable::Refused(Refused::StatusNotJson(e)))
}

/// When to call Finalize again: `None` when the handler `finalized` (the finalizer goes),
/// else after its `resync_after` (when set and not zero) or 5 seconds.
pub fn finalize_again(finalized: bool, resync_after: Option<Duration>) -> Option<Duration> {
    (!finalized).then(|| {
        resync_after
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(5))
    })
}

/// A step under the shutdown hook's gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gated {
    /// It deletes a child that the answer no longer lists (a move): only once the
    /// application stopped.
    pub removal: bool,
    /// It is performed now (creations and updates always; removals when the gate is open).
    pub now: bool,
}

/// Whether `step` is a removal (deletes a child not `wanted`), and whether it is performed now
/// under `gate`.
pub fn gated(step: &Step, wanted: &HashSet<ChildKey>, gate: &Gate) -> Gated {
    let removal = matches!(step, Step::Delete { key, .. } if !wanted.contains(key));
    Gated {
        removal,
        now: !removal || *gate == Gate::Open,
    }
}

/// Whether any of `steps` is a removal (then the shutdown hook is asked first).
pub fn has_removals(steps: &[Step], wanted: &HashSet<ChildKey>) -> bool {
    steps
        .iter()
        .any(|s| matches!(s, Step::Delete { key, .. } if !wanted.contains(key)))
}

/// Whether a finished replace handshake is cleared after the steps: the gate was open and no
/// removal failed.
pub fn clears(gate: &Gate, removal_failed: bool) -> bool {
    *gate == Gate::Open && !removal_failed
}

/// What the gate leaves after the steps: its failure (a failure of the sync), and how soon to
/// look again when removals wait for it.
pub fn after_gate(gate: Gate, removals: bool) -> (Option<String>, Option<Duration>) {
    match gate {
        Gate::Failed(e) => (Some(e), None),
        Gate::Wait(after) if removals => (None, after),
        Gate::Open | Gate::Wait(_) => (None, None),
    }
}

/// The problem reported on the parent about children not applied for their name `conflicts`.
pub fn problem(conflicts: &[String]) -> Option<String> {
    (!conflicts.is_empty()).then(|| {
        std::iter::once("children not applied (name conflicts):")
            .chain(conflicts.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// When to sync again after a sync that went through: the handler's `resync_after` (when set
/// and not zero), else the registration's `resync`; within 5 seconds while a rollout is
/// `rolling` (it waits for a child to settle); within `gate_wait` while removals wait for the
/// application.
pub fn next_sync(
    resync_after: Option<Duration>,
    resync: Option<Duration>,
    rolling: bool,
    gate_wait: Option<Duration>,
) -> Option<Duration> {
    let mut after = resync_after.filter(|d| !d.is_zero()).or(resync);
    if rolling {
        after = Some(after.map_or(Duration::from_secs(5), |a| a.min(Duration::from_secs(5))));
    }
    if let Some(wait) = gate_wait {
        after = Some(after.map_or(wait, |a| a.min(wait)));
    }
    after
}

/// How a sync that performed its answer ended: reported when there is a `problem`, failed
/// when anything failed (the `failures`, joined), else done, to sync again `after`.
pub fn outcome(problem: Option<String>, failures: &[String], after: Option<Duration>) -> Ended {
    if let Some(problem) = problem {
        return Ended::Reported(problem);
    }
    if !failures.is_empty() {
        return Ended::Failed(failures.join("; "));
    }
    Ended::Done(after)
}

/// The controller of an existing child, as its `ownerReferences` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controller<'a> {
    /// Its uid.
    pub uid: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// Its name.
    pub name: &'a str,
}

/// What exists under a desired child's name, found with `controller` (if any): ours (the
/// parent `parent_uid`'s; current when `current` says so — asked only then), another parent's,
/// or an orphan.
pub fn existing(
    controller: Option<Controller<'_>>,
    parent_uid: &str,
    current: impl FnOnce() -> bool,
) -> Existing {
    match controller {
        Some(c) if c.uid == parent_uid => Existing::Own { current: current() },
        Some(c) => Existing::Foreign {
            owner: format!("{} {:?}", c.kind, c.name),
        },
        None => Existing::Orphan,
    }
}

/// What is counted about a parent's syncs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors {
    /// Failures in a row.
    pub in_a_row: u32,
    /// Failures in all.
    pub total: u64,
    /// The last failure's message.
    pub last: Option<String>,
}

/// How a sync of a parent settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// When to sync it again, if at all.
    pub after: Option<Duration>,
    /// `success` or `error`, as counted in the metrics.
    pub outcome: &'static str,
    /// The failure, when it failed (logged and counted).
    pub failure: Option<String>,
}

impl Errors {
    /// Whether `message` is the last failure's again (its Event is not posted twice in a row).
    pub fn repeats(&self, message: &str) -> bool {
        self.last.as_deref() == Some(message)
    }

    /// Counts how a sync `ended`: a success clears the failures in a row; a failure counts and
    /// is retried with backoff ([`Backoff::OBJECT`]).
    pub fn settle(&mut self, ended: Ended) -> Settled {
        match ended {
            Ended::Done(after) => {
                self.in_a_row = 0;
                self.last = None;
                Settled {
                    after,
                    outcome: "success",
                    failure: None,
                }
            }
            Ended::Failed(message) | Ended::Reported(message) => {
                self.in_a_row += 1;
                self.total += 1;
                self.last = Some(message.clone());
                Settled {
                    after: Some(Backoff::OBJECT.after(self.in_a_row)),
                    outcome: "error",
                    failure: Some(message),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: Duration = Duration::from_secs(1);

    fn not_json() -> serde_json::Error {
        serde_json::from_str::<Value>("{").unwrap_err()
    }

    #[test]
    fn a_parent_is_finalized_only_with_the_registration_s_finalizer() {
        assert_eq!(lifecycle(true, true, true), Lifecycle::Finalize);
        assert_eq!(lifecycle(true, true, false), Lifecycle::Leave);
        assert_eq!(lifecycle(true, false, true), Lifecycle::Leave);
        assert_eq!(lifecycle(false, true, false), Lifecycle::AddFinalizer);
        assert_eq!(lifecycle(false, true, true), Lifecycle::Sync);
        assert_eq!(lifecycle(false, false, false), Lifecycle::Sync);
        assert_eq!(Ended::held(Gate::Open), None);
        assert_eq!(Ended::held(Gate::Wait(Some(S))), Some(Ended::Done(Some(S))));
        assert_eq!(
            Ended::held(Gate::Failed("x".into())),
            Some(Ended::Failed("x".into()))
        );
    }

    #[test]
    fn answers_that_cannot_be_performed_fail_or_are_refused() {
        let refusal = |r: Result<(Option<Value>, Vec<Value>), Unusable>| match r {
            Err(Unusable::Refused(r)) => r.message(),
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            read_answer(Some("boom".into()), Ok(None), vec![], true, "r"),
            Err(Unusable::Failed(Ended::Failed(m))) if m == "the sync handler failed: boom"
        ));
        assert!(
            refusal(read_answer(None, Err(not_json()), vec![], true, "r"))
                .starts_with("the sync response was refused: the status is not JSON: ")
        );
        assert_eq!(
            refusal(read_answer(None, Ok(Some(json!(3))), vec![], true, "r")),
            "the sync response was refused: the status must be a JSON object or null"
        );
        assert_eq!(
            refusal(read_answer(
                None,
                Ok(Some(json!({}))),
                vec![],
                false,
                "things"
            )),
            "the sync response was refused: the sync handler returned a status, but things has \
             no status subresource; return a null status"
        );
        assert!(
            refusal(read_answer(
                None,
                Ok(None),
                vec![Ok(json!({})), Err(not_json())],
                false,
                "r"
            ))
            .starts_with("the sync response was refused: child #1 is not JSON: ")
        );
        assert_eq!(
            Refused::from(Invalid::NotAnObject(2)).message(),
            "the sync response was refused: child #2 is not a JSON object"
        );
        let (status, children) = read_answer(
            None,
            Ok(Some(json!({"a": 1}))),
            vec![Ok(json!({}))],
            true,
            "r",
        )
        .unwrap();
        assert_eq!((status, children.len()), (Some(json!({"a": 1})), 1));
        assert!(matches!(
            read_final(Some("no".into()), Ok(None)),
            Err(Unusable::Failed(Ended::Failed(m))) if m == "the finalize handler failed: no"
        ));
        assert!(matches!(
            read_final(None, Err(not_json())),
            Err(Unusable::Refused(Refused::StatusNotJson(_)))
        ));
        assert_eq!(finalize_again(true, Some(S)), None);
        assert_eq!(finalize_again(false, Some(S)), Some(S));
        assert_eq!(
            finalize_again(false, Some(Duration::ZERO)),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn removals_wait_for_the_gate() {
        let wanted: HashSet<ChildKey> = [(0, None, "keep".to_owned())].into();
        let delete = |name: &str| Step::Delete {
            key: (0, None, name.to_owned()),
            uid: "u".into(),
        };
        let held = Gate::Wait(Some(S));
        assert_eq!(
            gated(&delete("moved"), &wanted, &held),
            Gated {
                removal: true,
                now: false
            }
        );
        assert_eq!(
            gated(&delete("moved"), &wanted, &Gate::Open),
            Gated {
                removal: true,
                now: true
            }
        );
        // A recreation deletes a wanted child: not a removal.
        assert_eq!(
            gated(&delete("keep"), &wanted, &held),
            Gated {
                removal: false,
                now: true
            }
        );
        assert!(has_removals(&[delete("keep"), delete("moved")], &wanted));
        assert!(!has_removals(&[delete("keep")], &wanted));
        assert!(clears(&Gate::Open, false));
        assert!(!clears(&Gate::Open, true));
        assert!(!clears(&held, false));
        assert_eq!(after_gate(held.clone(), true), (None, Some(S)));
        assert_eq!(after_gate(held, false), (None, None));
        assert_eq!(
            after_gate(Gate::Failed("x".into()), true),
            (Some("x".into()), None)
        );
    }

    #[test]
    fn the_next_sync_and_the_end_of_one() {
        let min = Duration::from_secs(60);
        assert_eq!(next_sync(None, None, false, None), None);
        assert_eq!(
            next_sync(Some(Duration::ZERO), Some(min), false, None),
            Some(min)
        );
        assert_eq!(next_sync(Some(S), Some(min), false, None), Some(S));
        assert_eq!(
            next_sync(None, Some(min), true, None),
            Some(Duration::from_secs(5))
        );
        assert_eq!(next_sync(None, None, true, Some(S)), Some(S));
        assert_eq!(next_sync(None, None, false, Some(min)), Some(min));
        assert_eq!(problem(&[]), None);
        assert_eq!(
            problem(&["a".into(), "b".into()]).as_deref(),
            Some("children not applied (name conflicts): a b")
        );
        let failures = ["x".to_owned(), "y".to_owned()];
        assert_eq!(
            outcome(Some("p".into()), &failures, None),
            Ended::Reported("p".into())
        );
        assert_eq!(outcome(None, &failures, None), Ended::Failed("x; y".into()));
        assert_eq!(outcome(None, &[], Some(S)), Ended::Done(Some(S)));
    }

    #[test]
    fn failures_count_in_a_row_and_back_off() {
        let mut e = Errors::default();
        let s = e.settle(Ended::Failed("boom".into()));
        assert_eq!(
            (s.after, s.outcome, s.failure.as_deref()),
            (Some(Duration::from_millis(500)), "error", Some("boom"))
        );
        assert!(e.repeats("boom"));
        let s = e.settle(Ended::Reported("refused".into()));
        assert_eq!(s.after, Some(Duration::from_secs(1)));
        assert_eq!((e.in_a_row, e.total), (2, 2));
        assert!(!e.repeats("boom"));
        let s = e.settle(Ended::Done(Some(S)));
        assert_eq!((s.after, s.outcome, s.failure), (Some(S), "success", None));
        assert_eq!(
            e,
            Errors {
                in_a_row: 0,
                total: 2,
                last: None
            }
        );
    }

    #[test]
    fn an_existing_child_is_ours_another_parent_s_or_an_orphan() {
        let c = |uid| Controller {
            uid,
            kind: "Site",
            name: "b",
        };
        assert_eq!(
            existing(Some(c("p")), "p", || true),
            Existing::Own { current: true }
        );
        assert_eq!(
            existing(Some(c("q")), "p", || unreachable!("not ours")),
            Existing::Foreign {
                owner: "Site \"b\"".into()
            }
        );
        assert_eq!(existing(None, "p", || true), Existing::Orphan);
    }
}
