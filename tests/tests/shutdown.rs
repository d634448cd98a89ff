//! End-to-end tests of the shutdown hook (issue 9), on the real plane.
//!
//! The example sync operator (`proto/examples/rust-sync`: a `Site` owns a ConfigMap and a Service
//! per entry of `spec.entries`) declares a shutdown hook whose URL template points at a stand-in
//! for the application's shutdown micro-service ([`operon_e2e::shutdown_app`], a real HTTP server
//! on 127.0.0.1). Each test gets a fresh namespace, its own handler service, its own stand-in
//! and its own core, and asserts on what an outsider sees: the parent (`status.shutdown`, its
//! finalizer, whether it still exists), the children, Events, what the stand-in received and
//! how the core answered its callbacks, the handler's ledger and the core's `/api/v1/objects`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client, ResourceExt};
use operon_e2e::cluster::PlaneLock;
use operon_e2e::shutdown_app::{AppMode, ShutdownApp, call_back};
use operon_e2e::{
    CoreProcess, Entries, HandlerProcess, SITES, http_request, install_crds, plane, wait_for,
    with_temp_ns,
};
use serde_json::{Value, json};

const CONVERGED: Duration = Duration::from_secs(90);

/// The finalizer the core holds for the example's registration `sites`.
const FINALIZER: &str = "kopf.zalando.org/sync-sites";

fn site_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("e2e.operon.dev", "v1", "Site"))
}

/// A fresh namespace with the CRD; every finalizer released afterwards.
async fn with_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let _lock = PlaneLock::shared().await;
    with_temp_ns(prefix, |client, ns| async move {
        install_crds(&client, &SITES).await;
        let outcome = tokio::spawn(test(client.clone(), ns.clone())).await;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &site_resource());
        let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        for o in api.list(&ListParams::default()).await.into_iter().flatten() {
            let _ = api
                .patch(&o.name_any(), &PatchParams::default(), &strip)
                .await;
        }
        if let Err(err) = outcome {
            std::panic::resume_unwind(err.into_panic());
        }
    })
    .await;
}

/// The example sync service with a hook towards a stand-in, and one core serving `ns`.
struct HookStack {
    app: ShutdownApp,
    handler: HandlerProcess,
    core: CoreProcess,
    client: Client,
    ns: String,
    api: Api<DynamicObject>,
}

impl HookStack {
    /// `hook` are the example's `--shutdown-*` flags besides the URL template; `core_extra` are
    /// more arguments for the core.
    async fn start(
        client: &Client,
        ns: &str,
        mode: AppMode,
        hook: &[&str],
        core_extra: &[&str],
    ) -> Self {
        let ledger = operon_e2e::log_dir().join(format!("shutdown-app-{ns}.jsonl"));
        let app = ShutdownApp::start(
            "127.0.0.1:0".parse().expect("an address"),
            mode,
            Some(&ledger),
        )
        .await
        .expect("starting the stand-in application");
        let template = app.url_template();
        let mut args = vec!["--shutdown-url-template", template.as_str()];
        args.extend_from_slice(hook);
        let binary = operon_e2e::binaries().await.sync_example.clone();
        let handler = HandlerProcess::start_binary(&binary, "shutdown-sync", &args)
            .await
            .unwrap_or_else(|err| panic!("starting the example: {err:#}"));
        let mut core_args = vec![
            "--handler".to_owned(),
            handler.url(),
            "-n".to_owned(),
            ns.to_owned(),
        ];
        core_args.extend(core_extra.iter().map(|s| (*s).to_owned()));
        let kubeconfig = plane().await.kubeconfig.clone();
        let mut core = CoreProcess::start("shutdown", &core_args, &kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("starting the core: {err:#}"));
        core.wait_ready(Duration::from_secs(60)).await;
        Self {
            app,
            handler,
            core,
            client: client.clone(),
            ns: ns.to_owned(),
            api: Api::namespaced_with(client.clone(), ns, &site_resource()),
        }
    }

    fn ledger(&self) -> Entries {
        self.handler.ledger().entries()
    }

    fn finalize_calls(&self, name: &str) -> usize {
        self.ledger()
            .object(name)
            .iter()
            .filter(|e| e.handler == "finalize")
            .count()
    }

