//! Server-rendered pages (Leptos components rendered to HTML in axum handlers) and their routes:
//! `/` (overview), `/objects` (list), `/objects/<resource>/<namespace>/<name>` (one object), and
//! the script that keeps them live.

pub(crate) mod format;
pub(crate) mod layout;
pub(crate) mod list;
mod object;
mod overview;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::{Router, routing::get};

use crate::listing::ListQuery;
use crate::model::ReadModel;

/// The dashboard's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// When set, every route but the probes requires this token (see [`crate::protect`]).
    pub token: Option<String>,
    /// The Jaeger UI's base URL (`http://127.0.0.1:16686`): handlers' traces link there.
    /// Only `http` and `https` URLs are used.
    pub jaeger_ui: Option<String>,
}

impl Options {
    /// `OPERON_DASHBOARD_TOKEN` and `OPERON_JAEGER_UI`; empty values count as unset.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Options {
            token: var("OPERON_DASHBOARD_TOKEN"),
            jaeger_ui: var("OPERON_JAEGER_UI"),
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
    };
    Router::new()
        .route("/", get(overview_page))
        .route("/objects", get(list_page))
        .route("/objects/{*path}", get(object_page))
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
    match ctx.model.object(&key) {
        Some(object) => {
            let details = ctx.model.details(&key);
            Html(object::render(
                &object,
                &details,
                ctx.jaeger_ui.as_deref(),
                jiff::Timestamp::now(),
            ))
            .into_response()
        }
        None => (StatusCode::NOT_FOUND, Html(object::render_missing(&key))).into_response(),
    }
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
