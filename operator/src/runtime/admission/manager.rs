//! The managed webhook configurations (Kopf's `configuration_manager`): the
//! ValidatingWebhookConfiguration and the MutatingWebhookConfiguration named by
//! `--admission-managed` are created if absent and kept saying what `core::admission::webhooks`
//! builds — checked at start and every [`RECHECK`], patched (`webhooks` as a whole) only when
//! they differ. On exit, only the persistent handlers' webhooks are left.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Route, resource_of};
use crate::core::admission::WebhookKind;
use crate::core::admission::webhooks::{self, ClientConfig};

/// How often the live configurations are compared with what they should say.
pub(crate) const RECHECK: Duration = Duration::from_secs(30);

/// The manager of the two configurations of one name.
#[derive(Clone)]
pub(crate) struct Manager {
    /// The API client.
    pub client: kube::Client,
    /// The configurations' name (Kopf's `settings.admission.managed`).
    pub name: String,
    /// How the API server reaches the webhooks.
    pub client_config: ClientConfig,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("name", &self.name)
            .field("client_config", &self.client_config)
            .finish_non_exhaustive()
    }
}

const KINDS: [WebhookKind; 2] = [WebhookKind::Validating, WebhookKind::Mutating];

impl Manager {
    fn api(&self, kind: WebhookKind) -> Api<DynamicObject> {
        let resource = match kind {
            WebhookKind::Validating => ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
            WebhookKind::Mutating => ApiResource::erase::<MutatingWebhookConfiguration>(&()),
        };
        Api::all_with(self.client.clone(), &resource)
    }

    fn desired(&self, routes: &[Route], kind: WebhookKind, persistent_only: bool) -> Vec<Value> {
        let handlers: Vec<_> = routes
            .iter()
            .flat_map(|r| {
                r.handlers
                    .iter()
                    .map(|b| (b.handler.clone(), vec![resource_of(&r.served)]))
            })
            .collect();
        webhooks::build(
            &handlers,
            kind,
            &self.name,
            &self.client_config,
            persistent_only,
        )
    }

    /// Makes the configuration of `kind` say `webhooks`: creates it if absent, patches it if it
    /// differs; returns whether it wrote.
    async fn reconcile(
        &self,
        kind: WebhookKind,
        webhooks: Vec<Value>,
    ) -> Result<bool, kube::Error> {
        let api = self.api(kind);
        let desired = json!({"webhooks": webhooks});
        match api.get_opt(&self.name).await? {
            None => {
                let object: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": webhooks::configuration_kind(kind),
                    "metadata": {"name": self.name},
                    "webhooks": desired["webhooks"],
                }))
                .map_err(kube::Error::SerdeError)?;
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => Ok(true),
                    // Created meanwhile (by another replica): patch it next time round.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(live) => {
                let live = serde_json::to_value(&live).map_err(kube::Error::SerdeError)?;
                let live_hooks =
                    json!({"webhooks": live.get("webhooks").cloned().unwrap_or(json!([]))});
                if webhooks::is_subset(&desired, &live_hooks) {
                    return Ok(false);
                }
                api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&desired))
                    .await?;
                Ok(true)
            }
        }
    }

    /// Reconciles both configurations now and every [`RECHECK`], until the task is aborted.
    pub(crate) async fn keep_up_to_date(&self, routes: &[Route]) {
        loop {
            for kind in KINDS {
                match self
                    .reconcile(kind, self.desired(routes, kind, false))
                    .await
                {
                    Ok(true) => {
                        tracing::info!(name = %self.name, kind = kind.as_str(), "Reconfigured the admission webhooks.")
                    }
                    Ok(false) => {}
                    Err(kube::Error::Api(e)) if e.code == 403 => {
                        tracing::error!(name = %self.name, kind = kind.as_str(), error = %e, "Not enough RBAC permissions to manage the webhook configuration (see `operon rbac --admission-managed`).");
                    }
                    Err(err) => {
                        tracing::warn!(name = %self.name, kind = kind.as_str(), error = %err, "Cannot update the webhook configuration; trying again later.");
                    }
                }
            }
            tokio::time::sleep(RECHECK).await;
        }
    }

    /// Leaves only the persistent handlers' webhooks (on exit), as Kopf does.
    pub(crate) async fn clean_up(&self, routes: &[Route]) {
        for kind in KINDS {
            let webhooks = self.desired(routes, kind, true);
            let patch = json!({"webhooks": webhooks});
            match self
                .api(kind)
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(name = %self.name, kind = kind.as_str(), "Cleaned up the admission webhooks.")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(err) => {
                    tracing::warn!(name = %self.name, kind = kind.as_str(), error = %err, "Cannot clean up the webhook configuration.")
                }
            }
        }
    }
}
