//! The object list: filters (a plain GET form), sortable columns, pages.

use leptos::prelude::*;

use crate::listing::{self, Facets, ListQuery, Listing, PAGE_SIZES, SortKey};
use crate::model::{HandlerStatus, HandlerView, ObjectView};
use crate::pages::format::{full_time, object_href, thousands, time};
use crate::pages::layout::{Section, document, phase_badge, top_bar};

/// Suggestions offered per text filter (namespaces, handlers), at most.
const SUGGESTIONS: usize = 500;

/// The list page for `query`.
pub(crate) fn render<O: std::borrow::Borrow<ObjectView>>(
    objects: &[O],
    resources: &[String],
    query: &ListQuery,
    now: jiff::Timestamp,
) -> String {
    let facets = listing::facets(objects, resources);
    let listing = listing::list(objects, query);
    let body = view! {
        {top_bar(Section::Objects)}
        <main id="main">
            <h1>"Objects"</h1>
            <Filters query=query.clone() facets=facets/>
            <div data-live="">
                <Summary listing=listing.clone() query=query.clone()/>
                <Table listing=listing.clone() query=query.clone() now=now/>
                <Pager listing=listing query=query.clone()/>
            </div>
        </main>
    }
    .to_html();
    document("Objects", &body)
}

#[component]
fn Filters(query: ListQuery, facets: Facets) -> impl IntoView {
    let resource_options = facets
        .resources
        .iter()
        .map(|(resource, counts)| {
            let selected = *resource == query.resource;
            let label = format!("{resource} ({})", thousands(counts.total));
            view! { <option value=resource.clone() selected=selected>{label}</option> }
        })
        .collect_view();
    let phase_options = facets
        .phases
        .iter()
        .map(|(phase, count)| {
            let selected = phase.as_str() == query.phase;
            view! { <option value=phase.as_str() selected=selected>{format!("{phase} ({})", thousands(count))}</option> }
        })
        .collect_view();
    let namespaces = facets
        .namespaces
        .keys()
        .take(SUGGESTIONS)
        .map(|ns| view! { <option value=ns.clone()></option> })
        .collect_view();
    let handlers = facets
        .handlers
        .keys()
        .take(SUGGESTIONS)
        .map(|h| view! { <option value=h.clone()></option> })
        .collect_view();
    let sizes = PAGE_SIZES
        .iter()
        .map(|n| view! { <option value=n.to_string() selected=*n == query.per_page>{*n}</option> })
        .collect_view();
    let sort = (query.sort != SortKey::default() || query.descending).then(|| {
        view! {
            <input type="hidden" name="sort" value=query.sort.param()/>
            <input type="hidden" name="dir" value=if query.descending { "desc" } else { "asc" }/>
        }
    });
    let clear = query
        .is_filtered()
        .then(|| view! { <a href="/objects">"Clear filters"</a> });
    view! {
        <form class="filters" method="get" action="/objects" role="search" aria-label="Filter objects">
            <div>
                <label for="f-resource">"Resource"</label>
                <select id="f-resource" name="resource">
                    <option value="">"All resources"</option>
                    {resource_options}
                </select>
            </div>
            <div>
                <label for="f-namespace">"Namespace"</label>
                <input id="f-namespace" name="namespace" list="l-namespaces" value=query.namespace.clone() placeholder="All" autocomplete="off"/>
                <datalist id="l-namespaces">{namespaces}</datalist>
            </div>
            <div>
                <label for="f-phase">"Phase"</label>
                <select id="f-phase" name="phase">
                    <option value="">"All phases"</option>
                    {phase_options}
                </select>
            </div>
            <div>
                <label for="f-handler">"Handler"</label>
                <input id="f-handler" name="handler" list="l-handlers" value=query.handler.clone() placeholder="All" autocomplete="off"/>
                <datalist id="l-handlers">{handlers}</datalist>
            </div>
            <div>
                <label for="f-q">"Search"</label>
                <input id="f-q" type="search" name="q" value=query.text.clone() placeholder="Name, message, uid…"/>
            </div>
            <div>
                <label for="f-per-page">"Per page"</label>
                <select id="f-per-page" name="per_page">{sizes}</select>
            </div>
            {sort}
            <button type="submit">"Apply"</button>
            {clear}
        </form>
    }
}

#[component]
fn Summary(listing: Listing, query: ListQuery) -> impl IntoView {
    let text = if listing.matched == 0 {
        if listing.total == 0 {
            "No objects yet.".to_owned()
        } else {
            format!(
                "No object matches the filters ({} in all).",
                thousands(listing.total)
            )
        }
    } else {
        let first = listing.offset + 1;
        let last = listing.offset + listing.rows.len();
        let of = if query.is_filtered() {
            format!(
                "{} matching ({} in all)",
                thousands(listing.matched),
                thousands(listing.total)
            )
        } else {
            thousands(listing.total)
        };
        format!("Showing {}–{} of {of}.", thousands(first), thousands(last))
    };
    view! { <p class="sub" id="summary">{text}</p> }
}

