//! `operon-sync-example`: the example sync operator as a handler service in Rust.
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
//! the children go.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use operon_proto::v1 as pb;
use operon_proto::v1::handler_service_server::{HandlerService, HandlerServiceServer};
use operon_proto::v1::sync_service_server::{SyncService, SyncServiceServer};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

/// Command line.
#[derive(Debug, Clone, Parser)]
struct Cli {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Append one JSON line per call here.
    #[arg(long)]
    ledger: Option<std::path::PathBuf>,
    /// The parent resource: GROUP/VERSION/PLURAL.
    #[arg(long, default_value = "e2e.operon.dev/v1/sites")]
    parent: String,
    /// Update strategy of the ConfigMaps (OnDelete, Recreate, InPlace, RollingRecreate, RollingInPlace).
    #[arg(long, default_value = "InPlace")]
    configmaps: String,
    /// Update strategy of the Services.
    #[arg(long, default_value = "InPlace")]
    services: String,
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
    shutdown_port: Option<u32>,
    /// The hook's grace period in seconds (0: the core's default, 30 s).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    shutdown_grace: f64,
    /// The hook's retries (attempts after the first).
    #[arg(long, value_name = "N", default_value_t = 0)]
    shutdown_retries: u32,
    /// The hook's failure strategy: give-up or delete.
    #[arg(long, value_name = "STRATEGY", default_value = "give-up")]
    shutdown_failure: String,
}

impl Cli {
    /// The shutdown hook the flags declare, if any.
    fn shutdown_hook(&self) -> anyhow::Result<Option<pb::ShutdownHook>> {
        if self.shutdown_url_template.is_none() && self.shutdown_service.is_none() {
            return Ok(None);
        }
        let failure = match self.shutdown_failure.as_str() {
            "give-up" => pb::ShutdownFailureStrategy::GiveUp,
            "delete" => pb::ShutdownFailureStrategy::Delete,
            other => anyhow::bail!("unknown --shutdown-failure {other:?} (give-up or delete)"),
        };
        anyhow::ensure!(
            self.shutdown_grace.is_finite() && self.shutdown_grace >= 0.0,
            "--shutdown-grace must be a number of seconds"
        );
        let grace = Duration::from_secs_f64(self.shutdown_grace);
        Ok(Some(pb::ShutdownHook {
            service: self.shutdown_service.clone().unwrap_or_default(),
            port: self.shutdown_port.unwrap_or_default(),
            url_template: self.shutdown_url_template.clone().unwrap_or_default(),
            grace_period: (!grace.is_zero()).then(|| prost_types::Duration {
                seconds: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(grace.subsec_nanos()).unwrap_or_default(),
            }),
            retries: self.shutdown_retries,
            failure_strategy: failure as i32,
        }))
    }
}

struct Example {
    cli: Cli,
    ledger: Mutex<Option<std::fs::File>>,
}

fn strategy(name: &str) -> anyhow::Result<pb::UpdateStrategy> {
    Ok(match name {
        "OnDelete" => pb::UpdateStrategy::OnDelete,
        "Recreate" => pb::UpdateStrategy::Recreate,
        "InPlace" => pb::UpdateStrategy::InPlace,
        "RollingRecreate" => pb::UpdateStrategy::RollingRecreate,
        "RollingInPlace" => pb::UpdateStrategy::RollingInPlace,
        other => anyhow::bail!("unknown update strategy {other:?}"),
    })
}

fn core(name: &str) -> pb::ResourceSelector {
    pb::ResourceSelector {
        group: String::new(),
        version: "v1".into(),
        name: name.into(),
        ..Default::default()
    }
}

impl Example {
    fn record(&self, call: &str, parent: &Value, outcome: &str) {
        let mut ledger = self
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = ledger.as_mut() {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let m = &parent["metadata"];
            let line = json!({"ts": ts, "handler": call, "uid": m["uid"], "namespace": m["namespace"],
                "name": m["name"], "generation": m["generation"], "reason": call, "retry": 0,
                "outcome": outcome});
            let _ = writeln!(file, "{line}");
        }
    }

    /// The desired children and the status: a pure function of the parent and its children.
    fn desired(parent: &Value, children: &[pb::ChildGroup]) -> (Value, Vec<Value>) {
        let spec = &parent["spec"];
        let name = parent["metadata"]["name"].as_str().unwrap_or_default();
        let prefix = spec["prefix"].as_str().unwrap_or(name);
        let mut out = Vec::new();
        let entries = spec["entries"].as_array().cloned().unwrap_or_default();
        for entry in &entries {
            let entry_name = entry["name"].as_str().unwrap_or("entry");
            let child = format!("{prefix}-{entry_name}");
            let port = entry["port"].as_i64().unwrap_or(80);
            let mut metadata = json!({"name": child, "labels": {"app.kubernetes.io/name": child}});
            if let Some(ns) = spec["childNamespace"].as_str() {
                metadata["namespace"] = json!(ns);
            }
            let mut data = json!({"port": port.to_string()});
            if let Some(extra) = entry["data"].as_object() {
                for (k, v) in extra {
                    data[k] = json!(v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                }
            }
            let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data});
            if spec["childStatus"].as_bool() == Some(true) {
                cm["status"] = json!({"phase": "Ready"});
            }
            out.push(cm);
            out.push(
                json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata,
                "spec": {"selector": {"app.kubernetes.io/name": child},
                         "ports": [{"name": "http", "port": port, "targetPort": port}]}}),
            );
        }
        let current: usize = children.iter().map(|g| g.objects_json.len()).sum();
        let status = if spec["nullStatus"].as_bool() == Some(true) {
            Value::Null
        } else {
            json!({"desiredChildren": out.len(), "currentChildren": current})
        };
        (status, out)
    }
}

