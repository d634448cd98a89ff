//! The test resource `widgets.e2e.operon.dev` (namespaced, status subresource, free-form spec
//! and status), and namespaces to put widgets in.
//!
//! [`with_widget_ns`] is [`with_temp_ns`] plus: the CRD is installed (once per process), the
//! plane is locked shared ([`PlaneLock`]), and afterwards every widget's finalizers are removed
//! so that a failed test cannot leave the namespace stuck in `Terminating`.

use std::future::Future;
use std::sync::LazyLock;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::PlaneLock;
use crate::{crd_yaml, install_crds, with_temp_ns};

/// The API group of the test resource.
pub const GROUP: &str = "e2e.operon.dev";
/// Its version.
pub const VERSION: &str = "v1";
/// Its kind.
pub const KIND: &str = "Widget";
/// Its plural.
pub const PLURAL: &str = "widgets";
/// The resource as the example handler's `--resource` takes it.
pub const RESOURCE_ARG: &str = "e2e.operon.dev/v1/widgets";

/// The CRD (see [`crd_yaml`]).
pub static CRD_YAML: LazyLock<String> = LazyLock::new(|| crd_yaml(GROUP, KIND, true));

/// The resource for dynamic APIs.
pub fn widget_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, KIND))
}

/// The widgets of namespace `ns`.
pub fn widgets(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &widget_resource())
}

/// A widget named `name` with `spec`; add metadata with [`WidgetExt`].
pub fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a valid Widget")
}

/// Builder-style metadata for widgets.
pub trait WidgetExt {
    /// With these labels.
    fn with_labels(self, labels: &[(&str, &str)]) -> Self;
    /// With these annotations.
    fn with_annotations(self, annotations: &[(&str, &str)]) -> Self;
    /// With these finalizers.
    fn with_finalizers(self, finalizers: &[&str]) -> Self;
}

impl WidgetExt for DynamicObject {
    fn with_labels(mut self, labels: &[(&str, &str)]) -> Self {
        let map = self.metadata.labels.get_or_insert_with(Default::default);
        map.extend(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self
    }
    fn with_annotations(mut self, annotations: &[(&str, &str)]) -> Self {
        let map = self
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        map.extend(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self
    }
    fn with_finalizers(mut self, finalizers: &[&str]) -> Self {
        let list = self
            .metadata
            .finalizers
            .get_or_insert_with(Default::default);
        list.extend(finalizers.iter().map(|f| (*f).to_owned()));
        self
    }
}

/// Installs the Widget CRD (server-side apply: idempotent, once per process) and waits until
/// widgets can be listed.
///
/// # Panics
/// When the CRD cannot be applied or is not served within 60 s.
pub async fn install_widget_crd(client: &Client) {
    install_crds(client, &CRD_YAML).await;
}

/// Removes the finalizers of every widget in `ns` (best effort), so that the namespace can go.
pub async fn release_finalizers(client: &Client, ns: &str) {
    let api = widgets(client, ns);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return;
    };
    for object in list {
        if object.finalizers().is_empty() {
            continue;
        }
        let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        if let Err(err) = api
            .patch(&object.name_any(), &PatchParams::default(), &patch)
            .await
        {
            eprintln!(
                "warning: releasing the finalizers of {ns}/{}: {err}",
                object.name_any()
            );
        }
    }
}

/// Runs `test` in a fresh namespace (see [`with_temp_ns`]) with the Widget CRD installed,
/// holding the plane lock shared; afterwards (also on failure) strips the widgets' finalizers.
///
/// # Panics
/// When `test` panics (the panic is resumed after the clean-up).
pub async fn with_widget_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _lock = PlaneLock::shared().await;
    run_in_widget_ns(prefix, test).await;
}

/// As [`with_widget_ns`], holding the plane lock exclusively: for tests that stop or restart
/// plane components, which must not run while other tests use the plane.
///
/// # Panics
/// When `test` panics (the panic is resumed after the clean-up).
pub async fn with_widget_ns_exclusive<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _lock = PlaneLock::exclusive().await;
    run_in_widget_ns(prefix, test).await;
}

async fn run_in_widget_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_temp_ns(prefix, |client, ns| async move {
        install_widget_crd(&client).await;
        let outcome = tokio::spawn(test(client.clone(), ns.clone())).await;
        release_finalizers(&client, &ns).await;
        if let Err(err) = outcome {
            match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(err) => panic!("the test task was cancelled: {err}"),
            }
        }
    })
    .await;
}
