//! The small kube kit every controller uses: the API of a served resource, objects as JSON with
//! their type, the status code of a failed request, waiting with backoff until something answers,
//! and locks that survive a panicked holder.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};

use crate::core::backoff::Backoff;
use crate::core::selectors::Selector;
use crate::runtime::discovery::{self, Served};

/// The `User-Agent` of the core's API requests (`operon/<version>`): the API server's audit log
/// and its metrics tell the core's requests from everyone else's.
pub(crate) const USER_AGENT: &str = concat!("operon/", env!("CARGO_PKG_VERSION"));

/// How long a request may wait for the API server's next bytes. Without a bound, a request on a
/// connection that went silent (a network cut that drops packets, a stalled proxy) waits forever
/// — a PATCH with it, and the cycle's outcome with the PATCH. Longer than any quiet stretch of a
/// healthy watch: the server ends its watches after 290 s.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// `config` as the core's clients use it: its [`USER_AGENT`], and a [`READ_TIMEOUT`] where the
/// kubeconfig sets none.
pub(crate) fn client_config(mut config: kube::Config) -> kube::Config {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    config.read_timeout.get_or_insert(READ_TIMEOUT);
    config
}

/// Locking that carries on after a panic in another holder: every lock in the core guards plain
/// bookkeeping that stays consistent between statements, so a poisoned lock is still usable.
pub(crate) trait Locked<T: ?Sized> {
    /// The guard.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`Locked`] for readers-writer locks.
pub(crate) trait LockedRw<T: ?Sized> {
    /// Shared access.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// Exclusive access.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> LockedRw<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The API of a served resource: in `namespace` when the resource is namespaced and one is given
/// (non-empty), cluster-wide otherwise.
pub(crate) fn api_for(
    client: &kube::Client,
    served: &Served,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) if served.namespaced && !ns.is_empty() => {
            Api::namespaced_with(client.clone(), ns, &served.resource)
        }
        _ => Api::all_with(client.clone(), &served.resource),
    }
}

/// The API through which `body` (an object of `served`) is written.
pub(crate) fn api_of(client: &kube::Client, served: &Served, body: &Value) -> Api<DynamicObject> {
    api_for(client, served, Some(meta(body, "namespace")))
}

/// A metadata field of a JSON object (`""` when missing).
pub(crate) fn meta<'a>(body: &'a Value, field: &str) -> &'a str {
    body.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The object as JSON with its `apiVersion` and `kind` (items of a list come without them).
pub(crate) fn typed(obj: &DynamicObject, resource: &ApiResource) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), json!(resource.api_version));
        map.insert("kind".into(), json!(resource.kind));
    }
    v
}

/// The HTTP status of a failed request (0 when there was none).
pub(crate) fn status_code(err: &kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        _ => 0,
    }
}

/// A failed request as a user reads it: the API server's own message with its reason and code
/// (`Display` of an API error also dumps the whole `Status` structure), anything else as is.
pub(crate) fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

/// Calls `attempt` until it succeeds, waiting with `backoff` between failures and logging each
/// failure as a warning that says `what` is retried (`what` e.g. "Cannot serve the resource yet.").
pub(crate) async fn until_ok<T, E, Fut>(
    backoff: Backoff,
    what: &str,
    subject: &str,
    attempt: impl FnMut() -> Fut,
) -> T
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let policy = ExponentialBuilder::default()
        .with_min_delay(backoff.first)
        .with_max_delay(backoff.cap)
        .with_factor(2.0)
        .without_max_times();
    let retried = attempt
        .retry(policy)
        .sleep(tokio::time::sleep)
        .notify(|err: &E, retry_in| {
            tracing::warn!(subject, error = %err, retry_in = ?retry_in, "{what}");
        })
        .await;
    match retried {
        Ok(value) => value,
        // Without a limit on the attempts, the retries end only with a success.
        Err(_) => unreachable!("retried without a limit"),
    }
}

/// Describes `service`, retrying with backoff until it answers (a service that is down is waited
/// for).
pub(crate) async fn describe_until_answered(
    service: &dyn crate::runtime::ports::HandlerPort,
) -> crate::runtime::ports::Manifest {
    until_ok(
        Backoff::SERVICE,
        "The handler service does not answer Describe yet.",
        service.name(),
        || service.describe(),
    )
    .await
}

/// Resolves `selector` through discovery, retrying until the resource is served (its CRD may be
/// installed after the core starts).
pub(crate) async fn resolve_until_found(client: &kube::Client, selector: &Selector) -> Served {
    until_ok(
        Backoff::DISCOVERY,
        "Cannot serve the resource yet.",
        &selector.to_string(),
        || discovery::resolve(client, selector),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn until_ok_retries_with_backoff_until_success() {
        let tries = Arc::new(AtomicU32::new(0));
        let started = tokio::time::Instant::now();
        let value = until_ok(
            Backoff::new(Duration::from_secs(1), Duration::from_secs(4)),
            "Not yet.",
            "test",
            || {
                let tries = Arc::clone(&tries);
                async move {
                    if tries.fetch_add(1, Ordering::SeqCst) < 4 {
                        Err("down")
                    } else {
                        Ok(7)
                    }
                }
            },
        )
        .await;
        assert_eq!(value, 7);
        assert_eq!(tries.load(Ordering::SeqCst), 5);
        // 1 + 2 + 4 + 4 seconds of backoff (capped), no jitter.
        assert_eq!(started.elapsed(), Duration::from_secs(11));
    }

    #[test]
    fn a_poisoned_lock_is_still_usable() {
        let m = Arc::new(Mutex::new(1));
        let m2 = Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }

    #[test]
    fn meta_reads_metadata_fields() {
        let body = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert_eq!(meta(&body, "name"), "a");
        assert_eq!(meta(&body, "uid"), "");
    }
}
