//! A small stand-in for an application's shutdown micro-service (Krake's "extended arm"), for
//! the shutdown hook's end-to-end tests: a real HTTP server on 127.0.0.1 that takes
//! `PUT /shutdown/...` with the core's JSON body (`token`, `callback`, `reason`, `namespace`,
//! `name`, `uid`), answers, and then — depending on its [`AppMode`] — calls the core back.
//!
//! Every request it receives and every callback it makes is recorded in memory and, one JSON line
//! each, in its ledger file. The binary `shutdown-app` (tests/src/bin/) serves the same.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// How the stand-in behaves when asked to stop.
#[derive(Debug, Clone, PartialEq)]
pub enum AppMode {
    /// Answer 200, then call back with the token after this delay.
    StopAfter(Duration),
    /// Answer 200 and never call back.
    Never,
    /// Answer 200, then call back (after this delay) with a wrong token.
    WrongToken(Duration),
    /// Answer 404 ("already gone").
    Gone,
}

impl AppMode {
    /// Parses `stop-after SECS`, `never`, `wrong-token [SECS]`, `gone`.
    ///
    /// # Errors
    /// An unknown mode or a bad number.
    pub fn parse(mode: &str, secs: Option<&str>) -> anyhow::Result<Self> {
        let secs = || -> anyhow::Result<Duration> {
            Ok(Duration::from_secs_f64(
                secs.unwrap_or("0")
                    .parse()
                    .context("SECS must be a number")?,
            ))
        };
        Ok(match mode {
            "stop-after" => AppMode::StopAfter(secs()?),
            "never" => AppMode::Never,
            "wrong-token" => AppMode::WrongToken(secs()?),
            "gone" => AppMode::Gone,
            other => anyhow::bail!("unknown mode {other:?} (stop-after, never, wrong-token, gone)"),
        })
    }
}

/// One request the core made.
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownRequest {
    /// The path asked for.
    pub path: String,
    /// The JSON body.
    pub body: Value,
}

impl ShutdownRequest {
    /// A string field of the body.
    pub fn field(&self, key: &str) -> &str {
        self.body[key].as_str().unwrap_or_default()
    }
}

/// One callback the stand-in made.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    /// The URL called.
    pub url: String,
    /// The token sent.
    pub token: String,
    /// The core's answer: status code (0: no answer).
    pub status: u16,
}

#[derive(Debug, Default)]
struct Records {
    requests: Vec<ShutdownRequest>,
    callbacks: Vec<Callback>,
}

#[derive(Debug)]
struct Inner {
    mode: Mutex<AppMode>,
    records: Mutex<Records>,
    ledger: Option<PathBuf>,
}

/// The running stand-in; stops when dropped.
#[derive(Debug)]
pub struct ShutdownApp {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ShutdownApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Inner {
    fn record(&self, line: Value) {
        if let Some(path) = &self.ledger {
            use std::io::Write as _;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

impl ShutdownApp {
    /// Starts serving on `listen` (e.g. `127.0.0.1:0`) in `mode`, recording into `ledger`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        mode: AppMode,
        ledger: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            mode: Mutex::new(mode),
            records: Mutex::default(),
            ledger: ledger.map(Path::to_owned),
        });
        let serving = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let inner = Arc::clone(&serving);
                tokio::spawn(async move {
                    if let Err(err) = serve(stream, inner).await {
                        eprintln!("[shutdown-app] {err:#}");
                    }
                });
            }
        });
        Ok(Self { addr, inner, task })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URL template for the hook: `http://ADDR/shutdown/{namespace}/{name}/{uid}`.
    pub fn url_template(&self) -> String {
        format!(
            "http://{}/shutdown/{{namespace}}/{{name}}/{{uid}}",
            self.addr
        )
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: AppMode) {
        *self
            .inner
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ShutdownRequest> {
        self.inner
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .requests
            .clone()
    }

    /// The callbacks made so far.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.inner
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .callbacks
            .clone()
    }
}

/// Splits `http://HOST:PORT/path` into the address and the path.
///
/// # Errors
/// When the URL is not `http://` with a numeric address.
pub fn split_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// URL: {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = host
        .parse()
        .with_context(|| format!("not HOST:PORT in {url}"))?;
    Ok((addr, if path.is_empty() { "/" } else { path }.to_owned()))
}

/// Calls the core back: `PUT callback` with `{"token": token}`; returns the status (0: none).
pub async fn call_back(callback: &str, token: &str) -> u16 {
    match split_url(callback) {
        Ok((addr, path)) => crate::http_request(addr, "PUT", &path, Some(&json!({"token": token})))
            .await
            .map_or(0, |r| r.status),
        Err(_) => 0,
    }
}

async fn serve(mut stream: TcpStream, inner: Arc<Inner>) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the connection closed mid-request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        request_line.next().unwrap_or_default().to_owned(),
        request_line.next().unwrap_or_default().to_owned(),
    );
    let body: Value =
        serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    let mode = inner
        .mode
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let (status, text) = match (method.as_str(), &mode) {
        ("PUT", AppMode::Gone) => (404, "gone"),
        ("PUT", _) => (200, "Graceful shutdown requested!"),
        _ => (405, "PUT only"),
    };
    inner.record(
        json!({"ts": now(), "received": {"method": method, "path": path, "body": body},
        "mode": format!("{mode:?}"), "answered": status}),
    );
    if method == "PUT" {
        inner
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .requests
            .push(ShutdownRequest {
                path,
                body: body.clone(),
            });
    }
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await.ok();
    if status != 200 {
        return Ok(());
    }
    let (delay, token) = match mode {
        AppMode::StopAfter(d) => (d, body["token"].as_str().unwrap_or_default().to_owned()),
        AppMode::WrongToken(d) => (d, "not-the-token".to_owned()),
        AppMode::Never | AppMode::Gone => return Ok(()),
    };
    let callback = body["callback"].as_str().unwrap_or_default().to_owned();
    tokio::time::sleep(delay).await;
    let status = call_back(&callback, &token).await;
    inner.record(json!({"ts": now(), "called_back": callback, "token": token, "status": status}));
    inner
        .records
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .callbacks
        .push(Callback {
            url: callback,
            token,
            status,
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        let (addr, path) = split_url("http://127.0.0.1:8080/api/v1/shutdown/x/ns/n").unwrap();
        assert_eq!(addr.port(), 8080);
        assert_eq!(path, "/api/v1/shutdown/x/ns/n");
        assert!(split_url("https://127.0.0.1:1/").is_err());
        assert_eq!(
            AppMode::parse("stop-after", Some("2")).unwrap(),
            AppMode::StopAfter(Duration::from_secs(2))
        );
        assert!(AppMode::parse("sometimes", None).is_err());
    }

    #[tokio::test]
    async fn answers_and_calls_back() {
        // The "core": a listener that takes one callback.
        let core = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let core_addr = core.local_addr().unwrap();
        let got = tokio::spawn(async move {
            let (mut s, _) = core.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let app = ShutdownApp::start(
            "127.0.0.1:0".parse().unwrap(),
            AppMode::StopAfter(Duration::ZERO),
            None,
        )
        .await
        .unwrap();
        let body = json!({"token": "tok", "callback": format!("http://{core_addr}/cb")});
        let r = crate::http_request(app.addr(), "PUT", "/shutdown/ns/n/u", Some(&body))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let seen = got.await.unwrap();
        assert!(seen.starts_with("PUT /cb "), "{seen}");
        assert!(seen.contains(r#"{"token":"tok"}"#), "{seen}");
        assert_eq!(app.requests()[0].field("token"), "tok");
    }
}
