//! Kopf's persistence format on objects, read back; and what real Kopf would write, asked of
//! Kopf itself.
//!
//! The readers ([`annotations`], [`progress_annotations`], [`record`], [`diff_base`],
//! [`is_fully_handled`], …) take an object as the API server returned it. [`kopf_expect`] runs
//! `tests/kopf/kopf_expect.py` with the Python of a venv that has `kopf==1.45.2` from PyPI
//! (`$OPERON_CACHE/venv-kopf`, default `~/.cache/operon/venv-kopf`; created on first use when
//! missing, as `tests/run.sh` does); [`KopfServer`] keeps one such process for many batches of
//! cases (the differential tests).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use kube::api::DynamicObject;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::plane::repo_root;

/// Kopf's default annotation prefix.
pub const PREFIX: &str = "kopf.zalando.org";
/// The diff-base annotation (the last handled essence).
pub const DIFF_BASE: &str = "kopf.zalando.org/last-handled-configuration";
/// The touch annotation written to wake an object up.
pub const TOUCH: &str = "kopf.zalando.org/touch-dummy";
/// Kopf's finalizer.
pub const FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";
/// The Kopf release whose storage classes give the expected values.
pub const KOPF_VERSION: &str = "1.45.2";

/// The object's annotations.
pub fn annotations(object: &DynamicObject) -> BTreeMap<String, String> {
    object.metadata.annotations.clone().unwrap_or_default()
}

/// The annotations under Kopf's prefix (`kopf.zalando.org/…`), all of them.
pub fn kopf_annotations(object: &DynamicObject) -> BTreeMap<String, String> {
    annotations(object)
        .into_iter()
        .filter(|(key, _)| key.starts_with(&format!("{PREFIX}/")))
        .collect()
}

/// The progress records: annotations under Kopf's prefix other than the diff-base, the touch
/// marker and the `kopf-managed` marker.
pub fn progress_annotations(object: &DynamicObject) -> BTreeMap<String, String> {
    kopf_annotations(object)
        .into_iter()
        .filter(|(key, _)| {
            key != DIFF_BASE && key != TOUCH && key != &format!("{PREFIX}/kopf-managed")
        })
        .collect()
}

/// The annotation key of a handler's progress record, for ids of at most 63 characters made of
/// letters, digits, `_`, `.`, `-` and `/` (Kopf's `safe` form: `/` becomes `.`).
pub fn progress_key(handler_id: &str) -> String {
    assert!(
        handler_id.len() <= 63,
        "long ids get hashed keys; ask kopf_expect for their keys"
    );
    format!("{PREFIX}/{}", handler_id.replace('/', "."))
}

/// The decoded progress record of `handler_id`, if there is one.
///
/// # Panics
/// When the annotation is not JSON.
pub fn record(object: &DynamicObject, handler_id: &str) -> Option<Value> {
    annotations(object)
        .get(&progress_key(handler_id))
        .map(|raw| {
            serde_json::from_str(raw).unwrap_or_else(|err| {
                panic!("the progress record of {handler_id} is not JSON ({err}): {raw}")
            })
        })
}

/// The raw diff-base annotation.
pub fn diff_base(object: &DynamicObject) -> Option<String> {
    annotations(object).get(DIFF_BASE).cloned()
}

/// The decoded diff-base (the last handled essence).
///
/// # Panics
/// When the annotation is not JSON.
pub fn diff_base_essence(object: &DynamicObject) -> Option<Value> {
    diff_base(object).map(|raw| {
        serde_json::from_str(&raw)
            .unwrap_or_else(|err| panic!("the diff-base is not JSON ({err}): {raw}"))
    })
}

/// Whether the last change is fully handled: the diff-base is there and no progress record is.
pub fn is_fully_handled(object: &DynamicObject) -> bool {
    diff_base(object).is_some() && progress_annotations(object).is_empty()
}

/// The object's finalizers.
pub fn finalizers(object: &DynamicObject) -> Vec<String> {
    object.metadata.finalizers.clone().unwrap_or_default()
}

/// A one-line summary of the object's Kopf state for failure messages.
pub fn summary(object: &DynamicObject) -> String {
    format!(
        "rv={} gen={} deleting={} finalizers={:?} kopf annotations={:?}",
        object.metadata.resource_version.as_deref().unwrap_or("-"),
        object.metadata.generation.unwrap_or(-1),
        object.metadata.deletion_timestamp.is_some(),
        finalizers(object),
        kopf_annotations(object)
    )
}

/// Whether `text` is a timestamp as Kopf ≥ 1.37 writes it:
/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (`isoformat(timespec='microseconds')`, UTC, tz-aware).
pub fn is_kopf_timestamp(text: &str) -> bool {
    const SHAPE: &str = "dddd-dd-ddTdd:dd:dd.dddddd+00:00";
    text.len() == SHAPE.len()
        && text.chars().zip(SHAPE.chars()).all(|(c, s)| match s {
            'd' => c.is_ascii_digit(),
            other => c == other,
        })
}

