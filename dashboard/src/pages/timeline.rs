//! An object's handler timeline: every kept attempt of every handler drawn to scale (an SVG
//! rendered on the server), with the wait before each retry and why, and the same as a table —
//! start, end, duration, outcome, the delay before the next attempt, the message and the trace.

use jiff::{SignedDuration, Timestamp};
use leptos::prelude::*;

use crate::model::{AttemptOutcome, AttemptView, ObjectDetails};
use crate::pages::format::{duration_between, full_time, time, trace_href};
use crate::pages::layout::{Col, header_cells};
use crate::traces::is_trace_id;

/// The SVG's width in user units; the label column's width.
const WIDTH: f64 = 1000.0;
const LABEL: f64 = 190.0;
const ROW: f64 = 26.0;

/// One attempt with its times parsed.
#[derive(Debug, Clone)]
pub(crate) struct Bar<'a> {
    /// Its handler's id.
    pub handler: &'a str,
    /// The attempt.
    pub attempt: &'a AttemptView,
    started: Timestamp,
    stopped: Option<Timestamp>,
}

impl Bar<'_> {
    /// When the next attempt is due, when this one asked to be retried.
    fn next_due(&self) -> Option<Timestamp> {
        let delay = SignedDuration::try_from_secs_f64(self.attempt.delay?).ok()?;
        self.stopped?.checked_add(delay).ok()
    }
}

/// The attempts of the handlers `ids` (in display order) that have a start time.
pub(crate) fn bars<'a>(ids: &[&'a str], details: &'a ObjectDetails) -> Vec<Bar<'a>> {
    ids.iter()
        .filter_map(|id| Some((*id, details.handlers.get(*id)?)))
        .flat_map(|(id, d)| {
            d.attempts.iter().filter_map(move |a| {
                Some(Bar {
                    handler: id,
                    attempt: a,
                    started: a.started.as_deref()?.parse().ok()?,
                    stopped: a.stopped.as_deref().and_then(|t| t.parse().ok()),
                })
            })
        })
        .collect()
}

fn outcome_class(outcome: Option<AttemptOutcome>) -> &'static str {
    match outcome {
        None => "o-running",
        Some(AttemptOutcome::Succeeded) => "o-succeeded",
        Some(AttemptOutcome::Retrying | AttemptOutcome::Waiting) => "o-retrying",
        Some(AttemptOutcome::Failed) => "o-failed",
        Some(AttemptOutcome::NotMatched | AttemptOutcome::Stopped) => "o-skipped",
    }
}

