//! What the handler services declare, put together before anything is served: the handlers by
//! the selector that names their resource, the handlers of wide selectors, the sync and task
//! registrations — each with the index of the service that declares it — and the conflicts
//! between services, which are refused at start.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::manifest::{
    ContractError, Manifest, Registration, SyncRegistrationError, SyncSpec, TaskRegistrationError,
    TaskSpec, WideRegistration,
};
use crate::model::Handler;
use crate::selectors::Selector;

/// Everything the services declare, each part with its service's index.
#[derive(Debug, Default)]
pub struct Registry {
    /// Handlers by the selector that names their resource.
    pub by_selector: BTreeMap<Selector, Vec<(Registration, usize)>>,
    /// Handlers whose selector names no single resource.
    pub wide: Vec<(WideRegistration, usize)>,
    /// Sync registrations.
    pub syncs: Vec<(SyncSpec, usize)>,
    /// Task registrations.
    pub tasks: Vec<(TaskSpec, usize)>,
    /// Handlers of kinds this core does not run: service index, handler id, kind.
    pub unsupported: Vec<(usize, String, &'static str)>,
    /// Services with admission handlers that are not served (no admission listener).
    pub admission_unserved: Vec<usize>,
}

/// What the services declare cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A service's manifest breaks the contract.
    #[error("the manifest of {service} is invalid: {source}")]
    Manifest {
        /// The service.
        service: String,
        /// The problem.
        #[source]
        source: Arc<ContractError>,
    },
    /// A service speaks a newer contract revision than this core: it may rely on calls or
    /// fields the core does not know.
    #[error(
        "{service} speaks handler contract revision {revision}, newer than this core's ({core}): \
         upgrade the core (`operon --version` prints its revision), or serve an older build of \
         the handler service"
    )]
    NewerContract {
        /// The service.
        service: String,
        /// The revision its manifest declares.
        revision: u32,
        /// This core's revision.
        core: u32,
    },
    /// Two services define the same handler id for one resource.
    #[error("handler id {id:?} for {resource} is defined by both {first} and {second}")]
    Conflict {
        /// The id.
        id: String,
        /// The resource.
        resource: String,
        /// One service.
        first: String,
        /// The other.
        second: String,
    },
    /// A service's sync registrations break the contract.
    #[error("the sync registrations of {service} are invalid: {source}")]
    Sync {
        /// The service.
        service: String,
        /// The problem.
        #[source]
        source: Arc<SyncRegistrationError>,
    },
    /// Two services declare a sync registration of the same id.
    #[error("sync registration {id:?} is defined by both {first} and {second}")]
    SyncConflict {
        /// The id.
        id: String,
        /// One service.
        first: String,
        /// The other.
        second: String,
    },
    /// A service's task registrations break the contract.
    #[error("the task registrations of {service} are invalid: {source}")]
    Tasks {
        /// The service.
        service: String,
        /// The problem.
        #[source]
        source: Arc<TaskRegistrationError>,
    },
    /// Two services declare task registrations for the same task resource.
    #[error(
        "the task resource {resource} is registered by both {first} (task {first_id:?}) and {second} (task {second_id:?})"
    )]
    TaskConflict {
        /// The task resource.
        resource: String,
        /// One service.
        first: String,
        /// Its registration.
        first_id: String,
        /// The other service.
        second: String,
        /// Its registration.
        second_id: String,
    },
}

/// Puts the services' manifests together (`names`: the services' names by index, for errors).
/// `admission_served`: the core serves admission webhooks (else services declaring them are
/// listed in [`Registry::admission_unserved`]).
///
/// # Errors
/// An invalid part of a manifest; a handler id, sync id or task resource declared by two
/// services.
pub fn collect(
    manifests: &[Manifest],
    names: &[&str],
    admission_served: bool,
) -> Result<Registry, RegistryError> {
    let mut registry = Registry::default();
    for (i, manifest) in manifests.iter().enumerate() {
        let service = || names[i].to_owned();
        if manifest.contract_revision > crate::manifest::CONTRACT_REVISION {
            return Err(RegistryError::NewerContract {
                service: service(),
                revision: manifest.contract_revision,
                core: crate::manifest::CONTRACT_REVISION,
            });
        }
        let tasks = manifest
            .tasks
            .clone()
            .map_err(|source| RegistryError::Tasks {
                service: service(),
                source,
            })?;
        registry.tasks.extend(tasks.into_iter().map(|s| (s, i)));
        let syncs = manifest
            .syncs
            .clone()
            .map_err(|source| RegistryError::Sync {
                service: service(),
                source,
            })?;
        registry.syncs.extend(syncs.into_iter().map(|s| (s, i)));
        let regs = manifest
            .handlers
            .clone()
            .map_err(|source| RegistryError::Manifest {
                service: service(),
                source,
            })?;
        registry
            .unsupported
            .extend(regs.unsupported.into_iter().map(|(id, kind)| (i, id, kind)));
        if !admission_served && manifest.declares_admission() {
            registry.admission_unserved.push(i);
        }
        registry.wide.extend(regs.wide.into_iter().map(|r| (r, i)));
        for reg in regs.handlers {
            let list = registry
                .by_selector
                .entry(reg.selector.clone())
                .or_default();
            if let Some((other, j)) = list
                .iter()
                .find(|(r, j)| r.handler.id == reg.handler.id && *j != i)
            {
                return Err(RegistryError::Conflict {
                    id: other.handler.id.clone(),
                    resource: reg.selector.to_string(),
                    first: names[*j].to_owned(),
                    second: service(),
                });
            }
            list.push((reg, i));
        }
    }
    unique_across_services(&registry.syncs, &registry.tasks, names)?;
    Ok(registry)
}

