//! A real Jaeger v2 (tests/cluster/jaeger-up.sh: built from its Go module, in-memory storage, on
//! 127.0.0.1) and its query API (`/api/traces`), for the tracing tests.

use std::net::SocketAddr;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::http::http_get;
use crate::plane::repo_root;

/// The running Jaeger.
#[derive(Debug, Clone)]
pub struct Jaeger {
    /// The OTLP/gRPC endpoint to export to (`http://127.0.0.1:4317`).
    pub otlp: String,
    /// The query API and UI (`http://127.0.0.1:16686`).
    pub query: String,
    addr: SocketAddr,
}

static JAEGER: OnceCell<Jaeger> = OnceCell::const_new();

/// Jaeger, started (and built, the first time: ~10 minutes) when needed.
pub async fn jaeger() -> &'static Jaeger {
    JAEGER
        .get_or_init(|| async {
            start()
                .await
                .unwrap_or_else(|err| panic!("Jaeger is not available: {err:#}"))
        })
        .await
}

async fn start() -> anyhow::Result<Jaeger> {
    let script = repo_root().join("tests/cluster/jaeger-up.sh");
    let output = tokio::task::spawn_blocking(move || Command::new(&script).output())
        .await?
        .context("running tests/cluster/jaeger-up.sh")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "tests/cluster/jaeger-up.sh failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let var = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .with_context(|| format!("jaeger-up.sh printed no {name}: {stdout}"))
    };
    let query = var("OPERON_JAEGER_QUERY")?;
    let addr = query
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("not an http://IP:PORT address: {query}"))?;
    Ok(Jaeger {
        otlp: var("OPERON_JAEGER_OTLP")?,
        query,
        addr,
    })
}

impl Jaeger {
    /// `GET /api/traces?service=…`: the traces with spans of this service (Jaeger's v1 JSON:
    /// `[{traceID, spans: [{spanID, operationName, references, processID, tags…}], processes}]`).
    ///
    /// # Errors
    /// When the query API does not answer or answers with an error.
    pub async fn traces(&self, service: &str) -> anyhow::Result<Vec<Value>> {
        let path = format!("/api/traces?service={service}&limit=200&lookback=1h");
        self.data(&path).await
    }

    /// `GET /api/traces/<id>`: one trace, all its spans.
    ///
    /// # Errors
    /// When the query API does not answer, or has no such trace.
    pub async fn trace(&self, trace_id: &str) -> anyhow::Result<Value> {
        let mut traces = self.data(&format!("/api/traces/{trace_id}")).await?;
        traces.pop().context("no trace in the answer")
    }

    async fn data(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let response = http_get(self.addr, path).await?;
        if response.status != 200 {
            bail!("GET {path}: HTTP {}: {}", response.status, response.text());
        }
        let body: Value = serde_json::from_str(&response.text())?;
        Ok(body["data"].as_array().cloned().unwrap_or_default())
    }
}

/// A span of a Jaeger v1 JSON trace, with its process's service name resolved.
#[derive(Debug, Clone)]
pub struct Span {
    /// The span id (hex).
    pub id: String,
    /// The trace id (hex).
    pub trace_id: String,
    /// The operation (span) name.
    pub name: String,
    /// The service of the process that reported it.
    pub service: String,
    /// `(refType, traceID, spanID)` of each reference (`CHILD_OF` for the parent, `FOLLOWS_FROM`
    /// for links).
    pub references: Vec<(String, String, String)>,
    /// The tags, as `key → value`.
    pub tags: serde_json::Map<String, Value>,
}

impl Span {
    /// The parent span's id, if any.
    pub fn parent(&self) -> Option<&str> {
        self.references
            .iter()
            .find(|(kind, trace, _)| kind == "CHILD_OF" && *trace == self.trace_id)
            .map(|(_, _, span)| span.as_str())
    }

    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&Value> {
        self.tags.get(key)
    }
}

/// The spans of a Jaeger v1 JSON trace.
pub fn spans(trace: &Value) -> Vec<Span> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let process = s["processID"].as_str().unwrap_or_default();
            Span {
                id: text(&s["spanID"]),
                trace_id: text(&s["traceID"]),
                name: text(&s["operationName"]),
                service: text(&processes[process]["serviceName"]),
                references: s["references"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|r| (text(&r["refType"]), text(&r["traceID"]), text(&r["spanID"])))
                    .collect(),
                tags: s["tags"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| (text(&t["key"]), t["value"].clone()))
                    .collect(),
            }
        })
        .collect()
}

impl Jaeger {
    /// A slow way to the query API: a proxy on 127.0.0.1 that holds every chunk a client sends
    /// for `delay` before passing it on (so each request waits, also on a kept-alive
    /// connection); answers pass at once. Returns its base URL; it runs until the test ends.
    pub async fn slow_query(&self, delay: std::time::Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the slow proxy");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let upstream = self.addr;
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let requests = async {
                        let mut buf = vec![0; 16 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                            tokio::time::sleep(delay).await;
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let answers = tokio::io::copy(&mut from_server, &mut to_client);
                    let _ = tokio::join!(requests, answers);
                });
            }
        });
        base
    }
}
