//! A manifest from the wire as the core reads it ([`manifest`]): each part — handlers, admission
//! handlers, sync and task registrations — validated on its own.

use std::sync::Arc;
use std::time::Duration;

use operon_proto::v1 as pb;

use crate::core::admission::{AdmissionHandler, MAX_TIMEOUT, Operation, Subresource, WebhookKind};
use crate::core::model::{Handler, HandlerKind};
use crate::core::selectors::Selector;
use crate::core::shutdown::{self as hooks, FailureStrategy, Hook};
use crate::core::sync::Strategy;
use crate::core::tasks::Mode;
use crate::runtime::grpc::convert::{convert_filters, convert_options, duration};
use crate::runtime::ports::{
    AdmissionRegistrationError, ContractError as Error, Manifest, Registration, Registrations,
    SyncRegistrationError, SyncSpec, TaskRegistrationError, TaskSpec, WideRegistration,
};

/// The manifest, each part validated on its own.
pub(crate) fn manifest(m: &pb::Manifest) -> Manifest {
    Manifest {
        service_name: m.service_name.clone(),
        contract_revision: m.contract_revision,
        declared: m.handlers.len(),
        handlers: handlers(m).map_err(Arc::new),
        admission: admission(m).map_err(Arc::new),
        syncs: syncs(m).map_err(Arc::new),
        tasks: tasks(m).map_err(Arc::new),
    }
}

/// The wide part of a resource selector, if it has one.
fn wide_selector(r: &pb::ResourceSelector) -> Option<crate::core::selectors::WideSelector> {
    use crate::core::selectors::{Pick, WideSelector};
    let pick = if r.everything {
        Pick::Everything
    } else if !r.category.is_empty() {
        Pick::Category(r.category.clone())
    } else if !r.callable_id.is_empty() {
        Pick::Callable(r.callable_id.clone())
    } else {
        return None;
    };
    Some(WideSelector {
        group: (r.core_group || !r.group.is_empty()).then(|| r.group.clone()),
        version: (!r.version.is_empty()).then(|| r.version.clone()),
        pick,
    })
}

/// Which resources a handler serves.
enum Target {
    /// Every resource that discovery finds matching.
    Wide(crate::core::selectors::WideSelector),
    /// One resource.
    Named(Selector),
}

/// A registration's resource selector; `None` when it names no resource.
fn selector(r: Option<&pb::ResourceSelector>) -> Option<Selector> {
    r.filter(|r| !r.name.is_empty()).map(|r| Selector {
        group: r.group.clone(),
        version: r.version.clone(),
        name: r.name.clone(),
    })
}

/// The change, event, timer, daemon and index handlers of a manifest.
///
/// # Errors
/// The first contract violation found.
pub(crate) fn handlers(m: &pb::Manifest) -> Result<Registrations, Error> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Registrations::default();
    for h in &m.handlers {
        if h.id.is_empty() {
            return Err(Error::EmptyId);
        }
        // One function under several decorators (`@on.resume` + `@on.create`) is one id with
        // several kinds: one progress record, run at most once per cycle (Kopf's dedup). One id
        // may serve several resources (handlers registered in a loop): Kopf keys them per
        // resource, and so do the progress records (they live on each object).
        let resource_key = h.resource.as_ref().map(|r| format!("{r:?}"));
        if !seen.insert((h.id.clone(), h.kind, resource_key)) {
            return Err(Error::DuplicateId(h.id.clone()));
        }
        let kind = match pb::HandlerKind::try_from(h.kind) {
            Ok(pb::HandlerKind::Create) => HandlerKind::Create,
            Ok(pb::HandlerKind::Update) => HandlerKind::Update,
            Ok(pb::HandlerKind::Delete) => HandlerKind::Delete,
            Ok(pb::HandlerKind::Resume) => HandlerKind::Resume,
            Ok(pb::HandlerKind::Field) => HandlerKind::Field,
            Ok(pb::HandlerKind::Event) => HandlerKind::Event,
            Ok(pb::HandlerKind::Timer) => HandlerKind::Timer,
            Ok(pb::HandlerKind::Daemon) => HandlerKind::Daemon,
            Ok(pb::HandlerKind::Index) => HandlerKind::Index,
            // Admission webhooks are served apart ([`admission`]).
            Ok(pb::HandlerKind::Validate | pb::HandlerKind::Mutate) => continue,
            Ok(kind @ (pb::HandlerKind::Sync | pb::HandlerKind::Task)) => {
                out.unsupported.push((h.id.clone(), kind.as_str_name()));
                continue;
            }
            _ => {
                return Err(Error::UnsupportedKind {
                    id: h.id.clone(),
                    kind: h.kind,
                });
            }
        };
        let target = match h.resource.as_ref().and_then(wide_selector) {
            Some(wide) => Target::Wide(wide),
            None => Target::Named(
                selector(h.resource.as_ref()).ok_or_else(|| Error::NoResource(h.id.clone()))?,
            ),
        };
        let filters = h.filters.clone().unwrap_or_default();
        let options = h.options.clone().unwrap_or_default();
        let handler = Handler {
            id: h.id.clone(),
            kind,
            has_callback_filters: filters.has_callback_filters,
            filters: convert_filters(&h.id, filters)?,
            options: convert_options(&h.id, options)?,
        };
        match target {
            Target::Wide(selector) => out.wide.push(WideRegistration { selector, handler }),
            Target::Named(selector) => out.handlers.push(Registration { selector, handler }),
        }
    }
    Ok(out)
}

