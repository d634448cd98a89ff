//! The Helm chart on a real node (issue 23): a kubelet, containerd and runc run Operon's pods,
//! built from the images of `deploy/docker/build.sh`, on a plane of its own.
//!
//! For both topologies — the core with the handler as a sidecar, and the two as separate
//! Deployments with mutual TLS — `helm install` the chart with the locally built images, then:
//!
//! - the core and handler pods become Ready through their own probes (the core's HTTP `/readyz`,
//!   the handler's gRPC health), and the PodDisruptionBudgets count them;
//! - example objects are handled;
//! - `kubectl delete pod` of the core: the Deployment (`Recreate`) makes a new pod, and handling
//!   goes on with no handler succeeding twice for the same change (judged from both pods' logs);
//! - `helm upgrade` with changed limits rolls the pods, and the new limits are what the kernel
//!   enforces (the containers' memory cgroups on the node, and as seen from inside the handler);
//! - the containers' user, read-only root filesystem, capabilities, no-new-privileges and seccomp
//!   are what the chart's values say, read from inside the pod (the handler container itself;
//!   the core — a `FROM scratch` image without a shell — through an ephemeral container in its
//!   process namespace, reading `/proc/1`);
//! - the ServiceAccount token is mounted, and the core's only authority is the ServiceAccount's
//!   RBAC: with the status rule taken out of `rbac.rules`, its status patch fails with 403 naming
//!   `system:serviceaccount:<ns>:<name>` in its log.
//!
//! And with three replicas and leader election (sidecar topology), as far as one host-network node
//! allows: one pod runs and holds the Lease while the scheduler holds the other two back for want
//! of free ports; deleting the leader's pod hands the Lease to another replica, which handles on
//! with no handler succeeding twice.
//!
//! The pods use the node's network (`hostNetwork`, bound to 127.0.0.1 on ports picked here; see
//! tests/cluster/node-up.sh). Ignored by plain `cargo test`: it needs root, containerd and the
//! images. `./tests/run.sh` runs it in its own step:
//!
//! ```sh
//! export OPERON_CLUSTER_DIR=~/.cache/operon/cluster-node OPERON_PLANE_PROFILE=node
//! tests/cluster/up.sh && tests/cluster/node-up.sh
//! cargo test -p operon-e2e --test node -- --ignored
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use operon_e2e::cluster::{cluster_dir, cluster_env};
use operon_e2e::command::{self, helm_bin, repo_root};
use operon_e2e::pki::Pki;
use operon_e2e::{free_port, wait_for, with_temp_ns};
use serde_json::Value;

/// Pods becoming Ready, rollouts: images are local, but 2 shared cores.
const READY: Duration = Duration::from_secs(180);
/// An object being handled.
const HANDLED: Duration = Duration::from_secs(90);

/// [`try_run`] without an environment of its own.
fn try_run(program: &Path, args: &[&str], stdin: &str) -> Result<String, String> {
    command::try_run(program, args, &[], stdin)
}

/// [`command::run`] without an environment of its own.
fn run(program: &Path, args: &[&str], stdin: &str) -> String {
    command::run(program, args, &[], stdin)
}

/// The node's plane and its tools.
struct Node {
    kubectl: PathBuf,
    helm: PathBuf,
    kubeconfig: String,
    apiserver_port: String,
}

