//! Where each handler is in the current cycle: Kopf's `progression.State` and `HandlerState`,
//! over the stored [`ProgressRecord`]s. Immutable-by-value like Kopf's: every step returns the
//! updated state; the current time is a parameter.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::model::Reason;
use crate::outcome::{Outcome, Verdict};
use crate::patch::MergePatch;
use crate::persistence::progress::{self, ProgressRecord, ProgressStorage};

/// The state of one handler (or sub-handler).
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerState {
    /// Part of the current cycle (vs. carried over for counting and purging).
    pub active: bool,
    /// First attempt.
    pub started: Timestamp,
    /// When it became final.
    pub stopped: Option<Timestamp>,
    /// Sleeping until.
    pub delayed: Option<Timestamp>,
    /// The reason of the cycle that created it.
    pub purpose: Option<String>,
    /// Attempts so far.
    pub retries: u32,
    /// Finished successfully.
    pub success: bool,
    /// Finished with a failure.
    pub failure: bool,
    /// Last error text.
    pub message: Option<String>,
    /// Sub-handlers run under it.
    pub subrefs: BTreeSet<String>,
    /// The stored JSON it was read from (`None` when new): only changed records are written.
    pub origin: Option<Value>,
}

impl HandlerState {
    /// A new handler state, first seen now.
    pub fn from_scratch(now: Timestamp, purpose: Option<Reason>) -> Self {
        HandlerState {
            active: true,
            started: now,
            stopped: None,
            delayed: None,
            purpose: purpose.map(|p| p.as_str().to_owned()),
            retries: 0,
            success: false,
            failure: false,
            message: None,
            subrefs: BTreeSet::new(),
            origin: None,
        }
    }

    /// A state as read from storage (passive until selected).
    pub fn from_record(record: &ProgressRecord, origin: Value, now: Timestamp) -> Self {
        HandlerState {
            active: false,
            started: record.started.unwrap_or(now),
            stopped: record.stopped,
            delayed: record.delayed,
            purpose: record.purpose.clone().filter(|p| !p.is_empty()),
            retries: record.retries.unwrap_or(0),
            success: record.success.unwrap_or(false),
            failure: record.failure.unwrap_or(false),
            message: record.message.clone(),
            subrefs: record.subrefs.iter().flatten().cloned().collect(),
            origin: Some(origin),
        }
    }

    /// The stored form.
    pub fn to_record(&self) -> ProgressRecord {
        ProgressRecord {
            started: Some(self.started),
            stopped: self.stopped,
            delayed: self.delayed,
            purpose: self.purpose.clone(),
            retries: Some(self.retries),
            success: Some(self.success),
            failure: Some(self.failure),
            message: self.message.clone(),
            subrefs: (!self.subrefs.is_empty()).then(|| self.subrefs.iter().cloned().collect()),
        }
    }

    /// Succeeded or failed for good.
    pub fn finished(&self) -> bool {
        self.success || self.failure
    }

    /// Not finished, and its delay has not passed yet.
    pub fn sleeping(&self, now: Timestamp) -> bool {
        !self.finished() && self.delayed.is_some_and(|d| d > now)
    }

    /// Due to run now.
    pub fn awakened(&self, now: Timestamp) -> bool {
        !self.finished() && !self.sleeping(now)
    }

    /// Time since the first attempt.
    pub fn runtime(&self, now: Timestamp) -> Duration {
        now.duration_since(self.started)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }

    /// Applies one call's verdict (Kopf's `with_outcome`).
    pub fn with_verdict(&self, verdict: &Verdict, subrefs: &[String], now: Timestamp) -> Self {
        let mut next = self.clone();
        if next.stopped.is_none() && verdict.is_finished() {
            next.stopped = Some(now);
        }
        next.delayed = verdict.delay().map(|d| now + d);
        next.success = matches!(verdict.outcome, Outcome::Succeeded { .. });
        next.failure = matches!(verdict.outcome, Outcome::Failed { .. });
        next.retries += 1;
        next.message = match &verdict.outcome {
            Outcome::Failed { message } | Outcome::Retry { message, .. } => Some(message.clone()),
            Outcome::Succeeded { .. } | Outcome::Pending { .. } => None,
        };
        next.subrefs.extend(subrefs.iter().cloned());
        next
    }
}

impl HandlerState {
    /// Applies the verdict of a call that never reached the service
    /// ([`crate::outcome::undelivered`]): as [`HandlerState::with_verdict`], without a retry
    /// counted.
    pub fn with_undelivered(&self, verdict: &Verdict, now: Timestamp) -> Self {
        let mut next = self.with_verdict(verdict, &[], now);
        next.retries = self.retries;
        next
    }
}

