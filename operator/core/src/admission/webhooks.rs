//! The managed Validating/MutatingWebhookConfiguration (Kopf's `build_webhooks`): one webhook per
//! handler, named after it, calling `https://HOST:PORT/<handler id>`; and whether the live
//! configuration still says what it should ([`is_subset`]: the API server fills in defaults).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{AdmissionHandler, Subresource, WebhookKind};
use crate::model::ValueFilter;

/// A resource as the API server serves it, for a webhook's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// API group (empty for the core group).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural name.
    pub plural: String,
}

/// How the API server reaches the core: the base URL and the CA bundle (PEM) to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `https://HOST:PORT` (a handler's id is appended as the path).
    pub url: String,
    /// The CA certificate(s), PEM; `None` when the server's certificate chains to a public CA.
    pub ca_bundle: Option<Vec<u8>>,
}

/// The configuration's API kind for a webhook kind.
pub fn configuration_kind(kind: WebhookKind) -> &'static str {
    match kind {
        WebhookKind::Validating => "ValidatingWebhookConfiguration",
        WebhookKind::Mutating => "MutatingWebhookConfiguration",
    }
}

/// The `webhooks` of the configuration of one kind: one per handler of that kind (only the
/// persistent ones with `persistent_only`, as Kopf leaves behind when it stops), in order.
pub fn build(
    handlers: &[(AdmissionHandler, Vec<Resource>)],
    kind: WebhookKind,
    suffix: &str,
    client: &ClientConfig,
    persistent_only: bool,
) -> Vec<Value> {
    handlers
        .iter()
        .filter(|(h, _)| h.kind == kind && (!persistent_only || h.persistent))
        .map(|(h, resources)| webhook(h, resources, suffix, client))
        .collect()
}

fn webhook(
    h: &AdmissionHandler,
    resources: &[Resource],
    suffix: &str,
    client: &ClientConfig,
) -> Value {
    let operations: Vec<&str> = if h.operations.is_empty() {
        vec!["*"]
    } else {
        h.operations.iter().map(|o| o.as_str()).collect()
    };
    let rules: Vec<Value> = resources
        .iter()
        .map(|r| {
            let name = match &h.subresource {
                Subresource::Main => r.plural.clone(),
                Subresource::Any => format!("{}/*", r.plural),
                Subresource::Named(sub) => format!("{}/{sub}", r.plural),
            };
            // `plural/*` does not include the main resource: list both, as `subresource='*'`
            // means the object and all its subresources.
            let names = match &h.subresource {
                Subresource::Any => vec![r.plural.clone(), name],
                _ => vec![name],
            };
            json!({
                "apiGroups": [r.group],
                "apiVersions": [r.version],
                "resources": names,
                "operations": operations,
                "scope": "*",
            })
        })
        .collect();
    let mut client_config = Map::new();
    client_config.insert("url".into(), Value::String(url(&client.url, &h.id)));
    if let Some(ca) = &client.ca_bundle {
        let encoded = base64::engine::general_purpose::STANDARD.encode(ca);
        client_config.insert("caBundle".into(), Value::String(encoded));
    }
    let mut webhook = json!({
        "name": name(&h.id, suffix),
        "sideEffects": if h.side_effects { "NoneOnDryRun" } else { "None" },
        "failurePolicy": if h.ignore_failures { "Ignore" } else { "Fail" },
        "matchPolicy": "Equivalent",
        "rules": rules,
        "clientConfig": client_config,
        "timeoutSeconds": h.timeout.as_secs().clamp(1, super::MAX_TIMEOUT.as_secs()),
        "admissionReviewVersions": ["v1", "v1beta1"],
    });
    if let Some(selector) = object_selector(h) {
        webhook["objectSelector"] = selector;
    }
    webhook
}

/// Kopf's `_build_labels_selector`: the declarative label filters as match expressions (a
/// callback filter is the service's to check and is left out).
fn object_selector(h: &AdmissionHandler) -> Option<Value> {
    let exprs: Vec<Value> = h
        .filters
        .labels
        .iter()
        .map(|(key, filter)| match filter {
            ValueFilter::Present => json!({"key": key, "operator": "Exists"}),
            ValueFilter::Absent => json!({"key": key, "operator": "DoesNotExist"}),
            ValueFilter::Equals(value) => {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                json!({"key": key, "operator": "In", "values": [text]})
            }
        })
        .collect();
    (!exprs.is_empty()).then(|| json!({"matchExpressions": exprs}))
}

/// A webhook's name (Kopf's `_normalize_name`): the id with `/` as `.` and `_` as `-`, any other
/// character that is not a letter, digit, `.` or `-` as the hex of its UTF-8 bytes, then
/// `.<suffix>` (the configuration's name, which is a domain-like name such as `auto.kopf.dev`).
pub fn name(id: &str, suffix: &str) -> String {
    let mut out = String::new();
    for c in id.chars() {
        match c {
            '/' => out.push('.'),
            '_' => out.push('-'),
            c if c.is_alphanumeric() || c == '.' || c == '-' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("{b:02x}"));
                }
            }
        }
    }
    if suffix.is_empty() {
        out
    } else {
        format!("{out}.{suffix}")
    }
}

/// The webhook URL of a handler: the base URL, `/`, and the id percent-encoded (as Python's
/// `urllib.parse.quote`, which keeps letters, digits, `_.-~` and `/`).
pub fn url(base: &str, id: &str) -> String {
    let mut quoted = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~/".contains(&b) {
            quoted.push(char::from(b));
        } else {
            quoted.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{}/{quoted}", base.trim_end_matches('/'))
}