    async fn create(&self, name: &str, entries: &[&str]) -> DynamicObject {
        let entries: Vec<Value> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"name": e, "port": 80 + i, "data": {"value": e}}))
            .collect();
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "e2e.operon.dev/v1",
            "kind": "Site",
            "metadata": {"name": name},
            "spec": {"entries": entries},
        }))
        .expect("a valid Site");
        self.api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|err| panic!("creating {name}: {err}"))
    }

    async fn set_entries(&self, name: &str, entries: &[&str]) {
        let entries: Vec<Value> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"name": e, "port": 80 + i, "data": {"value": e}}))
            .collect();
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"entries": entries}})),
            )
            .await
            .unwrap_or_else(|err| panic!("patching {name}: {err}"));
    }

    async fn delete(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|err| panic!("deleting {name}: {err}"));
    }

    /// Waits until `check` holds for the parent; panics with the parent, the ledger and the log.
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
                    "timed out waiting for {}/{name}: {what}\nlast seen: {last:?}\nstand-in: {:?} {:?}\nledger:\n{}\ncore log:\n{}",
                    self.ns,
                    self.app.requests(),
                    self.app.callbacks(),
                    self.ledger(),
                    self.core.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the parent's `status.shutdown.phase` is `phase`.
    async fn wait_phase(&mut self, name: &str, phase: &str) -> DynamicObject {
        self.wait_parent(name, &format!("status.shutdown.phase {phase}"), |o| {
            o.data["status"]["shutdown"]["phase"] == phase
        })
        .await
    }

    /// Waits until the parent is gone.
    async fn wait_gone(&mut self, name: &str) {
        let deadline = tokio::time::Instant::now() + CONVERGED;
        loop {
            self.core.assert_running();
            let last = self.api.get_opt(name).await;
            if let Ok(None) = last {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {}/{name} to go away\nlast seen: {last:?}\nledger:\n{}\ncore log:\n{}",
                    self.ns,
                    self.ledger(),
                    self.core.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_converged(&mut self, name: &str, children: i64) -> DynamicObject {
        self.wait_parent(name, &format!("converged with {children} children"), |o| {
            let s = &o.data["status"];
            s["observedGeneration"].as_i64() == o.metadata.generation
                && s["currentChildren"].as_i64() == Some(children)
                && o.finalizers().iter().any(|f| f == FINALIZER)
        })
        .await
    }

    async fn configmap_names(&self) -> Vec<String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        let mut names: Vec<String> = api
            .list(&ListParams::default())
            .await
            .expect("listing ConfigMaps")
            .items
            .into_iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| c.name_any())
            .filter(|n| n != "kube-root-ca.crt")
            .collect();
        names.sort();
        names
    }

    async fn service_names(&self) -> Vec<String> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let mut names: Vec<String> = api
            .list(&ListParams::default())
            .await
            .expect("listing Services")
            .items
            .into_iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| c.name_any())
            .collect();
        names.sort();
        names
    }

    /// Waits until the live ConfigMaps are exactly `names`.
    async fn wait_configmaps(&self, names: &[&str]) {
        let want: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        wait_for(
            &format!("the ConfigMaps to be {want:?}"),
            CONVERGED,
            || async {
                let now = self.configmap_names().await;
                if now == want { Ok(Some(())) } else { Err(now) }
            },
        )
        .await;
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

    /// Waits until an Event about `name` has `reason`; returns it.
    async fn wait_event(&self, name: &str, reason: &str) -> Event {
        wait_for(
            &format!("an Event {reason} about {name}"),
            CONVERGED,
            || async {
                let events = self.events_about(name).await;
                let found = events
                    .iter()
                    .find(|e| e.reason.as_deref() == Some(reason))
                    .cloned();
                match found {
                    Some(e) => Ok(Some(e)),
                    None => Err(events
                        .iter()
                        .map(|e| format!("{:?}: {:?}", e.reason, e.message))
                        .collect::<Vec<_>>()),
                }
            },
        )
        .await
    }

    /// `PUT` the callback URL of the parent with `body` (raw), as an application would.
    async fn put_callback(&self, name: &str, body: &str) -> u16 {
        let path = format!("/api/v1/shutdown/sites.e2e.operon.dev/{}/{name}", self.ns);
        let mut stream = tokio::net::TcpStream::connect(self.core.http_addr())
            .await
            .expect("connecting to the core");
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: core\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("writing");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("reading");
        let text = String::from_utf8_lossy(&raw);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// The token the stand-in was given in its `n`-th request.
    /// Waits until the stand-in application has had `n` requests: the core persists the
    /// handshake (`status.shutdown`) before it sends the request, so a phase seen on the parent
    /// can come a moment before the request arrives.
    async fn wait_requests(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + CONVERGED;
        while self.app.requests().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} shutdown requests: {:?}",
                self.app.requests()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(self.app.requests().len(), n, "{:?}", self.app.requests());
    }

    fn token(&self, n: usize) -> String {
        self.app
            .requests()
            .get(n)
            .map(|r| r.field("token").to_owned())
            .unwrap_or_default()
    }
}

