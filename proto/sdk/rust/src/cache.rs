//! The attempt cache: the answer to each recent `attempt_id`, so that an attempt the core makes
//! again (it died before it persisted the outcome, or its call was cut after the handler ran)
//! gets the same answer without the handler running again. Concurrent calls with one id share
//! one run (single flight).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::lock::lock;

/// How many answers are remembered by default.
pub(crate) const REMEMBERED: usize = 10_000;

/// Recent answers by attempt id, at most `capacity` (the oldest go first).
#[derive(Debug)]
pub(crate) struct AttemptCache<V> {
    capacity: usize,
    slots: Mutex<Slots<V>>,
}

#[derive(Debug)]
struct Slots<V> {
    by_id: HashMap<String, Arc<OnceCell<V>>>,
    order: VecDeque<String>,
}

/// Whether an answer was computed now or replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// The handler ran for this call (or for a concurrent call with the same id).
    Ran,
    /// The answer was remembered from an earlier call.
    Replayed,
}

impl<V: Clone> AttemptCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: Mutex::new(Slots {
                by_id: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn slot(&self, id: &str) -> Arc<OnceCell<V>> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.by_id.get(id) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(OnceCell::new());
        slots.by_id.insert(id.to_owned(), Arc::clone(&slot));
        slots.order.push_back(id.to_owned());
        while slots.order.len() > self.capacity {
            if let Some(old) = slots.order.pop_front() {
                slots.by_id.remove(&old);
            }
        }
        slot
    }

    /// The answer for `id`: remembered, or computed by `run` (once, even for concurrent calls;
    /// a call that is cancelled midway leaves the next one to compute it). An empty id is
    /// never remembered.
    pub(crate) async fn answer<F, Fut>(&self, id: &str, run: F) -> (V, Answered)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        if id.is_empty() {
            return (run().await, Answered::Ran);
        }
        let slot = self.slot(id);
        if let Some(value) = slot.get() {
            return (value.clone(), Answered::Replayed);
        }
        let value = slot.get_or_init(run).await.clone();
        (value, Answered::Ran)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.slots).by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn repeated_attempts_are_answered_without_running_again() {
        let cache = AttemptCache::new(10);
        let runs = AtomicU32::new(0);
        let run = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            "answer".to_owned()
        };
        assert_eq!(
            cache.answer("a1", run).await,
            ("answer".to_owned(), Answered::Ran)
        );
        let again = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            "other".to_owned()
        };
        assert_eq!(
            cache.answer("a1", again).await,
            ("answer".to_owned(), Answered::Replayed)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another attempt runs; an empty id is never remembered.
        cache.answer("a2", run).await;
        cache.answer("", run).await;
        cache.answer("", run).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_calls_share_one_run() {
        let cache = AttemptCache::new(10);
        let runs = AtomicU32::new(0);
        let run = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(5)).await;
            7
        };
        let (a, b) = tokio::join!(cache.answer("x", run), cache.answer("x", run));
        assert_eq!((a.0, b.0), (7, 7));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_leaves_the_answer_to_the_next() {
        let cache = AttemptCache::new(10);
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            1
        };
        let cut = tokio::time::timeout(Duration::from_secs(1), cache.answer("x", slow)).await;
        assert!(cut.is_err());
        assert_eq!(cache.answer("x", || async { 2 }).await, (2, Answered::Ran));
    }

    #[tokio::test]
    async fn the_oldest_answers_go_first() {
        let cache = AttemptCache::new(2);
        for id in ["a", "b", "c"] {
            cache.answer(id, || async { id }).await;
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.answer("a", || async { "new" }).await.1, Answered::Ran);
        assert_eq!(
            cache.answer("c", || async { "new" }).await,
            ("c", Answered::Replayed)
        );
    }
}
