//! End-to-end tests of level-triggered sync handlers with children (issue 5), on the real plane,
//! each run against both example handler services: Rust (`proto/examples/rust-sync`) and Go
//! (`proto/examples/go`, built by `proto/examples/go/build.sh`).
//!
//! The example operator: a `Site` (`sites.e2e.operon.dev`, status subresource) owns a ConfigMap
//! and a Service named `<prefix>-<entry>` per entry of `spec.entries`; `PlainSite`
//! (`plainsites.e2e.operon.dev`) is the same without a status subresource. Each test gets a fresh
//! namespace, its own handler service and its own core (`operon run -n <ns>`), and asserts on
//! what an outsider sees: the children, the parent's status, Events, the audit log of the API
//! server, the core's `/metrics` and `/api/v1/objects`, and the handler's ledger.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client, ResourceExt};
use operon_e2e::cluster::{PlaneLock, cluster_dir};
use operon_e2e::{
    CoreProcess, Entries, HandlerProcess, Metrics, SITES, http_get, install_crds, plane, wait_for,
    with_temp_ns,
};
use serde_json::{Value, json};

const CONVERGED: Duration = Duration::from_secs(90);

/// The finalizer the core holds for the example's registration `sites`.
const FINALIZER: &str = "kopf.zalando.org/sync-sites";

/// Which example handler service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Go,
}

/// Builds (once per process, cached by cargo and by the Go script) and returns the binary.
async fn example_binary(lang: Lang) -> PathBuf {
    match lang {
        Lang::Rust => operon_e2e::binaries().await.sync_example.clone(),
        Lang::Go => operon_e2e::go_example().await.to_owned(),
    }
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("e2e.operon.dev", "v1", kind))
}

/// Strips every finalizer in `ns` that a failed test may leave (parents and held Services).
async fn release(client: &Client, ns: &str) {
    let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    for kind in ["Site", "PlainSite"] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(kind));
        for o in api.list(&ListParams::default()).await.into_iter().flatten() {
            if !o.finalizers().is_empty() {
                let _ = api
                    .patch(&o.name_any(), &PatchParams::default(), &strip)
                    .await;
            }
        }
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for o in services
        .list(&ListParams::default())
        .await
        .into_iter()
        .flatten()
    {
        if !o.finalizers().is_empty() {
            let _ = services
                .patch(&o.name_any(), &PatchParams::default(), &strip)
                .await;
        }
    }
}

/// A fresh namespace with the CRDs, the plane lock shared; finalizers released afterwards.
async fn with_sites_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let _lock = PlaneLock::shared().await;
    with_temp_ns(prefix, |client, ns| async move {
        install_crds(&client, &SITES).await;
        let outcome = tokio::spawn(test(client.clone(), ns.clone())).await;
        release(&client, &ns).await;
        if let Err(err) = outcome {
            std::panic::resume_unwind(err.into_panic());
        }
    })
    .await;
}

/// One example handler service and one core serving one namespace.
struct SyncStack {
    handler: HandlerProcess,
    core: CoreProcess,
    client: Client,
    ns: String,
    api: Api<DynamicObject>,
}

impl SyncStack {
    async fn start(lang: Lang, client: &Client, ns: &str, args: &[&str]) -> Self {
        let binary = example_binary(lang).await;
        let name = format!("sync-{lang:?}").to_lowercase();
        let handler = HandlerProcess::start_binary(&binary, &name, args)
            .await
            .unwrap_or_else(|err| panic!("starting the {lang:?} example: {err:#}"));
        operon_e2e::binaries().await;
        let core_args = vec![
            "--handler".to_owned(),
            handler.url(),
            "-n".to_owned(),
            ns.to_owned(),
        ];
        let kubeconfig = plane().await.kubeconfig.clone();
        let mut core = CoreProcess::start(&name, &core_args, &kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("starting the core: {err:#}"));
        core.wait_ready(Duration::from_secs(60)).await;
        let kind = if args.contains(&"e2e.operon.dev/v1/plainsites") {
            "PlainSite"
        } else {
            "Site"
        };
        Self {
            handler,
            core,
            client: client.clone(),
            ns: ns.to_owned(),
            api: Api::namespaced_with(client.clone(), ns, &resource(kind)),
        }
    }