/// A sync id or a task resource is declared by one service only: two services with the same sync
/// id (its finalizer and status are keyed by the id) or the same task resource (one controller
/// per task object) are refused. `names` are the services' names by index.
///
/// # Errors
/// The first such pair.
pub fn unique_across_services(
    syncs: &[(SyncSpec, usize)],
    tasks: &[(TaskSpec, usize)],
    names: &[&str],
) -> Result<(), RegistryError> {
    for (k, (spec, i)) in syncs.iter().enumerate() {
        if let Some((_, j)) = syncs[..k].iter().find(|(o, j)| o.id == spec.id && j != i) {
            return Err(RegistryError::SyncConflict {
                id: spec.id.clone(),
                first: names[*j].to_owned(),
                second: names[*i].to_owned(),
            });
        }
    }
    for (k, (spec, i)) in tasks.iter().enumerate() {
        if let Some((other, j)) = tasks[..k]
            .iter()
            .find(|(o, j)| o.task == spec.task && j != i)
        {
            return Err(RegistryError::TaskConflict {
                resource: spec.task.to_string(),
                first: names[*j].to_owned(),
                first_id: other.id.clone(),
                second: names[*i].to_owned(),
                second_id: spec.id.clone(),
            });
        }
    }
    Ok(())
}

/// Adds handlers (with their service's index) to one resource's list: a handler id of two
/// services is a conflict; the same id and kind reached through two selectors is served once.
/// Returns the ids that were already there (served once).
///
/// # Errors
/// [`RegistryError::Conflict`] naming `resource` and both services.
pub fn merge_handlers(
    resource: &str,
    list: &mut Vec<(Handler, usize)>,
    regs: impl IntoIterator<Item = (Handler, usize)>,
    names: &[&str],
) -> Result<Vec<String>, RegistryError> {
    let mut once = Vec::new();
    for (handler, i) in regs {
        match list.iter().find(|(h, _)| h.id == handler.id) {
            Some((_, j)) if *j != i => {
                return Err(RegistryError::Conflict {
                    id: handler.id.clone(),
                    resource: resource.to_owned(),
                    first: names[*j].to_owned(),
                    second: names[i].to_owned(),
                });
            }
            Some((h, _)) if h.kind == handler.kind => once.push(handler.id),
            _ => list.push((handler, i)),
        }
    }
    Ok(once)
}

/// The resources served, each with its handlers, merged by identity: selectors that name one
/// resource (`'namespace'` and `('v1', 'namespace')`) are served as one resource with one watch,
/// as Kopf merges them. `K` identifies a resource (group, version, plural); `R` is what is
/// known about it.
#[derive(Debug)]
pub struct Merged<K, R> {
    /// In the order first seen: the key, the resource, its handlers with their services.
    pub resources: Vec<(K, R, Bindings)>,
}

/// Handlers, each with the index of the service that runs it.
pub type Bindings = Vec<(Handler, usize)>;

impl<K: PartialEq, R> Default for Merged<K, R> {
    fn default() -> Self {
        Merged {
            resources: Vec::new(),
        }
    }
}

impl<K: PartialEq, R> Merged<K, R> {
    /// Adds handlers to the resource `key` (added if new; `resource` names it in errors), see
    /// [`merge_handlers`]. Returns the ids served once.
    ///
    /// # Errors
    /// As [`merge_handlers`].
    pub fn add(
        &mut self,
        key: K,
        resource: R,
        name: &str,
        regs: impl IntoIterator<Item = (Handler, usize)>,
        names: &[&str],
    ) -> Result<Vec<String>, RegistryError> {
        let slot = match self.resources.iter().position(|(k, _, _)| *k == key) {
            Some(slot) => slot,
            None => {
                self.resources.push((key, resource, Vec::new()));
                self.resources.len() - 1
            }
        };
        merge_handlers(name, &mut self.resources[slot].2, regs, names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Registrations;
    use crate::model::HandlerKind;
    use crate::tasks::Mode;

    fn selector(name: &str) -> Selector {
        Selector {
            group: "example.com".into(),
            version: "v1".into(),
            name: name.into(),
        }
    }

    fn handler(id: &str, kind: HandlerKind) -> Handler {
        Handler {
            id: id.into(),
            kind,
            filters: Default::default(),
            has_callback_filters: false,
            options: Default::default(),
        }
    }

    fn sync(id: &str) -> SyncSpec {
        SyncSpec {
            id: id.into(),
            parent: selector("things"),
            children: Vec::new(),
            resync: None,
            finalize: false,
            call_timeout: None,
            shutdown: None,
        }
    }

    fn task(id: &str, resource: &str) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            task: selector(resource),
            parent: selector("things"),
            parent_field: "spec.thing".into(),
            mode: Mode::Parallel,
            priority: 0,
            retention: None,
            timeout: None,
        }
    }

