//! The overview: served resources, objects per phase, the core's queue and calls, live charts
//! of the core's counters, handler services, and the objects that need attention.

use leptos::prelude::*;

use crate::listing::{self, Facets, ListQuery};
use crate::model::{
    About, Charts, HandlerStatus, ObjectPhase, ObjectView, Overview, ServiceView, Source,
};
use crate::pages::format::{object_href, thousands, time};
use crate::pages::layout::{
    Col, Section, document, header_cells, phase_badge, section_notice, section_table, top_bar,
};

/// How many objects "Needs attention" lists at most.
const ATTENTION: usize = 15;

/// The overview page.
pub(crate) fn render<O: std::borrow::Borrow<ObjectView>>(
    objects: &[O],
    overview: &Overview,
    about: &About,
    charts: Option<&Charts>,
    now: jiff::Timestamp,
) -> String {
    let charts = charts.map(crate::pages::charts::section);
    let facets = listing::facets(objects, &about.resources);
    let mut attention: Vec<&ObjectView> = objects
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(|o| matches!(o.phase, ObjectPhase::Failed | ObjectPhase::Retrying))
        .collect();
    attention.sort_by(|a, b| {
        a.phase
            .rank()
            .cmp(&b.phase.rank())
            .then_with(|| b.updated.cmp(&a.updated))
    });
    let more = attention.len().saturating_sub(ATTENTION);
    let attention: Vec<ObjectView> = attention.into_iter().take(ATTENTION).cloned().collect();
    let body = view! {
        {top_bar(Section::Overview)}
        <main id="main" data-live="">
            <h1>"Overview"</h1>
            <p class="sub">{source_text(about.source, &facets)}</p>
            {about.role.clone().map(|role| view! { <p class="sub" id="role">{format!("This replica: {role}")}</p> })}
            <PhaseCards facets=facets.clone() overview=overview.clone() source=about.source/>
            {charts}
            <Resources facets=facets.clone()/>
            <Services services=about.services.clone()/>
            <Attention objects=attention more=more now=now/>
        </main>
    }
    .to_html();
    document("Overview", &body)
}

fn source_text(source: Source, facets: &Facets) -> String {
    let objects = thousands(facets.phases.total);
    let resources = facets.resources.len();
    let plural = if resources == 1 { "" } else { "s" };
    match source {
        Source::Core => {
            format!("{objects} objects of {resources} resource{plural}, as the core handles them.")
        }
        Source::Cluster => format!(
            "{objects} objects of {resources} resource{plural}, read from their annotations in the \
             cluster (operon dashboard)."
        ),
    }
}

fn phase_label(phase: ObjectPhase) -> String {
    let mut label = phase.as_str().replace('-', " ");
    if let Some(first) = label.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    label
}

#[component]
fn PhaseCards(facets: Facets, overview: Overview, source: Source) -> impl IntoView {
    let cards = facets
        .phases
        .iter()
        .filter(|(phase, count)| *count > 0 || *phase != ObjectPhase::Pending)
        .map(|(phase, count)| {
            let href = ListQuery::for_phase(phase).href();
            view! {
                <li>
                    <a class=format!("card {phase}{}", if count == 0 { " zero" } else { "" }) href=href>
                        <span class="n">{thousands(count)}</span>
                        <span class="l">{phase_label(phase)}</span>
                    </a>
                </li>
            }
        })
        .collect_view();
    let core = (source == Source::Core).then(|| {
        view! {
            <li>
                <div class="card">
                    <span class="n">{overview.queue_depth}</span>
                    <span class="l">"Queue depth"</span>
                </div>
            </li>
            <li>
                <div class="card">
                    <span class="n">{overview.inflight_calls}</span>
                    <span class="l">"In-flight calls"</span>
                </div>
            </li>
        }
    });
    view! {
        <h2 class="sr">"Objects by phase"</h2>
        <ul class="cards">
            <li>
                <a class="card" href="/objects">
                    <span class="n">{thousands(facets.phases.total)}</span>
                    <span class="l">"All objects"</span>
                </a>
            </li>
            {cards}
            {core}
        </ul>
    }
}