    /// The parent's page on the core's dashboard.
    async fn parent_page(&self, name: &str) -> String {
        let plural = if self.api.resource_url().contains("plainsites") {
            "plainsites"
        } else {
            "sites"
        };
        let path = format!("/objects/{plural}.e2e.operon.dev/v1/{}/{name}", self.ns);
        let page = http_get(self.core.http_addr(), &path)
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err:#}"));
        assert_eq!(page.status, 200, "GET {path}: {}", page.text());
        page.text()
    }

    fn ledger(&self) -> Entries {
        self.handler.ledger().entries()
    }

    async fn create(&self, name: &str, spec: Value) -> DynamicObject {
        let kind = self.api.resource_url().contains("plainsites");
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "e2e.operon.dev/v1",
            "kind": if kind { "PlainSite" } else { "Site" },
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("a valid Site");
        self.api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|err| panic!("creating {name}: {err}"))
    }

    async fn patch_spec(&self, name: &str, spec: Value) -> DynamicObject {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap_or_else(|err| panic!("patching {name}: {err}"))
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until `check` holds for the parent `name`; panics with the parent and the logs.
    async fn wait_parent(
        &mut self,
        name: &str,
        what: &str,
        check: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        let deadline = tokio::time::Instant::now() + CONVERGED;
        loop {
            self.core.assert_running();
            let last = self.api.get_opt(name).await;
            if let Ok(Some(o)) = &last
                && check(o)
            {
                return o.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {}/{name}: {what}\nlast seen: {last:?}\nledger:\n{}\ncore log:\n{}",
                    self.ns,
                    self.ledger(),
                    self.core.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the parent's status reports its current generation and `n` current children.
    async fn wait_converged(&mut self, name: &str, children: i64) -> DynamicObject {
        self.wait_parent(name, &format!("converged with {children} children"), |o| {
            let s = &o.data["status"];
            s["observedGeneration"].as_i64() == o.metadata.generation
                && s["desiredChildren"].as_i64() == Some(children)
                && s["currentChildren"].as_i64() == Some(children)
        })
        .await
    }

    async fn metrics(&self) -> Metrics {
        let text = self
            .core
            .get("/metrics")
            .await
            .expect("GET /metrics")
            .text();
        Metrics::parse(&text)
    }

    async fn events_about(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect()
    }

    /// Waits until a Warning Event about `name` contains `text`.
    async fn wait_warning(&self, name: &str, text: &str) -> Event {
        wait_for(
            &format!("a Warning Event about {name} containing {text:?}"),
            CONVERGED,
            || async {
                let found = self.events_about(name).await.into_iter().find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.message.as_deref().unwrap_or_default().contains(text)
                });
                Ok::<_, kube::Error>(found)
            },
        )
        .await
    }
}

fn uid_of<K: kube::Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap_or_default()
}

fn entries(list: &[(&str, i64, &str)]) -> Value {
    Value::Array(
        list.iter()
            .map(
                |(name, port, value)| json!({"name": name, "port": port, "data": {"value": value}}),
            )
            .collect(),
    )
}

