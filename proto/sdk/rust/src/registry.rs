//! The registrations, validated once into the manifest the service answers `Describe` with and
//! the tables its calls are dispatched by. Pure: no gRPC, no IO.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use operon_proto::v1 as pb;

use crate::call::Head;
use crate::ctx::{Effects, Level};
use crate::daemon::DaemonFn;
use crate::error::HandlerResult;
use crate::options::HandlerOptions;
use crate::resource::Resource;
use crate::sync::{SyncFn, SyncOptions};
use crate::task::{TaskFn, TaskOptions};

/// The contract revision this SDK is written against (`proto/operon/v1`, sent in `Manifest`):
/// a core must speak at least this one.
pub const CONTRACT_REVISION: u32 = 1;

/// The kinds of handler registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Create,
    Update,
    Delete,
    Resume,
    Field,
    Event,
    Timer,
    Daemon,
    Validate,
    Mutate,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Resume => "resume",
            Self::Field => "field",
            Self::Event => "event",
            Self::Timer => "timer",
            Self::Daemon => "daemon",
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }

    fn to_proto(self) -> pb::HandlerKind {
        match self {
            Self::Create => pb::HandlerKind::Create,
            Self::Update => pb::HandlerKind::Update,
            Self::Delete => pb::HandlerKind::Delete,
            Self::Resume => pb::HandlerKind::Resume,
            Self::Field => pb::HandlerKind::Field,
            Self::Event => pb::HandlerKind::Event,
            Self::Timer => pb::HandlerKind::Timer,
            Self::Daemon => pb::HandlerKind::Daemon,
            Self::Validate => pb::HandlerKind::Validate,
            Self::Mutate => pb::HandlerKind::Mutate,
        }
    }

    /// The kind of change handler a call with this reason is for.
    pub(crate) fn for_reason(reason: crate::call::Reason) -> Self {
        match reason {
            crate::call::Reason::Create => Self::Create,
            crate::call::Reason::Update => Self::Update,
            crate::call::Reason::Delete => Self::Delete,
            crate::call::Reason::Resume => Self::Resume,
        }
    }

    /// Whether a call's reason tells this kind from the others (so that kinds of this sort may
    /// share an id: one function registered for create and update, as in Kopf).
    fn is_reasoned(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Delete | Self::Resume
        )
    }

    /// Whether its handlers are admission webhooks, called with a review.
    pub(crate) fn is_admission(self) -> bool {
        matches!(self, Self::Validate | Self::Mutate)
    }

    /// Whether its handlers may have sub-handlers (Kopf's changing handlers).
    pub(crate) fn is_change(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Delete | Self::Resume | Self::Field
        )
    }
}

/// An erased change/event/timer function.
pub(crate) type ChangeFn = Arc<
    dyn Fn(
            Head,
            Arc<Mutex<Effects>>,
            Arc<Level>,
            tracing::Span,
        ) -> BoxFuture<'static, HandlerResult>
        + Send
        + Sync,
>;

/// How a handler runs.
#[derive(Clone)]
pub(crate) enum Runner {
    /// Through `Invoke`.
    Call(ChangeFn),
    /// Through `Daemon`.
    Daemon(DaemonFn),
}

/// One handler registration.
#[derive(Clone)]
pub(crate) struct HandlerReg {
    /// The id given in the options, else the function's name (`None` for a closure).
    pub(crate) id: Option<String>,
    pub(crate) kind: Kind,
    pub(crate) resource: Resource,
    pub(crate) interval: Option<Duration>,
    pub(crate) options: HandlerOptions,
    pub(crate) runner: Runner,
}

/// One sync registration.
#[derive(Clone)]
pub(crate) struct SyncReg {
    pub(crate) id: Option<String>,
    pub(crate) parent: Resource,
    pub(crate) options: SyncOptions,
    pub(crate) sync: SyncFn,
}

/// One task registration.
#[derive(Clone)]
pub(crate) struct TaskReg {
    pub(crate) id: Option<String>,
    pub(crate) task: Resource,
    pub(crate) parent: Resource,
    pub(crate) parent_field: String,
    pub(crate) options: TaskOptions,
    pub(crate) run: TaskFn,
}

