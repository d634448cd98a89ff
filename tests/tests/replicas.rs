//! More than one replica of the core (`operon run --leader-election`), on the real plane: one
//! leader handles, the standbys take over when it dies or stops, and no handler success is ever
//! repeated across a takeover.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use operon_e2e::kopf::{diff_base_essence, is_fully_handled};
use operon_e2e::takeover::{Calls, lease_args, lease_timing, unix_now};
use operon_e2e::{
    CoreProcess, HandlerProcess, History, RESOURCE_ARG, apply_yaml, plane, wait_for, widget,
    widgets, with_widget_ns,
};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);
const HANDLED: Duration = Duration::from_secs(120);

/// Three cores `core-0..2` with leader election on the Lease `lease` in `ns`.
struct Replicas {
    handler: HandlerProcess,
    cores: Vec<CoreProcess>,
    leases: Api<Lease>,
    lease: String,
}

impl Replicas {
    /// `n` cores with the Lease `timing` (duration, renew deadline, retry period) and one
    /// handler service with `handlers`.
    async fn start(
        name: &str,
        ns: &str,
        client: &Client,
        handlers: &[&str],
        n: usize,
        timing: (u64, u64, u64),
    ) -> Self {
        let mut args = vec!["--resource", RESOURCE_ARG];
        for h in handlers {
            args.extend(["--handler", h]);
        }
        let handler = HandlerProcess::start(name, &args)
            .await
            .expect("the handler service");
        let lease = format!("{name}-lease");
        let kubeconfig = plane().await.kubeconfig.clone();
        let mut cores = Vec::new();
        for i in 0..n {
            let mut args: Vec<String> = [
                "--handler",
                &handler.url(),
                "-n",
                ns,
                "--leader-election",
                "--lease-name",
                &lease,
                "--lease-namespace",
                ns,
                "--identity",
                &format!("core-{i}"),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(lease_args(timing));
            let core = CoreProcess::start(&format!("{name}-{i}"), &args, &kubeconfig)
                .await
                .expect("a core");
            cores.push(core);
        }
        for core in &mut cores {
            // A standby is ready too: its watches have listed (it can take over at once).
            core.wait_ready(READY).await;
        }
        Replicas {
            handler,
            cores,
            leases: Api::namespaced(client.clone(), ns),
            lease,
        }
    }

    /// The Lease's holder (`None`: nobody, or no Lease yet).
    async fn holder(&self) -> Option<String> {
        let lease = self.leases.get_opt(&self.lease).await.ok()??;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    /// Waits for a holder other than `not`, returns its index.
    async fn wait_leader(&self, not: Option<usize>, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(h) = self.holder().await
                && let Some(i) = h.strip_prefix("core-").and_then(|i| i.parse().ok())
                && Some(i) != not
            {
                return i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no new leader within {timeout:?} (holder: {:?})",
                self.holder().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric_active(&self, i: usize) -> Option<String> {
        let body = self.cores[i].get("/metrics").await.ok()?.text();
        body.lines()
            .find(|l| l.starts_with("operon_active "))
            .map(|l| l.trim_start_matches("operon_active ").trim().to_owned())
    }
}

/// Waits until the test's own watch has seen `object`'s current version.
async fn wait_seen(history: &History, object: &kube::api::DynamicObject) {
    let rv = object.resource_version();
    wait_for(
        "the watch to see the final versions",
        Duration::from_secs(30),
        || async {
            let seen = history
                .versions(&object.name_any())
                .iter()
                .any(|o| o.object.resource_version() == rv);
            Ok::<_, ()>(seen.then_some(()))
        },
    )
    .await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The check: 3 replicas, the leader SIGKILLed at random moments 20 times while 200
/// objects are created and changed, with handlers slow enough (0.5 s) that every kill lands amid
/// calls. Every change is handled; no handler is called after its success was stored on the
/// object (the test's own watch judges "stored"); a success repeated because the killed leader
/// got the answer but never wrote it (the at-least-once window, as in Kopf) must have a kill
/// between the two calls; and each takeover (kill → a new holder in the Lease) is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_20_times_loses_and_repeats_nothing() {
    with_widget_ns("e2e-leader", |client, ns| async move {
        const KILLS: usize = 20;
        const OBJECTS: usize = 200;
        let (duration, _, retry) = lease_timing();
        let mut r = Replicas::start("leader", &ns, &client, &["create:c1", "create:c2", "update:u1"], 3, lease_timing()).await;
        let api = widgets(&client, &ns);
        let mut leader = r.wait_leader(None, READY).await;
        eprintln!("[leader] first leader: core-{leader}");
        for (i, _) in r.cores.iter().enumerate() {
            let want = if i == leader { "1" } else { "0" };
            wait_for("operon_active to show the role", Duration::from_secs(10), || async {
                Ok::<_, ()>((r.metric_active(i).await.as_deref() == Some(want)).then_some(()))
            })
            .await;
        }
        let mut seed: u64 = 0x1eade5;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let history = History::start(api.clone());
        let mut kills: Vec<f64> = Vec::new();
        let mut takeovers = Vec::new();
        let mut created = 0usize;
        let mut finals: BTreeMap<String, i64> = BTreeMap::new();
        for kill in 1..=KILLS {
            // A wave of new objects and changes of older ones, then a kill amid their handling.
            while created < OBJECTS * kill / KILLS {
                let name = format!("w-{created:03}");
                // Slow handlers: the kills land amid calls and their PATCHes.
                let spec = json!({"field": 0, "behaviour": {
                    "c1": {"sleep": 0.5}, "c2": {"sleep": 0.5}, "u1": {"sleep": 0.5},
                }});
                api.create(&PostParams::default(), &widget(&name, spec))
                    .await
                    .unwrap_or_else(|e| panic!("creating {name}: {e}"));
                finals.insert(name, 0);
                created += 1;
            }
            for _ in 0..5 {
                let i = (next() * created as f64) as usize % created.max(1);
                let name = format!("w-{i:03}");
                let value = finals[&name] + 1;
                api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"field": value}})))
                    .await
                    .unwrap_or_else(|e| panic!("patching {name}: {e}"));
                finals.insert(name, value);
            }
            tokio::time::sleep(Duration::from_secs_f64(0.05 + 1.0 * next())).await;
            let inflight = r.cores[leader]
                .get("/metrics")
                .await
                .map(|m| m.text())
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("operon_inflight_calls ").map(str::to_owned))
                .unwrap_or_default();
            let killed_at = tokio::time::Instant::now();
            r.cores[leader].kill();
            kills.push(unix_now());
            let new = r.wait_leader(Some(leader), Duration::from_secs(duration * 3 + 10)).await;
            let took = killed_at.elapsed().as_secs_f64();
            takeovers.push(took);
            eprintln!("[leader] kill {kill}/{KILLS}: core-{leader} killed with {inflight} calls in flight, core-{new} leads after {took:.2}s");
            // The killed replica comes back, as a Pod would, as a standby.
            r.cores[leader].restart().await.expect("restarting a core");
            leader = new;
        }
        // Everything handled, each object's last change included.
        wait_for("every object handled, the last change of each", HANDLED, || async {
            let list = api.list(&Default::default()).await.map_err(|e| e.to_string())?;
            let pending: Vec<String> = list
                .items
                .iter()
                .filter(|o| {
                    let last = finals.get(&o.name_any()).copied().unwrap_or(0);
                    !is_fully_handled(o)
                        || (last > 0
                            && o.data["spec"]["field"] != json!(last))
                })
                .map(ResourceExt::name_any)
                .collect();
            Ok::<_, String>((pending.is_empty() && list.items.len() == OBJECTS).then_some(()))
        })
        .await;
        for object in api.list(&Default::default()).await.expect("listing").items {
            wait_seen(&history, &object).await;
        }
        let ledger = r.handler.ledger().entries();
        let calls = Calls::judge(&history, &ledger, &kills);
        // Nothing lost: each object's last change is in its diff-base (handled), and a handler
        // call saw it (u1 for a change after creation, or a creation handler when the change
        // came before the object was first handled — then there is no update, as in Kopf).
        for (name, last) in &finals {
            let o = api.get(name).await.expect("the object");
            let generation = o.metadata.generation.unwrap_or(0);
            let base = diff_base_essence(&o).unwrap_or_default();
            assert_eq!(
                base["spec"]["field"],
                json!(last),
                "{name}: the diff-base does not hold its last change (field {last})"
            );
            assert!(
                ledger
                    .object(name)
                    .outcome("success")
                    .iter()
                    .any(|e| e.generation == Some(generation)),
                "{name}: no handler call saw its last change (generation {generation}, field {last})"
            );
        }
        takeovers.sort_by(f64::total_cmp);
        let (p50, p99, max) = (percentile(&takeovers, 0.5), percentile(&takeovers, 0.99), takeovers.last().copied().unwrap_or(f64::NAN));
        eprintln!(
            "[leader] {KILLS} takeovers after SIGKILL: p50 {p50:.2}s, p99 {p99:.2}s, max {max:.2}s \
             (lease duration {duration}s, retry period {retry}s; goal: ≤ lease duration + 2s); \
             {} handler calls; {}",
            ledger.len(),
            calls.summary()
        );
        calls.assert_clean();
        assert!(
            max <= (duration + retry) as f64 + 3.0,
            "a takeover took {max:.2}s, more than the lease duration ({duration}s) + the retry period ({retry}s) + 3s"
        );
    })
    .await;
}

