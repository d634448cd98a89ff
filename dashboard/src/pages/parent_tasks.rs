//! A parent's tasks on its page, in the order its FIFO runs them: the running one, the queued
//! ones with their place, then the finished ones — each with its state and its steps' progress.

use leptos::prelude::*;

use crate::model::{ObjectDetails, TaskView};
use crate::pages::format::{full_time, object_href, time};
use crate::pages::layout::{Col, header_cells, section_table};

/// The parent's tasks, or nothing for an object without tasks.
pub(crate) fn section(details: &ObjectDetails, now: jiff::Timestamp) -> Option<AnyView> {
    if details.tasks.is_empty() {
        return None;
    }
    let rows = details.tasks.iter().map(|t| row(t, now)).collect_view();
    let columns = [
        Col::num("#"),
        Col::text("Task"),
        Col::text("Kind"),
        Col::text("State"),
        Col::text("Steps"),
        Col::text("Started"),
        Col::text("Message"),
    ];
    Some(section_table(
        "tasks",
        "Tasks",
        header_cells(&columns),
        rows,
        (),
    ))
}

fn row(t: &TaskView, now: jiff::Timestamp) -> impl IntoView + use<> {
    let state = t.state.as_str();
    let place = t.place.map(|p| p.to_string()).unwrap_or_default();
    let href = object_href(&t.resource, &t.namespace, &t.name);
    let steps = match t.failed_steps {
        0 => format!("{} done", t.steps),
        failed => format!("{} done, {failed} failed", t.steps),
    };
    let started = t.started.clone().unwrap_or_default();
    view! {
        <tr data-task=t.name.clone() data-state=state>
            <td class="num">{place}</td>
            <th scope="row" class="mono"><a href=href>{t.name.clone()}</a></th>
            <td class="mono">{t.task.clone()}</td>
            <td><span class=format!("badge t-{state}")>{state}</span></td>
            <td data-steps=t.steps>{steps}</td>
            <td title=full_time(&started)>{time(&started, now)}</td>
            <td class="wrap">{t.message.clone().unwrap_or_default()}</td>
        </tr>
    }
}
