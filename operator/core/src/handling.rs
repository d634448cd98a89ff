//! One change-handling cycle's decisions: Kopf's `process_resource_event` and
//! `process_changing_cause` without their I/O. The runtime (`runtime::processing`) loads the
//! object, asks these functions, calls the services and writes what they say.
//!
//! A cycle, in order:
//! 1. [`Groups::of`]: the resource's handlers by how a cycle treats them.
//! 2. [`Essence::load`], [`Observed::of`]: what changed, the cause, our finalizer on the object.
//! 3. [`spawned_matching`], [`spawned_questions`], [`deletion_questions`]: the timers and
//!    daemons that match, and whose callback filters the services must be asked about first.
//! 4. [`Situation::of`], [`entry`]: blind, change the finalizer first, or handle the cause.
//! 5. [`Selection::of`], [`prepare`], [`Selection::due`]: the records and the handlers to call,
//!    each with [`field_view`], [`deadline`] and [`attempt_id`].
//! 6. An answer lands on the object: [`check_handler_patch`], [`apply_handler_patch`],
//!    [`absorb_subhandlers`], [`deliver_result`]; [`outcome_label`] and [`warning_reason`]
//!    say how it is counted and reported.
//! 7. [`conclude`], [`next_delay`], [`settle`]: done or not, when to look again, and our
//!    finalizer once the handlers have run.

use std::time::Duration;

use blake2::digest::{Update, VariableOutput};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::cause::{self, Cause, Observation};
use crate::finalizer;
use crate::model::{Handler, HandlerKind, Options, Reason};
use crate::outcome::{self, CallResult, Level, Outcome, Progress, Verdict};
use crate::patch::MergePatch;
use crate::persistence::diff::{self, DiffItem, FieldPath};
use crate::persistence::pyjson::{self, py_eq};
use crate::persistence::{DiffBaseStorage, ProgressStorage, essence, progress};
use crate::selection::{self, CauseView};
use crate::state::{HandlerState, State};

/// How often a deleted object's cycle looks again whether its daemons have exited.
pub const DAEMON_EXIT_POLL: Duration = Duration::from_millis(500);

/// A log line: how loud, and Kopf's words.
pub type Line = (Level, String);

/// The resource's handlers by how a cycle treats them, each in registration order.
#[derive(Debug)]
pub struct Groups<'a, T> {
    /// Change handlers (create, update, delete, resume, field): handled with progress records.
    pub changing: Vec<&'a T>,
    /// Raw-event handlers: every watch event, no progress, errors ignored.
    pub events: Vec<&'a T>,
    /// Timers and daemons: spawned per object, not handled in the cycle.
    pub spawned: Vec<&'a T>,
}

impl<'a, T: AsRef<Handler>> Groups<'a, T> {
    /// Sorts `all` into the groups.
    pub fn of(all: &'a [T]) -> Self {
        let mut groups = Groups {
            changing: Vec::new(),
            events: Vec::new(),
            spawned: Vec::new(),
        };
        for bound in all {
            match bound.as_ref().kind {
                HandlerKind::Event => groups.events.push(bound),
                HandlerKind::Timer | HandlerKind::Daemon => groups.spawned.push(bound),
                _ => groups.changing.push(bound),
            }
        }
        groups
    }

    /// No change handler, timer or daemon: a cycle only writes what the event handlers left.
    pub fn is_idle(&self) -> bool {
        self.changing.is_empty() && self.spawned.is_empty()
    }
}

/// A stored value the cycle cannot read: the object is left alone until it is fixed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The diff-base (the last handled essence) is unreadable.
    #[error("The stored diff-base is unusable: {0}")]
    DiffBase(#[from] essence::Error),
    /// A handler's progress record is unreadable.
    #[error("The progress record of {id:?} is unusable: {source}")]
    Progress {
        /// The handler.
        id: String,
        /// What is wrong with the record.
        #[source]
        source: progress::Error,
    },
}

/// What changed: the last handled essence, the current one, and the diff between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Essence {
    /// The stored diff-base, if any (progress fields cleared).
    pub old: Option<Value>,
    /// The essence of the body as it is now.
    pub new: Value,
    /// From `old` to `new`.
    pub diff: Vec<DiffItem>,
}

impl Essence {
    /// Reads the diff-base from `body` and builds the current essence.
    ///
    /// # Errors
    /// The stored diff-base is unreadable.
    pub fn load(
        diffbase: &DiffBaseStorage,
        progress: &ProgressStorage,
        body: &Value,
        extra_fields: &[FieldPath],
    ) -> Result<Self, LoadError> {
        let old = diffbase.fetch(body)?.map(|o| progress.clear(&o));
        let new = progress.clear(&diffbase.build(body, extra_fields));
        let diff = diff::diff(old.as_ref(), Some(&new));
        Ok(Essence { old, new, diff })
    }

    /// Whether `after` (the body as a write will leave it) has this essence: the write touched
    /// only what the essence leaves out (status, our own annotations). A handler that patches
    /// its object's spec or labels makes the next event a change, as in Kopf.
    pub fn kept_by(
        &self,
        diffbase: &DiffBaseStorage,
        progress: &ProgressStorage,
        after: &Value,
        extra_fields: &[FieldPath],
    ) -> bool {
        py_eq(
            &progress.clear(&diffbase.build(after, extra_fields)),
            &self.new,
        )
    }

    /// The stored diff-base is missing or differs from the current essence: a finished cycle
    /// stores the new one.
    pub fn differs_from_stored(&self) -> bool {
        self.old.as_ref().is_none_or(|o| !py_eq(o, &self.new))
    }
}

/// The object as the cycle sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Our finalizer is on the object.
    pub blocked: bool,
    /// The cause (Kopf's `detect_changing_cause`).
    pub cause: Cause,
    /// From the initial listing and not fully handled since the start.
    pub initial: bool,
}

impl Observed {
    /// Observes a live (not gone) object.
    pub fn of(body: &Value, finalizer: &str, essence: &Essence, initial: bool) -> Self {
        let deleting = finalizer::deletion_ongoing(body);
        let blocked = finalizer::is_blocked(body, finalizer);
        let cause = cause::detect(Observation {
            gone: false,
            deletion_ongoing: deleting,
            has_our_finalizer: blocked,
            has_diffbase: essence.old.is_some(),
            changed: !essence.diff.is_empty(),
            initial,
        });
        Observed {
            deleting,
            blocked,
            cause,
            initial,
        }
    }

    /// What handler selection looks at.
    pub fn view<'a>(&self, body: &'a Value, essence: &'a Essence) -> CauseView<'a> {
        CauseView {
            reason: self.cause.reason().unwrap_or(Reason::Update),
            initial: self.initial && self.cause != Cause::Handle(Reason::Create),
            deleted: self.deleting,
            body,
            old: essence.old.as_ref(),
            new: Some(&essence.new),
        }
    }
}

/// The cause's name, as the `cycle` span and the dashboard show it.
pub fn cause_name(cause: Cause) -> &'static str {
    match cause {
        Cause::Handle(r) => r.as_str(),
        Cause::Free => "free",
        Cause::Noop => "noop",
        Cause::Gone => "gone",
    }
}

/// Kopf's debug line for a cause that runs no handler, if it has one.
pub fn unhandled_line(cause: Cause) -> Option<&'static str> {
    match cause {
        Cause::Free => Some("Deletion, but we are done with it, and we do not care."),
        Cause::Noop => {
            Some("Something has changed, but we are not interested (the essence is the same).")
        }
        Cause::Handle(_) | Cause::Gone => None,
    }
}

/// The timers and daemons whose declarative filters match the object. Like Kopf's, they run for
/// every matching object that is not being deleted, and hold our finalizer meanwhile.
pub fn spawned_matching<'a, T: AsRef<Handler>>(
    spawned: &[&'a T],
    view: &CauseView<'_>,
) -> Vec<&'a T> {
    spawned
        .iter()
        .copied()
        .filter(|b| selection::body_matches(b.as_ref(), view))
        .collect()
}

