//! The core's metrics, exposed on `/metrics` in the OpenMetrics text format by the Prometheus
//! project's client (`prometheus-client`): counters, gauges and histograms with buckets.
//!
//! The names below are the exposed ones (what dashboards, alerts and the tests read); a counter is
//! registered without its `_total`, which the encoder appends, and a histogram in seconds without
//! its `_seconds`, which the encoder appends from the unit.
//!
//! The same counts also go into a small ring kept in memory ([`Series`], 15 minutes), which the
//! dashboard's overview draws as live charts without a Prometheus.

use std::sync::Mutex;
use std::time::Duration;

use jiff::SignedDuration;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::core::metrics::task_outcome;
use crate::core::tasks::Phase;
use crate::core::views::{Charts, Counted, Series};
use crate::runtime::kit::Locked;

/// Handling cycles run.
pub(crate) const CYCLES: &str = "operon_cycles_total";
/// Handler call outcomes, by handler and outcome.
pub(crate) const HANDLER_OUTCOMES: &str = "operon_handler_outcomes_total";
/// Time spent in handler calls, by handler (a histogram).
pub(crate) const HANDLER_SECONDS: &str = "operon_handler_duration_seconds";
/// From a watch event's arrival at the queue to the start of its object's cycle, by resource (a
/// histogram).
pub(crate) const EVENT_TO_CYCLE: &str = "operon_event_to_cycle_seconds";
/// Objects waiting for a worker.
pub(crate) const QUEUE_DEPTH: &str = "operon_queue_depth";
/// Handler calls in flight.
pub(crate) const INFLIGHT: &str = "operon_inflight_calls";
/// API server requests made by the core, by verb and status code.
pub(crate) const API_REQUESTS: &str = "operon_api_requests_total";
/// Sync and Finalize calls, by sync registration and outcome.
pub(crate) const SYNC_CALLS: &str = "operon_sync_calls_total";
/// Failed syncs, by sync registration and parent.
pub(crate) const SYNC_ERRORS: &str = "operon_sync_errors_total";
/// Objects known to the core.
pub(crate) const OBJECTS: &str = "operon_objects";
/// Daemons running (one per object and daemon handler).
pub(crate) const DAEMONS: &str = "operon_daemons_running";
/// Tasks ended, by task registration and outcome (`succeeded`, `failed`, `cancelled`).
pub(crate) const TASK_RUNS: &str = "operon_task_runs_total";
/// From a task's start to its end, by task registration (a histogram).
pub(crate) const TASK_SECONDS: &str = "operon_task_duration_seconds";
/// From a task's creation to its first start, by task registration (a histogram).
pub(crate) const TASK_WAIT_SECONDS: &str = "operon_task_wait_seconds";
/// Tasks running now, by task registration.
pub(crate) const TASKS_RUNNING: &str = "operon_tasks_running";
/// 1 while this replica handles objects; 0 while it is a standby or paused (leader election,
/// Kopf's peering).
pub(crate) const ACTIVE: &str = "operon_active";
/// Times this replica started or stopped handling because of leader election or peering, by
/// `change` (`started`, `stopped`).
pub(crate) const ROLE_CHANGES: &str = "operon_role_changes_total";
/// Sharding: the objects this shard owns now (labelled for it).
pub(crate) const SHARD_OBJECTS: &str = "operon_shard_objects";
/// Sharding: the live members of the ring as this shard sees them.
pub(crate) const SHARD_MEMBERS: &str = "operon_shard_members";
/// Sharding: objects this shard took (`claimed`: unassigned or left by a dead shard) or handed
/// over (`handed_over`), by `change`.
pub(crate) const SHARD_MOVES: &str = "operon_shard_moves_total";

