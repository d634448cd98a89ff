//! The overview's live charts, drawn on the server as small SVG line charts from the core's own
//! counters ([`Charts`]): handled changes, errors and retries per second, the queue's depth, and
//! the wait from a watch event to its object's cycle (p50, p99) over the last 15 minutes. The
//! page re-reads them on every `tick` of the event stream.

use leptos::prelude::*;

use crate::model::{ChartPoint, Charts};

const W: f64 = 300.0;
const H: f64 = 70.0;

/// One line of a chart.
struct Line {
    class: &'static str,
    label: &'static str,
    values: Vec<Option<f64>>,
}

fn points(values: &[Option<f64>], max: f64) -> String {
    let n = values.len().max(2) - 1;
    let mut out = String::with_capacity(values.len() * 12);
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else { continue };
        let x = i as f64 / n as f64 * W;
        let y = H - (v / max).clamp(0.0, 1.0) * (H - 2.0) - 1.0;
        out.push_str(&format!("{x:.1},{y:.1} "));
    }
    out.trim_end().to_owned()
}

/// A figure as text: `0.25`, `12`, `1,250`.
fn figure(v: f64) -> String {
    if v.fract() == 0.0 && v < 10.0 {
        format!("{v:.0}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        crate::pages::format::thousands(v.round() as usize)
    }
}

fn chart(id: &'static str, title: &'static str, unit: &'static str, lines: Vec<Line>) -> AnyView {
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0_f64, |m, v| m.max(*v));
    let total: f64 = lines.iter().flat_map(|l| l.values.iter().flatten()).sum();
    let scale = if max > 0.0 { max * 1.1 } else { 1.0 };
    let now = lines
        .iter()
        .map(|l| {
            let last = l
                .values
                .iter()
                .rev()
                .flatten()
                .next()
                .copied()
                .unwrap_or(0.0);
            let label = if l.label.is_empty() {
                String::new()
            } else {
                format!("{} ", l.label)
            };
            format!("{label}{}{unit}", figure(last))
        })
        .collect::<Vec<_>>()
        .join(" · ");
    let polylines = lines
        .iter()
        .map(|l| view! { <polyline class=l.class points=points(&l.values, scale)></polyline> })
        .collect_view();
    let label = format!(
        "{title}, last 15 minutes; now: {now}; highest: {}{unit}",
        figure(max)
    );
    view! {
        <figure class="chart" id=format!("chart-{id}") data-total=format!("{total:.3}")>
            <figcaption><span>{title}</span><span class="now">{now}</span></figcaption>
            <svg viewBox=format!("0 0 {W} {H}") preserveAspectRatio="none" role="img" aria-label=label>
                <line x1="0" x2=W y1=H - 0.5 y2=H - 0.5 class="base"></line>
                {polylines}
            </svg>
            <div class="scale"><span>"−15 min"</span><span>{format!("max {}{unit}", figure(max))}</span></div>
        </figure>
    }
    .into_any()
}

fn series(points: &[ChartPoint], f: impl Fn(&ChartPoint) -> Option<f64>) -> Vec<Option<f64>> {
    points.iter().map(f).collect()
}

/// The charts section.
pub(crate) fn section(charts: &Charts) -> AnyView {
    let p = &charts.points;
    let handled = chart(
        "handled",
        "Handled changes",
        "/s",
        vec![Line {
            class: "l1",
            label: "",
            values: series(p, |x| Some(x.handled_per_s)),
        }],
    );
    let errors = chart(
        "errors",
        "Errors and retries",
        "/s",
        vec![
            Line {
                class: "l-bad",
                label: "errors",
                values: series(p, |x| Some(x.errors_per_s)),
            },
            Line {
                class: "l-warn",
                label: "retries",
                values: series(p, |x| Some(x.retries_per_s)),
            },
        ],
    );
    let queue = chart(
        "queue",
        "Queue depth",
        "",
        vec![Line {
            class: "l1",
            label: "",
            values: series(p, |x| Some(x.queue_depth as f64)),
        }],
    );
    let latency = chart(
        "latency",
        "Event → handling",
        " ms",
        vec![
            Line {
                class: "l1",
                label: "p50",
                values: series(p, |x| x.p50_ms),
            },
            Line {
                class: "l-warn",
                label: "p99",
                values: series(p, |x| x.p99_ms),
            },
        ],
    );
    view! {
        <h2 id="charts">"Last 15 minutes"</h2>
        <div class="charts" data-charts="">{handled}{errors}{queue}{latency}</div>
    }
    .into_any()
}
