//! Traces drawn on the server: a waterfall of one trace's spans (the core's cycle, its handler
//! call, the handler process's own spans in any language, the API writes) to scale, with each
//! span's duration, status, recorded exceptions and the link to the previous attempt's trace;
//! and the page of one trace, `/traces/{id}`.

use leptos::prelude::*;

use crate::pages::format::object_path;
use crate::pages::layout::{Section, document, top_bar};
use crate::traces::{Span, Trace};

/// A duration in microseconds, short: `850 µs`, `12.3 ms`, `1.25 s`.
pub(crate) fn micros(us: i64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

/// The waterfall of `trace`: one row per span, its bar placed and sized to scale.
pub(crate) fn waterfall(trace: &Trace) -> AnyView {
    let total = trace.duration_us.max(1) as f64;
    let rows = trace.spans.iter().map(|s| row(s, total)).collect_view();
    let label = format!("Spans of trace {}", trace.id);
    view! {
        <table class="wf" aria-label=label data-trace=trace.id.clone()>
            <thead>
                <tr>
                    <th scope="col">"Span"</th>
                    <th scope="col">"Service"</th>
                    <th scope="col" class="wf-axis">{format!("0 – {}", micros(trace.duration_us))}</th>
                    <th scope="col" class="num">"Duration"</th>
                    <th scope="col">"Status"</th>
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

fn row(s: &Span, total: f64) -> impl IntoView + use<> {
    let left = (s.offset_us as f64 / total * 100.0).clamp(0.0, 100.0);
    let width = (s.duration_us as f64 / total * 100.0).clamp(0.3, 100.0 - left.min(99.7));
    let style = format!("left:{left:.2}%;width:{width:.2}%");
    let bar = if s.error { "wf-bar err" } else { "wf-bar" };
    let tags = s
        .tags
        .iter()
        .map(|(k, v)| view! { <span class="chip">{format!("{k}={v}")}</span> })
        .collect_view();
    let links = s
        .links
        .iter()
        .map(|id| {
            view! { <a class="wf-link" href=format!("/traces/{id}")>"← previous attempt"</a> }
        })
        .collect_view();
    let status = if s.error {
        view! { <span class="badge s-failed">"error"</span> }.into_any()
    } else {
        view! { <span class="badge s-succeeded">"ok"</span> }.into_any()
    };
    let exceptions = s
        .exceptions
        .iter()
        .map(|e| view! { <div class="wf-ex wrap">{e.clone()}</div> })
        .collect_view();
    let indent = format!("padding-left:{:.1}rem", 0.7 + 1.1 * s.depth.min(8) as f64);
    view! {
        <tr data-span=s.id.clone() data-service=s.service.clone()>
            <th scope="row" class="mono wf-name" style=indent>
                {s.name.clone()}
                <div class="wf-tags">{tags}{links}</div>
            </th>
            <td class="mono">{s.service.clone()}</td>
            <td class="wf-track"><span class=bar style=style></span></td>
            <td class="num">{micros(s.duration_us)}</td>
            <td>{status}{exceptions}</td>
        </tr>
    }
}

/// The page of one trace: its waterfall, or why it cannot be shown.
pub(crate) fn render_page(
    id: &str,
    object_key: Option<&str>,
    trace: Result<&Trace, String>,
) -> String {
    let back = object_key.and_then(object_path).map(|href| {
        view! { <p><a href=href>"The object of this trace"</a></p> }
    });
    let content = match trace {
        Ok(trace) => view! {
            <p class="sub">{format!("{} spans over {}", trace.spans.len(), micros(trace.duration_us))}</p>
            <div class="panel">{waterfall(trace)}</div>
        }
        .into_any(),
        Err(problem) => view! { <p class="notice bad">{problem}</p> }.into_any(),
    };
    let body = view! {
        {top_bar(Section::Objects)}
        <main id="main">
            <h1>"Trace " <span class="mono">{id.to_owned()}</span></h1>
            {back}
            {content}
        </main>
    }
    .to_html();
    document(&format!("Trace {id}"), &body)
}
