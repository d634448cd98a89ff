//! The JSON API over any [`ReadModel`]: `/api/v1/objects` and the server-sent events of
//! `/api/v1/events` that keep the pages live ([`event_stream`]: object changes, and a `tick`
//! every few seconds for the overview's charts when the model has them). The core's listener
//! serves its own `/api/v1/objects` and the same events; `operon dashboard` serves these.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

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
    Sse::new(event_stream(model.as_ref())).keep_alive(KeepAlive::default())
}

/// How often the charts' `tick` event is sent (a chart's point is 5 seconds long).
const TICK: Duration = Duration::from_secs(5);

/// The server-sent events of `/api/v1/events`: each change of the model as an event named
/// `object` (one JSON change), and, when the model has charts, an event named `tick` every
/// five seconds (the overview re-reads its charts then).
pub fn event_stream(
    model: &dyn ReadModel,
) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let objects =
        changes(model.subscribe()).map(|json| Ok(Event::default().event("object").data(json)));
    let ticking = model.charts().is_some();
    let ticks = futures_util::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK),
        move |mut interval| async move {
            if !ticking {
                return None;
            }
            interval.tick().await;
            Some((Ok(Event::default().event("tick").data("{}")), interval))
        },
    );
    futures_util::stream::select(objects, ticks)
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