fn controller_uid<K: kube::Resource>(o: &K) -> Option<String> {
    o.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

// ---------------------------------------------------------------------------------------------
// Scenarios, each run for both languages.

/// Children are created with ownerReferences, the status carries observedGeneration, a child
/// missing from the response is deleted, and the parent shows up in the read model.
async fn children_and_status(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(lang, &client, &ns, &[]).await;
    let parent = stack
        .create(
            "site",
            json!({"entries": entries(&[("a", 80, "1"), ("b", 81, "2")])}),
        )
        .await;
    let converged = stack.wait_converged("site", 4).await;
    assert_eq!(
        converged.data["status"]["observedGeneration"].as_i64(),
        parent.metadata.generation
    );
    for child in ["site-a", "site-b"] {
        let cm = stack.configmaps().get(child).await.expect("the ConfigMap");
        assert_eq!(controller_uid(&cm), Some(uid_of(&parent)), "{cm:?}");
        let svc = stack.services().get(child).await.expect("the Service");
        assert_eq!(controller_uid(&svc), Some(uid_of(&parent)), "{svc:?}");
        assert!(
            svc.metadata
                .managed_fields
                .iter()
                .flatten()
                .any(|m| m.manager.as_deref() == Some("operon")
                    && m.operation.as_deref() == Some("Apply")),
            "applied by Operon's field manager: {:?}",
            svc.metadata.managed_fields
        );
    }
    let cm = stack.configmaps().get("site-b").await.unwrap();
    assert_eq!(cm.data.unwrap()["port"], "81");

    // Drop entry b: its children go, a's stay.
    stack
        .patch_spec("site", json!({"entries": entries(&[("a", 80, "1")])}))
        .await;
    stack.wait_converged("site", 2).await;
    assert!(
        stack
            .configmaps()
            .get_opt("site-b")
            .await
            .unwrap()
            .is_none()
    );
    assert!(stack.services().get_opt("site-b").await.unwrap().is_none());
    assert!(
        stack
            .configmaps()
            .get_opt("site-a")
            .await
            .unwrap()
            .is_some()
    );

    // The read model (dashboard, /api/v1/objects) shows the parent and its sync.
    let objects = stack
        .core
        .get("/api/v1/objects")
        .await
        .expect("GET /api/v1/objects")
        .json()
        .expect("JSON");
    let text = objects.to_string();
    let view = objects["objects"]
        .as_array()
        .and_then(|list| list.iter().find(|o| o["name"] == "site").cloned())
        .unwrap_or_else(|| panic!("site in /api/v1/objects: {text}"));
    assert_eq!(view["handlers"][0]["id"], "sites", "{view}");
    assert_eq!(view["handlers"][0]["state"], "succeeded", "{view}");
}

/// A field another manager adds to a child survives Operon's re-apply, and a spec change
/// reaches the child in place (InPlace, the default).
async fn foreign_fields_survive(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(lang, &client, &ns, &[]).await;
    stack
        .create("site", json!({"entries": entries(&[("a", 80, "1")])}))
        .await;
    stack.wait_converged("site", 2).await;
    let before = stack.configmaps().get("site-a").await.unwrap();
    // Another controller injects an annotation and a data key (its own field manager).
    let injected = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "site-a", "annotations": {"injector.e2e/injected": "yes"}},
        "data": {"injected": "by-someone-else"}});
    stack
        .configmaps()
        .patch(
            "site-a",
            &PatchParams::apply("e2e-injector"),
            &Patch::Apply(&injected),
        )
        .await
        .expect("injecting foreign fields");
    // A spec change makes Operon re-apply the child.
    stack
        .patch_spec("site", json!({"entries": entries(&[("a", 80, "changed")])}))
        .await;
    let after = wait_for(
        "the ConfigMap to carry the new value",
        CONVERGED,
        || async {
            let cm = stack.configmaps().get("site-a").await?;
            let value = cm.data.as_ref().and_then(|d| d.get("value")).cloned();
            Ok::<_, kube::Error>((value.as_deref() == Some("changed")).then_some(cm))
        },
    )
    .await;
    assert_eq!(uid_of(&after), uid_of(&before), "updated in place");
    assert_eq!(
        after
            .annotations()
            .get("injector.e2e/injected")
            .map(String::as_str),
        Some("yes"),
        "the foreign annotation survives: {after:?}"
    );
    assert_eq!(
        after
            .data
            .as_ref()
            .unwrap()
            .get("injected")
            .map(String::as_str),
        Some("by-someone-else"),
        "the foreign data key survives: {after:?}"
    );
}

