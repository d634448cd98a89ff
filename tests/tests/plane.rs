//! Smoke tests that prove the local control plane is a real Kubernetes: CRDs with a status
//! subresource, watches with ordered resourceVersions, finalizers, garbage collection, RBAC.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, ResourceExt};
use operon_e2e::{install_widget_crd, plane, wait_for, widget_resource, with_temp_ns};
use serde_json::json;

fn rv(object: &DynamicObject) -> u64 {
    object
        .resource_version()
        .expect("a resourceVersion")
        .parse()
        .expect("a numeric resourceVersion")
}

#[tokio::test]
async fn the_api_server_is_a_real_kubernetes_of_the_pinned_release() {
    let client = plane().await.client().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "33", "{version:?}");
    assert!(version.git_version.starts_with("v1.33."), "{version:?}");
}

#[tokio::test]
async fn custom_resources_are_created_patched_watched_and_deleted_in_order() {
    with_temp_ns("smoke-crud", |client, ns| async move {
        install_widget_crd(&client).await;
        let widgets: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &widget_resource());

        // Watch from "now" before anything exists, so every change is seen.
        let list = widgets.list(&Default::default()).await.unwrap();
        let start_rv = list.metadata.resource_version.unwrap();
        let mut stream = widgets
            .watch(&WatchParams::default().timeout(60), &start_rv)
            .await
            .unwrap()
            .boxed();

        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "e2e.operon.dev/v1", "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"replicas": 3}
        }))
        .unwrap();
        let created = widgets.create(&PostParams::default(), &obj).await.unwrap();
        assert_eq!(created.data["spec"]["replicas"], json!(3));
        assert_eq!(created.metadata.generation, Some(1));

        let patched = widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 5}})),
            )
            .await
            .unwrap();
        assert_eq!(patched.data["spec"]["replicas"], json!(5));
        assert_eq!(patched.metadata.generation, Some(2));

        // The status subresource: status goes through /status, and does not bump generation;
        // a status change through the main resource is ignored.
        let with_status = widgets
            .patch_status(
                "w1",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Ready"}})),
            )
            .await
            .unwrap();
        assert_eq!(with_status.data["status"]["phase"], json!("Ready"));
        assert_eq!(with_status.metadata.generation, Some(2));
        let ignored = widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Hacked"}})),
            )
            .await
            .unwrap();
        assert_eq!(ignored.data["status"]["phase"], json!("Ready"));

        widgets
            .delete("w1", &DeleteParams::default())
            .await
            .unwrap();

        // ADDED, then MODIFIED (spec, status), then DELETED, with increasing resourceVersions.
        let mut seen = Vec::new();
        while let Some(event) = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
            .await
            .expect("watch events within 30 s")
            .unwrap()
        {
            let (kind, object) = match event {
                WatchEvent::Added(o) => ("ADDED", o),
                WatchEvent::Modified(o) => ("MODIFIED", o),
                WatchEvent::Deleted(o) => ("DELETED", o),
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Error(err) => panic!("watch error: {err:?}"),
            };
            seen.push((kind, rv(&object)));
            if kind == "DELETED" {
                break;
            }
        }
        let kinds: Vec<_> = seen.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            ["ADDED", "MODIFIED", "MODIFIED", "DELETED"],
            "{seen:?}"
        );
        assert!(
            seen.windows(2).all(|w| w[0].1 < w[1].1),
            "resourceVersions must increase: {seen:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_finalizer_holds_deletion_until_it_is_removed() {
    with_temp_ns("smoke-finalizer", |client, ns| async move {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "held", "finalizers": ["operon.dev/test-hold"]}
        }))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
        cms.delete("held", &DeleteParams::default()).await.unwrap();

        // Still there, marked for deletion, for as long as the finalizer stays.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = cms.get("held").await.expect("the object must still exist");
        assert!(held.metadata.deletion_timestamp.is_some());

        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": held.resource_version()},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ])).unwrap()),
        )
        .await
        .unwrap();
        wait_for("the finalized object to be gone", Duration::from_secs(30), || async {
            Ok::<_, kube::Error>(cms.get_opt("held").await?.is_none().then_some(()))
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn children_are_garbage_collected_after_their_owner_is_deleted() {
    with_temp_ns("smoke-gc", |client, ns| async move {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let parent: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "parent"}})).unwrap();
        let parent = cms.create(&PostParams::default(), &parent).await.unwrap();
        let child: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "child", "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "parent",
                "uid": parent.uid().unwrap()
            }]}
        }))
        .unwrap();
        cms.create(&PostParams::default(), &child).await.unwrap();

        cms.delete("parent", &DeleteParams::background())
            .await
            .unwrap();
        // Only kube-controller-manager's garbage collector deletes the child.
        wait_for(
            "the child to be garbage-collected",
            Duration::from_secs(90),
            || async { Ok::<_, kube::Error>(cms.get_opt("child").await?.is_none().then_some(())) },
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn rbac_refuses_the_non_admin_credential() {
    with_temp_ns("smoke-rbac", |_client, ns| async move {
        let user = plane().await.user_client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(user, &ns);
        match cms.list(&Default::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{status:?}");
                assert!(status.message.contains("operon-user"), "{status:?}");
            }
            other => panic!("expected 403 Forbidden for the non-admin user, got {other:?}"),
        }
    })
    .await;
}
