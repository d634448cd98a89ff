//! The benchmark's floor and load tool (see tests/bench/README.md).
//!
//! - `controller`: the floor of framework overhead — a minimal kube-rs controller, in one process,
//!   with the three handlers of `tests/bench/handlers.py` as plain functions, doing the same writes
//!   as Operon: on first sight a patch that adds the finalizer, then one merge patch per change
//!   that stores the new diff-base annotation, and one that removes the finalizer on deletion.
//! - `patch-loop`: the ceiling — one merge patch per object (the diff-base annotation), as fast as
//!   the API server takes them, with no watch and no handler.
//! - `create`, `set-value`, `delete`, `release`: the driver's bulk writes (User-Agent
//!   `operon-bench/1 (load)`, which the driver leaves out of every contender's count); each writes
//!   `NAME UNIX-TIME` per answered request to `--out`.
//! - `set-value --rate R --duration D`: the steady load — an open loop of R changes per second
//!   for D seconds, round-robin over the objects, each change a value never written before;
//!   writes `NAME VALUE UNIX-TIME GENERATION` per answered request (the generation the change
//!   made) and prints a JSON report.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures_util::{StreamExt, TryStreamExt, stream};
use http::{HeaderValue, header::USER_AGENT};
use kube::{
    Client, Config, ResourceExt,
    api::{
        Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
        PatchParams, PostParams,
    },
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::{Value, json};

const DIFFBASE: &str = "kopf.zalando.org/last-handled-configuration";
const FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";

#[derive(Parser)]
#[command(
    about = "The benchmark's floor (a plain kube-rs controller), ceiling (a PATCH loop) and load tool"
)]
struct Args {
    /// The namespace of the benchmark's objects.
    #[arg(long, short = 'n')]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The floor: a kube-rs controller with the three handlers in-process.
    Controller {
        /// Appends `KIND NAME UNIX-TIME GENERATION` per handler call.
        #[arg(long)]
        ledger: PathBuf,
    },
    /// The ceiling: patch the diff-base annotation of every object, `--concurrency` at a time.
    PatchLoop {
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Create obj-00000 … with `spec.value = 0`.
    Create {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Delete obj-00000 … obj-(count-1), one DELETE each (a sample of the objects).
    Delete {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove every finalizer of obj-(from) … obj-(count-1), with no operator running: the
    /// clean-up of the objects a sampled delete phase leaves behind.
    Release {
        #[arg(long)]
        from: usize,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Set `spec.value` of obj-00000 … obj-(count-1) (all at once, `--concurrency` at a time),
    /// or, with `--rate`, at a steady rate.
    SetValue {
        #[arg(long)]
        count: usize,
        /// The value (with `--rate`: the first one; change k writes value + k).
        #[arg(long)]
        value: i64,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Open loop: start change k at k / RATE seconds, whatever the answers to the earlier
        /// ones, round-robin over the objects (change k goes to obj-(k mod count)); a change
        /// waits only for a free request (`--concurrency`) and for the previous write to the same
        /// object, so that each object's writes land in order. Prints a JSON report.
        #[arg(long, requires = "duration")]
        rate: Option<f64>,
        /// With `--rate`: for this many seconds (RATE × DURATION changes).
        #[arg(long, requires = "rate")]
        duration: Option<f64>,
        #[arg(long)]
        out: PathBuf,
    },
}

/// An open-loop load: `rate` changes per second for `duration` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Steady {
    rate: f64,
    duration: f64,
}

impl Steady {
    /// How many changes the run makes.
    fn changes(self) -> usize {
        // Both are checked positive and finite before; `as` saturates.
        (self.rate * self.duration).floor() as usize
    }

    /// When change `k` is due, after the start.
    fn due(self, k: usize) -> Duration {
        Duration::from_secs_f64(k as f64 / self.rate)
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn name(i: usize) -> String {
    format!("obj-{i:05}")
}

async fn api(namespace: &str, agent: &'static str) -> anyhow::Result<Api<DynamicObject>> {
    let mut config = Config::infer()
        .await
        .context("no Kubernetes configuration")?;
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(agent)));
    let client = Client::try_from(config)?;
    let gvk = GroupVersionKind::gvk("bench.operon.dev", "v1", "BenchObject");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "benchobjects");
    Ok(Api::namespaced_with(client, namespace, &resource))
}

/// One line per answered request, for the driver.
struct Times(Mutex<File>);

impl Times {
    fn create(path: &PathBuf) -> anyhow::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self(Mutex::new(file)))
    }

