//! The admission listener's decisions (performed by `runtime::admission`): the address the API
//! server is told, the names of a generated certificate, which handlers a request's path names,
//! and the time and id of one handler's call.

use std::net::IpAddr;
use std::time::Duration;

/// The address that reaches a listener bound to `ip`: a loopback address for an unspecified one
/// (`0.0.0.0` → `127.0.0.1`, `::` → `::1`).
pub fn accessible_ip(ip: IpAddr) -> String {
    if ip.is_unspecified() {
        if ip.is_ipv4() {
            "127.0.0.1".to_owned()
        } else {
            "::1".to_owned()
        }
    } else {
        ip.to_string()
    }
}

/// The root path of the webhooks' URLs, without a trailing `/` (`--admission-path`).
pub fn root_path(path: &str) -> String {
    path.trim_end_matches('/').to_owned()
}

/// The webhooks' base URL: `https://<host>:<port><root>`, an IPv6 host in brackets.
pub fn base_url(host: &str, port: u16, root: &str) -> String {
    let host_in_url = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("https://{host_in_url}:{port}{root}")
}

/// The names a generated certificate is valid for: the webhooks' host, the listener's address,
/// and the extra names (`--admission-san`).
pub fn certificate_names(host: &str, accessible_ip: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec![host.to_owned(), accessible_ip.to_owned()];
    names.extend(extra.iter().cloned());
    names
}

/// The names a generated certificate holds, from the names it should be valid for: without
/// unspecified addresses (`0.0.0.0`, `::`), empty names and repetitions.
pub fn subject_names(hostnames: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in hostnames {
        let unspecified = name.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if !unspecified && !name.is_empty() && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The common name of a generated certificate: the first name that is no IP address, else the
/// first address, else `localhost`.
pub fn common_name(names: &[String]) -> String {
    names
        .iter()
        .find(|n| n.parse::<IpAddr>().is_err())
        .or(names.first())
        .cloned()
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The handler a request's path names, below the root: none (`/` or nothing: every handler of
/// the resource), or one by its percent-encoded id.
///
/// # Errors
/// [`NotAnId`] when the path is not a percent-encoded id.
pub fn handler_in_path(rest: &str) -> Result<Option<String>, NotAnId> {
    if rest.trim_start_matches('/').is_empty() {
        Ok(None)
    } else {
        super::webhooks::id_from_path(rest).map(Some).ok_or(NotAnId)
    }
}

/// A webhook path that is not a percent-encoded handler id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the webhook path is not a percent-encoded handler id")]
pub struct NotAnId;

/// The time left for the service: the webhook's timeout minus a margin for the answer's way
/// back (500 ms), at least 200 ms.
pub fn call_deadline(timeout: Duration) -> Duration {
    timeout
        .saturating_sub(Duration::from_millis(500))
        .max(Duration::from_millis(200))
}

/// The attempt id of one handler's call for a review.
pub fn attempt_id(review_uid: &str, handler: &str) -> String {
    format!("admission:{review_uid}:{handler}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_reaches_the_listener() {
        assert_eq!(accessible_ip("0.0.0.0".parse().unwrap()), "127.0.0.1");
        assert_eq!(accessible_ip("::".parse().unwrap()), "::1");
        assert_eq!(accessible_ip("10.1.2.3".parse().unwrap()), "10.1.2.3");
        assert_eq!(
            base_url("::1", 443, &root_path("/hooks/")),
            "https://[::1]:443/hooks"
        );
        assert_eq!(
            base_url("example.com", 9443, &root_path("")),
            "https://example.com:9443"
        );
        assert_eq!(
            certificate_names("h", "127.0.0.1", &["x".into()]),
            ["h", "127.0.0.1", "x"]
        );
    }

    #[test]
    fn certificates_name_the_host_first_and_skip_unspecified_addresses() {
        let given: Vec<String> = ["0.0.0.0", "10.0.0.1", "", "svc.ns", "10.0.0.1"]
            .map(String::from)
            .into();
        let names = subject_names(&given);
        assert_eq!(names, ["10.0.0.1", "svc.ns"]);
        assert_eq!(common_name(&names), "svc.ns");
        assert_eq!(common_name(&names[..1]), "10.0.0.1");
        assert_eq!(common_name(&[]), "localhost");
    }

    #[test]
    fn a_path_names_one_handler_or_all() {
        assert_eq!(handler_in_path(""), Ok(None));
        assert_eq!(handler_in_path("/"), Ok(None));
        assert_eq!(handler_in_path("/validate1"), Ok(Some("validate1".into())));
        assert_eq!(handler_in_path("/a%2Fb"), Ok(Some("a/b".into())));
        assert_eq!(handler_in_path("/bad%zz"), Err(NotAnId));
    }

    #[test]
    fn the_call_leaves_a_margin_within_the_webhooks_timeout() {
        assert_eq!(
            call_deadline(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            call_deadline(Duration::from_millis(300)),
            Duration::from_millis(200)
        );
        assert_eq!(attempt_id("u", "check"), "admission:u:check");
    }
}
