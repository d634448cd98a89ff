//! The options of a handler registration: its id, retries, backoff, timeouts, errors mode and
//! filters, and the options of the kinds that have their own (delete, resume, timer, daemon,
//! validate/mutate).
//! An option that does not apply to the kind it is given to is refused when the operator is
//! served ([`crate::RegistrationError::NotApplicable`]).

use std::time::Duration;

use operon_proto::v1 as pb;
use serde::de::DeserializeOwned;

use crate::admission::{Operation, UnknownOperation};
use crate::call::Call;
use crate::convert::duration;
use crate::filters::{Filter, Filters, When};

/// What the core does with an error that is neither temporary nor permanent
/// ([`crate::HandlerError::Other`], e.g. from `?`), as Kopf's `errors=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorsMode {
    /// Retry after the backoff (the default).
    Temporary,
    /// Fail the handler for good.
    Permanent,
    /// Log it and treat the handler as succeeded.
    Ignored,
}

impl ErrorsMode {
    fn to_proto(self) -> pb::ErrorsMode {
        match self {
            Self::Temporary => pb::ErrorsMode::Temporary,
            Self::Permanent => pb::ErrorsMode::Permanent,
            Self::Ignored => pb::ErrorsMode::Ignored,
        }
    }
}

/// The options of a handler registration (the `_with` registration methods of
/// [`crate::Operator`]). Every setter returns the options, for chaining:
///
/// ```
/// # use std::time::Duration;
/// use operon_handler::{Filter, HandlerOptions};
/// let options = HandlerOptions::new()
///     .id("resize")
///     .retries(5)
///     .backoff(Duration::from_secs(10))
///     .label("app", "web")
///     .annotation("paused", Filter::Absent);
/// ```
#[derive(Debug, Clone, Default)]
pub struct HandlerOptions {
    pub(crate) id: Option<String>,
    pub(crate) retries: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) backoff: Option<Duration>,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) errors: Option<ErrorsMode>,
    pub(crate) optional: bool,
    pub(crate) deleted: bool,
    pub(crate) idle: Option<Duration>,
    pub(crate) initial_delay: Option<Duration>,
    pub(crate) sharp: bool,
    pub(crate) cancellation_timeout: Option<Duration>,
    pub(crate) cancellation_backoff: Option<Duration>,
    pub(crate) operations: Option<Vec<Operation>>,
    /// Names given to `operations` that are not operations (refused at registration).
    pub(crate) unknown_operations: Vec<String>,
    pub(crate) subresource: Option<String>,
    pub(crate) ignore_failures: bool,
    pub(crate) side_effects: bool,
    pub(crate) persistent: bool,
    pub(crate) filters: Filters,
}

