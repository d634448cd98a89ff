//! The daemons and timers running for each object, in memory only: since when, the calls so far
//! and the restarts after an error, how the last call ended, the next timer call — for the
//! object page's "Daemons and timers" panel.
//!
//! # Memory
//! An object costs nothing here until a daemon or timer starts for it, and nothing again once
//! they stopped: each entry is dropped with its [`Shown`] guard, which the daemon's or timer's
//! task owns (an aborted task drops it too). Per object, one small entry per daemon or timer
//! handler that runs for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::sync::broadcast;

use crate::core::views::{AttemptOutcome, RunKind, RunView};
use crate::runtime::kit::Locked;

/// One daemon or timer of one object.
#[derive(Debug)]
struct Run {
    handler: Box<str>,
    kind: RunKind,
    since: Timestamp,
    calling: bool,
    calls: u32,
    restarts: u32,
    last: Option<(Timestamp, AttemptOutcome, Option<Box<str>>)>,
    next: Option<Timestamp>,
}

impl Run {
    fn view(&self) -> RunView {
        let (exit, outcome, message) = match &self.last {
            Some((at, outcome, message)) => (
                Some(at.to_string()),
                Some(*outcome),
                message.as_deref().map(str::to_owned),
            ),
            None => (None, None, None),
        };
        RunView {
            handler: self.handler.to_string(),
            kind: self.kind,
            since: self.since.to_string(),
            calling: self.calling,
            calls: self.calls,
            restarts: self.restarts,
            last_exit: exit,
            last_outcome: outcome,
            last_message: message,
            next: self.next.map(|t| t.to_string()),
        }
    }
}

/// The daemons and timers running for each object (by its read-model key).
#[derive(Debug)]
pub(crate) struct Runs {
    objects: Mutex<HashMap<Box<str>, Vec<Run>>>,
    changes: broadcast::Sender<String>,
}

impl Runs {
    /// Runs announcing their changes on `changes` (`{"type":"details","key":…}`).
    pub(crate) fn new(changes: broadcast::Sender<String>) -> Self {
        Runs {
            objects: Mutex::default(),
            changes,
        }
    }

    fn announce(&self, key: &str) {
        let json = serde_json::json!({"type": "details", "key": key}).to_string();
        let _ = self.changes.send(json);
    }

    fn with(&self, key: &str, handler: &str, change: impl FnOnce(&mut Run)) {
        let mut objects = self.objects.locked();
        let Some(run) = objects
            .get_mut(key)
            .and_then(|runs| runs.iter_mut().find(|r| &*r.handler == handler))
        else {
            return;
        };
        change(run);
        drop(objects);
        self.announce(key);
    }

    /// Notes that a daemon or timer of the object with read-model key `key` starts at `now`;
    /// it shows until the returned guard is dropped.
    pub(crate) fn start(
        self: &Arc<Self>,
        key: String,
        handler: &str,
        kind: RunKind,
        now: Timestamp,
    ) -> Shown {
        let run = Run {
            handler: handler.into(),
            kind,
            since: now,
            calling: false,
            calls: 0,
            restarts: 0,
            last: None,
            next: None,
        };
        let mut objects = self.objects.locked();
        let runs = objects.entry(key.as_str().into()).or_default();
        runs.retain(|r| &*r.handler != handler);
        runs.push(run);
        drop(objects);
        self.announce(&key);
        Shown {
            runs: Arc::clone(self),
            key,
            handler: handler.into(),
        }
    }

    /// Notes that a call starts; `retry` > 0 counts it as a restart after an error.
    pub(crate) fn call(&self, key: &str, handler: &str, retry: u32) {
        self.with(key, handler, |run| {
            run.calling = true;
            run.calls = run.calls.saturating_add(1);
            if retry > 0 {
                run.restarts = run.restarts.saturating_add(1);
            }
            run.next = None;
        });
    }

    /// Notes how the call ended at `now`, and why.
    pub(crate) fn ended(
        &self,
        key: &str,
        handler: &str,
        outcome: AttemptOutcome,
        message: Option<&str>,
        now: Timestamp,
    ) {
        self.with(key, handler, |run| {
            run.calling = false;
            let message = message.filter(|m| !m.is_empty()).map(Into::into);
            run.last = Some((now, outcome, message));
        });
    }

    /// Notes when the next call (of a timer) comes.
    pub(crate) fn next(&self, key: &str, handler: &str, at: Timestamp) {
        self.with(key, handler, |run| run.next = Some(at));
    }

    /// The daemons and timers running for the object with read-model key `key`.
    pub(crate) fn of(&self, key: &str) -> Vec<RunView> {
        let objects = self.objects.locked();
        let mut views: Vec<RunView> = objects
            .get(key)
            .map(|runs| runs.iter().map(Run::view).collect())
            .unwrap_or_default();
        views.sort_by(|a, b| a.handler.cmp(&b.handler));
        views
    }

    fn stop(&self, key: &str, handler: &str) {
        let mut objects = self.objects.locked();
        if let Some(runs) = objects.get_mut(key) {
            runs.retain(|r| &*r.handler != handler);
            if runs.is_empty() {
                objects.remove(key);
            }
        }
        drop(objects);
        self.announce(key);
    }

    #[cfg(test)]
    fn objects(&self) -> usize {
        self.objects.locked().len()
    }
}

/// A daemon or timer shown in [`Runs`] while this lives.
#[derive(Debug)]
pub(crate) struct Shown {
    runs: Arc<Runs>,
    key: String,
    handler: Box<str>,
}

impl Shown {
    /// The object's read-model key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.runs.stop(&self.key, &self.handler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_shows_its_calls_restarts_and_last_exit_until_it_stops() {
        let runs = Arc::new(Runs::new(broadcast::channel(16).0));
        let mut changes = runs.changes.subscribe();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let shown = runs.start("w/ns/a".into(), "watch", RunKind::Daemon, t0);
        assert!(changes.try_recv().unwrap().contains(r#""key":"w/ns/a""#));
        runs.call("w/ns/a", "watch", 0);
        runs.ended(
            "w/ns/a",
            "watch",
            AttemptOutcome::Retrying,
            Some("boom"),
            t0,
        );
        runs.call("w/ns/a", "watch", 1);
        let timer = runs.start("w/ns/a".into(), "tick", RunKind::Timer, t0);
        runs.next("w/ns/a", "tick", t0);
        let views = runs.of("w/ns/a");
        assert_eq!(views.len(), 2);
        let (tick, watch) = (&views[0], &views[1]);
        assert_eq!((tick.handler.as_str(), tick.kind), ("tick", RunKind::Timer));
        assert_eq!(tick.next.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!((watch.calls, watch.restarts, watch.calling), (2, 1, true));
        assert_eq!(watch.last_outcome, Some(AttemptOutcome::Retrying));
        assert_eq!(watch.last_message.as_deref(), Some("boom"));
        assert!(runs.of("w/ns/other").is_empty());
        drop(shown);
        assert_eq!(runs.of("w/ns/a").len(), 1);
        drop(timer);
        assert!(runs.of("w/ns/a").is_empty());
        assert_eq!(
            runs.objects(),
            0,
            "nothing is kept for an object without runs"
        );
    }
}