/// A registration the service refuses to serve; [`crate::Operator::serve`] reports them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// A closure was registered without an id (only named functions give one).
    #[error(
        "a {kind} registration for {resource} is a closure and has no name: give it an id \
         (the options' `id`)"
    )]
    MissingId {
        /// The registration's kind.
        kind: &'static str,
        /// Its resource.
        resource: String,
    },
    /// Two registrations share an id. Only create, update, delete and resume handlers may
    /// share one (of different kinds: the call's reason tells them apart), as when one function
    /// is registered for create and update.
    #[error("the {what} id {id:?} is registered twice; ids must be unique")]
    DuplicateId {
        /// "handler", "sync" or "task".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// An id is empty.
    #[error("a {what} id is empty")]
    EmptyId {
        /// "handler", "sync" or "task".
        what: &'static str,
    },
    /// A resource cannot be named to the core.
    #[error("{id}: the resource {resource:?} is not valid: {problem}")]
    BadResource {
        /// The registration's id.
        id: String,
        /// The resource as given.
        resource: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// An option was given to a kind of handler it does not apply to.
    #[error("{id}: the option `{option}` does not apply to {kind} handlers")]
    NotApplicable {
        /// The handler's id.
        id: String,
        /// The option.
        option: &'static str,
        /// The handler's kind.
        kind: &'static str,
    },
    /// A value/old/new filter without the field it tests.
    #[error("{id}: the filter `{filter}` needs a field (the options' `field`)")]
    FilterWithoutField {
        /// The handler's id.
        id: String,
        /// `value`, `old_value` or `new_value`.
        filter: &'static str,
    },
    /// A validate/mutate handler's `operations` names something that is not an operation.
    #[error(
        "{id}: unknown operation {operation:?} in `operations` (CREATE, UPDATE, DELETE or \
         CONNECT)"
    )]
    UnknownOperation {
        /// The handler's id.
        id: String,
        /// The name as given.
        operation: String,
    },
    /// An option's value makes no sense.
    #[error("{id}: {problem}")]
    BadOption {
        /// The registration's id.
        id: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The operator's name is empty.
    #[error("the operator's name is empty")]
    EmptyName,
}

/// The validated registrations: the manifest and the dispatch tables.
#[derive(Clone)]
pub(crate) struct Registry {
    pub(crate) manifest: pb::Manifest,
    /// By id; several only for create/update/delete/resume handlers sharing an id.
    pub(crate) handlers: HashMap<String, Vec<Arc<HandlerReg>>>,
    pub(crate) syncs: HashMap<String, Arc<SyncReg>>,
    pub(crate) tasks: HashMap<String, Arc<TaskReg>>,
}