/// One sortable column header.
#[component]
fn SortHeader(
    query: ListQuery,
    key: SortKey,
    label: &'static str,
    #[prop(optional)] numeric: bool,
) -> impl IntoView {
    let sort = (query.sort == key).then_some(if query.descending {
        "descending"
    } else {
        "ascending"
    });
    let arrow = match sort {
        Some("ascending") => " ▲",
        Some(_) => " ▼",
        None => "",
    };
    let href = query.sorted_by(key).href();
    view! {
        <th scope="col" aria-sort=sort class=if numeric { "sortable num" } else { "sortable" }>
            <a href=href>{label}<span aria-hidden="true">{arrow}</span></a>
        </th>
    }
}

#[component]
fn Table(listing: Listing, query: ListQuery, now: jiff::Timestamp) -> impl IntoView {
    if listing.rows.is_empty() {
        return ().into_any();
    }
    let rows = listing
        .rows
        .into_iter()
        .map(|o| view! { <Row object=o now=now/> })
        .collect_view();
    view! {
        <div class="panel">
            <table aria-describedby="summary">
                <caption class="sr">"Objects, sortable by the column headers"</caption>
                <thead>
                    <tr>
                        <SortHeader query=query.clone() key=SortKey::Name label="Name"/>
                        <SortHeader query=query.clone() key=SortKey::Namespace label="Namespace"/>
                        <SortHeader query=query.clone() key=SortKey::Resource label="Resource"/>
                        <SortHeader query=query.clone() key=SortKey::Phase label="Phase"/>
                        <th scope="col">"Handlers"</th>
                        <SortHeader query=query.clone() key=SortKey::Attempts label="Attempts" numeric=true/>
                        <th scope="col">"Last message"</th>
                        <SortHeader query=query.clone() key=SortKey::Updated label="Updated"/>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
    .into_any()
}

/// The handler whose message is worth showing in a list: a failed one's, else a retrying
/// one's, else any with a message; without messages, the first failed or retrying handler.
pub(crate) fn culprit(handlers: &[HandlerView]) -> Option<&HandlerView> {
    let rank = |h: &&HandlerView| {
        let state = match h.state {
            HandlerStatus::Failed => 0,
            HandlerStatus::Retrying => 1,
            HandlerStatus::Pending | HandlerStatus::Succeeded => 2,
        };
        let silent = h.message.as_deref().is_none_or(str::is_empty);
        (silent, state)
    };
    handlers
        .iter()
        .filter(|h| h.state != HandlerStatus::Succeeded || h.message.is_some())
        .min_by_key(rank)
}

/// The message worth showing in the list (see [`culprit`]).
pub(crate) fn headline(handlers: &[HandlerView]) -> Option<&str> {
    culprit(handlers)
        .and_then(|h| h.message.as_deref())
        .filter(|m| !m.is_empty())
}

#[component]
fn Row(object: ObjectView, now: jiff::Timestamp) -> impl IntoView {
    let href = object_href(&object.resource, &object.namespace, &object.name);
    let attempts = listing::attempts(&object);
    let message = headline(&object.handlers).unwrap_or_default().to_owned();
    let key = object.key();
    let chips = object
        .handlers
        .iter()
        .map(|h| {
            let symbol = match h.state {
                HandlerStatus::Succeeded => "✓",
                HandlerStatus::Failed => "✗",
                HandlerStatus::Retrying => "↻",
                HandlerStatus::Pending => "…",
            };
            let title = format!("{}: {}, {} attempt(s)", h.id, h.state, h.retries);
            view! {
                <span class=format!("chip s-{}", h.state) title=title>
                    <span aria-hidden="true">{format!("{symbol} ")}</span>{h.id.clone()}<span class="sr">{format!(": {}", h.state)}</span>
                </span>
            }
        })
        .collect_view();
    view! {
        <tr data-key=key>
            <th scope="row"><a href=href>{object.name.clone()}</a></th>
            <td>{object.namespace.clone()}</td>
            <td class="mono muted">{object.resource.clone()}</td>
            <td>{phase_badge(object.phase)}</td>
            <td>{chips}</td>
            <td class="num">{attempts}</td>
            <td class="msg" title=message.clone()>{message.clone()}</td>
            <td title=full_time(&object.updated)>{time(&object.updated, now)}</td>
        </tr>
    }
}

#[component]
fn Pager(listing: Listing, query: ListQuery) -> impl IntoView {
    (listing.pages > 1).then(|| {
        let link = |page: usize, label: &'static str, rel: &'static str| {
            let href = query.on_page(page).href();
            view! { <a href=href rel=rel>{label}</a> }
        };
        let first = (listing.page > 1).then(|| link(1, "« First", "first"));
        let prev = (listing.page > 1).then(|| link(listing.page - 1, "‹ Previous", "prev"));
        let next = (listing.page < listing.pages).then(|| link(listing.page + 1, "Next ›", "next"));
        let last = (listing.page < listing.pages).then(|| link(listing.pages, "Last »", "last"));
        view! {
            <nav class="pager" aria-label="Pages">
                {first}
                {prev}
                <span aria-current="page">
                    {format!("Page {} of {}", thousands(listing.page), thousands(listing.pages))}
                </span>
                {next}
                {last}
            </nav>
        }
    })
}
