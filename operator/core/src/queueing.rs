//! The per-object slot of the change-handling queue (performed by `runtime::queue`): only the
//! latest state is handled, one cycle per object at a time; what a watch event does to the slot,
//! when a cycle runs, when it waits for our own write to come back through the watch (the
//! consistency wait), when a gone object's slot is forgotten, and when its body is dropped.
//!
//! The slot holds the body as the runtime keeps it (`B`, with its resourceVersion) and times of
//! the runtime's clock (`I`); it never reads a clock.

use std::ops::Add;
use std::time::Duration;

use crate::model::HandlerKind;
use crate::patch::Written;

/// What the watch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Part of a (re)listing.
    Listed,
    /// Added or modified.
    Applied,
    /// Deleted from the cluster.
    Deleted,
}

/// The raw event type a cycle's event handlers are told (`""` for an object of a listing).
pub fn event_type(seen: Seen, is_new: bool) -> &'static str {
    match seen {
        Seen::Listed => "",
        Seen::Applied if is_new => "ADDED",
        Seen::Applied => "MODIFIED",
        Seen::Deleted => "DELETED",
    }
}

/// The consistency mark of an object our write released: never a resourceVersion, so only the
/// object's DELETED (or the consistency timeout) lets the next cycle run.
pub const RELEASED: &str = "(released)";

/// Whether a body at `seen` already reflects our write at `expected`. resourceVersions are
/// opaque, but the API server's are etcd revisions: when both are numbers, a later one also
/// contains our write; otherwise only equality counts.
pub fn reflects(seen: &str, expected: &str) -> bool {
    match (seen.parse::<u64>(), expected.parse::<u64>()) {
        (Ok(seen), Ok(expected)) => seen >= expected,
        _ => seen == expected,
    }
}

/// Whether handlers of these kinds need an object's last body between watch events: raw-event
/// handlers (a DELETED found by a relist), timers and daemons (stopped with the object).
pub fn needs_bodies(kinds: impl IntoIterator<Item = HandlerKind>) -> bool {
    kinds.into_iter().any(|kind| {
        matches!(
            kind,
            HandlerKind::Event | HandlerKind::Timer | HandlerKind::Daemon
        )
    })
}

/// A body that knows its resourceVersion.
pub trait Versioned {
    /// `metadata.resourceVersion`, if any.
    fn resource_version(&self) -> Option<&str>;
}

/// One object's slot.
#[derive(Debug, Clone)]
pub struct Slot<B, I> {
    body: Option<B>,
    events: Vec<&'static str>,
    gone: bool,
    dirty: bool,
    running: bool,
    initial: bool,
    fully_handled: bool,
    expect_rv: Option<(String, I)>,
    /// The watch event that carries exactly our write's version needs no cycle (see
    /// [`Slot::handled`]).
    quiet_echo: bool,
    wake_at: Option<I>,
    /// When the first watch event not yet handled reached the queue (event-to-cycle latency).
    arrived: Option<I>,
}

/// What a worker does next for a slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Next<B, I> {
    /// Nothing to do: the worker ends (the next event or wake-up starts another).
    Idle,
    /// Our own write has not come back through the watch yet: the worker ends, and a wake-up at
    /// this time runs the cycle (unless the write's version comes first).
    Wait(I),
    /// Gone while its body was dropped (not listed again after a relist): no handler needs the
    /// body, only the slot and the object's view go.
    Forget,
    /// Run a cycle on this input.
    Run(Cycle<B, I>),
}

/// The input of one cycle, taken from the slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Cycle<B, I> {
    /// The latest body.
    pub body: B,
    /// The object is gone from the cluster.
    pub gone: bool,
    /// The raw events since the last cycle (see [`event_type`]).
    pub events: Vec<&'static str>,
    /// The object was first seen in the initial listing and never fully handled since.
    pub initial: bool,
    /// When the first of these events reached the queue.
    pub arrived: Option<I>,
}

impl<B, I> Default for Slot<B, I> {
    fn default() -> Self {
        Slot {
            body: None,
            events: Vec::new(),
            gone: false,
            dirty: false,
            running: false,
            initial: false,
            fully_handled: false,
            expect_rv: None,
            quiet_echo: false,
            wake_at: None,
            arrived: None,
        }
    }
}

impl<B: Versioned + Clone, I: Copy + Ord + Add<Duration, Output = I>> Slot<B, I> {
    /// A slot for an object first seen as `seen`: an object of the initial listing is handled
    /// as such (its resuming handlers run) until a cycle handles it fully.
    pub fn new(seen: Seen) -> Self {
        Slot {
            initial: seen == Seen::Listed,
            ..Slot::default()
        }
    }