/// Counts of a cycle's handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Succeeded.
    pub success: usize,
    /// Failed.
    pub failure: usize,
    /// Neither yet.
    pub running: usize,
}

/// The state of all handlers of one object in one cycle, in a stable (registration) order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    /// By handler id, in registration order.
    pub handlers: Vec<(String, HandlerState)>,
    /// The current cycle's purpose.
    pub purpose: Option<String>,
}

/// A stored record that cannot be read.
pub type LoadError = (String, progress::Error);

impl State {
    /// Reads the records of `ids` from the object (Kopf's `State.from_storage`).
    ///
    /// # Errors
    /// The first record that is stored but unreadable, with its handler id.
    pub fn load<'a>(
        storage: &ProgressStorage,
        body: &Value,
        ids: impl IntoIterator<Item = &'a str>,
        now: Timestamp,
    ) -> Result<Self, LoadError> {
        let mut handlers = Vec::new();
        for id in ids {
            if let Some(stored) = storage.fetch(id, body).map_err(|e| (id.to_owned(), e))? {
                handlers.push((
                    id.to_owned(),
                    HandlerState::from_record(&stored.record, stored.origin, now),
                ));
            }
        }
        Ok(State {
            handlers,
            purpose: None,
        })
    }

    /// The state of one handler.
    pub fn get(&self, id: &str) -> Option<&HandlerState> {
        self.handlers.iter().find(|(i, _)| i == id).map(|(_, s)| s)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut HandlerState> {
        self.handlers
            .iter_mut()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s)
    }

    /// Sets the cycle's purpose; re-purposes the given handlers (Kopf's `with_purpose`).
    pub fn with_purpose<'a>(
        mut self,
        purpose: Reason,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        for id in ids {
            if let Some(s) = self.get_mut(id) {
                s.purpose = Some(purpose.as_str().to_owned());
            }
        }
        self.purpose = Some(purpose.as_str().to_owned());
        self
    }

    /// Activates the selected handlers, creating states for new ones (Kopf's `with_handlers`).
    pub fn with_handlers<'a>(
        mut self,
        ids: impl IntoIterator<Item = &'a str>,
        now: Timestamp,
    ) -> Self {
        for id in ids {
            match self.get_mut(id) {
                Some(s) => s.active = true,
                None => {
                    let purpose = self.purpose.as_deref().and_then(Reason::parse);
                    self.handlers
                        .push((id.to_owned(), HandlerState::from_scratch(now, purpose)));
                }
            }
        }
        self
    }

    /// Updates one handler's state.
    pub fn set(&mut self, id: &str, state: HandlerState) {
        match self.get_mut(id) {
            Some(s) => *s = state,
            None => self.handlers.push((id.to_owned(), state)),
        }
    }

    /// All active handlers are finished.
    pub fn done(&self) -> bool {
        self.handlers
            .iter()
            .filter(|(_, s)| s.active)
            .all(|(_, s)| s.finished())
    }

    /// Records left from a superseded cause, by purpose (Kopf's `extras`).
    pub fn extras(&self) -> Vec<(String, Counters)> {
        let mut purposes: Vec<&str> = self
            .handlers
            .iter()
            .filter_map(|(_, s)| s.purpose.as_deref())
            .filter(|p| Some(*p) != self.purpose.as_deref())
            .collect();
        purposes.sort_unstable();
        purposes.dedup();
        purposes
            .into_iter()
            .map(|p| {
                let of = self
                    .handlers
                    .iter()
                    .filter(|(_, s)| s.purpose.as_deref() == Some(p));
                (p.to_owned(), count(of.map(|(_, s)| s)))
            })
            .collect()
    }

    /// Counts for the current purpose (Kopf's `counts`).
    pub fn counts(&self) -> Counters {
        count(
            self.handlers.iter().map(|(_, s)| s).filter(|s| {
                self.purpose.is_none() || s.purpose.is_none() || s.purpose == self.purpose
            }),
        )
    }

    /// When the earliest sleeping active handler is due (`Some(0)` for one due now).
    pub fn delay(&self, now: Timestamp) -> Option<Duration> {
        self.handlers
            .iter()
            .filter(|(_, s)| s.active && !s.finished())
            .map(|(_, s)| {
                s.delayed
                    .and_then(|d| d.duration_since(now).try_into().ok())
                    .unwrap_or(Duration::ZERO)
            })
            .min()
    }

    /// Writes the records that changed since they were read (Kopf's `State.store`).
    pub fn store(&self, storage: &ProgressStorage, body: &Value, patch: &mut MergePatch) {
        for (id, s) in &self.handlers {
            storage.store_if_changed(id, &s.to_record(), s.origin.as_ref(), body, patch);
        }
    }

    /// Purges the records of `owned` handlers, of every handler in the state, and of their
    /// sub-handlers (Kopf's `State.purge`).
    pub fn purge<'a>(
        &self,
        storage: &ProgressStorage,
        body: &Value,
        patch: &mut MergePatch,
        owned: impl IntoIterator<Item = &'a str>,
    ) {
        let mut ids: BTreeSet<&str> = owned.into_iter().collect();
        let mut subrefs: BTreeSet<&str> = BTreeSet::new();
        for (id, s) in &self.handlers {
            ids.insert(id);
            subrefs.extend(s.subrefs.iter().map(String::as_str));
        }
        for id in ids.into_iter().chain(subrefs) {
            storage.purge(id, &[], body, patch);
        }
    }
}

