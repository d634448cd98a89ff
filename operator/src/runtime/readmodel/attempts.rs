//! The last attempts of each handler on the objects that had activity lately, in memory only
//! (nothing new is written on the objects): when each call started and ended, how it ended, the
//! delay before the next one and why, and its trace — for the object page's timeline and inline
//! traces, for the `handler` span's link to the previous attempt, and for the trace page's check
//! that a trace id is one of ours.
//!
//! # Memory
//! Bounded whatever the number of objects: at most [`PER_HANDLER`] attempts per handler, and the
//! attempts of at most [`OBJECTS`] objects — the least recently active are forgotten first. An
//! idle object costs nothing here.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use jiff::Timestamp;
use opentelemetry::trace::{SpanContext, TraceId};

use crate::core::views::{AttemptOutcome, AttemptView};
use crate::runtime::kit::Locked;

/// Attempts kept per handler and object, at most (the newest).
pub(crate) const PER_HANDLER: usize = 6;
/// Objects whose attempts are kept, at most (the most recently active).
pub(crate) const OBJECTS: usize = 4096;

/// One attempt as the core measured it.
#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    number: u32,
    started: Timestamp,
    stopped: Option<Timestamp>,
    outcome: Option<AttemptOutcome>,
    /// Seconds until the next attempt.
    delay: Option<f32>,
    message: Option<Box<str>>,
    trace: Option<TraceId>,
}

#[derive(Debug)]
struct Chain {
    handler: Box<str>,
    /// The last attempt's span context, for the next attempt's link.
    last: Option<SpanContext>,
    attempts: VecDeque<Attempt>,
}

#[derive(Debug, Default)]
struct Entry {
    /// When it was last active ([`Recent::clock`]), for forgetting the least recent.
    touched: u64,
    chains: Vec<Chain>,
}

impl Entry {
    fn chain(&mut self, handler: &str) -> Option<&mut Chain> {
        self.chains.iter_mut().find(|c| &*c.handler == handler)
    }
}

#[derive(Debug, Default)]
struct Recent {
    clock: u64,
    objects: HashMap<Box<str>, Entry>,
}

impl Recent {
    fn entry(&mut self, uid: &str) -> &mut Entry {
        self.clock += 1;
        if !self.objects.contains_key(uid) {
            if self.objects.len() >= OBJECTS + OBJECTS / 4 {
                self.forget_least_recent();
            }
            self.objects.insert(uid.into(), Entry::default());
        }
        let entry = self.objects.get_mut(uid).expect("just ensured");
        entry.touched = self.clock;
        entry
    }

    /// Forgets the least recently active quarter at once (a sort per `OBJECTS / 4` new objects,
    /// not a scan per object).
    fn forget_least_recent(&mut self) {
        let mut touched: Vec<u64> = self.objects.values().map(|e| e.touched).collect();
        touched.sort_unstable();
        let cut = touched[self.objects.len() - OBJECTS];
        self.objects.retain(|_, e| e.touched >= cut);
    }
}

/// The attempts of each handler on the recently active objects.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    recent: Mutex<Recent>,
}

impl Attempts {
    /// The previous attempt's span context of a handler on an object (by uid).
    pub(crate) fn previous(&self, uid: &str, handler: &str) -> Option<SpanContext> {
        let recent = self.recent.locked();
        let entry = recent.objects.get(uid)?;
        let chain = entry.chains.iter().find(|c| &*c.handler == handler)?;
        chain.last.clone()
    }

    /// Notes that an attempt starts at `now`. `retries` is the number of attempts before this
    /// one: 0 starts a new chain (a new change, or the first attempt). `cx` is its span's
    /// context, when traced.
    pub(crate) fn begin(
        &self,
        uid: &str,
        handler: &str,
        retries: u32,
        cx: Option<SpanContext>,
        now: Timestamp,
    ) {
        self.note_start(uid, handler, (retries, retries == 0), cx, now);
    }

    /// Notes that a timer's call starts at `now` (`retries`: attempts before it within its
    /// tick): the timeline keeps the last calls across ticks.
    pub(crate) fn tick(
        &self,
        uid: &str,
        handler: &str,
        retries: u32,
        cx: Option<SpanContext>,
        now: Timestamp,
    ) {
        self.note_start(uid, handler, (retries, false), cx, now);
    }

