//! The work loop of a sync registration: one sync per parent at a time, a parent queued while it
//! is synced is synced again right after, and requeues by timers (the latest wins).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::Key;
use crate::runtime::kit::Locked;

/// Runs `sync` for every key that arrives on `rx` until the channel closes; `sync` returns when
/// to sync the key again (a timer sends it on `tx` then, unless a later timer replaced it).
pub(super) async fn run<F, Fut>(
    tx: mpsc::UnboundedSender<Key>,
    mut rx: mpsc::UnboundedReceiver<Key>,
    sync: F,
) where
    F: Fn(Key) -> Fut,
    Fut: Future<Output = Option<Duration>> + Send + 'static,
{
    let mut running: HashSet<Key> = HashSet::new();
    let mut dirty: HashSet<Key> = HashSet::new();
    let timers: Arc<Mutex<HashMap<Key, u64>>> = Arc::default();
    let mut token = 0u64;
    let mut work = tokio::task::JoinSet::new();
    let spawn = |work: &mut tokio::task::JoinSet<_>, key: Key| {
        let running = sync(key.clone());
        work.spawn(async move { (key, running.await) });
    };
    // Every parent is queued by its watch's initial listing (the keys wait in `rx`).
    loop {
        tokio::select! {
            key = rx.recv() => {
                let Some(key) = key else { return };
                if running.contains(&key) {
                    dirty.insert(key);
                } else {
                    running.insert(key.clone());
                    spawn(&mut work, key);
                }
            }
            Some(done) = work.join_next() => {
                let Ok((key, after)) = done else { continue };
                running.remove(&key);
                if let Some(after) = after {
                    token += 1;
                    let mine = token;
                    timers.locked().insert(key.clone(), mine);
                    let (timers, tx, key) = (Arc::clone(&timers), tx.clone(), key.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let fire = {
                            let mut t = timers.locked();
                            if t.get(&key) == Some(&mine) { t.remove(&key); true } else { false }
                        };
                        if fire { let _ = tx.send(key); }
                    });
                }
                if dirty.remove(&key) {
                    running.insert(key.clone());
                    spawn(&mut work, key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        (String::new(), name.to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn one_sync_per_parent_at_a_time_then_again_and_timers_requeue() {
        let (tx, rx) = mpsc::unbounded_channel();
        let log: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
        let calls = Arc::new(Mutex::new(0u32));
        let (l, c) = (Arc::clone(&log), Arc::clone(&calls));
        let looping = tokio::spawn(run(tx.clone(), rx, move |k: Key| {
            let (log, calls) = (Arc::clone(&l), Arc::clone(&c));
            async move {
                let n = {
                    let mut calls = calls.locked();
                    *calls += 1;
                    *calls
                };
                log.locked().push((k.1.clone(), "start"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                log.locked().push((k.1.clone(), "end"));
                // The first sync asks to be synced again in 10 s.
                (n == 1).then_some(Duration::from_secs(10))
            }
        }));
        tx.send(key("a")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Queued while running: synced once more, after the running sync ends.
        tx.send(key("a")).unwrap();
        tx.send(key("a")).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            log.locked().clone(),
            [
                ("a".into(), "start"),
                ("a".into(), "end"),
                ("a".into(), "start"),
                ("a".into(), "end")
            ]
        );
        // The timer of the first sync fires 10 s after it ended.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(*calls.locked(), 3);
        looping.abort();
    }
}