fn count<'a>(states: impl Iterator<Item = &'a HandlerState>) -> Counters {
    states.fold(Counters::default(), |mut c, s| {
        if s.success {
            c.success += 1;
        } else if s.failure {
            c.failure += 1;
        } else {
            c.running += 1;
        }
        c
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::outcome::Level;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn verdict(outcome: Outcome) -> Verdict {
        Verdict {
            outcome,
            log: (Level::Info, String::new()),
        }
    }

    #[test]
    fn a_temporary_failure_is_stored_as_kopf_stores_it() {
        let now = t("2026-11-22T01:27:42.807251Z");
        let state = State::default()
            .with_purpose(Reason::Create, [])
            .with_handlers(["create_fn"], now);
        let v = verdict(Outcome::Retry {
            message: "Not ready yet.".into(),
            delay: Some(Duration::from_secs(30)),
        });
        let next = state.get("create_fn").unwrap().with_verdict(&v, &[], now);
        assert_eq!(
            next.to_record().to_json(false),
            r#"{"started":"2026-11-22T01:27:42.807251+00:00","delayed":"2026-11-22T01:28:12.807251+00:00","purpose":"create","retries":1,"success":false,"failure":false,"message":"Not ready yet."}"#
        );
        assert!(next.sleeping(now));
        assert!(next.awakened(now + Duration::from_secs(30)));
    }

    #[test]
    fn a_call_that_never_reached_the_service_is_no_attempt() {
        let now = t("2026-11-22T01:27:42.807251Z");
        let state = State::default()
            .with_purpose(Reason::Create, [])
            .with_handlers(["create_fn"], now);
        let first = state.get("create_fn").unwrap();
        let v = crate::outcome::undelivered(
            "Handler 'create_fn'",
            "the handler service failed: tcp connect error".into(),
            Duration::from_secs(60),
        );
        assert!(
            v.log
                .1
                .contains("could not be called (not counted as an attempt)")
        );
        let next = first.with_undelivered(&v, now).with_undelivered(&v, now);
        assert_eq!(next.retries, 0, "an outage uses up no retries");
        assert_eq!(next.delayed, Some(now + Duration::from_secs(60)));
        assert_eq!(
            next.message.as_deref(),
            Some("the handler service failed: tcp connect error")
        );
        assert!(!next.finished());
        assert_eq!(first.with_verdict(&v, &[], now).retries, 1);
    }

    #[test]
    fn done_purge_and_counts() {
        let now = t("2026-11-22T01:27:42Z");
        let storage = ProgressStorage::default();
        let body = json!({"metadata": {"annotations": {
            "kopf.zalando.org/a": "{\"started\":\"2026-11-22T01:27:42.000000+00:00\",\"purpose\":\"create\",\"retries\":1,\"success\":true,\"failure\":false,\"subrefs\":[\"a/x\"]}",
            "kopf.zalando.org/a.x": "{\"started\":\"2026-11-22T01:27:42.000000+00:00\",\"retries\":1,\"success\":true,\"failure\":false}"
        }}});
        let state = State::load(&storage, &body, ["a", "b"], now)
            .unwrap()
            .with_purpose(Reason::Create, [])
            .with_handlers(["a", "b"], now);
        assert!(!state.done());
        assert_eq!(
            state.counts(),
            Counters {
                success: 1,
                failure: 0,
                running: 1
            }
        );
        let mut patch = MergePatch::new();
        state.purge(&storage, &body, &mut patch, ["a", "b"]);
        assert_eq!(
            patch.into_value(),
            json!({"metadata": {"annotations": {"kopf.zalando.org/a": null, "kopf.zalando.org/a.x": null}}})
        );
    }

    #[test]
    fn extras_are_the_records_of_another_purpose() {
        let now = t("2026-11-22T01:27:42Z");
        let mut state = State::default()
            .with_purpose(Reason::Create, [])
            .with_handlers(["a"], now);
        state.purpose = Some("update".into());
        let extras = state.extras();
        assert_eq!(extras.len(), 1);
        assert_eq!(extras[0].0, "create");
        assert_eq!(extras[0].1.running, 1);
    }
}
