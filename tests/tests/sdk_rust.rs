//! End-to-end test of the Rust SDK (`proto/sdk/rust`, crate `operon-handler`) through its
//! example operator `proto/examples/rust-website` on the real plane: a `Website`
//! (`websites.sdk.operon.dev`) owns a ConfigMap with its HTML and a Service on port 80, and gets
//! `status.url`/`status.pages`; a create/update handler fails once for a "flaky" page.
//!
//! Each test gets a fresh namespace, the example's own process (started as a user starts it:
//! `--listen`, first stdout line `listening on ADDR`) and its own core (`operon run -n NS`), and
//! asserts on what an outsider sees: the children and their owner references, the status, the
//! Events, the handler service's `grpc.health.v1` answers, and its exit on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use operon_e2e::cluster::PlaneLock;
use operon_e2e::{CoreProcess, install_crds, log_dir, plane, tail, wait_for, with_temp_ns};
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The example's CRD, as the example ships it.
const CRD: &str = include_str!("../../proto/examples/rust-website/crd.yaml");

/// The example's handler code.
const MAIN_RS: &str = include_str!("../../proto/examples/rust-website/src/main.rs");

/// How many lines of handler code the example may have (blank and comment lines aside).
const MAX_HANDLER_LINES: usize = 60;

const CONVERGED: Duration = Duration::from_secs(90);

fn websites(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("sdk.operon.dev", "v1", "Website");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// The example's lines of code: not blank, not a comment.
fn handler_lines(source: &str) -> usize {
    source
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .count()
}

#[test]
fn the_example_is_short() {
    let lines = handler_lines(MAIN_RS);
    println!("proto/examples/rust-website/src/main.rs: {lines} lines of code");
    assert!(
        lines <= MAX_HANDLER_LINES,
        "the example has {lines} lines of code, more than {MAX_HANDLER_LINES}"
    );
}

/// The example handler service, running; killed on drop (its log tail printed on a panic).
struct Example {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    _stdout: BufReader<ChildStdout>,
}

impl Example {
    async fn start(binary: &Path) -> Self {
        let log = log_dir().join(format!(
            "sdk-rust-{}-{}.handler.log",
            std::process::id(),
            rand_suffix()
        ));
        let stderr = std::fs::File::create(&log).expect("a log file");
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", binary.display()));
        let stdout = child.stdout.take().expect("its stdout");
        let (reader, line) = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            reader.read_line(&mut line).map(|_| (reader, line))
        })
        .await
        .unwrap()
        .expect("reading its first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "the example printed {line:?}, not its address; its log:\n{}",
                    tail(&log, 40)
                )
            });
        Self {
            child: Some(child),
            addr,
            log,
            _stdout: reader,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn health(&self, service: &str) -> Result<i32, tonic::Status> {
        let channel = tonic::transport::Channel::from_shared(self.url())
            .map_err(|err| tonic::Status::invalid_argument(err.to_string()))?
            .connect()
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        let mut client = HealthClient::new(channel);
        let answer = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
        Ok(answer.into_inner().status)
    }

    /// SIGTERMs it and waits for its exit; the status, or `None` after `grace`.
    async fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- the last lines of the example ({}) ----\n{}\n----",
                self.log.display(),
                tail(&self.log, 60)
            );
        }
    }
}

/// The Events about `name` in `ns`.
async fn events_about(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .expect("listing Events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

/// Waits for an Event about `name` with `reason` whose message contains `text`.
async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str, text: &str) -> Event {
    wait_for(
        &format!("an Event {reason} about {name} containing {text:?}"),
        CONVERGED,
        || async {
            let events = events_about(client, ns, name).await;
            let found = events.iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().unwrap_or_default().contains(text)
            });
            match found {
                Some(e) => Ok(Some(e.clone())),
                None => Err(events
                    .iter()
                    .map(|e| format!("{:?} {:?}", e.reason, e.message))
                    .collect::<Vec<_>>()),
            }
        },
    )
    .await
}

fn controller_uid<K: kube::Resource>(o: &K) -> Option<String> {
    o.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

/// Waits until the ConfigMap `name` serves `html`.
async fn wait_html(configmaps: &Api<ConfigMap>, name: &str, html: &str) -> ConfigMap {
    wait_for(
        &format!("the ConfigMap {name} with {html:?}"),
        CONVERGED,
        || async {
            let cm = configmaps.get_opt(name).await.map_err(|e| e.to_string())?;
            let served = cm
                .as_ref()
                .and_then(|cm| cm.data.as_ref())
                .and_then(|d| d.get("index.html"))
                .cloned();
            match (cm, served) {
                (Some(cm), Some(served)) if served == html => Ok(Some(cm)),
                (_, served) => Err(format!("index.html: {served:?}")),
            }
        },
    )
    .await
}

async fn create(api: &Api<DynamicObject>, name: &str, html: &str) -> DynamicObject {
    let website: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sdk.operon.dev/v1",
        "kind": "Website",
        "metadata": {"name": name},
        "spec": {"html": html, "replicas": 2},
    }))
    .expect("a valid Website");
    api.create(&PostParams::default(), &website)
        .await
        .unwrap_or_else(|err| panic!("creating {name}: {err}"))
}

