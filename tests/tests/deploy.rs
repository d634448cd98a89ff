//! End-to-end tests of the deployment (issue 8) on the real local control plane:
//!
//! - the Helm chart (rendered by the real `helm`, built from its Go module by
//!   `tests/cluster/build-helm.sh`) and the kustomize overlays (`kubectl kustomize`) pass the API
//!   server's server-side dry-run, and the chart's RBAC is what `operon rbac` prints;
//! - more than one replica: the chart and the `ha` overlay run the core active–passive (leader
//!   election on a Lease, rolling updates, a PDB, the Lease's Role — tried with the
//!   ServiceAccount's token), and the chart refuses values that cannot work, saying why;
//! - sharding: the chart and the `sharded` overlay run the core active–active (every replica a
//!   shard with a Lease of its own, rolling updates, a PDB, the Leases' Role — tried with the
//!   ServiceAccount's token), and the chart refuses sharding with leader election or peering;
//! - the core, running with the kustomize base's ServiceAccount's own token (TokenRequest), not
//!   admin, completes a create/update/delete cycle, and that token is refused outside its RBAC;
//! - mutual TLS between the core and a handler service works end to end, and a core or a handler
//!   with a certificate from another CA is refused with a clear error;
//! - every handler container of every render has the kubelet's native gRPC probes
//!   (`grpc.health.v1`) on a port where its server answers them — plaintext, off the loopback —
//!   and the chart's `handler.probes` values tune them, turn them off, or are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use operon_e2e::cluster::{PlaneLock, cluster_dir, cluster_env};
use operon_e2e::command::{helm_bin, repo_root, run, try_run};
use operon_e2e::pki::Pki;
use operon_e2e::{
    CoreProcess, HandlerProcess, RESOURCE_ARG, apply_yaml, binaries, delete_yaml, log_dir, plane,
    wait_for, widget, widgets, with_temp_ns, with_widget_ns,
};
use serde_json::{Value, json};

/// How long a simple object may take to be handled (2 shared cores, other tests alongside).
const HANDLED: Duration = Duration::from_secs(90);

fn kubectl_bin() -> PathBuf {
    let env = cluster_env().expect("the plane's env file");
    PathBuf::from(&env["BIN"]).join("kubectl")
}

fn helm_template(ns: &str, sets: &[String]) -> String {
    try_helm_template(ns, sets).unwrap_or_else(|failure| panic!("{failure}"))
}

/// `helm template e2e <chart> --namespace ns --set …`: the manifests, or helm's complaint.
fn try_helm_template(ns: &str, sets: &[String]) -> Result<String, String> {
    let chart = repo_root().join("deploy/helm/operon");
    let mut args = vec![
        "template".to_owned(),
        "e2e".to_owned(),
        chart.display().to_string(),
        "--namespace".to_owned(),
        ns.to_owned(),
    ];
    for set in sets {
        args.push("--set".to_owned());
        args.push(set.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    try_run(&helm_bin(), &args, &[], "")
}

/// `kubectl kustomize` of an overlay (or `base`) moved into namespace `ns`, every name suffixed
/// with `-<ns>` (cluster-scoped objects must not collide between runs), the ServiceAccount
/// subjects of the bindings following — as a user's own overlay would do it.
fn kustomize(ns: &str, overlay: &str) -> String {
    let dir = std::env::temp_dir().join(format!("operon-kustomize-{ns}-{overlay}"));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(
        &repo_root().join("deploy/kustomize"),
        &dir.join("kustomize"),
    );
    let target = if overlay == "base" {
        "../kustomize/base".to_owned()
    } else {
        format!("../kustomize/overlays/{overlay}")
    };
    std::fs::create_dir_all(dir.join("wrap")).expect("creating the wrapper");
    std::fs::write(
        dir.join("wrap/kustomization.yaml"),
        format!(
            "nameSuffix: -{ns}\nresources:\n- {target}\ntransformers:\n- |-\n  apiVersion: builtin\n  \
             kind: NamespaceTransformer\n  metadata: {{name: ns, namespace: {ns}}}\n  \
             setRoleBindingSubjects: allServiceAccounts\n  unsetOnly: false\n"
        ),
    )
    .expect("writing the wrapper");
    let wrap = dir.join("wrap");
    let out = run(
        &kubectl_bin(),
        &["kustomize", &wrap.display().to_string()],
        &[],
        "",
    );
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a directory");
    for entry in std::fs::read_dir(from).expect("reading a directory") {
        let entry = entry.expect("a directory entry");
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copying a file");
        }
    }
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("valid YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn kinds(yaml: &str) -> Vec<String> {
    let mut kinds: Vec<String> = documents(yaml)
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    kinds.sort();
    kinds
}

/// Server-side dry-run of `yaml` as the admin; returns kubectl's output.
async fn dry_run(yaml: &str) -> String {
    let kubeconfig = plane().await.kubeconfig.clone();
    run(
        &kubectl_bin(),
        &["apply", "--dry-run=server", "-f", "-"],
        &[("KUBECONFIG", &kubeconfig)],
        yaml,
    )
}

/// What every render must be: the objects of an installation, accepted by the API server's
/// server-side dry-run, with a restrictive security context, probes and requests on every
/// container, gRPC probes on every handler container (there is at least one), the handler
/// services given to the core alone, and no wildcard in the RBAC.
async fn assert_deployable(what: &str, yaml: &str) {
    let all = kinds(yaml);
    for kind in [
        "ServiceAccount",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(
            all.iter().any(|k| k == kind),
            "{what}: no {kind} in {all:?}"
        );
    }
    assert!(
        all.iter().any(|k| k.ends_with("Role")) && all.iter().any(|k| k.ends_with("RoleBinding")),
        "{what}: no RBAC in {all:?}"
    );
    let out = dry_run(yaml).await;
    let accepted = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(
        accepted,
        all.len(),
        "{what}: the API server accepted only:\n{out}"
    );
    // Restrictive security context and probes on every Deployment.
    for doc in documents(yaml).iter().filter(|d| d["kind"] == "Deployment") {
        let pod = &doc["spec"]["template"]["spec"];
        // The core, where there is one, is told the handler services; nothing else is.
        for c in pod["containers"].as_array().expect("containers") {
            let handlers = args(c)
                .iter()
                .filter(|a| a.starts_with("--handler="))
                .count();
            if c["name"] == "core" {
                assert!(handlers >= 1, "{what}: the core has no --handler: {c}");
            } else {
                assert_eq!(handlers, 0, "{what}: --handler given to {}", c["name"]);
            }
        }
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{what}"
        );
        for c in pod["containers"].as_array().expect("containers") {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}: {}", c["name"]);
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{what}: {}",
                c["name"]
            );
            assert_eq!(
                sc["capabilities"]["drop"],
                json!(["ALL"]),
                "{what}: {}",
                c["name"]
            );
            assert!(
                c["readinessProbe"].is_object() && c["livenessProbe"].is_object(),
                "{what}: {}",
                c["name"]
            );
            assert!(
                c["resources"]["requests"].is_object(),
                "{what}: {}",
                c["name"]
            );
        }
    }
    // Every handler container (every one but the core) is probed over gRPC.
    let handlers: Vec<Value> = documents(yaml)
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["name"] != "core")
        .collect();
    assert!(!handlers.is_empty(), "{what}: no handler container");
    for c in &handlers {
        assert_grpc_probes(what, c);
    }
    // No wildcard anywhere in the RBAC.
    for doc in documents(yaml)
        .iter()
        .filter(|d| d["kind"].as_str().is_some_and(|k| k.ends_with("Role")))
    {
        assert!(
            !doc["rules"].to_string().contains('*'),
            "{what}: a wildcard in {}",
            doc["rules"]
        );
    }
}

/// The value of `--flag=VALUE` (or `--flag VALUE`) in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(value) = a.strip_prefix(&prefix) {
            Some(value)
        } else if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

/// The port of a listen address `HOST:PORT` when the kubelet can reach it: HOST is not a
/// loopback address (the kubelet probes the pod's IP).
fn reachable_port(address: &str) -> Option<u64> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback { None } else { port.parse().ok() }
}

