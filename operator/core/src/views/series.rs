//! The overview's live charts: the core's own counters over the last 15 minutes, in a ring of
//! fixed size kept in memory (no Prometheus needed). The runtime counts into it as it works
//! ([`Series::cycle`], [`Series::outcome`], [`Series::latency`], [`Series::queue`]); the
//! dashboard reads [`Series::charts`]. Memory: [`POINTS`] slots of a few dozen counters, whatever
//! the number of objects.

use serde::Serialize;

/// Seconds per point of the charts.
pub const STEP_SECONDS: u64 = 5;
/// Points kept: 15 minutes.
pub const POINTS: usize = 180;

/// Upper bounds (seconds) of the latency buckets: 1 ms … 60 s, then everything above.
const LATENCY_BOUNDS: [f64; 16] = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    f64::INFINITY,
];

/// What a handler call counts as on the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// An error: a permanent failure, or a call that failed.
    Error,
    /// A temporary error: the handler is retried.
    Retry,
    /// Anything else (success, waiting, not matched): not counted apart.
    Other,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The step this slot holds (`unix seconds / STEP_SECONDS`); slots of older steps are stale.
    step: u64,
    cycles: u32,
    errors: u32,
    retries: u32,
    queue_max: i64,
    queue_last: i64,
    queue_seen: bool,
    latency: [u32; LATENCY_BOUNDS.len()],
}

/// The ring of counters.
#[derive(Debug, Clone)]
pub struct Series {
    slots: Box<[Slot]>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            slots: vec![Slot::default(); POINTS].into_boxed_slice(),
        }
    }
}

/// One point of the charts: a [`STEP_SECONDS`]-long step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChartPoint {
    /// The step's start (unix seconds).
    pub at: u64,
    /// Handling cycles per second (handled changes).
    pub handled_per_s: f64,
    /// Handler errors per second (permanent failures and failed calls).
    pub errors_per_s: f64,
    /// Handler retries per second (temporary errors).
    pub retries_per_s: f64,
    /// The deepest the queue was in the step (objects waiting for a worker).
    pub queue_depth: i64,
    /// The median wait from a watch event to its object's cycle, in milliseconds (`None`: no
    /// event in the step). Estimated from buckets: the bucket's upper bound.
    pub p50_ms: Option<f64>,
    /// The 99th percentile of the same wait, in milliseconds.
    pub p99_ms: Option<f64>,
}

/// The charts' data: [`POINTS`] points, oldest first, the last one the step running now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Charts {
    /// Seconds per point.
    pub step_seconds: u64,
    /// The points, oldest first.
    pub points: Vec<ChartPoint>,
}

impl Series {
    fn slot(&mut self, now: u64) -> &mut Slot {
        let step = now / STEP_SECONDS;
        let index = (step % POINTS as u64) as usize;
        let slot = &mut self.slots[index];
        if slot.step != step {
            *slot = Slot {
                step,
                ..Slot::default()
            };
        }
        slot
    }

    /// Counts a handling cycle at `now` (unix seconds).
    pub fn cycle(&mut self, now: u64) {
        let slot = self.slot(now);
        slot.cycles = slot.cycles.saturating_add(1);
    }

    /// Counts a handler call's outcome at `now`.
    pub fn outcome(&mut self, now: u64, counted: Counted) {
        let slot = self.slot(now);
        match counted {
            Counted::Error => slot.errors = slot.errors.saturating_add(1),
            Counted::Retry => slot.retries = slot.retries.saturating_add(1),
            Counted::Other => {}
        }
    }

    /// Counts the wait from a watch event to its object's cycle at `now`.
    pub fn latency(&mut self, now: u64, seconds: f64) {
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len() - 1);
        let slot = self.slot(now);
        slot.latency[bucket] = slot.latency[bucket].saturating_add(1);
    }

    /// Notes the queue's depth at `now`.
    pub fn queue(&mut self, now: u64, depth: i64) {
        let slot = self.slot(now);
        slot.queue_max = if slot.queue_seen {
            slot.queue_max.max(depth)
        } else {
            depth
        };
        slot.queue_last = depth;
        slot.queue_seen = true;
    }

    /// The charts at `now`: the last [`POINTS`] steps, oldest first. A step with no queue change
    /// shows the depth the queue was left at before it.
    pub fn charts(&self, now: u64) -> Charts {
        let current = now / STEP_SECONDS;
        let first = current.saturating_sub(POINTS as u64 - 1);
        // The depth before the window: the newest stale slot's (older than the window) is gone,
        // so it starts at the first seen depth in the window, or 0.
        let mut depth = 0;
        let step = STEP_SECONDS as f64;
        let points = (first..=current)
            .map(|s| {
                let slot = self.slots[(s % POINTS as u64) as usize];
                let at = s * STEP_SECONDS;
                if slot.step != s {
                    return ChartPoint {
                        at,
                        queue_depth: depth,
                        ..ChartPoint::default()
                    };
                }
                if slot.queue_seen {
                    depth = slot.queue_last;
                }
                ChartPoint {
                    at,
                    handled_per_s: f64::from(slot.cycles) / step,
                    errors_per_s: f64::from(slot.errors) / step,
                    retries_per_s: f64::from(slot.retries) / step,
                    queue_depth: if slot.queue_seen {
                        slot.queue_max
                    } else {
                        depth
                    },
                    p50_ms: quantile(&slot.latency, 0.5),
                    p99_ms: quantile(&slot.latency, 0.99),
                }
            })
            .collect();
        Charts {
            step_seconds: STEP_SECONDS,
            points,
        }
    }
}