/// The matching timers and daemons whose callback filters the services must be asked about
/// before they start and before the finalizer is decided on (not for an object being deleted:
/// its timers and daemons stop anyway).
pub fn spawned_questions<'a, T: AsRef<Handler>>(matching: &[&'a T], deleting: bool) -> Vec<&'a T> {
    if deleting {
        return Vec::new();
    }
    with_callback_filters(matching)
}

/// The delete handlers that would require our finalizer, if their callback filters accept the
/// object: the services are asked about them before the finalizer is decided on.
pub fn deletion_questions<'a, T: AsRef<Handler>>(
    changing: &[&'a T],
    view: &CauseView<'_>,
) -> Vec<&'a T> {
    let candidates: Vec<&'a T> = changing
        .iter()
        .copied()
        .filter(|b| {
            let h = b.as_ref();
            h.kind == HandlerKind::Delete
                && !h.options.optional
                && selection::requires_finalizer(std::slice::from_ref(h), view)
        })
        .collect();
    with_callback_filters(&candidates)
}

fn with_callback_filters<'a, T: AsRef<Handler>>(handlers: &[&'a T]) -> Vec<&'a T> {
    handlers
        .iter()
        .copied()
        .filter(|b| b.as_ref().has_callback_filters)
        .collect()
}

/// The matching timers and daemons that the callback filters did not reject: `(timers,
/// daemons)`.
pub fn split_spawned<'a, T: AsRef<Handler>>(
    matching: Vec<&'a T>,
    rejected: &[String],
) -> (Vec<&'a T>, Vec<&'a T>) {
    let (daemons, timers) = matching
        .into_iter()
        .filter(|b| !rejected.contains(&b.as_ref().id))
        .partition(|b| b.as_ref().kind == HandlerKind::Daemon);
    (timers, daemons)
}

/// What the finalizer decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Situation {
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Our finalizer is on the object.
    pub blocked: bool,
    /// The resource has change handlers.
    pub has_changing: bool,
    /// A change handler could ever match the object (Kopf's `prematch`).
    pub any_prematch: bool,
    /// A non-optional delete handler matches the object (its callback filters did not reject
    /// it).
    pub delete_handler_matches: bool,
    /// A timer or a daemon matches the object.
    pub spawned_matching: bool,
    /// A daemon of the object being deleted has not exited yet.
    pub daemons_exiting: bool,
}

impl Situation {
    /// The situation of an observed object, given the services' answers about the delete
    /// handlers' callback filters, the matching timers and daemons, and whether daemons are
    /// still exiting.
    pub fn of<T: AsRef<Handler>>(
        observed: &Observed,
        changing: &[&T],
        view: &CauseView<'_>,
        deletion_rejected: &[String],
        spawned_matching: bool,
        daemons_exiting: bool,
    ) -> Self {
        Situation {
            deleting: observed.deleting,
            blocked: observed.blocked,
            has_changing: !changing.is_empty(),
            any_prematch: changing
                .iter()
                .any(|b| selection::any_prematch(one(*b), view)),
            delete_handler_matches: changing.iter().any(|b| {
                let h = b.as_ref();
                !(h.kind == HandlerKind::Delete && deletion_rejected.contains(&h.id))
                    && selection::requires_finalizer(one(*b), view)
            }),
            spawned_matching,
            daemons_exiting,
        }
    }

    fn must_block(self) -> bool {
        self.delete_handler_matches || self.spawned_matching || self.daemons_exiting
    }
}

/// One handler as a slice, for the selection functions that look at many.
fn one<T: AsRef<Handler>>(b: &T) -> &[Handler] {
    std::slice::from_ref(b.as_ref())
}

/// The finalizer decision of a cycle (kube-runtime's `FinalizerState` is the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalizer {
    /// Add it: something will need to run before the object goes. Nothing is handled in this
    /// cycle; the next one (on the object with our finalizer) handles the cause.
    Add,
    /// Remove it.
    Remove(Release),
    /// Leave the object's finalizers as they are.
    Keep(Keep),
}

/// Why our finalizer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Nothing requires it (any more): no delete handler, timer or daemon matches the object.
    NotRequired,
    /// The object is being deleted and its handling is done: the deletion may proceed.
    Deleted,
}

/// Why our finalizer stays as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// It is not on the object and is not added: nothing requires it, or the object is being
    /// deleted already (too late to block its deletion).
    Absent,
    /// It is on the object and required: a delete handler, a timer or a daemon matches.
    Required,
    /// The object is being deleted; its handlers are not done yet (or wait for a retry).
    Handling,
    /// The object is being deleted; its daemons have not exited yet.
    DaemonsExiting,
}

impl Finalizer {
    /// Kopf's debug line for the change, if it is one.
    pub fn log_line(self) -> Option<&'static str> {
        match self {
            Finalizer::Add => Some("Adding the finalizer, thus preventing the actual deletion."),
            Finalizer::Remove(Release::NotRequired) => {
                Some("Removing the finalizer, as there are no handlers requiring it.")
            }
            Finalizer::Remove(Release::Deleted) => {
                Some("Removing the finalizer, thus allowing the actual deletion.")
            }
            Finalizer::Keep(_) => None,
        }
    }
}

/// How a cycle goes on once the filters are asked and the timers and daemons are synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// No handler could ever match the object: no state, no diff-base, no log lines — except
    /// that our finalizer goes if it is there (e.g. a label filter stopped matching), or the
    /// object could never be deleted.
    Blind(Finalizer),
    /// The cycle goes on.
    Proceed {
        /// The finalizer decision before any handler runs.
        finalizer: Finalizer,
        /// The cause to handle: `None` when the finalizer changes first or the resource has no
        /// change handlers.
        cause: Option<Cause>,
    },
}

/// Decides how the cycle goes on, and the finalizer before any handler runs.
pub fn entry(s: &Situation, cause: Cause) -> Entry {
    if !s.any_prematch && !s.spawned_matching && !s.daemons_exiting {
        return Entry::Blind(if s.blocked {
            Finalizer::Remove(Release::NotRequired)
        } else {
            Finalizer::Keep(Keep::Absent)
        });
    }
    let must_block = s.must_block();
    let finalizer = if must_block && !s.blocked && !s.deleting {
        Finalizer::Add
    } else if !must_block && s.blocked {
        Finalizer::Remove(Release::NotRequired)
    } else if !s.blocked {
        Finalizer::Keep(Keep::Absent)
    } else if s.daemons_exiting {
        Finalizer::Keep(Keep::DaemonsExiting)
    } else {
        Finalizer::Keep(Keep::Required)
    };
    let cause = (s.has_changing && matches!(finalizer, Finalizer::Keep(_))).then_some(cause);
    Entry::Proceed { finalizer, cause }
}

/// When to look at the object again: the handlers' delay, but soon while daemons are exiting
/// (the finalizer goes once they have).
pub fn next_delay(handlers: Option<Duration>, daemons_exiting: bool) -> Option<Duration> {
    if daemons_exiting {
        Some(handlers.map_or(DAEMON_EXIT_POLL, |d| d.min(DAEMON_EXIT_POLL)))
    } else {
        handlers
    }
}

/// The finalizer decision once the handlers have run: an object being deleted is released when
/// its handling is done (or it has no change handlers) and nothing waits any more.
///
/// `done` is the handling's end (all due handlers finished); `delay` the cycle's [`next_delay`].
pub fn settle(s: &Situation, before: Finalizer, done: bool, delay: Option<Duration>) -> Finalizer {
    let may_release = matches!(before, Finalizer::Keep(_)) && s.deleting && s.blocked;
    if !may_release {
        return before;
    }
    if delay.is_some() {
        return Finalizer::Keep(if s.daemons_exiting {
            Keep::DaemonsExiting
        } else {
            Keep::Handling
        });
    }
    if done || !s.has_changing {
        Finalizer::Remove(Release::Deleted)
    } else {
        Finalizer::Keep(Keep::Handling)
    }
}

/// The word for a reason in Kopf's log lines ("Creation is in progress", ...).
pub fn title(reason: Reason) -> &'static str {
    match reason {
        Reason::Create => "creation",
        Reason::Update => "updating",
        Reason::Delete => "deletion",
        Reason::Resume => "resuming",
    }
}