/// The ports where a handler container's gRPC server answers `grpc.health.v1` as the kubelet's
/// `grpc:` probes can ask it — in plaintext (they speak no TLS), off the pod's loopback: the
/// health listener's (`--health-listen`), and the handler port's (`--listen`) unless it is on
/// the loopback or serves TLS.
fn kubelet_health_ports(container: &Value) -> Vec<u64> {
    let args = args(container);
    let mut ports: Vec<u64> = flag_value(&args, "--health-listen")
        .and_then(reachable_port)
        .into_iter()
        .collect();
    if flag_value(&args, "--tls-cert").is_none() {
        ports.extend(flag_value(&args, "--listen").and_then(reachable_port));
    }
    ports
}

/// A handler container's startup, liveness and readiness probes are native gRPC probes of the
/// overall health (or the handler service's) on a port where its server answers them, and the
/// container declares that port. (The startup probe too: an operator's start-up runs its
/// startup handlers, which may take long.)
fn assert_grpc_probes(what: &str, container: &Value) {
    let name = &container["name"];
    let ports = kubelet_health_ports(container);
    assert!(
        !ports.is_empty(),
        "{what}: {name} answers the health service on no port the kubelet reaches (plaintext, \
         off the loopback): {:?}",
        args(container)
    );
    for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let probe = &container[kind];
        let grpc = &probe["grpc"];
        assert!(
            grpc.is_object(),
            "{what}: {name}'s {kind} is not a grpc probe: {probe}"
        );
        let port = grpc["port"].as_u64();
        assert!(
            port.is_some_and(|p| ports.contains(&p)),
            "{what}: {name}'s {kind} asks port {}; its server answers the health service on \
             {ports:?}",
            grpc["port"]
        );
        let service = grpc["service"].as_str().unwrap_or_default();
        assert!(
            ["", "operon.v1.HandlerService"].contains(&service),
            "{what}: {name}'s {kind} asks about {service:?}, which the handler service does not \
             report"
        );
        assert!(
            container["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["containerPort"].as_u64() == port)),
            "{what}: {name} does not declare its probes' port {}",
            grpc["port"]
        );
    }
}

/// The chart's handler container (named `handler`) in `yaml`.
fn handler_container(what: &str, yaml: &str) -> Value {
    documents(yaml)
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|c| c["name"] == "handler")
        .unwrap_or_else(|| panic!("{what}: no handler container"))
}

#[test]
fn handler_probes_follow_the_values() {
    // Rendering only (helm template); the dry-run tests send the renders to the plane.
    let ns = format!("probes-{}", std::process::id());
    // Defaults, both topologies: startup (5 minutes for the start-up), liveness and readiness
    // ask the overall health on the health listener's port.
    for sets in [vec![], vec!["topology=separate".to_owned()]] {
        let what = format!("helm, {sets:?}");
        let handler = handler_container(&what, &helm_template(&ns, &sets));
        assert_grpc_probes(&what, &handler);
        assert!(
            args(&handler).contains(&"--health-listen=0.0.0.0:50052".to_owned()),
            "{what}: {:?}",
            args(&handler)
        );
        let grpc = json!({"port": 50052, "service": ""});
        assert_eq!(
            handler["startupProbe"],
            json!({"grpc": grpc, "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 150}),
            "{what}"
        );
        assert_eq!(
            handler["livenessProbe"],
            json!({"grpc": grpc, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}),
            "{what}"
        );
        assert_eq!(
            handler["readinessProbe"],
            json!({"grpc": grpc, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2}),
            "{what}"
        );
    }
    // Tuned: another port and service, other timings, a field of Kubernetes' own.
    let what = "helm, tuned probes";
    let handler = handler_container(
        what,
        &helm_template(
            &ns,
            &[
                "handler.probes.port=9090".into(),
                "handler.probes.service=operon.v1.HandlerService".into(),
                "handler.probes.liveness.periodSeconds=30".into(),
                "handler.probes.readiness.initialDelaySeconds=1".into(),
            ],
        ),
    );
    assert_grpc_probes(what, &handler);
    assert!(
        args(&handler).contains(&"--health-listen=0.0.0.0:9090".to_owned()),
        "{what}: {:?}",
        args(&handler)
    );
    let grpc = json!({"port": 9090, "service": "operon.v1.HandlerService"});
    assert_eq!(
        handler["livenessProbe"],
        json!({"grpc": grpc, "periodSeconds": 30, "timeoutSeconds": 5, "failureThreshold": 3}),
        "{what}"
    );
    assert_eq!(
        handler["readinessProbe"]["initialDelaySeconds"], 1,
        "{what}"
    );
    // Turned off, one by one.
    let what = "helm, probes off";
    let handler = handler_container(
        what,
        &helm_template(
            &ns,
            &[
                "handler.probes.startup.enabled=false".into(),
                "handler.probes.liveness.enabled=false".into(),
                "handler.probes.readiness.enabled=false".into(),
            ],
        ),
    );
    for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert!(handler.get(kind).is_none(), "{what}: {kind} in {handler}");
    }
    // A port the probes cannot use is refused, saying why.
    for (set, needle) in [
        (
            "handler.probes.port=grpc-health",
            "handler.probes.port must be a port number",
        ),
        (
            "handler.probes.port=0",
            "handler.probes.port must be a port number",
        ),
        (
            "handler.probes.port=70000",
            "handler.probes.port must be a port number",
        ),
        ("handler.probes.port=50051", "must differ from handler.port"),
        ("handler.probes.port=8081", "must differ from handler.port"),
    ] {
        match try_helm_template(&ns, &[set.to_owned()]) {
            Ok(yaml) => panic!("{set} was rendered:\n{yaml}"),
            Err(failure) => assert!(failure.contains(needle), "{set}: {failure}"),
        }
    }
}

/// The core's command line in every Deployment of `yaml` is one `operon run` takes (flags and
/// values; `--help` at the end stops it before it starts).
async fn assert_core_takes_its_args(what: &str, yaml: &str, ns: &str) {
    for doc in documents(yaml).iter().filter(|d| d["kind"] == "Deployment") {
        let pod = &doc["spec"]["template"]["spec"];
        if let Some(core) = pod["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "core"))
        {
            let mut line: Vec<String> = args(core)
                .iter()
                .map(|a| a.replace("$(POD_NAMESPACE)", ns))
                .collect();
            line.push("--help".into());
            let line: Vec<&str> = line.iter().map(String::as_str).collect();
            if let Err(failure) = try_run(&binaries().await.operon, &line, &[], "") {
                panic!("{what}: the core's args are refused: {failure}");
            }
        }
    }
}

#[tokio::test]
async fn helm_and_kustomize_output_passes_server_side_dry_run() {
    let _lock = PlaneLock::shared().await;
    with_temp_ns("deploy-dry", |_client, ns| async move {
        let chart = repo_root().join("deploy/helm/operon");
        for sets in [&[][..], &["--set", "replicas=3"][..]] {
            let chart = chart.display().to_string();
            let mut args = vec!["lint", "--strict", &chart];
            args.extend(sets);
            let lint = run(&helm_bin(), &args, &[], "");
            assert!(lint.contains("0 chart(s) failed"), "{sets:?}: {lint}");
        }
        let renders = [
            ("helm, sidecar topology", helm_template(&ns, &[])),
            (
                "helm, separate topology, one namespace",
                helm_template(
                    &ns,
                    &[
                        "topology=separate".into(),
                        "watch.allNamespaces=false".into(),
                        format!("watch.namespaces={{{ns}}}"),
                    ],
                ),
            ),
            ("kustomize, sidecar overlay", kustomize(&ns, "sidecar")),
            ("kustomize, separate overlay", kustomize(&ns, "separate")),
            (
                "helm, sidecar topology, 3 replicas",
                helm_template(&ns, &["replicas=3".into()]),
            ),
            (
                "helm, separate topology, 2 replicas, one namespace",
                helm_template(
                    &ns,
                    &[
                        "topology=separate".into(),
                        "replicas=2".into(),
                        "watch.allNamespaces=false".into(),
                        format!("watch.namespaces={{{ns}}}"),
                    ],
                ),
            ),
            (
                "helm, peering, all namespaces",
                helm_template(&ns, &["peering.name=default".into()]),
            ),
            (
                "helm, peering, one namespace",
                helm_template(
                    &ns,
                    &[
                        "peering.name=default".into(),
                        "watch.allNamespaces=false".into(),
                        format!("watch.namespaces={{{ns}}}"),
                    ],
                ),
            ),
            ("kustomize, ha overlay", kustomize(&ns, "ha")),
        ];
        for (what, yaml) in &renders {
            assert_deployable(what, yaml).await;
            assert_core_takes_its_args(what, yaml, &ns).await;
        }

        // The chart's rendered rules are exactly what the generator prints for the example.
        let generated = run(
            &binaries().await.operon,
            &[
                "rbac",
                "--resource",
                "kopf.dev/v1/kopfexamples",
                "--rules-only",
            ],
            &[],
            "",
        );
        let generated: Value = serde_saphyr::from_str(&generated).expect("the generator's YAML");
        let helm_role = documents(&renders[0].1)
            .into_iter()
            .find(|d| d["kind"] == "ClusterRole")
            .expect("a ClusterRole in the chart");
        assert_eq!(helm_role["rules"], generated);
        let namespaced_role = documents(&renders[1].1)
            .into_iter()
            .find(|d| d["kind"] == "Role")
            .expect("a Role in the namespaced chart");
        assert_eq!(namespaced_role["rules"], generated);
    })
    .await;
}

// ---- replicas and leader election --------------------------------------------------------------

/// A container's `args`, as strings.
fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The core's Deployment (the one with a container named `core`) and that container.
fn core_of(what: &str, docs: &[Value]) -> (Value, Value) {
    let deployment = docs
        .iter()
        .find(|d| {
            d["kind"] == "Deployment"
                && d["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["name"] == "core"))
        })
        .unwrap_or_else(|| panic!("{what}: no Deployment with a core container"))
        .clone();
    let core = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "core")
        .expect("the core container")
        .clone();
    (deployment, core)
}

/// The (Cluster)Roles whose rules mention `resource`.
fn roles_on<'a>(docs: &'a [Value], resource: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str().is_some_and(|k| k.ends_with("Role")))
        .filter(|d| {
            d["rules"].as_array().is_some_and(|rules| {
                rules.iter().any(|r| {
                    r["resources"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|x| x == resource))
                })
            })
        })
        .collect()
}

