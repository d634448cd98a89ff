//! Seconds (as written on the command line and in behaviours) to durations.

use std::time::Duration;

/// A non-negative, finite number of seconds as a [`Duration`]; `None` otherwise.
pub fn seconds(value: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(value).ok()
}

/// A non-negative, finite number of seconds as a protobuf duration; `None` otherwise.
pub fn seconds_to_proto(value: f64) -> Option<prost_types::Duration> {
    seconds(value).map(to_proto)
}

/// A [`Duration`] as a protobuf duration (saturating at `i64::MAX` seconds).
pub fn to_proto(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9, so it fits.
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts() {
        assert_eq!(seconds(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(seconds(0.0), Some(Duration::ZERO));
        assert_eq!(seconds(-1.0), None);
        assert_eq!(seconds(f64::NAN), None);
        assert_eq!(seconds(f64::INFINITY), None);
        let proto = seconds_to_proto(2.25).unwrap();
        assert_eq!((proto.seconds, proto.nanos), (2, 250_000_000));
    }
}
