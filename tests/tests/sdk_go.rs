//! End-to-end test of the Go SDK (`proto/sdk/go`) through its example operator,
//! `proto/examples/go-website` (built by its `build.sh`), on the real plane.
//!
//! A `GoWebsite` (`gowebsites.sdk.operon.dev`) owns a ConfigMap with its html and a Service on
//! port 80 (the SDK's `Sync`), and gets `status.{url, pages, replicas}`; a change handler
//! (`check`, on create and update) fails once with a temporary error when the html contains
//! "flaky". The test runs the example and a core (`operon run -n <ns>`) and asserts what an
//! outsider sees: the children and the status, the ConfigMap following `spec.html`, the flaky
//! page retried once then done (the SDK's ledger), an Event the handler asked for, the children
//! gone with their parent, the standard gRPC health service answering SERVING, and a clean exit
//! on SIGTERM. It also prints the example's handler line count and holds it to ~60.
//!
//! A second test runs `proto/sdk/go/internal/e2eservice` — a daemon, a timer, a create handler
//! with a `When` filter and a task type — against the real core, for the kinds the example does
//! not use.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use operon_e2e::cluster::PlaneLock;
use operon_e2e::{
    CoreProcess, HandlerProcess, WidgetExt, install_crds, plane, wait_for, widget, with_temp_ns,
    with_widget_ns,
};
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The example's CRD and handler code, as committed.
const CRD: &str = include_str!("../../proto/examples/go-website/crd.yaml");
const MAIN_GO: &str = include_str!("../../proto/examples/go-website/main.go");

/// The example's promise: the whole operator in about this many lines of Go.
const HANDLER_LINES_MAX: usize = 60;

const CONVERGED: Duration = Duration::from_secs(90);

/// Lines of Go that are neither blank nor comments.
fn code_lines(source: &str) -> usize {
    source
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .count()
}

fn websites(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("sdk.operon.dev", "v1", "GoWebsite");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Asks the handler service's grpc.health.v1 service about `service` ("" = the whole server).
async fn health(url: &str, service: &str) -> anyhow::Result<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())?
        .connect()
        .await?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner();
    Ok(answer.status())
}

/// The example and a core serving one namespace.
struct Website {
    handler: HandlerProcess,
    core: CoreProcess,
    client: Client,
    ns: String,
}

