//! The exposition of every metric, as dashboards, alerts and the tests read it.
use super::*;

/// The sample lines of `text` for `name` (exact name, any labels).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .collect()
}

#[test]
fn renders_counters_with_labels() {
    let m = Metrics::default();
    m.cycle();
    m.handler("create_fn", "success", 0.5);
    m.handler("create_fn", "success", 0.5);
    m.api("patch", 200);
    let text = m.render();
    assert!(text.contains("operon_cycles_total 1"), "{text}");
    assert!(
        text.contains("operon_handler_outcomes_total{handler=\"create_fn\",outcome=\"success\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("operon_handler_duration_seconds_count{handler=\"create_fn\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("operon_api_requests_total{verb=\"patch\",code=\"200\"} 1"),
        "{text}"
    );
}

/// Every family under its exposed name and type: a renamed metric breaks dashboards, alerts
/// and the tests that read `/metrics`, so it fails here first.
#[test]
fn every_family_is_exposed_under_its_name_and_type() {
    let m = Metrics::default();
    // Unlabelled counters and gauges show from the start, at zero.
    let text = m.render();
    for zero in [
        "operon_cycles_total 0",
        "operon_queue_depth 0",
        "operon_inflight_calls 0",
        "operon_objects 0",
        "operon_daemons_running 0",
        "operon_active 0",
        "operon_shard_objects 0",
        "operon_shard_members 0",
    ] {
        assert!(text.lines().any(|l| l == zero), "{zero} in:\n{text}");
    }
    // A labelled family shows once it has a sample.
    m.handler("h", "success", 0.1);
    m.event_to_cycle("pods/v1", Duration::ZERO);
    m.api("get", 200);
    m.sync_call("s", "ok");
    m.sync_error("s", "ns", "n");
    drop(m.task_started("t", Some(SignedDuration::ZERO)));
    m.task_ended("t", Phase::Succeeded, Some(SignedDuration::ZERO));
    m.active(true);
    m.shard_objects(7);
    m.shard_members(3);
    m.shard_move("claimed");
    let text = m.render();
    for line in [
        "operon_shard_objects 7",
        "operon_shard_members 3",
        "operon_shard_moves_total{change=\"claimed\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(text.lines().any(|l| l == "operon_active 1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "operon_role_changes_total{change=\"started\"} 1"),
        "{text}"
    );
    let families = [
        ("operon_cycles", "counter"),
        ("operon_handler_outcomes", "counter"),
        ("operon_handler_duration_seconds", "histogram"),
        ("operon_event_to_cycle_seconds", "histogram"),
        ("operon_queue_depth", "gauge"),
        ("operon_inflight_calls", "gauge"),
        ("operon_api_requests", "counter"),
        ("operon_sync_calls", "counter"),
        ("operon_sync_errors", "counter"),
        ("operon_objects", "gauge"),
        ("operon_daemons_running", "gauge"),
        ("operon_task_runs", "counter"),
        ("operon_task_duration_seconds", "histogram"),
        ("operon_task_wait_seconds", "histogram"),
        ("operon_tasks_running", "gauge"),
        ("operon_active", "gauge"),
        ("operon_role_changes", "counter"),
        ("operon_shard_objects", "gauge"),
        ("operon_shard_members", "gauge"),
        ("operon_shard_moves", "counter"),
    ];
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    for (name, kind) in families {
        assert!(
            types.contains(&format!("# TYPE {name} {kind}").as_str()),
            "# TYPE {name} {kind} in:\n{text}"
        );
    }
    assert_eq!(types.len(), families.len(), "no other family:\n{text}");
    // The constants are the names as exposed (counters with `_total`).
    for constant in [
        CYCLES,
        HANDLER_OUTCOMES,
        API_REQUESTS,
        SYNC_CALLS,
        SYNC_ERRORS,
        TASK_RUNS,
        ROLE_CHANGES,
        SHARD_MOVES,
    ] {
        let family = base(constant, "_total");
        assert!(
            constant.ends_with("_total") && families.iter().any(|(n, _)| *n == family),
            "{constant}"
        );
    }
    for constant in [
        HANDLER_SECONDS,
        EVENT_TO_CYCLE,
        TASK_SECONDS,
        TASK_WAIT_SECONDS,
        QUEUE_DEPTH,
        INFLIGHT,
        OBJECTS,
        DAEMONS,
        ACTIVE,
        TASKS_RUNNING,
        SHARD_OBJECTS,
        SHARD_MEMBERS,
    ] {
        assert!(families.iter().any(|(n, _)| *n == constant), "{constant}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn gauges_follow_their_deltas() {
    let m = Metrics::default();
    m.queue(3);
    m.queue(-1);
    m.inflight(1);
    m.objects(5);
    m.daemons(2);
    m.daemons(-1);
    assert_eq!(
        (m.queue_depth(), m.inflight_calls(), m.daemons_running()),
        (2, 1, 1)
    );
    let text = m.render();
    for line in [
        "operon_queue_depth 2",
        "operon_inflight_calls 1",
        "operon_objects 5",
        "operon_daemons_running 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

#[test]
fn handler_durations_fall_into_buckets_from_5ms_to_60s() {
    let m = Metrics::default();
    m.handler("h", "success", 0.003);
    m.handler("h", "failure", 0.2);
    m.handler("h", "retry", 120.0);
    let text = m.render();
    let name = "operon_handler_duration_seconds";
    assert!(text.contains(&format!("# UNIT {name} seconds")), "{text}");
    let buckets = samples(&text, &format!("{name}_bucket"));
    let expected = [
        ("0.005", 1),
        ("0.01", 1),
        ("0.25", 2),
        ("60.0", 2),
        ("+Inf", 3),
    ];
    for (le, n) in expected {
        let line = format!("{name}_bucket{{le=\"{le}\",handler=\"h\"}} {n}");
        assert!(buckets.contains(&line.as_str()), "{line} in:\n{text}");
    }
    assert_eq!(buckets.len(), HANDLER_BUCKETS.len() + 1, "{text}");
    assert!(
        text.contains(&format!("{name}_count{{handler=\"h\"}} 3")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{name}_sum{{handler=\"h\"}} 120.203")),
        "{text}"
    );
}

#[test]
fn event_to_cycle_latency_is_a_histogram_by_resource() {
    let m = Metrics::default();
    m.event_to_cycle("kopfexamples.kopf.dev/v1", Duration::from_millis(2));
    m.event_to_cycle("kopfexamples.kopf.dev/v1", Duration::from_secs(2));
    let text = m.render();
    let name = "operon_event_to_cycle_seconds";
    let labels = "resource=\"kopfexamples.kopf.dev/v1\"";
    for line in [
        format!("{name}_bucket{{le=\"0.001\",{labels}}} 0"),
        format!("{name}_bucket{{le=\"0.0025\",{labels}}} 1"),
        format!("{name}_bucket{{le=\"2.5\",{labels}}} 2"),
        format!("{name}_bucket{{le=\"+Inf\",{labels}}} 2"),
        format!("{name}_count{{{labels}}} 2"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert_eq!(
        samples(&text, &format!("{name}_bucket")).len(),
        EVENT_BUCKETS.len() + 1
    );
}

#[test]
fn tasks_are_counted_by_outcome_timed_and_gauged_while_running() {
    let m = Metrics::default();
    let running = m.task_started("backup", Some(SignedDuration::from_secs(3)));
    let resumed = m.task_started("backup", None);
    let text = m.render();
    assert!(
        text.lines()
            .any(|l| l == "operon_tasks_running{task=\"backup\"} 2"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "operon_task_wait_seconds_count{task=\"backup\"} 1"),
        "a resumption is not a wait: {text}"
    );
    drop(running);
    drop(resumed);
    m.task_ended(
        "backup",
        Phase::Succeeded,
        Some(SignedDuration::from_secs(42)),
    );
    m.task_ended("backup", Phase::Failed, None);
    m.task_ended("backup", Phase::Running, Some(SignedDuration::from_secs(1)));
    m.task_ended(
        "backup",
        Phase::Cancelled,
        Some(SignedDuration::from_secs(7200)),
    );
    let text = m.render();
    for line in [
        "operon_tasks_running{task=\"backup\"} 0",
        "operon_task_runs_total{task=\"backup\",outcome=\"succeeded\"} 1",
        "operon_task_runs_total{task=\"backup\",outcome=\"failed\"} 2",
        "operon_task_runs_total{task=\"backup\",outcome=\"cancelled\"} 1",
        "operon_task_duration_seconds_count{task=\"backup\"} 3",
        "operon_task_duration_seconds_bucket{le=\"1.0\",task=\"backup\"} 1",
        "operon_task_duration_seconds_bucket{le=\"60.0\",task=\"backup\"} 2",
        "operon_task_duration_seconds_bucket{le=\"7200.0\",task=\"backup\"} 3",
        "operon_task_wait_seconds_bucket{le=\"5.0\",task=\"backup\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::default();
    m.handler("a \"b\"\\c", "success", 0.1);
    let text = m.render();
    assert!(
        text.contains(
            "operon_handler_outcomes_total{handler=\"a \\\"b\\\"\\\\c\",outcome=\"success\"} 1"
        ),
        "{text}"
    );
}

#[test]
fn the_counts_also_feed_the_overviews_charts() {
    let m = Metrics::default();
    m.cycle();
    m.cycle();
    m.handler("h", "retry", 0.1);
    m.handler("h", "failure", 0.1);
    m.handler("h", "error", 0.1);
    m.handler("h", "success", 0.1);
    m.queue(3);
    m.queue(-1);
    m.event_to_cycle("widgets", Duration::from_millis(4));
    let charts = m.charts();
    let points = &charts.points;
    assert_eq!(points.len(), crate::core::views::series::POINTS);
    // The counts land in the last point (or the one before, at a step's edge).
    let sum = |f: fn(&crate::core::views::ChartPoint) -> f64| points.iter().map(f).sum::<f64>();
    let step = charts.step_seconds as f64;
    assert_eq!(sum(|p| p.handled_per_s) * step, 2.0);
    assert_eq!(sum(|p| p.retries_per_s) * step, 1.0);
    assert_eq!(sum(|p| p.errors_per_s) * step, 2.0);
    assert_eq!(points.iter().map(|p| p.queue_depth).max(), Some(3));
    assert!(points.iter().any(|p| p.p50_ms == Some(5.0)));
}
