//! The frame of every page: the HTML document with the inline style sheet, the header with the
//! navigation and the live indicator, and the security headers of every response.

use axum::http::{HeaderMap, HeaderValue, header};
use leptos::prelude::*;

use crate::model::{HandlerStatus, ObjectPhase};

/// The one style sheet, inlined into every page (light and dark by `prefers-color-scheme`).
pub(crate) const STYLE: &str = include_str!("../assets/style.css");
/// The script that keeps pages live (served at [`SCRIPT_PATH`]).
pub(crate) const SCRIPT: &str = include_str!("../assets/live.js");
/// Where the script is served.
pub(crate) const SCRIPT_PATH: &str = "/assets/live.js";

/// Which page is shown, for the navigation's `aria-current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// The overview.
    Overview,
    /// The object list and the object pages.
    Objects,
}

/// A whole HTML document around `body` (already rendered HTML).
pub(crate) fn document(title: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{title} · Operon</title><link rel=\"icon\" href=\"data:,\">\
         <style>{STYLE}</style><script src=\"{SCRIPT_PATH}\" defer></script></head>\
         <body>{body}</body></html>"
    )
}

/// Headers every page carries: no framing, no sniffing, no referrer (tokens and object names
/// stay here), scripts only from this origin, no caching of live data.
pub(crate) fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; \
             connect-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// Escapes text for HTML (element content and quoted attributes).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The header bar: the product, the navigation, the live indicator (filled by the script).
pub(crate) fn top_bar(section: Section) -> impl IntoView {
    let current = move |s: Section| (section == s).then_some("page");
    view! {
        <a class="skip" href="#main">"Skip to content"</a>
        <header class="top">
            <a class="brand" href="/">"Operon"</a>
            <nav aria-label="Main">
                <a href="/" aria-current=current(Section::Overview)>"Overview"</a>
                <a href="/objects" aria-current=current(Section::Objects)>"Objects"</a>
            </nav>
            <span id="live-status" class="live" role="status">"Static · reload to update"</span>
        </header>
    }
}

/// A phase as a badge (color and text, never color alone).
pub(crate) fn phase_badge(phase: ObjectPhase) -> impl IntoView {
    let phase = phase.as_str();
    view! { <span class=format!("badge p-{phase}")>{phase}</span> }
}

/// A handler state as a badge.
pub(crate) fn state_badge(state: HandlerStatus) -> impl IntoView {
    let state = state.as_str();
    view! { <span class=format!("badge s-{state}")>{state}</span> }
}

/// A column of a [`section_table`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col {
    label: &'static str,
    numeric: bool,
}

impl Col {
    /// A text column.
    pub(crate) const fn text(label: &'static str) -> Self {
        Col {
            label,
            numeric: false,
        }
    }

    /// A right-aligned numeric column.
    pub(crate) const fn num(label: &'static str) -> Self {
        Col {
            label,
            numeric: true,
        }
    }
}

/// The header cells of `columns`.
pub(crate) fn header_cells(columns: &[Col]) -> impl IntoView + use<> {
    columns
        .iter()
        .map(|c| {
            let class = c.numeric.then_some("num");
            view! { <th scope="col" class=class>{c.label}</th> }
        })
        .collect_view()
}

/// One section of a page: a heading (`id` is the table's accessible name) and a panel with a
/// table of `rows` under the `head` cells, then `after` (inside the panel).
pub(crate) fn section_table(
    id: &'static str,
    heading: &'static str,
    head: impl IntoView + 'static,
    rows: impl IntoView + 'static,
    after: impl IntoView + 'static,
) -> AnyView {
    view! {
        <h2 id=id>{heading}</h2>
        <div class="panel">
            <table aria-labelledby=id>
                <thead>
                    <tr>{head}</tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
            {after}
        </div>
    }
    .into_any()
}

/// A section without a table: its heading and a notice saying why.
pub(crate) fn section_notice(
    id: &'static str,
    heading: &'static str,
    notice: &'static str,
) -> AnyView {
    view! {
        <h2 id=id>{heading}</h2>
        <p class="notice">{notice}</p>
    }
    .into_any()
}
