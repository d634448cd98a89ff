//! A service's manifest (`Describe`) as the core reads it: its handlers, admission handlers, sync
//! and task registrations — each part validated on its own, so that a broken part is reported
//! where it is used.

use std::sync::Arc;
use std::time::Duration;

use crate::admission::AdmissionHandler;
use crate::model::Handler;
use crate::selectors::{Selector, WideSelector};
use crate::shutdown::Hook;
use crate::sync::Strategy;
use crate::tasks::Mode;

/// A service's manifest or answer that breaks the contract.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// A handler has no id.
    #[error("a handler has an empty id")]
    EmptyId,
    /// Two handlers of the same kind share an id for the same resource.
    #[error("handler id {0:?} is used twice for the same kind and resource")]
    DuplicateId(String),
    /// A handler's kind is unknown to this core.
    #[error(
        "handler {id:?} has kind {kind}, which this core does not know (a handler service of a \
         newer contract revision?): upgrade the core"
    )]
    UnsupportedKind {
        /// The handler.
        id: String,
        /// The wire value.
        kind: i32,
    },
    /// A handler names no resource.
    #[error("handler {0:?} names no resource")]
    NoResource(String),
    /// A JSON field does not hold JSON.
    #[error("{what} is not valid JSON: {source}")]
    BadJson {
        /// Which field.
        what: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A merge patch is not a JSON object.
    #[error("the patch must be a JSON object, got: {0}")]
    PatchNotObject(String),
    /// A response carries no outcome.
    #[error("the response has no outcome")]
    NoOutcome,
    /// An Event sent outside a handler call does not say which object it is about.
    #[error("an Event sent on the outbox names no involved object")]
    NoInvolvedObject,
    /// A duration is negative or out of range.
    #[error("{0} is not a valid duration")]
    BadDuration(String),
}

/// One handler of a service, with the resource it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// Which resource.
    pub selector: Selector,
    /// The handler.
    pub handler: Handler,
}

/// One handler of a service whose selector names no single resource.
#[derive(Debug, Clone, PartialEq)]
pub struct WideRegistration {
    /// Which resources.
    pub selector: WideSelector,
    /// The handler.
    pub handler: Handler,
}

/// The change, event, timer, daemon and index handlers of a manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registrations {
    /// The handlers this core runs.
    pub handlers: Vec<Registration>,
    /// Handlers of kinds this core does not run as handlers (sync, tasks): `(id, kind)`.
    pub unsupported: Vec<(String, &'static str)>,
    /// Handlers whose selector names no single resource (`everything`, `category`,
    /// `callable_id`): served on every resource that discovery finds matching.
    pub wide: Vec<WideRegistration>,
}

/// A validate/mutate handler of a manifest breaks the contract.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionRegistrationError {
    /// An operation that is not CREATE, UPDATE, DELETE or CONNECT.
    #[error("admission handler {id:?} has an unknown operation {operation:?}")]
    Operation {
        /// The handler.
        id: String,
        /// The operation.
        operation: String,
    },
    /// No resource.
    #[error("admission handler {0:?} names no resource")]
    NoResource(String),
    /// Filters or options that do not convert.
    #[error(transparent)]
    Convert(#[from] ContractError),
}

/// One sync registration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSpec {
    /// Its id.
    pub id: String,
    /// The parent resource.
    pub parent: Selector,
    /// The child resources, each with its strategy.
    pub children: Vec<(Selector, Strategy)>,
    /// Resync period.
    pub resync: Option<Duration>,
    /// Hold a finalizer and call Finalize (always, with a shutdown hook).
    pub finalize: bool,
    /// Per-call deadline.
    pub call_timeout: Option<Duration>,
    /// Ask the application to stop before children are deleted or replaced.
    pub shutdown: Option<Hook>,
}

/// A manifest's sync registration that breaks the contract.
#[derive(Debug, thiserror::Error)]
pub enum SyncRegistrationError {
    /// A registration has no id.
    #[error("a sync registration has no id")]
    EmptyId,
    /// Two registrations share an id.
    #[error("sync registration {0:?} is defined twice")]
    DuplicateId(String),
    /// The parent or a child type names no resource.
    #[error("sync registration {0:?} names no parent or an empty child resource")]
    NoResource(String),
    /// An unknown update strategy.
    #[error("sync registration {id:?}: unknown update strategy {value}")]
    Strategy {
        /// The registration.
        id: String,
        /// The value sent.
        value: i32,
    },
    /// A shutdown hook that cannot be used.
    #[error("sync registration {id:?}: invalid shutdown hook: {reason}")]
    Hook {
        /// The registration.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad duration.
    #[error("sync registration {id:?}: {source}")]
    Duration {
        /// The registration.
        id: String,
        /// The problem.
        #[source]
        source: ContractError,
    },
}

/// One task registration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Its id (`TaskRequest.task_id`).
    pub id: String,
    /// The task resource.
    pub task: Selector,
    /// The parent resource.
    pub parent: Selector,
    /// The dotted path in a task naming its parent.
    pub parent_field: String,
    /// Parallel or sequential.
    pub mode: Mode,
    /// Higher first among the waiting tasks of a parent.
    pub priority: i32,
    /// How long finished tasks are kept; `None`: the core's default.
    pub retention: Option<Duration>,
    /// A deadline for the whole call; `None`: none.
    pub timeout: Option<Duration>,
}

