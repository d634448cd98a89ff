//! The daemons and timers running for an object, on its page: since when, the calls so far and
//! the restarts after an error, how the last call ended and why, the next timer call.

use leptos::prelude::*;

use crate::model::{ObjectDetails, RunKind, RunView};
use crate::pages::format::{full_time, time};
use crate::pages::layout::{Col, header_cells, section_table};

/// The object's daemons and timers, or nothing for an object without them.
pub(crate) fn section(details: &ObjectDetails, now: jiff::Timestamp) -> Option<AnyView> {
    if details.runs.is_empty() {
        return None;
    }
    let rows = details.runs.iter().map(|r| row(r, now)).collect_view();
    let columns = [
        Col::text("Handler"),
        Col::text("Kind"),
        Col::text("Now"),
        Col::text("Since"),
        Col::num("Calls"),
        Col::num("Restarts"),
        Col::text("Last exit"),
        Col::text("Next call"),
    ];
    Some(section_table(
        "runs",
        "Daemons and timers",
        header_cells(&columns),
        rows,
        (),
    ))
}

fn row(r: &RunView, now: jiff::Timestamp) -> impl IntoView + use<> {
    let kind = match r.kind {
        RunKind::Daemon => "daemon",
        RunKind::Timer => "timer",
    };
    let state = if r.calling { "calling" } else { "waiting" };
    let last = r.last_outcome.map(|outcome| {
        let outcome = outcome.as_str();
        let at = r.last_exit.clone().unwrap_or_default();
        let message = r.last_message.clone().unwrap_or_default();
        view! {
            <span class=format!("badge o-{outcome}")>{outcome}</span>
            " "
            <span title=full_time(&at)>{time(&at, now)}</span>
            " "
            <span class="wrap">{message}</span>
        }
    });
    let next = r.next.clone().unwrap_or_default();
    view! {
        <tr data-run=r.handler.clone() data-kind=kind>
            <th scope="row" class="mono">{r.handler.clone()}</th>
            <td>{kind}</td>
            <td><span class=format!("badge r-{state}")>{state}</span></td>
            <td title=full_time(&r.since)>{time(&r.since, now)}</td>
            <td class="num" data-calls=r.calls>{r.calls}</td>
            <td class="num" data-restarts=r.restarts>{r.restarts}</td>
            <td>{last}</td>
            <td title=full_time(&next)>{time(&next, now)}</td>
        </tr>
    }
}
