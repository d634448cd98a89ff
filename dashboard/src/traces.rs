//! Traces from Jaeger's query API (`--jaeger-query`), for the inline waterfalls of the object
//! page and the trace page: `GET <query>/api/traces/<id>` (Jaeger's v1 JSON), read into a
//! [`Trace`] whose spans are in tree order.
//!
//! # Guarantees
//! Read-only and narrow: the only request ever made is that `GET`, for a trace id of 32 hex
//! digits that the read model knows ([`crate::ReadModel::trace_object`]) — never a path or a
//! query from the browser. Answers are capped in time ([`TIMEOUT`]) and size ([`MAX_BYTES`]).
//! Only the tags named in [`SHOWN_TAGS`] are kept, so attributes a handler adds (which may hold
//! anything) are not shown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use serde_json::Value;

/// How long a trace is fetched for at most.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read.
pub(crate) const MAX_BYTES: usize = 8 << 20;
/// Traces kept, at most (the page refreshes live: each change would fetch again).
const CACHED: usize = 128;
/// How long a fetched trace is reused; late spans (a handler's exporter batches) show after it.
const FRESH: Duration = Duration::from_secs(5);
/// The span tags shown (everything else is dropped).
pub(crate) const SHOWN_TAGS: [&str; 12] = [
    "handler.id",
    "attempt",
    "outcome",
    "delay",
    "cause",
    "resource",
    "verb",
    "status_code",
    "http.status_code",
    "rpc.grpc.status_code",
    "otel.status_description",
    "error.type",
];

/// Fetching a trace failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The id is not a trace id.
    #[error("not a trace id")]
    InvalidId,
    /// The request could not be built from the configured URL.
    #[error("the Jaeger query URL is not usable: {0}")]
    Url(String),
    /// No answer in time.
    #[error("Jaeger did not answer within {}s", TIMEOUT.as_secs())]
    Timeout,
    /// The request failed.
    #[error("Jaeger cannot be reached: {0}")]
    Request(String),
    /// Jaeger answered with an error status.
    #[error("Jaeger answered HTTP {0}")]
    Status(u16),
    /// The answer was too large or cut.
    #[error("the answer could not be read: {0}")]
    Body(String),
    /// The answer is not Jaeger's JSON.
    #[error("the answer is not a Jaeger trace: {0}")]
    Json(String),
    /// Jaeger has no such trace (yet: spans arrive in batches).
    #[error("Jaeger has no spans of this trace yet")]
    NotFound,
}

/// One span of a trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    /// Its id (hex).
    pub id: String,
    /// Its parent's id, when the parent is in this trace.
    pub parent: Option<String>,
    /// Its depth in the tree (0: a root).
    pub depth: usize,
    /// The operation (`cycle widgets…`, `handler create_fn`, `api patch`).
    pub name: String,
    /// The service of the process that reported it.
    pub service: String,
    /// Its start, in microseconds since the trace's start.
    pub offset_us: i64,
    /// Its duration in microseconds.
    pub duration_us: i64,
    /// Whether its status is an error.
    pub error: bool,
    /// The exceptions it recorded (`Type: message`).
    pub exceptions: Vec<String>,
    /// The trace ids it links to in other traces (the previous attempt's).
    pub links: Vec<String>,
    /// The tags of [`SHOWN_TAGS`] it has, as text.
    pub tags: Vec<(String, String)>,
}

/// One trace: its spans in tree order (each parent before its children, siblings by start).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trace {
    /// Its id (32 hex digits).
    pub id: String,
    /// When it started (unix microseconds).
    pub start_us: i64,
    /// From its first start to its last end, in microseconds.
    pub duration_us: i64,
    /// The spans.
    pub spans: Vec<Span>,
}

/// Whether `id` is a trace id as the core writes them: 32 lowercase hex digits, not all zero.
pub(crate) fn is_trace_id(id: &str) -> bool {
    id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.bytes().any(|b| b != b'0')
}