    /// A watch observation at `now`: the latest state wins; a version that reflects our last
    /// write ends the consistency wait. The echo of a write that left nothing to do (exactly its
    /// version, nothing else pending) is taken without a cycle: the body is the one our write
    /// made, the cycle that wrote it was complete, and a cycle on it would find no cause.
    ///
    /// Returns whether the slot needs a worker (a cycle to run).
    pub fn observe(&mut self, body: B, seen: Seen, is_new: bool, now: I) -> bool {
        if let (Some((expected, _)), Some(rv)) = (&self.expect_rv, body.resource_version())
            && reflects(rv, expected)
        {
            let echo = self.quiet_echo && rv == expected.as_str();
            self.expect_rv = None;
            self.quiet_echo = false;
            if echo && seen == Seen::Applied && !self.dirty && !self.gone && self.wake_at.is_none()
            {
                self.body = None;
                return false;
            }
        }
        self.events.push(event_type(seen, is_new));
        self.gone = seen == Seen::Deleted;
        self.body = Some(body);
        self.dirty = true;
        self.arrived.get_or_insert(now);
        true
    }

    /// A (re)listing did not list the object: it is gone.
    pub fn vanish(&mut self, now: I) {
        self.gone = true;
        self.dirty = true;
        self.events.push("DELETED");
        self.arrived.get_or_insert(now);
    }

    /// Whether to start a worker for the slot (none runs and the queue is not stopping); the
    /// slot counts it as running from now on.
    pub fn claim_worker(&mut self, stopping: bool) -> bool {
        if self.running || stopping {
            return false;
        }
        self.running = true;
        true
    }

    /// Whether to plan a wake-up at `at` (an earlier one will re-plan anyway).
    pub fn plan_wake(&mut self, at: I) -> bool {
        if self.wake_at.is_some_and(|w| w <= at) {
            return false;
        }
        self.wake_at = Some(at);
        true
    }

    /// The wake-up planned for `at` is due: whether it is still the slot's (the slot is then
    /// dirty and needs a worker).
    pub fn woken(&mut self, at: I) -> bool {
        if self.wake_at != Some(at) {
            return false;
        }
        self.wake_at = None;
        self.dirty = true;
        true
    }

    /// What the slot's worker does next, at `now`.
    pub fn next(&mut self, stopping: bool, now: I) -> Next<B, I> {
        if stopping || !self.dirty {
            self.running = false;
            return Next::Idle;
        }
        if let Some((_, deadline)) = self.expect_rv
            && !self.gone
        {
            if now < deadline {
                self.running = false;
                return Next::Wait(deadline);
            }
            self.expect_rv = None;
        }
        self.dirty = false;
        let Some(body) = self.body.clone() else {
            if self.gone {
                return Next::Forget;
            }
            self.running = false;
            return Next::Idle;
        };
        Next::Run(Cycle {
            body,
            gone: self.gone,
            events: std::mem::take(&mut self.events),
            initial: self.initial && !self.fully_handled,
            arrived: self.arrived.take(),
        })
    }

    /// After a cycle of a gone object: whether the slot is done with (nothing new came
    /// meanwhile); otherwise the worker runs again.
    pub fn is_done_with(&self) -> bool {
        self.gone && !self.dirty
    }

    /// After a cycle of a living object at `now`: what it wrote starts the consistency wait
    /// (unless the watch already showed our version), up to `timeout`. `quiet` says that the
    /// cycle left nothing to do on the body it wrote (every handler done, no delay, no raw-event
    /// handler, timer or daemon, no body kept between events): the watch event of exactly that
    /// version then runs no cycle (see [`Slot::observe`]).
    pub fn handled(
        &mut self,
        fully_handled: bool,
        written: Written,
        now: I,
        timeout: Duration,
        quiet: bool,
    ) {
        self.fully_handled |= fully_handled;
        self.quiet_echo = false;
        match written {
            Written::Nothing => {}
            Written::Version(rv) => {
                let seen_already = self
                    .body
                    .as_ref()
                    .and_then(Versioned::resource_version)
                    .is_some_and(|seen| reflects(seen, &rv));
                if !seen_already {
                    self.expect_rv = Some((rv, now + timeout));
                    self.quiet_echo = quiet;
                }
            }
            // Released by our write: only its DELETED (which sets `gone`) ends the wait; no
            // version reflects a mark that is not a version.
            Written::Released if !self.gone => {
                self.expect_rv = Some((RELEASED.to_owned(), now + timeout));
            }
            Written::Released => {}
        }
    }

    /// Drops the body when nothing will run a cycle on it (no event, wake-up or consistency
    /// wait pending) and the handlers do not need it (`needs_bodies`): the next cycle comes with
    /// the next watch event. Holding every object's body would cost ~10 KiB per object.
    pub fn release_body(&mut self, needs_bodies: bool) {
        if !self.dirty && self.wake_at.is_none() && self.expect_rv.is_none() && !needs_bodies {
            self.body = None;
        }
    }