/// The binding of `role` (kind `kind`), which must grant it to exactly the ServiceAccount
/// `ns/sa`.
fn assert_bound(what: &str, docs: &[Value], kind: &str, role: &Value, ns: &str, sa: &str) {
    let name = &role["metadata"]["name"];
    let binding = docs
        .iter()
        .find(|d| d["kind"] == format!("{kind}Binding") && d["roleRef"]["name"] == *name)
        .unwrap_or_else(|| panic!("{what}: no {kind}Binding of {name}"));
    assert_eq!(binding["roleRef"]["kind"], kind, "{what}");
    assert_eq!(
        binding["metadata"]["namespace"], role["metadata"]["namespace"],
        "{what}"
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]),
        "{what}: {name}'s subjects"
    );
}

/// The PodDisruptionBudget of the core's pods.
fn core_pdb<'a>(what: &str, docs: &'a [Value]) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == "PodDisruptionBudget"
                && d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "core"
        })
        .unwrap_or_else(|| panic!("{what}: no PodDisruptionBudget of the core"))
}

/// Active–passive: `replicas` core pods, leader election on the Lease `lease` in `ns` (which only
/// the ServiceAccount `sa` may get, create and update), rolled out one standby at a time.
fn assert_active_passive(what: &str, yaml: &str, replicas: i64, ns: &str, lease: &str, sa: &str) {
    let docs = documents(yaml);
    let (deployment, core) = core_of(what, &docs);
    assert_eq!(deployment["spec"]["replicas"], replicas, "{what}: replicas");
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
        "{what}: a rollout starts a standby before it stops a replica"
    );
    let args = args(&core);
    for flag in [
        "--leader-election".to_owned(),
        format!("--lease-name={lease}"),
        "--lease-namespace=$(POD_NAMESPACE)".to_owned(),
        "--lease-duration=15".to_owned(),
        "--renew-deadline=10".to_owned(),
        "--retry-period=2".to_owned(),
    ] {
        assert!(args.contains(&flag), "{what}: no {flag} in {args:?}");
    }
    assert_identity_from_the_pod(&core, what);
    // The Lease's RBAC: a Role in the core's own namespace, whatever the served resources use;
    // create (which RBAC cannot limit to a name), get and update of the one Lease, nothing else.
    let role = the_lease_role(&docs, ns, what);
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [lease], "verbs": ["get", "update"]},
        ]),
        "{what}: the Lease's rules"
    );
    let verbs = sorted_verbs(role);
    assert_eq!(
        verbs,
        ["create", "get", "update"],
        "{what}: the verbs on leases"
    );
    assert_bound(what, &docs, "Role", role, ns, sa);
    // A drain takes one replica at a time: a standby is left when the leader goes.
    let pdb = core_pdb(what, &docs);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{what}: {pdb}");
    assert!(pdb["spec"].get("minAvailable").is_none(), "{what}: {pdb}");
    if replicas > 1 {
        assert!(
            deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_object(),
            "{what}: the replicas are not spread over nodes"
        );
    }
}

/// One replica alone, as before leader election: Recreate, no Lease.
fn assert_single_replica(what: &str, yaml: &str) {
    let docs = documents(yaml);
    let (deployment, core) = core_of(what, &docs);
    assert_eq!(deployment["spec"]["replicas"], 1, "{what}: replicas");
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "Recreate"}),
        "{what}"
    );
    assert!(
        !args(&core)
            .iter()
            .any(|a| a.starts_with("--lease") || a == "--leader-election"),
        "{what}: {:?}",
        args(&core)
    );
    assert!(
        roles_on(&docs, "leases").is_empty(),
        "{what}: rights on leases"
    );
    assert_eq!(core_pdb(what, &docs)["spec"]["maxUnavailable"], 1, "{what}");
}

/// Kopf's peering: the flags, and reading and patching the peering object `name` of the
/// plural `resource` (and its status), in both of Kopf's groups.
fn assert_peering(what: &str, yaml: &str, resource: &str, name: &str, ns: &str, flags: &[&str]) {
    let docs = documents(yaml);
    let args = args(&core_of(what, &docs).1);
    for flag in flags {
        assert!(
            args.iter().any(|a| a == flag),
            "{what}: no {flag} in {args:?}"
        );
    }
    let roles = roles_on(&docs, resource);
    assert_eq!(roles.len(), 1, "{what}: the roles on {resource}: {roles:?}");
    let groups = json!(["kopf.dev", "zalando.org"]);
    assert_eq!(
        roles[0]["rules"],
        json!([
            {"apiGroups": groups, "resources": [resource], "resourceNames": [name],
             "verbs": ["get", "patch"]},
            {"apiGroups": groups, "resources": [format!("{resource}/status")],
             "resourceNames": [name], "verbs": ["patch"]},
        ]),
        "{what}"
    );
    let kind = roles[0]["kind"].as_str().expect("a kind");
    assert_bound(what, &docs, kind, roles[0], ns, "e2e-operon");
}

/// The verbs granted on each (group, resource), whatever the rules' grouping and names.
fn granted(
    rules: &Value,
    on: impl Fn(&str) -> bool,
) -> BTreeMap<(String, String), BTreeSet<String>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in rules.as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]).into_iter().filter(|r| on(r)) {
                out.entry((group.clone(), resource))
                    .or_default()
                    .extend(strings(&rule["verbs"]));
            }
        }
    }
    out
}

/// The rules `operon rbac --resource kopf.dev/v1/kopfexamples --rules-only EXTRA…` prints.
async fn generated_rules(extra: &[&str]) -> Value {
    let mut args = vec![
        "rbac",
        "--resource",
        "kopf.dev/v1/kopfexamples",
        "--rules-only",
    ];
    args.extend(extra);
    let out = run(&binaries().await.operon, &args, &[], "");
    serde_saphyr::from_str(&out).expect("the generator's YAML")
}