/// The `q` quantile of bucket counts, as the upper bound (ms) of the bucket it falls in; the
/// open last bucket counts as its lower bound.
fn quantile(counts: &[u32; LATENCY_BOUNDS.len()], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in counts.iter().enumerate() {
        seen += u64::from(*count);
        if seen >= rank {
            let bound = if LATENCY_BOUNDS[i].is_finite() {
                LATENCY_BOUNDS[i]
            } else {
                LATENCY_BOUNDS[i - 1]
            };
            return Some(bound * 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn counts_land_in_their_step_and_read_as_rates() {
        let mut s = Series::default();
        for _ in 0..10 {
            s.cycle(T0);
        }
        s.outcome(T0 + 1, Counted::Error);
        s.outcome(T0 + 2, Counted::Retry);
        s.outcome(T0 + 2, Counted::Retry);
        s.outcome(T0 + 3, Counted::Other);
        s.cycle(T0 + STEP_SECONDS);
        let charts = s.charts(T0 + STEP_SECONDS);
        assert_eq!(charts.points.len(), POINTS);
        assert_eq!(charts.step_seconds, STEP_SECONDS);
        let last = &charts.points[POINTS - 1];
        let before = &charts.points[POINTS - 2];
        assert_eq!(last.at, (T0 + STEP_SECONDS) / STEP_SECONDS * STEP_SECONDS);
        assert_eq!(before.handled_per_s, 2.0);
        assert_eq!(before.errors_per_s, 0.2);
        assert_eq!(before.retries_per_s, 0.4);
        assert_eq!(last.handled_per_s, 0.2);
        assert!(
            charts.points[..POINTS - 2]
                .iter()
                .all(|p| p.handled_per_s == 0.0)
        );
    }

    #[test]
    fn the_ring_forgets_what_is_older_than_the_window() {
        let mut s = Series::default();
        s.cycle(T0);
        let later = T0 + STEP_SECONDS * POINTS as u64;
        s.cycle(later); // the same slot, a new step: the old count is gone
        let charts = s.charts(later);
        assert_eq!(
            charts
                .points
                .iter()
                .filter(|p| p.handled_per_s > 0.0)
                .count(),
            1
        );
        assert_eq!(charts.points[POINTS - 1].handled_per_s, 0.2);
        // Long idle: nothing at all.
        let idle = s.charts(later + 10 * STEP_SECONDS * POINTS as u64);
        assert!(idle.points.iter().all(|p| *p
            == ChartPoint {
                at: p.at,
                ..ChartPoint::default()
            }));
    }

    #[test]
    fn latency_quantiles_come_from_the_buckets() {
        let mut s = Series::default();
        for _ in 0..98 {
            s.latency(T0, 0.004); // ≤ 5 ms
        }
        s.latency(T0, 0.2); // ≤ 250 ms
        s.latency(T0, 100.0); // above 60 s
        let p = &s.charts(T0).points[POINTS - 1];
        assert_eq!(p.p50_ms, Some(5.0));
        assert_eq!(p.p99_ms, Some(250.0));
        assert_eq!(s.charts(T0).points[0].p50_ms, None);
        let mut slow = Series::default();
        slow.latency(T0, 100.0);
        assert_eq!(slow.charts(T0).points[POINTS - 1].p99_ms, Some(60_000.0));
    }

    #[test]
    fn the_queue_shows_its_deepest_and_carries_its_depth_over_quiet_steps() {
        let mut s = Series::default();
        s.queue(T0, 3);
        s.queue(T0 + 1, 7);
        s.queue(T0 + 2, 4);
        let charts = s.charts(T0 + 3 * STEP_SECONDS);
        let tail: Vec<i64> = charts.points[POINTS - 4..]
            .iter()
            .map(|p| p.queue_depth)
            .collect();
        assert_eq!(tail, [7, 4, 4, 4]);
    }
}