impl Registry {
    /// The registration a call of handler `id` with `reason` is for.
    pub(crate) fn handler(
        &self,
        id: &str,
        reason: Option<crate::call::Reason>,
    ) -> Option<&Arc<HandlerReg>> {
        let regs = self.handlers.get(id)?;
        match (regs.as_slice(), reason) {
            ([only], _) => Some(only),
            (regs, Some(reason)) => {
                let kind = Kind::for_reason(reason);
                regs.iter().find(|reg| reg.kind == kind).or(regs.first())
            }
            (regs, None) => regs.first(),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

/// The final id of a handler: the given or derived one, with `/field` when it has a field
/// (as Kopf's ids: `resize/spec.size`).
fn handler_id(reg: &HandlerReg) -> Option<String> {
    let base = reg.id.clone()?;
    Some(match &reg.options.filters.field {
        Some(field) => format!("{base}/{field}"),
        None => base,
    })
}

/// The webhook timeouts the API server accepts (`timeoutSeconds`).
const ADMISSION_TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(30);

/// Refuses options that do not apply to the kind.
fn check_options(id: &str, reg: &HandlerReg, problems: &mut Vec<RegistrationError>) {
    use Kind::{Daemon, Delete, Event, Field, Resume, Timer, Update};
    let o = &reg.options;
    let kind = reg.kind;
    // Event and admission handlers store no progress and are not retried.
    let retried = kind != Event && !kind.is_admission();
    let admission = kind.is_admission();
    let checks: [(&'static str, bool, bool); 18] = [
        ("optional", o.optional, kind == Delete),
        ("deleted", o.deleted, kind == Resume),
        ("idle", o.idle.is_some(), kind == Timer),
        ("sharp", o.sharp, kind == Timer),
        (
            "initial_delay",
            o.initial_delay.is_some(),
            matches!(kind, Timer | Daemon),
        ),
        (
            "cancellation_timeout",
            o.cancellation_timeout.is_some(),
            kind == Daemon,
        ),
        (
            "cancellation_backoff",
            o.cancellation_backoff.is_some(),
            kind == Daemon,
        ),
        ("retries", o.retries.is_some(), retried),
        ("timeout", o.timeout.is_some(), retried),
        ("backoff", o.backoff.is_some(), retried),
        ("errors", o.errors.is_some(), retried),
        ("call_timeout", o.call_timeout.is_some(), kind != Daemon),
        ("operations", o.operations.is_some(), admission),
        ("subresource", o.subresource.is_some(), admission),
        ("ignore_failures", o.ignore_failures, admission),
        ("side_effects", o.side_effects, admission),
        ("persistent", o.persistent, admission),
        (
            "old_value/new_value",
            o.filters.old.is_some() || o.filters.new.is_some(),
            matches!(kind, Update | Field),
        ),
    ];
    for (option, given, applies) in checks {
        if given && !applies {
            problems.push(RegistrationError::NotApplicable {
                id: id.to_owned(),
                option,
                kind: kind.name(),
            });
        }
    }
    if o.filters.field.is_none() {
        for (filter, given) in [
            ("value", o.filters.value.is_some()),
            ("old_value", o.filters.old.is_some()),
            ("new_value", o.filters.new.is_some()),
        ] {
            if given {
                problems.push(RegistrationError::FilterWithoutField {
                    id: id.to_owned(),
                    filter,
                });
            }
        }
    }
    if o.filters.field.as_deref().is_some_and(str::is_empty) {
        problems.push(RegistrationError::BadOption {
            id: id.to_owned(),
            problem: "the field is empty",
        });
    }
    if o.cancellation_backoff.is_some() && o.cancellation_timeout.is_none() && kind == Daemon {
        problems.push(RegistrationError::BadOption {
            id: id.to_owned(),
            problem: "cancellation_backoff needs a cancellation_timeout (without one the core \
                      never cancels the daemon)",
        });
    }
    if admission {
        for operation in &o.unknown_operations {
            problems.push(RegistrationError::UnknownOperation {
                id: id.to_owned(),
                operation: operation.clone(),
            });
        }
        if o.operations.as_ref().is_some_and(Vec::is_empty) && o.unknown_operations.is_empty() {
            problems.push(RegistrationError::BadOption {
                id: id.to_owned(),
                problem: "operations is empty: leave it out to be called for all operations",
            });
        }
        if o.subresource
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            problems.push(RegistrationError::BadOption {
                id: id.to_owned(),
                problem: "the subresource is empty: name one (\"status\"), or \"*\" for all",
            });
        }
        if o.call_timeout
            .is_some_and(|t| !ADMISSION_TIMEOUTS.contains(&t))
        {
            problems.push(RegistrationError::BadOption {
                id: id.to_owned(),
                problem: "an admission handler's call_timeout (the webhook's timeoutSeconds) \
                          must be from 1 to 30 seconds",
            });
        }
    }
    if reg.interval.is_some_and(|i| i.is_zero()) {
        problems.push(RegistrationError::BadOption {
            id: id.to_owned(),
            problem: "a timer's interval must be longer than zero",
        });
    }
}

fn check_resource(id: &str, resource: &Resource, problems: &mut Vec<RegistrationError>) {
    if let Some(problem) = resource.problem() {
        problems.push(RegistrationError::BadResource {
            id: id.to_owned(),
            resource: resource.to_string(),
            problem,
        });
    }
}

/// Remembers `id` of `what`; a second one is a problem.
fn unique(
    seen: &mut HashMap<&'static str, Vec<String>>,
    what: &'static str,
    id: &str,
    problems: &mut Vec<RegistrationError>,
) {
    if id.is_empty() {
        problems.push(RegistrationError::EmptyId { what });
        return;
    }
    let ids = seen.entry(what).or_default();
    if ids.iter().any(|seen| seen == id) {
        problems.push(RegistrationError::DuplicateId {
            what,
            id: id.to_owned(),
        });
    } else {
        ids.push(id.to_owned());
    }
}

/// Validates the registrations and builds the manifest.
///
/// # Errors
/// Every problem found, in registration order.
pub(crate) fn build(
    name: &str,
    handlers: Vec<HandlerReg>,
    syncs: Vec<SyncReg>,
    tasks: Vec<TaskReg>,
) -> Result<Registry, Vec<RegistrationError>> {
    let mut problems = Vec::new();
    if name.trim().is_empty() {
        problems.push(RegistrationError::EmptyName);
    }
    let mut seen = HashMap::new();
    let mut seen_handlers: Vec<(String, Kind)> = Vec::new();
    let mut registry = Registry {
        manifest: pb::Manifest {
            service_name: name.to_owned(),
            contract_revision: CONTRACT_REVISION,
            ..pb::Manifest::default()
        },
        handlers: HashMap::new(),
        syncs: HashMap::new(),
        tasks: HashMap::new(),
    };
    for reg in handlers {
        let Some(id) = handler_id(&reg) else {
            problems.push(RegistrationError::MissingId {
                kind: reg.kind.name(),
                resource: reg.resource.to_string(),
            });
            continue;
        };
        if id.is_empty() {
            problems.push(RegistrationError::EmptyId { what: "handler" });
        } else if seen_handlers.iter().any(|(other, kind)| {
            *other == id && (*kind == reg.kind || !kind.is_reasoned() || !reg.kind.is_reasoned())
        }) {
            problems.push(RegistrationError::DuplicateId {
                what: "handler",
                id: id.clone(),
            });
        }
        seen_handlers.push((id.clone(), reg.kind));
        check_resource(&id, &reg.resource, &mut problems);
        check_options(&id, &reg, &mut problems);
        let mut options = reg.options.to_proto();
        options.interval = reg.interval.map(crate::convert::duration);
        registry.manifest.handlers.push(pb::Handler {
            id: id.clone(),
            kind: reg.kind.to_proto() as i32,
            resource: Some(reg.resource.to_proto()),
            filters: Some(reg.options.filters.to_proto()),
            options: Some(options),
        });
        registry.handlers.entry(id).or_default().push(Arc::new(reg));
    }
    for reg in syncs {
        let Some(id) = reg.id.clone() else {
            problems.push(RegistrationError::MissingId {
                kind: "sync",
                resource: reg.parent.to_string(),
            });
            continue;
        };
        unique(&mut seen, "sync", &id, &mut problems);
        check_resource(&id, &reg.parent, &mut problems);
        for (child, _) in &reg.options.children {
            check_resource(&id, child, &mut problems);
        }
        registry
            .manifest
            .syncs
            .push(reg.options.to_proto(&id, &reg.parent));
        registry.syncs.insert(id, Arc::new(reg));
    }
    for reg in tasks {
        let Some(id) = reg.id.clone() else {
            problems.push(RegistrationError::MissingId {
                kind: "task",
                resource: reg.task.to_string(),
            });
            continue;
        };
        unique(&mut seen, "task", &id, &mut problems);
        check_resource(&id, &reg.task, &mut problems);
        check_resource(&id, &reg.parent, &mut problems);
        if reg.parent_field.trim().is_empty() {
            problems.push(RegistrationError::BadOption {
                id: id.clone(),
                problem: "the parent field (the task's path naming its parent) is empty",
            });
        }
        registry.manifest.tasks.push(reg.options.to_proto(
            &id,
            &reg.task,
            &reg.parent,
            &reg.parent_field,
        ));
        registry.tasks.insert(id, Arc::new(reg));
    }
    if problems.is_empty() {
        Ok(registry)
    } else {
        Err(problems)
    }
}

/// The id a function gets by default: its name (the last path segment of its type name),
/// `None` for closures (whose type names are not unique).
pub(crate) fn default_id<F>() -> Option<String> {
    let full = std::any::type_name::<F>();
    if full.contains("{{closure}}") {
        return None;
    }
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().map(str::to_owned)
}