fn phase(o: &DynamicObject) -> String {
    o.data["status"]["shutdown"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------

/// (a) The application stops after a delay: while the core waits, the children and the parent
/// stay, Finalize is not called, the state is visible (status, Event, read model); after the
/// callback the parent is finalized and goes away, and its children with it.
async fn stops_after_a_delay(client: Client, ns: String) {
    let mut stack = HookStack::start(
        &client,
        &ns,
        AppMode::StopAfter(Duration::from_secs(6)),
        &["--shutdown-grace", "60"],
        &[],
    )
    .await;
    let parent = stack.create("db", &["a", "b"]).await;
    stack.wait_converged("db", 4).await;
    assert_eq!(stack.configmap_names().await, ["db-a", "db-b"]);
    assert!(
        stack.app.requests().is_empty(),
        "no shutdown before a deletion"
    );

    stack.delete("db").await;
    let waiting = stack.wait_phase("db", "Waiting").await;
    // While the core waits, nothing is deleted and Finalize is not called.
    assert_eq!(stack.configmap_names().await, ["db-a", "db-b"]);
    assert_eq!(stack.service_names().await, ["db-a", "db-b"]);
    assert_eq!(stack.finalize_calls("db"), 0, "{}", stack.ledger());
    let shutdown = &waiting.data["status"]["shutdown"];
    assert_eq!(shutdown["reason"], "delete");
    assert_eq!(shutdown["attempt"], 1);
    assert!(shutdown["deadline"].is_string(), "{shutdown}");
    // The read model shows the wait.
    let objects = stack
        .core
        .get("/api/v1/objects")
        .await
        .expect("GET /api/v1/objects")
        .json()
        .expect("JSON");
    let hook_row = objects["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["name"] == "db")
        .flat_map(|o| o["handlers"].as_array().cloned().unwrap_or_default())
        .find(|h| h["id"] == "shutdown-hook");
    let hook_row = hook_row.unwrap_or_else(|| panic!("a shutdown-hook row: {objects}"));
    assert_eq!(hook_row["state"], "pending", "{hook_row}");
    assert!(
        hook_row["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Waiting"),
        "{hook_row}"
    );

    // The request the application got.
    let requests = stack.app.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.field("reason"), "delete");
    assert_eq!(request.field("namespace"), ns);
    assert_eq!(request.field("name"), "db");
    assert_eq!(request.field("uid"), parent.uid().unwrap_or_default());
    assert_eq!(
        request.path,
        format!("/shutdown/{ns}/db/{}", parent.uid().unwrap_or_default())
    );
    assert_eq!(
        request.field("callback"),
        format!(
            "http://{}/api/v1/shutdown/sites.e2e.operon.dev/{ns}/db",
            stack.core.http_addr()
        )
    );
    // Only the hash is stored.
    let token = request.field("token").to_owned();
    assert!(token.len() >= 32, "{token}");
    assert!(!waiting.data.to_string().contains(&token));
    assert_eq!(shutdown["tokenSha256"].as_str().map(str::len), Some(64));

    stack.wait_gone("db").await;
    assert_eq!(
        stack
            .app
            .callbacks()
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        [200]
    );
    assert!(stack.finalize_calls("db") >= 1, "{}", stack.ledger());
    stack.wait_configmaps(&[]).await;
    let requested = stack.wait_event("db", "ShutdownRequested").await;
    assert_eq!(requested.type_.as_deref(), Some("Normal"));
    let confirmed = stack.wait_event("db", "ShutdownConfirmed").await;
    assert_eq!(confirmed.type_.as_deref(), Some("Normal"));
}

/// (b) An application that never answers, GIVE_UP: after the grace period and the retries the
/// parent is marked degraded; it stays with its children. A late callback still counts.
async fn never_answers_give_up(client: Client, ns: String) {
    let mut stack = HookStack::start(
        &client,
        &ns,
        AppMode::Never,
        &[
            "--shutdown-grace",
            "2",
            "--shutdown-retries",
            "1",
            "--shutdown-failure",
            "give-up",
        ],
        &[],
    )
    .await;
    stack.create("db", &["a"]).await;
    stack.wait_converged("db", 2).await;
    stack.delete("db").await;
    let degraded = stack.wait_phase("db", "Degraded").await;
    let shutdown = &degraded.data["status"]["shutdown"];
    assert_eq!(shutdown["attempt"], 2, "{shutdown}");
    assert_eq!(shutdown["attempts"], 2, "{shutdown}");
    assert!(
        shutdown["message"]
            .as_str()
            .unwrap_or_default()
            .contains("GIVE_UP"),
        "{shutdown}"
    );
    // Two attempts, one token.
    let requests = stack.app.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].field("token"), requests[1].field("token"));
    stack.wait_event("db", "ShutdownTimedOut").await;
    let failed = stack.wait_event("db", "ShutdownFailed").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    // Degraded: the parent stays (being deleted, with the finalizer) and so do its children; no
    // more attempts, no Finalize.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = stack
        .api
        .get("db")
        .await
        .expect("the parent is still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held.finalizers().iter().any(|f| f == FINALIZER));
    assert_eq!(phase(&held), "Degraded");
    assert_eq!(stack.configmap_names().await, ["db-a"]);
    assert_eq!(stack.app.requests().len(), 2);
    assert_eq!(stack.finalize_calls("db"), 0, "{}", stack.ledger());

    // The application reports late: accepted, and the deletion goes on.
    let token = stack.token(0);
    let callback = stack.app.requests()[0].field("callback").to_owned();
    assert_eq!(call_back(&callback, &token).await, 200);
    stack.wait_gone("db").await;
    stack.wait_configmaps(&[]).await;
}

/// (b) An application that never answers, DELETE: after the grace period and the retries the
/// children are deleted anyway and the parent goes away.
async fn never_answers_delete(client: Client, ns: String) {
    let mut stack = HookStack::start(
        &client,
        &ns,
        AppMode::Never,
        &[
            "--shutdown-grace",
            "4",
            "--shutdown-retries",
            "1",
            "--shutdown-failure",
            "delete",
        ],
        &[],
    )
    .await;
    stack.create("db", &["a"]).await;
    stack.wait_converged("db", 2).await;
    stack.delete("db").await;
    stack.wait_phase("db", "Waiting").await;
    assert_eq!(stack.configmap_names().await, ["db-a"]);
    stack.wait_gone("db").await;
    stack.wait_configmaps(&[]).await;
    assert_eq!(stack.app.requests().len(), 2, "{:?}", stack.app.requests());
    assert!(stack.finalize_calls("db") >= 1, "{}", stack.ledger());
    stack.wait_event("db", "ShutdownTimedOut").await;
    let failed = stack.wait_event("db", "ShutdownFailed").await;
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("DELETE"),
        "{failed:?}"
    );
}