    /// The slot holds a body.
    pub fn has_body(&self) -> bool {
        self.body.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Body(Option<&'static str>);

    impl Versioned for Body {
        fn resource_version(&self) -> Option<&str> {
            self.0
        }
    }

    type S = Slot<Body, Duration>;
    const T: Duration = Duration::from_secs(5);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn run(slot: &mut S, now: Duration) -> Cycle<Body, Duration> {
        match slot.next(false, now) {
            Next::Run(cycle) => cycle,
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    #[test]
    fn later_resource_versions_reflect_our_write() {
        assert!(reflects("10", "10"));
        assert!(reflects("11", "10"));
        assert!(!reflects("9", "10"));
        assert!(reflects("abc", "abc"));
        assert!(!reflects("abd", "abc"));
        assert!(!reflects("10", RELEASED));
    }

    #[test]
    fn events_are_named_and_the_latest_body_wins() {
        let mut slot = S::new(Seen::Applied);
        slot.observe(Body(Some("1")), Seen::Applied, true, s(1));
        slot.observe(Body(Some("2")), Seen::Applied, false, s(2));
        assert!(slot.claim_worker(false));
        assert!(!slot.claim_worker(false), "one worker per object");
        let cycle = run(&mut slot, s(3));
        assert_eq!(cycle.body, Body(Some("2")));
        assert_eq!(cycle.events, ["ADDED", "MODIFIED"]);
        assert_eq!(
            cycle.arrived,
            Some(s(1)),
            "the first unhandled event's arrival"
        );
        assert!(!cycle.initial && !cycle.gone);
        assert_eq!(slot.next(false, s(3)), Next::Idle, "nothing new");
        assert!(slot.claim_worker(false), "idle again");
        assert!(
            !S::new(Seen::Listed).claim_worker(true),
            "not while stopping"
        );
        assert_eq!(event_type(Seen::Listed, true), "");
        assert_eq!(event_type(Seen::Deleted, false), "DELETED");
    }

    #[test]
    fn a_listed_object_is_initial_until_fully_handled() {
        let mut slot = S::new(Seen::Listed);
        slot.observe(Body(None), Seen::Listed, true, s(0));
        assert!(run(&mut slot, s(0)).initial);
        slot.handled(false, Written::Nothing, s(0), T, false);
        slot.observe(Body(None), Seen::Applied, false, s(1));
        assert!(run(&mut slot, s(1)).initial, "not fully handled yet");
        slot.handled(true, Written::Nothing, s(1), T, false);
        slot.observe(Body(None), Seen::Applied, false, s(2));
        assert!(!run(&mut slot, s(2)).initial);
    }

    #[test]
    fn a_cycle_waits_for_its_own_write_until_the_watch_shows_it_or_the_timeout() {
        let mut slot = S::new(Seen::Applied);
        slot.observe(Body(Some("10")), Seen::Applied, true, s(0));
        run(&mut slot, s(0));
        slot.handled(false, Written::Version("11".into()), s(0), T, false);
        // A stale event (our own earlier write) comes: the cycle waits.
        slot.observe(Body(Some("10")), Seen::Applied, false, s(1));
        assert!(slot.claim_worker(false));
        assert_eq!(slot.next(false, s(1)), Next::Wait(s(5)));
        assert!(slot.plan_wake(s(5)));
        // The timeout passes: the cycle runs on what it has.
        assert!(slot.woken(s(5)));
        assert!(slot.claim_worker(false));
        assert_eq!(run(&mut slot, s(5)).body, Body(Some("10")));
        // Our version comes: no wait.
        slot.handled(false, Written::Version("12".into()), s(5), T, false);
        slot.observe(Body(Some("12")), Seen::Applied, false, s(6));
        assert_eq!(run(&mut slot, s(6)).body, Body(Some("12")));
        // Already seen when the cycle ends: no wait at all.
        slot.handled(false, Written::Version("11".into()), s(6), T, false);
        slot.observe(Body(Some("13")), Seen::Applied, false, s(6));
        assert!(matches!(slot.next(false, s(6)), Next::Run(_)));
    }

    #[test]
    fn the_echo_of_a_complete_cycle_runs_no_cycle_and_anything_else_does() {
        let mut slot = S::new(Seen::Applied);
        slot.observe(Body(Some("10")), Seen::Applied, true, s(0));
        run(&mut slot, s(0));
        slot.handled(true, Written::Version("11".into()), s(0), T, true);
        assert_eq!(slot.next(false, s(0)), Next::Idle);
        // Exactly our version: nothing to run, no body kept.
        assert!(!slot.observe(Body(Some("11")), Seen::Applied, false, s(1)));
        assert!(slot.claim_worker(false));
        assert_eq!(slot.next(false, s(1)), Next::Idle);
        assert!(!slot.has_body());
        // The next change runs as usual.
        assert!(slot.observe(Body(Some("12")), Seen::Applied, false, s(2)));
        assert_eq!(run(&mut slot, s(2)).body, Body(Some("12")));

        // A later version than ours (someone wrote after us) is a change.
        slot.handled(true, Written::Version("13".into()), s(2), T, true);
        assert!(slot.observe(Body(Some("14")), Seen::Applied, false, s(3)));
        assert_eq!(run(&mut slot, s(3)).body, Body(Some("14")));

        // An event before the echo is handled on the echo's body.
        slot.handled(true, Written::Version("16".into()), s(3), T, true);
        assert!(slot.observe(Body(Some("15")), Seen::Applied, false, s(4)));
        assert!(slot.observe(Body(Some("16")), Seen::Applied, false, s(4)));
        assert_eq!(run(&mut slot, s(4)).body, Body(Some("16")));

        // A cycle that left something to do (not quiet): its echo runs a cycle.
        slot.handled(false, Written::Version("17".into()), s(4), T, false);
        assert!(slot.observe(Body(Some("17")), Seen::Applied, false, s(5)));
        assert_eq!(run(&mut slot, s(5)).body, Body(Some("17")));

        // A relisting or a deletion with our version is never taken as an echo.
        slot.handled(true, Written::Version("18".into()), s(5), T, true);
        assert!(slot.observe(Body(Some("18")), Seen::Listed, false, s(6)));
        run(&mut slot, s(6));
        slot.handled(true, Written::Version("19".into()), s(6), T, true);
        assert!(slot.observe(Body(Some("19")), Seen::Deleted, false, s(7)));
        assert!(run(&mut slot, s(7)).gone);
    }

    #[test]
    fn a_released_object_waits_for_its_deletion_only() {
        let mut slot = S::new(Seen::Applied);
        slot.observe(Body(Some("10")), Seen::Applied, true, s(0));
        run(&mut slot, s(0));
        slot.handled(false, Written::Released, s(0), T, false);
        slot.observe(Body(Some("999")), Seen::Applied, false, s(1));
        assert_eq!(
            slot.next(false, s(1)),
            Next::Wait(s(5)),
            "no version ends it"
        );
        slot.observe(Body(Some("1000")), Seen::Deleted, false, s(2));
        let cycle = run(&mut slot, s(2));
        assert!(cycle.gone);
        assert!(slot.is_done_with());
        // Released when already gone: nothing to wait for.
        let mut gone = S::new(Seen::Applied);
        gone.observe(Body(None), Seen::Deleted, true, s(0));
        run(&mut gone, s(0));
        gone.handled(false, Written::Released, s(0), T, false);
        gone.observe(Body(None), Seen::Applied, false, s(1));
        assert!(matches!(gone.next(false, s(1)), Next::Run(_)));
    }

    #[test]
    fn wake_ups_keep_the_earliest_and_stale_ones_do_nothing() {
        let mut slot = S::new(Seen::Applied);
        assert!(slot.plan_wake(s(10)));
        assert!(!slot.plan_wake(s(20)), "an earlier one re-plans");
        assert!(slot.plan_wake(s(5)));
        assert!(!slot.woken(s(10)), "superseded");
        assert!(slot.woken(s(5)));
        assert!(!slot.woken(s(5)), "once");
    }

    #[test]
    fn bodies_are_dropped_when_nothing_needs_them_and_a_vanished_bodiless_object_is_forgotten() {
        let mut slot = S::new(Seen::Applied);
        slot.observe(Body(Some("1")), Seen::Applied, true, s(0));
        run(&mut slot, s(0));
        slot.release_body(true);
        assert!(
            slot.has_body(),
            "timers, daemons and event handlers need it"
        );
        slot.plan_wake(s(9));
        slot.release_body(false);
        assert!(slot.has_body(), "a wake-up will run a cycle on it");
        slot.woken(s(9));
        run(&mut slot, s(9));
        slot.release_body(false);
        assert!(!slot.has_body());
        slot.vanish(s(10));
        assert!(slot.claim_worker(false));
        assert_eq!(slot.next(false, s(10)), Next::Forget);
        // Without a body and not gone: nothing to run.
        let mut slot = S::new(Seen::Applied);
        slot.woken(s(0));
        slot.plan_wake(s(1));
        slot.woken(s(1));
        assert_eq!(slot.next(false, s(1)), Next::Idle);
    }

    #[test]
    fn handlers_of_some_kinds_need_bodies() {
        assert!(needs_bodies([HandlerKind::Create, HandlerKind::Timer]));
        assert!(needs_bodies([HandlerKind::Event]));
        assert!(!needs_bodies([HandlerKind::Create, HandlerKind::Update]));
        assert!(!needs_bodies([]));
    }
}
