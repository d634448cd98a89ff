//! What the tests of more than one core share (`tests/tests/replicas.rs`: leader election;
//! `tests/tests/sharding.rs`: shards): the Lease timings, wall-clock helpers, and [`Calls`] —
//! the handler calls of the example service's ledger judged against what was stored on the
//! objects, across takeovers and handovers.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::kopf::{diff_base_essence, record};
use crate::{Entries, History};

/// The Lease timing of the tests of more than one core: `(duration, renew deadline, retry
/// period)` in seconds, short (4, 3, 1) so that takeovers are quick; `OPERON_E2E_LEASE=15,10,2`
/// runs them with the defaults (controller-runtime's).
pub fn lease_timing() -> (u64, u64, u64) {
    std::env::var("OPERON_E2E_LEASE")
        .ok()
        .and_then(|s| {
            let v: Vec<u64> = s.split(',').filter_map(|p| p.trim().parse().ok()).collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2]))
        })
        .unwrap_or((4, 3, 1))
}

/// `operon run`'s flags for the Lease timing `(duration, renew deadline, retry period)`.
pub fn lease_args((duration, renew, retry): (u64, u64, u64)) -> Vec<String> {
    [
        ("--lease-duration", duration),
        ("--renew-deadline", renew),
        ("--retry-period", retry),
    ]
    .into_iter()
    .flat_map(|(flag, secs)| [flag.to_owned(), secs.to_string()])
    .collect()
}

/// Now, in Unix seconds (the ledger's clock).
pub fn unix_now() -> f64 {
    unix(SystemTime::now())
}

/// `time` in Unix seconds (the ledger's clock).
pub fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The handler calls judged against what was stored on the objects (the test's own watch):
/// a call made after its handler's success was persisted is a **re-run** (never allowed); two
/// successes for one object, handler and change whose first was not persisted yet are the
/// documented at-least-once window — allowed only with a kill between the first call's end and
/// the second's start (the answer came back, the PATCH never happened).
///
/// The handlers judged: the creation handlers `c1` and `c2` (once per object) and the update
/// handler `u1` (once per generation, i.e. per change of `spec.field`).
#[derive(Debug)]
pub struct Calls {
    /// Calls made after their success was persisted.
    pub reruns: Vec<String>,
    /// Repeated successes with a kill between them.
    pub at_least_once: usize,
    /// Repeated successes with no kill between them.
    pub unexplained: Vec<String>,
    /// Successes in all.
    pub successes: usize,
}

impl Calls {
    /// Judges `ledger` (one service's, or several merged) against `history`; `kills` are the
    /// Unix times of the SIGKILLs of cores.
    pub fn judge(history: &History, ledger: &Entries, kills: &[f64]) -> Calls {
        // The key of a change: create handlers once per object; u1 once per generation.
        let key = |uid: &str, handler: &str, generation: i64| {
            let generation = if handler == "u1" { generation } else { 0 };
            (uid.to_owned(), handler.to_owned(), generation)
        };
        // spec.field of each generation of each object (by uid), and when each success was
        // first persisted.
        let mut fields: HashMap<String, BTreeMap<i64, Value>> = HashMap::new();
        let mut persisted: HashMap<(String, String, i64), f64> = HashMap::new();
        for observed in history.all() {
            if observed.deleted {
                continue;
            }
            let o = &observed.object;
            let uid = o.uid().unwrap_or_default();
            let generation = o.metadata.generation.unwrap_or(0);
            let own = fields.entry(uid.clone()).or_default();
            own.insert(generation, o.data["spec"]["field"].clone());
            let base = diff_base_essence(o);
            let at = unix(observed.at);
            for h in ["c1", "c2"] {
                let done =
                    base.is_some() || record(o, h).is_some_and(|r| r["success"] == json!(true));
                if done {
                    persisted.entry(key(&uid, h, 0)).or_insert(at);
                }
            }
            // u1's change of generation g is handled once the diff-base holds g's field value
            // (or its record says success while the cycle runs).
            if record(o, "u1").is_some_and(|r| r["success"] == json!(true)) {
                persisted.entry(key(&uid, "u1", generation)).or_insert(at);
            }
            if let Some(base) = &base {
                for (g, field) in own.range(..=generation) {
                    if base["spec"]["field"] == *field {
                        persisted.entry(key(&uid, "u1", *g)).or_insert(at);
                    }
                }
            }
        }
        let mut reruns = Vec::new();
        let mut by_change: HashMap<(String, String, i64), Vec<(f64, f64)>> = HashMap::new();
        let mut successes = 0;
        for e in ledger.iter() {
            let k = key(
                e.uid.as_deref().unwrap_or_default(),
                &e.handler,
                e.generation.unwrap_or(0),
            );
            let started = e.started.unwrap_or(e.ts);
            if let Some(at) = persisted.get(&k) {
                let rerun = if e.outcome == "cancelled" {
                    started > *at
                } else {
                    e.ts > *at
                };
                if rerun {
                    reruns.push(format!(
                        "{e} (started {started:.3}) — after its success was persisted at {at:.3}"
                    ));
                }
            }
            if e.outcome == "success" {
                successes += 1;
                by_change.entry(k).or_default().push((started, e.ts));
            }
        }
        let mut at_least_once = 0;
        let mut unexplained = Vec::new();
        for (k, mut calls) in by_change {
            calls.sort_by(|a, b| a.0.total_cmp(&b.0));
            for pair in calls.windows(2) {
                let (earlier_end, later_start) = (pair[0].1, pair[1].0);
                if kills
                    .iter()
                    .any(|k| *k >= earlier_end - 0.05 && *k <= later_start + 0.05)
                {
                    at_least_once += 1;
                } else {
                    unexplained.push(format!("{k:?}: successes at {pair:?} with no kill between"));
                }
            }
        }
        Calls {
            reruns,
            at_least_once,
            unexplained,
            successes,
        }
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "{} successes, persisted re-runs: {}, at-least-once re-runs (each after a kill): {}, unexplained: {}",
            self.successes,
            self.reruns.len(),
            self.at_least_once,
            self.unexplained.len()
        )
    }

    /// Panics with the offending calls unless there are no re-runs and no unexplained repeats.
    ///
    /// # Panics
    /// See above.
    pub fn assert_clean(&self) {
        assert!(
            self.reruns.is_empty() && self.unexplained.is_empty(),
            "continuity broken across takeovers:\ncalls after a persisted success:\n  {}\nrepeated successes without a kill between:\n  {}",
            self.reruns.join("\n  "),
            self.unexplained.join("\n  ")
        );
    }
}
