//! One object's page: every handler and sub-handler with its state, attempts, times, last
//! message and traces; the timeline of its attempts; each attempt's trace inline (from Jaeger's
//! query API); the cause; what changed since it was last handled; its recent Events.

use std::collections::BTreeMap;
use std::sync::Arc;

use leptos::prelude::*;

use crate::listing::ListQuery;
use crate::model::{
    DiffView, EventView, HandlerDetails, HandlerStatus, HandlerView, ObjectDetails, ObjectView,
    Source,
};
use crate::pages::format::{
    duration_between, full_time, is_secret, relative, thousands, time, trace_href,
};
use crate::pages::layout::{
    Col, Section, document, header_cells, phase_badge, section_notice, section_table, state_badge,
    top_bar,
};
use crate::pages::{parent_tasks, runs, timeline, trace};
use crate::traces::{Trace, is_trace_id};

/// Traces shown inline, at most (the newest attempts').
pub(crate) const INLINE_TRACES: usize = 6;

/// The traces of a page, fetched from Jaeger's query API, by trace id (or why not).
pub(crate) type Fetched = BTreeMap<String, Result<Arc<Trace>, String>>;

/// Where the object page's data comes from, besides the read model's object and details.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sources<'a> {
    /// The Jaeger UI's base URL, for links out.
    pub jaeger_ui: Option<&'a str>,
    /// The traces fetched from the query API; `None` without `--jaeger-query`.
    pub fetched: Option<&'a Fetched>,
    /// What fills the read model: a running core, or the cluster (`operon dashboard`), which
    /// knows nothing of what a core runs (sync children, tasks, daemons and timers).
    pub model: Source,
}

/// The trace ids the page shows inline: the newest attempts' first, at most [`INLINE_TRACES`].
pub(crate) fn wanted_traces(details: &ObjectDetails) -> Vec<String> {
    let mut attempts: Vec<(&str, &str)> = details
        .handlers
        .values()
        .flat_map(|h| &h.attempts)
        .filter_map(|a| Some((a.started.as_deref().unwrap_or(""), a.trace_id.as_deref()?)))
        .filter(|(_, id)| is_trace_id(id))
        .collect();
    attempts.sort_by(|a, b| b.cmp(a));
    attempts.dedup_by(|a, b| a.1 == b.1);
    attempts
        .into_iter()
        .take(INLINE_TRACES)
        .map(|(_, id)| id.to_owned())
        .collect()
}