impl Node {
    /// Checks that this process uses a plane of the `node` profile of its own, and brings the
    /// node up (idempotent: at once when it is up).
    fn up() -> Self {
        let dir = cluster_dir();
        let shared =
            Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cache/operon/cluster");
        assert!(
            std::env::var("OPERON_PLANE_PROFILE").as_deref() == Ok("node") && dir != shared,
            "the node test needs a plane of its own: run it with OPERON_CLUSTER_DIR=<a directory of \
             its own> OPERON_PLANE_PROFILE=node (see this file's header); OPERON_CLUSTER_DIR is {}",
            dir.display()
        );
        let started = Instant::now();
        let out = run(&repo_root().join("tests/cluster/up.sh"), &[], "");
        assert!(out.contains("export KUBECONFIG="), "up.sh printed {out}");
        run(&repo_root().join("tests/cluster/node-up.sh"), &[], "");
        eprintln!(
            "[node] plane and node up in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let env = cluster_env().expect("the plane's env file");
        assert_eq!(env.get("PLANE_PROFILE").map(String::as_str), Some("node"));
        Node {
            kubectl: PathBuf::from(&env["BIN"]).join("kubectl"),
            helm: helm_bin(),
            kubeconfig: dir.join("kubeconfig").display().to_string(),
            apiserver_port: env["APISERVER_PORT"].clone(),
        }
    }

    fn try_kubectl(&self, args: &[&str], stdin: &str) -> Result<String, String> {
        let mut all = vec!["--kubeconfig", &self.kubeconfig];
        all.extend_from_slice(args);
        try_run(&self.kubectl, &all, stdin)
    }

    fn kubectl(&self, args: &[&str], stdin: &str) -> String {
        self.try_kubectl(args, stdin)
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all, "")).expect("kubectl's JSON")
    }

    fn helm(&self, args: &[&str], stdin: &str) -> String {
        let mut all = vec!["--kubeconfig", &self.kubeconfig];
        all.extend_from_slice(args);
        run(&self.helm, &all, stdin)
    }
}

/// One install of the chart: its namespace, topology and the values given to helm.
struct Release<'a> {
    node: &'a Node,
    ns: String,
    separate: bool,
}