    fn record(&self, line: &str) {
        self.record_then(line, "");
    }

    /// `LINE UNIX-TIME TAIL` (the tail after the time, so that readers of `NAME TIME` lines
    /// can take the first fields).
    fn record_then(&self, line: &str, tail: &str) {
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!(" {tail}")
        };
        // One write per line in append mode: lines never interleave, a kill tears none.
        let _ = file.write_all(format!("{line} {:.6}{tail}\n", now()).as_bytes());
    }

    /// A handler call in the floor's ledger: `KIND NAME UNIX-TIME GENERATION` (the object's
    /// `metadata.generation` as the call saw it, which tells the driver which change it handled).
    fn record_call(&self, kind: &str, obj: &DynamicObject) {
        let generation = obj
            .metadata
            .generation
            .map(|g| g.to_string())
            .unwrap_or_default();
        self.record_then(&format!("{kind} {}", obj.name_any()), &generation);
    }
}

/// Runs `op` until it succeeds, retrying on conflicts and overload for a while (20 times,
/// 200 ms apart).
async fn retrying<T, F, Fut>(name: &str, op: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(done) => return Ok(done),
            Err(e) if attempt < 20 => {
                attempt += 1;
                eprintln!("{name}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("{name}: {e}")),
        }
    }
}

/// Runs `op` for obj-(first index) … obj-(last index), `concurrency` at a time, as the driver
/// (User-Agent `operon-bench/1 (load)`); each is retried on conflicts and overload for a while,
/// and each answered one is recorded in `out`.
async fn bulk<F, Fut>(
    ns: &str,
    objects: std::ops::Range<usize>,
    concurrency: usize,
    out: &PathBuf,
    op: F,
) -> anyhow::Result<()>
where
    F: Fn(Api<DynamicObject>, String) -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let api = api(ns, "operon-bench/1 (load)").await?;
    let times = Times::create(out)?;
    stream::iter(objects)
        .map(|i| {
            let name = name(i);
            let (op, api) = (&op, &api);
            async move {
                retrying(&name, || op(api.clone(), name.clone())).await?;
                Ok::<_, anyhow::Error>(name)
            }
        })
        .buffer_unordered(concurrency)
        .try_for_each(|name| {
            times.record(&name);
            async { Ok(()) }
        })
        .await
}

/// The steady load: change k sets `spec.value = first + k` on obj-(k mod count), started at
/// k / rate seconds (open loop), at most `concurrency` in flight and one per object at a time.
/// Returns the report the driver reads: changes sent, seconds, and how late the starts were.
async fn steady(
    ns: &str,
    count: usize,
    first: i64,
    load: Steady,
    concurrency: usize,
    out: &PathBuf,
) -> anyhow::Result<Value> {
    anyhow::ensure!(count > 0, "--count must be positive");
    anyhow::ensure!(
        load.rate.is_finite()
            && load.rate > 0.0
            && load.duration.is_finite()
            && load.duration > 0.0,
        "--rate and --duration must be positive"
    );
    let api = api(ns, "operon-bench/1 (load)").await?;
    let times = Arc::new(Times::create(out)?);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    // The write in flight per object, if any.
    let mut last: Vec<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> =
        (0..count).map(|_| None).collect();
    let start = tokio::time::Instant::now();
    let (mut late, mut max_lag) = (0_usize, Duration::ZERO);
    for k in 0..load.changes() {
        let due = start + load.due(k);
        tokio::time::sleep_until(due).await;
        let slot = k % count;
        if let Some(previous) = last[slot].take() {
            previous.await??;
        }
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        if lag > Duration::from_millis(5) {
            late += 1;
        }
        max_lag = max_lag.max(lag);
        let (api, times, name) = (api.clone(), Arc::clone(&times), name(slot));
        let value = first + i64::try_from(k)?;
        last[slot] = Some(tokio::spawn(async move {
            let _permit = permit;
            let body = json!({"spec": {"value": value}});
            let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
            let written = retrying(&name, || api.patch(&name, &params, &patch)).await?;
            // The generation this change made: the handlers' ledgers say which one they saw.
            let generation = written.metadata.generation.unwrap_or_default();
            times.record_then(&format!("{name} {value}"), &generation.to_string());
            Ok(())
        }));
    }
    for previous in last.into_iter().flatten() {
        previous.await??;
    }
    Ok(json!({
        "sent": load.changes(),
        "rate": load.rate,
        "seconds": start.elapsed().as_secs_f64(),
        "late": late,
        "max_lag_ms": max_lag.as_secs_f64() * 1000.0,
    }))
}

