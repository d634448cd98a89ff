//! Disturbing the local control plane on purpose, for tests of watch resilience: restarting
//! kube-apiserver (`tests/cluster/restart-apiserver.sh`) and writing to or compacting etcd
//! through its v3 JSON gateway. And the lock that keeps such tests away from the others.
//!
//! Every test that uses the plane should hold [`PlaneLock::shared`]; a test that stops or
//! restarts a component holds [`PlaneLock::exclusive`], so it runs alone — also against the
//! tests of other test processes that take the lock (a `flock` on `<state dir>.e2e.lock`, e.g.
//! `~/.cache/operon/cluster.e2e.lock`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::http::http_request;
use crate::plane::repo_root;

/// The plane's state directory (`OPERON_CLUSTER_DIR`, default `~/.cache/operon/cluster`).
pub fn cluster_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OPERON_CLUSTER_DIR") {
        return PathBuf::from(dir);
    }
    let cache = match std::env::var_os("OPERON_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/operon"),
    };
    cache.join("cluster")
}

/// The plane's `env` file (`ETCD_PORT`, `APISERVER_PORT`, …) as a map.
///
/// # Errors
/// When the file cannot be read (the plane is not up).
pub fn cluster_env() -> anyhow::Result<BTreeMap<String, String>> {
    let path = cluster_dir().join("env");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// A lock on the plane, held for as long as the value lives.
#[derive(Debug)]
pub struct PlaneLock {
    _file: File,
}

impl PlaneLock {
    /// Shared: any number of ordinary tests at once.
    ///
    /// # Panics
    /// When the lock file cannot be opened or locked.
    pub async fn shared() -> Self {
        Self::take(false).await
    }

    /// Exclusive: no other lock holder at the same time (tests that stop plane components).
    ///
    /// # Panics
    /// When the lock file cannot be opened or locked.
    pub async fn exclusive() -> Self {
        Self::take(true).await
    }

    async fn take(exclusive: bool) -> Self {
        // Next to the state directory, not in it: up.sh and down.sh remove that directory.
        let dir = cluster_dir();
        let mut name = dir.file_name().unwrap_or_default().to_owned();
        name.push(".e2e.lock");
        let path = dir.with_file_name(name);
        let file = tokio::task::spawn_blocking(move || -> anyhow::Result<File> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if exclusive {
                file.lock()?;
            } else {
                file.lock_shared()?;
            }
            Ok(file)
        })
        .await
        .expect("the lock task panicked")
        .unwrap_or_else(|err| panic!("cannot lock the plane: {err:#}"));
        Self { _file: file }
    }
}

/// Runs `tests/cluster/restart-apiserver.sh <action>` (`stop`, `start` or `restart`); `start`
/// and `restart` return once the API server is ready again.
///
/// # Errors
/// When the script fails; the message carries its output.
pub async fn apiserver(action: &str) -> anyhow::Result<()> {
    let script = repo_root().join("tests/cluster/restart-apiserver.sh");
    let action = action.to_owned();
    let output = tokio::task::spawn_blocking(move || Command::new(&script).arg(&action).output())
        .await?
        .context("running tests/cluster/restart-apiserver.sh")?;
    if !output.status.success() {
        bail!(
            "restart-apiserver.sh failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The plane's etcd, through its v3 JSON gateway on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct Etcd {
    addr: SocketAddr,
}

impl Etcd {
    /// The plane's etcd (port from the plane's `env` file).
    ///
    /// # Errors
    /// When the plane's env file has no `ETCD_PORT`.
    pub fn of_plane() -> anyhow::Result<Self> {
        let env = cluster_env()?;
        let port: u16 = env
            .get("ETCD_PORT")
            .context("no ETCD_PORT in the plane's env file")?
            .parse()?;
        Ok(Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = http_request(self.addr, "POST", path, Some(&body)).await?;
        if response.status != 200 {
            bail!(
                "etcd {path} answered {}: {}",
                response.status,
                response.text()
            );
        }
        response.json()
    }

    /// The current revision of the store.
    ///
    /// # Errors
    /// When etcd does not answer.
    pub async fn revision(&self) -> anyhow::Result<i64> {
        let answer = self
            .call(
                "/v3/kv/range",
                json!({"key": BASE64.encode("/operon-e2e/none")}),
            )
            .await?;
        header_revision(&answer)
    }

    /// Writes `value` at `key` (outside Kubernetes' `/registry`), which makes the revision move
    /// on; returns the new revision.
    ///
    /// # Errors
    /// When etcd does not answer.
    pub async fn put(&self, key: &str, value: &str) -> anyhow::Result<i64> {
        let answer = self
            .call(
                "/v3/kv/put",
                json!({"key": BASE64.encode(key), "value": BASE64.encode(value)}),
            )
            .await?;
        header_revision(&answer)
    }

    /// Compacts the history up to `revision` (physically, i.e. waits until it is done): any
    /// watch from an older revision gets 410 Gone from then on.
    ///
    /// # Errors
    /// When etcd refuses.
    pub async fn compact(&self, revision: i64) -> anyhow::Result<()> {
        self.call(
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": true}),
        )
        .await
        .map(|_| ())
    }
}

fn header_revision(answer: &Value) -> anyhow::Result<i64> {
    let revision = &answer["header"]["revision"];
    revision
        .as_str()
        .and_then(|r| r.parse().ok())
        .or_else(|| revision.as_i64())
        .with_context(|| format!("no header.revision in etcd's answer: {answer}"))
}