/// A leader that stops cleanly (SIGTERM) gives the Lease back: a standby leads at its next look
/// (within the retry period, not the lease duration); the role shows on `/readyz`'s neighbours:
/// `operon_active` and the dashboard's overview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_hands_over_at_once_and_the_role_is_shown() {
    with_widget_ns("e2e-handover", |client, ns| async move {
        // A long lease duration, so that a takeover after the release cannot be confused with
        // one after the Lease expired.
        let (_, _, retry) = lease_timing();
        let timing = (30, 20, retry);
        let mut r = Replicas::start("handover", &ns, &client, &["create:c1"], 2, timing).await;
        let leader = r.wait_leader(None, READY).await;
        let standby = 1 - leader;
        let readyz = r.cores[standby].get("/readyz").await.expect("/readyz");
        assert_eq!(readyz.status, 200, "a standby is ready (to take over)");
        assert!(
            readyz.text().starts_with("ok; standby"),
            "/readyz of a standby: {}",
            readyz.text()
        );
        for (i, want) in [
            (standby, "This replica: standby (the leader is core-"),
            (leader, "This replica: leader"),
        ] {
            wait_for(
                "the overview to show the replica's role",
                Duration::from_secs(10),
                || async {
                    let page = r.cores[i].get("/").await.map_err(|e| e.to_string())?.text();
                    Ok::<_, String>(page.contains(want).then_some(()))
                },
            )
            .await;
        }
        // A standby handles nothing: an object created now is handled by the leader only.
        let api = widgets(&client, &ns);
        api.create(&PostParams::default(), &widget("one", json!({})))
            .await
            .expect("creating");
        wait_for("one handled", HANDLED, || async {
            let o = api.get("one").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(is_fully_handled(&o).then_some(()))
        })
        .await;
        assert!(
            !r.cores[standby]
                .log_plain()
                .contains("Handler 'c1' succeeded"),
            "the standby called a handler"
        );
        let stopped_at = tokio::time::Instant::now();
        let status = r.cores[leader]
            .terminate(Duration::from_secs(30))
            .await
            .expect("stopping the leader");
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "a clean stop exits 0"
        );
        assert!(
            r.cores[leader]
                .log_plain()
                .contains("Released the leader Lease"),
            "the leader must say it released the Lease:\n{}",
            r.cores[leader].log_tail(20)
        );
        let new = r.wait_leader(Some(leader), Duration::from_secs(60)).await;
        let took = stopped_at.elapsed().as_secs_f64();
        eprintln!("[handover] a clean stop: core-{new} leads {took:.2}s after SIGTERM");
        assert_eq!(new, standby);
        // The standby sees the release at its next look (every retry period); the stop itself
        // (calls in flight finishing) counts too. Half the lease duration leaves room for a
        // loaded machine and still tells a release from an expiry.
        let allowed = timing.0 as f64 / 2.0;
        assert!(
            took <= allowed,
            "after a release the standby must take over at its next look (retry period {retry}s; \
             {allowed:.0}s allowed, the Lease expires only after {}s), took {took:.2}s",
            timing.0
        );
        api.create(&PostParams::default(), &widget("two", json!({})))
            .await
            .expect("creating");
        wait_for("two handled by the new leader", HANDLED, || async {
            let o = api.get("two").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(is_fully_handled(&o).then_some(()))
        })
        .await;
    })
    .await;
}

