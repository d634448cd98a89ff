//! Who may handle objects when several cores run: leader election over a coordination.k8s.io
//! Lease, and Kopf's peering (`KopfPeering`/`ClusterKopfPeering` objects, priorities).
//!
//! Both decisions are pure: the runtime reads the object, passes the time, and writes what these
//! functions say.
//!
//! **Leases** follow client-go's leader election: a candidate never compares the holder's
//! `renewTime` with its own wall clock (clocks of two machines disagree); it notes when *it*
//! last saw the record change and takes the Lease over only when the record has stayed the same
//! for a whole `leaseDurationSeconds` of its own (monotonic) time. The holder renews well within
//! that, and gives up — stops handling — when it could not renew for its renew deadline, which is
//! shorter than the lease duration: the old leader has stopped before a new one may start.
//!
//! **Kopf's peering** is Kopf's exactly (`kopf/_core/engines/peering.py` of Kopf 1.45.2): each
//! operator keeps `status.<identity>: {priority, lifetime, lastseen}` fresh on the peering
//! object; an operator pauses while a live peer has a higher priority, and every operator pauses
//! while live peers share its priority; dead peers (`lastseen + lifetime` passed) are removed by
//! whoever sees them. Kopf compares `lastseen` with the wall clock, and so must we to interoperate.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

/// What a Lease says, as far as the election goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `spec.holderIdentity`; `None` or empty: nobody holds it (released).
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
}

/// What a candidate does with a Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// It is ours: write a new `renewTime`.
    Renew,
    /// Take it: write ourselves as the holder, with this `leaseTransitions`. For an absent
    /// Lease: create it.
    Acquire {
        /// The new `spec.leaseTransitions`.
        transitions: i32,
    },
    /// Another holder's Lease that has not expired by our clock: look again later.
    Wait {
        /// How long until it would expire if it stays the same.
        remaining: Duration,
    },
}

/// Decides for candidate `me`, given the Lease (`None`: there is none) and for how long (by
/// our own clock) we have seen this very record unchanged.
#[must_use]
pub fn decide_lease(
    me: &str,
    lease: Option<&LeaseRecord>,
    unchanged_for: Duration,
) -> LeaseDecision {
    let Some(lease) = lease else {
        return LeaseDecision::Acquire { transitions: 0 };
    };
    match lease.holder.as_deref() {
        Some(holder) if holder == me => LeaseDecision::Renew,
        None | Some("") => LeaseDecision::Acquire {
            transitions: lease.transitions.saturating_add(1),
        },
        Some(_) if unchanged_for >= lease.duration => LeaseDecision::Acquire {
            transitions: lease.transitions.saturating_add(1),
        },
        Some(_) => LeaseDecision::Wait {
            remaining: lease.duration.saturating_sub(unchanged_for),
        },
    }
}

