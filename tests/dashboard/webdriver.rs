//! A small WebDriver client for the dashboard's browser tests: headless Chromium driven by
//! chromedriver (Debian `chromium` and `chromium-driver`) over plain HTTP/1.1 + JSON on
//! 127.0.0.1 (chromedriver keeps connections open, so responses are read by `Content-Length`). Only what the tests use: navigate, run a script,
//! find, click and type, take screenshots, and Chrome DevTools commands (dark mode).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use operon_e2e::{free_port, log_dir, tail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where chromium and chromedriver are, as Debian installs them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session; both end on drop.
pub(crate) struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
    log: PathBuf,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Whether chromium and chromedriver are installed.
pub(crate) fn available() -> bool {
    Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file()
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with a fresh profile,
    /// `width`×`height` CSS pixels.
    ///
    /// # Errors
    /// When chromedriver does not start or refuses the session.
    pub(crate) async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = log_dir().join(format!("chromedriver-{}-{port}.log", std::process::id()));
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile =
            std::env::temp_dir().join(format!("operon-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile)?;
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
            log,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match request(addr, "GET", "/status", None).await {
                Ok((200, v)) if v["value"]["ready"].as_bool() == Some(true) => {
                    break;
                }
                _ if tokio::time::Instant::now() > deadline => {
                    bail!(
                        "chromedriver did not become ready; its log:\n{}",
                        tail(&browser.log, 30)
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", browser.profile.display()),
                ],
            },
        }}});
        let value = browser
            .call("POST", "/session", Some(&capabilities))
            .await?;
        browser.session = value["sessionId"]
            .as_str()
            .with_context(|| format!("no session id in {value}"))?
            .to_owned();
        Ok(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, json) = request(self.addr, method, path, body).await?;
        if status != 200 {
            bail!("WebDriver {method} {path}: {status} {}", json["value"]);
        }
        Ok(json["value"].clone())
    }

    async fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    /// Opens `url` and waits for the page to load.
    pub(crate) async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session_call("POST", "/url", Some(&json!({ "url": url })))
            .await?;
        Ok(())
    }

    /// The current URL.
    pub(crate) async fn url(&self) -> anyhow::Result<String> {
        let value = self.session_call("GET", "/url", None).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub(crate) async fn eval(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The first element matching the CSS selector.
    pub(crate) async fn find(&self, css: &str) -> anyhow::Result<String> {
        let value = self
            .session_call(
                "POST",
                "/element",
                Some(&json!({"using": "css selector", "value": css})),
            )
            .await?;
        value[ELEMENT]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no element reference for {css}: {value}"))
    }

    /// Clicks the first element matching `css`.
    pub(crate) async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.session_call(
            "POST",
            &format!("/element/{element}/click"),
            Some(&json!({})),
        )
        .await?;
        Ok(())
    }

    /// Clears the input matching `css` and types `text` into it.
    pub(crate) async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.session_call(
            "POST",
            &format!("/element/{element}/clear"),
            Some(&json!({})),
        )
        .await?;
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({ "text": text })),
        )
        .await?;
        Ok(())
    }

    /// The visible text of the first element matching `css` (empty when there is none).
    pub(crate) async fn text(&self, css: &str) -> anyhow::Result<String> {
        let value = self
            .eval(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                json!([css]),
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Runs a Chrome DevTools Protocol command.
    pub(crate) async fn cdp(&self, command: &str, params: Value) -> anyhow::Result<Value> {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({"cmd": command, "params": params})),
        )
        .await
    }

    /// Saves a screenshot of the viewport as PNG at `path`.
    pub(crate) async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let value = self.session_call("GET", "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().context("no screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Waits until `script` returns a truthy value; returns it.
    ///
    /// # Errors
    /// After `timeout`, with what `describe` (a script) returns then.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        describe: &str,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.eval(script, json!([])).await?;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if tokio::time::Instant::now() > deadline {
                let seen = self.eval(describe, json!([])).await.unwrap_or_default();
                bail!("timed out after {timeout:?} waiting for {what}; the page shows: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; chromedriver goes with its process.
        if !self.session.is_empty() {
            let addr = self.addr;
            let path = format!("/session/{}", self.session);
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    let _ = runtime.block_on(request(addr, "DELETE", &path, None));
                }
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One WebDriver request: the status and the JSON body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let mut stream = BufReader::new(stream);
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.get_mut().write_all(head.as_bytes()).await?;
        stream.get_mut().write_all(body.as_bytes()).await?;
        let mut status_line = String::new();
        stream.read_line(&mut status_line).await?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut raw = vec![0; length];
        stream.read_exact(&mut raw).await?;
        let json = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw)
                .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&raw)))?
        };
        anyhow::Ok((status, json))
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .with_context(|| format!("WebDriver {method} {path} timed out"))?
}