/// A manifest's task registration that breaks the contract.
#[derive(Debug, thiserror::Error)]
pub enum TaskRegistrationError {
    /// A registration has no id.
    #[error("a task registration has no id")]
    EmptyId,
    /// Two registrations share an id.
    #[error("task registration {0:?} is defined twice")]
    DuplicateId(String),
    /// The task or the parent resource is not named.
    #[error("task registration {0:?} names no task resource or no parent resource")]
    NoResource(String),
    /// Two registrations share a task resource.
    #[error("task registrations {0:?} and {1:?} name the same task resource")]
    SameTaskResource(String, String),
    /// No `parent_field`.
    #[error("task registration {0:?} has no parent_field (the path naming the parent)")]
    NoParentField(String),
    /// An unknown mode.
    #[error("task registration {id:?}: unknown mode {value}")]
    Mode {
        /// The registration.
        id: String,
        /// The value sent.
        value: i32,
    },
    /// A bad duration.
    #[error("task registration {id:?}: {source}")]
    Duration {
        /// The registration.
        id: String,
        /// The problem.
        #[source]
        source: ContractError,
    },
}

/// The highest revision of the handler contract (`proto/operon/v1`) this core speaks: sent in
/// `DescribeRequest`, printed by `operon --version`.
pub const CONTRACT_REVISION: u32 = 1;

/// What `operon --version` prints: the version and the contract revision (the crates of the
/// workspace share one version).
pub fn version_line() -> String {
    format!(
        "{} (handler contract revision {CONTRACT_REVISION})",
        env!("CARGO_PKG_VERSION")
    )
}

/// What a service declares, each part validated on its own (a broken part is an error where that
/// part is used: the engine stops on broken handlers, syncs or tasks; admission skips the
/// service's webhooks).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The service's own name.
    pub service_name: String,
    /// The contract revision the service speaks.
    pub contract_revision: u32,
    /// How many handlers of any kind it declares.
    pub declared: usize,
    /// Its change, event, timer, daemon and index handlers.
    pub handlers: Result<Registrations, Arc<ContractError>>,
    /// Its validate/mutate handlers, with their resources as named.
    pub admission: Result<Vec<(Selector, AdmissionHandler)>, Arc<AdmissionRegistrationError>>,
    /// Its sync registrations.
    pub syncs: Result<Vec<SyncSpec>, Arc<SyncRegistrationError>>,
    /// Its task registrations.
    pub tasks: Result<Vec<TaskSpec>, Arc<TaskRegistrationError>>,
}

impl Manifest {
    /// Whether the service has validate or mutate handlers (valid or not).
    pub fn declares_admission(&self) -> bool {
        !matches!(&self.admission, Ok(handlers) if handlers.is_empty())
    }
}

/// Two parts are the same when both are valid and equal, or both broken the same way.
fn same<T: PartialEq, E: std::fmt::Display>(a: &Result<T, Arc<E>>, b: &Result<T, Arc<E>>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

/// A service "describes different handlers" when any part differs.
impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        self.service_name == other.service_name
            && self.contract_revision == other.contract_revision
            && self.declared == other.declared
            && same(&self.handlers, &other.handlers)
            && same(&self.admission, &other.admission)
            && same(&self.syncs, &other.syncs)
            && same(&self.tasks, &other.tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_differ_by_any_part_valid_or_broken() {
        let base = Manifest {
            service_name: "s".into(),
            contract_revision: 1,
            declared: 0,
            handlers: Ok(Registrations::default()),
            admission: Ok(Vec::new()),
            syncs: Ok(Vec::new()),
            tasks: Ok(Vec::new()),
        };
        assert_eq!(base, base.clone());
        assert!(!base.declares_admission());
        let broken = Manifest {
            syncs: Err(Arc::new(SyncRegistrationError::EmptyId)),
            ..base.clone()
        };
        assert_ne!(base, broken);
        assert_eq!(broken, broken.clone());
        let other = Manifest {
            syncs: Err(Arc::new(SyncRegistrationError::DuplicateId("x".into()))),
            ..base.clone()
        };
        assert_ne!(broken, other);
        let admission = Manifest {
            admission: Err(Arc::new(AdmissionRegistrationError::NoResource("v".into()))),
            ..base
        };
        assert!(admission.declares_admission());
    }
}
