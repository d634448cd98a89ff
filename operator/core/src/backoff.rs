//! The one backoff: exponential, doubling from a first delay up to a cap. The runtime's retry
//! loops take their delays from here (through `backon`), and so do the per-object error
//! backoffs of the sync and task controllers.

use std::time::Duration;

/// Doubling delays from `first`, never above `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub first: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Backoff {
    /// Waiting for a service or an API server to come up: 200 ms to 10 s.
    pub const SERVICE: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    /// Waiting for a resource to be served (a CRD to be installed): 1 s to 15 s.
    pub const DISCOVERY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(15));
    /// A failing object (a sync or a task that errs): 500 ms to 5 min.
    pub const OBJECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(300));

    /// A backoff from `first` to `cap`.
    #[must_use]
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Backoff { first, cap }
    }

    /// The delay after `failures` consecutive failures (the first failure waits `first`; zero
    /// failures wait nothing).
    #[must_use]
    pub fn after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = (failures - 1).min(30);
        self.first
            .checked_mul(1u32 << exp)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The delay that follows `delay`: twice as long, capped.
    #[must_use]
    pub fn next(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).clamp(self.first, self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_and_is_capped() {
        let b = Backoff::OBJECT;
        assert_eq!(b.after(0), Duration::ZERO);
        assert_eq!(b.after(1), Duration::from_millis(500));
        assert_eq!(b.after(2), Duration::from_secs(1));
        assert_eq!(b.after(4), Duration::from_secs(4));
        assert_eq!(b.after(20), Duration::from_secs(300));
        assert_eq!(b.after(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn next_doubles_within_the_bounds() {
        let b = Backoff::DISCOVERY;
        assert_eq!(b.next(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(b.next(Duration::from_secs(4)), Duration::from_secs(8));
        assert_eq!(b.next(Duration::from_secs(10)), Duration::from_secs(15));
    }
}
