//! Text forms the pages use: times, durations, counts, URLs.

use jiff::{SignedDuration, Timestamp};

use crate::listing::encode_component;

/// A stored time as the pages show it: `HH:MM:SS` on the same UTC day as `now`, else
/// `YYYY-MM-DD HH:MM`; unreadable text is shown as it is.
pub(crate) fn time(text: &str, now: Timestamp) -> String {
    match text.parse::<Timestamp>() {
        Ok(ts) if ts.strftime("%F").to_string() == now.strftime("%F").to_string() => {
            ts.strftime("%H:%M:%S").to_string()
        }
        Ok(ts) => ts.strftime("%F %H:%M").to_string(),
        Err(_) => text.to_owned(),
    }
}

/// The full form of a stored time, for a `title`: `2026-01-02 03:04:05 UTC`.
pub(crate) fn full_time(text: &str) -> String {
    match text.parse::<Timestamp>() {
        Ok(ts) => ts.strftime("%F %T UTC").to_string(),
        Err(_) => text.to_owned(),
    }
}

/// How far a stored time is from `now`: `in 5 s`, `3 min ago`, `now`.
pub(crate) fn relative(text: &str, now: Timestamp) -> Option<String> {
    let ts = text.parse::<Timestamp>().ok()?;
    let delta = ts.duration_since(now);
    let span = short_duration(delta.abs(), false);
    Some(if delta.as_secs() == 0 {
        "now".to_owned()
    } else if delta.is_negative() {
        format!("{span} ago")
    } else {
        format!("in {span}")
    })
}

/// `stopped - started` as a short duration (`850 ms`, `12 s`, `3 min 4 s`).
pub(crate) fn duration_between(started: &str, stopped: &str) -> Option<String> {
    let started = started.parse::<Timestamp>().ok()?;
    let stopped = stopped.parse::<Timestamp>().ok()?;
    let delta = stopped.duration_since(started);
    (!delta.is_negative()).then(|| short_duration(delta, true))
}

/// A short duration; `precise` shows tenths of a second below 10 s.
fn short_duration(d: SignedDuration, precise: bool) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{} ms", d.subsec_millis())
    } else if secs < 10 && precise {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{} h {} min", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600)
    }
}

/// `12345` as `12,345`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The object page's path: `/objects/<resource>/<namespace or ->/<name>`.
pub(crate) fn object_href(resource: &str, namespace: &str, name: &str) -> String {
    let resource = resource
        .split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/");
    let namespace = if namespace.is_empty() {
        "-".to_owned()
    } else {
        encode_component(namespace)
    };
    format!("/objects/{resource}/{namespace}/{}", encode_component(name))
}

/// The object page's path for a read model's key (`resource/namespace/name`).
pub(crate) fn object_path(key: &str) -> Option<String> {
    let mut parts = key.rsplitn(3, '/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let namespace = parts.next()?;
    let resource = parts.next().filter(|r| !r.is_empty())?;
    Some(object_href(resource, namespace, name))
}

/// The key of the object whose page is at `/objects/<path>` (see [`object_href`]).
pub(crate) fn key_of_path(path: &str) -> Option<String> {
    let mut parts = path.trim_matches('/').rsplitn(3, '/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let namespace = parts.next()?;
    let resource = parts.next().filter(|r| !r.is_empty())?;
    let namespace = if namespace == "-" { "" } else { namespace };
    Some(format!("{resource}/{namespace}/{name}"))
}

/// The Jaeger UI's page of a trace, if the base URL is set and the id is a trace id.
pub(crate) fn trace_href(jaeger_ui: Option<&str>, trace_id: &str) -> Option<String> {
    let base = jaeger_ui?;
    let valid = (16..=32).contains(&trace_id.len())
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0');
    valid.then(|| {
        format!(
            "{}/trace/{}",
            base.trim_end_matches('/'),
            trace_id.to_ascii_lowercase()
        )
    })
}

/// Whether a resource (`plural.group/version`) is the core group's Secrets, whose contents the
/// dashboard never shows.
pub(crate) use operon_core::views::is_secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_short_today_and_dated_otherwise() {
        let now: Timestamp = "2026-03-04T10:00:00Z".parse().unwrap();
        assert_eq!(time("2026-03-04T09:08:07.123Z", now), "09:08:07");
        assert_eq!(time("2026-03-03T23:59:00+00:00", now), "2026-03-03 23:59");
        assert_eq!(time("garbage", now), "garbage");
        assert_eq!(full_time("2026-03-04T09:08:07Z"), "2026-03-04 09:08:07 UTC");
        assert_eq!(
            relative("2026-03-04T10:00:05Z", now).as_deref(),
            Some("in 5 s")
        );
        assert_eq!(
            relative("2026-03-04T09:57:00Z", now).as_deref(),
            Some("3 min 0 s ago")
        );
        assert_eq!(
            relative("2026-03-04T10:00:00.2Z", now).as_deref(),
            Some("now")
        );
        assert_eq!(
            duration_between("2026-03-04T10:00:00Z", "2026-03-04T10:00:00.25Z").as_deref(),
            Some("250 ms")
        );
        assert_eq!(
            duration_between("2026-03-04T10:00:00Z", "2026-03-04T12:30:00Z").as_deref(),
            Some("2 h 30 min")
        );
        assert_eq!(
            duration_between("2026-03-04T10:00:00Z", "2026-03-04T09:00:00Z"),
            None
        );
    }

    #[test]
    fn counts_get_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn object_paths_round_trip() {
        let href = object_href("widgets.example.com/v1", "ns", "w-1");
        assert_eq!(href, "/objects/widgets.example.com/v1/ns/w-1");
        assert_eq!(
            key_of_path(href.strip_prefix("/objects/").unwrap()).as_deref(),
            Some("widgets.example.com/v1/ns/w-1")
        );
        let cluster = object_href("nodes/v1", "", "n1");
        assert_eq!(cluster, "/objects/nodes/v1/-/n1");
        assert_eq!(
            key_of_path("nodes/v1/-/n1").as_deref(),
            Some("nodes/v1//n1")
        );
        assert_eq!(key_of_path("n1"), None);
        assert_eq!(key_of_path("ns/"), None);
    }

    #[test]
    fn trace_links_need_a_base_and_a_real_trace_id() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_href(Some("http://127.0.0.1:16686/"), id).as_deref(),
            Some("http://127.0.0.1:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_href(None, id), None);
        assert_eq!(trace_href(Some("http://j"), "not-hex\"><script>"), None);
        assert_eq!(trace_href(Some("http://j"), &"0".repeat(32)), None);
    }

    #[test]
    fn secrets_are_recognised() {
        assert!(is_secret("secrets/v1"));
        assert!(!is_secret("secretstores.example.com/v1"));
        assert!(!is_secret("widgets.example.com/v1"));
    }
}