impl Website {
    async fn create(&self, name: &str, html: &str, replicas: i64) {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sdk.operon.dev/v1",
            "kind": "GoWebsite",
            "metadata": {"name": name},
            "spec": {"html": html, "replicas": replicas},
        }))
        .expect("a valid GoWebsite");
        websites(&self.client, &self.ns)
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|err| panic!("creating {name}: {err}"));
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until `check` holds (polling every 200 ms); panics with what it last saw and the
    /// logs of both processes.
    async fn until<T, F, Fut>(&mut self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, String>>,
    {
        let deadline = tokio::time::Instant::now() + CONVERGED;
        let mut last = String::new();
        loop {
            self.core.assert_running();
            match check().await {
                Ok(Some(value)) => return value,
                Ok(None) => {}
                Err(seen) => last = seen,
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what} in {}\nlast seen: {last}\nledger:\n{}\ncore log:\n{}\nhandler log:\n{}",
                    self.ns,
                    self.handler.ledger().entries(),
                    self.core.log_tail(40),
                    operon_e2e::tail(self.handler.log_path(), 40),
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `name` has converged: its ConfigMap holds `html`, its Service serves port
    /// 80, and its status reports the current generation, the URL, one page and `replicas`.
    async fn converged(&mut self, name: &str, html: &str, replicas: i64) -> DynamicObject {
        let (client, ns) = (self.client.clone(), self.ns.clone());
        let url = format!("http://{name}.{ns}.svc/");
        self.until(&format!("{name} to converge"), || {
            let (client, ns, url) = (client.clone(), ns.clone(), url.clone());
            async move {
                let parent = websites(&client, &ns)
                    .get(name)
                    .await
                    .map_err(|e| e.to_string())?;
                let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                    .get_opt(&format!("{name}-html"))
                    .await
                    .map_err(|e| e.to_string())?;
                let svc = Api::<Service>::namespaced(client.clone(), &ns)
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?;
                let served_html = cm
                    .as_ref()
                    .and_then(|cm| cm.data.as_ref())
                    .and_then(|d| d.get("index.html"))
                    .cloned();
                let port = svc
                    .as_ref()
                    .and_then(|s| s.spec.as_ref())
                    .and_then(|s| s.ports.as_ref())
                    .and_then(|p| p.first())
                    .map(|p| p.port);
                let status = &parent.data["status"];
                let done = served_html.as_deref() == Some(html)
                    && port == Some(80)
                    && status["observedGeneration"].as_i64() == parent.metadata.generation
                    && status["url"] == url.as_str()
                    && status["pages"] == json!(1)
                    && status["replicas"] == json!(replicas);
                if done {
                    Ok(Some(parent))
                } else {
                    Err(format!(
                        "status {status}, html {served_html:?}, service port {port:?}"
                    ))
                }
            }
        })
        .await
    }

    /// Waits until the ledger shows the `check` runs of `name` with these outcomes.
    async fn check_runs(&mut self, name: &str, outcomes: &[&str]) -> operon_e2e::Entries {
        let ledger = self.handler.ledger().clone();
        self.until(&format!("the check runs {outcomes:?} of {name}"), || {
            let ledger = ledger.clone();
            async move {
                let runs = ledger.entries().object(name).handler("check");
                if runs.outcomes() == outcomes {
                    Ok(Some(runs))
                } else {
                    Err(format!("{:?}", runs.outcomes()))
                }
            }
        })
        .await
    }
}

#[tokio::test]
async fn the_go_website_example_runs_on_the_real_plane() {
    let lines = code_lines(MAIN_GO);
    eprintln!(
        "[sdk-go] proto/examples/go-website/main.go: {lines} lines of handler code (non-blank, non-comment)"
    );
    assert!(
        lines <= HANDLER_LINES_MAX,
        "the example's handler code grew to {lines} lines (at most {HANDLER_LINES_MAX})"
    );

    let _lock = PlaneLock::shared().await;
    with_temp_ns("sdk-go", |client, ns| async move {
        install_crds(&client, CRD).await;
        let binary = operon_e2e::go_website().await;
        let handler = HandlerProcess::start_binary(binary, "go-website", &[])
            .await
            .unwrap_or_else(|err| panic!("starting the go-website example: {err:#}"));

        // The standard gRPC health service: SERVING for the server and each service it serves.
        for service in ["", "operon.v1.HandlerService", "operon.v1.SyncService"] {
            let status = health(&handler.url(), service)
                .await
                .unwrap_or_else(|err| panic!("health check of {service:?}: {err:#}"));
            assert_eq!(status, ServingStatus::Serving, "health of {service:?}");
        }

        operon_e2e::binaries().await;
        let core_args = [
            "--handler".to_owned(),
            handler.url(),
            "-n".to_owned(),
            ns.clone(),
        ];
        let kubeconfig = plane().await.kubeconfig.clone();
        let mut core = CoreProcess::start("sdk-go", &core_args, &kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("starting the core: {err:#}"));
        core.wait_ready(Duration::from_secs(60)).await;
        let mut site = Website {
            handler,
            core,
            client: client.clone(),
            ns: ns.clone(),
        };

        // Create: the ConfigMap, the Service and the status; the check ran once, and the Event
        // it asked for was posted.
        site.create("home", "<h1>Hello</h1>", 2).await;
        let home = site.converged("home", "<h1>Hello</h1>", 2).await;
        let runs = site.check_runs("home", &["success"]).await;
        assert_eq!(
            runs.iter().next().map(|e| e.reason.as_str()),
            Some("create")
        );
        let cm = site
            .configmaps()
            .get("home-html")
            .await
            .expect("the ConfigMap");
        let owner = cm.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owner
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == home.metadata.uid.as_ref()),
            "the ConfigMap is controlled by its GoWebsite: {owner:?}"
        );
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        wait_for("the Checked Event about home", CONVERGED, || async {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.involved_object.name.as_deref() == Some("home")
                        && e.reason.as_deref() == Some("Checked")
                });
            Ok::<_, kube::Error>(found)
        })
        .await;

        // Update: the ConfigMap follows spec.html; the check ran for the update.
        websites(&client, &ns)
            .patch(
                "home",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"html": "<h1>Hello again</h1>"}})),
            )
            .await
            .expect("patching home");
        site.converged("home", "<h1>Hello again</h1>", 2).await;
        let runs = site.check_runs("home", &["success", "success"]).await;
        assert_eq!(
            runs.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["create", "update"]
        );

        // A flaky page: the first attempt fails temporarily, the core retries after the
        // error's 1 s delay, and the second attempt succeeds.
        site.create("flaky", "<p>flaky</p>", 1).await;
        site.converged("flaky", "<p>flaky</p>", 1).await;
        let runs = site.check_runs("flaky", &["temporary", "success"]).await;
        assert_eq!(runs.retries(), [0, 1]);
        let times = runs.times();
        assert!(
            times[1] - times[0] >= 0.9,
            "the retry waited for the error's delay: {times:?}"
        );
        // It stays done: no third run.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            site.handler
                .ledger()
                .entries()
                .object("flaky")
                .handler("check")
                .len(),
            2
        );

        // Delete: the children go with their parent (the garbage collector, by their
        // ownerReferences).
        websites(&client, &ns)
            .delete("home", &DeleteParams::default())
            .await
            .expect("deleting home");
        let (configmaps, services) = (site.configmaps(), site.services());
        site.until("home's children to be gone", || {
            let (configmaps, services) = (configmaps.clone(), services.clone());
            async move {
                let cm = configmaps
                    .get_opt("home-html")
                    .await
                    .map_err(|e| e.to_string())?;
                let svc = services.get_opt("home").await.map_err(|e| e.to_string())?;
                match (cm, svc) {
                    (None, None) => Ok(Some(())),
                    (cm, svc) => Err(format!(
                        "ConfigMap present: {}, Service present: {}",
                        cm.is_some(),
                        svc.is_some()
                    )),
                }
            }
        })
        .await;
        assert!(
            site.configmaps()
                .get_opt("flaky-html")
                .await
                .unwrap()
                .is_some(),
            "the other website's children stay"
        );

        // SIGTERM: the SDK drains and exits 0.
        let exit = site
            .handler
            .terminate(Duration::from_secs(20))
            .await
            .expect("SIGTERM to the handler service");
        assert!(
            exit.is_some_and(|s| s.success()),
            "the handler service exits 0 after SIGTERM: {exit:?}\n{}",
            operon_e2e::tail(site.handler.log_path(), 20)
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The other kinds: proto/sdk/go/internal/e2eservice on widgets.

/// The task type of the e2e service: a GoTask (`gotasks.sdk.operon.dev`) names its Widget in
/// `spec.widget`.
fn task_crd() -> String {
    operon_e2e::crd_yaml("sdk.operon.dev", "GoTask", true)
}

/// Builds `proto/sdk/go/internal/e2eservice` into the target directory (Go's build cache makes
/// a rebuild of an unchanged tree quick) and returns the binary.
async fn e2e_service() -> PathBuf {
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/sdk/go");
    let binary = operon_e2e::target_dir().join("sdk-go-e2eservice");
    let out = tokio::process::Command::new("go")
        .current_dir(&sdk)
        .args(["build", "-mod=readonly", "-o"])
        .arg(&binary)
        .arg("./internal/e2eservice")
        .output()
        .await
        .expect("running go build");
    assert!(
        out.status.success(),
        "go build ./internal/e2eservice failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

/// Waits until the object `name` of `api` passes `check`; panics with the last version.
async fn wait_object(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    check: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    wait_for(&format!("{name}: {what}"), CONVERGED, || async {
        match api.get_opt(name).await {
            Ok(Some(o)) if check(&o) => Ok(Some(o)),
            Ok(other) => Err(format!("{:?}", other.map(|o| o.data))),
            Err(err) => Err(err.to_string()),
        }
    })
    .await
}

#[tokio::test]
async fn the_go_sdk_serves_daemons_timers_tasks_and_when_filters_to_the_real_core() {
    with_widget_ns("sdk-go-kinds", |client, ns| async move {
        install_crds(&client, &task_crd()).await;
        let binary = e2e_service().await;
        let handler = HandlerProcess::start_binary(&binary, "sdk-go-kinds", &[])
            .await
            .unwrap_or_else(|err| panic!("starting the e2e service: {err:#}"));
        operon_e2e::binaries().await;
        let core_args = [
            "--handler".to_owned(),
            handler.url(),
            "-n".to_owned(),
            ns.clone(),
        ];
        let kubeconfig = plane().await.kubeconfig.clone();
        let mut core = CoreProcess::start("sdk-go-kinds", &core_args, &kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("starting the core: {err:#}"));
        core.wait_ready(Duration::from_secs(60)).await;
        let api = operon_e2e::widgets(&client, &ns);
        let create = |o: DynamicObject| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &o)
                    .await
                    .unwrap_or_else(|err| panic!("creating a widget: {err}"))
            }
        };

        // When: the create handler runs for `plain`, and is answered "not matched" for
        // `skipped` without running.
        create(widget("plain", json!({"value": "p"}))).await;
        create(widget("skipped", json!({"value": "s", "skip": true}))).await;
        wait_object(&api, "plain", "status.created", |o| {
            o.data["status"]["created"]["value"] == "p"
        })
        .await;
        let ledger = handler.ledger().clone();
        wait_for("the not-matched answer for skipped", CONVERGED, || async {
            let runs = ledger.entries().object("skipped").handler("created");
            Ok::<_, String>((!runs.is_empty()).then_some(()))
        })
        .await;
        let skipped = api.get("skipped").await.expect("skipped");
        assert!(
            skipped.data["status"].get("created").is_none(),
            "{:?}",
            skipped.data
        );
        assert!(
            ledger
                .entries()
                .object("skipped")
                .handler("created")
                .outcomes()
                .iter()
                .all(|o| *o == "not_matched"),
            "{}",
            ledger.entries()
        );

        // A daemon sees its object live and patches it.
        create(widget("watched", json!({"value": "one"})).with_labels(&[("daemon", "yes")])).await;
        wait_object(&api, "watched", "the daemon seeing one", |o| {
            o.data["status"]["watcher"]["seen"] == "one"
        })
        .await;
        api.patch(
            "watched",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"value": "two"}})),
        )
        .await
        .expect("patching watched");
        wait_object(&api, "watched", "the daemon seeing two", |o| {
            o.data["status"]["watcher"]["seen"] == "two"
        })
        .await;

        // A timer ticks every second; its result goes to status.ticker.
        create(widget("timed", json!({"value": "t"})).with_labels(&[("timer", "yes")])).await;
        wait_object(&api, "timed", "status.ticker", |o| {
            o.data["status"]["ticker"]["seen"] == "t"
        })
        .await;
        wait_for("a second tick", CONVERGED, || async {
            let runs = ledger.entries().object("timed").handler("ticker");
            Ok::<_, String>((runs.outcomes() == ["success", "success"]).then_some(()))
        })
        .await;

        // A task: two steps streamed, then the final message.
        let tasks: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("sdk.operon.dev", "v1", "GoTask")),
        );
        let task: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sdk.operon.dev/v1", "kind": "GoTask",
            "metadata": {"name": "t1"}, "spec": {"widget": "plain"},
        }))
        .expect("a valid GoTask");
        tasks
            .create(&PostParams::default(), &task)
            .await
            .expect("creating the task");
        let done = wait_object(&tasks, "t1", "Succeeded", |t| {
            t.data["status"]["phase"] == "Succeeded"
        })
        .await;
        let status = &done.data["status"];
        assert_eq!(status["message"], "2 steps for plain", "{status}");
        assert_eq!(
            status["steps"].as_array().map(Vec::len),
            Some(2),
            "{status}"
        );

        // Deleting the daemon's object stops the daemon gracefully; it exits and the core lets
        // the object go.
        api.delete("watched", &DeleteParams::default())
            .await
            .expect("deleting watched");
        wait_for("watched to be gone", CONVERGED, || async {
            Ok::<_, kube::Error>(api.get_opt("watched").await?.is_none().then_some(()))
        })
        .await;
        let runs = ledger.entries().object("watched").handler("watcher");
        assert_eq!(runs.outcomes(), ["success"], "{}", ledger.entries());
        core.assert_running();
    })
    .await;
}
