//! Server-rendered pages (Leptos components rendered to HTML in axum handlers) and their routes:
//! `/` (overview), `/objects` (list), `/objects/<resource>/<namespace>/<name>` (one object),
//! `/traces/<id>` (one trace, from Jaeger's query API), and the script that keeps them live.

pub(crate) mod charts;
pub(crate) mod format;
pub(crate) mod layout;
pub(crate) mod list;
pub(crate) mod object;
pub(crate) mod overview;
pub(crate) mod parent_tasks;
pub(crate) mod runs;
pub(crate) mod timeline;
pub(crate) mod trace;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::{Router, routing::get};

use crate::listing::ListQuery;
use crate::model::ReadModel;
use crate::traces::{self, Jaeger};

/// The dashboard's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// When set, every route but the probes requires this token (see [`crate::protect`]).
    pub token: Option<String>,
    /// The Jaeger UI's base URL (`http://127.0.0.1:16686`): handlers' traces link there.
    /// Only `http` and `https` URLs are used.
    pub jaeger_ui: Option<String>,
    /// Jaeger's query API (`http://127.0.0.1:16686`): the object page shows each attempt's
    /// trace inline, and `/traces/<id>` one trace. Only `http` URLs are used; only traces the
    /// read model knows are fetched, and only with `GET /api/traces/<id>`.
    pub jaeger_query: Option<String>,
}

impl Options {
    /// `OPERON_DASHBOARD_TOKEN`, `OPERON_JAEGER_UI` and `OPERON_JAEGER_QUERY`; empty values
    /// count as unset.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Options {
            token: var("OPERON_DASHBOARD_TOKEN"),
            jaeger_ui: var("OPERON_JAEGER_UI"),
            jaeger_query: var("OPERON_JAEGER_QUERY"),
        }
    }

    fn jaeger_base(&self) -> Option<Arc<str>> {
        self.jaeger_ui
            .as_deref()
            .map(str::trim)
            .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
            .map(Arc::from)
    }
}

#[derive(Clone)]
struct Ctx {
    model: Arc<dyn ReadModel>,
    jaeger_ui: Option<Arc<str>>,
    jaeger: Option<Arc<Jaeger>>,
}

/// The dashboard's pages with default [`Options`], to be merged into an HTTP listener's router.
pub fn router(model: Arc<dyn ReadModel>) -> Router {
    router_with(model, &Options::default())
}

/// The dashboard's pages. The token of `options` is not applied here: wrap the whole listener's
/// router (API included) with [`crate::protect`].
pub fn router_with(model: Arc<dyn ReadModel>, options: &Options) -> Router {
    let ctx = Ctx {
        model,
        jaeger_ui: options.jaeger_base(),
        jaeger: options
            .jaeger_query
            .as_deref()
            .and_then(Jaeger::new)
            .map(Arc::new),
    };
    Router::new()
        .route("/", get(overview_page))
        .route("/objects", get(list_page))
        .route("/objects/{*path}", get(object_page))
        .route("/traces/{id}", get(trace_page))
        .route(layout::SCRIPT_PATH, get(script))
        .with_state(ctx)
        .layer(middleware::from_fn(page_headers))
}

async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    layout::secure_headers(response.headers_mut());
    response
}

async fn overview_page(State(ctx): State<Ctx>) -> Html<String> {
    let objects = ctx.model.objects();
    Html(overview::render(
        &objects,
        &ctx.model.overview(),
        &ctx.model.about(),
        ctx.model.charts().as_ref(),
        jiff::Timestamp::now(),
    ))
}

async fn list_page(
    State(ctx): State<Ctx>,
    Query(params): Query<HashMap<String, String>>,
) -> Html<String> {
    let query = ListQuery::from_params(&params);
    let objects = ctx.model.objects();
    Html(list::render(
        &objects,
        &ctx.model.about().resources,
        &query,
        jiff::Timestamp::now(),
    ))
}

async fn object_page(State(ctx): State<Ctx>, Path(path): Path<String>) -> Response {
    let Some(key) = format::key_of_path(&path) else {
        return (StatusCode::NOT_FOUND, Html(object::render_missing(&path))).into_response();
    };
    let Some(object) = ctx.model.object(&key) else {
        return (StatusCode::NOT_FOUND, Html(object::render_missing(&key))).into_response();
    };
    let details = ctx.model.details(&key);
    let fetched = match &ctx.jaeger {
        Some(jaeger) => Some(fetch_all(jaeger, object::wanted_traces(&details)).await),
        None => None,
    };
    let traces = object::Sources {
        jaeger_ui: ctx.jaeger_ui.as_deref(),
        fetched: fetched.as_ref(),
        model: ctx.model.about().source,
    };
    Html(object::render(
        &object,
        &details,
        &traces,
        jiff::Timestamp::now(),
    ))
    .into_response()
}

/// How long an object page's render waits for its traces. A slow Jaeger must not hold up the
/// page (a live refresh shows a new attempt at once): what is not here by then is fetched on
/// into the cache, and the page says so; its live script reads it again shortly.
const TRACES_BUDGET: Duration = Duration::from_millis(500);

/// The traces of `ids`, fetched at once; those not fetched within [`TRACES_BUDGET`] are left
/// out (still fetching).
async fn fetch_all(jaeger: &Arc<Jaeger>, ids: Vec<String>) -> object::Fetched {
    let deadline = tokio::time::Instant::now() + TRACES_BUDGET;
    let fetches: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let jaeger = Arc::clone(jaeger);
            let fetch = tokio::spawn({
                let id = id.clone();
                async move { jaeger.trace(&id).await.map_err(|e| e.to_string()) }
            });
            (id, fetch)
        })
        .collect();
    let mut fetched = object::Fetched::new();
    for (id, fetch) in fetches {
        match tokio::time::timeout_at(deadline, fetch).await {
            Ok(Ok(trace)) => {
                fetched.insert(id, trace);
            }
            Ok(Err(failed)) => {
                fetched.insert(id, Err(format!("fetching the trace failed: {failed}")));
            }
            // Still fetching: it lands in the cache for the page's next read — unless the last
            // fetch failed lately (a Jaeger that hangs): then that is said, not "coming".
            Err(_) => {
                if let Some(why) = jaeger.failed_lately(&id) {
                    fetched.insert(id, Err(why));
                }
            }
        }
    }
    fetched
}

/// `/traces/<id>`: one trace the read model knows, from Jaeger's query API. An unknown id is
/// a 404 and never reaches Jaeger.
async fn trace_page(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    let key = traces::is_trace_id(&id)
        .then(|| ctx.model.trace_object(&id))
        .flatten();
    let Some(key) = key else {
        let page = trace::render_page(
            &id,
            None,
            Err(
                "No attempt the dashboard knows has this trace (it keeps the last attempts of \
                 recently active objects)."
                    .to_owned(),
            ),
        );
        return (StatusCode::NOT_FOUND, Html(page)).into_response();
    };
    let Some(jaeger) = &ctx.jaeger else {
        let page = trace::render_page(
            &id,
            Some(&key),
            Err(
                "Traces show here when the core runs with --jaeger-query URL (env \
                 OPERON_JAEGER_QUERY): Jaeger's query API, e.g. http://127.0.0.1:16686."
                    .to_owned(),
            ),
        );
        return Html(page).into_response();
    };
    let trace = jaeger.trace(&id).await;
    let shown = trace
        .as_deref()
        .map_err(|e| format!("{e} ({})", jaeger.base()));
    Html(trace::render_page(&id, Some(&key), shown)).into_response()
}

async fn script() -> Response {
    let mut response = layout::SCRIPT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests;