#[tokio::test]
async fn replicas_run_active_passive_with_leader_election() {
    // Rendering only (helm template, kubectl kustomize); the dry-run test sends them to the plane.
    let ns = format!("ha-{}", std::process::id());
    assert_single_replica("helm, defaults", &helm_template(&ns, &[]));
    assert_single_replica("kustomize, sidecar overlay", &kustomize(&ns, "sidecar"));

    let three = helm_template(&ns, &["replicas=3".into()]);
    assert_active_passive(
        "helm, 3 replicas",
        &three,
        3,
        &ns,
        "e2e-operon",
        "e2e-operon",
    );
    let separate = helm_template(
        &ns,
        &[
            "topology=separate".into(),
            "replicas=2".into(),
            "watch.allNamespaces=false".into(),
            "watch.namespaces={team-a,team-b}".into(),
        ],
    );
    let what = "helm, separate topology, 2 replicas, two namespaces";
    assert_active_passive(what, &separate, 2, &ns, "e2e-operon", "e2e-operon");
    // The handler service keeps its own replicas; only the core elects a leader.
    let handler = documents(&separate)
        .into_iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "e2e-operon-handler")
        .expect("the handler service's Deployment");
    assert_eq!(handler["spec"]["replicas"], 2, "{what}");
    assert!(!handler.to_string().contains("--leader-election"), "{what}");
    // One replica with leader election (rollouts without a gap), the Lease renamed.
    let one = helm_template(
        &ns,
        &[
            "leaderElection.enabled=true".into(),
            "leaderElection.leaseName=my-lease".into(),
        ],
    );
    assert_active_passive(
        "helm, 1 replica, leader election",
        &one,
        1,
        &ns,
        "my-lease",
        "e2e-operon",
    );
    assert_active_passive(
        "kustomize, ha overlay",
        &kustomize(&ns, "ha"),
        3,
        &ns,
        "operon",
        &format!("operon-{ns}"),
    );

    // What the chart grants on the Lease is what the generator grants for leader election.
    let chart = granted(&roles_on(&documents(&three), "leases")[0]["rules"], |r| {
        r == "leases"
    });
    let generator = granted(&generated_rules(&["--leader-election"]).await, |r| {
        r == "leases"
    });
    assert_eq!(chart, generator, "the Lease's verbs: chart vs operon rbac");

    // Peering: off by default; cluster-wide or per served namespace, with one replica.
    let defaults = helm_template(&ns, &[]);
    assert!(
        !defaults.contains("kopfpeerings") && !defaults.contains("--peering"),
        "{defaults}"
    );
    let peering = helm_template(
        &ns,
        &[
            "peering.name=default".into(),
            "peering.priority=10".into(),
            "peering.mandatory=true".into(),
        ],
    );
    let what = "helm, peering, all namespaces";
    assert_peering(
        what,
        &peering,
        "clusterkopfpeerings",
        "default",
        &ns,
        &["--peering=default", "--priority=10", "--peering-mandatory"],
    );
    let is_peering = |r: &str| r.contains("kopfpeerings");
    assert_eq!(
        granted(
            &roles_on(&documents(&peering), "clusterkopfpeerings")[0]["rules"],
            is_peering
        ),
        granted(&generated_rules(&["--peering", "-A"]).await, is_peering),
        "{what}: chart vs operon rbac"
    );
    let peering = helm_template(
        &ns,
        &[
            "watch.allNamespaces=false".into(),
            "watch.namespaces={team-a}".into(),
            "peering.name=shared".into(),
        ],
    );
    let what = "helm, peering, one namespace";
    assert_peering(
        what,
        &peering,
        "kopfpeerings",
        "shared",
        &ns,
        &["--peering=shared", "--priority=0"],
    );
    let role = roles_on(&documents(&peering), "kopfpeerings")[0].clone();
    assert_eq!(role["metadata"]["namespace"], "team-a", "{what}");
    assert_eq!(
        granted(&role["rules"], is_peering),
        granted(&generated_rules(&["--peering"]).await, is_peering),
        "{what}: chart vs operon rbac"
    );

    // Impossible values are refused, saying why.
    for (sets, message) in [
        (
            vec!["replicas=2", "leaderElection.enabled=false"],
            "replicas=2 with leaderElection.enabled=false: every replica would handle every object",
        ),
        (
            vec!["replicas=3", "leaderElection.leaseDuration=10"],
            "leaderElection.leaseDuration (10) must be greater than leaderElection.renewDeadline (10)",
        ),
        (vec!["replicas=1.5"], "replicas must be a whole number"),
    ] {
        let sets: Vec<String> = sets.into_iter().map(str::to_owned).collect();
        match try_helm_template(&ns, &sets) {
            Ok(out) => panic!("helm accepted {sets:?}:\n{out}"),
            Err(failure) => assert!(failure.contains(message), "{sets:?}: {failure}"),
        }
    }
}

/// What the Lease's Role allows, tried with the ServiceAccount's own token: leader election's
/// calls on its Lease, and nothing else.
#[tokio::test]
async fn the_lease_role_allows_leader_election_and_nothing_more() {
    use k8s_openapi::api::coordination::v1::Lease;
    let _lock = PlaneLock::shared().await;
    with_temp_ns("deploy-lease", |admin, ns| async move {
        let renders = [
            (
                "helm",
                helm_template(&ns, &["replicas=3".into()]),
                "e2e-operon".to_owned(),
                "e2e-operon",
            ),
            (
                "kustomize",
                kustomize(&ns, "ha"),
                format!("operon-{ns}"),
                "operon",
            ),
        ];
        for (what, yaml, sa, lease) in &renders {
            let rbac = documents(yaml)
                .into_iter()
                .filter(|d| {
                    ["ServiceAccount", "Role", "RoleBinding"]
                        .contains(&d["kind"].as_str().unwrap_or(""))
                })
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n---\n");
            apply_yaml(&admin, &ns, &rbac)
                .await
                .expect("applying the Lease's RBAC");
            let client = client_from(&service_account_kubeconfig(&admin, &ns, sa).await).await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
            let lease_object = |holder: &str| -> Lease {
                serde_json::from_value(json!({
                    "metadata": {"name": lease},
                    "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
                }))
                .expect("a Lease")
            };
            // Allowed: what leader election does. (A Role just applied reaches the API server's
            // authorizer through its informers: a 403 for a moment is asked again.)
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                match leases
                    .create(&PostParams::default(), &lease_object("a"))
                    .await
                {
                    Ok(_) => break,
                    Err(kube::Error::Api(e))
                        if e.code == 403 && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("{what}: creating the Lease: {e}"),
                }
            }
            let mut current = leases
                .get(lease)
                .await
                .unwrap_or_else(|e| panic!("{what}: reading the Lease: {e}"));
            current.spec.as_mut().expect("a spec").holder_identity = Some("b".into());
            leases
                .replace(lease, &PostParams::default(), &current)
                .await
                .unwrap_or_else(|e| panic!("{what}: renewing the Lease: {e}"));
            // Refused: other Leases, other verbs, other namespaces.
            let elsewhere: Api<Lease> = Api::namespaced(client.clone(), "default");
            let refusals = [
                (
                    "reading another Lease",
                    leases.get("another-lease").await.err(),
                ),
                (
                    "listing Leases",
                    leases.list(&ListParams::default()).await.err(),
                ),
                (
                    "patching the Lease",
                    leases
                        .patch(
                            lease,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"holderIdentity": "c"}})),
                        )
                        .await
                        .err(),
                ),
                (
                    "deleting the Lease",
                    leases.delete(lease, &DeleteParams::default()).await.err(),
                ),
                (
                    "reading a Lease in another namespace",
                    elsewhere.get(lease).await.err(),
                ),
                (
                    "creating a Lease in another namespace",
                    elsewhere
                        .create(&PostParams::default(), &lease_object("a"))
                        .await
                        .err(),
                ),
            ];
            for (action, err) in refusals {
                let err = err.unwrap_or_else(|| panic!("{what}: {action} was allowed"));
                assert_eq!(code(&err), 403, "{what}: {action}: {err}");
            }
            let stored = Api::<Lease>::namespaced(admin.clone(), &ns)
                .get(lease)
                .await
                .expect("the Lease");
            assert_eq!(
                stored.spec.and_then(|s| s.holder_identity).as_deref(),
                Some("b"),
                "{what}"
            );
        }
    })
    .await;
}