/// The timing of a leader election (controller-runtime's defaults: 15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a standby waits on an unchanged Lease before taking it over.
    pub duration: Duration,
    /// How long a leader keeps handling without a successful renewal.
    pub renew_deadline: Duration,
    /// How often candidates look and leaders renew.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// Refuses timings that allow two leaders: the renew deadline must end before the lease
    /// expires for the others, and renewals must come more often than the deadline.
    ///
    /// # Errors
    /// A message naming the flags that disagree.
    pub fn check(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("--retry-period must be more than 0".to_owned());
        }
        if self.renew_deadline >= self.duration {
            return Err(format!(
                "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?}): a leader must stop before the others may take over",
                self.renew_deadline, self.duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--retry-period ({:?}) must be shorter than --renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// One peer as Kopf's peering object lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The key in `status`.
    pub identity: String,
    /// `priority` (Kopf's default 0).
    pub priority: i64,
    /// `lifetime` in seconds (Kopf's default 60).
    pub lifetime: i64,
    /// `lastseen`; absent: now (as Kopf reads it).
    pub lastseen: Timestamp,
}

impl Peer {
    /// When it is presumed dead: `lastseen + lifetime`.
    #[must_use]
    pub fn deadline(&self) -> Timestamp {
        self.lastseen
            .saturating_add(jiff::SignedDuration::from_secs(self.lifetime))
            .unwrap_or(self.lastseen)
    }

    /// Kopf's `repr` of a peer, as its log lines show it:
    /// `<Peer id: priority=200, lifetime=60, lastseen='2026-12-05T12:00:00+00:00'>`.
    #[must_use]
    pub fn repr(&self) -> String {
        format!(
            "<Peer {}: priority={}, lifetime={}, lastseen='{}'>",
            self.identity,
            self.priority,
            self.lifetime,
            format_time(self.lastseen)
        )
    }

    /// Kopf's `is_dead`: the deadline is not after `now`.
    #[must_use]
    pub fn is_dead(&self, now: Timestamp) -> bool {
        self.deadline() <= now
    }
}

/// The peers in a peering object's `status` (entries that are not objects are skipped, as
/// Kopf would fail on them; unreadable `lastseen` counts as now, an unreadable number as the
/// default).
#[must_use]
pub fn peers(status: Option<&Value>, now: Timestamp) -> Vec<Peer> {
    let Some(Value::Object(status)) = status else {
        return Vec::new();
    };
    status
        .iter()
        .filter_map(|(identity, info)| {
            let info = info.as_object()?;
            Some(Peer {
                identity: identity.clone(),
                priority: int_field(info, "priority").unwrap_or(0),
                lifetime: int_field(info, "lifetime").unwrap_or(60),
                lastseen: info
                    .get("lastseen")
                    .and_then(Value::as_str)
                    .and_then(parse_time)
                    .unwrap_or(now),
            })
        })
        .collect()
}

fn int_field(info: &Map<String, Value>, key: &str) -> Option<i64> {
    match info.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads `lastseen` as Kopf does (`iso8601.parse_date`; a naive time is UTC).
#[must_use]
pub fn parse_time(text: &str) -> Option<Timestamp> {
    crate::persistence::time::parse(text).ok()
}

/// `lastseen` as Kopf writes it: `datetime.isoformat()` of an aware UTC time
/// (`2026-12-05T17:40:00.123456+00:00`; no fraction when the microseconds are zero).
#[must_use]
pub fn format_time(ts: Timestamp) -> String {
    crate::persistence::time::format_touch(ts)
}

/// The merge patch that keeps our record (`lifetime` 0: removes it, as Kopf does on exit).
#[must_use]
pub fn keepalive_patch(identity: &str, priority: i64, lifetime: i64, now: Timestamp) -> Value {
    let record = if lifetime <= 0 {
        Value::Null
    } else {
        json!({"priority": priority, "lifetime": lifetime, "lastseen": format_time(now)})
    };
    json!({"status": {identity: record}})
}

/// The merge patch that removes dead peers; `None` when there are none.
#[must_use]
pub fn cleanup_patch(dead: &[String]) -> Option<Value> {
    if dead.is_empty() {
        return None;
    }
    let status: Map<String, Value> = dead.iter().map(|id| (id.clone(), Value::Null)).collect();
    Some(json!({ "status": status }))
}

/// Why an operator pauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeeringPause {
    /// Live peers of a higher priority.
    Higher(Vec<Peer>),
    /// Live peers of the same priority: everyone pauses.
    Same(Vec<Peer>),
}

impl PeeringPause {
    /// The peers, as Kopf's log lines list them (`[<Peer …>, …]`).
    #[must_use]
    pub fn repr(&self) -> String {
        let (PeeringPause::Higher(peers) | PeeringPause::Same(peers)) = self;
        let peers: Vec<String> = peers.iter().map(Peer::repr).collect();
        format!("[{}]", peers.join(", "))
    }

    /// The peers' identities.
    #[must_use]
    pub fn identities(&self) -> Vec<&str> {
        let (PeeringPause::Higher(peers) | PeeringPause::Same(peers)) = self;
        peers.iter().map(|p| p.identity.as_str()).collect()
    }
}

/// What a peering object means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeeringVerdict {
    /// `Some`: pause; `None`: handle.
    pub pause: Option<PeeringPause>,
    /// Dead peers to remove (ours included if our own record died).
    pub dead: Vec<String>,
    /// When the earliest blocking peer expires if it is not renewed (re-evaluate then).
    pub recheck_at: Option<Timestamp>,
}

/// Kopf's `process_peering_event`, for `me` with `priority`.
#[must_use]
pub fn evaluate_peering(
    status: Option<&Value>,
    me: &str,
    priority: i64,
    now: Timestamp,
) -> PeeringVerdict {
    let all = peers(status, now);
    let mut dead: Vec<String> = all
        .iter()
        .filter(|p| p.is_dead(now))
        .map(|p| p.identity.clone())
        .collect();
    dead.sort();
    let live: Vec<&Peer> = all
        .iter()
        .filter(|p| !p.is_dead(now) && p.identity != me)
        .collect();
    let higher: Vec<&Peer> = live
        .iter()
        .copied()
        .filter(|p| p.priority > priority)
        .collect();
    let same: Vec<&Peer> = live
        .iter()
        .copied()
        .filter(|p| p.priority == priority)
        .collect();
    let owned = |ps: &[&Peer]| ps.iter().map(|p| (*p).clone()).collect::<Vec<_>>();
    let pause = if !higher.is_empty() {
        Some(PeeringPause::Higher(owned(&higher)))
    } else if !same.is_empty() {
        Some(PeeringPause::Same(owned(&same)))
    } else {
        None
    };
    let recheck_at = higher.iter().chain(&same).map(|p| p.deadline()).min();
    PeeringVerdict {
        pause,
        dead,
        recheck_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_owned),
            duration: Duration::from_secs(15),
            transitions: 3,
        }
    }

    #[test]
    fn an_absent_lease_is_created() {
        assert_eq!(
            decide_lease("me", None, Duration::ZERO),
            LeaseDecision::Acquire { transitions: 0 }
        );
    }

    #[test]
    fn our_own_lease_is_renewed_whatever_its_age() {
        let l = lease(Some("me"));
        assert_eq!(
            decide_lease("me", Some(&l), Duration::from_secs(100)),
            LeaseDecision::Renew
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        for holder in [None, Some("")] {
            assert_eq!(
                decide_lease("me", Some(&lease(holder)), Duration::ZERO),
                LeaseDecision::Acquire { transitions: 4 }
            );
        }
    }

    #[test]
    fn another_holder_is_waited_for_a_whole_lease_duration_of_our_own_clock() {
        let l = lease(Some("other"));
        assert_eq!(
            decide_lease("me", Some(&l), Duration::from_secs(14)),
            LeaseDecision::Wait {
                remaining: Duration::from_secs(1)
            }
        );
        assert_eq!(
            decide_lease("me", Some(&l), Duration::from_secs(15)),
            LeaseDecision::Acquire { transitions: 4 }
        );
    }

    #[test]
    fn timings_that_allow_two_leaders_are_refused() {
        assert!(LeaseTiming::default().check().is_ok());
        let bad = LeaseTiming {
            renew_deadline: Duration::from_secs(15),
            ..LeaseTiming::default()
        };
        assert!(bad.check().unwrap_err().contains("--renew-deadline"));
        let bad = LeaseTiming {
            retry_period: Duration::from_secs(10),
            ..LeaseTiming::default()
        };
        assert!(bad.check().unwrap_err().contains("--retry-period"));
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn times_read_and_write_as_pythons_isoformat() {
        let t = at("2026-12-05T17:40:00.123456Z");
        assert_eq!(format_time(t), "2026-12-05T17:40:00.123456+00:00");
        assert_eq!(
            format_time(at("2026-12-05T17:40:00Z")),
            "2026-12-05T17:40:00+00:00"
        );
        assert_eq!(parse_time("2026-12-05T17:40:00.123456+00:00"), Some(t));
        assert_eq!(parse_time("2026-12-05T17:40:00.123456"), Some(t));
        assert_eq!(parse_time("junk"), None);
    }

    #[test]
    fn higher_priority_peers_pause_us_same_priority_pauses_all() {
        let now = at("2026-12-05T12:00:30Z");
        let status = json!({
            "me": {"priority": 100, "lifetime": 60, "lastseen": "2026-12-05T12:00:00+00:00"},
            "high": {"priority": 200, "lifetime": 60, "lastseen": "2026-12-05T12:00:10+00:00"},
            "low": {"priority": 1, "lifetime": 60, "lastseen": "2026-12-05T12:00:00+00:00"},
        });
        let v = evaluate_peering(Some(&status), "me", 100, now);
        let pause = v.pause.clone().expect("paused");
        assert!(matches!(pause, PeeringPause::Higher(_)));
        assert_eq!(pause.identities(), ["high"]);
        assert_eq!(
            pause.repr(),
            "[<Peer high: priority=200, lifetime=60, lastseen='2026-12-05T12:00:10+00:00'>]"
        );
        assert_eq!(v.recheck_at, Some(at("2026-12-05T12:01:10Z")));
        assert!(v.dead.is_empty());

        let v = evaluate_peering(Some(&status), "high", 200, now);
        assert_eq!(v.pause, None);

        let status = json!({"a": {"priority": 5}, "b": {"priority": 5}});
        let v = evaluate_peering(Some(&status), "a", 5, now);
        let pause = v.pause.expect("paused");
        assert!(matches!(pause, PeeringPause::Same(_)));
        assert_eq!(pause.identities(), ["b"]);
    }

    #[test]
    fn dead_peers_do_not_pause_and_are_cleaned() {
        let now = at("2026-12-05T12:02:00Z");
        let status = json!({
            "old": {"priority": 999, "lifetime": 60, "lastseen": "2026-12-05T12:00:00+00:00"},
            "gone": {"priority": 999, "lifetime": 0},
        });
        let v = evaluate_peering(Some(&status), "me", 0, now);
        assert_eq!(v.pause, None);
        assert_eq!(v.dead, vec!["gone".to_owned(), "old".to_owned()]);
        assert_eq!(
            cleanup_patch(&v.dead),
            Some(json!({"status": {"gone": null, "old": null}}))
        );
        assert_eq!(cleanup_patch(&[]), None);
    }

    #[test]
    fn our_keepalive_is_kopfs_record_and_lifetime_zero_removes_it() {
        let now = at("2026-12-05T12:00:00.5Z");
        assert_eq!(
            keepalive_patch("me@host", 200, 60, now),
            json!({"status": {"me@host": {"priority": 200, "lifetime": 60, "lastseen": "2026-12-05T12:00:00.500000+00:00"}}})
        );
        assert_eq!(
            keepalive_patch("me@host", 200, 0, now),
            json!({"status": {"me@host": null}})
        );
    }
}
