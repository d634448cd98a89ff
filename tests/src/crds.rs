//! Installing test CRDs: apply, wait until established and listable, once per process.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};

use crate::{GROUP, apply_yaml, wait_for};

/// A namespaced CRD `<kind in lower case>s.<group>`, served and stored as `v1`, with a free-form
/// `spec` and `status` and — when `status_subresource` — a status subresource.
pub fn crd_yaml(group: &str, kind: &str, status_subresource: bool) -> String {
    let singular = kind.to_lowercase();
    let subresources = if status_subresource {
        "\n    subresources: {status: {}}"
    } else {
        ""
    };
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {singular}s.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: {singular}s, singular: {singular}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true{subresources}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"
    )
}

/// The sync examples' parents: `Site` (`sites.e2e.operon.dev`, with a status subresource) and
/// `PlainSite` (`plainsites.e2e.operon.dev`, without one); for [`install_crds`].
pub static SITES: LazyLock<String> = LazyLock::new(|| {
    [
        crd_yaml(GROUP, "Site", true),
        crd_yaml(GROUP, "PlainSite", false),
    ]
    .join("---\n")
});

/// The tasks of the widgets: `WidgetTask` (`widgettasks.e2e.operon.dev`) and `WidgetUrgent`
/// (`widgeturgents.e2e.operon.dev`), both with a status subresource and `spec.parent` naming the
/// widget; for [`install_crds`].
pub static WIDGET_TASKS: LazyLock<String> = LazyLock::new(|| {
    [
        crd_yaml(GROUP, "WidgetTask", true),
        crd_yaml(GROUP, "WidgetUrgent", true),
    ]
    .join("---\n")
});

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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parsed(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_multiple::<Value>(yaml).expect("the CRDs are YAML")
    }

    #[test]
    fn sites_are_two_crds_one_with_a_status_subresource() {
        let docs = parsed(&SITES);
        let names: Vec<&Value> = docs.iter().map(|d| &d["metadata"]["name"]).collect();
        assert_eq!(names, ["sites.e2e.operon.dev", "plainsites.e2e.operon.dev"]);
        assert_eq!(
            docs[0]["spec"]["names"],
            json!({"plural": "sites", "singular": "site", "kind": "Site"})
        );
        let version = &docs[0]["spec"]["versions"][0];
        assert_eq!(version["subresources"], json!({"status": {}}));
        assert_eq!(
            version["schema"]["openAPIV3Schema"]["properties"]["spec"],
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        );
        assert!(docs[1]["spec"]["versions"][0].get("subresources").is_none());
        assert_eq!(docs[1]["spec"]["names"]["kind"], "PlainSite");
    }

    #[test]
    fn a_crd_names_its_group() {
        let docs = parsed(&crd_yaml("sdk.operon.dev", "GoTask", true));
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["metadata"]["name"], "gotasks.sdk.operon.dev");
        assert_eq!(docs[0]["spec"]["group"], "sdk.operon.dev");
        assert_eq!(docs[0]["spec"]["scope"], "Namespaced");
    }
}