/// The page of `object`.
pub(crate) fn render(
    object: &ObjectView,
    details: &ObjectDetails,
    traces: &Sources<'_>,
    now: jiff::Timestamp,
) -> String {
    let jaeger_ui = traces.jaeger_ui;
    // The handlers in display order, then those with attempts the view does not list (daemons).
    let mut ids: Vec<&str> = tree(&object.handlers)
        .into_iter()
        .map(|(_, h)| h.id.as_str())
        .collect();
    let others: Vec<&str> = details.handlers.keys().map(String::as_str).collect();
    for id in others {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let timeline = timeline::section(&ids, details, jaeger_ui, traces.fetched.is_some(), now);
    let inline = inline_traces(&ids, details, traces.fetched);
    let title = format!("{} ({})", object.name, object.resource);
    let body = view! {
        {top_bar(Section::Objects)}
        <main id="main" data-live="" data-key=object.key()>
            <Crumbs object=object.clone()/>
            <h1><span class="mono">{object.name.clone()}</span>{phase_badge(object.phase)}</h1>
            <Facts object=object.clone() now=now/>
            <Handlers
                handlers=object.handlers.clone()
                details=details.clone()
                jaeger_ui=jaeger_ui.map(str::to_owned)
                query=traces.fetched.is_some()
                now=now
            />
            {timeline}
            {(traces.model == Source::Cluster).then(only_a_core_knows)}
            {children(details)}
            {parent_tasks::section(details, now)}
            {runs::section(details, now)}
            {inline}
            <Diff resource=object.resource.clone() diff=details.diff.clone()/>
            <Events events=details.events.clone() now=now/>
        </main>
    }
    .to_html();
    document(&title, &body)
}

/// The page for an object the model does not have.
pub(crate) fn render_missing(key: &str) -> String {
    let key = key.to_owned();
    let body = view! {
        {top_bar(Section::Objects)}
        <main id="main">
            <h1>"Object not found"</h1>
            <p class="notice bad">
                "No object " <code>{key}</code> " is watched (it may have been deleted, or its "
                "resource is not served)."
            </p>
            <p><a href="/objects">"All objects"</a></p>
        </main>
    }
    .to_html();
    document("Not found", &body)
}

#[component]
fn Crumbs(object: ObjectView) -> impl IntoView {
    let by_resource = ListQuery {
        resource: object.resource.clone(),
        ..ListQuery::default()
    }
    .href();
    let by_namespace = ListQuery {
        resource: object.resource.clone(),
        namespace: object.namespace.clone(),
        ..ListQuery::default()
    }
    .href();
    let namespace = (!object.namespace.is_empty()).then(|| {
        view! { " › " <a href=by_namespace>{object.namespace.clone()}</a> }
    });
    view! {
        <nav class="crumbs" aria-label="Breadcrumb">
            <a href="/objects">"Objects"</a>
            " › "
            <a href=by_resource class="mono">{object.resource.clone()}</a>
            {namespace}
        </nav>
    }
}

#[component]
fn Facts(object: ObjectView, now: jiff::Timestamp) -> impl IntoView {
    let namespace = if object.namespace.is_empty() {
        "(cluster-wide)".to_owned()
    } else {
        object.namespace.clone()
    };
    let cause = if object.cause.is_empty() {
        "—".to_owned()
    } else {
        object.cause.clone()
    };
    let updated = format!(
        "{}{}",
        time(&object.updated, now),
        relative(&object.updated, now)
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    view! {
        <dl class="facts">
            <dt>"Resource"</dt><dd class="mono">{object.resource.clone()}</dd>
            <dt>"Namespace"</dt><dd>{namespace}</dd>
            <dt>"UID"</dt><dd class="mono">{object.uid.clone()}</dd>
            <dt>"Cause"</dt><dd>{cause}</dd>
            <dt>"Updated"</dt><dd title=full_time(&object.updated)>{updated}</dd>
        </dl>
    }
}

/// Handlers in display order: each parent followed by its sub-handlers, with their depth.
pub(crate) fn tree(handlers: &[HandlerView]) -> Vec<(usize, &HandlerView)> {
    let mut ordered: Vec<&HandlerView> = handlers.iter().collect();
    // Stable: keeps the model's order among siblings, but puts children right after parents.
    let parent_order = |h: &HandlerView| -> usize {
        let root = h.id.split('/').next().unwrap_or_default();
        handlers
            .iter()
            .position(|p| p.id == root)
            .unwrap_or(usize::MAX)
    };
    ordered.sort_by(|a, b| {
        parent_order(a)
            .cmp(&parent_order(b))
            .then_with(|| a.id.split('/').cmp(b.id.split('/')))
    });
    ordered
        .into_iter()
        .map(|h| (h.id.matches('/').count(), h))
        .collect()
}

#[component]
fn Handlers(
    handlers: Vec<HandlerView>,
    details: ObjectDetails,
    jaeger_ui: Option<String>,
    query: bool,
    now: jiff::Timestamp,
) -> impl IntoView {
    if handlers.is_empty() {
        return section_notice(
            "handlers",
            "Handlers",
            "No handler is running or has a recorded outcome for this object.",
        );
    }
    let rows = tree(&handlers)
        .into_iter()
        .map(|(depth, h)| {
            let extra = details.handlers.get(&h.id).cloned().unwrap_or_default();
            view! { <HandlerRow handler=h.clone() depth=depth details=extra jaeger_ui=jaeger_ui.clone() query=query now=now/> }
        })
        .collect_view();
    let columns = [
        Col::text("Handler"),
        Col::text("State"),
        Col::num("Attempts"),
        Col::text("Started"),
        Col::text("Next retry"),
        Col::text("Duration"),
        Col::text("Last message"),
        Col::text("Trace"),
    ];
    section_table("handlers", "Handlers", header_cells(&columns), rows, ())
}

#[component]
fn HandlerRow(
    handler: HandlerView,
    depth: usize,
    details: HandlerDetails,
    jaeger_ui: Option<String>,
    query: bool,
    now: jiff::Timestamp,
) -> impl IntoView {
    // Out to the Jaeger UI when there is one, else to the dashboard's own trace page.
    let href = |id: &str| match jaeger_ui.as_deref() {
        Some(ui) => trace_href(Some(ui), id),
        None => (query && is_trace_id(id)).then(|| format!("/traces/{id}")),
    };
    let (parent, own) = match handler.id.rsplit_once('/') {
        Some((parent, own)) => (format!("{parent}/"), own.to_owned()),
        None => (String::new(), handler.id.clone()),
    };
    let started = handler.started.clone().unwrap_or_default();
    let next = match (&handler.delayed, handler.state) {
        (Some(delayed), HandlerStatus::Retrying | HandlerStatus::Pending) => format!(
            "{}{}",
            time(delayed, now),
            relative(delayed, now)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        _ => "—".to_owned(),
    };
    let duration = match (&handler.started, &details.stopped) {
        (Some(started), Some(stopped)) => duration_between(started, stopped),
        _ => None,
    }
    .unwrap_or_else(|| "—".to_owned());
    let traces: Vec<(String, String)> = if details.attempts.is_empty() {
        handler
            .trace_id
            .iter()
            .filter_map(|id| href(id))
            .map(|href| (href, "last attempt".to_owned()))
            .collect()
    } else {
        details
            .attempts
            .iter()
            .filter_map(|a| {
                href(a.trace_id.as_deref()?).map(|href| (href, format!("#{}", a.attempt)))
            })
            .collect()
    };
    let traces = if traces.is_empty() {
        view! { <span class="muted">"—"</span> }.into_any()
    } else {
        traces
            .into_iter()
            .map(|(href, label)| {
                let name = format!("Trace of {label} of {}", handler.id);
                let external = !href.starts_with('/');
                view! {
                    <a href=href rel=external.then_some("noreferrer")
                        target=external.then_some("_blank") aria-label=name>{label}</a>" "
                }
            })
            .collect_view()
            .into_any()
    };
    let message = handler.message.clone().unwrap_or_default();
    view! {
        <tr>
            <th scope="row" class=format!("mono indent-{}", depth.min(3))>
                {(!parent.is_empty()).then(|| view! { <span class="muted">{parent}</span> })}
                {own}
            </th>
            <td>{state_badge(handler.state)}</td>
            <td class="num">{handler.retries}</td>
            <td title=full_time(&started)>{time(&started, now)}</td>
            <td>{next}</td>
            <td>{duration}</td>
            <td class="wrap">{message}</td>
            <td>{traces}</td>
        </tr>
    }
}

/// In `operon dashboard`: where to see what only a running core knows.
fn only_a_core_knows() -> AnyView {
    section_notice(
        "core-runs",
        "Children, tasks, daemons and timers",
        "This dashboard reads the objects' annotations in the cluster (operon dashboard): what a \
         core runs for an object (a sync parent's children and rollouts, a parent's tasks in \
         their order, running daemons and timers) is known to that core only. Open the \
         dashboard of the core itself (operon run, its --http listener) to see them.",
    )
}

/// A sync parent's children as its last sync left them, and its rollouts in progress.
fn children(details: &ObjectDetails) -> Option<AnyView> {
    if details.children.is_empty() && details.rollouts.is_empty() {
        return None;
    }
    let rows = details
        .children
        .iter()
        .map(|c| {
            let action = c.action.as_str();
            view! {
                <tr data-child=c.name.clone()>
                    <td>{c.kind.clone()}</td>
                    <td>{c.namespace.clone()}</td>
                    <th scope="row" class="mono">{c.name.clone()}</th>
                    <td><span class=format!("badge c-{action}")>{action}</span></td>
                </tr>
            }
        })
        .collect_view();
    let rollouts = (!details.rollouts.is_empty()).then(|| {
        let items = details
            .rollouts
            .iter()
            .map(|r| {
                let label = format!("{}: {} of {} as desired", r.kind, r.current, r.total);
                let rolling = r.rolling.as_ref().map_or_else(
                    || "next child shortly".to_owned(),
                    |now| format!("rolling {now}"),
                );
                view! {
                    <li data-rollout=r.kind.clone()>
                        <span class="mono">{label.clone()}</span>" "
                        <progress value=r.current max=r.total.max(1) aria-label=label></progress>
                        " "<span class="muted">{rolling}</span>
                    </li>
                }
            })
            .collect_view();
        view! { <ul class="rollouts">{items}</ul> }
    });
    let columns = [
        Col::text("Kind"),
        Col::text("Namespace"),
        Col::text("Name"),
        Col::text("Last sync"),
    ];
    Some(section_table(
        "children",
        "Children",
        header_cells(&columns),
        rows,
        rollouts,
    ))
}

/// Each wanted attempt's trace as a waterfall (the newest open), or how to turn traces on.
fn inline_traces(ids: &[&str], details: &ObjectDetails, fetched: Option<&Fetched>) -> AnyView {
    let Some(fetched) = fetched else {
        return section_notice(
            "traces",
            "Traces",
            "Each attempt's trace shows here when the core runs with --jaeger-query URL (env \
             OPERON_JAEGER_QUERY): Jaeger's query API, e.g. http://127.0.0.1:16686. The core \
             exports its traces with --otlp-endpoint.",
        );
    };
    let wanted = wanted_traces(details);
    if wanted.is_empty() {
        return section_notice(
            "traces",
            "Traces",
            "No traced attempt is known for this object lately (the core exports traces with \
             --otlp-endpoint; it keeps the last attempts of recently active objects).",
        );
    }
    let owner = |trace: &str| {
        ids.iter().find_map(|id| {
            let a = (details.handlers.get(*id)?.attempts.iter())
                .find(|a| a.trace_id.as_deref() == Some(trace))?;
            Some(((*id).to_owned(), a.attempt, a.outcome))
        })
    };
    let items = wanted
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (handler, attempt, outcome) = owner(id).unwrap_or_default();
            let outcome = outcome.map_or("running", |o| o.as_str());
            let summary = format!("{handler} · attempt {attempt} · {outcome}");
            let content = match fetched.get(id) {
                Some(Ok(t)) => trace::waterfall(t),
                Some(Err(problem)) => {
                    view! { <p class="notice bad">{problem.clone()}</p> }.into_any()
                }
                // Not fetched within the page's budget: the live script reads the page again.
                None => view! {
                    <p class="notice" data-trace-pending="">
                        "Fetching this trace from Jaeger… it shows here when it arrives."
                    </p>
                }
                .into_any(),
            };
            view! {
                <details class="trace panel" id=format!("trace-{id}") open={i == 0}>
                    <summary>
                        <span class="mono">{summary}</span>" "
                        <a href=format!("/traces/{id}") class="mono muted">{id.clone()}</a>
                    </summary>
                    {content}
                </details>
            }
        })
        .collect_view();
    view! {
        <h2 id="traces">"Traces"</h2>
        <div class="traces">{items}</div>
    }
    .into_any()
}

#[component]
fn Diff(resource: String, diff: Vec<DiffView>) -> impl IntoView {
    if is_secret(&resource) {
        return section_notice(
            "diff",
            "Changes since last handled",
            "The contents of Secrets are never shown.",
        );
    }
    if diff.is_empty() {
        return ().into_any();
    }
    let rows = diff
        .into_iter()
        .map(|d| {
            let path = if d.path.is_empty() {
                "(whole object)".to_owned()
            } else {
                d.path
            };
            view! {
                <tr>
                    <td>{d.op}</td>
                    <th scope="row" class="mono">{path}</th>
                    <td class="mono wrap">{d.old.unwrap_or_default()}</td>
                    <td class="mono wrap">{d.new.unwrap_or_default()}</td>
                </tr>
            }
        })
        .collect_view();
    let columns = [
        Col::text("Change"),
        Col::text("Field"),
        Col::text("Before"),
        Col::text("After"),
    ];
    section_table(
        "diff",
        "Changes since last handled",
        header_cells(&columns),
        rows,
        (),
    )
}

#[component]
fn Events(events: Vec<EventView>, now: jiff::Timestamp) -> impl IntoView {
    if events.is_empty() {
        return section_notice(
            "events",
            "Recent events",
            "No recent Kubernetes Events are known for this object.",
        );
    }
    let rows = events
        .into_iter()
        .map(|e| {
            let class = match e.type_.as_str() {
                "Normal" => "badge p-handled",
                "Warning" => "badge p-retrying",
                _ => "badge p-failed",
            };
            let count = (e.count > 1).then(|| format!(" ×{}", thousands(e.count as usize)));
            view! {
                <tr>
                    <td title=full_time(&e.time)>{time(&e.time, now)}</td>
                    <td><span class=class>{e.type_.clone()}</span></td>
                    <td>{e.reason.clone()}</td>
                    <td class="wrap">{e.message.clone()}<span class="muted">{count}</span></td>
                </tr>
            }
        })
        .collect_view();
    let columns = [
        Col::text("Time"),
        Col::text("Type"),
        Col::text("Reason"),
        Col::text("Message"),
    ];
    section_table("events", "Recent events", header_cells(&columns), rows, ())
}