/// The core's `POD_NAME` and `POD_NAMESPACE` come from the downward API (its identity: the Lease
/// holder's or the shard's name; the Leases' namespace).
fn assert_identity_from_the_pod(core: &Value, what: &str) {
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let env = core["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == var))
            .unwrap_or_else(|| panic!("{what}: no {var} in the core's env"));
        assert_eq!(
            env["valueFrom"]["fieldRef"]["fieldPath"], field,
            "{what}: {var}"
        );
    }
}

/// Every verb of `role`'s rules, sorted.
fn sorted_verbs(role: &Value) -> Vec<&str> {
    let mut verbs: Vec<&str> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| r["verbs"].as_array().expect("verbs"))
        .map(|v| v.as_str().expect("a verb"))
        .collect();
    verbs.sort_unstable();
    verbs
}

/// The one Role on `leases`, in the core's own namespace `ns` (whatever the served resources
/// use: Lease rights are namespaced).
fn the_lease_role<'a>(docs: &'a [Value], ns: &str, what: &str) -> &'a Value {
    let roles = roles_on(docs, "leases");
    assert_eq!(roles.len(), 1, "{what}: the roles on leases: {roles:?}");
    let role = roles[0];
    assert_eq!(
        role["kind"], "Role",
        "{what}: the Lease's rights are namespaced"
    );
    assert_eq!(role["metadata"]["namespace"], ns, "{what}");
    role
}

// ---- sharding ----------------------------------------------------------------------------------

/// The verbs a shard needs on Leases, sorted: its own Lease's (create, get, update) and the
/// ring's (list: every shard reads the others' to know the members) — what `operon rbac
/// --shards` grants. The Leases are named after pods, so by no `resourceNames`.
const SHARD_LEASE_VERBS: [&str; 4] = ["create", "get", "list", "update"];

/// The lease timings `(duration, renew deadline, retry period)` of the chart's and the
/// component's defaults (controller-runtime's).
const DEFAULT_TIMINGS: (u32, u32, u32) = (15, 10, 2);

/// How a sharded render must look.
struct Shards<'a> {
    replicas: i64,
    /// The release's (the core's) namespace: where the Leases and their Role are.
    ns: &'a str,
    ring: &'a str,
    assignment: &'a str,
    sa: &'a str,
    timings: (u32, u32, u32),
}

/// Active–active: `replicas` shards of the ring, each with a Lease of its own in `ns` (a Role there
/// with exactly the shards' verbs on Leases, bound to the ServiceAccount alone), no leader
/// election, rolled out one shard at a time, one shard away at a time.
fn assert_sharded(what: &str, yaml: &str, shards: &Shards<'_>) {
    let docs = documents(yaml);
    let (deployment, core) = core_of(what, &docs);
    assert_eq!(
        deployment["spec"]["replicas"], shards.replicas,
        "{what}: replicas"
    );
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
        "{what}: a rollout starts a shard before it stops one"
    );
    let args = args(&core);
    let (duration, deadline, retry) = shards.timings;
    for flag in [
        format!("--shards-ring={}", shards.ring),
        format!("--shards-assignment={}", shards.assignment),
        "--lease-namespace=$(POD_NAMESPACE)".to_owned(),
        format!("--lease-duration={duration}"),
        format!("--renew-deadline={deadline}"),
        format!("--retry-period={retry}"),
    ] {
        let name = flag.split('=').next().expect("a flag");
        let given: Vec<&String> = args
            .iter()
            .filter(|a| a.split('=').next() == Some(name))
            .collect();
        assert_eq!(given, [&flag], "{what}: {name} in {args:?}");
    }
    for flag in ["--leader-election", "--lease-name", "--peering"] {
        assert!(
            !args.iter().any(|a| a.split('=').next() == Some(flag)),
            "{what}: {flag} with sharding: {args:?}"
        );
    }
    // The shard's identity (its Lease's name, its name in the objects' labels) is the pod's name,
    // the Leases' namespace the pod's.
    assert_identity_from_the_pod(&core, what);
    // The Leases' RBAC: one Role in the core's own namespace, on Leases only, with exactly the
    // shards' verbs (list included) and no resourceNames (the names are the pods').
    let role = the_lease_role(&docs, shards.ns, what);
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "list", "create", "update"]}]),
        "{what}: the Leases' rules"
    );
    let verbs = sorted_verbs(role);
    assert_eq!(verbs, SHARD_LEASE_VERBS, "{what}: the verbs on leases");
    assert_bound(what, &docs, "Role", role, shards.ns, shards.sa);
    // The shards label the objects they own: every role on the served resource grants patch.
    let served = roles_on(&docs, "kopfexamples");
    assert!(!served.is_empty(), "{what}: no rights on kopfexamples");
    for role in served {
        let verbs = granted(&role["rules"], |r| r == "kopfexamples");
        assert!(
            verbs[&("kopf.dev".to_owned(), "kopfexamples".to_owned())].contains("patch"),
            "{what}: no patch of kopfexamples (the shard labels) in {}",
            role["metadata"]["name"]
        );
    }
    // A drain takes one shard at a time: only its share moves at once.
    let pdb = core_pdb(what, &docs);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{what}: {pdb}");
    assert!(pdb["spec"].get("minAvailable").is_none(), "{what}: {pdb}");
    if shards.replicas > 1 {
        assert!(
            deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_object(),
            "{what}: the shards are not spread over nodes"
        );
    }
}

/// No sharding: no `--shards-*` flag, no Role of the shards.
fn assert_not_sharded(what: &str, yaml: &str) {
    let docs = documents(yaml);
    let args = args(&core_of(what, &docs).1);
    assert!(
        !args.iter().any(|a| a.starts_with("--shards")),
        "{what}: {args:?}"
    );
    for role in roles_on(&docs, "leases") {
        assert!(
            !role["rules"].to_string().contains("\"list\""),
            "{what}: the shards' rights on leases: {role}"
        );
    }
}

