//! Installing test CRDs: apply, wait until established and listable, once per process.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};

use crate::{apply_yaml, wait_for};

/// The sync examples' parents: `Site` (`sites.e2e.operon.dev`, with a status subresource) and
/// `PlainSite` (`plainsites.e2e.operon.dev`, without one); for [`install_crds`].
pub const SITES: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: sites.e2e.operon.dev
spec:
  group: e2e.operon.dev
  scope: Namespaced
  names: {plural: sites, singular: site, kind: Site}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: plainsites.e2e.operon.dev
spec:
  group: e2e.operon.dev
  scope: Namespaced
  names: {plural: plainsites, singular: plainsite, kind: PlainSite}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// The tasks of the widgets: `WidgetTask` (`widgettasks.e2e.operon.dev`) and `WidgetUrgent`
/// (`widgeturgents.e2e.operon.dev`), both with a status subresource and `spec.parent` naming the
/// widget; for [`install_crds`].
pub const WIDGET_TASKS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgettasks.e2e.operon.dev
spec:
  group: e2e.operon.dev
  scope: Namespaced
  names: {plural: widgettasks, singular: widgettask, kind: WidgetTask}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgeturgents.e2e.operon.dev
spec:
  group: e2e.operon.dev
  scope: Namespaced
  names: {plural: widgeturgents, singular: widgeturgent, kind: WidgetUrgent}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

static INSTALLED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Applies the CRDs in `yaml` (server-side apply, idempotent) and waits until each is
/// established and its objects can be listed. The same `yaml` is applied once per process.
///
/// # Panics
/// When a CRD cannot be applied, or is not served within 60 s.
pub async fn install_crds(client: &Client, yaml: &str) {
    let known = INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashSet::new)
        .contains(yaml);
    if known {
        return;
    }
    let applied = apply_yaml(client, "default", yaml)
        .await
        .expect("applying the CRDs");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in applied {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let crd = wait_for(
            &format!("the CRD {name} to be established"),
            Duration::from_secs(60),
            || async {
                let crd = crds.get(&name).await?;
                let established = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                Ok::<_, kube::Error>(established.then_some(crd))
            },
        )
        .await;
        let Some(version) = crd.spec.versions.iter().find(|v| v.served) else {
            continue;
        };
        let gvk = GroupVersionKind::gvk(&crd.spec.group, &version.name, &crd.spec.names.kind);
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
        wait_for(
            &format!("{} to be listable", crd.spec.names.plural),
            Duration::from_secs(60),
            || async {
                all.list(&ListParams::default().limit(1))
                    .await
                    .map(|_| Some(()))
            },
        )
        .await;
    }
    INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashSet::new)
        .insert(yaml.to_owned());
}