/// Invalid responses apply nothing and are reported in the status and as an Event: a child in
/// another namespace, a child with a status. Fixing the spec converges and clears the error.
async fn invalid_responses_refused(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(lang, &client, &ns, &[]).await;
    stack
        .create(
            "elsewhere",
            json!({"entries": entries(&[("a", 80, "1")]), "childNamespace": "kube-system"}),
        )
        .await;
    let refused = stack
        .wait_parent("elsewhere", "syncError about the namespace", |o| {
            o.data["status"]["syncError"]
                .as_str()
                .is_some_and(|e| e.contains("namespace"))
        })
        .await;
    eprintln!("refused: {}", refused.data["status"]);
    stack.wait_warning("elsewhere", "namespace").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    assert!(cms.get_opt("elsewhere-a").await.unwrap().is_none());
    assert!(
        stack
            .configmaps()
            .get_opt("elsewhere-a")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        stack
            .services()
            .get_opt("elsewhere-a")
            .await
            .unwrap()
            .is_none()
    );

    stack
        .create(
            "withstatus",
            json!({"entries": entries(&[("a", 80, "1")]), "childStatus": true}),
        )
        .await;
    stack
        .wait_parent("withstatus", "syncError about the child's status", |o| {
            o.data["status"]["syncError"]
                .as_str()
                .is_some_and(|e| e.contains("status"))
        })
        .await;
    stack.wait_warning("withstatus", "status").await;
    assert!(
        stack
            .configmaps()
            .get_opt("withstatus-a")
            .await
            .unwrap()
            .is_none()
    );

    // Fixed: converges, and the error is gone from the status.
    stack
        .patch_spec("withstatus", json!({"childStatus": null}))
        .await;
    let fixed = stack.wait_converged("withstatus", 2).await;
    assert!(fixed.data["status"].get("syncError").is_none(), "{fixed:?}");
    let m = stack.metrics().await;
    let errors = m
        .sum(
            "operon_sync_errors_total",
            &[("namespace", &ns), ("name", "elsewhere")],
        )
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "error count of the refused parent: {m}");
}

/// Two parents claiming one child name: the first keeps it, the second is told, nobody fights.
async fn name_conflict_reported(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(lang, &client, &ns, &[]).await;
    let first = stack
        .create(
            "first",
            json!({"prefix": "shared", "entries": entries(&[("x", 80, "first")])}),
        )
        .await;
    stack.wait_converged("first", 2).await;
    let before = stack.configmaps().get("shared-x").await.unwrap();
    stack
        .create(
            "second",
            json!({"prefix": "shared", "entries": entries(&[("x", 80, "second")])}),
        )
        .await;
    stack
        .wait_parent("second", "a syncError about the conflict", |o| {
            o.data["status"]["syncError"]
                .as_str()
                .is_some_and(|e| e.contains("already controlled by"))
        })
        .await;
    stack.wait_warning("second", "already controlled by").await;
    let after = stack.configmaps().get("shared-x").await.unwrap();
    assert_eq!(controller_uid(&after), Some(uid_of(&first)));
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "untouched"
    );
    assert_eq!(after.data.unwrap()["value"], "first");
}

/// A parent without a status subresource: a non-null status is a clear error (Event, metrics),
/// nothing is applied; a null status works.
async fn statusless_parent(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(
        lang,
        &client,
        &ns,
        &["--parent", "e2e.operon.dev/v1/plainsites"],
    )
    .await;
    stack
        .create("plain", json!({"entries": entries(&[("a", 80, "1")])}))
        .await;
    stack.wait_warning("plain", "status subresource").await;
    assert!(
        stack
            .configmaps()
            .get_opt("plain-a")
            .await
            .unwrap()
            .is_none()
    );
    let parent = stack.api.get("plain").await.unwrap();
    assert!(parent.data.get("status").is_none(), "{parent:?}");
    stack.patch_spec("plain", json!({"nullStatus": true})).await;
    wait_for(
        "the children of the statusless parent",
        CONVERGED,
        || async { stack.services().get_opt("plain-a").await },
    )
    .await;
    let parent = stack.api.get("plain").await.unwrap();
    assert!(parent.data.get("status").is_none(), "{parent:?}");
    stack.core.assert_running();
}