#[tonic::async_trait]
impl HandlerService for Example {
    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::Manifest>, Status> {
        let mut parts = self.cli.parent.splitn(3, '/');
        let (group, version, plural) = (parts.next(), parts.next(), parts.next());
        let child = |name: &str, s: &str| -> Result<pb::ChildType, Status> {
            Ok(pb::ChildType {
                resource: Some(core(name)),
                update_strategy: strategy(s).map_err(|e| Status::internal(e.to_string()))? as i32,
            })
        };
        Ok(Response::new(pb::Manifest {
            service_name: "sync-example-rust".into(),
            contract_revision: 1,
            handlers: vec![],
            syncs: vec![pb::SyncRegistration {
                id: "sites".into(),
                parent: Some(pb::ResourceSelector {
                    group: group.unwrap_or_default().into(),
                    version: version.unwrap_or_default().into(),
                    name: plural.unwrap_or_default().into(),
                    ..Default::default()
                }),
                children: vec![
                    child("configmaps", &self.cli.configmaps)?,
                    child("services", &self.cli.services)?,
                ],
                resync_period: (self.cli.resync > 0).then(|| prost_types::Duration {
                    seconds: i64::try_from(self.cli.resync).unwrap_or(i64::MAX),
                    nanos: 0,
                }),
                finalize: self.cli.finalize,
                call_timeout: None,
                shutdown_hook: self
                    .cli
                    .shutdown_hook()
                    .map_err(|e| Status::internal(e.to_string()))?,
            }],
            tasks: vec![],
        }))
    }

    // ---- Selectors (begin) ----
    async fn select_resources(
        &self,
        _: Request<pb::SelectResourcesRequest>,
    ) -> Result<Response<pb::SelectResourcesResponse>, Status> {
        Err(Status::unimplemented(
            "this service has no callable resource selectors",
        ))
    }

    type OutboxStream = tonic::codegen::BoxStream<pb::OutboxEvent>;

    async fn outbox(
        &self,
        _: Request<pb::OutboxRequest>,
    ) -> Result<Response<Self::OutboxStream>, Status> {
        Err(Status::unimplemented(
            "this service posts no Events outside handler calls",
        ))
    }

    async fn login(
        &self,
        _: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        Err(Status::unimplemented("this service has no login handlers"))
    }
    // ---- Selectors (end) ----

    async fn r#match(
        &self,
        _: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        Err(Status::unimplemented("this service has no change handlers"))
    }

    async fn invoke(
        &self,
        _: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        Err(Status::unimplemented("this service only has sync handlers"))
    }

    type DaemonStream = tonic::codegen::BoxStream<pb::DaemonResponse>;

    async fn daemon(
        &self,
        _: Request<tonic::Streaming<pb::DaemonRequest>>,
    ) -> Result<Response<Self::DaemonStream>, Status> {
        Err(Status::unimplemented("this service only has sync handlers"))
    }
}

fn parse(raw: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(raw)
        .map_err(|e| Status::invalid_argument(format!("parent_json is not JSON: {e}")))
}

#[tonic::async_trait]
impl SyncService for Example {
    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let request = request.into_inner();
        let parent = parse(&request.parent_json)?;
        if let Some(message) = parent["spec"]["fail"].as_str() {
            self.record("sync", &parent, "error");
            return Ok(Response::new(pb::SyncResponse {
                error: message.into(),
                ..Default::default()
            }));
        }
        let (status, children) = Self::desired(&parent, &request.children);
        self.record("sync", &parent, "success");
        Ok(Response::new(pb::SyncResponse {
            status_json: serde_json::to_vec(&status).unwrap_or_default(),
            children_json: children
                .iter()
                .map(|c| serde_json::to_vec(c).unwrap_or_default())
                .collect(),
            resync_after: None,
            error: String::new(),
        }))
    }

    async fn finalize(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::FinalizeResponse>, Status> {
        let request = request.into_inner();
        let parent = parse(&request.parent_json)?;
        let hold = parent["spec"]["holdFinalize"].as_bool() == Some(true);
        self.record("finalize", &parent, if hold { "held" } else { "success" });
        Ok(Response::new(pb::FinalizeResponse {
            status_json: serde_json::to_vec(&json!({"finalizing": true, "held": hold}))
                .unwrap_or_default(),
            finalized: !hold,
            resync_after: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            error: String::new(),
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    strategy(&cli.configmaps)?;
    strategy(&cli.services)?;
    cli.shutdown_hook()?;
    let ledger = match &cli.ledger {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    let example = std::sync::Arc::new(Example {
        cli,
        ledger: Mutex::new(ledger),
    });
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(60))
        .add_service(HandlerServiceServer::from_arc(std::sync::Arc::clone(&example)))
        .add_service(SyncServiceServer::from_arc(example))
        .serve_with_incoming_shutdown(incoming, async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        })
        .await?;
    Ok(())
}