fn seconds(d: SignedDuration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{} ms", d.as_millis())
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

/// The timeline section, or nothing when no attempt is known.
pub(crate) fn section(
    handlers: &[&str],
    details: &ObjectDetails,
    jaeger_ui: Option<&str>,
    inline_traces: bool,
    now: Timestamp,
) -> AnyView {
    let bars = bars(handlers, details);
    if bars.is_empty() {
        return ().into_any();
    }
    let svg = chart(handlers, &bars, now);
    let rows = bars
        .iter()
        .map(|b| row(b, jaeger_ui, inline_traces, now))
        .collect_view();
    let columns = [
        Col::text("Handler"),
        Col::num("Attempt"),
        Col::text("Started"),
        Col::text("Ended"),
        Col::text("Duration"),
        Col::text("Outcome"),
        Col::text("Next attempt after"),
        Col::text("Why"),
        Col::text("Trace"),
    ];
    view! {
        <h2 id="timeline">"Timeline of attempts"</h2>
        {svg}
        <div class="panel">
            <table aria-labelledby="timeline">
                <thead><tr>{header_cells(&columns)}</tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
    .into_any()
}

fn chart(handlers: &[&str], bars: &[Bar<'_>], now: Timestamp) -> AnyView {
    let start = bars.iter().map(|b| b.started).min().unwrap_or(now);
    let end = bars
        .iter()
        .flat_map(|b| [Some(b.stopped.unwrap_or(now)), b.next_due()])
        .flatten()
        .max()
        .unwrap_or(now);
    let span = end.duration_since(start).as_secs_f64().max(0.001);
    let x = |t: Timestamp| LABEL + (t.duration_since(start).as_secs_f64() / span) * (WIDTH - LABEL);
    let shown: Vec<&str> = (handlers.iter().copied())
        .filter(|id| bars.iter().any(|b| b.handler == *id))
        .collect();
    let height = ROW * shown.len() as f64 + 22.0;
    let lanes = shown
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let y = ROW * i as f64;
            let chars = id.chars().count();
            let label = if chars > 26 {
                format!("…{}", id.chars().skip(chars - 25).collect::<String>())
            } else {
                (*id).to_owned()
            };
            view! {
                <text x="0" y=format!("{:.1}", y + 17.0) class="tl-label">{label}</text>
                <line x1=LABEL x2=WIDTH y1=y + 13.0 y2=y + 13.0 class="tl-lane"></line>
            }
        })
        .collect_view();
    let marks = bars
        .iter()
        .map(|b| {
            let lane = shown.iter().position(|id| *id == b.handler).unwrap_or(0);
            let y = ROW * lane as f64 + 4.0;
            let x0 = x(b.started);
            let x1 = x(b.stopped.unwrap_or(now)).max(x0 + 2.0);
            let a = b.attempt;
            let took = b
                .stopped
                .map(|s| seconds(s.duration_since(b.started)))
                .unwrap_or_else(|| "running".to_owned());
            let outcome = a.outcome.map_or("running", AttemptOutcome::as_str);
            let title = format!(
                "{} attempt {}: {outcome}, {took}{}",
                b.handler,
                a.attempt,
                a.message.as_deref().map(|m| format!(" — {m}")).unwrap_or_default()
            );
            let wait = b.next_due().map(|due| {
                let title = format!(
                    "{} waits {} before attempt {}",
                    b.handler,
                    seconds(due.duration_since(b.stopped.unwrap_or(due))),
                    a.attempt + 1
                );
                view! {
                    <line x1=format!("{x1:.1}") x2=format!("{:.1}", x(due)) y1=y + 9.0 y2=y + 9.0 class="tl-wait">
                        <title>{title}</title>
                    </line>
                }
            });
            view! {
                <rect x=format!("{x0:.1}") y=y width=format!("{:.1}", x1 - x0) height="18" rx="3"
                    class=format!("tl-bar {}", outcome_class(a.outcome))>
                    <title>{title}</title>
                </rect>
                {wait}
            }
        })
        .collect_view();
    let axis_y = height - 4.0;
    let label = format!(
        "Attempts of {} handler(s) from {} to {} ({})",
        shown.len(),
        full_time(&start.to_string()),
        full_time(&end.to_string()),
        seconds(end.duration_since(start))
    );
    view! {
        <figure class="tl panel">
            <svg viewBox=format!("0 0 {WIDTH} {height}") role="img" aria-label=label.clone() preserveAspectRatio="none">
                {lanes}
                {marks}
                <text x=LABEL y=axis_y class="tl-axis">{time(&start.to_string(), now)}</text>
                <text x=WIDTH y=axis_y class="tl-axis end">{format!("+{}", seconds(end.duration_since(start)))}</text>
            </svg>
            <figcaption class="sr">{label}</figcaption>
        </figure>
    }
    .into_any()
}

fn row(
    b: &Bar<'_>,
    jaeger_ui: Option<&str>,
    inline: bool,
    now: Timestamp,
) -> impl IntoView + use<> {
    let a = b.attempt.clone();
    let started = a.started.clone().unwrap_or_default();
    let stopped = a.stopped.clone().unwrap_or_default();
    let duration = match (&a.started, &a.stopped) {
        (Some(s), Some(e)) => duration_between(s, e).unwrap_or_else(|| "—".into()),
        _ => "running".into(),
    };
    let outcome = a.outcome.map_or("running", AttemptOutcome::as_str);
    let badge = format!("badge {}", outcome_class(a.outcome));
    let next = a
        .delay
        .and_then(|d| SignedDuration::try_from_secs_f64(d).ok())
        .map(seconds)
        .unwrap_or_else(|| "—".into());
    let trace = a.trace_id.clone().filter(|t| is_trace_id(t));
    let trace = match trace {
        Some(id) => {
            let inline_link = inline.then(|| {
                view! { <a href=format!("#trace-{id}")>"waterfall"</a>" " }
            });
            let short = id[..8].to_owned();
            let page = if inline {
                view! { <a href=format!("/traces/{id}") class="mono">{short}</a> }.into_any()
            } else {
                view! { <span class="mono" title=id.clone()>{short}</span> }.into_any()
            };
            let out = trace_href(jaeger_ui, &id).map(|href| {
                view! { " " <a href=href rel="noreferrer" target="_blank">"Jaeger"</a> }
            });
            view! { {inline_link}{page}{out} }.into_any()
        }
        None => view! { <span class="muted">"—"</span> }.into_any(),
    };
    view! {
        <tr data-handler=b.handler.to_owned() data-attempt=a.attempt>
            <th scope="row" class="mono">{b.handler.to_owned()}</th>
            <td class="num">{a.attempt}</td>
            <td title=full_time(&started)>{time(&started, now)}</td>
            <td title=full_time(&stopped)>{if stopped.is_empty() { "—".to_owned() } else { time(&stopped, now) }}</td>
            <td class="tl-duration">{duration}</td>
            <td><span class=badge>{outcome}</span></td>
            <td>{next}</td>
            <td class="wrap">{a.message.clone().unwrap_or_default()}</td>
            <td>{trace}</td>
        </tr>
    }
}