impl HandlerOptions {
    /// No options: the id is the function's name, everything else the core's default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handler's id: the key of its progress record on the object (`kopf.zalando.org/<id>`)
    /// and of its result in `status.<id>`. Default: the function's name (a field handler's:
    /// `name/field`, as Kopf). Required for closures, which have no name. Keep it stable: a
    /// changed id is a new handler for objects in flight.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Total attempts allowed; after the last failed one the handler fails for good. Default:
    /// unlimited.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Time since the first attempt after which the handler fails for good. Default: none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The delay before retrying after an [`crate::HandlerError::Other`] error. Default: the
    /// core's (60 s).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// The deadline of one call; a call that runs longer is cancelled and counts as a failed
    /// attempt. Default: the core's. For validate and mutate handlers, the webhook's
    /// `timeoutSeconds`: 1 to 30 seconds (default 30, as Kopf); a call that runs longer is a
    /// failure (the request is denied, unless [`HandlerOptions::ignore_failures`]).
    pub fn call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = Some(call_timeout);
        self
    }

    /// What to do with [`crate::HandlerError::Other`] errors. Default:
    /// [`ErrorsMode::Temporary`].
    pub fn errors(mut self, errors: ErrorsMode) -> Self {
        self.errors = Some(errors);
        self
    }

    /// Delete handlers only: an optional one does not make the core hold a finalizer, so it
    /// runs only if the object is still there when the core gets to it.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Resume handlers only: also run for objects that are being deleted.
    pub fn deleted(mut self) -> Self {
        self.deleted = true;
        self
    }

    /// Timers only: run only when the object has not changed for this long.
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// Timers and daemons: wait this long after the object is first seen before the first run.
    pub fn initial_delay(mut self, initial_delay: Duration) -> Self {
        self.initial_delay = Some(initial_delay);
        self
    }

    /// Timers only: run at multiples of the interval since the first run, however long each
    /// run takes (rather than the interval after each run's end).
    pub fn sharp(mut self) -> Self {
        self.sharp = true;
        self
    }

    /// Daemons only: how long a stopped daemon may take to exit after it is cancelled before
    /// the core gives up on it. Default: wait for it.
    pub fn cancellation_timeout(mut self, timeout: Duration) -> Self {
        self.cancellation_timeout = Some(timeout);
        self
    }

    /// Daemons only: how long after asking a daemon to stop the core cancels it (needs a
    /// [`HandlerOptions::cancellation_timeout`]). Default: at once.
    pub fn cancellation_backoff(mut self, backoff: Duration) -> Self {
        self.cancellation_backoff = Some(backoff);
        self
    }

    /// Validate and mutate handlers: the operations the webhook is called for (added to those
    /// given before): [`Operation`]s, or their names (`"CREATE"`, `"UPDATE"`, `"DELETE"`,
    /// `"CONNECT"`, as Kopf's `operations=`). Default: all. A mutate handler is called for
    /// `DELETE` only when that is its only operation (as in Kopf).
    ///
    /// # Errors
    /// A name that is not an operation is refused when the operator is served
    /// ([`crate::RegistrationError::UnknownOperation`]).
    pub fn operations<I>(mut self, operations: I) -> Self
    where
        I: IntoIterator,
        I::Item: TryInto<Operation>,
        <I::Item as TryInto<Operation>>::Error: Into<UnknownOperation>,
    {
        let known = self.operations.get_or_insert_with(Vec::new);
        for operation in operations {
            match operation.try_into() {
                Ok(operation) => known.push(operation),
                Err(unknown) => self.unknown_operations.push(unknown.into().0),
            }
        }
        self
    }

    /// Validate and mutate handlers: the subresource the webhook covers (`"status"`, `"scale"`…),
    /// or `"*"` for the resource and all its subresources. Default: the resource itself.
    pub fn subresource(mut self, subresource: impl Into<String>) -> Self {
        self.subresource = Some(subresource.into());
        self
    }

    /// Validate and mutate handlers: a handler that fails to answer (its service is down, or
    /// misses the deadline) admits the request (the webhook's `failurePolicy: Ignore`; default
    /// `Fail`). A denial is a denial either way.
    pub fn ignore_failures(mut self) -> Self {
        self.ignore_failures = true;
        self
    }

    /// Validate and mutate handlers: the handler has side effects (the webhook's `sideEffects:
    /// NoneOnDryRun`; default `None`), so the API server calls it for dry runs too, and it must
    /// check [`crate::Admission::dry_run`] before it performs them.
    pub fn side_effects(mut self) -> Self {
        self.side_effects = true;
        self
    }

    /// Validate and mutate handlers: keep the handler's webhook in the core's managed webhook
    /// configuration when the core stops (the others are removed then, as in Kopf).
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// Only objects whose label `key` passes `filter` (a string: equal to it).
    pub fn label(mut self, key: impl Into<String>, filter: impl Into<Filter>) -> Self {
        self.filters.labels.insert(key.into(), filter.into());
        self
    }

    /// Only objects whose annotation `key` passes `filter` (a string: equal to it).
    pub fn annotation(mut self, key: impl Into<String>, filter: impl Into<Filter>) -> Self {
        self.filters.annotations.insert(key.into(), filter.into());
        self
    }

    /// The dotted path (`spec.size`) that [`HandlerOptions::value`], [`HandlerOptions::old_value`]
    /// and [`HandlerOptions::new_value`] test. Field handlers set it from their registration.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.filters.field = Some(field.into());
        self
    }

    /// Only objects whose value at [`HandlerOptions::field`] passes `filter`.
    pub fn value(mut self, filter: impl Into<Filter>) -> Self {
        self.filters.value = Some(filter.into());
        self
    }

    /// Update and field handlers: only changes whose old value at the field passes `filter`.
    pub fn old_value(mut self, filter: impl Into<Filter>) -> Self {
        self.filters.old = Some(filter.into());
        self
    }

    /// Update and field handlers: only changes whose new value at the field passes `filter`.
    pub fn new_value(mut self, filter: impl Into<Filter>) -> Self {
        self.filters.new = Some(filter.into());
        self
    }

    /// Only calls for which `f` answers true: a callback filter, evaluated by this service
    /// when the core asks (`Match`, before it holds a finalizer or starts a timer or daemon)
    /// and before every call (a call it rejects is answered as not matched, which the core
    /// treats as if the handler had not been selected). Several `when`s must all agree. The
    /// closure reads the object as its own type `K`; an object that cannot be read as `K`
    /// passes, and the handler's call reports why.
    pub fn when<K, F>(mut self, f: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(&Call<K>) -> bool + Send + Sync + 'static,
    {
        self.filters.when.push(When::new(f));
        self
    }

    /// The contract's options (the timer interval is added by the caller).
    pub(crate) fn to_proto(&self) -> pb::Options {
        pb::Options {
            retries: self.retries,
            timeout: self.timeout.map(duration),
            backoff: self.backoff.map(duration),
            errors: self
                .errors
                .map_or(pb::ErrorsMode::Unspecified, ErrorsMode::to_proto)
                as i32,
            optional: self.optional,
            deleted: self.deleted,
            idle: self.idle.map(duration),
            initial_delay: self.initial_delay.map(duration),
            sharp: self.sharp,
            cancellation_timeout: self.cancellation_timeout.map(duration),
            call_timeout: self.call_timeout.map(duration),
            cancellation_backoff: self.cancellation_backoff.map(duration),
            operations: self.operation_names(),
            subresource: self.subresource.clone(),
            persistent: self.persistent,
            side_effects: self.side_effects,
            ignore_failures: self.ignore_failures,
            ..pb::Options::default()
        }
    }

    /// The operations as the contract names them, each once, in the order given.
    fn operation_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for operation in self.operations.iter().flatten() {
            if !names.iter().any(|name| name == operation.as_str()) {
                names.push(operation.as_str().to_owned());
            }
        }
        names
    }
}

/// The options of a sub-handler ([`crate::Ctx::subhandler_with`]): judged by the core like a
/// top-level handler's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubhandlerOptions {
    pub(crate) retries: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) backoff: Option<Duration>,
    pub(crate) errors: Option<ErrorsMode>,
}

impl SubhandlerOptions {
    /// The defaults (as a top-level handler's).
    pub fn new() -> Self {
        Self::default()
    }

    /// Total attempts allowed.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Time since the sub-handler's first attempt after which it fails for good.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The delay before retrying after an [`crate::HandlerError::Other`] error.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// What to do with [`crate::HandlerError::Other`] errors.
    pub fn errors(mut self, errors: ErrorsMode) -> Self {
        self.errors = Some(errors);
        self
    }

    pub(crate) fn to_proto(&self) -> Option<pb::Options> {
        (self != &Self::default()).then(|| pb::Options {
            retries: self.retries,
            timeout: self.timeout.map(duration),
            backoff: self.backoff.map(duration),
            errors: self
                .errors
                .map_or(pb::ErrorsMode::Unspecified, ErrorsMode::to_proto)
                as i32,
            ..pb::Options::default()
        })
    }
}