impl Release<'_> {
    /// `helm install operon` with the node's values (and `extra` `--set`s); returns the
    /// release's values, all of them (`helm get values --all`).
    fn install(&self, extra: &[&str]) -> Value {
        let (node, ns) = (self.node, &self.ns);
        let topology = if self.separate { "separate" } else { "sidecar" };
        let chart = repo_root().join("deploy/helm/operon").display().to_string();
        // Host-network pods on the node's 127.0.0.1, on ports of their own.
        let (http, grpc, health, liveness) = (free_port(), free_port(), free_port(), free_port());
        let mut sets = vec![
            format!("topology={topology}"),
            "watch.allNamespaces=false".to_owned(),
            format!("watch.namespaces={{{ns}}}"),
            "hostNetwork=true".to_owned(),
            "listenAddress=127.0.0.1".to_owned(),
            "core.image.repository=localhost/operon".to_owned(),
            "handler.image.repository=localhost/operon-kopf".to_owned(),
            // No registry: an image that was not imported fails at once (ErrImageNeverPull).
            "core.image.pullPolicy=Never".to_owned(),
            "handler.image.pullPolicy=Never".to_owned(),
            format!("core.httpPort={http}"),
            format!("handler.port={grpc}"),
            format!("handler.probes.port={health}"),
            format!("handler.healthPort={liveness}"),
            // In-cluster config: the API server where the plane has it (no Service proxy here).
            "core.extraEnv[0].name=KUBERNETES_SERVICE_HOST".to_owned(),
            "core.extraEnv[0].value=127.0.0.1".to_owned(),
            "core.extraEnv[1].name=KUBERNETES_SERVICE_PORT".to_owned(),
        ];
        if self.separate {
            // One handler pod per node on the node's network; its Service name for the core
            // (and the TLS certificate's name) resolves to the node.
            sets.push("handler.replicas=1".to_owned());
            sets.push("hostAliases[0].ip=127.0.0.1".to_owned());
            sets.push("hostAliases[0].hostnames[0]=operon-handler".to_owned());
            tls_secret(self, "operon-handler");
        }
        sets.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut args: Vec<String> = vec![
            "install".into(),
            "operon".into(),
            chart,
            "-n".into(),
            ns.clone(),
        ];
        for s in &sets {
            args.extend(["--set".to_owned(), s.clone()]);
        }
        args.extend([
            "--set-string".to_owned(),
            format!("core.extraEnv[1].value={}", node.apiserver_port),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node.helm(&args, "");
        serde_json::from_str(&node.helm(
            &["get", "values", "operon", "-n", ns, "--all", "-o", "json"],
            "",
        ))
        .expect("helm's values")
    }

    /// The names of a component's pods that are Ready and not being deleted.
    fn ready_pods(&self, component: &str) -> Vec<String> {
        self.pods(component)
            .iter()
            .filter(|pod| {
                pod["metadata"]["deletionTimestamp"].is_null()
                    && pod["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .map(|pod| pod["metadata"]["name"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// `kubectl -n NS …`
    fn k(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        self.node.kubectl(&all, "")
    }

    fn apply(&self, yaml: &str) {
        self.node
            .kubectl(&["-n", &self.ns, "apply", "-f", "-"], yaml);
    }

    /// The pods of a component (`core` or `handler`), oldest first.
    fn pods(&self, component: &str) -> Vec<Value> {
        let list = self.node.json(&[
            "-n",
            &self.ns,
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/component={component}"),
        ]);
        let mut pods = list["items"].as_array().cloned().unwrap_or_default();
        pods.sort_by_key(|p| {
            p["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        });
        pods
    }

    /// Waits until exactly one pod of the component exists, is not being deleted, and is Ready
    /// (every container's probes passed); returns its name. `not` excludes an older pod.
    async fn ready_pod(&self, component: &str, not: Option<&str>) -> String {
        let started = Instant::now();
        let name = wait_for(
            &format!("one Ready {component} pod (not {not:?})"),
            READY,
            || {
                let pods = self.pods(component);
                async move {
                    let summary: Vec<String> = pods.iter().map(pod_summary).collect();
                    let [pod] = pods.as_slice() else {
                        return Err(summary);
                    };
                    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
                    let ready = pod["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True");
                    if ready
                        && pod["metadata"]["deletionTimestamp"].is_null()
                        && Some(name.as_str()) != not
                    {
                        Ok(Some(name))
                    } else {
                        Err(summary)
                    }
                }
            },
        )
        .await;
        eprintln!(
            "[node {}] {component} pod {name} Ready in {:.1}s",
            self.ns,
            started.elapsed().as_secs_f64()
        );
        name
    }

    /// The core container's log of a pod.
    fn core_log(&self, pod: &str) -> String {
        self.k(&["logs", pod, "-c", "core"])
    }

    /// Waits until the object's status has `key` (a handler's result).
    async fn handled(&self, name: &str, key: &str) -> Value {
        wait_for(&format!("{name}: status.{key}"), HANDLED, || {
            let got = self.node.try_kubectl(
                &["-n", &self.ns, "get", "kopfexample", name, "-o", "json"],
                "",
            );
            async move {
                let object: Value = serde_json::from_str(&got?).map_err(|e| e.to_string())?;
                let result = &object["status"][key];
                Ok::<_, String>((!result.is_null()).then(|| result.clone()))
            }
        })
        .await
    }

    fn example(&self, name: &str, field: &str) {
        self.apply(&format!(
            "apiVersion: kopf.dev/v1\nkind: KopfExample\nmetadata: {{name: {name}}}\n\
             spec: {{field: {field}, items: [a, b]}}\n"
        ));
    }

    /// How often a core's log says that `handler` succeeded for object `name`.
    fn successes(&self, log: &str, handler: &str, name: &str) -> usize {
        let message = format!("\"message\":\"Handler '{handler}' succeeded.\"");
        let object = format!("\"object\":\"{}/{name}\"", self.ns);
        log.lines()
            .filter(|l| l.contains(&message) && l.contains(&object))
            .count()
    }

    /// The handler container's pod: the core's pod in the sidecar topology.
    async fn handler_pod(&self, core: &str) -> String {
        if self.separate {
            self.ready_pod("handler", None).await
        } else {
            core.to_owned()
        }
    }
}

fn pod_summary(pod: &Value) -> String {
    let statuses: Vec<String> = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{}: ready={} state={}", c["name"], c["ready"], c["state"]))
        .collect();
    // Conditions not (yet) true say why a pod is stuck: unscheduled (an untolerated taint such as
    // disk-pressure, no free ports), containers not ready.
    let waiting: Vec<String> = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "True")
        .map(|c| format!("{} {}: {}", c["type"], c["reason"], c["message"]))
        .collect();
    format!(
        "{} phase={} deleting={} [{}] {{{}}}",
        pod["metadata"]["name"],
        pod["status"]["phase"],
        !pod["metadata"]["deletionTimestamp"].is_null(),
        statuses.join("; "),
        waiting.join("; ")
    )
}

/// The memory limit the kernel enforces on a container: its cgroup on this node (v1 layout,
/// node-up.sh's cgroup root, named in `<plane dir>/node/cgroup`; cgroupfs driver).
fn cgroup_memory_limit(pod: &Value, container: &str) -> u64 {
    let uid = pod["metadata"]["uid"].as_str().expect("a pod uid");
    let id = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == container)
        .and_then(|c| c["containerID"].as_str())
        .and_then(|id| id.strip_prefix("containerd://"))
        .unwrap_or_else(|| panic!("no containerd ID for {container} in {pod}"));
    let qos = pod["status"]["qosClass"]
        .as_str()
        .expect("a QoS class")
        .to_lowercase();
    let root =
        std::fs::read_to_string(cluster_dir().join("node/cgroup")).expect("the node's cgroup root");
    let root = root.trim();
    let path =
        format!("/sys/fs/cgroup/memory/{root}/kubepods/{qos}/pod{uid}/{id}/memory.limit_in_bytes");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .parse()
        .expect("a number")
}

/// What the kernel says about a process, read from /proc inside a container.
const PROC_REPORT: &str = r#"
import json, sys
pid = sys.argv[1]
status = dict(l.rstrip("\n").split(":\t", 1) for l in open(f"/proc/{pid}/status") if ":\t" in l)
root = [l.split() for l in open(f"/proc/{pid}/mountinfo") if l.split()[4] == "/"][-1]
print("REPORT " + json.dumps({
    "cmd": open(f"/proc/{pid}/cmdline").read().split("\0")[0],
    "uid": status["Uid"].split(), "gid": status["Gid"].split(), "groups": status["Groups"].split(),
    "cap_eff": status["CapEff"], "cap_prm": status["CapPrm"], "cap_bnd": status["CapBnd"],
    "no_new_privs": status["NoNewPrivs"], "seccomp": status["Seccomp"],
    "root_options": root[5].split(","),
}))
"#;

/// Checks a /proc report against the chart's podSecurityContext and securityContext.
fn check_security(report: &Value, values: &Value, what: &str) {
    let pod = &values["podSecurityContext"];
    let container = &values["securityContext"];
    let user = pod["runAsUser"].as_u64().expect("runAsUser").to_string();
    let group = pod["runAsGroup"].as_u64().expect("runAsGroup").to_string();
    let all = |v: &Value, want: &str| v.as_array().is_some_and(|a| a.iter().all(|x| x == want));
    assert!(
        all(&report["uid"], &user),
        "{what}: uid {} (the chart: runAsUser {user})",
        report["uid"]
    );
    assert!(
        all(&report["gid"], &group),
        "{what}: gid {} (the chart: runAsGroup {group})",
        report["gid"]
    );
    let fs_group = pod["fsGroup"].as_u64().expect("fsGroup").to_string();
    assert!(
        report["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == fs_group.as_str())),
        "{what}: supplementary groups {} lack fsGroup {fs_group}",
        report["groups"]
    );
    assert_eq!(
        container["readOnlyRootFilesystem"], true,
        "the chart's value changed"
    );
    assert!(
        report["root_options"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "ro")),
        "{what}: the root filesystem is mounted {} (the chart: readOnlyRootFilesystem)",
        report["root_options"]
    );
    assert_eq!(
        container["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "the chart's value changed"
    );
    for set in ["cap_eff", "cap_prm", "cap_bnd"] {
        assert_eq!(
            report[set], "0000000000000000",
            "{what}: {set} (the chart drops ALL)"
        );
    }
    assert_eq!(
        container["allowPrivilegeEscalation"], false,
        "the chart's value changed"
    );
    assert_eq!(
        report["no_new_privs"], "1",
        "{what}: NoNewPrivs (allowPrivilegeEscalation: false)"
    );
    assert_eq!(
        pod["seccompProfile"]["type"], "RuntimeDefault",
        "the chart's value changed"
    );
    assert_eq!(
        report["seccomp"], "2",
        "{what}: Seccomp mode (2 = filter: RuntimeDefault)"
    );
}

fn parse_report(output: &str, what: &str) -> Value {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("REPORT "))
        .unwrap_or_else(|| panic!("{what}: no report in {output:?}"));
    serde_json::from_str(line).expect("the report's JSON")
}

/// Makes the separate topology's TLS Secret: a CA, and one certificate for both sides whose
/// names are the handler Service's (as deploy/README.md says).
fn tls_secret(release: &Release<'_>, service: &str) {
    let pki = Pki::new(&format!("node-tls-{}", release.ns));
    pki.ca("ca");
    let ns = &release.ns;
    pki.issue_for(
        "ca",
        "tls",
        "serverAuth,clientAuth",
        &format!("DNS:{service},DNS:{service}.{ns}.svc"),
    );
    release.k(&[
        "create",
        "secret",
        "generic",
        "operon-grpc-tls",
        &format!("--from-file={}", pki.path("ca.crt")),
        &format!("--from-file={}", pki.path("tls.crt")),
        &format!("--from-file={}", pki.path("tls.key")),
    ]);
}

async fn chart_on_the_node(topology: &'static str) {
    let node = Node::up();
    node.kubectl(
        &[
            "apply",
            "-f",
            &repo_root()
                .join("deploy/local/crd.yaml")
                .display()
                .to_string(),
        ],
        "",
    );
    with_temp_ns(&format!("node-{topology}"), move |_client, ns| async move {
        let t0 = Instant::now();
        let node = Node::up();
        let release = Release { node: &node, ns: ns.clone(), separate: topology == "separate" };
        let chart = repo_root().join("deploy/helm/operon").display().to_string();

        let values = release.install(&[]);

        // --- Ready through the real probes -------------------------------------------------
        let core = release.ready_pod("core", None).await;
        let handler_pod = release.handler_pod(&core).await;
        let spec = release.node.json(&["-n", &ns, "get", "pod", &core]);
        let containers = spec["spec"]["containers"].as_array().expect("containers").clone();
        let core_c = containers.iter().find(|c| c["name"] == "core").expect("a core container");
        assert_eq!(core_c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(core_c["livenessProbe"]["httpGet"]["path"], "/healthz");
        let handler_spec = release.node.json(&["-n", &ns, "get", "pod", &handler_pod]);
        let handler_c = handler_spec["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "handler").cloned())
            .expect("a handler container");
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(
                handler_c[probe]["grpc"]["port"], values["handler"]["probes"]["port"],
                "{probe} of the handler"
            );
        }
        // The kubelet ran them: Unhealthy events are allowed during start-up (the core's
        // /readyz answers 503 until the handler service has answered Describe), Ready is not
        // possible without them passing. The PDBs count the Ready pods.
        let pdb = wait_for("the core's PDB counting the Ready pod", READY, || {
            let pdb = release.node.json(&["-n", &ns, "get", "pdb", "operon"]);
            async move {
                let s = &pdb["status"];
                if s["currentHealthy"] == 1 && s["expectedPods"] == 1 && s["disruptionsAllowed"] == 1 {
                    Ok(Some(pdb))
                } else {
                    Err(s.clone())
                }
            }
        })
        .await;
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        if release.separate {
            // minAvailable 1 with one handler pod: no voluntary disruption allowed, and the
            // Eviction API refuses one (429).
            wait_for("the handler's PDB", READY, || {
                let pdb = release.node.json(&["-n", &ns, "get", "pdb", "operon-handler"]);
                async move {
                    let s = &pdb["status"];
                    if s["currentHealthy"] == 1 && s["disruptionsAllowed"] == 0 && s["observedGeneration"] == 1 {
                        Ok(Some(()))
                    } else {
                        Err(s.clone())
                    }
                }
            })
            .await;
            let eviction = format!(
                r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{handler_pod}","namespace":"{ns}"}}}}"#
            );
            let refused = node
                .try_kubectl(
                    &["create", "--raw", &format!("/api/v1/namespaces/{ns}/pods/{handler_pod}/eviction"), "-f", "-"],
                    &eviction,
                )
                .expect_err("evicting the only handler pod must be refused by its PDB");
            assert!(
                refused.contains("disruption budget") || refused.contains("429"),
                "the refusal: {refused}"
            );
        }
        eprintln!("[node {ns}] installed and Ready in {:.1}s", t0.elapsed().as_secs_f64());

        // --- objects are handled -----------------------------------------------------------
        release.example("ex-1", "one");
        let greet = release.handled("ex-1", "greet").await;
        assert_eq!(greet["message"], "hello from Python, ex-1");
        release.handled("ex-1", "check_field").await;
        let log_1 = release.core_log(&core);
        assert_eq!(release.successes(&log_1, "greet", "ex-1"), 1, "first pod:\n{log_1}");

        // --- kubectl delete pod: recreated, handling continues, nothing twice ---------------
        let strategy = release.k(&["get", "deploy", "operon", "-o", "jsonpath={.spec.strategy.type}"]);
        assert_eq!(strategy, "Recreate");
        let t = Instant::now();
        release.k(&["delete", "pod", &core, "--wait=false"]);
        let core_2 = release.ready_pod("core", Some(&core)).await;
        eprintln!("[node {ns}] core pod recreated and Ready in {:.1}s", t.elapsed().as_secs_f64());
        release.example("ex-2", "two");
        release.k(&["patch", "kopfexample", "ex-1", "--type=merge", "-p", r#"{"spec":{"field":"changed"}}"#]);
        release.handled("ex-2", "greet").await;
        let changed = release.handled("ex-1", "field_changed/spec.field").await;
        assert_eq!(changed, serde_json::json!({"from": "one", "to": "changed"}));
        let log_2 = release.core_log(&core_2);
        assert_eq!(release.successes(&log_2, "greet", "ex-1"), 0, "greet ran again for ex-1:\n{log_2}");
        assert_eq!(release.successes(&log_2, "check_field", "ex-1"), 0, "check_field ran again:\n{log_2}");
        assert_eq!(release.successes(&log_2, "field_changed/spec.field", "ex-1"), 1, "second pod:\n{log_2}");
        assert_eq!(release.successes(&log_2, "greet", "ex-2"), 1, "second pod:\n{log_2}");

        // --- helm upgrade with changed limits rolls the pods ---------------------------------
        let t = Instant::now();
        node.helm(
            &[
                "upgrade", "operon", &chart, "-n", &ns, "--reuse-values",
                "--set", "core.resources.limits.memory=320Mi",
                "--set", "handler.resources.limits.memory=384Mi",
            ],
            "",
        );
        let core_3 = release.ready_pod("core", Some(&core_2)).await;
        let handler_3 = if release.separate {
            release.ready_pod("handler", Some(&handler_pod)).await
        } else {
            core_3.clone()
        };
        eprintln!("[node {ns}] upgrade rolled out in {:.1}s", t.elapsed().as_secs_f64());
        let core_obj = release.node.json(&["-n", &ns, "get", "pod", &core_3]);
        let handler_obj = release.node.json(&["-n", &ns, "get", "pod", &handler_3]);
        assert_eq!(cgroup_memory_limit(&core_obj, "core"), 320 << 20, "the core's enforced limit");
        assert_eq!(cgroup_memory_limit(&handler_obj, "handler"), 384 << 20, "the handler's enforced limit");
        let inside = release.k(&[
            "exec", &handler_3, "-c", "handler", "--", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]);
        assert_eq!(inside.trim(), (384u64 << 20).to_string(), "the limit seen from inside the handler");
        release.example("ex-3", "three");
        release.handled("ex-3", "greet").await;
        let log_3 = release.core_log(&core_3);
        for old in ["ex-1", "ex-2"] {
            for handler in ["greet", "check_field", "field_changed/spec.field"] {
                assert_eq!(release.successes(&log_3, handler, old), 0, "{handler} ran again for {old}:\n{log_3}");
            }
        }
        assert_eq!(release.successes(&log_3, "greet", "ex-3"), 1, "third pod:\n{log_3}");

        // --- the security context, from inside --------------------------------------------
        let out = release.k(&["exec", &handler_3, "-c", "handler", "--", "python3", "-I", "-c", PROC_REPORT, "self"]);
        check_security(&parse_report(&out, "handler"), &values, "the handler container");
        let write = release
            .node
            .try_kubectl(&["-n", &ns, "exec", &handler_3, "-c", "handler", "--", "touch", "/probe"], "")
            .expect_err("writing to the root filesystem must fail");
        assert!(write.contains("Read-only file system"), "{write}");
        // The core's image has no shell: an ephemeral container in its process namespace reads
        // the core process's /proc/1.
        release.k(&[
            "debug", &core_3, "--image=localhost/operon-kopf:0.1.0", "--image-pull-policy=Never",
            "--target=core", "--profile=restricted", "--container=inspect", "-q", "--",
            "python3", "-I", "-c", PROC_REPORT, "1",
        ]);
        let out = wait_for("the ephemeral container's report", READY, || {
            let got = release.node.try_kubectl(&["-n", &ns, "logs", &core_3, "-c", "inspect"], "");
            async move {
                let log = got?;
                Ok::<_, String>(log.contains("REPORT ").then_some(log))
            }
        })
        .await;
        let report = parse_report(&out, "core");
        assert_eq!(report["cmd"], "/operon", "pid 1 of the core's namespace is the core");
        check_security(&report, &values, "the core container");

        // --- the ServiceAccount: its token is mounted, and its RBAC is the only authority ----
        let sub = release.k(&[
            "exec", &handler_3, "-c", "handler", "--", "python3", "-I", "-c",
            "import base64, json; t = open('/var/run/secrets/kubernetes.io/serviceaccount/token').read().split('.')[1]; \
             print(json.loads(base64.urlsafe_b64decode(t + '=' * (-len(t) % 4)))['sub'])",
        ]);
        let sa = if release.separate { "operon-handler" } else { "operon" };
        assert_eq!(sub.trim(), format!("system:serviceaccount:{ns}:{sa}"), "the token in the handler container");
        let rules = "rbac:\n  rules:\n  - apiGroups: [kopf.dev]\n    resources: [kopfexamples]\n    verbs: [list, watch, patch]\n  - apiGroups: ['']\n    resources: [events]\n    verbs: [create]\n";
        node.helm(&["upgrade", "operon", &chart, "-n", &ns, "--reuse-values", "-f", "-"], rules);
        assert_eq!(release.pods("core").len(), 1, "an RBAC change does not roll the pod");
        release.example("ex-4", "four");
        let user = format!("system:serviceaccount:{ns}:operon");
        let denied = wait_for("a 403 in the core's log", HANDLED, || {
            let log = release.core_log(&core_3);
            let user = user.clone();
            async move {
                let line = log
                    .lines()
                    .find(|l| l.contains("ex-4") && l.contains("403") && l.contains(&user) && l.contains("kopfexamples/status"))
                    .map(str::to_owned);
                Ok::<_, String>(line)
            }
        })
        .await;
        eprintln!("[node {ns}] the core, denied by its RBAC: {}", &denied[..denied.len().min(400)]);
        release.k(&["delete", "kopfexample", "--all", "--wait=false"]);
        node.helm(&["uninstall", "operon", "-n", &ns, "--wait", "--timeout", "120s"], "");
        eprintln!("[node {ns}] {topology}: all checks passed in {:.1}s", t0.elapsed().as_secs_f64());
    })
    .await;
}

#[tokio::test]
#[ignore = "needs root, containerd and the images: tests/run.sh's node step runs it (see the header)"]
async fn sidecar_topology_on_a_real_node() {
    chart_on_the_node("sidecar").await;
}

#[tokio::test]
#[ignore = "needs root, containerd and the images: tests/run.sh's node step runs it (see the header)"]
async fn separate_topology_on_a_real_node() {
    chart_on_the_node("separate").await;
}

/// Three replicas with leader election (issue 23, item 3), as far as one host-network node
/// allows: the replicas share the node's ports, so one pod runs and the scheduler holds the other
/// two back ("didn't have free ports"); they are no hot standbys here. Deleting the leader's pod
/// frees the ports: another replica starts, takes the Lease (released by the leader on SIGTERM)
/// and handles on from the progress stored on the objects, with no handler succeeding twice.
#[tokio::test]
#[ignore = "needs root, containerd and the images: tests/run.sh's node step runs it (see the header)"]
async fn leader_election_on_a_real_node() {
    let node = Node::up();
    let crd = repo_root()
        .join("deploy/local/crd.yaml")
        .display()
        .to_string();
    node.kubectl(&["apply", "-f", &crd], "");
    with_temp_ns("node-leader", move |_client, ns| async move {
        let t0 = Instant::now();
        let node = Node::up();
        let release = Release {
            node: &node,
            ns: ns.clone(),
            separate: false,
        };
        let values = release.install(&["replicas=3"]);
        assert_eq!(values["replicas"], 3);
        let lease_holder = || {
            node.try_kubectl(
                &[
                    "-n",
                    &ns,
                    "get",
                    "lease",
                    "operon",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
                "",
            )
            .unwrap_or_default()
        };
        let leader = wait_for("one Ready core pod holding the Lease", READY, || {
            let ready = release.ready_pods("core");
            let holder = lease_holder();
            let pods: Vec<String> = release.pods("core").iter().map(pod_summary).collect();
            async move {
                match ready.as_slice() {
                    [one] if *one == holder => Ok(Some(holder)),
                    _ => Err((ready, holder, pods)),
                }
            }
        })
        .await;
        eprintln!(
            "[node {ns}] leader {leader} in {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        let pods = release.pods("core");
        assert_eq!(
            pods.len(),
            3,
            "{:?}",
            pods.iter().map(pod_summary).collect::<Vec<_>>()
        );
        let pending = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Pending")
            .count();
        assert_eq!(pending, 2, "two replicas wait for the node's ports");
        let refusals = release.k(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        assert!(
            refusals.contains("didn't have free ports"),
            "the scheduler said: {refusals}"
        );
        let args = release.k(&[
            "get",
            "deploy",
            "operon",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].args}",
        ]);
        assert!(args.contains("--leader-election"), "{args}");

        release.example("ex-1", "one");
        release.handled("ex-1", "greet").await;
        let log_1 = release.core_log(&leader);
        assert_eq!(
            release.successes(&log_1, "greet", "ex-1"),
            1,
            "the leader:\n{log_1}"
        );

        let t = Instant::now();
        release.k(&["delete", "pod", &leader, "--wait=false"]);
        let next = wait_for("another Ready pod holding the Lease", READY, || {
            let ready = release.ready_pods("core");
            let holder = lease_holder();
            let old = leader.clone();
            let pods: Vec<String> = release.pods("core").iter().map(pod_summary).collect();
            async move {
                match ready.as_slice() {
                    [one] if *one == holder && holder != old => Ok(Some(holder)),
                    _ => Err((ready, holder, pods)),
                }
            }
        })
        .await;
        eprintln!(
            "[node {ns}] leader pod deleted; {next} leads after {:.1}s",
            t.elapsed().as_secs_f64()
        );
        release.example("ex-2", "two");
        release.k(&[
            "patch",
            "kopfexample",
            "ex-1",
            "--type=merge",
            "-p",
            r#"{"spec":{"field":"changed"}}"#,
        ]);
        release.handled("ex-2", "greet").await;
        release.handled("ex-1", "field_changed/spec.field").await;
        let log_2 = release.core_log(&next);
        assert_eq!(
            release.successes(&log_2, "greet", "ex-1"),
            0,
            "greet ran again:\n{log_2}"
        );
        assert_eq!(
            release.successes(&log_2, "check_field", "ex-1"),
            0,
            "check_field ran again:\n{log_2}"
        );
        assert_eq!(
            release.successes(&log_2, "field_changed/spec.field", "ex-1"),
            1,
            "{log_2}"
        );
        assert_eq!(release.successes(&log_2, "greet", "ex-2"), 1, "{log_2}");
        assert_eq!(
            release.pods("core").len(),
            3,
            "the ReplicaSet keeps three replicas"
        );
        release.k(&["delete", "kopfexample", "--all", "--wait=false"]);
        node.helm(
            &[
                "uninstall",
                "operon",
                "-n",
                &ns,
                "--wait",
                "--timeout",
                "120s",
            ],
            "",
        );
        eprintln!(
            "[node {ns}] leader election: all checks passed in {:.1}s",
            t0.elapsed().as_secs_f64()
        );
    })
    .await;
}
