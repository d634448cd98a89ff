//! `operon-sync-example`: the example sync operator, on the Rust SDK (`operon-handler`).
//!
//! A parent (by default `sites.e2e.operon.dev`) owns, for every entry of `spec.entries`
//! (`{name, port, data}`), a ConfigMap and a Service named `<prefix>-<entry name>` (`prefix`:
//! `spec.prefix`, else the parent's name). The status counts the desired and the current
//! children. The Go example (`proto/examples/go/`) behaves exactly the same; the end-to-end tests
//! drive both. Test knobs in the parent's spec: `fail` (answer this error), `childNamespace` (put
//! the children there), `childStatus` (give the children a `status`), `nullStatus` (leave the
//! status alone), `holdFinalize` (Finalize answers "not yet"). `--shutdown-url-template` (or
//! `--shutdown-service`/`--shutdown-port`) with `--shutdown-grace`, `--shutdown-retries` and
//! `--shutdown-failure` declare a shutdown hook: the core asks the application to stop before
//! the children go. `--ledger` appends one JSON line per call, which the tests read.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use operon_handler::{
    Desired, Finalized, HandlerError, Operator, ServeConfig, ShutdownFailure, ShutdownHook,
    SyncCtx, SyncOptions, UpdateStrategy,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Command line.
#[derive(Debug, Clone, Parser)]
struct Cli {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Append one JSON line per call here.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// The parent resource: GROUP/VERSION/PLURAL.
    #[arg(long, default_value = "e2e.operon.dev/v1/sites")]
    parent: String,
    /// Update strategy of the ConfigMaps (OnDelete, Recreate, InPlace, RollingRecreate, RollingInPlace).
    #[arg(long, default_value = "InPlace")]
    configmaps: UpdateStrategy,
    /// Update strategy of the Services.
    #[arg(long, default_value = "InPlace")]
    services: UpdateStrategy,
    /// Hold a finalizer on parents and answer Finalize.
    #[arg(long)]
    finalize: bool,
    /// Resync period in seconds (0: none).
    #[arg(long, default_value_t = 0)]
    resync: u64,
    /// Declare a shutdown hook calling this URL template (`{namespace}`, `{name}`, `{uid}`).
    #[arg(long, value_name = "URL", conflicts_with = "shutdown_service")]
    shutdown_url_template: Option<String>,
    /// Declare a shutdown hook calling this Service (`{name}`: the parent's name) at
    /// `--shutdown-port`.
    #[arg(long, value_name = "NAME", requires = "shutdown_port")]
    shutdown_service: Option<String>,
    /// The port of `--shutdown-service`.
    #[arg(long, value_name = "PORT")]
    shutdown_port: Option<u16>,
    /// The hook's grace period in seconds (0: the core's default, 30 s).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    shutdown_grace: f64,
    /// The hook's retries (attempts after the first).
    #[arg(long, value_name = "N", default_value_t = 0)]
    shutdown_retries: u32,
    /// The hook's failure strategy.
    #[arg(long, value_name = "STRATEGY", value_enum, default_value_t = Failure::GiveUp)]
    shutdown_failure: Failure,
}

/// `--shutdown-failure`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Failure {
    GiveUp,
    Delete,
}

impl Cli {
    /// The shutdown hook the flags declare, if any.
    fn shutdown_hook(&self) -> anyhow::Result<Option<ShutdownHook>> {
        let hook = match (&self.shutdown_url_template, &self.shutdown_service) {
            (Some(template), _) => ShutdownHook::url(template),
            (None, Some(service)) => {
                ShutdownHook::service(service, self.shutdown_port.unwrap_or_default())
            }
            (None, None) => return Ok(None),
        };
        let grace = Duration::try_from_secs_f64(self.shutdown_grace)
            .map_err(|_| anyhow::anyhow!("--shutdown-grace must be a number of seconds"))?;
        let hook = if grace.is_zero() {
            hook
        } else {
            hook.grace_period(grace)
        };
        Ok(Some(hook.retries(self.shutdown_retries).on_failure(
            match self.shutdown_failure {
                Failure::GiveUp => ShutdownFailure::GiveUp,
                Failure::Delete => ShutdownFailure::Delete,
            },
        )))
    }
}

