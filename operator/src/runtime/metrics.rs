//! Prometheus metrics, rendered by hand (a handful of counters and gauges need no library).

use crate::runtime::kit::Locked;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Handling cycles run.
pub const CYCLES: &str = "operon_cycles_total";
/// Handler call outcomes, by handler and outcome.
pub const HANDLER_OUTCOMES: &str = "operon_handler_outcomes_total";
/// Time spent in handler calls.
pub const HANDLER_SECONDS: &str = "operon_handler_duration_seconds";
/// Objects waiting for a worker.
pub const QUEUE_DEPTH: &str = "operon_queue_depth";
/// Handler calls in flight.
pub const INFLIGHT: &str = "operon_inflight_calls";
/// API server requests made by the core, by verb and status code.
pub const API_REQUESTS: &str = "operon_api_requests_total";
/// Sync and Finalize calls, by sync registration and outcome.
pub const SYNC_CALLS: &str = "operon_sync_calls_total";
/// Failed syncs, by sync registration and parent.
pub const SYNC_ERRORS: &str = "operon_sync_errors_total";
/// Objects known to the core.
pub const OBJECTS: &str = "operon_objects";
/// Daemons running (one per object and daemon handler).
pub const DAEMONS: &str = "operon_daemons_running";

/// The core's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    cycles: AtomicU64,
    queue_depth: AtomicI64,
    inflight: AtomicI64,
    objects: AtomicI64,
    daemons: AtomicI64,
    outcomes: Mutex<BTreeMap<(String, &'static str), u64>>,
    handler_seconds: Mutex<(f64, u64)>,
    api: Mutex<BTreeMap<(&'static str, u16), u64>>,
    sync_calls: Mutex<BTreeMap<(String, &'static str), u64>>,
    sync_errors: Mutex<BTreeMap<(String, String, String), u64>>,
}

/// Adds one to a labelled counter.
fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut map = map.locked();
    *map.entry(key).or_default() += 1;
}

impl Metrics {
    /// A cycle ran.
    pub fn cycle(&self) {
        self.cycles.fetch_add(1, Ordering::Relaxed);
    }
    /// A handler call ended with `outcome` after `seconds`.
    pub fn handler(&self, handler: &str, outcome: &'static str, seconds: f64) {
        bump(&self.outcomes, (handler.to_owned(), outcome));
        let mut s = self.handler_seconds.locked();
        s.0 += seconds;
        s.1 += 1;
    }
    /// An API request was answered with `code` (0: no answer).
    pub fn api(&self, verb: &'static str, code: u16) {
        bump(&self.api, (verb, code));
    }
    /// A sync of registration `sync` ended with `outcome`.
    pub fn sync_call(&self, sync: &str, outcome: &'static str) {
        bump(&self.sync_calls, (sync.to_owned(), outcome));
    }
    /// A sync of one parent failed.
    pub fn sync_error(&self, sync: &str, namespace: &str, name: &str) {
        bump(
            &self.sync_errors,
            (sync.to_owned(), namespace.to_owned(), name.to_owned()),
        );
    }
    /// Changes the queue depth.
    pub fn queue(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Ordering::Relaxed);
    }
    /// Changes the number of calls in flight.
    pub fn inflight(&self, delta: i64) {
        self.inflight.fetch_add(delta, Ordering::Relaxed);
    }
    /// Changes the number of running daemons.
    pub fn daemons(&self, delta: i64) {
        self.daemons.fetch_add(delta, Ordering::Relaxed);
    }
    /// Daemons running now.
    pub fn daemons_running(&self) -> i64 {
        self.daemons.load(Ordering::Relaxed)
    }
    /// Changes the number of known objects.
    pub fn objects(&self, delta: i64) {
        self.objects.fetch_add(delta, Ordering::Relaxed);
    }
    /// Objects waiting for a worker now.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.load(Ordering::Relaxed)
    }
    /// Handler calls in flight now.
    pub fn inflight_calls(&self) -> i64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let _ = writeln!(
            out,
            "# HELP {CYCLES} Handling cycles run.\n# TYPE {CYCLES} counter\n{CYCLES} {}",
            self.cycles.load(Ordering::Relaxed)
        );
        gauge(
            &mut out,
            QUEUE_DEPTH,
            "Objects waiting for a worker.",
            self.queue_depth(),
        );
        gauge(
            &mut out,
            INFLIGHT,
            "Handler calls in flight.",
            self.inflight_calls(),
        );
        gauge(
            &mut out,
            OBJECTS,
            "Objects known to the core.",
            self.objects.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            DAEMONS,
            "Daemons running.",
            self.daemons_running(),
        );
        let _ = writeln!(
            out,
            "# HELP {HANDLER_OUTCOMES} Handler call outcomes.\n# TYPE {HANDLER_OUTCOMES} counter"
        );
        for ((handler, outcome), n) in self.outcomes.locked().iter() {
            let handler = handler.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "{HANDLER_OUTCOMES}{{handler=\"{handler}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let (sum, count) = *self.handler_seconds.locked();
        let _ = writeln!(
            out,
            "# HELP {HANDLER_SECONDS} Time spent in handler calls.\n# TYPE {HANDLER_SECONDS} summary\n\
             {HANDLER_SECONDS}_sum {sum}\n{HANDLER_SECONDS}_count {count}"
        );
        let _ = writeln!(
            out,
            "# HELP {API_REQUESTS} API server requests by the core.\n# TYPE {API_REQUESTS} counter"
        );
        for ((verb, code), n) in self.api.locked().iter() {
            let _ = writeln!(out, "{API_REQUESTS}{{verb=\"{verb}\",code=\"{code}\"}} {n}");
        }
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "# HELP {SYNC_CALLS} Sync and Finalize calls.\n# TYPE {SYNC_CALLS} counter"
        );
        for ((sync, outcome), n) in self.sync_calls.locked().iter() {
            let sync = esc(sync);
            let _ = writeln!(
                out,
                "{SYNC_CALLS}{{sync=\"{sync}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP {SYNC_ERRORS} Failed syncs per parent.\n# TYPE {SYNC_ERRORS} counter"
        );
        for ((sync, namespace, name), n) in self.sync_errors.locked().iter() {
            let (sync, namespace, name) = (esc(sync), esc(namespace), esc(name));
            let _ = writeln!(
                out,
                "{SYNC_ERRORS}{{sync=\"{sync}\",namespace=\"{namespace}\",name=\"{name}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            text.contains(
                "operon_handler_outcomes_total{handler=\"create_fn\",outcome=\"success\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("operon_handler_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("operon_api_requests_total{verb=\"patch\",code=\"200\"} 1"),
            "{text}"
        );
    }
}