/// A leader that cannot renew (frozen with SIGSTOP longer than the lease) finds another holder
/// when it wakes and exits at once (status 3) instead of handling on; the new leader handles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_lease_exits() {
    with_widget_ns("e2e-lostlease", |client, ns| async move {
        let (duration, _, _) = lease_timing();
        let mut r =
            Replicas::start("lostlease", &ns, &client, &["create:c1"], 2, lease_timing()).await;
        let leader = r.wait_leader(None, READY).await;
        r.cores[leader].pause().expect("SIGSTOP");
        let new = r
            .wait_leader(Some(leader), Duration::from_secs(duration * 3 + 10))
            .await;
        r.cores[leader].resume().expect("SIGCONT");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = r.cores[leader].exit_status() {
                break status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the old leader still runs 15s after it lost the Lease:\n{}",
                r.cores[leader].log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status.code(), Some(3), "a lost Lease exits with status 3");
        assert!(
            r.cores[leader]
                .log_plain()
                .contains("Lost the leader Lease"),
            "the old leader must say why it exits:\n{}",
            r.cores[leader].log_tail(20)
        );
        let api = widgets(&client, &ns);
        api.create(&PostParams::default(), &widget("after", json!({})))
            .await
            .expect("creating");
        wait_for("after handled by the new leader", HANDLED, || async {
            let o = api.get("after").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(is_fully_handled(&o).then_some(()))
        })
        .await;
        assert!(r.cores[new].log_plain().contains("Handler 'c1' succeeded"));
    })
    .await;
}

