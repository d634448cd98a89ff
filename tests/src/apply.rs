//! Applying and deleting YAML manifests, as `kubectl apply -f` does (server-side apply).

use anyhow::{Context, bail};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

const FIELD_MANAGER: &str = "operon-e2e";

/// Applies every document of `yaml` with server-side apply (field manager `operon-e2e`, forced).
/// Namespaced objects without a namespace go to `namespace`. Returns the applied objects.
///
/// # Errors
/// When a document is not a Kubernetes object, its type is unknown to the API server, or the API
/// server refuses it.
pub async fn apply_yaml(
    client: &Client,
    namespace: &str,
    yaml: &str,
) -> anyhow::Result<Vec<DynamicObject>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut applied = Vec::new();
    for object in documents(yaml)? {
        let (api, name) = api_for(client, &discovery, namespace, &object)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = api
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {} {name}", kind_of(&object)))?;
        applied.push(result);
    }
    Ok(applied)
}

/// Deletes every object named in `yaml`; objects that are already gone are fine.
///
/// # Errors
/// As [`apply_yaml`], for any other failure than NotFound.
pub async fn delete_yaml(client: &Client, namespace: &str, yaml: &str) -> anyhow::Result<()> {
    let discovery = Discovery::new(client.clone()).run().await?;
    for object in documents(yaml)? {
        let (api, name) = api_for(client, &discovery, namespace, &object)?;
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err).with_context(|| format!("deleting {name}")),
        }
    }
    Ok(())
}

fn documents(yaml: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let mut objects = Vec::new();
    for doc in serde_saphyr::from_multiple::<serde_json::Value>(yaml)? {
        if doc.is_null() {
            continue;
        }
        let object = DynamicObject::deserialize(&doc)
            .with_context(|| format!("not a Kubernetes object: {doc}"))?;
        if object.types.is_none() {
            bail!("a document has no apiVersion/kind: {doc}");
        }
        objects.push(object);
    }
    Ok(objects)
}

fn kind_of(object: &DynamicObject) -> String {
    object
        .types
        .as_ref()
        .map(|t| format!("{}/{}", t.api_version, t.kind))
        .unwrap_or_default()
}

fn api_for(
    client: &Client,
    discovery: &Discovery,
    namespace: &str,
    object: &DynamicObject,
) -> anyhow::Result<(Api<DynamicObject>, String)> {
    let types = object.types.as_ref().context("no apiVersion/kind")?;
    let (group, version) = match types.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", types.api_version.as_str()),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
    let (resource, caps) = discovery
        .resolve_gvk(&gvk)
        .with_context(|| format!("the API server does not serve {}", kind_of(object)))?;
    let api = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object.namespace().as_deref().unwrap_or(namespace),
            &resource,
        ),
    };
    Ok((api, object.name_any()))
}