/// Reads Jaeger's v1 JSON answer (`{"data": [trace]}`).
///
/// # Errors
/// [`Error::Json`] when it is not one, [`Error::NotFound`] when it holds no span.
pub(crate) fn parse(body: &[u8]) -> Result<Trace, Error> {
    let json: Value = serde_json::from_slice(body).map_err(|e| Error::Json(e.to_string()))?;
    let trace = json
        .get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .ok_or(Error::NotFound)?;
    let id = text(&trace["traceID"]);
    let processes = &trace["processes"];
    let raw = trace["spans"].as_array().ok_or(Error::NotFound)?;
    if raw.is_empty() {
        return Err(Error::NotFound);
    }
    let start_us = raw
        .iter()
        .filter_map(|s| s["startTime"].as_i64())
        .min()
        .unwrap_or(0);
    let end_us = raw
        .iter()
        .filter_map(|s| Some(s["startTime"].as_i64()? + s["duration"].as_i64()?))
        .max()
        .unwrap_or(start_us);
    let mut spans: Vec<Span> = raw
        .iter()
        .map(|s| span(s, &id, processes, start_us))
        .collect();
    let known: std::collections::HashSet<String> = spans.iter().map(|s| s.id.clone()).collect();
    for s in &mut spans {
        if s.parent.as_ref().is_some_and(|p| !known.contains(p)) {
            s.parent = None; // its parent never arrived: show it as a root
        }
    }
    Ok(Trace {
        id,
        start_us,
        duration_us: (end_us - start_us).max(1),
        spans: tree_order(spans),
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn span(s: &Value, trace_id: &str, processes: &Value, start_us: i64) -> Span {
    let references = s["references"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let parent = references
        .iter()
        .find(|r| r["refType"] == "CHILD_OF" && r["traceID"] == trace_id)
        .map(|r| text(&r["spanID"]));
    let links = references
        .iter()
        .filter(|r| r["traceID"] != trace_id)
        .map(|r| text(&r["traceID"]))
        .filter(|t| is_trace_id(t))
        .collect();
    let tags = s["tags"].as_array().map(Vec::as_slice).unwrap_or_default();
    let tag = |key: &str| tags.iter().find(|t| t["key"] == key).map(|t| &t["value"]);
    let error = tag("error") == Some(&Value::Bool(true))
        || tag("otel.status_code")
            .and_then(Value::as_str)
            .is_some_and(|c| c.eq_ignore_ascii_case("error"));
    let exceptions = s["logs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|log| {
            let fields = log["fields"].as_array()?;
            let field = |key: &str| {
                fields
                    .iter()
                    .find(|f| f["key"] == key)
                    .map(|f| text(&f["value"]))
            };
            let is_exception =
                field("event").as_deref() == Some("exception") || field("exception.type").is_some();
            is_exception.then(
                || match (field("exception.type"), field("exception.message")) {
                    (Some(t), Some(m)) => format!("{t}: {m}"),
                    (Some(t), None) => t,
                    (None, Some(m)) => m,
                    (None, None) => "an exception".to_owned(),
                },
            )
        })
        .collect();
    let process = s["processID"].as_str().unwrap_or_default();
    Span {
        id: text(&s["spanID"]),
        parent,
        depth: 0,
        name: text(&s["operationName"]),
        service: text(&processes[process]["serviceName"]),
        offset_us: s["startTime"].as_i64().unwrap_or(start_us) - start_us,
        duration_us: s["duration"].as_i64().unwrap_or(0).max(0),
        error,
        exceptions,
        links,
        tags: SHOWN_TAGS
            .iter()
            .filter_map(|k| tag(k).map(|v| ((*k).to_owned(), text(v))))
            .collect(),
    }
}

/// Each parent before its children, siblings by their start; depths filled in.
fn tree_order(spans: Vec<Span>) -> Vec<Span> {
    let mut children: HashMap<Option<String>, Vec<Span>> = HashMap::new();
    for s in spans {
        children.entry(s.parent.clone()).or_default().push(s);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| {
            a.offset_us
                .cmp(&b.offset_us)
                .then_with(|| a.name.cmp(&b.name))
        });
    }
    let mut out = Vec::new();
    let mut stack: Vec<(Span, usize)> = children
        .remove(&None)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .map(|s| (s, 0))
        .collect();
    while let Some((mut s, depth)) = stack.pop() {
        s.depth = depth;
        if let Some(kids) = children.remove(&Some(s.id.clone())) {
            stack.extend(kids.into_iter().rev().map(|k| (k, depth + 1)));
        }
        out.push(s);
    }
    out
}

/// Jaeger's query API at one base URL, with a small cache.
#[derive(Debug)]
pub(crate) struct Jaeger {
    base: String,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    /// Each trace's last fetch: the trace, or why it failed ([`Jaeger::failed_lately`]).
    cache: Mutex<HashMap<String, (Instant, Fetch)>>,
}

/// How one fetch of a trace ended.
type Fetch = Result<Arc<Trace>, String>;

impl Jaeger {
    /// The query API at `base` (`http://127.0.0.1:16686`); `None` unless it is an `http://` URL.
    pub(crate) fn new(base: &str) -> Option<Self> {
        let base = base.trim().trim_end_matches('/');
        base.starts_with("http://").then(|| Jaeger {
            base: base.to_owned(),
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
            cache: Mutex::default(),
        })
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// One trace (from the cache when fetched lately).
    ///
    /// # Errors
    /// See [`Error`]; the id is checked before anything is sent.
    pub(crate) async fn trace(&self, id: &str) -> Result<Arc<Trace>, Error> {
        if !is_trace_id(id) {
            return Err(Error::InvalidId);
        }
        if let Some(trace) = self.cached(id) {
            return Ok(trace);
        }
        let fetched = self.fetch(id).await.map(Arc::new);
        let kept = fetched
            .as_ref()
            .map(Arc::clone)
            .map_err(ToString::to_string);
        let mut cache = self.lock();
        if cache.len() >= CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < FRESH);
            if cache.len() >= CACHED {
                cache.clear();
            }
        }
        cache.insert(id.to_owned(), (Instant::now(), kept));
        fetched
    }

    /// Why the last fetch of `id` failed, if it did lately: an object page that cannot wait
    /// for a fetch says that instead of "coming" (a Jaeger that hangs is not awaited forever).
    pub(crate) fn failed_lately(&self, id: &str) -> Option<String> {
        self.recent(id)?.err()
    }

    /// The cache, also after a panic elsewhere (it only holds finished fetches).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Fetch)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A trace fetched lately.
    fn cached(&self, id: &str) -> Option<Arc<Trace>> {
        self.recent(id)?.ok()
    }

    /// How the last fetch of `id` ended, if it was lately.
    fn recent(&self, id: &str) -> Option<Fetch> {
        self.lock()
            .get(id)
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, fetch)| fetch.clone())
    }

    async fn fetch(&self, id: &str) -> Result<Trace, Error> {
        let url = format!("{}/api/traces/{id}", self.base);
        let request = hyper::Request::get(&url)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| Error::Url(e.to_string()))?;
        let read = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Error::Request(e.to_string()))?;
            let status = response.status().as_u16();
            if status == 404 {
                return Err(Error::NotFound);
            }
            if status != 200 {
                return Err(Error::Status(status));
            }
            let body = Limited::new(response.into_body(), MAX_BYTES)
                .collect()
                .await
                .map_err(|e| Error::Body(e.to_string()))?
                .to_bytes();
            parse(&body)
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .map_err(|_| Error::Timeout)?
    }
}

#[cfg(test)]
pub(crate) mod tests;
