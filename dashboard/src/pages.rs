//! Server-rendered pages.

use std::sync::Arc;

use axum::extract::State;
use axum::{Router, response::Html, routing::get};
use leptos::prelude::*;

use crate::model::{ObjectView, ReadModel};

/// The dashboard's routes, to be merged into the core's HTTP listener.
pub fn router(model: Arc<dyn ReadModel>) -> Router {
    Router::new().route("/", get(index)).with_state(model)
}

async fn index(State(model): State<Arc<dyn ReadModel>>) -> Html<String> {
    Html(render_index(&model.objects()))
}

#[component]
fn ObjectRow(object: ObjectView) -> impl IntoView {
    let handlers = object
        .handlers
        .iter()
        .map(|h| format!("{}: {}", h.id, h.state))
        .collect::<Vec<_>>()
        .join(", ");
    view! {
        <tr>
            <td>{object.resource}</td>
            <td>{object.namespace}</td>
            <td>{object.name}</td>
            <td>{object.phase}</td>
            <td>{handlers}</td>
        </tr>
    }
}

#[component]
fn Overview(version: &'static str, objects: Vec<ObjectView>) -> impl IntoView {
    let count = objects.len();
    view! {
        <main>
            <h1>"Operon"</h1>
            <p>"Operon " {version} ": " {count} " objects."</p>
            <table>
                <thead>
                    <tr>
                        <th scope="col">"Resource"</th>
                        <th scope="col">"Namespace"</th>
                        <th scope="col">"Name"</th>
                        <th scope="col">"Phase"</th>
                        <th scope="col">"Handlers"</th>
                    </tr>
                </thead>
                <tbody>
                    {objects.into_iter().map(|o| view! { <ObjectRow object=o/> }).collect_view()}
                </tbody>
            </table>
        </main>
    }
}

fn render_index(objects: &[ObjectView]) -> String {
    let body =
        view! { <Overview version=env!("CARGO_PKG_VERSION") objects=objects.to_vec()/> }.to_html();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Operon</title></head><body>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HandlerView;

    #[test]
    fn index_lists_objects_with_their_handlers() {
        let object = ObjectView {
            resource: "widgets.example.com/v1".into(),
            namespace: "ns".into(),
            name: "w1".into(),
            uid: "u".into(),
            phase: "retrying",
            cause: "create".into(),
            handlers: vec![HandlerView {
                id: "create_fn".into(),
                state: "retrying",
                retries: 1,
                started: None,
                delayed: None,
                message: Some("Not ready yet.".into()),
                trace_id: None,
            }],
            updated: String::new(),
        };
        let html = render_index(&[object]);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<h1>Operon</h1>"), "{html}");
        assert!(html.contains(env!("CARGO_PKG_VERSION")), "{html}");
        assert!(html.contains("create_fn: retrying"), "{html}");
        assert!(html.contains("<td>w1</td>"), "{html}");
    }
}
