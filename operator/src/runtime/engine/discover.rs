//! The start of a generation: the services and their ports, their manifests, and the resources
//! their registrations name, resolved through discovery (and merged: one resource named by
//! several selectors is served once).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::core::backoff::Backoff;
use crate::core::model::{Handler, HandlerKind};
use crate::core::registry::{self, Merged, Registry, RegistryError};
use crate::runtime::context::{Bound, ResourceCtx};
use crate::runtime::discovery::Served;
use crate::runtime::grpc::{ClientTls, GrpcService};
use crate::runtime::kit;
use crate::runtime::ports::{HandlerPort, Manifest, SyncPort, TaskPort, WideRegistration};
use crate::runtime::selecting::{self, ResourceKey};
use crate::runtime::serving::Shared;

/// The handler services of a generation, each with its three ports, by index.
pub(super) struct Services {
    /// Handlers, admission, login, the outbox.
    pub(super) handlers: Vec<Arc<dyn HandlerPort>>,
    /// Sync handlers.
    pub(super) syncs: Vec<Arc<dyn SyncPort>>,
    /// Tasks.
    pub(super) tasks: Vec<Arc<dyn TaskPort>>,
}

impl Services {
    /// The services at `urls` (nothing is called yet).
    pub(super) fn connect(
        urls: &[String],
        tls: Option<&ClientTls>,
    ) -> Result<Self, crate::runtime::ports::Error> {
        let mut services = Services {
            handlers: Vec::new(),
            syncs: Vec::new(),
            tasks: Vec::new(),
        };
        for url in urls {
            let service = GrpcService::with_tls(url, tls)?;
            services.syncs.push(Arc::new(service.sync_port()));
            services.tasks.push(Arc::new(service.task_port()));
            services.handlers.push(Arc::new(service));
        }
        Ok(services)
    }

    /// The services' names by index.
    pub(super) fn names(&self) -> Vec<&str> {
        self.handlers.iter().map(|s| s.name()).collect()
    }
}

/// Describes every service, each retried with backoff until it answers.
pub(super) async fn describe_all(services: &[Arc<dyn HandlerPort>]) -> Vec<Manifest> {
    let mut manifests = Vec::new();
    for service in services {
        let manifest = kit::describe_until_answered(service.as_ref()).await;
        tracing::info!(service = service.name(), name = %manifest.service_name, handlers = manifest.declared, "Handler service described.");
        manifests.push(manifest);
    }
    manifests
}

/// What a generation serves, resolved.
pub(super) struct Resolved {
    /// The resources of change handlers (named and wide selectors), each with its handlers.
    pub(super) resources: Vec<Arc<ResourceCtx>>,
    /// What the wide selectors match, to notice changes (none without wide selectors).
    pub(super) tracker: Option<selecting::Tracker>,
    /// Per sync registration: the parents' resource and each child type's.
    pub(super) syncs: Vec<(Served, Vec<Served>)>,
    /// Per task registration: the task resource and the parents'.
    pub(super) tasks: Vec<(Served, Served)>,
}

/// Resolves every resource the registry names, each with backoff until it is served (a CRD may
/// be installed after the core starts), and merges the handlers of one resource.
///
/// # Errors
/// A handler id of two services on one resource.
pub(super) async fn resolve(
    client: &kube::Client,
    registry: &Registry,
    services: &Services,
) -> Result<Resolved, RegistryError> {
    let names = services.names();
    let mut merged: Merged<ResourceKey, Served> = Merged::default();
    for (selector, regs) in &registry.by_selector {
        let served = kit::resolve_until_found(client, selector).await;
        let regs = regs.iter().map(|(r, i)| (r.handler.clone(), *i));
        let name = served.name();
        let once = merged.add(selecting::key_of(&served), served, &name, regs, &names)?;
        served_once(&once, &name, &selector.to_string());
    }
    let named: BTreeSet<ResourceKey> = merged.resources.iter().map(|(k, _, _)| k.clone()).collect();
    let mut tracker = None;
    if !registry.wide.is_empty() {
        // Selectors that name no single resource (EVERYTHING, categories, callables): every
        // resource that discovery finds matching, merged with the named ones.
        let (found, _) = matches_until_scanned(client, &services.handlers, &registry.wide).await;
        tracker = Some(selecting::Tracker::new(named, &found));
        for (served, regs) in found {
            let regs = regs.into_iter().map(|(r, i)| (r.handler, i));
            let name = served.name();
            let once = merged.add(selecting::key_of(&served), served, &name, regs, &names)?;
            served_once(&once, &name, "a wide selector");
        }
    }
    let mut resources = Vec::new();
    for (_, served, regs) in merged.resources {
        tracing::info!(resource = %served.name(), namespaced = served.namespaced, status_subresource = served.has_status, "Serving the resource.");
        resources.push(Arc::new(resource_ctx(served, &regs, &services.handlers)));
    }
    let mut syncs = Vec::new();
    for (spec, _) in &registry.syncs {
        let parent = kit::resolve_until_found(client, &spec.parent).await;
        let mut children = Vec::new();
        for (selector, _) in &spec.children {
            children.push(kit::resolve_until_found(client, selector).await);
        }
        syncs.push((parent, children));
    }
    let mut tasks = Vec::new();
    for (spec, _) in &registry.tasks {
        tasks.push((
            kit::resolve_until_found(client, &spec.task).await,
            kit::resolve_until_found(client, &spec.parent).await,
        ));
    }
    Ok(Resolved {
        resources,
        tracker,
        syncs,
        tasks,
    })
}

