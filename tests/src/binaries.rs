//! The binaries under test, built once per test process.
//!
//! [`binaries`] runs `cargo build -p operon -p operon-example-handler -p operon-sync-example
//! -p operon-website-example -p operon-bench-floor` the first time it is called (later callers wait for that build) and
//! returns the paths in the workspace's target directory (`CARGO_TARGET_DIR` if set, else
//! `<repo>/target`), debug profile. Set `OPERON_E2E_SKIP_BUILD=1` to use whatever binaries are
//! there.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use tokio::sync::OnceCell;

use crate::plane::repo_root;

/// Paths of the built binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The core, `operon` (crate `operon`).
    pub operon: PathBuf,
    /// The scriptable handler service, `operon-example-handler` (proto/examples/rust).
    pub example_handler: PathBuf,
    /// The example sync operator in Rust, `operon-sync-example` (proto/examples/rust-sync).
    pub sync_example: PathBuf,
    /// The Rust SDK's example operator, `operon-website-example` (proto/examples/rust-website).
    pub website_example: PathBuf,
    /// The benchmark's floor and load tool, `operon-bench-floor` (tests/bench/floor).
    pub bench_load: PathBuf,
}

static BINARIES: OnceCell<Binaries> = OnceCell::const_new();

/// The target directory of the workspace: `CARGO_TARGET_DIR` (relative to the repository root
/// when relative), else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// Builds the binaries on first use (once per test process) and returns their paths.
///
/// # Panics
/// When the build fails; the message carries cargo's output.
pub async fn binaries() -> &'static Binaries {
    BINARIES
        .get_or_init(|| async {
            tokio::task::spawn_blocking(build)
                .await
                .expect("the build task panicked")
                .unwrap_or_else(|err| panic!("cannot build the binaries under test: {err:#}"))
        })
        .await
}

fn build() -> anyhow::Result<Binaries> {
    let root = repo_root();
    let debug = target_dir().join("debug");
    let binaries = Binaries {
        operon: debug.join("operon"),
        example_handler: debug.join("operon-example-handler"),
        sync_example: debug.join("operon-sync-example"),
        website_example: debug.join("operon-website-example"),
        bench_load: debug.join("operon-bench-floor"),
    };
    if std::env::var_os("OPERON_E2E_SKIP_BUILD").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("[e2e] building operon and the example handlers (cargo build)…");
        let output = Command::new(&cargo)
            .current_dir(root)
            .args([
                "build",
                "-p",
                "operon",
                "-p",
                "operon-example-handler",
                "-p",
                "operon-sync-example",
                "-p",
                "operon-website-example",
                "-p",
                "operon-bench-floor",
            ])
            .output()
            .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
        if !output.status.success() {
            bail!(
                "cargo build failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    for path in [
        &binaries.operon,
        &binaries.example_handler,
        &binaries.sync_example,
        &binaries.website_example,
        &binaries.bench_load,
    ] {
        if !path.is_file() {
            bail!("{} does not exist after the build", path.display());
        }
    }
    Ok(binaries)
}

static GO_EXAMPLE: OnceCell<PathBuf> = OnceCell::const_new();

/// The Go example handler service (proto/examples/go: the sync example and change handlers),
/// built by `proto/examples/go/build.sh` on first use (once per test process; cached under
/// `~/.cache/operon`) — same command-line contract as [`Binaries::example_handler`]
/// (`--listen`, `--ledger`, `--resource`, `--handler`, first line `listening on ADDR`).
///
/// # Panics
/// When the build fails; the message carries its output.
pub async fn go_example() -> &'static Path {
    built_by(&GO_EXAMPLE, "proto/examples/go/build.sh").await
}

static GO_WEBSITE: OnceCell<PathBuf> = OnceCell::const_new();

/// The go-website example operator (proto/examples/go-website, written with the Go SDK in
/// proto/sdk/go), built by `proto/examples/go-website/build.sh` on first use (once per test
/// process; cached under `~/.cache/operon`, keyed by the example's and the SDK's source). It
/// takes the SDK's flags (`--listen`, `--ledger`, …) and prints `listening on ADDR` first, so
/// [`crate::HandlerProcess::start_binary`] runs it.
///
/// # Panics
/// When the build fails; the message carries its output.
pub async fn go_website() -> &'static Path {
    built_by(&GO_WEBSITE, "proto/examples/go-website/build.sh").await
}

/// Runs a Go example's `build.sh` once per test process; its last line of output is the binary.
async fn built_by(cell: &'static OnceCell<PathBuf>, script: &str) -> &'static Path {
    cell.get_or_init(|| async {
        let path = repo_root().join(script);
        let out = tokio::process::Command::new(&path)
            .output()
            .await
            .unwrap_or_else(|err| panic!("running {}: {err}", path.display()));
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.trim().lines().last().unwrap_or_default())
    })
    .await
}