/// The first letter upper-cased (Python's `str.capitalize` on these lower-case words).
pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The change handlers a cause selects.
#[derive(Debug)]
pub struct Selection<'a, T> {
    /// The selected ids, each once, in registration order: one function under several
    /// decorators is one id, one record, at most one run per cycle.
    pub ids: Vec<&'a str>,
    /// The ids of all change handlers, each once: the records the cycle reads and may purge.
    pub owned: Vec<&'a str>,
    /// The handlers to call, one per selected id: its first selected registration.
    pub runs: Vec<&'a T>,
}

impl<'a, T: AsRef<Handler>> Selection<'a, T> {
    /// Selects among the change handlers for a cause.
    pub fn of(changing: &[&'a T], view: &CauseView<'_>) -> Self {
        // `selection::select` filters handler by handler: one at a time, without copies.
        let selected: Vec<(&str, HandlerKind)> = changing
            .iter()
            .map(|b| b.as_ref())
            .filter(|h| !selection::select(std::slice::from_ref(*h), view).is_empty())
            .map(|h| (h.id.as_str(), h.kind))
            .collect();
        let mut ids: Vec<&'a str> = Vec::new();
        let mut owned: Vec<&'a str> = Vec::new();
        let mut runs: Vec<&'a T> = Vec::new();
        for &b in changing {
            let h: &'a Handler = b.as_ref();
            if !owned.contains(&h.id.as_str()) {
                owned.push(h.id.as_str());
            }
            if selected.contains(&(h.id.as_str(), h.kind)) && !ids.contains(&h.id.as_str()) {
                ids.push(h.id.as_str());
                runs.push(b);
            }
        }
        Selection { ids, owned, runs }
    }

    /// The handlers to call now: selected, not finished, not sleeping.
    pub fn due(&self, state: &State, now: Timestamp) -> Vec<&'a T> {
        self.runs
            .iter()
            .copied()
            .filter(|b| state.get(&b.as_ref().id).is_some_and(|hs| hs.awakened(now)))
            .collect()
    }
}

/// The handlers' state at the start of a changing cause, and Kopf's lines about it.
#[derive(Debug)]
pub struct Prepared {
    /// The records of the owned handlers, re-purposed, the selected ones active.
    pub state: State,
    /// The lines to log, in order: causes superseded by this one, "... is in progress", the diff.
    pub lines: Vec<Line>,
}

/// What a log line says instead of a Secret's body, diff or patch (Kopf logs them whole).
pub const SECRET_NOT_LOGGED: &str = "(a Secret: its content is not logged)";

/// Whether the object is a core-group Secret, whose data must never reach a log line (the
/// body, the diff and the patches would carry it, in the diff-base annotation too).
pub fn holds_secrets(body: &Value) -> bool {
    body.get("kind").and_then(Value::as_str) == Some("Secret")
        && body.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Loads the records of the owned handlers for a changing cause (Kopf's `State.from_storage`,
/// `with_purpose`, `with_handlers`); a superseded cause's records are purged into `patch`.
///
/// # Errors
/// A stored progress record is unreadable.
pub fn prepare<T: AsRef<Handler>>(
    storage: &ProgressStorage,
    body: &Value,
    reason: Reason,
    essence: &Essence,
    selection: &Selection<'_, T>,
    now: Timestamp,
    patch: &mut MergePatch,
) -> Result<Prepared, LoadError> {
    let current = title(reason);
    let mut lines = Vec::new();
    let mut state = State::load(storage, body, selection.owned.iter().copied(), now)
        .map_err(|(id, source)| LoadError::Progress { id, source })?
        .with_purpose(reason, [])
        .with_handlers(selection.ids.iter().copied(), now);
    for (purpose, c) in &state.extras() {
        let extra_title =
            Reason::parse(purpose).map_or_else(|| format!("{purpose:?}"), |r| title(r).to_owned());
        lines.push((
            Level::Info,
            format!(
                "{} is superseded by {}: {} succeeded; {} failed; {} left to the moment.",
                capitalize(&extra_title),
                current,
                c.success,
                c.failure,
                c.running
            ),
        ));
        state = state.with_purpose(reason, selection.ids.iter().copied());
    }
    if !state.extras().is_empty() {
        state.purge(storage, body, patch, selection.owned.iter().copied());
    }
    let secret = holds_secrets(body);
    let shown = if secret {
        SECRET_NOT_LOGGED.to_owned()
    } else {
        body.to_string()
    };
    lines.push((
        Level::Debug,
        format!("{} is in progress: {shown}", capitalize(current)),
    ));
    if !essence.diff.is_empty() && essence.old.is_some() {
        let shown = if secret {
            SECRET_NOT_LOGGED.to_owned()
        } else {
            diff::to_value(&essence.diff).to_string()
        };
        lines.push((
            Level::Debug,
            format!("{} diff: {shown}", capitalize(current)),
        ));
    }
    Ok(Prepared { state, lines })
}

/// Where a changing cause ends after its calls (the records already stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concluded {
    /// All its active handlers are finished.
    pub done: bool,
    /// When the earliest sleeping handler is due, if not done.
    pub delay: Option<Duration>,
    /// Kopf's "... is processed" line, when done.
    pub line: Option<String>,
}

/// Concludes a changing cause: when done, the owned records are purged into `patch`.
pub fn conclude(
    state: &State,
    storage: &ProgressStorage,
    body: &Value,
    patch: &mut MergePatch,
    owned: &[&str],
    reason: Reason,
    now: Timestamp,
) -> Concluded {
    if !state.done() {
        return Concluded {
            done: false,
            delay: state.delay(now),
            line: None,
        };
    }
    let c = state.counts();
    state.purge(storage, body, patch, owned.iter().copied());
    Concluded {
        done: true,
        delay: None,
        line: Some(format!(
            "{} is processed: {} succeeded; {} failed.",
            capitalize(title(reason)),
            c.success,
            c.failure
        )),
    }
}

/// For field handlers, old/new/diff are the field's, not the object's (Kopf's `adjust_cause`).
pub fn field_view(
    handler: &Handler,
    old: Option<&Value>,
    new: &Value,
    full: &[DiffItem],
) -> (Option<Value>, Option<Value>, Value) {
    match &handler.filters.field {
        Some(field) => (
            old.and_then(|o| diff::resolve(o, field)).cloned(),
            diff::resolve(new, field).cloned(),
            diff::to_value(&diff::reduce(full, field)),
        ),
        None => (old.cloned(), Some(new.clone()), diff::to_value(full)),
    }
}

/// The deadline of one call: the handler's call timeout (or the default), but no later than its
/// total timeout allows — and at least a second.
pub fn deadline(options: &Options, default: Duration, runtime: Duration) -> Duration {
    let mut d = options.call_timeout.unwrap_or(default);
    if let Some(total) = options.timeout {
        d = d.min(total.saturating_sub(runtime).max(Duration::from_secs(1)));
    }
    d
}

/// A stable id for this attempt: same object, handler, change and attempt → same id.
pub fn attempt_id(uid: &str, handler: &str, reason: Reason, retry: u32, new: &Value) -> String {
    let mut hasher = blake2::Blake2bVar::new(16).expect("16 is a valid blake2b output size");
    for part in [
        uid,
        handler,
        reason.as_str(),
        &retry.to_string(),
        &pyjson::dumps(new),
    ] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    let mut out = [0u8; 16];
    hasher
        .finalize_variable(&mut out)
        .expect("the buffer has the configured size");
    out.iter().map(|b| format!("{b:02x}")).collect()
}

/// A handler's patch that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchRefused {
    /// It would change the object's identity.
    #[error("it changes metadata.{0}")]
    Identity(&'static str),
}

/// Refuses handler patches that would change the object's identity.
///
/// # Errors
/// The first identity field the patch touches.
pub fn check_handler_patch(patch: &Value) -> Result<(), PatchRefused> {
    let m = patch.get("metadata");
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
    ] {
        if m.and_then(|m| m.get(field)).is_some() {
            return Err(PatchRefused::Identity(field));
        }
    }
    Ok(())
}