/// The handler id a webhook URL's path names (the reverse of [`url`]); `None` for the root path
/// (all handlers) or a path that is not valid percent-encoded UTF-8.
pub fn id_from_path(path: &str) -> Option<String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw.is_empty() {
        return None;
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `live` says at least everything `desired` says: every key of an object in `desired`
/// is in `live` with a value that says at least as much; lists item by item, of the same length;
/// other values equal. Keys that the API server adds (defaults) do not matter.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (d, l) => d == l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{MAX_TIMEOUT, Operation};
    use std::time::Duration;

    fn handler(id: &str, kind: WebhookKind) -> AdmissionHandler {
        AdmissionHandler {
            id: id.into(),
            kind,
            filters: Default::default(),
            has_callback_filters: false,
            operations: Vec::new(),
            subresource: Subresource::Main,
            persistent: false,
            side_effects: false,
            ignore_failures: false,
            timeout: MAX_TIMEOUT,
        }
    }

    fn kex() -> Vec<Resource> {
        vec![Resource {
            group: "kopf.dev".into(),
            version: "v1".into(),
            plural: "kopfexamples".into(),
        }]
    }

    #[test]
    fn one_webhook_per_handler_of_the_kind_with_kopfs_conventions() {
        let mut v = handler("validate_1", WebhookKind::Validating);
        v.operations = vec![Operation::Create, Operation::Update];
        v.ignore_failures = true;
        v.side_effects = true;
        v.timeout = Duration::from_secs(5);
        v.subresource = Subresource::Named("status".into());
        let mut m = handler("mutate1", WebhookKind::Mutating);
        m.filters
            .labels
            .insert("somelabel".into(), ValueFilter::Equals(json!("somevalue")));
        m.filters.labels.insert("other".into(), ValueFilter::Absent);
        m.persistent = true;
        let handlers = vec![(v, kex()), (m, kex())];
        let client = ClientConfig {
            url: "https://127.0.0.1:9443/".into(),
            ca_bundle: Some(b"PEM".to_vec()),
        };
        let validating = build(
            &handlers,
            WebhookKind::Validating,
            "auto.kopf.dev",
            &client,
            false,
        );
        assert_eq!(
            validating,
            [json!({
                "name": "validate-1.auto.kopf.dev",
                "sideEffects": "NoneOnDryRun",
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "rules": [{"apiGroups": ["kopf.dev"], "apiVersions": ["v1"],
                           "resources": ["kopfexamples/status"],
                           "operations": ["CREATE", "UPDATE"], "scope": "*"}],
                "clientConfig": {"url": "https://127.0.0.1:9443/validate_1", "caBundle": "UEVN"},
                "timeoutSeconds": 5,
                "admissionReviewVersions": ["v1", "v1beta1"],
            })]
        );
        let mutating = build(
            &handlers,
            WebhookKind::Mutating,
            "auto.kopf.dev",
            &client,
            false,
        );
        assert_eq!(mutating.len(), 1);
        assert_eq!(mutating[0]["name"], "mutate1.auto.kopf.dev");
        assert_eq!(mutating[0]["failurePolicy"], "Fail");
        assert_eq!(mutating[0]["sideEffects"], "None");
        assert_eq!(mutating[0]["timeoutSeconds"], 30);
        assert_eq!(mutating[0]["rules"][0]["operations"], json!(["*"]));
        assert_eq!(
            mutating[0]["objectSelector"],
            json!({"matchExpressions": [
                {"key": "other", "operator": "DoesNotExist"},
                {"key": "somelabel", "operator": "In", "values": ["somevalue"]},
            ]})
        );
        assert!(validating[0].get("objectSelector").is_none());
        // On exit, only the persistent ones stay.
        assert!(build(&handlers, WebhookKind::Validating, "x", &client, true).is_empty());
        assert_eq!(
            build(&handlers, WebhookKind::Mutating, "x", &client, true).len(),
            1
        );
    }

    #[test]
    fn any_subresource_covers_the_resource_and_its_subresources() {
        let mut h = handler("subs", WebhookKind::Validating);
        h.subresource = Subresource::Any;
        let client = ClientConfig {
            url: "https://h:1".into(),
            ca_bundle: None,
        };
        let built = build(&[(h, kex())], WebhookKind::Validating, "", &client, false);
        assert_eq!(
            built[0]["rules"][0]["resources"],
            json!(["kopfexamples", "kopfexamples/*"])
        );
        assert_eq!(built[0]["name"], "subs");
        assert_eq!(built[0]["clientConfig"], json!({"url": "https://h:1/subs"}));
    }

    #[test]
    fn names_and_urls_round_trip_odd_ids() {
        assert_eq!(name("fn/sub_x", "a.b"), "fn.sub-x.a.b");
        assert_eq!(name("a b:c", ""), "a20b3ac");
        let u = url("https://h:1", "a b/ü");
        assert_eq!(u, "https://h:1/a%20b/%C3%BC");
        assert_eq!(id_from_path("/a%20b/%C3%BC").as_deref(), Some("a b/ü"));
        assert_eq!(id_from_path("/"), None);
        assert_eq!(id_from_path("/bad%zz"), None);
    }

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = json!({"webhooks": [{"name": "a", "rules": [{"scope": "*"}]}]});
        let live = json!({"webhooks": [{"name": "a", "rules": [{"scope": "*"}],
                                        "namespaceSelector": {}, "reinvocationPolicy": "Never"}],
                          "metadata": {"uid": "x"}});
        assert!(is_subset(&desired, &live));
        let changed = json!({"webhooks": [{"name": "b", "rules": [{"scope": "*"}]}]});
        assert!(!is_subset(&changed, &live));
        let more = json!({"webhooks": [{"name": "a", "rules": [{"scope": "*"}]}, {"name": "c"}]});
        assert!(!is_subset(&more, &live));
    }
}
