//! A fresh namespace per test.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use crate::plane;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `test` with an admin client and a fresh namespace named after `prefix`, then deletes the
/// namespace — also when the test panics, whose panic is then resumed.
///
/// # Panics
/// When the namespace cannot be created, or when `test` panics.
pub async fn with_temp_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let client = plane().await.client().await.expect("an admin client");
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"operon.dev/e2e": "true"}}
    }))
    .expect("a valid Namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));

    // Run the test as its own task so that a panic is caught and the namespace still goes.
    let outcome = tokio::spawn(test(client, name.clone())).await;

    if let Err(err) = namespaces.delete(&name, &DeleteParams::background()).await {
        eprintln!("warning: deleting namespace {name}: {err}");
    }
    if let Err(err) = outcome {
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("the test task was cancelled: {err}"),
        }
    }
}