/// A write's result, with the API error `code` counted as done (the write had landed already).
fn done_unless<T>(result: Result<T, kube::Error>, code: u16) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == code => Ok(()),
        other => other.map(drop),
    }
}

/// This process's peak RSS (VmHWM, KiB) and CPU time (user + system, s), from /proc/self.
fn own_usage() -> (u64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // utime and stime, in clock ticks (USER_HZ, 100 on Linux).
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    (hwm, ticks / 100.0)
}

struct Floor {
    api: Api<DynamicObject>,
    ledger: Times,
}

#[derive(Debug)]
struct Failed(kube::Error);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Failed {}

/// The whole floor: Kopf's create / update-of-a-field / delete decisions, reduced to this resource.
async fn reconcile(obj: Arc<DynamicObject>, floor: Arc<Floor>) -> Result<Action, Failed> {
    let name = obj.name_any();
    let finalizers = obj.finalizers().to_vec();
    let ours = finalizers.iter().any(|f| f == FINALIZER);
    let patch = |body: Value| async {
        floor
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map(drop)
            .map_err(Failed)
    };
    if obj.metadata.deletion_timestamp.is_some() {
        if ours {
            floor.ledger.record_call("delete", &obj);
            let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
            patch(json!({"metadata": {"finalizers": rest, "resourceVersion": obj.resource_version()}}))
                .await?;
        }
        return Ok(Action::await_change());
    }
    if !ours {
        // As kube-runtime's `finalizer()` (and Kopf, and Operon) do: the finalizer first, in a
        // write of its own; its watch echo brings the object back for the handlers.
        let mut finalizers = finalizers.clone();
        finalizers.push(FINALIZER.to_owned());
        patch(json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}}))
            .await?;
        return Ok(Action::await_change());
    }
    let spec = obj.data.get("spec").cloned().unwrap_or_else(|| json!({}));
    let essence = format!("{}\n", json!({ "spec": spec }));
    let stored = obj.annotations().get(DIFFBASE);
    let cause = match stored {
        None => Some("create"),
        Some(old) => {
            let old: Value = serde_json::from_str(old).unwrap_or_default();
            (old.pointer("/spec/value") != spec.get("value")).then_some("update")
        }
    };
    if let Some(cause) = cause {
        floor.ledger.record_call(cause, &obj);
    }
    if stored != Some(&essence) {
        patch(json!({"metadata": {
            "annotations": {DIFFBASE: essence},
            "resourceVersion": obj.resource_version(),
        }}))
        .await?;
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<DynamicObject>, error: &Failed, _: Arc<Floor>) -> Action {
    eprintln!("reconcile failed: {error}; again in 1 s");
    Action::requeue(Duration::from_secs(1))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ns = args.namespace.as_str();
    match args.command {
        Command::Controller { ledger } => {
            let api = api(ns, "operon-bench-floor/1").await?;
            let floor = Arc::new(Floor {
                api: api.clone(),
                ledger: Times::create(&ledger)?,
            });
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("bench.operon.dev", "v1", "BenchObject"),
                "benchobjects",
            );
            Controller::new_with(api, watcher::Config::default(), resource)
                .shutdown_on_signal()
                .run(reconcile, error_policy, floor)
                .for_each(|_| async {})
                .await;
        }
        Command::PatchLoop { concurrency } => {
            let api = api(ns, "operon-bench-ceiling/1").await?;
            let list = api.list_metadata(&ListParams::default()).await?;
            let started = Instant::now();
            let names: Vec<String> = list.items.iter().map(|o| o.name_any()).collect();
            stream::iter(names)
                .map(|name| {
                    let api = api.clone();
                    async move {
                        let body = json!({"metadata": {"annotations": {DIFFBASE: "{\"spec\":{\"value\":0}}\n"}}});
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(body)).await
                    }
                })
                .buffer_unordered(concurrency)
                .try_for_each(|_| async { Ok(()) })
                .await?;
            let (vm_hwm_kib, cpu_seconds) = own_usage();
            println!(
                "{}",
                json!({
                    "patched": list.items.len(),
                    "seconds": started.elapsed().as_secs_f64(),
                    "vm_hwm_kib": vm_hwm_kib,
                    "cpu_seconds": cpu_seconds,
                })
            );
        }
        Command::Create {
            count,
            concurrency,
            out,
        } => {
            bulk(ns, 0..count, concurrency, &out, |api, name| {
                async move {
                    let obj: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": "bench.operon.dev/v1", "kind": "BenchObject",
                        "metadata": {"name": name}, "spec": {"value": 0},
                    }))
                    .expect("a valid object");
                    // 409: a retry that had landed.
                    done_unless(api.create(&PostParams::default(), &obj).await, 409)
                }
            })
            .await?;
        }
        Command::SetValue {
            count,
            value,
            concurrency,
            rate: Some(rate),
            duration: Some(duration),
            out,
        } => {
            let load = Steady { rate, duration };
            let report = steady(ns, count, value, load, concurrency, &out).await?;
            println!("{report}");
        }
        Command::SetValue {
            count,
            value,
            concurrency,
            out,
            ..
        } => {
            bulk(ns, 0..count, concurrency, &out, |api, name| async move {
                let body = json!({"spec": {"value": value}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(body))
                    .await
                    .map(drop)
            })
            .await?;
        }
        Command::Delete {
            count,
            concurrency,
            out,
        } => {
            bulk(ns, 0..count, concurrency, &out, |api, name| async move {
                // 404: a retry that had landed.
                done_unless(api.delete(&name, &DeleteParams::default()).await, 404)
            })
            .await?;
        }
        Command::Release {
            from,
            count,
            concurrency,
            out,
        } => {
            bulk(ns, from..count, concurrency, &out, |api, name| async move {
                let body = json!({"metadata": {"finalizers": null}});
                // 404: already gone.
                let (params, patch) = (PatchParams::default(), Patch::Merge(body));
                done_unless(api.patch(&name, &params, &patch).await, 404)
            })
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_creation_order() {
        assert_eq!(name(7), "obj-00007");
        assert!(name(999) < name(1000));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(Args::try_parse_from(["floor", "-n", "ns", "create"]).is_err());
        assert!(Args::try_parse_from(["floor", "-n", "ns", "patch-loop"]).is_ok());
        // A rate needs a duration, and the other way round.
        let set = [
            "floor",
            "-n",
            "ns",
            "set-value",
            "--count",
            "3",
            "--value",
            "1",
        ];
        let with = |extra: &[&'static str]| Args::try_parse_from(set.iter().chain(extra));
        assert!(with(&["--out", "x", "--rate", "5"]).is_err());
        assert!(with(&["--out", "x", "--duration", "5"]).is_err());
        assert!(with(&["--out", "x", "--rate", "5", "--duration", "2"]).is_ok());
    }

    #[test]
    fn a_steady_load_is_an_open_loop_schedule() {
        let load = Steady {
            rate: 100.0,
            duration: 2.5,
        };
        assert_eq!(load.changes(), 250);
        assert_eq!(load.due(0), Duration::ZERO);
        assert_eq!(load.due(150), Duration::from_millis(1500));
        let slow = Steady {
            rate: 0.5,
            duration: 3.0,
        };
        assert_eq!(slow.changes(), 1);
    }
}
