//! Conversions at the gRPC edge: durations, timestamps and JSON bytes.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// A std duration as a protobuf duration (saturating at `i64::MAX` seconds).
pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }
}

/// A protobuf duration as a std duration; negative ones are zero.
pub(crate) fn from_duration(d: &prost_types::Duration) -> Duration {
    let seconds = u64::try_from(d.seconds).unwrap_or_default();
    let nanos = u32::try_from(d.nanos).unwrap_or_default();
    Duration::new(seconds, 0) + Duration::from_nanos(u64::from(nanos))
}

/// A protobuf timestamp as a system time (`None` when out of range).
pub(crate) fn time(t: &prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

/// Optional JSON bytes: empty means absent.
///
/// # Errors
/// The field's name and the parser's message when the bytes are not JSON.
pub(crate) fn optional_json(field: &str, bytes: &[u8]) -> Result<Option<Value>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|error| format!("{field} is not valid JSON: {error}"))
}

/// JSON bytes that must hold an object (a Kubernetes object).
///
/// # Errors
/// The field's name and what is wrong.
pub(crate) fn object_json(field: &str, bytes: &[u8]) -> Result<Value, String> {
    match optional_json(field, bytes)? {
        Some(value @ Value::Object(_)) => Ok(value),
        Some(_) => Err(format!("{field} must be a JSON object")),
        None => Err(format!("{field} is empty")),
    }
}

/// A value as JSON bytes.
pub(crate) fn to_json(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        let d = Duration::from_millis(2500);
        assert_eq!(from_duration(&duration(d)), d);
        assert_eq!(
            from_duration(&prost_types::Duration {
                seconds: -3,
                nanos: 0
            }),
            Duration::ZERO
        );
    }

    #[test]
    fn json_fields() {
        assert_eq!(optional_json("old_json", b"").unwrap(), None);
        assert!(
            optional_json("old_json", b"{")
                .unwrap_err()
                .starts_with("old_json is not valid JSON")
        );
        assert!(object_json("body_json", b"[1]").is_err());
        assert!(object_json("body_json", b"").is_err());
        assert!(object_json("body_json", br#"{"a":1}"#).is_ok());
    }
}