    fn note_start(
        &self,
        uid: &str,
        handler: &str,
        (retries, new_chain): (u32, bool),
        cx: Option<SpanContext>,
        now: Timestamp,
    ) {
        let mut recent = self.recent.locked();
        let entry = recent.entry(uid);
        let chain = match entry.chains.iter().position(|c| &*c.handler == handler) {
            Some(i) => &mut entry.chains[i],
            None => {
                entry.chains.push(Chain {
                    handler: handler.into(),
                    last: None,
                    attempts: VecDeque::new(),
                });
                entry.chains.last_mut().expect("just pushed")
            }
        };
        if new_chain {
            chain.attempts.clear();
        }
        if chain.attempts.len() == PER_HANDLER {
            chain.attempts.pop_front();
        }
        chain.attempts.push_back(Attempt {
            number: retries + 1,
            started: now,
            stopped: None,
            outcome: None,
            delay: None,
            message: None,
            trace: cx.as_ref().map(SpanContext::trace_id),
        });
        if cx.is_some() {
            chain.last = cx;
        }
    }

    /// Notes how the running attempt of a handler ended at `now`.
    pub(crate) fn end(
        &self,
        uid: &str,
        handler: &str,
        outcome: AttemptOutcome,
        delay: Option<std::time::Duration>,
        message: Option<&str>,
        now: Timestamp,
    ) {
        let mut recent = self.recent.locked();
        let Some(attempt) = recent
            .objects
            .get_mut(uid)
            .and_then(|e| e.chain(handler))
            .and_then(|c| c.attempts.back_mut())
            .filter(|a| a.stopped.is_none())
        else {
            return;
        };
        attempt.stopped = Some(now);
        attempt.outcome = Some(outcome);
        attempt.delay = delay.map(|d| d.as_secs_f32());
        attempt.message = message.filter(|m| !m.is_empty()).map(Into::into);
    }

    /// The attempts of every handler (daemons too) on an object, oldest first.
    pub(crate) fn all(&self, uid: &str) -> Vec<(String, Vec<AttemptView>)> {
        let recent = self.recent.locked();
        let chains = recent.objects.get(uid).map(|e| e.chains.as_slice());
        (chains.unwrap_or_default().iter())
            .map(|c| (c.handler.to_string(), c.attempts.iter().map(view).collect()))
            .collect()
    }

    /// The attempts of a handler on an object, oldest first.
    #[cfg(test)]
    pub(crate) fn of(&self, uid: &str, handler: &str) -> Vec<AttemptView> {
        let recent = self.recent.locked();
        let Some(chain) = recent
            .objects
            .get(uid)
            .and_then(|e| e.chains.iter().find(|c| &*c.handler == handler))
        else {
            return Vec::new();
        };
        chain.attempts.iter().map(view).collect()
    }

    /// The trace id of a handler's last attempt on an object, when it was traced.
    pub(crate) fn last_trace(&self, uid: &str, handler: &str) -> Option<String> {
        let recent = self.recent.locked();
        let entry = recent.objects.get(uid)?;
        let chain = entry.chains.iter().find(|c| &*c.handler == handler)?;
        chain.attempts.back()?.trace.map(|t| t.to_string())
    }

    /// The uid of the object one of whose kept attempts has this trace id (32 hex digits).
    pub(crate) fn owner_of_trace(&self, trace_id: &str) -> Option<String> {
        let id = TraceId::from_hex(trace_id).ok()?;
        let recent = self.recent.locked();
        recent
            .objects
            .iter()
            .find(|(_, e)| {
                e.chains
                    .iter()
                    .flat_map(|c| &c.attempts)
                    .any(|a| a.trace == Some(id))
            })
            .map(|(uid, _)| uid.to_string())
    }

    /// Forgets an object.
    pub(crate) fn forget(&self, uid: &str) {
        self.recent.locked().objects.remove(uid);
    }

    /// How many objects have attempts kept.
    #[cfg(test)]
    fn objects(&self) -> usize {
        self.recent.locked().objects.len()
    }
}

