//! A handler service written with the Python SDK (`kopf serve`, sdk-python-compat), run from
//! the SDK's venv (`~/.cache/operon/venv-sdk`, installed by tests/run.sh with the `otel` extra),
//! importing this checkout's SDK (`PYTHONPATH`), whichever checkout installed the venv.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::plane::repo_root;
use crate::process::{append_log, free_port, log_dir, tail, unique_stem};

/// Handlers (Python SDK) with a create handler `flaky` on the widgets that fails once (a
/// temporary error, "not ready yet", retried after 1 s) and then succeeds with `{"attempts": 2}`.
pub const FLAKY_PY: &str = r#"
import kopf

@kopf.on.create('e2e.operon.dev', 'v1', 'widgets')
def flaky(retry, **_):
    if retry < 1:
        raise kopf.TemporaryError("not ready yet", delay=1)
    return {'attempts': retry + 1}
"#;

/// A running `kopf serve FILE --listen 127.0.0.1:PORT`; killed when dropped.
#[derive(Debug)]
pub struct PythonHandler {
    port: u16,
    log: PathBuf,
    child: Child,
}

/// The SDK venv's Python.
pub fn sdk_python() -> PathBuf {
    let cache = std::env::var_os("OPERON_CACHE").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("operon")
        },
        PathBuf::from,
    );
    cache.join("venv-sdk").join("bin").join("python")
}

impl PythonHandler {
    /// Writes `source` to `<log dir>/<name>-….py` and serves it with `env` added to the
    /// environment; waits until the port accepts connections.
    ///
    /// # Errors
    /// When Python cannot be started or does not listen within 60 s.
    pub async fn start(
        name: &str,
        source: &str,
        kubeconfig: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let stem = unique_stem(name);
        let script = log_dir().join(format!("{stem}.py"));
        std::fs::write(&script, source).with_context(|| format!("writing {}", script.display()))?;
        let log = log_dir().join(format!("{stem}.python.log"));
        let (stdout, stderr) = append_log(&log)?;
        let port = free_port();
        let python = sdk_python();
        let child = Command::new(&python)
            .args(["-m", "kopf", "serve", "--verbose", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(&script)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "PYTHONPATH",
                repo_root().join("sdk-python-compat").join("src"),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let mut handler = PythonHandler { port, log, child };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(handler);
            }
            if let Ok(Some(status)) = handler.child.try_wait() {
                bail!(
                    "kopf serve exited ({status}); its log:\n{}",
                    tail(&handler.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "kopf serve does not listen on {addr} within 60 s; its log:\n{}",
            tail(&handler.log, 40)
        )
    }

    /// The URL to give the core.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PythonHandler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