/// A failing sync changes nothing, is retried with backoff, and is counted per parent in
/// /metrics and in the read model.
async fn errors_retried_with_backoff(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(lang, &client, &ns, &[]).await;
    stack
        .create(
            "failing",
            json!({"entries": entries(&[("a", 80, "1")]), "fail": "boom"}),
        )
        .await;
    let ledger = wait_for("four failed syncs", CONVERGED, || async {
        let l = stack.ledger().object("failing").outcome("error");
        Ok::<_, std::convert::Infallible>((l.len() >= 4).then_some(l))
    })
    .await;
    let times = ledger.times();
    // Backoff 0.5 s, 1 s, 2 s: the fourth attempt comes at least 3.5 s after the first.
    assert!(times[3] - times[0] >= 3.4, "attempts at {times:?}");
    let parent = stack.api.get("failing").await.unwrap();
    assert!(
        parent.data.get("status").is_none(),
        "nothing written: {parent:?}"
    );
    assert!(
        stack
            .configmaps()
            .get_opt("failing-a")
            .await
            .unwrap()
            .is_none()
    );
    let m = stack.metrics().await;
    let errors = m
        .sum(
            "operon_sync_errors_total",
            &[("sync", "sites"), ("namespace", &ns), ("name", "failing")],
        )
        .unwrap_or(0.0);
    assert!(errors >= 4.0, "{m}");
    let objects = stack
        .core
        .get("/api/v1/objects")
        .await
        .unwrap()
        .json()
        .unwrap();
    let text = objects.to_string();
    let view = objects["objects"]
        .as_array()
        .and_then(|l| l.iter().find(|o| o["name"] == "failing").cloned())
        .unwrap_or_else(|| panic!("failing in /api/v1/objects: {text}"));
    assert_eq!(view["handlers"][0]["state"], "retrying", "{view}");
    assert!(view["handlers"][0]["retries"].as_u64() >= Some(4), "{view}");
    assert!(
        view["handlers"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("boom"),
        "{view}"
    );
    // Fixed: converges.
    stack.patch_spec("failing", json!({"fail": null})).await;
    stack.wait_converged("failing", 2).await;
}

/// Finalize: the finalizer is held while the handler says "not yet" and removed once finalized.
async fn finalize_holds_until_finalized(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(lang, &client, &ns, &["--finalize"]).await;
    stack
        .create(
            "final",
            json!({"entries": entries(&[("a", 80, "1")]), "holdFinalize": true}),
        )
        .await;
    let converged = stack.wait_converged("final", 2).await;
    assert!(
        converged.finalizers().iter().any(|f| f == FINALIZER),
        "{converged:?}"
    );
    stack
        .api
        .delete("final", &DeleteParams::default())
        .await
        .expect("deleting the parent");
    stack
        .wait_parent("final", "finalizing but held", |o| {
            o.data["status"]["held"] == json!(true)
        })
        .await;
    wait_for("two held Finalize calls", CONVERGED, || async {
        let n = stack.ledger().object("final").outcome("held").len();
        Ok::<_, std::convert::Infallible>((n >= 2).then_some(()))
    })
    .await;
    let held = stack
        .api
        .get("final")
        .await
        .expect("still there while held");
    assert!(held.finalizers().iter().any(|f| f == FINALIZER));
    stack
        .patch_spec("final", json!({"holdFinalize": false}))
        .await;
    wait_for("the parent to be gone", CONVERGED, || async {
        Ok::<_, kube::Error>(stack.api.get_opt("final").await?.is_none().then_some(()))
    })
    .await;
    // A Finalize call's line says so in its reason (the handler field is the service's choice:
    // "finalize" in the Rust example, the sync's id "sites" in the Go SDK's ledger).
    assert!(
        !stack
            .ledger()
            .object("final")
            .reason("finalize")
            .outcome("success")
            .is_empty(),
        "a finalized Finalize call: {}",
        stack.ledger()
    );
}

/// Audit-log entries in `ns` that write (create/update/patch/delete) received after `since`.
fn audit_writes(ns: &str, since: f64) -> Vec<Value> {
    let dir = cluster_dir().join("logs");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .expect("the audit log directory")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("audit") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let quoted = format!("\"{ns}\"");
        for line in text.lines().filter(|l| l.contains(&quoted)) {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if event["objectRef"]["namespace"] != ns || event["stage"] != "ResponseComplete" {
                continue;
            }
            let verb = event["verb"].as_str().unwrap_or_default();
            if !matches!(
                verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            ) {
                continue;
            }
            let at = serde_json::from_value::<MicroTime>(event["requestReceivedTimestamp"].clone())
                .map(|t| t.0.as_millisecond() as f64 / 1000.0)
                .unwrap_or_default();
            if at >= since {
                out.push(event);
            }
        }
    }
    out
}