fn view(a: &Attempt) -> AttemptView {
    AttemptView {
        attempt: a.number,
        started: Some(a.started.to_string()),
        stopped: a.stopped.map(|t| t.to_string()),
        outcome: a.outcome,
        delay: a.delay.map(f64::from),
        message: a.message.as_deref().map(str::to_owned),
        trace_id: a.trace.map(|t| t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceState};
    use std::time::Duration;

    fn cx(n: u8) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn attempts_chain_per_handler_and_restart_with_a_new_change() {
        let a = Attempts::default();
        assert!(a.previous("u", "h").is_none());
        a.begin("u", "h", 0, Some(cx(1)), at(0));
        a.end(
            "u",
            "h",
            AttemptOutcome::Retrying,
            Some(Duration::from_secs(2)),
            Some("Not yet."),
            at(1),
        );
        a.begin("u", "h", 1, Some(cx(2)), at(3));
        assert_eq!(a.previous("u", "h"), Some(cx(2)));
        let shown = a.of("u", "h");
        assert_eq!(shown.len(), 2);
        assert_eq!(
            shown[0],
            AttemptView {
                attempt: 1,
                started: Some(at(0).to_string()),
                stopped: Some(at(1).to_string()),
                outcome: Some(AttemptOutcome::Retrying),
                delay: Some(2.0),
                message: Some("Not yet.".into()),
                trace_id: Some("01".repeat(16)),
            }
        );
        assert_eq!((shown[1].attempt, shown[1].stopped.clone()), (2, None));
        assert!(a.of("u", "other").is_empty());
        assert_eq!(a.all("u"), [("h".to_owned(), shown.clone())]);
        assert!(a.all("nobody").is_empty());
        assert_eq!(a.owner_of_trace(&"02".repeat(16)).as_deref(), Some("u"));
        assert_eq!(a.last_trace("u", "h"), Some("02".repeat(16)));
        assert_eq!(a.last_trace("u", "other"), None);
        assert_eq!(a.owner_of_trace(&"03".repeat(16)), None);
        assert_eq!(a.owner_of_trace("not hex"), None);
        // A new change starts a new chain; an untraced attempt keeps the last link.
        a.begin("u", "h", 0, None, at(10));
        assert_eq!(a.of("u", "h").len(), 1);
        assert_eq!(a.of("u", "h")[0].trace_id, None);
        assert_eq!(a.previous("u", "h"), Some(cx(2)));
        // A timer's ticks keep the calls before them.
        a.tick("u", "t", 0, None, at(20));
        a.tick("u", "t", 0, None, at(30));
        assert_eq!(a.of("u", "t").len(), 2);
        a.forget("u");
        assert!(a.previous("u", "h").is_none());
    }

    #[test]
    fn an_end_without_a_running_attempt_changes_nothing() {
        let a = Attempts::default();
        a.end("u", "h", AttemptOutcome::Succeeded, None, None, at(1));
        assert_eq!(a.objects(), 0);
        a.begin("u", "h", 0, None, at(0));
        a.end("u", "h", AttemptOutcome::Succeeded, None, None, at(1));
        a.end("u", "h", AttemptOutcome::Failed, None, Some("late"), at(2));
        assert_eq!(a.of("u", "h")[0].outcome, Some(AttemptOutcome::Succeeded));
    }

    #[test]
    fn memory_is_bounded_per_handler_and_in_objects() {
        let a = Attempts::default();
        for n in 0..20 {
            a.begin("u", "h", n, None, at(i64::from(n)));
        }
        let kept: Vec<u32> = a.of("u", "h").iter().map(|x| x.attempt).collect();
        assert_eq!(kept, (15..=20).collect::<Vec<_>>());
        for n in 0..(OBJECTS * 3) {
            a.begin(&format!("o{n}"), "h", 0, None, at(0));
            // "u" stays active: it is never the least recent.
            if n % 100 == 0 {
                a.begin("u", "h", 0, None, at(0));
            }
        }
        assert!(a.objects() <= OBJECTS + OBJECTS / 4, "{}", a.objects());
        assert!(
            !a.of("u", "h").is_empty(),
            "the recently active object is kept"
        );
        assert!(a.of("o0", "h").is_empty(), "the least recent are forgotten");
        assert!(!a.of(&format!("o{}", OBJECTS * 3 - 1), "h").is_empty());
    }
}