static PYTHON: OnceLock<PathBuf> = OnceLock::new();

/// The Python of the venv with `kopf==1.45.2`, creating the venv when it is missing.
///
/// # Panics
/// When the venv cannot be created.
pub async fn kopf_python() -> &'static PathBuf {
    match PYTHON.get() {
        Some(python) => python,
        None => tokio::task::spawn_blocking(kopf_python_blocking)
            .await
            .expect("the venv task panicked"),
    }
}

/// [`kopf_python`] for tests without a runtime.
///
/// # Panics
/// When the venv cannot be created.
pub fn kopf_python_blocking() -> &'static PathBuf {
    PYTHON.get_or_init(|| {
        ensure_venv()
            .unwrap_or_else(|err| panic!("no Python venv with kopf=={KOPF_VERSION}: {err:#}"))
    })
}

fn ensure_venv() -> anyhow::Result<PathBuf> {
    let cache = match std::env::var_os("OPERON_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/operon"),
    };
    let venv = cache.join("venv-kopf");
    let python = venv.join("bin/python");
    let has_kopf = || {
        std::process::Command::new(&python)
            .args([
                "-c",
                "import sys, importlib.metadata as m; sys.exit(m.version('kopf') != sys.argv[1])",
                KOPF_VERSION,
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && has_kopf() {
        return Ok(python);
    }
    eprintln!(
        "[e2e] creating {} with kopf=={KOPF_VERSION}…",
        venv.display()
    );
    if !python.is_file() {
        let status = std::process::Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .context("running python3 -m venv")?;
        if !status.success() {
            bail!("python3 -m venv {} failed: {status}", venv.display());
        }
    }
    let output = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            &format!("kopf=={KOPF_VERSION}"),
        ])
        .output()
        .context("running pip")?;
    if !output.status.success() || !has_kopf() {
        bail!(
            "pip install kopf=={KOPF_VERSION} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(python)
}

/// Asks real Kopf what it writes: runs `tests/kopf/kopf_expect.py` with `request` on stdin and
/// returns its answer (see the script's docstring for the request and answer fields).
///
/// # Errors
/// When the script fails or answers something that is not JSON.
pub async fn kopf_expect(request: &Value) -> anyhow::Result<Value> {
    let python = kopf_python().await;
    let script = repo_root().join("tests/kopf/kopf_expect.py");
    let mut child = tokio::process::Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", script.display()))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    stdin.write_all(request.to_string().as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "kopf_expect.py failed ({}): {}\nrequest: {request}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "kopf_expect.py answered no JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// One `tests/kopf/kopf_expect.py --serve` process: a request per line in, an answer per line
/// out, so that any number of batches go through one Python process. Its stderr is the test's.
/// The process is killed when this is dropped.
pub struct KopfServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl KopfServer {
    /// Starts the script with the Python of [`kopf_python_blocking`].
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn start() -> anyhow::Result<Self> {
        let script = repo_root().join("tests/kopf/kopf_expect.py");
        let mut child = std::process::Command::new(kopf_python_blocking())
            .arg(&script)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("running {} --serve", script.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(KopfServer {
            child,
            stdin,
            stdout,
        })
    }

    /// Asks one request (see the script's docstring) and returns the answer.
    ///
    /// # Errors
    /// When the script has exited (its traceback is on stderr) or answers something that is
    /// not JSON.
    pub fn ask(&mut self, request: &Value) -> anyhow::Result<Value> {
        let mut line = request.to_string();
        line.push('\n');
        let sent = self
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush());
        let mut answer = String::new();
        let read = self.stdout.read_line(&mut answer);
        if sent.is_err() || matches!(read, Ok(0) | Err(_)) {
            let status = self.child.try_wait().ok().flatten();
            bail!(
                "kopf_expect.py --serve stopped answering (exit: {status:?}; its stderr is above)"
            );
        }
        serde_json::from_str(&answer)
            .with_context(|| format!("kopf_expect.py answered no JSON: {answer}"))
    }
}

impl Drop for KopfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The annotations of a merge patch produced by Kopf (`patch.metadata.annotations`), with their
/// values as Kopf would write them (`null` = removal).
pub fn patch_annotations(patch: &Value) -> BTreeMap<String, Value> {
    patch
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert!(is_kopf_timestamp("2026-11-22T01:27:42.807251+00:00"));
        assert!(!is_kopf_timestamp("2026-11-22T01:27:42.807251Z"));
        assert!(!is_kopf_timestamp("2026-11-22T01:27:42.807251"));
        assert!(!is_kopf_timestamp("2026-11-22T01:27:42.8072+00:00"));
    }

    #[test]
    fn keys() {
        assert_eq!(progress_key("create_fn"), "kopf.zalando.org/create_fn");
        assert_eq!(progress_key("h2/a"), "kopf.zalando.org/h2.a");
    }
}
