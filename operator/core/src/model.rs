//! What the core knows about handlers: their registrations, as read from the services' manifests
//! (converted from the proto types in `runtime::convert`, validated there).

use std::collections::BTreeMap;
use std::time::Duration;

/// Which kind of handler a registration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// `@kopf.on.create`.
    Create,
    /// `@kopf.on.update`.
    Update,
    /// `@kopf.on.delete`.
    Delete,
    /// `@kopf.on.resume`: the first cycle after the core starts.
    Resume,
    /// `@kopf.on.field`: any cycle in which the value at its field changed.
    Field,
    /// `@kopf.on.event`: every raw watch event; no progress, errors ignored.
    Event,
    /// `@kopf.timer`: called periodically for every matching object while it exists.
    Timer,
    /// `@kopf.daemon`: one long-running call per matching object while it exists.
    Daemon,
    /// `@kopf.index`: fed every watch event of its resource, unfiltered, before the object's
    /// cycle; the service keeps the index (`runtime::indexing`).
    Index,
}

/// The reason of a change-handling cycle, as stored in a progress record's `purpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The object has no diff-base yet.
    Create,
    /// The essence differs from the diff-base.
    Update,
    /// The object is being deleted.
    Delete,
    /// The first cycle after the core started, for an object from the initial listing.
    Resume,
}

impl Reason {
    /// The word Kopf stores in `purpose` and uses in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Create => "create",
            Reason::Update => "update",
            Reason::Delete => "delete",
            Reason::Resume => "resume",
        }
    }

    /// Parses a stored `purpose`.
    pub fn parse(purpose: &str) -> Option<Self> {
        match purpose {
            "create" => Some(Reason::Create),
            "update" => Some(Reason::Update),
            "delete" => Some(Reason::Delete),
            "resume" => Some(Reason::Resume),
            _ => None,
        }
    }
}

/// What happens to an error that is neither temporary nor permanent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorsMode {
    /// Retry after the backoff (the default).
    #[default]
    Temporary,
    /// Fail the handler for good.
    Permanent,
    /// Log it and count the handler as done.
    Ignored,
}

/// A test on one value.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueFilter {
    /// The value must equal this JSON value.
    Equals(serde_json::Value),
    /// The value must be there (any value).
    Present,
    /// The value must not be there.
    Absent,
}

/// Declarative filters of a handler. Absent filters match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Per label key.
    pub labels: BTreeMap<String, ValueFilter>,
    /// Per annotation key.
    pub annotations: BTreeMap<String, ValueFilter>,
    /// A dotted path such as `spec.field`, split into its parts.
    pub field: Option<Vec<String>>,
    /// The new value at `field` must pass this.
    pub value: Option<ValueFilter>,
    /// The old value at `field` must pass this (update and field handlers).
    pub old: Option<ValueFilter>,
    /// The new value at `field` must pass this (update and field handlers).
    pub new: Option<ValueFilter>,
}

/// A handler's options, with the service's choices or Kopf's defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    /// Total attempts allowed; `None` is unlimited.
    pub retries: Option<u32>,
    /// Time since the first attempt after which the handler fails; `None` is never.
    pub timeout: Option<Duration>,
    /// Delay before retrying an arbitrary error; `None` is the core's default backoff.
    pub backoff: Option<Duration>,
    /// What an arbitrary error means.
    pub errors: ErrorsMode,
    /// Delete handlers only: no finalizer for an optional one.
    pub optional: bool,
    /// Resume handlers only: run for objects that are being deleted, too.
    pub deleted: bool,
    /// The deadline of one call; `None` is the core's default.
    pub call_timeout: Option<Duration>,
    /// Timers: the period.
    pub interval: Option<Duration>,
    /// Timers: run only when the object has not changed essentially for this long.
    pub idle: Option<Duration>,
    /// Timers: the wait before the first run.
    pub initial_delay: Option<Duration>,
    /// Timers: keep the schedule regardless of how long a run took.
    pub sharp: bool,
    /// Daemons: how long after the graceful stop the daemon is cancelled; `None` is never.
    pub cancellation_backoff: Option<Duration>,
    /// Daemons: how long after the cancellation the daemon is abandoned; `None` is never.
    pub cancellation_timeout: Option<Duration>,
}

/// One handler of one service, for one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Handler {
    /// Unique within the service; the key of its progress record.
    pub id: String,
    /// The kind of handler.
    pub kind: HandlerKind,
    /// Declarative filters.
    pub filters: Filters,
    /// Whether the service evaluates more filters itself at call time.
    pub has_callback_filters: bool,
    /// Options.
    pub options: Options,
}

impl AsRef<Handler> for Handler {
    fn as_ref(&self) -> &Handler {
        self
    }
}
