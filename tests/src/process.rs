//! The processes under test: a handler service ([`HandlerProcess`]) and the core
//! ([`CoreProcess`]).
//!
//! Both write their output to a file under `<target>/e2e-logs/` (kept after the run), both are
//! SIGKILLed and reaped on drop, and both print the tail of their log to stderr when dropped
//! during a panic — so a failing test shows what the core was doing. Everything listens on
//! 127.0.0.1 only.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::binaries::{binaries, target_dir};
use crate::http::{HttpResponse, http_get};
use crate::ledger::Ledger;

/// Lines of log printed when a process is dropped during a panic.
const TAIL_ON_PANIC: usize = 80;

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// The directory for the processes' logs and ledgers: `<target>/e2e-logs/`, created on demand.
pub fn log_dir() -> PathBuf {
    let dir = target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
    dir
}

/// A unique file stem for `name` in this test process: `<name>-<pid>-<n>`.
pub(crate) fn unique_stem(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on 127.0.0.1, for a process that binds it later (and again after each
/// restart).
///
/// Not one the kernel hands out itself: a port from `bind(0)` is an ephemeral one, which any
/// outgoing connection may take the moment it is released — a restarted core then fails with
/// "Address already in use" (seen in CI). So the port comes from below the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), from a spot that differs per process and per
/// call, and is checked free by binding it.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(12_000, 65_535);
    let (low, span) = (10_000, ephemeral_start - 10_000);
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(low + offset).expect("below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

pub(crate) fn append_log(path: &Path) -> anyhow::Result<(File, File)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let clone = file.try_clone()?;
    Ok((file, clone))
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read), each cut to
/// 600 characters.
pub fn tail(path: &Path, lines: usize) -> String {
    const WIDTH: usize = 600;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| match line.char_indices().nth(WIDTH) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => (*line).to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(
            super::strip_ansi("\u{1b}[2mtime\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
            "time  INFO x"
        );
    }
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`, …) to the process `pid`, which must be a child of
/// this test process.
fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -s {signal} {pid} failed: {status}");
    }
    Ok(())
}

/// Waits up to `timeout` for `child` to exit.
async fn wait_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERMs `child` and waits up to `grace` for it to exit (then SIGKILLs it). Returns the exit
/// status, or `None` if it had to be killed.
async fn terminate(mut child: Child, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    signal(child.id(), "TERM")?;
    let status = wait_exit(&mut child, grace).await?;
    if status.is_none() {
        kill_and_reap(&mut child);
    }
    Ok(status)
}

/// SIGKILLs and reaps `child` (if still running).
fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------

/// A running `operon-example-handler`, listening on 127.0.0.1 and recording its executions in
/// its own ledger.
#[derive(Debug)]
pub struct HandlerProcess {
    name: String,
    args: Vec<String>,
    port: u16,
    log: PathBuf,
    ledger: Ledger,
    child: Option<Child>,
    /// Kept open so that the service's later writes to stdout do not fail.
    _stdout: Option<BufReader<ChildStdout>>,
    /// Another handler service binary than `operon-example-handler` (same command-line contract).
    binary: Option<PathBuf>,
    /// Added to the service's environment.
    env: Vec<(String, String)>,
    /// Whether `--ledger` is passed (not to services that refuse it, e.g. the Rust SDK's).
    ledger_flag: bool,
}

impl HandlerProcess {
    /// Starts the example handler service with `args` (`--resource …`, `--handler …`, …);
    /// `--listen 127.0.0.1:0` and `--ledger <log dir>/<name>-….ledger.jsonl` are added. Waits
    /// until it prints its address.
    ///
    /// # Errors
    /// When it cannot be started or does not announce its address within 60 s.
    pub async fn start(name: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(None, name, args, &[], true).await
    }

    /// As [`HandlerProcess::start`], for another handler service binary with the same
    /// command-line contract (`--listen`, `--ledger`, first stdout line `listening on ADDR`):
    /// e.g. the sync examples in Rust and Go.
    ///
    /// # Errors
    /// As [`HandlerProcess::start`].
    pub async fn start_binary(binary: &Path, name: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(Some(binary.to_owned()), name, args, &[], true).await
    }

    /// As [`HandlerProcess::start`] (or [`HandlerProcess::start_binary`] when `binary` is given),
    /// with `env` added to the service's environment (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    ///
    /// # Errors
    /// As [`HandlerProcess::start`].
    pub async fn start_with_env(
        binary: Option<&Path>,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_with(binary.map(Path::to_owned), name, args, env, true).await
    }

    /// As [`HandlerProcess::start_with_env`] for `binary`, without `--ledger`: for services that
    /// take only the SDK's own flags and refuse others (the Rust SDK's examples). Its ledger
    /// stays empty.
    ///
    /// # Errors
    /// As [`HandlerProcess::start`].
    pub async fn start_without_ledger(
        binary: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_with(Some(binary.to_owned()), name, args, env, false).await
    }

    async fn start_with(
        binary: Option<PathBuf>,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ledger_flag: bool,
    ) -> anyhow::Result<Self> {
        let stem = unique_stem(name);
        let dir = log_dir();
        let mut process = Self {
            name: name.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            port: 0,
            log: dir.join(format!("{stem}.handler.log")),
            ledger: Ledger::new(dir.join(format!("{stem}.ledger.jsonl"))),
            child: None,
            _stdout: None,
            binary,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ledger_flag,
        };
        process.spawn("127.0.0.1:0").await?;
        Ok(process)
    }

    async fn spawn(&mut self, listen: &str) -> anyhow::Result<()> {
        let binary = match &self.binary {
            Some(binary) => binary.clone(),
            None => binaries().await.example_handler.clone(),
        };
        let (_, stderr) = append_log(&self.log)?;
        let mut command = Command::new(&binary);
        command.arg("--listen").arg(listen);
        if self.ledger_flag {
            command.arg("--ledger").arg(self.ledger.path());
        }
        let mut child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let read = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            reader.read_line(&mut line).map(|_| (reader, line))
        });
        let (reader, line) = match tokio::time::timeout(Duration::from_secs(60), read).await {
            Ok(joined) => joined??,
            Err(_) => {
                kill_and_reap(&mut child);
                bail!(
                    "the handler service {} did not announce its address in 60 s; its log:\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
        };
        let addr: Option<SocketAddr> = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            kill_and_reap(&mut child);
            bail!(
                "the handler service {} printed {line:?} instead of its address; its log:\n{}",
                self.name,
                tail(&self.log, 40)
            );
        };
        self.port = addr.port();
        self.child = Some(child);
        self._stdout = Some(reader);
        Ok(())
    }

    /// The URL to give the core: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same after [`HandlerProcess::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Its log file (stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILLs it (nothing happens if it is not running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        self._stdout = None;
    }

    /// SIGTERMs it and waits up to `grace` for it to exit (then SIGKILLs it): a graceful stop.
    /// Returns the exit status, or `None` if it had to be killed.
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.take() else {
            bail!("the handler service {} is not running", self.name);
        };
        self._stdout = None;
        terminate(child, grace).await
    }

    /// Starts it again on the same port with other arguments (a redeployed service with other
    /// handlers), with the same ledger.
    ///
    /// # Errors
    /// When it cannot be started again.
    pub async fn restart_with(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.args = args.iter().map(|s| (*s).to_owned()).collect();
        self.restart().await
    }

    /// Starts it again on the same port (retrying the bind for up to 30 s), with the same ledger.
    ///
    /// # Errors
    /// When it cannot be started again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn(&listen).await {
                Ok(()) => return Ok(()),
                Err(err) if tokio::time::Instant::now() < deadline => {
                    eprintln!(
                        "[e2e] restarting {} on {listen}: {err:#}; retrying",
                        self.name
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for HandlerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- the last lines of handler service {} ({}) ----\n{}\n----",
                self.name,
                self.log.display(),
                tail(&self.log, TAIL_ON_PANIC / 2)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A running core, `operon run …`, with its HTTP listener on a free port of 127.0.0.1.
#[derive(Debug)]
pub struct CoreProcess {
    name: String,
    args: Vec<String>,
    kubeconfig: PathBuf,
    http: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl CoreProcess {
    /// Starts `operon run <args> --http 127.0.0.1:PORT` with `KUBECONFIG=<kubeconfig>`, output
    /// appended to `<log dir>/<name>-….core.log`. Does not wait for readiness
    /// (see [`CoreProcess::wait_ready`]).
    ///
    /// # Errors
    /// When the process cannot be spawned.
    pub async fn start(name: &str, args: &[String], kubeconfig: &Path) -> anyhow::Result<Self> {
        let stem = unique_stem(name);
        let mut core = Self {
            name: name.to_owned(),
            args: args.to_vec(),
            kubeconfig: kubeconfig.to_owned(),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            log: log_dir().join(format!("{stem}.core.log")),
            child: None,
            starts: 0,
        };
        core.spawn().await?;
        Ok(core)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = &binaries().await.operon;
        self.starts += 1;
        let (stdout, stderr) = append_log(&self.log)?;
        {
            use std::io::Write as _;
            let mut marker = &stdout;
            writeln!(
                marker,
                "==== [e2e] start #{} of the core {}: operon run {} --http {}",
                self.starts,
                self.name,
                self.args.join(" "),
                self.http
            )?;
        }
        let child = Command::new(binary)
            .arg("run")
            .args(&self.args)
            .arg("--http")
            .arg(self.http.to_string())
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The address of its HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Its log file (stdout and stderr of every start, in order).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The whole log so far without terminal colour codes (ANSI escape sequences).
    pub fn log_plain(&self) -> String {
        strip_ansi(&self.log())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status once it has exited on its own; `None` while it runs, and when this harness
    /// has killed it.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether it is running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Panics (with the log tail) if it is not running.
    ///
    /// # Panics
    /// When the core has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exit_status() {
            panic!(
                "the core {} exited unexpectedly ({status}); the last lines of its log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail(60)
            );
        }
        assert!(
            self.child.is_some(),
            "the core {} is not started",
            self.name
        );
    }

    /// SIGKILLs it and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// SIGTERMs it and waits up to `grace` for it to exit (then SIGKILLs it). Returns the exit
    /// status, or `None` if it had to be killed.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.take() else {
            bail!("the core {} is not running", self.name);
        };
        terminate(child, grace).await
    }

    /// Freezes it (SIGSTOP): it keeps its connections but does nothing.
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        signal(self.pid().context("the core is not running")?, "STOP")
    }

    /// Thaws it (SIGCONT) after [`CoreProcess::pause`].
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        signal(self.pid().context("the core is not running")?, "CONT")
    }

    /// Starts it again with the same arguments and HTTP port (SIGKILLing it first if it runs).
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// `GET` on its HTTP listener.
    ///
    /// # Errors
    /// When the request fails.
    pub async fn get(&self, path: &str) -> anyhow::Result<HttpResponse> {
        http_get(self.http, path).await
    }

    /// Waits until `/readyz` answers 200 (every watch has listed once).
    ///
    /// # Panics
    /// When the core exits or is not ready within `timeout`; with its log tail.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.assert_running();
            let last = match self.get("/readyz").await {
                Ok(response) if response.status == 200 => return,
                Ok(response) => format!("{} {}", response.status, response.text()),
                Err(err) => format!("{err:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the core {} was not ready within {timeout:?} (last /readyz: {last}); \
                     the last lines of its log:\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for CoreProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- the last lines of the core {} ({}) ----\n{}\n----",
                self.name,
                self.log.display(),
                self.log_tail(TAIL_ON_PANIC)
            );
        }
    }
}
