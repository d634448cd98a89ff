//! Waiting for a condition with a deadline.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// Polls `probe` every 100 ms until it returns `Ok(Some(value))`, and returns the value.
///
/// `probe` returns `Ok(None)` for "not yet" and `Err` for a state worth reporting; the last
/// such error is part of the panic message when the deadline passes.
///
/// # Panics
/// When `timeout` passes first; the message names `what` and the last observation.
pub async fn wait_for<T, E, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<E> = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(err) => last = Some(err),
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last observation: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