/// Says which handlers were reached through more than one selector (served once).
pub(super) fn served_once(ids: &[String], resource: &str, selector: &str) {
    for id in ids {
        tracing::debug!(handler = %id, resource = %resource, selector = %selector, "The handler is registered for this resource under another selector too; serving it once.");
    }
}

/// What the wide selectors match, retried with backoff until discovery answers.
pub(super) async fn matches_until_scanned(
    client: &kube::Client,
    services: &[Arc<dyn HandlerPort>],
    wide: &[(WideRegistration, usize)],
) -> (selecting::Matches, BTreeSet<ResourceKey>) {
    kit::until_ok(
        Backoff::DISCOVERY,
        "Cannot discover the API resources yet.",
        "wide selectors",
        || selecting::matches(client, services, wide),
    )
    .await
}

/// A resource with the handlers bound to their services.
pub(super) fn resource_ctx(
    served: Served,
    regs: &[(Handler, usize)],
    services: &[Arc<dyn HandlerPort>],
) -> ResourceCtx {
    let (indexers, handlers): (Vec<Bound>, Vec<Bound>) = regs
        .iter()
        .map(|(handler, i)| Bound {
            handler: handler.clone(),
            service: Arc::clone(&services[*i]),
        })
        .partition(|b| b.handler.kind == HandlerKind::Index);
    let mut extra_fields: Vec<Vec<String>> = handlers
        .iter()
        .filter_map(|b| b.handler.filters.field.clone())
        .collect();
    extra_fields.sort();
    extra_fields.dedup();
    ResourceCtx {
        served,
        handlers,
        indexers,
        extra_fields,
    }
}

/// A newly discovered resource (a CRD installed while serving) with the wide handlers that match
/// it.
///
/// # Errors
/// A handler id of two services.
pub(super) fn newly_discovered(
    served: Served,
    regs: Vec<(WideRegistration, usize)>,
    services: &Services,
) -> Result<ResourceCtx, RegistryError> {
    let mut list = Vec::new();
    let regs = regs.into_iter().map(|(r, i)| (r.handler, i));
    let once = registry::merge_handlers(&served.name(), &mut list, regs, &services.names())?;
    served_once(&once, &served.name(), "a wide selector");
    Ok(resource_ctx(served, &list, &services.handlers))
}

/// Re-describes the services now and then; returns the name of one whose manifest changed.
pub(super) async fn watch_manifests(
    shared: Arc<Shared>,
    services: Vec<Arc<dyn HandlerPort>>,
    manifests: Vec<Manifest>,
) -> String {
    loop {
        tokio::time::sleep(Duration::from_secs(15)).await;
        for (i, (service, known)) in services.iter().zip(&manifests).enumerate() {
            let answer = service.describe().await;
            shared.set_about(|about| {
                if let Some(view) = about.services.get_mut(i) {
                    view.answering = answer.is_ok();
                    view.last_error = answer.as_ref().err().map(ToString::to_string);
                }
            });
            if let Ok(current) = answer
                && &current != known
            {
                tracing::warn!(
                    service = service.name(),
                    "The handler service now describes different handlers."
                );
                return service.name().to_owned();
            }
        }
    }
}