/// The parent, as far as the example reads it; a spec it cannot read is the sync's error.
#[derive(Debug, Default, Deserialize)]
struct Site {
    #[serde(default)]
    spec: SiteSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SiteSpec {
    entries: Vec<Entry>,
    prefix: Option<String>,
    fail: Option<String>,
    child_namespace: Option<String>,
    child_status: Option<bool>,
    null_status: Option<bool>,
    hold_finalize: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Entry {
    name: Option<String>,
    port: Option<i64>,
    data: Map<String, Value>,
}

/// One JSON line per Sync and Finalize call, in the format of the example handler's ledger
/// (tests/src/ledger.rs).
struct Ledger(Option<Mutex<std::fs::File>>);

impl Ledger {
    fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = path
            .map(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
            })
            .transpose()?;
        Ok(Self(file.map(Mutex::new)))
    }

    fn record(&self, call: &str, parent: &Value, outcome: &str) {
        let Some(file) = &self.0 else { return };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let m = &parent["metadata"];
        let line = json!({"ts": ts, "handler": call, "uid": m["uid"], "namespace": m["namespace"],
            "name": m["name"], "generation": m["generation"], "reason": call, "retry": 0,
            "outcome": outcome});
        let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(file, "{line}");
    }
}

/// The desired children and the status: a pure function of the parent and its children.
async fn sync(ctx: SyncCtx<Site>, ledger: Arc<Ledger>) -> Result<Desired, HandlerError> {
    let spec = &ctx.parent().spec;
    if let Some(message) = &spec.fail {
        ledger.record("sync", ctx.parent_body(), "error");
        return Err(message.as_str().into());
    }
    let prefix = spec.prefix.as_deref().or(ctx.name()).unwrap_or_default();
    let mut desired = Desired::new();
    let mut count = 0;
    for entry in &spec.entries {
        let child = format!("{prefix}-{}", entry.name.as_deref().unwrap_or("entry"));
        let port = entry.port.unwrap_or(80);
        let mut metadata = json!({"name": child, "labels": {"app.kubernetes.io/name": child}});
        if let Some(ns) = &spec.child_namespace {
            metadata["namespace"] = json!(ns);
        }
        let mut data = json!({"port": port.to_string()});
        for (k, v) in &entry.data {
            data[k] = json!(v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        }
        let mut cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data});
        if spec.child_status == Some(true) {
            cm["status"] = json!({"phase": "Ready"});
        }
        desired = desired
            .child(cm)
            .child(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": metadata, "spec": {"selector": {"app.kubernetes.io/name": child},
            "ports": [{"name": "http", "port": port, "targetPort": port}]}}));
        count += 2;
    }
    if spec.null_status != Some(true) {
        let current: usize = ctx.child_groups().iter().map(|g| g.objects.len()).sum();
        desired = desired.status(json!({"desiredChildren": count, "currentChildren": current}));
    }
    ledger.record("sync", ctx.parent_body(), "success");
    Ok(desired)
}

/// While the parent is being deleted: done, unless `spec.holdFinalize` (then again in 1 s).
async fn finalize(ctx: SyncCtx<Site>, ledger: Arc<Ledger>) -> Result<Finalized, HandlerError> {
    let hold = ctx.parent().spec.hold_finalize == Some(true);
    ledger.record(
        "finalize",
        ctx.parent_body(),
        if hold { "held" } else { "success" },
    );
    let answer = if hold {
        Finalized::not_yet(Some(Duration::from_secs(1)))
    } else {
        Finalized::done()
    };
    Ok(answer.status(json!({"finalizing": true, "held": hold})))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ledger = Arc::new(Ledger::open(cli.ledger.as_deref())?);
    let mut options = SyncOptions::new()
        .id("sites")
        .owns_with("v1/configmaps", cli.configmaps)
        .owns_with("v1/services", cli.services);
    if cli.resync > 0 {
        options = options.resync(Duration::from_secs(cli.resync));
    }
    let hook = cli.shutdown_hook()?;
    // A hook holds the finalizer too; Finalize then comes after the application stopped.
    if cli.finalize || hook.is_some() {
        let ledger = Arc::clone(&ledger);
        options = options.finalizer(move |ctx| finalize(ctx, Arc::clone(&ledger)));
    }
    if let Some(hook) = hook {
        options = options.shutdown_hook(hook);
    }
    Operator::new("sync-example-rust")
        .sync_with(cli.parent.as_str(), options, move |ctx| {
            sync(ctx, Arc::clone(&ledger))
        })
        .serve(ServeConfig::default().listen(cli.listen))
        .await?;
    Ok(())
}
