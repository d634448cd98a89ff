//! Logging in with the handler services' credentials (`--login`; Kopf's `@kopf.on.login`):
//! why the core logs in, and when it renews credentials before they expire. Performed by
//! `runtime::login`.

use std::time::Duration;

/// Why the core logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// At start.
    Start,
    /// The API server answered 401 to the current credentials.
    Unauthorized,
    /// The current credentials expire soon.
    Expiring,
}

impl Reason {
    /// The reason as the `Login` call names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Unauthorized => "unauthorized",
            Reason::Expiring => "expiring",
        }
    }
}

/// After a failed renewal before the expiration, the next try comes this much later (not in a
/// loop).
pub const RENEWAL_RETRY: Duration = Duration::from_secs(5);

/// When to log in again before `expiration`: a tenth of what is left, between 1 and 60 seconds
/// early (at once if it is past).
pub fn renewal_delay(now: jiff::Timestamp, expiration: jiff::Timestamp) -> Duration {
    let left = Duration::try_from(expiration.duration_since(now)).unwrap_or(Duration::ZERO);
    let early = (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    left.saturating_sub(early)
}

/// Whether a login for a request that failed with the credentials of generation `seen` is still
/// needed: not when another login renewed them meanwhile (one login for many failed requests).
pub fn still_needed(seen: u64, current: u64) -> bool {
    seen == current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_a_tenth_early_within_bounds() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| jiff::Timestamp::from_second(1_000_000 + s).unwrap();
        assert_eq!(renewal_delay(now, at(100)), Duration::from_secs(90));
        assert_eq!(
            renewal_delay(now, at(5)),
            Duration::from_secs(4),
            "at least 1 s early"
        );
        assert_eq!(
            renewal_delay(now, at(3600)),
            Duration::from_secs(3540),
            "at most 60 s early"
        );
        assert_eq!(
            renewal_delay(now, at(-5)),
            Duration::ZERO,
            "expired: at once"
        );
    }

    #[test]
    fn one_login_serves_every_request_that_failed_before_it() {
        assert!(still_needed(3, 3));
        assert!(!still_needed(3, 4));
        assert_eq!(Reason::Unauthorized.as_str(), "unauthorized");
    }
}