fn shard_sets(sets: &[&str]) -> Vec<String> {
    sets.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn replicas_run_active_active_with_sharding() {
    // Rendering only (helm template, kubectl kustomize); the dry-run test below sends them to the
    // plane.
    let ns = format!("shards-{}", std::process::id());
    let three = helm_template(&ns, &shard_sets(&["sharding.ring=operon", "replicas=3"]));
    let shards = Shards {
        replicas: 3,
        ns: &ns,
        ring: "operon",
        assignment: "own",
        sa: "e2e-operon",
        timings: DEFAULT_TIMINGS,
    };
    assert_sharded("helm, 3 shards", &three, &shards);

    // The separate topology, two served namespaces, timebertt's sharder assigning: the Leases'
    // Role stays in the release's namespace; the handler service keeps its own replicas.
    let separate = helm_template(
        &ns,
        &shard_sets(&[
            "topology=separate",
            "replicas=2",
            "watch.allNamespaces=false",
            "watch.namespaces={team-a,team-b}",
            "sharding.ring=kopfexamples",
            "sharding.assignment=sharder",
        ]),
    );
    let what = "helm, separate topology, 2 shards, two namespaces, the sharder";
    assert_sharded(
        what,
        &separate,
        &Shards {
            replicas: 2,
            ring: "kopfexamples",
            assignment: "sharder",
            ..shards
        },
    );
    let handler = documents(&separate)
        .into_iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "e2e-operon-handler")
        .expect("the handler service's Deployment");
    assert_eq!(handler["spec"]["replicas"], 2, "{what}");
    assert!(!handler.to_string().contains("--shards"), "{what}");

    // One shard (a ring to scale later); leader election explicitly off; other timings.
    let one = helm_template(&ns, &shard_sets(&["sharding.ring=operon"]));
    let one_shard = Shards {
        replicas: 1,
        ..shards
    };
    assert_sharded("helm, 1 shard", &one, &one_shard);
    let off = helm_template(
        &ns,
        &shard_sets(&[
            "sharding.ring=operon",
            "replicas=3",
            "leaderElection.enabled=false",
        ]),
    );
    assert_sharded("helm, 3 shards, leader election off", &off, &shards);
    let timed = helm_template(
        &ns,
        &shard_sets(&[
            "sharding.ring=operon",
            "replicas=3",
            "sharding.leaseDuration=30",
            "sharding.renewDeadline=20",
            "sharding.retryPeriod=5",
        ]),
    );
    assert_sharded(
        "helm, 3 shards, other timings",
        &timed,
        &Shards {
            timings: (30, 20, 5),
            ..shards
        },
    );
    let sa = format!("operon-{ns}");
    assert_sharded(
        "kustomize, sharded overlay",
        &kustomize(&ns, "sharded"),
        &Shards { sa: &sa, ..shards },
    );

    // Without a ring, nothing of sharding: the defaults, leader election, the ha overlay.
    assert_not_sharded("helm, defaults", &helm_template(&ns, &[]));
    assert_not_sharded(
        "helm, 3 replicas (leader election)",
        &helm_template(&ns, &shard_sets(&["replicas=3"])),
    );
    assert_not_sharded("kustomize, ha overlay", &kustomize(&ns, "ha"));

    // Values that cannot work are refused, saying why.
    for (sets, message) in [
        (
            vec![
                "sharding.ring=operon",
                "replicas=3",
                "leaderElection.enabled=true",
            ],
            "sharding.ring=operon with leaderElection.enabled=true",
        ),
        (
            vec!["sharding.ring=operon", "leaderElection.enabled=true"],
            "sharding.ring=operon with leaderElection.enabled=true",
        ),
        (
            vec!["sharding.ring=operon", "replicas=3", "peering.name=default"],
            "sharding.ring=operon with peering.name=default",
        ),
        (
            vec!["sharding.ring=operon", "sharding.assignment=random"],
            "sharding.assignment must be own",
        ),
        (
            vec!["sharding.ring=operon/ring"],
            "sharding.ring must be a label value",
        ),
        (
            vec!["sharding.ring=operon", "sharding.leaseDuration=10"],
            "sharding.leaseDuration (10) must be greater than sharding.renewDeadline (10)",
        ),
        (
            vec!["sharding.ring=operon", "sharding.retryPeriod=10"],
            "sharding.renewDeadline (10) must be greater than sharding.retryPeriod (10)",
        ),
        (
            vec!["sharding.ring=operon", "sharding.retryPeriod=1.5"],
            "sharding.retryPeriod must be a whole number of seconds",
        ),
    ] {
        let sets = shard_sets(&sets);
        match try_helm_template(&ns, &sets) {
            Ok(out) => panic!("helm accepted {sets:?}:\n{out}"),
            Err(failure) => assert!(failure.contains(message), "{sets:?}: {failure}"),
        }
    }
}

/// The sharded renders, as the plane's tests use them: `(what, yaml, ServiceAccount)`.
fn sharded_renders(ns: &str) -> Vec<(&'static str, String, String)> {
    vec![
        (
            "helm, sidecar topology, 3 shards",
            helm_template(ns, &shard_sets(&["sharding.ring=operon", "replicas=3"])),
            "e2e-operon".to_owned(),
        ),
        (
            "helm, separate topology, 2 shards, one namespace, the sharder",
            helm_template(
                ns,
                &[
                    "topology=separate".into(),
                    "replicas=2".into(),
                    "watch.allNamespaces=false".into(),
                    format!("watch.namespaces={{{ns}}}"),
                    "sharding.ring=operon".into(),
                    "sharding.assignment=sharder".into(),
                ],
            ),
            "e2e-operon".to_owned(),
        ),
        (
            "kustomize, sharded overlay",
            kustomize(ns, "sharded"),
            format!("operon-{ns}"),
        ),
    ]
}

#[tokio::test]
async fn sharded_output_passes_lint_and_server_side_dry_run() {
    let _lock = PlaneLock::shared().await;
    with_temp_ns("deploy-shards-dry", |_client, ns| async move {
        let chart = repo_root().join("deploy/helm/operon").display().to_string();
        let lint = run(
            &helm_bin(),
            &[
                "lint",
                "--strict",
                &chart,
                "--set",
                "sharding.ring=operon",
                "--set",
                "replicas=3",
            ],
            &[],
            "",
        );
        assert!(lint.contains("0 chart(s) failed"), "{lint}");
        for (what, yaml, _) in &sharded_renders(&ns) {
            assert_deployable(what, yaml).await;
        }
    })
    .await;
}

/// Awaits the core's sharding (`operon run --shards-ring`, `operon rbac --shards`): the rendered
/// command lines are ones `operon run` takes, and the chart and the component grant on Leases
/// what the generator grants for sharding.
#[tokio::test]
async fn the_core_takes_the_sharded_args_and_grants_the_same_lease_rights() {
    let ns = format!("shards-core-{}", std::process::id());
    let renders = sharded_renders(&ns);
    for (what, yaml, _) in &renders {
        assert_core_takes_its_args(what, yaml, &ns).await;
    }
    let generator = granted(&generated_rules(&["--shards"]).await, |r| r == "leases");
    for (what, yaml, _) in &renders {
        let docs = documents(yaml);
        let roles = roles_on(&docs, "leases");
        assert_eq!(roles.len(), 1, "{what}: the roles on leases: {roles:?}");
        assert_eq!(
            granted(&roles[0]["rules"], |r| r == "leases"),
            generator,
            "{what}: the Leases' verbs vs operon rbac --shards"
        );
    }
}

/// What the shards' Role allows, tried with the ServiceAccount's own token: each shard's calls on
/// its own Lease and the ring's, and nothing else.
#[tokio::test]
async fn the_shards_lease_role_allows_sharding_and_nothing_more() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    let _lock = PlaneLock::shared().await;
    with_temp_ns("deploy-shards", |admin, ns| async move {
        for (what, yaml, sa) in &sharded_renders(&ns) {
            let rbac = documents(yaml)
                .into_iter()
                .filter(|d| {
                    ["ServiceAccount", "Role", "RoleBinding"]
                        .contains(&d["kind"].as_str().unwrap_or(""))
                })
                .filter(|d| d["metadata"]["namespace"].is_null() || d["metadata"]["namespace"] == *ns)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n---\n");
            apply_yaml(&admin, &ns, &rbac)
                .await
                .expect("applying the Leases' RBAC");
            let client = client_from(&service_account_kubeconfig(&admin, &ns, sa).await).await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
            let ring = "alpha.sharding.timebertt.dev/controllerring=operon";
            let prefix: String = what
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(12)
                .collect::<String>()
                .to_lowercase();
            let shard = |n: u32| format!("{prefix}-shard-{n}");
            let lease_object = |name: &str| -> Lease {
                serde_json::from_value(json!({
                    "metadata": {"name": name,
                                 "labels": {"alpha.sharding.timebertt.dev/controllerring": "operon"}},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 15},
                }))
                .expect("a Lease")
            };
            // Allowed: what the shards do. (A Role just applied reaches the API server's
            // authorizer through its informers: a 403 for a moment is asked again.)
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                match leases
                    .create(&PostParams::default(), &lease_object(&shard(0)))
                    .await
                {
                    Ok(_) => break,
                    Err(kube::Error::Api(e))
                        if e.code == 403 && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("{what}: creating a shard's Lease: {e}"),
                }
            }
            leases
                .create(&PostParams::default(), &lease_object(&shard(1)))
                .await
                .unwrap_or_else(|e| panic!("{what}: creating another shard's Lease: {e}"));
            let members = leases
                .list(&ListParams::default().labels(ring))
                .await
                .unwrap_or_else(|e| panic!("{what}: listing the ring's Leases: {e}"));
            let names: BTreeSet<String> = members.items.iter().map(ResourceExt::name_any).collect();
            assert!(
                names.contains(&shard(0)) && names.contains(&shard(1)),
                "{what}: the ring's members: {names:?}"
            );
            let mut current = leases
                .get(&shard(0))
                .await
                .unwrap_or_else(|e| panic!("{what}: reading a shard's Lease: {e}"));
            current.spec.as_mut().expect("a spec").lease_duration_seconds = Some(16);
            leases
                .replace(&shard(0), &PostParams::default(), &current)
                .await
                .unwrap_or_else(|e| panic!("{what}: renewing a shard's Lease: {e}"));
            // Refused: deleting Leases, Leases in other namespaces, anything but Leases.
            let elsewhere: Api<Lease> = Api::namespaced(client.clone(), "default");
            let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let refusals = [
                (
                    "watching the Leases (the shards list them)",
                    leases
                        .watch(&kube::api::WatchParams::default().labels(ring).timeout(5), "0")
                        .await
                        .err(),
                ),
                (
                    "patching a shard's Lease (the shards update it)",
                    leases
                        .patch(
                            &shard(0),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"leaseDurationSeconds": 17}})),
                        )
                        .await
                        .err(),
                ),
                (
                    "deleting a shard's Lease",
                    leases.delete(&shard(1), &DeleteParams::default()).await.err(),
                ),
                (
                    "deleting the ring's Leases",
                    leases
                        .delete_collection(&DeleteParams::default(), &ListParams::default().labels(ring))
                        .await
                        .err(),
                ),
                (
                    "listing Leases in another namespace",
                    elsewhere.list(&ListParams::default()).await.err(),
                ),
                (
                    "reading a Lease in another namespace",
                    elsewhere.get(&shard(0)).await.err(),
                ),
                (
                    "creating a Lease in another namespace",
                    elsewhere
                        .create(&PostParams::default(), &lease_object(&shard(0)))
                        .await
                        .err(),
                ),
                (
                    "listing ConfigMaps",
                    config_maps.list(&ListParams::default()).await.err(),
                ),
            ];
            for (action, err) in refusals {
                let err = err.unwrap_or_else(|| panic!("{what}: {action} was allowed"));
                assert_eq!(code(&err), 403, "{what}: {action}: {err}");
            }
            let stored = Api::<Lease>::namespaced(admin.clone(), &ns)
                .get(&shard(0))
                .await
                .expect("the Lease");
            assert_eq!(
                stored.spec.and_then(|s| s.lease_duration_seconds),
                Some(16),
                "{what}: the renewal is stored, the refused patch changed nothing"
            );
        }
    })
    .await;
}

