//! Connecting to the local control plane.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

/// The running local control plane.
#[derive(Debug, Clone)]
pub struct Plane {
    /// The kubeconfig written by `tests/cluster/up.sh`.
    pub kubeconfig: PathBuf,
}

static PLANE: OnceCell<Plane> = OnceCell::const_new();

/// The repository's root directory.
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the repository root")
}

/// Returns the local plane, starting it with `tests/cluster/up.sh` on first use (idempotent: an
/// already running plane is reused).
///
/// # Panics
/// When the plane cannot be started; the message carries up.sh's output.
pub async fn plane() -> &'static Plane {
    PLANE
        .get_or_init(|| async {
            start_plane()
                .await
                .unwrap_or_else(|err| panic!("the local control plane is not available: {err:#}"))
        })
        .await
}

async fn start_plane() -> anyhow::Result<Plane> {
    let script = repo_root().join("tests/cluster/up.sh");
    let output = tokio::task::spawn_blocking(move || Command::new(&script).output())
        .await?
        .context("running tests/cluster/up.sh")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "tests/cluster/up.sh failed ({}):\n{}\n{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = stdout
        .lines()
        .find_map(|line| line.strip_prefix("export KUBECONFIG="))
        .with_context(|| format!("up.sh printed no `export KUBECONFIG=` line: {stdout}"))?;
    // No `set_var` (unsafe in edition 2024 with other threads running): child processes get the
    // path from `Plane::kubeconfig`.
    Ok(Plane {
        kubeconfig: PathBuf::from(path.trim()),
    })
}

impl Plane {
    /// A client with the admin credential (context `operon`).
    ///
    /// # Errors
    /// When the kubeconfig cannot be read or the client cannot be built.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.client_for("operon").await
    }

    /// A client with the non-admin credential (context `operon-user`: authenticated, no
    /// permissions).
    ///
    /// # Errors
    /// When the kubeconfig cannot be read or the client cannot be built.
    pub async fn user_client(&self) -> anyhow::Result<kube::Client> {
        self.client_for("operon-user").await
    }

    async fn client_for(&self, context: &str) -> anyhow::Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let options = KubeConfigOptions {
            context: Some(context.to_owned()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        Ok(kube::Client::try_from(config)?)
    }
}