/// The validate/mutate handlers of a manifest, with their resources as named (the rest of the
/// manifest is [`handlers`]').
///
/// # Errors
/// The first handler that breaks the contract.
pub(crate) fn admission(
    manifest: &pb::Manifest,
) -> Result<Vec<(Selector, AdmissionHandler)>, AdmissionRegistrationError> {
    let mut out = Vec::new();
    for h in &manifest.handlers {
        let kind = match pb::HandlerKind::try_from(h.kind) {
            Ok(pb::HandlerKind::Validate) => WebhookKind::Validating,
            Ok(pb::HandlerKind::Mutate) => WebhookKind::Mutating,
            _ => continue,
        };
        let resource = selector(h.resource.as_ref())
            .ok_or_else(|| AdmissionRegistrationError::NoResource(h.id.clone()))?;
        let filters = h.filters.clone().unwrap_or_default();
        let options = h.options.clone().unwrap_or_default();
        let operations = options
            .operations
            .iter()
            .map(|o| {
                Operation::parse(&o.to_ascii_uppercase()).ok_or_else(|| {
                    AdmissionRegistrationError::Operation {
                        id: h.id.clone(),
                        operation: o.clone(),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = match options.call_timeout {
            Some(d) => duration("the webhook's timeout", d)?,
            None => MAX_TIMEOUT,
        };
        out.push((
            resource,
            AdmissionHandler {
                id: h.id.clone(),
                kind,
                has_callback_filters: filters.has_callback_filters,
                filters: convert_filters(&h.id, filters)?,
                operations,
                subresource: Subresource::parse(options.subresource.as_deref()),
                persistent: options.persistent,
                side_effects: options.side_effects,
                ignore_failures: options.ignore_failures,
                timeout: timeout.clamp(Duration::from_secs(1), MAX_TIMEOUT),
            },
        ));
    }
    Ok(out)
}

/// Validates a registration's shutdown hook.
fn hook(id: &str, h: &pb::ShutdownHook) -> Result<Hook, SyncRegistrationError> {
    let bad = |reason: &str| SyncRegistrationError::Hook {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    let endpoint = match (h.service.is_empty(), h.url_template.is_empty()) {
        (false, true) => hooks::Endpoint::Service {
            name: h.service.clone(),
            port: u16::try_from(h.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("a service needs a port from 1 to 65535"))?,
        },
        (true, false) if h.url_template.starts_with("http://") => {
            hooks::Endpoint::Template(h.url_template.clone())
        }
        (true, false) => return Err(bad("the url_template must start with http://")),
        _ => return Err(bad("name exactly one of service and url_template")),
    };
    let failure = match pb::ShutdownFailureStrategy::try_from(h.failure_strategy) {
        Ok(pb::ShutdownFailureStrategy::Unspecified | pb::ShutdownFailureStrategy::GiveUp) => {
            FailureStrategy::GiveUp
        }
        Ok(pb::ShutdownFailureStrategy::Delete) => FailureStrategy::Delete,
        Err(_) => {
            return Err(bad(&format!(
                "unknown failure strategy {}",
                h.failure_strategy
            )));
        }
    };
    let grace = h
        .grace_period
        .map(|d| duration("grace_period", d))
        .transpose()
        .map_err(|source| SyncRegistrationError::Duration {
            id: id.to_owned(),
            source,
        })?
        .filter(|d| !d.is_zero())
        .unwrap_or(crate::core::shutdown::DEFAULT_GRACE);
    Ok(Hook {
        endpoint,
        grace,
        retries: h.retries,
        failure,
    })
}

/// The sync registrations of a manifest.
///
/// # Errors
/// The first contract violation.
pub(crate) fn syncs(m: &pb::Manifest) -> Result<Vec<SyncSpec>, SyncRegistrationError> {
    let mut out: Vec<SyncSpec> = Vec::new();
    for s in &m.syncs {
        if s.id.is_empty() {
            return Err(SyncRegistrationError::EmptyId);
        }
        if out.iter().any(|o| o.id == s.id) {
            return Err(SyncRegistrationError::DuplicateId(s.id.clone()));
        }
        let parent = selector(s.parent.as_ref())
            .ok_or_else(|| SyncRegistrationError::NoResource(s.id.clone()))?;
        let mut children = Vec::new();
        for c in &s.children {
            let sel = selector(c.resource.as_ref())
                .ok_or_else(|| SyncRegistrationError::NoResource(s.id.clone()))?;
            let strategy = match pb::UpdateStrategy::try_from(c.update_strategy) {
                Ok(pb::UpdateStrategy::Unspecified | pb::UpdateStrategy::OnDelete) => {
                    Strategy::OnDelete
                }
                Ok(pb::UpdateStrategy::Recreate) => Strategy::Recreate,
                Ok(pb::UpdateStrategy::InPlace) => Strategy::InPlace,
                Ok(pb::UpdateStrategy::RollingRecreate) => Strategy::RollingRecreate,
                Ok(pb::UpdateStrategy::RollingInPlace) => Strategy::RollingInPlace,
                Err(_) => {
                    return Err(SyncRegistrationError::Strategy {
                        id: s.id.clone(),
                        value: c.update_strategy,
                    });
                }
            };
            children.push((sel, strategy));
        }
        let duration = |d: Option<prost_types::Duration>, what: &str| {
            d.map(|d| duration(what, d)).transpose().map_err(|source| {
                SyncRegistrationError::Duration {
                    id: s.id.clone(),
                    source,
                }
            })
        };
        let shutdown = s
            .shutdown_hook
            .as_ref()
            .map(|h| hook(&s.id, h))
            .transpose()?;
        out.push(SyncSpec {
            id: s.id.clone(),
            parent,
            children,
            resync: duration(s.resync_period, "resync_period")?.filter(|d| !d.is_zero()),
            // A hook needs the parent to stay until the application has stopped.
            finalize: s.finalize || shutdown.is_some(),
            call_timeout: duration(s.call_timeout, "call_timeout")?.filter(|d| !d.is_zero()),
            shutdown,
        });
    }
    Ok(out)
}

/// The task registrations of a manifest.
///
/// # Errors
/// The first contract violation.
pub(crate) fn tasks(m: &pb::Manifest) -> Result<Vec<TaskSpec>, TaskRegistrationError> {
    let mut out: Vec<TaskSpec> = Vec::new();
    for t in &m.tasks {
        if t.id.is_empty() {
            return Err(TaskRegistrationError::EmptyId);
        }
        if out.iter().any(|o| o.id == t.id) {
            return Err(TaskRegistrationError::DuplicateId(t.id.clone()));
        }
        let (Some(task), Some(parent)) = (selector(t.task.as_ref()), selector(t.parent.as_ref()))
        else {
            return Err(TaskRegistrationError::NoResource(t.id.clone()));
        };
        if let Some(other) = out.iter().find(|o| o.task == task) {
            return Err(TaskRegistrationError::SameTaskResource(
                other.id.clone(),
                t.id.clone(),
            ));
        }
        if t.parent_field.trim().is_empty() {
            return Err(TaskRegistrationError::NoParentField(t.id.clone()));
        }
        let mode = match pb::TaskMode::try_from(t.mode) {
            Ok(pb::TaskMode::Unspecified | pb::TaskMode::Parallel) => Mode::Parallel,
            Ok(pb::TaskMode::Sequential) => Mode::Sequential,
            Err(_) => {
                return Err(TaskRegistrationError::Mode {
                    id: t.id.clone(),
                    value: t.mode,
                });
            }
        };
        let duration = |d: Option<prost_types::Duration>, what: &str| {
            d.map(|d| duration(what, d))
                .transpose()
                .map(|d| d.filter(|d| !d.is_zero()))
                .map_err(|source| TaskRegistrationError::Duration {
                    id: t.id.clone(),
                    source,
                })
        };
        out.push(TaskSpec {
            id: t.id.clone(),
            task,
            parent,
            parent_field: t.parent_field.trim().to_owned(),
            mode,
            priority: t.priority,
            retention: duration(t.retention, "retention")?,
            timeout: duration(t.timeout, "timeout")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