#[tokio::test]
async fn a_website_owns_its_page_and_service() {
    let _lock = PlaneLock::shared().await;
    with_temp_ns("sdk-rust", |client, ns| async move {
        install_crds(&client, CRD).await;
        let binaries = operon_e2e::binaries().await;
        let mut example = Example::start(&binaries.website_example).await;
        // The standard health service answers SERVING for the whole server and the contract's
        // services.
        for service in ["", "operon.v1.HandlerService", "operon.v1.SyncService"] {
            assert_eq!(
                example
                    .health(service)
                    .await
                    .expect("the health service answers"),
                ServingStatus::Serving as i32,
                "grpc.health.v1 for {service:?}"
            );
        }
        let args = vec![
            "--handler".to_owned(),
            example.url(),
            "-n".to_owned(),
            ns.clone(),
        ];
        let kubeconfig = plane().await.kubeconfig.clone();
        let mut core = CoreProcess::start("sdk-rust", &args, &kubeconfig)
            .await
            .expect("starting the core");
        core.wait_ready(Duration::from_secs(60)).await;

        let api = websites(&client, &ns);
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);

        // Create: a ConfigMap with the page and a Service on port 80, both owned by the Website;
        // its status; and the create handler's Event from its first attempt.
        let started = Instant::now();
        let home = create(&api, "home", "<h1>Hello</h1>").await;
        let uid = home.metadata.uid.clone();
        let cm = wait_html(&configmaps, "home", "<h1>Hello</h1>").await;
        assert_eq!(controller_uid(&cm), uid, "{cm:?}");
        let svc = wait_for("the Service home", CONVERGED, || async {
            services.get_opt("home").await
        })
        .await;
        assert_eq!(controller_uid(&svc), uid, "{svc:?}");
        let ports = svc.spec.and_then(|s| s.ports).unwrap_or_default();
        assert_eq!(ports.iter().map(|p| p.port).collect::<Vec<_>>(), [80]);
        let status = wait_for("the Website's status", CONVERGED, || async {
            let o = api.get("home").await?;
            let s = o.data["status"].clone();
            Ok::<_, kube::Error>(
                (s["observedGeneration"].as_i64() == o.metadata.generation && s["url"].is_string())
                    .then_some(s),
            )
        })
        .await;
        assert_eq!(status["url"], json!(format!("http://home.{ns}.svc/")));
        assert_eq!(status["pages"], json!(1));
        assert_eq!(status["replicas"], json!(2));
        wait_event(&client, &ns, "home", "HtmlChecked", "14 bytes on attempt 1").await;
        println!(
            "create → children, status and Event in {:?}",
            started.elapsed()
        );

        // Update: the page changes in the ConfigMap; the update handler checks it.
        let started = Instant::now();
        api.patch(
            "home",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"html": "<h1>Hello again</h1>"}})),
        )
        .await
        .expect("patching home");
        wait_html(&configmaps, "home", "<h1>Hello again</h1>").await;
        wait_event(&client, &ns, "home", "HtmlChecked", "20 bytes on attempt 1").await;
        println!("update → ConfigMap and Event in {:?}", started.elapsed());

        // A flaky page: the first attempt fails temporarily (the core says so in a Warning
        // Event), the retry a second later succeeds (the handler's Event names attempt 2).
        let started = Instant::now();
        create(&api, "flaky", "<p>flaky</p>").await;
        let retried = wait_event(&client, &ns, "flaky", "HtmlChecked", "on attempt 2").await;
        let warning = events_about(&client, &ns, "flaky")
            .await
            .into_iter()
            .find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.message
                        .as_deref()
                        .unwrap_or_default()
                        .contains("the page is flaky")
            });
        assert!(
            warning.is_some(),
            "a Warning Event about the first attempt: {:#?}",
            events_about(&client, &ns, "flaky").await
        );
        assert!(
            !events_about(&client, &ns, "flaky").await.iter().any(|e| e
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("on attempt 1")),
            "the flaky page succeeded on its first attempt"
        );
        wait_html(&configmaps, "flaky", "<p>flaky</p>").await;
        println!(
            "flaky → retried once, then {:?} in {:?}",
            retried.message,
            started.elapsed()
        );
        // The progress record is purged once the handler succeeded.
        let flaky = api.get("flaky").await.expect("flaky");
        let progress: Vec<&String> = flaky
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("kopf.zalando.org/check_html"))
            .collect();
        assert!(progress.is_empty(), "progress left behind: {progress:?}");

        // Delete: the children go with their owner (the garbage collector follows the owner
        // references).
        let started = Instant::now();
        for name in ["home", "flaky"] {
            api.delete(name, &DeleteParams::background())
                .await
                .unwrap_or_else(|err| panic!("deleting {name}: {err}"));
        }
        wait_for(
            "the Websites and their children to be gone",
            CONVERGED,
            || async {
                let left = (
                    api.list(&ListParams::default()).await?.items.len(),
                    configmaps
                        .list(&ListParams::default().labels("app.kubernetes.io/part-of=website"))
                        .await?
                        .items
                        .len(),
                    services.list(&ListParams::default()).await?.items.len(),
                );
                Ok::<_, kube::Error>((left == (0, 0, 0)).then_some(()))
            },
        )
        .await;
        println!("delete → children gone in {:?}", started.elapsed());
        core.assert_running();

        // SIGTERM: the service drains and exits cleanly.
        let status = example.terminate(Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "the example did not exit cleanly on SIGTERM: {status:?}\n{}",
            tail(&example.log, 20)
        );
        let log = std::fs::read_to_string(&example.log).unwrap_or_default();
        assert!(log.contains("Shutting down"), "{}", tail(&example.log, 20));
    })
    .await;
}