/// The `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of a handler call: 5 ms … 60 s.
const HANDLER_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of the wait for a cycle: 1 ms … 60 s (a backlog after a relist waits long).
const EVENT_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of a task's run and of its wait: 100 ms … 1 h (tasks are operations, not calls).
const TASK_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// A histogram family's constructor (a plain function: the family stores its type).
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerOutcome {
    handler: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabel {
    handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiRequest {
    verb: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncOutcome {
    sync: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncParent {
    sync: String,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskOutcome {
    task: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleChange {
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardMove {
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    task: String,
}

/// The core's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    cycles: Counter,
    queue_depth: Gauge,
    inflight: Gauge,
    objects: Gauge,
    daemons: Gauge,
    outcomes: Family<HandlerOutcome, Counter>,
    handler_seconds: Histograms<HandlerLabel>,
    event_to_cycle: Histograms<ResourceLabel>,
    api: Family<ApiRequest, Counter>,
    sync_calls: Family<SyncOutcome, Counter>,
    sync_errors: Family<SyncParent, Counter>,
    task_runs: Family<TaskOutcome, Counter>,
    task_seconds: Histograms<TaskLabel>,
    task_wait: Histograms<TaskLabel>,
    tasks_running: Family<TaskLabel, Gauge>,
    active: Gauge,
    role_changes: Family<RoleChange, Counter>,
    shard_objects: Gauge,
    shard_members: Gauge,
    shard_moves: Family<ShardMove, Counter>,
    /// The overview's charts.
    series: Mutex<Series>,
}

/// Now, in unix seconds (the charts' clock).
fn unix_now() -> u64 {
    jiff::Timestamp::now().as_second().max(0).unsigned_abs()
}

/// A family name as registered: the exposed `name` without the `suffix` the encoder adds.
fn base<'a>(name: &'a str, suffix: &str) -> &'a str {
    name.strip_suffix(suffix).unwrap_or(name)
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            cycles: Counter::default(),
            queue_depth: Gauge::default(),
            inflight: Gauge::default(),
            objects: Gauge::default(),
            daemons: Gauge::default(),
            outcomes: Family::default(),
            handler_seconds: Family::new_with_constructor(|| Histogram::new(HANDLER_BUCKETS)),
            event_to_cycle: Family::new_with_constructor(|| Histogram::new(EVENT_BUCKETS)),
            api: Family::default(),
            sync_calls: Family::default(),
            sync_errors: Family::default(),
            task_runs: Family::default(),
            task_seconds: Family::new_with_constructor(|| Histogram::new(TASK_BUCKETS)),
            task_wait: Family::new_with_constructor(|| Histogram::new(TASK_BUCKETS)),
            tasks_running: Family::default(),
            active: Gauge::default(),
            role_changes: Family::default(),
            shard_objects: Gauge::default(),
            shard_members: Gauge::default(),
            shard_moves: Family::default(),
            series: Mutex::default(),
        };
        m.registered()
    }
}

impl Metrics {
    /// Registers every metric with the registry (the registry holds clones: they share values).
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        let counter = |name| base(name, "_total");
        let seconds = |name| base(name, "_seconds");
        r.register(counter(CYCLES), "Handling cycles run", self.cycles.clone());
        r.register(
            QUEUE_DEPTH,
            "Objects waiting for a worker",
            self.queue_depth.clone(),
        );
        r.register(INFLIGHT, "Handler calls in flight", self.inflight.clone());
        r.register(OBJECTS, "Objects known to the core", self.objects.clone());
        r.register(DAEMONS, "Daemons running", self.daemons.clone());
        r.register(
            counter(HANDLER_OUTCOMES),
            "Handler call outcomes",
            self.outcomes.clone(),
        );
        r.register_with_unit(
            seconds(HANDLER_SECONDS),
            "Time spent in handler calls",
            Unit::Seconds,
            self.handler_seconds.clone(),
        );
        r.register_with_unit(
            seconds(EVENT_TO_CYCLE),
            "From a watch event's arrival at the queue to the start of its object's cycle",
            Unit::Seconds,
            self.event_to_cycle.clone(),
        );
        r.register(
            counter(API_REQUESTS),
            "API server requests by the core",
            self.api.clone(),
        );
        r.register(
            counter(SYNC_CALLS),
            "Sync and Finalize calls",
            self.sync_calls.clone(),
        );
        r.register(
            counter(SYNC_ERRORS),
            "Failed syncs per parent",
            self.sync_errors.clone(),
        );
        r.register(
            counter(TASK_RUNS),
            "Tasks ended, by outcome",
            self.task_runs.clone(),
        );
        r.register_with_unit(
            seconds(TASK_SECONDS),
            "From a task's start to its end",
            Unit::Seconds,
            self.task_seconds.clone(),
        );
        r.register_with_unit(
            seconds(TASK_WAIT_SECONDS),
            "From a task's creation to its first start",
            Unit::Seconds,
            self.task_wait.clone(),
        );
        r.register(TASKS_RUNNING, "Tasks running", self.tasks_running.clone());
        r.register(
            ACTIVE,
            "1 while this replica handles objects (leader election, peering)",
            self.active.clone(),
        );
        r.register(
            counter(ROLE_CHANGES),
            "Starts and stops of handling by leader election or peering",
            self.role_changes.clone(),
        );
        r.register(
            SHARD_OBJECTS,
            "Objects this shard owns (sharding)",
            self.shard_objects.clone(),
        );
        r.register(
            SHARD_MEMBERS,
            "Live members of the ring as this shard sees them (sharding)",
            self.shard_members.clone(),
        );
        r.register(
            counter(SHARD_MOVES),
            "Objects claimed or handed over by this shard (sharding)",
            self.shard_moves.clone(),
        );
        self
    }

    /// Sharding: this shard owns `objects` objects.
    pub(crate) fn shard_objects(&self, objects: usize) {
        self.shard_objects
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    /// Sharding: the ring has `members` live members.
    pub(crate) fn shard_members(&self, members: usize) {
        self.shard_members
            .set(i64::try_from(members).unwrap_or(i64::MAX));
    }

    /// Sharding: an object was `claimed` or `handed_over`.
    pub(crate) fn shard_move(&self, change: &'static str) {
        self.shard_moves.get_or_create(&ShardMove { change }).inc();
    }

    /// This replica handles objects (`true`) or stands by (`false`); counts the change.
    pub(crate) fn active(&self, active: bool) {
        let before = self.active.set(i64::from(active));
        if before != i64::from(active) {
            let change = if active { "started" } else { "stopped" };
            self.role_changes
                .get_or_create(&RoleChange { change })
                .inc();
        }
    }

    /// A cycle ran.
    pub(crate) fn cycle(&self) {
        self.cycles.inc();
        self.series.locked().cycle(unix_now());
    }
    /// A handler call ended with `outcome` after `seconds`.
    pub(crate) fn handler(&self, handler: &str, outcome: &'static str, seconds: f64) {
        let handler = handler.to_owned();
        self.handler_seconds
            .get_or_create(&HandlerLabel {
                handler: handler.clone(),
            })
            .observe(seconds);
        self.outcomes
            .get_or_create(&HandlerOutcome { handler, outcome })
            .inc();
        let counted = match outcome {
            "failure" | "error" => Counted::Error,
            "retry" => Counted::Retry,
            _ => Counted::Other,
        };
        self.series.locked().outcome(unix_now(), counted);
    }
    /// A cycle of an object of `resource` starts, `waited` after the first watch event it
    /// handles reached the queue.
    pub(crate) fn event_to_cycle(&self, resource: &str, waited: Duration) {
        self.event_to_cycle
            .get_or_create(&ResourceLabel {
                resource: resource.to_owned(),
            })
            .observe(waited.as_secs_f64());
        self.series
            .locked()
            .latency(unix_now(), waited.as_secs_f64());
    }
    /// An API request was answered with `code` (0: no answer).
    pub(crate) fn api(&self, verb: &'static str, code: u16) {
        self.api.get_or_create(&ApiRequest { verb, code }).inc();
    }
    /// A sync of registration `sync` ended with `outcome`.
    pub(crate) fn sync_call(&self, sync: &str, outcome: &'static str) {
        self.sync_calls
            .get_or_create(&SyncOutcome {
                sync: sync.to_owned(),
                outcome,
            })
            .inc();
    }
    /// A sync of one parent failed.
    pub(crate) fn sync_error(&self, sync: &str, namespace: &str, name: &str) {
        self.sync_errors
            .get_or_create(&SyncParent {
                sync: sync.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .inc();
    }
    /// A task of registration `task` starts running; `waited` since its creation when this is
    /// its first start (not a resumption). It counts as running until the guard is dropped.
    pub(crate) fn task_started(&self, task: &str, waited: Option<SignedDuration>) -> TaskRunning {
        let label = TaskLabel {
            task: task.to_owned(),
        };
        if let Some(waited) = waited {
            self.task_wait
                .get_or_create(&label)
                .observe(waited.as_secs_f64().max(0.0));
        }
        let gauge = self.tasks_running.get_or_create_owned(&label);
        gauge.inc();
        TaskRunning(gauge)
    }
    /// A task of registration `task` ended in `phase`, `ran` after its start (`None`: it never
    /// started).
    pub(crate) fn task_ended(&self, task: &str, phase: Phase, ran: Option<SignedDuration>) {
        let task = task.to_owned();
        if let Some(ran) = ran {
            self.task_seconds
                .get_or_create(&TaskLabel { task: task.clone() })
                .observe(ran.as_secs_f64().max(0.0));
        }
        let outcome = task_outcome(phase);
        self.task_runs
            .get_or_create(&TaskOutcome { task, outcome })
            .inc();
    }
    /// Changes the queue depth.
    pub(crate) fn queue(&self, delta: i64) {
        let depth = self.queue_depth.inc_by(delta) + delta;
        self.series.locked().queue(unix_now(), depth);
    }
    /// Changes the number of calls in flight.
    pub(crate) fn inflight(&self, delta: i64) {
        self.inflight.inc_by(delta);
    }
    /// Changes the number of running daemons.
    pub(crate) fn daemons(&self, delta: i64) {
        self.daemons.inc_by(delta);
    }
    /// Daemons running now (tests).
    #[cfg(test)]
    pub(crate) fn daemons_running(&self) -> i64 {
        self.daemons.get()
    }
    /// Changes the number of known objects.
    pub(crate) fn objects(&self, delta: i64) {
        self.objects.inc_by(delta);
    }
    /// Objects waiting for a worker now.
    pub(crate) fn queue_depth(&self) -> i64 {
        self.queue_depth.get()
    }
    /// Handler calls in flight now.
    pub(crate) fn inflight_calls(&self) -> i64 {
        self.inflight.get()
    }

    /// The overview's charts: the last 15 minutes of the counts above.
    pub(crate) fn charts(&self) -> Charts {
        self.series.locked().charts(unix_now())
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]), ending with `# EOF`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the encoder's own errors are for other writers.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %err, "Cannot encode the metrics.");
        }
        out
    }
}

/// A task counted in `operon_tasks_running` until this is dropped (also when its worker panics
/// or is aborted).
#[derive(Debug)]
pub(crate) struct TaskRunning(Gauge);

impl Drop for TaskRunning {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;
