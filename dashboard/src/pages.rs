//! Server-rendered pages.

use axum::{Router, response::Html, routing::get};
use leptos::prelude::*;

/// The dashboard's routes, to be merged into the core's HTTP listener.
pub fn router() -> Router {
    Router::new().route("/", get(index))
}

async fn index() -> Html<String> {
    Html(render_index())
}

#[component]
fn Overview(version: &'static str) -> impl IntoView {
    view! {
        <main>
            <h1>"Operon"</h1>
            <p>"Operon " {version} ": no objects are served yet."</p>
        </main>
    }
}

fn render_index() -> String {
    let body = view! { <Overview version=env!("CARGO_PKG_VERSION")/> }.to_html();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Operon</title></head><body>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_the_product_and_version() {
        let html = render_index();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<h1>Operon</h1>"), "{html}");
        assert!(html.contains(env!("CARGO_PKG_VERSION")), "{html}");
    }
}
