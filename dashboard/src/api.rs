//! The JSON API over any [`ReadModel`]: `/api/v1/objects` and the server-sent events of
//! `/api/v1/events` that keep the pages live. The core's listener serves its own equivalents;
//! `operon dashboard` serves these.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json};
use axum::{Router, routing::get};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;

use crate::model::ReadModel;

/// `/api/v1/objects` (every object, with the overview's figures) and `/api/v1/events`
/// (changes as server-sent events named `object`, one JSON change per event).
pub fn api_router(model: Arc<dyn ReadModel>) -> Router {
    Router::new()
        .route("/api/v1/objects", get(objects))
        .route("/api/v1/events", get(events))
        .with_state(model)
}

async fn objects(State(model): State<Arc<dyn ReadModel>>) -> impl IntoResponse {
    let overview = model.overview();
    Json(serde_json::json!({
        "objects": model.objects(),
        "queue_depth": overview.queue_depth,
        "inflight_calls": overview.inflight_calls,
        "source": model.about().source,
    }))
}

async fn events(
    State(model): State<Arc<dyn ReadModel>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = changes(model.subscribe());
    Sse::new(changes.map(|json| Ok(Event::default().event("object").data(json))))
        .keep_alive(KeepAlive::default())
}

/// A broadcast receiver as a stream; a lagging subscriber skips what it missed (the pages
/// re-read the whole state on every change anyway).
pub(crate) fn changes(rx: broadcast::Receiver<String>) -> impl Stream<Item = String> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
