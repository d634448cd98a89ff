//! What else the core runs for an object, on its page: a parent's tasks, its daemons and timers.

use super::*;
use crate::model::{TaskState, TaskView};

fn task(name: &str, state: TaskState, place: Option<u32>, steps: (u32, u32)) -> TaskView {
    TaskView {
        resource: "jobs.example.com/v1".into(),
        namespace: "ns".into(),
        name: name.into(),
        task: "backup".into(),
        state,
        place,
        steps: steps.0,
        failed_steps: steps.1,
        started: None,
        message: (state == TaskState::Failed).then(|| "disk full".into()),
    }
}

#[test]
fn a_parents_page_lists_its_tasks_in_queue_order_with_their_steps() {
    let parent = object("ns", "db", P::Handled);
    let mut details = ObjectDetails::default();
    details.tasks = vec![
        task("now", TaskState::Running, None, (2, 0)),
        task("next", TaskState::Queued, Some(1), (0, 0)),
        task("later", TaskState::Queued, Some(2), (0, 0)),
        task("done", TaskState::Failed, None, (3, 1)),
    ];
    let html = object::render(&parent, &details, &ui(None), now());
    assert!(html.contains("<h2 id=\"tasks\">Tasks</h2>"), "{html}");
    let mut at = 0;
    for (name, place, state, steps) in [
        ("now", " ", "running", "2 done"),
        ("next", "1", "queued", "0 done"),
        ("later", "2", "queued", "0 done"),
        ("done", " ", "failed", "3 done, 1 failed"),
    ] {
        let row = format!(
            "<tr data-task=\"{name}\" data-state=\"{state}\"><td class=\"num\">{place}</td>\
             <th scope=\"row\" class=\"mono\"><a href=\"/objects/jobs.example.com/v1/ns/{name}\">{name}</a></th>\
             <td class=\"mono\">backup</td><td><span class=\"badge t-{state}\">{state}</span></td>\
             <td data-steps=\""
        );
        let found = html[at..]
            .find(&row)
            .unwrap_or_else(|| panic!("{name} (in order): {html}"));
        at += found + row.len();
        assert!(
            html[at..].contains(&format!(">{steps}</td>")),
            "{name}: {html}"
        );
    }
    assert!(html.contains("disk full"));
    let html = object::render(&parent, &ObjectDetails::default(), &ui(None), now());
    assert!(!html.contains("id=\"tasks\""));
}

#[test]
fn an_objects_page_shows_its_daemons_and_timers() {
    use crate::model::{AttemptOutcome, RunKind, RunView};
    let o = object("ns", "db", P::Handled);
    let mut details = ObjectDetails::default();
    details.runs = vec![
        RunView {
            handler: "beat".into(),
            kind: RunKind::Timer,
            since: "2026-01-02T03:00:00Z".into(),
            calling: false,
            calls: 7,
            restarts: 0,
            last_exit: Some("2026-01-02T03:04:00Z".into()),
            last_outcome: Some(AttemptOutcome::Succeeded),
            last_message: None,
            next: Some("2026-01-02T03:04:10Z".into()),
        },
        RunView {
            handler: "watcher".into(),
            kind: RunKind::Daemon,
            since: "2026-01-02T03:01:00Z".into(),
            calling: true,
            calls: 2,
            restarts: 1,
            last_exit: Some("2026-01-02T03:01:01Z".into()),
            last_outcome: Some(AttemptOutcome::Retrying),
            last_message: Some("Simulated failure.".into()),
            next: None,
        },
    ];
    let html = object::render(&o, &details, &ui(None), now());
    assert!(
        html.contains("<h2 id=\"runs\">Daemons and timers</h2>"),
        "{html}"
    );
    for expected in [
        "<tr data-run=\"beat\" data-kind=\"timer\"><th scope=\"row\" class=\"mono\">beat</th><td>timer</td>\
         <td><span class=\"badge r-waiting\">waiting</span></td><td title=\"2026-01-02 03:00:00 UTC\">03:00:00</td>\
         <td data-calls=\"7\" class=\"num\">7</td><td data-restarts=\"0\" class=\"num\">0</td>\
         <td><span class=\"badge o-succeeded\">succeeded</span>",
        "<td title=\"2026-01-02 03:04:10 UTC\">03:04:10</td></tr>",
        "<tr data-run=\"watcher\" data-kind=\"daemon\"><th scope=\"row\" class=\"mono\">watcher</th><td>daemon</td>\
         <td><span class=\"badge r-calling\">calling</span></td>",
        "<td data-restarts=\"1\" class=\"num\">1</td><td><span class=\"badge o-retrying\">retrying</span>",
        "Simulated failure.",
    ] {
        assert!(html.contains(expected), "{expected}: {html}");
    }
    let html = object::render(&o, &ObjectDetails::default(), &ui(None), now());
    assert!(!html.contains("id=\"runs\""));
}