const EXAMPLE_CRD: &str = include_str!("../../deploy/local/crd.yaml");

fn kopfexample_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kopf.dev", "v1", "KopfExample"),
        "kopfexamples",
    )
}

async fn install_example_crd(client: &Client) {
    apply_yaml(client, "default", EXAMPLE_CRD)
        .await
        .expect("applying the example CRD");
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &kopfexample_resource());
    wait_for(
        "kopfexamples to be listable",
        Duration::from_secs(60),
        || async {
            all.list(&ListParams::default().limit(1))
                .await
                .map(|_| Some(()))
        },
    )
    .await;
}

/// A kubeconfig for the plane that authenticates with `token` only.
fn token_kubeconfig(path: &Path, token: &str) {
    let env = cluster_env().expect("the plane's env file");
    let ca = cluster_dir().join("pki/ca.crt");
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: plane\n  cluster:\n    server: https://127.0.0.1:{}\n    \
             certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  \
             context: {{cluster: plane, user: sa}}\ncurrent-context: sa\n",
            env["APISERVER_PORT"],
            ca.display()
        ),
    )
    .expect("writing the kubeconfig");
}

fn code(err: &kube::Error) -> u16 {
    match err {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}

#[tokio::test]
async fn the_core_runs_with_its_service_account_and_nothing_more() {
    let _lock = PlaneLock::shared().await;
    with_temp_ns("deploy-sa", |admin, ns| async move {
        install_example_crd(&admin).await;
        // The kustomize base's ServiceAccount and generated RBAC, as a user would apply them.
        let rendered = kustomize(&ns, "base");
        let rbac: Vec<Value> = documents(&rendered)
            .into_iter()
            .filter(|d| {
                ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
                    .contains(&d["kind"].as_str().unwrap_or(""))
            })
            .collect();
        let rbac_yaml = rbac
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n---\n");
        apply_yaml(&admin, &ns, &rbac_yaml)
            .await
            .expect("applying the RBAC");
        let sa_name = format!("operon-{ns}");

        let result = tokio::spawn(cycle_with_token(admin.clone(), ns.clone(), sa_name)).await;
        delete_yaml(&admin, &ns, &rbac_yaml)
            .await
            .expect("deleting the RBAC");
        if let Err(err) = result {
            std::panic::resume_unwind(err.into_panic());
        }
    })
    .await;
}

/// A kubeconfig that authenticates as the ServiceAccount `ns/sa_name` with its own credential: a
/// bound token from the TokenRequest API.
async fn service_account_kubeconfig(admin: &Client, ns: &str, sa_name: &str) -> PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    });
    let answer: Value = accounts
        .create_subresource("token", sa_name, &PostParams::default(), &request)
        .await
        .expect("a token for the ServiceAccount");
    let token = answer["status"]["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let kubeconfig = log_dir().join(format!("{ns}.{sa_name}.kubeconfig"));
    token_kubeconfig(&kubeconfig, &token);
    kubeconfig
}

async fn client_from(kubeconfig: &Path) -> Client {
    Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig).expect("the kubeconfig"),
            &Default::default(),
        )
        .await
        .expect("a config"),
    )
    .expect("a client")
}

async fn cycle_with_token(admin: Client, ns: String, sa_name: String) {
    let kubeconfig = service_account_kubeconfig(&admin, &ns, &sa_name).await;

    // Outside the RBAC: refused.
    let sa_client = client_from(&kubeconfig).await;
    let secrets: Api<Secret> = Api::namespaced(sa_client.clone(), &ns);
    let err = secrets
        .list(&ListParams::default())
        .await
        .expect_err("listing Secrets must be forbidden");
    assert_eq!(code(&err), 403, "{err}");
    let examples_as_sa: Api<DynamicObject> =
        Api::namespaced_with(sa_client.clone(), &ns, &kopfexample_resource());
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "cycle"},
        "spec": {"field": "one", "behaviour": {"create_fn": {
            "result": {"message": "created"},
            "event": {"reason": "Greeted", "message": "hello from create_fn"},
        }}},
    }))
    .expect("an object");
    let err = examples_as_sa
        .create(&PostParams::default(), &object)
        .await
        .expect_err("creating must be forbidden");
    assert_eq!(code(&err), 403, "{err}");
    // Inside it: allowed.
    examples_as_sa
        .list(&ListParams::default())
        .await
        .expect("listing kopfexamples is allowed");

    let handler = HandlerProcess::start(
        "deploy-sa",
        &[
            "--resource",
            "kopf.dev/v1/kopfexamples",
            "--handler",
            "create:create_fn",
            "--handler",
            "update:update_fn",
            "--handler",
            "delete:delete_fn",
        ],
    )
    .await
    .expect("the handler service");
    // The generator asked through the running handler service (Describe + discovery) prints
    // the same rules as for the resource named by hand.
    let admin_kubeconfig = plane().await.kubeconfig.clone();
    let operon = &binaries().await.operon;
    let url = handler.url();
    let by_handler = run(
        operon,
        &["rbac", "--handler", &url, "-A"],
        &[("KUBECONFIG", &admin_kubeconfig)],
        "",
    );
    let by_resource = run(
        operon,
        &["rbac", "--resource", "kopf.dev/v1/kopfexamples", "-A"],
        &[],
        "",
    );
    let rules = |yaml: &str| documents(yaml)[0]["rules"].clone();
    assert_eq!(rules(&by_handler), rules(&by_resource), "{by_handler}");

    let mut core = CoreProcess::start(
        "deploy-sa",
        &["--handler".into(), handler.url(), "-n".into(), ns.clone()],
        &kubeconfig,
    )
    .await
    .expect("the core");
    core.wait_ready(HANDLED).await;

    let examples: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), &ns, &kopfexample_resource());
    examples
        .create(&PostParams::default(), &object)
        .await
        .expect("creating the object");
    wait_for(
        "create_fn's result in status (through /status)",
        HANDLED,
        || async {
            let o = examples.get("cycle").await?;
            Ok::<_, kube::Error>(o.data["status"].get("create_fn").is_some().then_some(()))
        },
    )
    .await;
    examples
        .patch(
            "cycle",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"field": "two"}})),
        )
        .await
        .expect("updating the object");
    wait_for("update_fn to succeed", HANDLED, || async {
        Ok::<_, ()>(
            (!handler
                .ledger()
                .entries()
                .object("cycle")
                .handler("update_fn")
                .outcome("success")
                .is_empty())
            .then_some(()),
        )
    })
    .await;
    examples
        .delete("cycle", &DeleteParams::default())
        .await
        .expect("deleting the object");
    wait_for(
        "the object to be gone (delete_fn ran, finalizer released)",
        HANDLED,
        || async {
            match examples.get_opt("cycle").await? {
                None => Ok::<_, kube::Error>(Some(())),
                Some(_) => Ok(None),
            }
        },
    )
    .await;
    let ledger = handler.ledger().entries().object("cycle");
    for id in ["create_fn", "update_fn", "delete_fn"] {
        assert_eq!(
            ledger.handler(id).outcome("success").len(),
            1,
            "{id}: {:?}",
            ledger.outcomes()
        );
    }
    // Events were posted with the ServiceAccount's credential.
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let posted = events.list(&ListParams::default()).await.expect("events");
    assert!(
        posted
            .items
            .iter()
            .any(|e| e.involved_object.name.as_deref() == Some("cycle")),
        "no Event about the object: {:?}",
        posted
            .items
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
    );
    core.assert_running();
    let log = core.log_plain().to_ascii_lowercase();
    assert!(
        !log.contains("forbidden") && !log.contains(" 403"),
        "the core was refused something:\n{}",
        core.log_tail(40)
    );
    let _ = core.terminate(Duration::from_secs(10)).await;
}

