//! `operon-website-example`: a minimal operator on the Rust SDK (`operon-handler`). A `Website`
//! (`websites.sdk.operon.dev`) owns a ConfigMap with its HTML and a Service on port 80, both
//! named after it, and gets `status.url` and `status.pages`; a create/update handler checks the
//! HTML and, for a page that contains "flaky", fails once to show the core's retries.
//! Run it with `--listen HOST:PORT` and point `operon run --handler http://HOST:PORT` at it.

use std::time::Duration;

use operon_handler::{
    Ctx, Desired, EventType, HandlerError, HandlerResult, Operator, SyncCtx, SyncOptions,
};
use serde::Deserialize;
use serde_json::json;

const WEBSITES: &str = "websites.sdk.operon.dev";

#[derive(Deserialize)]
struct Website {
    spec: WebsiteSpec,
}

#[derive(Deserialize)]
struct WebsiteSpec {
    html: String,
    #[serde(default)]
    replicas: i64,
}

/// Level-triggered: the desired children and the status, from the Website alone.
async fn sync_website(ctx: SyncCtx<Website>) -> Result<Desired, HandlerError> {
    let (name, spec) = (ctx.name().unwrap_or_default(), &ctx.parent().spec);
    let labels = json!({"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "website"});
    let url = format!(
        "http://{name}.{}.svc/",
        ctx.namespace().unwrap_or("default")
    );
    Ok(Desired::new()
        .child(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels}, "data": {"index.html": spec.html}}))
        .child(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
        .status(json!({"url": url, "pages": 1, "replicas": spec.replicas})))
}

/// On create and update: check the page. A "flaky" page fails on its first attempt; the core
/// retries it a second later, and the Event says which attempt succeeded.
async fn check_html(ctx: Ctx<Website>) -> HandlerResult {
    let html = &ctx.object().spec.html;
    if html.contains("flaky") && ctx.retry() == 0 {
        let delay = Duration::from_secs(1);
        return Err(HandlerError::temporary_after("the page is flaky", delay));
    }
    let message = format!("{} bytes on attempt {}", html.len(), ctx.retry() + 1);
    ctx.event(EventType::Normal, "HtmlChecked", &message);
    tracing::info!(%message, "Checked the page.");
    Ok(None)
}

#[tokio::main]
async fn main() -> Result<(), operon_handler::Error> {
    let children = SyncOptions::new().owns("v1/configmaps").owns("v1/services");
    Operator::new("website-operator")
        .on_create(WEBSITES, check_html)
        .on_update(WEBSITES, check_html)
        .sync_with(WEBSITES, children.id("websites"), sync_website)
        .serve_from_env()
        .await
}