    fn manifest(handlers: Vec<Registration>, syncs: Vec<SyncSpec>) -> Manifest {
        Manifest {
            service_name: "svc".into(),
            contract_revision: 1,
            declared: handlers.len(),
            handlers: Ok(Registrations {
                handlers,
                unsupported: vec![("old".into(), "probe")],
                wide: Vec::new(),
            }),
            admission: Ok(Vec::new()),
            syncs: Ok(syncs),
            tasks: Ok(Vec::new()),
        }
    }

    fn reg(resource: &str, id: &str) -> Registration {
        Registration {
            selector: selector(resource),
            handler: handler(id, HandlerKind::Create),
        }
    }

    #[test]
    fn a_service_of_a_newer_contract_revision_is_refused_with_what_to_do() {
        let mut newer = manifest(vec![reg("things", "a")], Vec::new());
        newer.contract_revision = crate::manifest::CONTRACT_REVISION + 1;
        let current = manifest(vec![reg("things", "b")], Vec::new());
        let error = collect(&[current, newer], &["one", "two"], true).unwrap_err();
        assert!(
            matches!(&error, RegistryError::NewerContract { service, revision, .. }
                if service == "two" && *revision == crate::manifest::CONTRACT_REVISION + 1),
            "{error:?}"
        );
        assert!(error.to_string().contains("upgrade the core"), "{error}");
    }

    #[test]
    fn manifests_are_put_together_with_their_services() {
        let registry = collect(
            &[
                manifest(
                    vec![reg("things", "a"), reg("others", "b")],
                    vec![sync("s1")],
                ),
                manifest(vec![reg("things", "c")], vec![sync("s2")]),
            ],
            &["one", "two"],
            true,
        )
        .unwrap();
        let things: Vec<(&str, usize)> = registry.by_selector[&selector("things")]
            .iter()
            .map(|(r, i)| (r.handler.id.as_str(), *i))
            .collect();
        assert_eq!(things, [("a", 0), ("c", 1)]);
        assert_eq!(registry.syncs.len(), 2);
        assert_eq!(registry.unsupported[1], (1, "old".to_owned(), "probe"));
        assert!(registry.admission_unserved.is_empty());
    }

    #[test]
    fn one_handler_id_of_two_services_on_one_selector_is_refused() {
        let err = collect(
            &[
                manifest(vec![reg("things", "a")], vec![]),
                manifest(vec![reg("things", "a")], vec![]),
            ],
            &["one", "two"],
            true,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "handler id \"a\" for example.com/v1/things is defined by both one and two"
                .replace("example.com/v1/things", &selector("things").to_string())
        );
    }

    #[test]
    fn two_services_cannot_declare_one_sync_id_or_task_resource() {
        let names = ["http://a", "http://b"];
        let fine = unique_across_services(
            &[(sync("s1"), 0), (sync("s2"), 1)],
            &[(task("t", "repairs"), 0), (task("t", "backups"), 1)],
            &names,
        );
        assert!(fine.is_ok());
        let err =
            unique_across_services(&[(sync("s"), 0), (sync("s"), 1)], &[], &names).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sync registration \"s\" is defined by both http://a and http://b"
        );
        let err = unique_across_services(
            &[],
            &[(task("fix", "repairs"), 0), (task("mend", "repairs"), 1)],
            &names,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the task resource example.com/v1/repairs is registered by both http://a (task \"fix\") and http://b (task \"mend\")"
        );
    }

    #[test]
    fn handlers_reached_twice_are_served_once_and_services_never_share_an_id() {
        let mut merged: Merged<&str, ()> = Merged::default();
        let names = ["one", "two"];
        let once = merged
            .add(
                "things",
                (),
                "things",
                [(handler("a", HandlerKind::Create), 0)],
                &names,
            )
            .unwrap();
        assert!(once.is_empty());
        // The same handler through another selector naming the same resource: once.
        let once = merged
            .add(
                "things",
                (),
                "things",
                [(handler("a", HandlerKind::Create), 0)],
                &names,
            )
            .unwrap();
        assert_eq!(once, ["a"]);
        // Another kind under the same id (one function, two decorators): both kept.
        merged
            .add(
                "things",
                (),
                "things",
                [(handler("a", HandlerKind::Update), 0)],
                &names,
            )
            .unwrap();
        assert_eq!(merged.resources.len(), 1);
        assert_eq!(merged.resources[0].2.len(), 2);
        let err = merged
            .add(
                "things",
                (),
                "things",
                [(handler("a", HandlerKind::Create), 1)],
                &names,
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { .. }));
        merged
            .add(
                "others",
                (),
                "others",
                [(handler("a", HandlerKind::Create), 1)],
                &names,
            )
            .unwrap();
        assert_eq!(merged.resources.len(), 2);
    }
}