/// (c) A callback with a wrong token is refused (401) and changes nothing; a missing token, a
/// body that is not JSON and an unknown parent are refused too; then the right token works. The
/// dashboard's token does not guard the callback (it carries its own).
async fn wrong_token_refused(client: Client, ns: String) {
    let mut stack = HookStack::start(
        &client,
        &ns,
        AppMode::WrongToken(Duration::ZERO),
        &["--shutdown-grace", "120"],
        &["--dashboard-token", "dashboard-secret"],
    )
    .await;
    stack.create("db", &["a"]).await;
    stack.wait_converged("db", 2).await;
    stack.delete("db").await;
    let waiting = stack.wait_phase("db", "Waiting").await;
    let before = waiting.data["status"]["shutdown"].clone();
    let refused = wait_for("the stand-in's callback", CONVERGED, || async {
        Ok::<_, ()>(stack.app.callbacks().first().cloned())
    })
    .await;
    assert_eq!(refused.status, 401, "{refused:?}");
    let event = stack.wait_event("db", "ShutdownCallbackRefused").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(stack.put_callback("db", r#"{}"#).await, 401);
    assert_eq!(stack.put_callback("db", r#"{"token": ""}"#).await, 401);
    assert_eq!(stack.put_callback("db", "not json").await, 400);
    assert_eq!(stack.put_callback("nobody", r#"{"token": "x"}"#).await, 404);
    assert_eq!(
        stack
            .put_callback("db,metadata.name!=x", r#"{"token": "x"}"#)
            .await,
        404
    );
    // Nothing changed: still waiting, same attempt, same token hash, children there.
    let after = stack.api.get("db").await.expect("the parent");
    assert_eq!(after.data["status"]["shutdown"], before);
    assert_eq!(stack.configmap_names().await, ["db-a"]);
    assert_eq!(stack.finalize_calls("db"), 0);
    // The dashboard is guarded, the callback is not.
    let objects = http_request(stack.core.http_addr(), "GET", "/api/v1/objects", None)
        .await
        .expect("GET /api/v1/objects");
    assert_eq!(objects.status, 401);

    let token = stack.token(0);
    let body = json!({"token": token}).to_string();
    assert_eq!(stack.put_callback("db", &body).await, 200);
    stack.wait_gone("db").await;
    stack.wait_configmaps(&[]).await;
    stack.wait_event("db", "ShutdownConfirmed").await;
}

/// The state survives a SIGKILL of the core: the restarted core keeps waiting (no new request)
/// and accepts the callback with the token the first core gave out.
async fn survives_a_core_restart(client: Client, ns: String) {
    let mut stack = HookStack::start(
        &client,
        &ns,
        AppMode::Never,
        &["--shutdown-grace", "300"],
        &[],
    )
    .await;
    stack.create("db", &["a"]).await;
    stack.wait_converged("db", 2).await;
    stack.delete("db").await;
    stack.wait_phase("db", "Waiting").await;
    let token = stack.token(0);
    stack.core.restart().await.expect("restarting the core");
    stack.core.wait_ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = stack.wait_phase("db", "Waiting").await;
    assert_eq!(still.data["status"]["shutdown"]["attempt"], 1);
    assert_eq!(
        stack.app.requests().len(),
        1,
        "no new request after the restart"
    );
    assert_eq!(stack.configmap_names().await, ["db-a"]);
    let body = json!({"token": token}).to_string();
    assert_eq!(stack.put_callback("db", &body).await, 200);
    stack.wait_gone("db").await;
    stack.wait_configmaps(&[]).await;
}

/// A move: children the sync answer no longer lists wait for the application (reason
/// `replace`) while new ones are created at once; after the callback they are deleted and the
/// handshake is cleared, so the next move asks again.
async fn replace_waits_for_the_application(client: Client, ns: String) {
    let mut stack = HookStack::start(
        &client,
        &ns,
        AppMode::Never,
        &["--shutdown-grace", "120"],
        &[],
    )
    .await;
    stack.create("db", &["a", "b"]).await;
    stack.wait_converged("db", 4).await;
    stack.set_entries("db", &["a", "c"]).await;
    let waiting = stack.wait_phase("db", "Waiting").await;
    assert_eq!(waiting.data["status"]["shutdown"]["reason"], "replace");
    // The new child is there; the old one waits.
    stack.wait_configmaps(&["db-a", "db-b", "db-c"]).await;
    stack.wait_requests(1).await;
    let requests = stack.app.requests();
    assert_eq!(requests[0].field("reason"), "replace");
    let body = json!({"token": stack.token(0)}).to_string();
    assert_eq!(stack.put_callback("db", &body).await, 200);
    stack.wait_configmaps(&["db-a", "db-c"]).await;
    stack
        .wait_parent("db", "status.shutdown cleared", |o| {
            o.data["status"].get("shutdown").is_none_or(Value::is_null)
                && o.data["status"]["currentChildren"] == 4
        })
        .await;
    // The next move asks again, with a fresh token.
    stack.set_entries("db", &["c"]).await;
    stack.wait_phase("db", "Waiting").await;
    stack.wait_requests(2).await;
    assert_ne!(stack.token(0), stack.token(1));
    assert_eq!(stack.configmap_names().await, ["db-a", "db-c"]);
}

/// An endpoint that answers 404 means "already gone": stopped at once, the deletion goes on.
async fn endpoint_gone_counts_as_stopped(client: Client, ns: String) {
    let mut stack = HookStack::start(
        &client,
        &ns,
        AppMode::Gone,
        &["--shutdown-grace", "120"],
        &[],
    )
    .await;
    stack.create("db", &["a"]).await;
    stack.wait_converged("db", 2).await;
    stack.delete("db").await;
    stack.wait_gone("db").await;
    stack.wait_configmaps(&[]).await;
    assert_eq!(stack.app.requests().len(), 1);
    let confirmed = stack.wait_event("db", "ShutdownConfirmed").await;
    assert!(
        confirmed
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("404"),
        "{confirmed:?}"
    );
}

macro_rules! scenarios {
    ($($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                with_ns("shutdown", super::$scenario).await;
            }
        )*
    };
}

mod rust {
    use super::with_ns;
    scenarios!(
        stops_after_a_delay,
        never_answers_give_up,
        never_answers_delete,
        wrong_token_refused,
        survives_a_core_restart,
        replace_waits_for_the_application,
        endpoint_gone_counts_as_stopped,
    );
}