/// What a refused patch means for the handler: an arbitrary error, judged as any other.
pub fn refused(problem: &PatchRefused) -> CallResult {
    CallResult::Arbitrary {
        message: format!("The handler's patch is refused: {problem}"),
    }
}

/// A change handler's (accepted) patch: onto the body the next handlers see, and into the
/// cycle's patch.
pub fn apply_handler_patch(handler_patch: &Value, predicted: &mut Value, patch: &mut MergePatch) {
    MergePatch::from_value(handler_patch.clone())
        .unwrap_or_default()
        .apply_to(predicted);
    patch.merge_from(handler_patch);
}

/// Kopf's `deliver_results`: a dict result is merged into `status.<id>`, anything else replaces it.
pub fn deliver_result(id: &str, value: &Value, predicted: &mut Value, patch: &mut MergePatch) {
    let fragment = json!({"status": {id: value}});
    MergePatch::from_value(fragment.clone())
        .unwrap_or_default()
        .apply_to(predicted);
    if value.is_object() {
        patch.merge_from(&fragment);
    } else {
        patch.set(&["status", id], value.clone());
    }
}

/// Whether `sub` is a sub-handler of `parent`: its id is `<parent>/...`.
pub fn owns(parent: &str, sub: &str) -> bool {
    sub.starts_with(&format!("{parent}/"))
}

/// What a sub-handler did in its parent's call.
#[derive(Debug, Clone, PartialEq)]
pub enum SubResult {
    /// It ran with this result.
    Ran(CallResult),
    /// It was selected but did not run in this call: record its start.
    Selected,
    /// A callback filter said no.
    NotMatched,
}

/// One sub-handler's part of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SubAnswer {
    /// Full id (`parent/sub`).
    pub id: String,
    /// What it did.
    pub result: SubResult,
    /// Its own options, for judging its result.
    pub options: Options,
}

/// The sub-handlers of one call, absorbed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Absorbed {
    /// The sub-handlers recorded under the parent (its `subrefs`).
    pub subrefs: Vec<String>,
    /// The lines to log, in order (Kopf logs them before the parent's).
    pub lines: Vec<Line>,
}

/// Absorbs a call's sub-handler outcomes into their own records (`subs`): each is judged like a
/// handler, its result delivered to `status.<id>`. Sub-handlers that are not the parent's own
/// are ignored with an error line. `now` is the cycle's time, `finished` the call's end.
#[allow(clippy::too_many_arguments)]
pub fn absorb_subhandlers(
    parent: &Handler,
    reason: Reason,
    subs: &mut State,
    answers: Vec<SubAnswer>,
    now: Timestamp,
    finished: Timestamp,
    default_backoff: Duration,
    predicted: &mut Value,
    patch: &mut MergePatch,
) -> Absorbed {
    let mut out = Absorbed::default();
    for sub in answers {
        let id = sub.id;
        if !owns(&parent.id, &id) {
            out.lines.push((
                Level::Error,
                format!(
                    "{} reported a sub-handler {id:?} that is not its own; ignored.",
                    outcome::title(parent)
                ),
            ));
            continue;
        }
        let sub_state = subs
            .get(&id)
            .cloned()
            .unwrap_or_else(|| HandlerState::from_scratch(now, Some(reason)));
        let result = match sub.result {
            SubResult::NotMatched => continue,
            SubResult::Selected => {
                // Recorded now, so that its `started` (and timeout) begin with the parent's call.
                subs.set(&id, sub_state);
                out.subrefs.push(id);
                continue;
            }
            SubResult::Ran(result) => result,
        };
        let sub_handler = Handler {
            id: id.clone(),
            kind: parent.kind,
            filters: Default::default(),
            has_callback_filters: false,
            options: sub.options,
        };
        let progress = Progress {
            retries: sub_state.retries,
            runtime: sub_state.runtime(now),
        };
        let verdict = outcome::precheck(&sub_handler, progress)
            .unwrap_or_else(|| outcome::judge(&sub_handler, progress, result, default_backoff));
        out.lines.push(verdict.log.clone());
        if let Some(value) = verdict.result() {
            deliver_result(&id, value, predicted, patch);
        }
        subs.set(&id, sub_state.with_verdict(&verdict, &[], finished));
        out.subrefs.push(id);
    }
    out
}

/// The verdict's label in the metrics and on the `handler` span.
pub fn outcome_label(v: &Verdict) -> &'static str {
    match v.outcome {
        Outcome::Succeeded { .. } => "success",
        Outcome::Failed { .. } => "failure",
        Outcome::Retry { .. } => "retry",
        Outcome::Pending { .. } => "pending",
    }
}

/// The verdict is an error (a retry or a failure): the `handler` span's status.
pub fn is_error(v: &Verdict) -> bool {
    matches!(v.outcome, Outcome::Retry { .. } | Outcome::Failed { .. })
}

/// The reason of the Warning Event posted about a verdict, if any: for a handler's first failure
/// in a cycle and for its final failure — not for every retry, which would flood the API server
/// with Events for a handler that retries every second.
pub fn warning_reason(v: &Verdict, retries: u32) -> Option<&'static str> {
    if v.log.0 != Level::Error {
        None
    } else if v.failure().is_some() {
        Some("HandlerFailed")
    } else if retries == 0 {
        Some("HandlerRetrying")
    } else {
        None
    }
}

/// What an event handler's call came to: its errors are logged and ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    /// A callback filter said no.
    NotMatched,
    /// It succeeded, with this result for `status.<id>`.
    Succeeded(Option<Value>),
    /// It failed; Kopf's line says it is ignored.
    Failed(String),
}

/// Judges an event handler's answer (`None`: not matched).
pub fn event_outcome(title: &str, result: Option<CallResult>) -> EventOutcome {
    let message = match result {
        None => return EventOutcome::NotMatched,
        Some(CallResult::Success(result)) => return EventOutcome::Succeeded(result),
        Some(
            CallResult::Temporary { message, .. }
            | CallResult::Permanent { message }
            | CallResult::Arbitrary { message },
        ) => message,
        Some(CallResult::SubhandlersPending { .. }) => String::new(),
    };
    EventOutcome::Failed(event_failure(title, &message))
}

