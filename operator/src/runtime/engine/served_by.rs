//! `operon rbac --handler`: the resources that handler services use, each with what the core
//! does with it, resolved as [`super::run`] resolves them — without waiting.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::Error;
use super::discover::Services;
use crate::core::registry;
use crate::rbac::Access;
use crate::runtime::discovery::{self, Served};
use crate::runtime::grpc::ClientTls;
use crate::runtime::selecting;

/// The resources that the handler services at `urls` use — served by change handlers, sync
/// parents and children, tasks and their parents — each with what the core does with it,
/// resolved through discovery as [`super::run`] resolves them (for `operon rbac --handler`).
/// Unlike [`super::run`], it does not wait: a service that does not answer or a resource that is
/// not found is an error.
///
/// # Errors
/// Configuration, an unanswered `Describe`, an invalid manifest, a resource not found.
pub(crate) async fn served_by(
    urls: &[String],
    tls: Option<&ClientTls>,
) -> Result<Vec<(Served, Access)>, ServedByError> {
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| ServedByError::Engine(Error::KubeConfig(e)))?;
    let client = kube::Client::try_from(crate::runtime::kit::client_config(kube_config))
        .map_err(|e| ServedByError::Engine(Error::Kube(e)))?;
    let services = Services::connect(urls, tls).map_err(Error::from)?;
    let mut manifests = Vec::new();
    for service in &services.handlers {
        manifests.push(service.describe().await.map_err(Error::from)?);
    }
    let registry = registry::collect(&manifests, &services.names(), true).map_err(Error::from)?;
    let mut selectors = BTreeSet::new();
    selectors.extend(
        registry
            .by_selector
            .keys()
            .map(|s| (s.clone(), Access::Served)),
    );
    for (spec, _) in &registry.syncs {
        selectors.insert((spec.parent.clone(), Access::Served));
        selectors.extend(
            spec.children
                .iter()
                .map(|(c, _)| (c.clone(), Access::Child)),
        );
    }
    for (spec, _) in &registry.tasks {
        selectors.insert((spec.task.clone(), Access::Task));
        selectors.insert((spec.parent.clone(), Access::TaskParent));
    }
    let mut served = Vec::new();
    for (selector, access) in &selectors {
        served.push((discovery::resolve(&client, selector).await?, *access));
    }
    // What the wide selectors (EVERYTHING, categories, callables) match now; resources that
    // appear later need the rules to be generated again.
    if !registry.wide.is_empty() {
        let handlers: Vec<Arc<dyn crate::runtime::ports::HandlerPort>> = services.handlers.clone();
        for (s, _) in selecting::matches(&client, &handlers, &registry.wide)
            .await?
            .0
        {
            let key = selecting::key_of(&s);
            if !served.iter().any(|(t, _)| selecting::key_of(t) == key) {
                served.push((s, Access::Served));
            }
        }
    }
    Ok(served)
}

/// Why [`served_by`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServedByError {
    /// As the engine fails.
    #[error(transparent)]
    Engine(#[from] Error),
    /// Discovery failed or found nothing.
    #[error(transparent)]
    Discovery(#[from] discovery::Error),
}