#[component]
fn Resources(facets: Facets) -> impl IntoView {
    let columns = [
        ObjectPhase::Handled,
        ObjectPhase::InProgress,
        ObjectPhase::Retrying,
        ObjectPhase::Failed,
        ObjectPhase::Deleting,
    ];
    let rows = facets
        .resources
        .iter()
        .map(|(resource, counts)| {
            let cells = columns
                .iter()
                .map(|phase| {
                    let n = counts.get(*phase);
                    let href = ListQuery {
                        resource: resource.clone(),
                        phase: phase.as_str().to_owned(),
                        ..ListQuery::default()
                    }
                    .href();
                    view! {
                        <td class="num">
                            {if n == 0 {
                                view! { <span class="muted">"0"</span> }.into_any()
                            } else {
                                view! { <a href=href>{thousands(n)}</a> }.into_any()
                            }}
                        </td>
                    }
                })
                .collect_view();
            let href = ListQuery {
                resource: resource.clone(),
                ..ListQuery::default()
            }
            .href();
            view! {
                <tr>
                    <th scope="row"><a class="mono" href=href>{resource.clone()}</a></th>
                    <td class="num">{thousands(counts.total)}</td>
                    {cells}
                </tr>
            }
        })
        .collect_view();
    let empty = facets.resources.is_empty().then(|| {
        view! { <p class="empty">"No resources are served yet."</p> }
    });
    let head = view! {
        {header_cells(&[Col::text("Resource"), Col::num("Objects")])}
        {columns
            .iter()
            .map(|p| view! { <th scope="col" class="num">{phase_label(*p)}</th> })
            .collect_view()}
    };
    section_table("resources", "Served resources", head, rows, empty)
}

#[component]
fn Services(services: Vec<ServiceView>) -> impl IntoView {
    (!services.is_empty()).then(|| {
        let rows = services
            .into_iter()
            .map(|s| {
                let (class, text) = if s.answering {
                    ("badge p-handled", "answering")
                } else {
                    ("badge p-failed", "not answering")
                };
                let tls = if s.tls { "TLS" } else { "plaintext" };
                let revision = (s.contract_revision > 0).then(|| s.contract_revision.to_string());
                view! {
                    <tr>
                        <th scope="row" class="mono">{s.service_name}</th>
                        <td class="mono">{s.name}</td>
                        <td><span class=class>{text}</span></td>
                        <td class="num">{revision.unwrap_or_else(|| "—".into())}</td>
                        <td>{tls}</td>
                        <td class="num">{s.handlers}</td>
                        <td class="wrap">{s.last_error.unwrap_or_default()}</td>
                    </tr>
                }
            })
            .collect_view();
        let columns = [
            Col::text("Service"),
            Col::text("Address"),
            Col::text("Status"),
            Col::num("Contract"),
            Col::text("Transport"),
            Col::num("Handlers"),
            Col::text("Last error"),
        ];
        section_table(
            "services",
            "Handler services",
            header_cells(&columns),
            rows,
            (),
        )
    })
}

#[component]
fn Attention(objects: Vec<ObjectView>, more: usize, now: jiff::Timestamp) -> impl IntoView {
    if objects.is_empty() {
        return section_notice(
            "attention",
            "Needs attention",
            "Nothing is failing or retrying.",
        );
    }
    let rows = objects
        .into_iter()
        .map(|o| {
            let href = object_href(&o.resource, &o.namespace, &o.name);
            let culprit = crate::pages::list::culprit(&o.handlers)
                .filter(|h| matches!(h.state, HandlerStatus::Failed | HandlerStatus::Retrying))
                .cloned();
            let handler = culprit.as_ref().map(|h| h.id.clone()).unwrap_or_default();
            let message = culprit.and_then(|h| h.message).unwrap_or_default();
            view! {
                <tr>
                    <th scope="row"><a href=href>{o.name.clone()}</a></th>
                    <td>{o.namespace.clone()}</td>
                    <td>{phase_badge(o.phase)}</td>
                    <td class="mono">{handler}</td>
                    <td class="msg" title=message.clone()>{message.clone()}</td>
                    <td title=crate::pages::format::full_time(&o.updated)>{time(&o.updated, now)}</td>
                </tr>
            }
        })
        .collect_view();
    let more = (more > 0).then(|| {
        view! {
            <p>
                <a href=ListQuery { sort: listing::SortKey::Phase, ..ListQuery::default() }.href()>
                    {format!("{} more…", thousands(more))}
                </a>
            </p>
        }
    });
    let columns = [
        Col::text("Name"),
        Col::text("Namespace"),
        Col::text("Phase"),
        Col::text("Handler"),
        Col::text("Last message"),
        Col::text("Updated"),
    ];
    view! {
        {section_table("attention", "Needs attention", header_cells(&columns), rows, ())}
        {more}
    }
    .into_any()
}