/// After convergence, an unchanged parent (synced every 5 s) causes no writes in 60 s, counted
/// at the API server's audit log and in the core's request metrics.
async fn no_hot_loop(lang: Lang, client: Client, ns: String) {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut stack = SyncStack::start(lang, &client, &ns, &["--resync", "5"]).await;
    stack
        .create(
            "calm",
            json!({"entries": entries(&[("a", 80, "1"), ("b", 81, "2")])}),
        )
        .await;
    stack.wait_converged("calm", 4).await;
    // Let the last status write come back through the watch and be synced once more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The count can see writes: converging took some (parent status, children).
    let converging = audit_writes(&ns, started);
    assert!(
        converging.len() >= 5,
        "the audit log shows the writes of converging: {converging:?}"
    );
    let writes_before = stack.metrics().await;
    let syncs_before = stack.ledger().object("calm").len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let syncs = stack.ledger().object("calm").len() - syncs_before;
    let writes_after = stack.metrics().await;
    let writes = audit_writes(&ns, since);
    let core_writes = |m: &Metrics| {
        ["apply", "patch", "delete", "post"]
            .iter()
            .map(|v| {
                m.sum("operon_api_requests_total", &[("verb", v)])
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    eprintln!(
        "[hot-loop {lang:?}] {} writes while converging; then in 60 s: {syncs} syncs, {} writes at the API server",
        converging.len(),
        writes.len()
    );
    assert!(
        syncs >= 8,
        "the parent was synced again and again ({syncs} syncs)"
    );
    assert_eq!(
        core_writes(&writes_after),
        core_writes(&writes_before),
        "the core's own request count"
    );
    assert!(
        writes.is_empty(),
        "{} writes in 60 s at the API server: {:#?}",
        writes.len(),
        writes
            .iter()
            .map(|w| format!(
                "{} {} {}",
                w["verb"], w["objectRef"]["resource"], w["objectRef"]["name"]
            ))
            .collect::<Vec<_>>()
    );
}

/// OnDelete leaves a differing child alone until someone deletes it; Recreate replaces it.
async fn strategies_on_delete_and_recreate(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(
        lang,
        &client,
        &ns,
        &["--configmaps", "OnDelete", "--services", "Recreate"],
    )
    .await;
    stack
        .create("strat", json!({"entries": entries(&[("a", 80, "1")])}))
        .await;
    stack.wait_converged("strat", 2).await;
    let cm = stack.configmaps().get("strat-a").await.unwrap();
    let svc = stack.services().get("strat-a").await.unwrap();
    stack
        .patch_spec("strat", json!({"entries": entries(&[("a", 90, "2")])}))
        .await;
    // Recreate: a new Service with the new port.
    let new_svc = wait_for("the Service to be recreated", CONVERGED, || async {
        let s = stack.services().get_opt("strat-a").await?;
        Ok::<_, kube::Error>(s.filter(|s| uid_of(s) != uid_of(&svc)))
    })
    .await;
    assert_eq!(new_svc.spec.unwrap().ports.unwrap()[0].port, 90);
    stack.wait_converged("strat", 2).await;
    // OnDelete: the ConfigMap is untouched although it differs.
    let same = stack.configmaps().get("strat-a").await.unwrap();
    assert_eq!(same.metadata.resource_version, cm.metadata.resource_version);
    assert_eq!(same.data.as_ref().unwrap()["value"], "1");
    // ... until someone deletes it: then it comes back with the new state.
    stack
        .configmaps()
        .delete("strat-a", &DeleteParams::default())
        .await
        .unwrap();
    let back = wait_for("the ConfigMap to come back", CONVERGED, || async {
        let c = stack.configmaps().get_opt("strat-a").await?;
        Ok::<_, kube::Error>(c.filter(|c| uid_of(c) != uid_of(&cm)))
    })
    .await;
    assert_eq!(back.data.unwrap()["value"], "2");
}

/// The rolling variants: one child at a time, in the response's order. RollingRecreate waits
/// while the recreated child cannot come back (held by a foreign finalizer); RollingInPlace
/// updates in place in order.
async fn strategies_rolling(lang: Lang, client: Client, ns: String) {
    let mut stack = SyncStack::start(
        lang,
        &client,
        &ns,
        &[
            "--configmaps",
            "RollingInPlace",
            "--services",
            "RollingRecreate",
        ],
    )
    .await;
    let all = [("a", 80, "1"), ("b", 81, "1"), ("c", 82, "1")];
    stack
        .create("roll", json!({"entries": entries(&all)}))
        .await;
    stack.wait_converged("roll", 6).await;
    let cms: Vec<ConfigMap> = {
        let mut v = Vec::new();
        for n in ["roll-a", "roll-b", "roll-c"] {
            v.push(stack.configmaps().get(n).await.unwrap());
        }
        v
    };
    let svc_a = stack.services().get("roll-a").await.unwrap();
    let svc_b = stack.services().get("roll-b").await.unwrap();
    // Hold the first Service: once deleted, it stays terminating.
    stack
        .services()
        .patch(
            "roll-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["e2e.operon.dev/hold"]}})),
        )
        .await
        .unwrap();
    stack
        .patch_spec(
            "roll",
            json!({"entries": entries(&[("a", 90, "2"), ("b", 91, "2"), ("c", 92, "2")])}),
        )
        .await;
    wait_for(
        "the first Service to be deleted (held)",
        CONVERGED,
        || async {
            let s = stack.services().get("roll-a").await?;
            Ok::<_, kube::Error>(s.metadata.deletion_timestamp.map(|_| ()))
        },
    )
    .await;
    // The rollout waits: after two more syncs, b is still the old one.
    let n = stack.ledger().object("roll").len();
    wait_for("two more syncs", CONVERGED, || async {
        Ok::<_, std::convert::Infallible>(
            (stack.ledger().object("roll").len() >= n + 2).then_some(()),
        )
    })
    .await;
    let b = stack.services().get("roll-b").await.unwrap();
    assert_eq!(uid_of(&b), uid_of(&svc_b), "b waits while a is held");
    // The parent's page draws the Services' rollout: none of 3 as desired, a held.
    let page = stack.parent_page("roll").await;
    let services = page
        .split("<li data-rollout=\"Service\">")
        .nth(1)
        .and_then(|rest| rest.split("</li>").next())
        .unwrap_or_else(|| panic!("no Service rollout on the parent's page: {page}"));
    for shown in [
        "Service: 0 of 3 as desired",
        "<progress value=\"0\" max=\"3\"",
        "rolling roll-a: recreated, waiting for the new one",
    ] {
        assert!(services.contains(shown), "{shown:?} in {services}");
    }
    // Release a: a comes back, then b and c are recreated, one after the other.
    stack
        .services()
        .patch(
            "roll-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let mut created = Vec::new();
    for name in ["roll-a", "roll-b", "roll-c"] {
        let s = wait_for(
            &format!("{name} recreated with the new port"),
            CONVERGED,
            || async {
                let s = stack.services().get_opt(name).await?;
                Ok::<_, kube::Error>(s.filter(|s| {
                    s.spec
                        .as_ref()
                        .and_then(|s| s.ports.as_ref())
                        .is_some_and(|p| p[0].port >= 90)
                }))
            },
        )
        .await;
        assert_ne!(uid_of(&s), uid_of(&svc_a));
        created.push(s.metadata.creation_timestamp.clone().unwrap().0);
    }
    assert!(
        created.windows(2).all(|w| w[0] <= w[1]),
        "recreated in order: {created:?}"
    );
    // RollingInPlace: every ConfigMap updated in place, in the response's order.
    stack.wait_converged("roll", 6).await;
    let mut versions = Vec::new();
    for old in &cms {
        let now = stack.configmaps().get(&old.name_any()).await.unwrap();
        assert_eq!(uid_of(&now), uid_of(old), "in place");
        assert_eq!(now.data.as_ref().unwrap()["value"], "2");
        versions.push(
            now.metadata
                .resource_version
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "in order: {versions:?}"
    );
    // Both rollouts over: the page draws none.
    wait_for("no rollout on the parent's page", CONVERGED, || async {
        Ok::<_, std::convert::Infallible>(
            (!stack.parent_page("roll").await.contains("data-rollout")).then_some(()),
        )
    })
    .await;
}

/// Audit-log entries of the core (User-Agent `operon/…`) in `ns` about `resource` with `verb`:
/// one per request (the watch's stages counted once, by audit id).
fn audit_core_requests(ns: &str, resource: &str, verb: &str) -> Vec<Value> {
    let dir = cluster_dir().join("logs");
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .expect("the audit log directory")
        .flatten()
    {
        if !entry.file_name().to_string_lossy().starts_with("audit") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let quoted = format!("\"{ns}\"");
        for line in text.lines().filter(|l| l.contains(&quoted)) {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let by_core = event["userAgent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("operon/"));
            if by_core
                && event["objectRef"]["namespace"] == ns
                && event["objectRef"]["resource"] == resource
                && event["verb"] == verb
                && seen.insert(event["auditID"].as_str().unwrap_or_default().to_owned())
            {
                out.push(event);
            }
        }
    }
    out
}

/// A resource served by change handlers and by a sync is listed and watched once: the core's
/// requests, counted at the API server's audit log, show one LIST and one WATCH of the parents —
/// and of each child resource — although change handling and the sync both take every event.
async fn one_watch_for_handlers_and_a_sync(lang: Lang, client: Client, ns: String) {
    let binary = example_binary(lang).await;
    let name = format!("shared-watch-{lang:?}").to_lowercase();
    let sync = HandlerProcess::start_binary(&binary, &name, &[])
        .await
        .unwrap_or_else(|err| panic!("starting the {lang:?} sync example: {err:#}"));
    let handlers = HandlerProcess::start(
        &format!("{name}-handlers"),
        &[
            "--resource",
            "e2e.operon.dev/v1/sites",
            "--handler",
            "create:seen",
        ],
    )
    .await
    .expect("starting the example handler service");
    operon_e2e::binaries().await;
    let core_args = vec![
        "--handler".to_owned(),
        sync.url(),
        "--handler".to_owned(),
        handlers.url(),
        "-n".to_owned(),
        ns.clone(),
    ];
    let kubeconfig = plane().await.kubeconfig.clone();
    let mut core = CoreProcess::start(&name, &core_args, &kubeconfig)
        .await
        .unwrap_or_else(|err| panic!("starting the core: {err:#}"));
    core.wait_ready(Duration::from_secs(60)).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource("Site"));
    let site: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "e2e.operon.dev/v1",
        "kind": "Site",
        "metadata": {"name": "both"},
        "spec": {"entries": entries(&[("a", 80, "1")])},
    }))
    .expect("a valid Site");
    api.create(&PostParams::default(), &site)
        .await
        .expect("creating the Site");
    // Both controllers took the object in: the create handler ran and the sync converged.
    wait_for("the create handler and the sync", CONVERGED, || async {
        let ran = !handlers
            .ledger()
            .entries()
            .object("both")
            .handler("seen")
            .outcome("success")
            .is_empty();
        let synced = api.get_opt("both").await?.is_some_and(|o| {
            o.data["status"]["currentChildren"].as_i64() == Some(2)
                && o.data["status"]["observedGeneration"].as_i64() == o.metadata.generation
        });
        Ok::<_, kube::Error>((ran && synced).then_some(()))
    })
    .await;
    core.assert_running();
    for resource in ["sites", "configmaps", "services"] {
        let lists = audit_core_requests(&ns, resource, "list");
        let watches = audit_core_requests(&ns, resource, "watch");
        assert_eq!(
            (lists.len(), watches.len()),
            (1, 1),
            "the core lists and watches {resource} in {ns} once (lists: {lists:?}, watches: {watches:?})\ncore log:\n{}",
            core.log_tail(40)
        );
    }
}

macro_rules! for_both {
    ($($scenario:ident),* $(,)?) => {
        mod rust {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::with_sites_ns("sync-rs", |c, ns| super::$scenario(super::Lang::Rust, c, ns)).await;
                }
            )*
        }
        mod go {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::with_sites_ns("sync-go", |c, ns| super::$scenario(super::Lang::Go, c, ns)).await;
                }
            )*
        }
    };
}

for_both!(
    children_and_status,
    foreign_fields_survive,
    invalid_responses_refused,
    name_conflict_reported,
    statusless_parent,
    errors_retried_with_backoff,
    finalize_holds_until_finalized,
    no_hot_loop,
    strategies_on_delete_and_recreate,
    strategies_rolling,
    one_watch_for_handlers_and_a_sync,
);