/// Kopf's line for an event handler's error (also a call that did not reach the service).
pub fn event_failure(title: &str, message: &str) -> String {
    format!("{title} failed with an exception and will ignore it: {message}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{ErrorsMode, Filters, ValueFilter};

    fn h(id: &str, kind: HandlerKind) -> Handler {
        Handler {
            id: id.into(),
            kind,
            filters: Filters::default(),
            has_callback_filters: false,
            options: Options::default(),
        }
    }

    fn with_label(mut handler: Handler, key: &str, value: &str) -> Handler {
        handler
            .filters
            .labels
            .insert(key.into(), ValueFilter::Equals(json!(value)));
        handler
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn body() -> Value {
        json!({"metadata": {"namespace": "ns", "name": "obj", "uid": "u1", "labels": {"app": "x"}},
               "spec": {"field": 1}})
    }

    #[test]
    fn only_core_secrets_are_kept_out_of_the_log_lines() {
        assert!(holds_secrets(
            &json!({"apiVersion": "v1", "kind": "Secret"})
        ));
        assert!(!holds_secrets(
            &json!({"apiVersion": "example.com/v1", "kind": "Secret"})
        ));
        assert!(!holds_secrets(
            &json!({"apiVersion": "v1", "kind": "ConfigMap"})
        ));
    }

    fn essence(old: Option<Value>, new: Value) -> Essence {
        let diff = diff::diff(old.as_ref(), Some(&new));
        Essence { old, new, diff }
    }

    fn view<'a>(body: &'a Value, essence: &'a Essence, reason: Reason) -> CauseView<'a> {
        CauseView {
            reason,
            initial: false,
            deleted: finalizer::deletion_ongoing(body),
            body,
            old: essence.old.as_ref(),
            new: Some(&essence.new),
        }
    }

    // --- groups, selection --------------------------------------------------------------------

    #[test]
    fn groups_partition_by_kind_in_registration_order() {
        let all = [
            h("c", HandlerKind::Create),
            h("e", HandlerKind::Event),
            h("t", HandlerKind::Timer),
            h("u", HandlerKind::Update),
            h("d", HandlerKind::Daemon),
        ];
        let g = Groups::of(&all);
        let ids = |v: &[&Handler]| v.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&g.changing), ["c", "u"]);
        assert_eq!(ids(&g.events), ["e"]);
        assert_eq!(ids(&g.spawned), ["t", "d"]);
        assert!(!g.is_idle());
        let only_events = [h("e", HandlerKind::Event)];
        assert!(Groups::of(&only_events).is_idle());
        let only_timers = [h("t", HandlerKind::Timer)];
        assert!(!Groups::of(&only_timers).is_idle());
    }

    #[test]
    fn one_function_under_several_decorators_runs_once_per_cycle() {
        // `a` is registered for update and as a field handler; both select on this change.
        let mut field = h("a", HandlerKind::Field);
        field.filters.field = Some(vec!["spec".into(), "field".into()]);
        let all = [
            h("c", HandlerKind::Create),
            h("a", HandlerKind::Update),
            field,
            h("b", HandlerKind::Update),
        ];
        let changing: Vec<&Handler> = all.iter().collect();
        let body = body();
        let e = essence(
            Some(json!({"spec": {"field": 0}})),
            json!({"spec": {"field": 1}}),
        );
        let s = Selection::of(&changing, &view(&body, &e, Reason::Update));
        assert_eq!(s.ids, ["a", "b"]);
        assert_eq!(s.owned, ["c", "a", "b"]);
        let runs: Vec<(&str, HandlerKind)> =
            s.runs.iter().map(|h| (h.id.as_str(), h.kind)).collect();
        assert_eq!(
            runs,
            [("a", HandlerKind::Update), ("b", HandlerKind::Update)],
            "the first selected registration of an id runs"
        );
    }

    #[test]
    fn only_awakened_handlers_are_due() {
        let all = [
            h("a", HandlerKind::Create),
            h("b", HandlerKind::Create),
            h("c", HandlerKind::Create),
        ];
        let changing: Vec<&Handler> = all.iter().collect();
        let body = body();
        let e = essence(None, json!({}));
        let s = Selection::of(&changing, &view(&body, &e, Reason::Create));
        let now = t("2026-01-01T00:00:00Z");
        let mut state = State::default()
            .with_purpose(Reason::Create, [])
            .with_handlers(s.ids.iter().copied(), now);
        let mut done = state.get("a").unwrap().clone();
        done.success = true;
        state.set("a", done);
        let mut sleeping = state.get("b").unwrap().clone();
        sleeping.delayed = Some(now + Duration::from_secs(10));
        state.set("b", sleeping);
        let due: Vec<&str> = s.due(&state, now).iter().map(|h| h.id.as_str()).collect();
        assert_eq!(due, ["c"]);
        let later: Vec<&str> = s
            .due(&state, now + Duration::from_secs(10))
            .iter()
            .map(|h| h.id.as_str())
            .collect();
        assert_eq!(later, ["b", "c"]);
    }

    // --- the cause ----------------------------------------------------------------------------

    #[test]
    fn the_observation_names_the_cause_and_the_view_mixes_resume_in_only_when_not_creating() {
        let storage = (DiffBaseStorage::default(), ProgressStorage::default());
        let body = body();
        let e = Essence::load(&storage.0, &storage.1, &body, &[]).unwrap();
        assert!(e.old.is_none() && e.differs_from_stored());
        let o = Observed::of(&body, finalizer::DEFAULT_FINALIZER, &e, true);
        assert_eq!(o.cause, Cause::Handle(Reason::Create));
        assert!(!o.view(&body, &e).initial, "creation is no resumption");
        assert_eq!(cause_name(o.cause), "create");

        let mut stored = body.clone();
        let mut patch = MergePatch::new();
        storage.0.store(&body, &mut patch, &e.new);
        patch.apply_to(&mut stored);
        let e = Essence::load(&storage.0, &storage.1, &stored, &[]).unwrap();
        assert!(e.diff.is_empty() && !e.differs_from_stored());
        let o = Observed::of(&stored, finalizer::DEFAULT_FINALIZER, &e, true);
        assert_eq!(o.cause, Cause::Handle(Reason::Resume));
        assert!(o.view(&stored, &e).initial);
        let o = Observed::of(&stored, finalizer::DEFAULT_FINALIZER, &e, false);
        assert_eq!(cause_name(o.cause), "noop");
        assert_eq!(cause_name(Cause::Free), "free");
        assert_eq!(
            unhandled_line(Cause::Noop),
            Some("Something has changed, but we are not interested (the essence is the same).")
        );
        assert_eq!(
            unhandled_line(Cause::Free),
            Some("Deletion, but we are done with it, and we do not care.")
        );
        assert_eq!(unhandled_line(Cause::Handle(Reason::Create)), None);
        assert_eq!(cause_name(Cause::Gone), "gone");
    }

    #[test]
    fn an_unreadable_diffbase_is_refused_with_kopfs_words() {
        let body = json!({"metadata": {"annotations": {
            "kopf.zalando.org/last-handled-configuration": "{not json"}}});
        let err = Essence::load(
            &DiffBaseStorage::default(),
            &ProgressStorage::default(),
            &body,
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "The stored diff-base is unusable: the diff-base at kopf.zalando.org/last-handled-configuration is not valid JSON"
            ),
            "{err}"
        );
    }

    // --- callback-filter questions, timers and daemons ---------------------------------------

    #[test]
    fn the_services_are_asked_only_about_handlers_with_callback_filters() {
        let mut asked = h("t1", HandlerKind::Timer);
        asked.has_callback_filters = true;
        let other_label = with_label(h("t2", HandlerKind::Daemon), "app", "y");
        let mut d = h("d", HandlerKind::Daemon);
        d.has_callback_filters = true;
        let spawned_all = [asked, other_label, d];
        let spawned: Vec<&Handler> = spawned_all.iter().collect();
        let body = body();
        let e = essence(Some(json!({})), json!({}));
        let v = view(&body, &e, Reason::Update);
        let matching = spawned_matching(&spawned, &v);
        let ids = |v: &[&Handler]| v.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&matching),
            ["t1", "d"],
            "t2's label filter does not match"
        );
        assert_eq!(ids(&spawned_questions(&matching, false)), ["t1", "d"]);
        assert!(
            spawned_questions(&matching, true).is_empty(),
            "not while deleting"
        );
        let (timers, daemons) = split_spawned(matching, &["d".to_owned()]);
        assert_eq!(
            (ids(&timers), ids(&daemons)),
            (vec!["t1".to_owned()], vec![])
        );

        let mut del = h("del", HandlerKind::Delete);
        del.has_callback_filters = true;
        let mut optional = h("opt", HandlerKind::Delete);
        optional.has_callback_filters = true;
        optional.options.optional = true;
        let plain = h("plain", HandlerKind::Delete);
        let mut create = h("c", HandlerKind::Create);
        create.has_callback_filters = true;
        let all = [del, optional, plain, create];
        let changing: Vec<&Handler> = all.iter().collect();
        assert_eq!(ids(&deletion_questions(&changing, &v)), ["del"]);
    }

    #[test]
    fn a_delete_handler_rejected_by_its_callback_filters_requires_no_finalizer() {
        let all = [h("del", HandlerKind::Delete)];
        let changing: Vec<&Handler> = all.iter().collect();
        let body = body();
        let e = essence(Some(json!({})), json!({}));
        let v = view(&body, &e, Reason::Update);
        let o = Observed {
            deleting: false,
            blocked: false,
            cause: Cause::Noop,
            initial: false,
        };
        let s = Situation::of(&o, &changing, &v, &[], false, false);
        assert!(s.has_changing && s.any_prematch && s.delete_handler_matches);
        let s = Situation::of(&o, &changing, &v, &["del".to_owned()], false, false);
        assert!(s.any_prematch && !s.delete_handler_matches);
        let mut optional = h("del", HandlerKind::Delete);
        optional.options.optional = true;
        let all = [optional];
        let changing: Vec<&Handler> = all.iter().collect();
        let s = Situation::of(&o, &changing, &v, &[], false, false);
        assert!(
            !s.delete_handler_matches,
            "an optional delete handler needs none"
        );
        let all = [with_label(h("del", HandlerKind::Delete), "app", "y")];
        let changing: Vec<&Handler> = all.iter().collect();
        let s = Situation::of(&o, &changing, &v, &[], false, false);
        assert!(!s.any_prematch && !s.delete_handler_matches);
    }

    // --- the finalizer ------------------------------------------------------------------------

    fn live() -> Situation {
        Situation {
            has_changing: true,
            any_prematch: true,
            ..Situation::default()
        }
    }

    const UPDATE: Cause = Cause::Handle(Reason::Update);
    const DELETE: Cause = Cause::Handle(Reason::Delete);

    fn proceed(finalizer: Finalizer, cause: Option<Cause>) -> Entry {
        Entry::Proceed { finalizer, cause }
    }

    #[test]
    fn an_object_no_handler_could_match_is_left_alone_but_released() {
        let blind = Situation {
            any_prematch: false,
            ..live()
        };
        assert_eq!(
            entry(&blind, UPDATE),
            Entry::Blind(Finalizer::Keep(Keep::Absent))
        );
        let blocked = Situation {
            blocked: true,
            ..blind
        };
        assert_eq!(
            entry(&blocked, UPDATE),
            Entry::Blind(Finalizer::Remove(Release::NotRequired))
        );
        // A matching timer, or a daemon still exiting, is not blind.
        let timers = Situation {
            spawned_matching: true,
            ..blind
        };
        assert_eq!(entry(&timers, UPDATE), proceed(Finalizer::Add, None));
    }

    #[test]
    fn the_finalizer_is_added_first_when_something_requires_it() {
        for s in [
            Situation {
                delete_handler_matches: true,
                ..live()
            },
            Situation {
                spawned_matching: true,
                ..live()
            },
        ] {
            assert_eq!(entry(&s, UPDATE), proceed(Finalizer::Add, None), "{s:?}");
        }
        // Too late for an object being deleted: its deletion cannot be blocked any more.
        let s = Situation {
            delete_handler_matches: true,
            deleting: true,
            ..live()
        };
        assert_eq!(
            entry(&s, Cause::Free),
            proceed(Finalizer::Keep(Keep::Absent), Some(Cause::Free))
        );
        assert_eq!(
            settle(&s, Finalizer::Keep(Keep::Absent), false, None),
            Finalizer::Keep(Keep::Absent)
        );
    }

    #[test]
    fn the_finalizer_is_removed_first_when_nothing_requires_it_any_more() {
        let s = Situation {
            blocked: true,
            ..live()
        };
        assert_eq!(
            entry(&s, UPDATE),
            proceed(Finalizer::Remove(Release::NotRequired), None)
        );
        // Nothing is handled in such a cycle: nothing more to release afterwards.
        assert_eq!(
            settle(&s, Finalizer::Remove(Release::NotRequired), false, None),
            Finalizer::Remove(Release::NotRequired)
        );
    }

    #[test]
    fn a_required_finalizer_is_kept_and_the_cause_handled() {
        let s = Situation {
            blocked: true,
            delete_handler_matches: true,
            ..live()
        };
        assert_eq!(
            entry(&s, UPDATE),
            proceed(Finalizer::Keep(Keep::Required), Some(UPDATE))
        );
        assert_eq!(
            settle(&s, Finalizer::Keep(Keep::Required), true, None),
            Finalizer::Keep(Keep::Required),
            "not deleting: it stays"
        );
        // Without change handlers there is no cause to handle.
        let timers_only = Situation {
            has_changing: false,
            any_prematch: false,
            spawned_matching: true,
            ..s
        };
        assert_eq!(
            entry(&timers_only, UPDATE),
            proceed(Finalizer::Keep(Keep::Required), None)
        );
    }

    #[test]
    fn a_deleted_object_is_released_when_its_handling_is_done_not_while_delayed() {
        let s = Situation {
            deleting: true,
            blocked: true,
            delete_handler_matches: true,
            ..live()
        };
        let kept = Finalizer::Keep(Keep::Required);
        assert_eq!(entry(&s, DELETE), proceed(kept, Some(DELETE)));
        assert_eq!(
            settle(&s, kept, true, None),
            Finalizer::Remove(Release::Deleted)
        );
        assert_eq!(
            settle(&s, kept, false, Some(Duration::from_secs(5))),
            Finalizer::Keep(Keep::Handling),
            "a retry is due later"
        );
        assert_eq!(
            settle(&s, kept, false, None),
            Finalizer::Keep(Keep::Handling)
        );
        // Timers only (no change handlers): released as soon as nothing waits.
        let timers_only = Situation {
            has_changing: false,
            any_prematch: false,
            delete_handler_matches: false,
            spawned_matching: true,
            ..s
        };
        assert_eq!(
            entry(&timers_only, DELETE),
            proceed(Finalizer::Keep(Keep::Required), None)
        );
        assert_eq!(
            settle(&timers_only, kept, false, None),
            Finalizer::Remove(Release::Deleted)
        );
    }

    #[test]
    fn a_deleted_objects_finalizer_stays_until_its_daemons_have_exited() {
        let s = Situation {
            deleting: true,
            blocked: true,
            has_changing: false,
            any_prematch: false,
            daemons_exiting: true,
            ..Situation::default()
        };
        let kept = Finalizer::Keep(Keep::DaemonsExiting);
        assert_eq!(entry(&s, DELETE), proceed(kept, None));
        let delay = next_delay(None, true);
        assert_eq!(delay, Some(DAEMON_EXIT_POLL));
        assert_eq!(settle(&s, kept, false, delay), kept);
        // With change handlers, still waiting for the daemons after the handlers are done.
        let s = Situation {
            has_changing: true,
            any_prematch: true,
            delete_handler_matches: true,
            ..s
        };
        assert_eq!(entry(&s, DELETE), proceed(kept, Some(DELETE)));
        assert_eq!(settle(&s, kept, true, next_delay(None, true)), kept);
    }

    #[test]
    fn daemons_exiting_shorten_the_next_look_but_never_lengthen_it() {
        let long = Some(Duration::from_secs(60));
        let short = Some(Duration::from_millis(100));
        assert_eq!(next_delay(long, true), Some(DAEMON_EXIT_POLL));
        assert_eq!(next_delay(short, true), short);
        assert_eq!(next_delay(long, false), long);
        assert_eq!(next_delay(None, false), None);
    }

    #[test]
    fn finalizer_changes_are_logged_with_kopfs_words() {
        assert_eq!(
            Finalizer::Add.log_line(),
            Some("Adding the finalizer, thus preventing the actual deletion.")
        );
        assert_eq!(
            Finalizer::Remove(Release::NotRequired).log_line(),
            Some("Removing the finalizer, as there are no handlers requiring it.")
        );
        assert_eq!(
            Finalizer::Remove(Release::Deleted).log_line(),
            Some("Removing the finalizer, thus allowing the actual deletion.")
        );
        assert_eq!(Finalizer::Keep(Keep::Required).log_line(), None);
    }

    // --- the records and the lines ------------------------------------------------------------

    #[test]
    fn titles_are_kopfs() {
        let titles: Vec<String> = [
            Reason::Create,
            Reason::Update,
            Reason::Delete,
            Reason::Resume,
        ]
        .into_iter()
        .map(|r| capitalize(title(r)))
        .collect();
        assert_eq!(titles, ["Creation", "Updating", "Deletion", "Resuming"]);
        assert_eq!(capitalize(""), "");
    }

    #[test]
    fn a_superseded_cause_is_logged_and_purged_and_the_diff_shown() {
        let now = t("2026-11-22T01:27:42Z");
        let record = "{\"started\":\"2026-11-22T01:27:42.000000+00:00\",\"purpose\":\"create\",\"retries\":1,\"success\":false,\"failure\":false}";
        let body = json!({"metadata": {"name": "obj", "annotations": {
            "kopf.zalando.org/a": record, "kopf.zalando.org/b": record
        }}});
        // `a` is selected again (re-purposed); `b`, a creation handler, is left over: purged.
        let all = [h("a", HandlerKind::Update), h("b", HandlerKind::Create)];
        let changing: Vec<&Handler> = all.iter().collect();
        let e = essence(Some(json!({"spec": {"x": 0}})), json!({"spec": {"x": 1}}));
        let selection = Selection::of(&changing, &view(&body, &e, Reason::Update));
        let mut patch = MergePatch::new();
        let prepared = prepare(
            &ProgressStorage::default(),
            &body,
            Reason::Update,
            &e,
            &selection,
            now,
            &mut patch,
        )
        .unwrap();
        assert_eq!(
            prepared.lines,
            vec![
                (
                    Level::Info,
                    "Creation is superseded by updating: 0 succeeded; 0 failed; 2 left to the moment."
                        .to_owned()
                ),
                (Level::Debug, format!("Updating is in progress: {body}")),
                (
                    Level::Debug,
                    r#"Updating diff: [["change",["spec","x"],0,1]]"#.to_owned()
                ),
            ]
        );
        assert_eq!(
            patch.into_value(),
            json!({"metadata": {"annotations": {"kopf.zalando.org/a": null, "kopf.zalando.org/b": null}}})
        );
        let purpose = |id| prepared.state.get(id).unwrap().purpose.as_deref();
        assert_eq!(
            (purpose("a"), purpose("b")),
            (Some("update"), Some("create"))
        );
    }

    #[test]
    fn an_unreadable_progress_record_is_refused_with_its_handler() {
        let body = json!({"metadata": {"annotations": {"kopf.zalando.org/a": "{oops"}}});
        let all = [h("a", HandlerKind::Create)];
        let changing: Vec<&Handler> = all.iter().collect();
        let e = essence(None, json!({}));
        let selection = Selection::of(&changing, &view(&body, &e, Reason::Create));
        let err = prepare(
            &ProgressStorage::default(),
            &body,
            Reason::Create,
            &e,
            &selection,
            t("2026-01-01T00:00:00Z"),
            &mut MergePatch::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "The progress record of \"a\" is unusable: the progress annotation kopf.zalando.org/a is not valid JSON"
        );
    }

    #[test]
    fn a_concluded_cause_is_counted_and_purged_an_unfinished_one_waits() {
        let now = t("2026-11-22T01:27:42Z");
        let storage = ProgressStorage::default();
        let body = json!({"metadata": {"annotations": {
            "kopf.zalando.org/a": "{}", "kopf.zalando.org/b": "{}"}}});
        let mut state = State::default()
            .with_purpose(Reason::Create, [])
            .with_handlers(["a", "b"], now);
        let mut b = state.get("b").unwrap().clone();
        b.delayed = Some(now + Duration::from_secs(30));
        state.set("b", b.clone());
        let mut patch = MergePatch::new();
        let c = conclude(
            &state,
            &storage,
            &body,
            &mut patch,
            &["a", "b"],
            Reason::Create,
            now,
        );
        assert_eq!(
            c,
            Concluded {
                done: false,
                delay: Some(Duration::ZERO),
                line: None
            },
            "a is due now"
        );
        assert!(patch.is_empty());
        let mut a = state.get("a").unwrap().clone();
        a.success = true;
        state.set("a", a);
        b.failure = true;
        state.set("b", b);
        let c = conclude(
            &state,
            &storage,
            &body,
            &mut patch,
            &["a", "b"],
            Reason::Create,
            now,
        );
        assert_eq!(
            c.line.as_deref(),
            Some("Creation is processed: 1 succeeded; 1 failed.")
        );
        assert!(c.done && c.delay.is_none());
        assert_eq!(
            patch.into_value(),
            json!({"metadata": {"annotations": {"kopf.zalando.org/a": null, "kopf.zalando.org/b": null}}})
        );
    }

    // --- a call ---------------------------------------------------------------------------------

    #[test]
    fn a_field_handler_sees_its_field_not_the_object() {
        let mut field = h("f", HandlerKind::Field);
        field.filters.field = Some(vec!["spec".into(), "x".into()]);
        let old = json!({"spec": {"x": 0, "y": 0}});
        let new = json!({"spec": {"x": 1, "y": 1}});
        let full = diff::diff(Some(&old), Some(&new));
        let (o, n, d) = field_view(&field, Some(&old), &new, &full);
        assert_eq!((o, n), (Some(json!(0)), Some(json!(1))));
        assert_eq!(d, json!([["change", [], 0, 1]]));
        let (o, n, d) = field_view(&h("u", HandlerKind::Update), Some(&old), &new, &full);
        assert_eq!((o, n), (Some(old), Some(new)));
        assert_eq!(d, diff::to_value(&full));
    }

    #[test]
    fn the_deadline_is_the_call_timeout_within_the_remaining_total_timeout_at_least_a_second() {
        let secs = Duration::from_secs;
        let default = secs(60);
        assert_eq!(deadline(&Options::default(), default, secs(500)), secs(60));
        let call = Options {
            call_timeout: Some(secs(10)),
            ..Options::default()
        };
        assert_eq!(deadline(&call, default, secs(0)), secs(10));
        let total = Options {
            timeout: Some(secs(30)),
            ..Options::default()
        };
        assert_eq!(deadline(&total, default, secs(0)), secs(30));
        assert_eq!(deadline(&total, default, secs(25)), secs(5));
        assert_eq!(
            deadline(&total, default, secs(30)),
            secs(1),
            "at least a second"
        );
        assert_eq!(deadline(&total, default, secs(99)), secs(1));
        let both = Options {
            call_timeout: Some(secs(10)),
            timeout: Some(secs(30)),
            ..Options::default()
        };
        assert_eq!(deadline(&both, default, secs(5)), secs(10));
        assert_eq!(deadline(&both, default, secs(25)), secs(5));
    }

    #[test]
    fn the_attempt_id_is_stable_and_changes_with_each_part() {
        let new = json!({"spec": {"x": 1}});
        let id = attempt_id("u1", "create_fn", Reason::Create, 0, &new);
        // Pinned: services de-duplicate retried calls by it, across core restarts and versions.
        assert_eq!(id, "d50bb6b2ceff42360554c38abcd01092");
        assert_eq!(id, attempt_id("u1", "create_fn", Reason::Create, 0, &new));
        for other in [
            attempt_id("u2", "create_fn", Reason::Create, 0, &new),
            attempt_id("u1", "other", Reason::Create, 0, &new),
            attempt_id("u1", "create_fn", Reason::Update, 0, &new),
            attempt_id("u1", "create_fn", Reason::Create, 1, &new),
            attempt_id("u1", "create_fn", Reason::Create, 0, &json!({})),
        ] {
            assert_ne!(id, other);
        }
    }

    // --- an answer ------------------------------------------------------------------------------

    #[test]
    fn a_handler_may_patch_anything_but_the_objects_identity() {
        assert_eq!(
            check_handler_patch(&json!({"spec": {"x": 1}, "status": {"a": 1},
                "metadata": {"labels": {"l": "v"}, "annotations": {"a": "b"}}})),
            Ok(())
        );
        for field in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
        ] {
            let err = check_handler_patch(&json!({"metadata": {field: "x"}})).unwrap_err();
            assert_eq!(err.to_string(), format!("it changes metadata.{field}"));
        }
        let err = check_handler_patch(&json!({"metadata": {"uid": null}})).unwrap_err();
        assert_eq!(
            refused(&err),
            CallResult::Arbitrary {
                message: "The handler's patch is refused: it changes metadata.uid".into()
            }
        );
    }

    #[test]
    fn an_accepted_patch_goes_onto_the_predicted_body_and_into_the_cycles_patch() {
        let mut predicted = json!({"spec": {"x": 0, "y": 0}});
        let mut patch = MergePatch::new();
        apply_handler_patch(
            &json!({"spec": {"x": 1, "y": null}}),
            &mut predicted,
            &mut patch,
        );
        assert_eq!(predicted, json!({"spec": {"x": 1}}));
        assert_eq!(patch.into_value(), json!({"spec": {"x": 1, "y": null}}));
    }

    #[test]
    fn a_dict_result_is_merged_into_status_anything_else_replaces_it() {
        let mut predicted = json!({"status": {"fn": {"old": 1}}});
        let mut patch = MergePatch::new();
        deliver_result("fn", &json!({"new": 2}), &mut predicted, &mut patch);
        assert_eq!(predicted, json!({"status": {"fn": {"old": 1, "new": 2}}}));
        assert_eq!(patch.as_value(), &json!({"status": {"fn": {"new": 2}}}));
        deliver_result("fn", &json!("done"), &mut predicted, &mut patch);
        assert_eq!(predicted, json!({"status": {"fn": "done"}}));
        assert_eq!(patch.into_value(), json!({"status": {"fn": "done"}}));
        let mut patch = MergePatch::new();
        patch.set(&["status", "fn", "old"], json!(null));
        deliver_result("fn", &json!([1, 2]), &mut predicted, &mut patch);
        assert_eq!(
            patch.into_value(),
            json!({"status": {"fn": [1, 2]}}),
            "replaced"
        );
    }

    #[test]
    fn sub_handlers_are_the_ones_under_the_parents_id() {
        assert!(owns("parent", "parent/sub"));
        assert!(owns("parent", "parent/sub/deeper"));
        assert!(!owns("parent", "parent"));
        assert!(!owns("parent", "parentsub"));
        assert!(!owns("parent", "other/sub"));
        assert!(!owns("parent/sub", "parent/other"));
    }

    #[test]
    fn sub_handler_outcomes_land_in_their_own_records() {
        let now = t("2026-11-22T01:27:42Z");
        let finished = now + Duration::from_secs(1);
        let parent = h("p", HandlerKind::Create);
        let mut subs = State::default();
        let mut predicted = json!({});
        let mut patch = MergePatch::new();
        let answers = vec![
            SubAnswer {
                id: "other/x".into(),
                result: SubResult::Ran(CallResult::Success(None)),
                options: Options::default(),
            },
            SubAnswer {
                id: "p/skipped".into(),
                result: SubResult::NotMatched,
                options: Options::default(),
            },
            SubAnswer {
                id: "p/later".into(),
                result: SubResult::Selected,
                options: Options::default(),
            },
            SubAnswer {
                id: "p/ok".into(),
                result: SubResult::Ran(CallResult::Success(Some(json!(7)))),
                options: Options::default(),
            },
            SubAnswer {
                id: "p/boom".into(),
                result: SubResult::Ran(CallResult::Permanent {
                    message: "no".into(),
                }),
                options: Options::default(),
            },
        ];
        let absorbed = absorb_subhandlers(
            &parent,
            Reason::Create,
            &mut subs,
            answers,
            now,
            finished,
            outcome::DEFAULT_BACKOFF,
            &mut predicted,
            &mut patch,
        );
        assert_eq!(absorbed.subrefs, ["p/later", "p/ok", "p/boom"]);
        assert_eq!(
            absorbed.lines,
            vec![
                (
                    Level::Error,
                    "Handler 'p' reported a sub-handler \"other/x\" that is not its own; ignored."
                        .to_owned()
                ),
                (Level::Info, "Handler 'p/ok' succeeded.".to_owned()),
                (
                    Level::Error,
                    "Handler 'p/boom' failed permanently: no".to_owned()
                ),
            ]
        );
        assert!(subs.get("other/x").is_none() && subs.get("p/skipped").is_none());
        let later = subs.get("p/later").unwrap();
        assert!(!later.finished() && later.started == now && later.retries == 0);
        assert_eq!(later.purpose.as_deref(), Some("create"));
        let ok = subs.get("p/ok").unwrap();
        assert!(ok.success && ok.stopped == Some(finished) && ok.retries == 1);
        let boom = subs.get("p/boom").unwrap();
        assert!(boom.failure && boom.message.as_deref() == Some("no"));
        assert_eq!(predicted, json!({"status": {"p/ok": 7}}));
        assert_eq!(patch.into_value(), json!({"status": {"p/ok": 7}}));
    }

    #[test]
    fn a_sub_handler_out_of_retries_fails_before_its_result_is_judged() {
        let now = t("2026-11-22T01:27:42Z");
        let mut subs = State::default();
        let mut tired = HandlerState::from_scratch(now, Some(Reason::Create));
        tired.retries = 2;
        subs.set("p/s", tired);
        let absorbed = absorb_subhandlers(
            &h("p", HandlerKind::Create),
            Reason::Create,
            &mut subs,
            vec![SubAnswer {
                id: "p/s".into(),
                result: SubResult::Ran(CallResult::Success(Some(json!(1)))),
                options: Options {
                    retries: Some(2),
                    ..Options::default()
                },
            }],
            now,
            now,
            outcome::DEFAULT_BACKOFF,
            &mut json!({}),
            &mut MergePatch::new(),
        );
        assert_eq!(
            absorbed.lines,
            vec![(
                Level::Error,
                "Handler 'p/s' has exceeded 2 retries.".to_owned()
            )]
        );
        assert!(subs.get("p/s").unwrap().failure);
    }

    // --- labels and reports ---------------------------------------------------------------------

    fn judged(result: CallResult, errors: ErrorsMode) -> Verdict {
        let mut handler = h("fn", HandlerKind::Create);
        handler.options.errors = errors;
        let progress = Progress {
            retries: 0,
            runtime: Duration::ZERO,
        };
        outcome::judge(&handler, progress, result, outcome::DEFAULT_BACKOFF)
    }

    #[test]
    fn outcome_labels_errors_and_warnings() {
        let temporary = || CallResult::Temporary {
            message: "later".into(),
            delay: None,
        };
        let arbitrary = || CallResult::Arbitrary {
            message: "boom".into(),
        };
        let cases = [
            (
                CallResult::Success(None),
                ErrorsMode::Temporary,
                "success",
                false,
            ),
            (temporary(), ErrorsMode::Temporary, "retry", true),
            (arbitrary(), ErrorsMode::Permanent, "failure", true),
            (arbitrary(), ErrorsMode::Ignored, "success", false),
            (
                CallResult::SubhandlersPending { delay: None },
                ErrorsMode::Temporary,
                "pending",
                false,
            ),
        ];
        for (result, errors, label, error) in cases {
            let v = judged(result, errors);
            assert_eq!((outcome_label(&v), is_error(&v)), (label, error), "{v:?}");
        }
        let retry = judged(temporary(), ErrorsMode::Temporary);
        assert_eq!(warning_reason(&retry, 0), Some("HandlerRetrying"));
        assert_eq!(warning_reason(&retry, 1), None, "not for every retry");
        let failed = judged(arbitrary(), ErrorsMode::Permanent);
        assert_eq!(warning_reason(&failed, 3), Some("HandlerFailed"));
        let ignored = judged(arbitrary(), ErrorsMode::Ignored);
        assert_eq!(
            warning_reason(&ignored, 0),
            Some("HandlerRetrying"),
            "an ignored error is logged at ERROR and posted once"
        );
        let ok = judged(CallResult::Success(None), ErrorsMode::Temporary);
        assert_eq!(warning_reason(&ok, 0), None);
    }

    #[test]
    fn event_handler_errors_are_ignored_with_kopfs_words() {
        assert_eq!(
            event_outcome("Handler 'ev'", None),
            EventOutcome::NotMatched
        );
        assert_eq!(
            event_outcome("Handler 'ev'", Some(CallResult::Success(Some(json!(1))))),
            EventOutcome::Succeeded(Some(json!(1)))
        );
        assert_eq!(
            event_outcome(
                "Handler 'ev'",
                Some(CallResult::Permanent {
                    message: "no".into()
                })
            ),
            EventOutcome::Failed(
                "Handler 'ev' failed with an exception and will ignore it: no".into()
            )
        );
    }
}