// ---- mutual TLS ---------------------------------------------------------------------------------

/// One CA for the real pair, and an impostor CA with its own server and client certificates.
fn pki(name: &str) -> Pki {
    let pki = Pki::new(name);
    pki.ca("ca");
    pki.issue("ca", "server", "serverAuth");
    pki.issue("ca", "client", "clientAuth");
    pki.ca("other-ca");
    pki.issue("other-ca", "other-server", "serverAuth");
    pki.issue("other-ca", "other-client", "clientAuth");
    pki
}

async fn tls_handler(name: &str, pki: &Pki, server: &str) -> HandlerProcess {
    HandlerProcess::start(
        name,
        &[
            "--resource",
            RESOURCE_ARG,
            "--handler",
            "create:h1",
            "--tls-cert",
            &pki.path(&format!("{server}.crt")),
            "--tls-key",
            &pki.path(&format!("{server}.key")),
            "--tls-client-ca",
            &pki.path("ca.crt"),
        ],
    )
    .await
    .expect("the TLS handler service")
}

async fn tls_core(
    name: &str,
    pki: &Pki,
    handler: &HandlerProcess,
    ns: &str,
    client: Option<&str>,
) -> CoreProcess {
    let mut args = vec![
        "--handler".to_owned(),
        format!("https://localhost:{}", handler.port()),
        "-n".to_owned(),
        ns.to_owned(),
        "--tls-ca".to_owned(),
        pki.path("ca.crt"),
    ];
    if let Some(client) = client {
        args.extend(["--tls-cert".to_owned(), pki.path(&format!("{client}.crt"))]);
        args.extend(["--tls-key".to_owned(), pki.path(&format!("{client}.key"))]);
    }
    CoreProcess::start(name, &args, &plane().await.kubeconfig)
        .await
        .expect("the core")
}

#[tokio::test]
async fn mutual_tls_between_core_and_handler_works_end_to_end() {
    with_widget_ns("deploy-mtls", |client, ns| async move {
        let pki = pki("deploy-mtls");
        let handler = tls_handler("deploy-mtls", &pki, "server").await;
        let mut core = tls_core("deploy-mtls", &pki, &handler, &ns, Some("client")).await;
        core.wait_ready(HANDLED).await;
        let api = widgets(&client, &ns);
        api.create(&PostParams::default(), &widget("secure", json!({})))
            .await
            .expect("creating a widget");
        wait_for("h1 to succeed over mutual TLS", HANDLED, || async {
            let o = api.get("secure").await?;
            Ok::<_, kube::Error>(operon_e2e::kopf::is_fully_handled(&o).then_some(()))
        })
        .await;
        assert_eq!(
            handler
                .ledger()
                .entries()
                .object("secure")
                .handler("h1")
                .outcome("success")
                .len(),
            1
        );
        let _ = core.terminate(Duration::from_secs(10)).await;
    })
    .await;
}

/// Waits until the core's log says `needle` (lowercase), and checks it never became ready.
async fn refused(core: &mut CoreProcess, what: &str, needle: &str) {
    let deadline = tokio::time::Instant::now() + HANDLED;
    while !core.log_plain().to_ascii_lowercase().contains(needle) {
        core.assert_running();
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; the core's log:\n{}",
            core.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = core.get("/readyz").await.expect("/readyz answers");
    assert_eq!(
        ready.status, 503,
        "the core must not be ready without its handler service"
    );
}

#[tokio::test]
async fn a_core_or_handler_with_a_wrong_certificate_is_refused() {
    with_widget_ns("deploy-badtls", |client, ns| async move {
        let pki = pki("deploy-badtls");
        let api = widgets(&client, &ns);
        api.create(&PostParams::default(), &widget("untouched", json!({})))
            .await
            .expect("creating a widget");

        // A core whose client certificate comes from another CA: the handler refuses it.
        let handler = tls_handler("deploy-badtls-a", &pki, "server").await;
        let mut core = tls_core("deploy-badtls-a", &pki, &handler, &ns, Some("other-client")).await;
        refused(
            &mut core,
            "the core to log that the handler refused its certificate",
            "refused the core's client certificate",
        )
        .await;
        let line = core
            .log_plain()
            .lines()
            .rev()
            .find(|l| l.contains("Describe"))
            .unwrap_or_default()
            .to_owned();
        eprintln!("[e2e] the core's line for a refused client certificate: {line}");
        drop(core);
        // A core without a client certificate at all: refused too.
        let mut core = tls_core("deploy-badtls-b", &pki, &handler, &ns, None).await;
        refused(
            &mut core,
            "the core to log that the handler requires a certificate",
            "if the service requires mutual tls, give the core --tls-cert and --tls-key",
        )
        .await;
        drop(core);
        assert!(
            handler.ledger().entries().is_empty(),
            "a refused core called handlers"
        );
        drop(handler);

        // A handler whose server certificate comes from another CA: the core refuses it.
        let impostor = tls_handler("deploy-badtls-c", &pki, "other-server").await;
        let mut core = tls_core("deploy-badtls-c", &pki, &impostor, &ns, Some("client")).await;
        refused(
            &mut core,
            "the core to log that it does not trust the handler's certificate",
            "the handler service's certificate is not trusted",
        )
        .await;
        drop(core);
        assert!(impostor.ledger().entries().is_empty());

        // An https:// handler without --tls-ca: a clear start-up error.
        let mut core = CoreProcess::start(
            "deploy-badtls-d",
            &[
                "--handler".into(),
                format!("https://localhost:{}", impostor.port()),
                "-n".into(),
                ns.clone(),
            ],
            &plane().await.kubeconfig,
        )
        .await
        .expect("the core");
        let deadline = tokio::time::Instant::now() + HANDLED;
        while core.exit_status().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the core did not exit: {}",
                core.log_tail(10)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            core.log_plain().contains("needs --tls-ca"),
            "{}",
            core.log_tail(10)
        );

        let object = api.get("untouched").await.expect("the widget");
        assert!(
            object
                .annotations()
                .keys()
                .all(|k| !k.starts_with("kopf.zalando.org/")),
            "{:?}",
            object.annotations()
        );
    })
    .await;
}