/// Kopf's peering CRDs (as in Kopf's `peering.yaml`: no status subresource, any status).
fn peering_crds() -> String {
    [
        ("Cluster", "ClusterKopfPeering"),
        ("Namespaced", "KopfPeering"),
    ]
    .iter()
    .map(|(scope, kind)| {
        let plural = format!("{}s", kind.to_lowercase());
        format!(
            "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.kopf.dev}}
spec:
  scope: {scope}
  group: kopf.dev
  names: {{kind: {kind}, plural: {plural}, singular: {singular}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
",
            singular = kind.to_lowercase()
        )
    })
    .collect::<Vec<_>>()
    .join("---\n")
}

/// A core taking part in Kopf's peering `peering` of `ns` with `priority`.
async fn peer(name: &str, handler: &HandlerProcess, ns: &str, priority: i64) -> CoreProcess {
    let args: Vec<String> = [
        "--handler",
        &handler.url(),
        "-n",
        ns,
        "--peering",
        "peering",
        "--priority",
        &priority.to_string(),
        "--identity",
        name,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut core = CoreProcess::start(name, &args, &plane().await.kubeconfig)
        .await
        .expect("a core");
    core.wait_ready(READY).await;
    core
}

/// Kopf's peering between two cores: the one of lower priority pauses while the higher one
/// lives (its own peer record in `status`, Kopf's format), and resumes when the higher one
/// stops (its record removed on exit); two of the same priority both pause, as in Kopf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kopf_peering_pauses_the_lower_priority_and_resumes_it() {
    with_widget_ns("e2e-peering", |client, ns| async move {
        apply_yaml(&client, &ns, &peering_crds())
            .await
            .expect("the peering CRDs");
        wait_for(
            "the KopfPeering object",
            Duration::from_secs(30),
            || async {
                apply_yaml(
                    &client,
                    &ns,
                    "apiVersion: kopf.dev/v1\nkind: KopfPeering\nmetadata: {name: peering}\n",
                )
                .await
                .map(|_| Some(()))
                .map_err(|e| e.to_string())
            },
        )
        .await;
        let handler = HandlerProcess::start(
            "peering",
            &["--resource", RESOURCE_ARG, "--handler", "create:c1"],
        )
        .await
        .expect("the handler service");
        let api = widgets(&client, &ns);
        let peerings: Api<kube::api::DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &kube::api::ApiResource {
                group: "kopf.dev".into(),
                version: "v1".into(),
                api_version: "kopf.dev/v1".into(),
                kind: "KopfPeering".into(),
                plural: "kopfpeerings".into(),
            },
        );
        let mut low = peer("low", &handler, &ns, 100).await;
        let mut high = peer("high", &handler, &ns, 200).await;
        // Both records, in Kopf's format.
        let status = wait_for("both peer records", Duration::from_secs(30), || async {
            let o = peerings.get("peering").await.map_err(|e| e.to_string())?;
            let status = o.data.get("status").cloned().unwrap_or_default();
            Ok::<_, String>(
                (status.get("low").is_some() && status.get("high").is_some()).then_some(status),
            )
        })
        .await;
        assert_eq!(status["high"]["priority"], json!(200));
        assert_eq!(status["high"]["lifetime"], json!(60));
        assert!(
            status["high"]["lastseen"]
                .as_str()
                .is_some_and(|t| t.ends_with("+00:00")),
            "lastseen as Kopf writes it: {status}"
        );
        wait_for(
            "the lower priority to pause",
            Duration::from_secs(20),
            || async {
                Ok::<_, ()>(
                    low.log_plain()
                        .contains("Pausing operations in favour of [<Peer high: priority=200, lifetime=60, lastseen='")
                        .then_some(()),
                )
            },
        )
        .await;
        api.create(&PostParams::default(), &widget("while-high", json!({})))
            .await
            .expect("creating");
        wait_for("while-high handled", HANDLED, || async {
            let o = api.get("while-high").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(is_fully_handled(&o).then_some(()))
        })
        .await;
        let calls = |core: &CoreProcess| core.log_plain().matches("Handler 'c1' succeeded").count();
        assert_eq!(calls(&low), 0, "the paused core called a handler");
        assert_eq!(calls(&high), 1);
        // The higher one stops: its record goes, the lower one resumes.
        high.terminate(Duration::from_secs(30))
            .await
            .expect("stopping");
        let status = peerings.get("peering").await.expect("the peering").data["status"].clone();
        assert!(
            status.get("high").is_none(),
            "a stopped peer removes its record: {status}"
        );
        wait_for(
            "the lower priority to resume",
            Duration::from_secs(20),
            || async {
                Ok::<_, ()>(
                    low.log_plain()
                        .contains("Resuming operations after the pause")
                        .then_some(()),
                )
            },
        )
        .await;
        api.create(&PostParams::default(), &widget("after-high", json!({})))
            .await
            .expect("creating");
        wait_for("after-high handled by the lower one", HANDLED, || async {
            let o = api.get("after-high").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(is_fully_handled(&o).then_some(()))
        })
        .await;
        assert_eq!(calls(&low), 1, "the resumed core handles");
        // The same priority: both pause (Kopf's rule).
        let same = peer("same", &handler, &ns, 100).await;
        for core in [&low, &same] {
            wait_for(
                "both to pause on the same priority",
                Duration::from_secs(20),
                || async {
                    Ok::<_, ()>(
                        core.log_plain()
                            .contains("Possibly conflicting operators with the same priority")
                            .then_some(()),
                    )
                },
            )
            .await;
        }
        api.create(&PostParams::default(), &widget("same-priority", json!({})))
            .await
            .expect("creating");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let o = api.get("same-priority").await.expect("the object");
        assert!(
            !is_fully_handled(&o),
            "peers of the same priority must all pause"
        );
        low.terminate(Duration::from_secs(30))
            .await
            .expect("stopping");
        drop(same);
    })
    .await;
}
