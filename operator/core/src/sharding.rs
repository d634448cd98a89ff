//! Sharding: every replica of the core handles a share of the objects (`operon run
//! --shards-ring`), with the labels, Leases and hash ring of timebertt/kubernetes-controller-sharding
//! (its `pkg/sharding/consistenthash`, `pkg/sharding/key`, `pkg/shard/lease`), so that its
//! sharder could drive Operon's shards too.
//!
//! - **Members**: each shard keeps a Lease named after itself, held by itself and labelled
//!   [`RING_LABEL`]`=<ring>`. A shard is a live member while its Lease is held by itself and has
//!   changed within its `leaseDurationSeconds` — measured by the *reader's* clock, as client-go's
//!   leader election measures it ([`ShardLease::live`]).
//! - **Ring**: 100 tokens per member, `xxhash64("<member>-<i>")`; an object goes to the member
//!   of the first token at or after `xxhash64(key)` ([`Ring`]). The key is
//!   `group/kind/namespace/name` — of the object's controller when it has one, so that children
//!   follow their owner ([`ring_key`]).
//! - **Assignment**: an object belongs to the shard named by its label [`shard_label`]; a shard
//!   handles only those. The drain label [`drain_label`] asks the owner to stop and give the
//!   object up.
//! - **Handovers** ([`Handovers`]): an object a shard gave up must not be handled by it again
//!   until it is really assigned to it again — events from before the handover may still be in
//!   flight.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use serde_json::Value;
use xxhash_rust::xxh64::xxh64;

/// The label of a shard's Lease naming its ring.
pub const RING_LABEL: &str = "alpha.sharding.timebertt.dev/controllerring";
/// The prefix of the label naming an object's shard (`<prefix><ring>`).
pub const SHARD_LABEL_PREFIX: &str = "shard.alpha.sharding.timebertt.dev/";
/// The prefix of the label asking an object's shard to give it up (`<prefix><ring>`).
pub const DRAIN_LABEL_PREFIX: &str = "drain.alpha.sharding.timebertt.dev/";
/// Tokens (virtual nodes) per member on the ring.
pub const TOKENS_PER_SHARD: usize = 100;

/// The label naming an object's shard in `ring`.
pub fn shard_label(ring: &str) -> String {
    format!("{SHARD_LABEL_PREFIX}{ring}")
}

/// The label asking an object's shard in `ring` to give it up.
pub fn drain_label(ring: &str) -> String {
    format!("{DRAIN_LABEL_PREFIX}{ring}")
}

/// A label that sharding writes (not part of what an object's handlers see as changed).
pub fn is_sharding_label(key: &str) -> bool {
    key.starts_with(SHARD_LABEL_PREFIX) || key.starts_with(DRAIN_LABEL_PREFIX)
}

/// The consistent hash ring over the live members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    /// Sorted tokens, each with the index of its member.
    tokens: Vec<(u64, usize)>,
    /// The members, sorted.
    members: Vec<String>,
}

impl Ring {
    /// The ring of `members` (duplicates count once).
    pub fn new(members: impl IntoIterator<Item = String>) -> Ring {
        let mut members: Vec<String> = members.into_iter().collect();
        members.sort();
        members.dedup();
        let mut tokens = Vec::with_capacity(members.len() * TOKENS_PER_SHARD);
        for (index, member) in members.iter().enumerate() {
            for i in 0..TOKENS_PER_SHARD {
                tokens.push((xxh64(format!("{member}-{i}").as_bytes(), 0), index));
            }
        }
        tokens.sort_unstable();
        Ring { tokens, members }
    }

    /// The members, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Whether `member` is on the ring.
    pub fn contains(&self, member: &str) -> bool {
        self.members.iter().any(|m| m == member)
    }

    /// The member that `key` belongs to; `None` on an empty ring.
    pub fn owner(&self, key: &str) -> Option<&str> {
        let hash = xxh64(key.as_bytes(), 0);
        let at = self.tokens.partition_point(|(token, _)| *token < hash);
        let (_, index) = self.tokens.get(at).or_else(|| self.tokens.first())?;
        Some(self.members[*index].as_str())
    }
}

/// The ring key of an object of kind `kind` in API group `group` (empty: the core group):
/// `group/kind/namespace/name` of its controller (the owner reference with `controller: true`)
/// when it has one, else its own. An object without a name (only `generateName`) cannot be
/// placed.
pub fn ring_key(group: &str, kind: &str, body: &Value) -> Result<String, String> {
    fn text<'a>(v: &'a Value, path: &str) -> &'a str {
        v.pointer(path).and_then(Value::as_str).unwrap_or_default()
    }
    let controller = body
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
        .map(|owner| Controller {
            api_version: text(owner, "/apiVersion"),
            kind: text(owner, "/kind"),
            name: text(owner, "/name"),
        });
    ring_key_of(
        group,
        kind,
        text(body, "/metadata/namespace"),
        text(body, "/metadata/name"),
        controller,
    )
}

/// An object's controller (its owner reference with `controller: true`).
#[derive(Debug, Clone, Copy)]
pub struct Controller<'a> {
    /// `apiVersion`.
    pub api_version: &'a str,
    /// `kind`.
    pub kind: &'a str,
    /// `name`.
    pub name: &'a str,
}

/// [`ring_key`] from the parts of an object.
pub fn ring_key_of(
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    controller: Option<Controller<'_>>,
) -> Result<String, String> {
    if let Some(owner) = controller {
        if owner.api_version.is_empty() || owner.kind.is_empty() || owner.name.is_empty() {
            return Err("the controller reference lacks its apiVersion, kind or name".into());
        }
        let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        return Ok(format!("{group}/{}/{namespace}/{}", owner.kind, owner.name));
    }
    if name.is_empty() {
        return Err("the object has no name".into());
    }
    Ok(format!("{group}/{kind}/{namespace}/{name}"))
}

/// A shard Lease as a member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLease {
    /// The Lease's name: the shard's identity.
    pub name: String,
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// How long the reader has seen the record unchanged (its own clock).
    pub unchanged_for: Duration,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
}

impl ShardLease {
    /// A live member: the Lease is held by its shard and was renewed within its duration. A
    /// released Lease (no holder) or one taken over (by the sharder, marking the shard dead) is
    /// not live.
    pub fn live(&self) -> bool {
        self.holder.as_deref() == Some(self.name.as_str()) && self.unchanged_for < self.duration
    }
}

/// The live members among `leases`, sorted.
pub fn live_members(leases: &[ShardLease]) -> Vec<String> {
    let mut live: Vec<String> = leases
        .iter()
        .filter(|l| l.live())
        .map(|l| l.name.clone())
        .collect();
    live.sort();
    live
}

/// What an object's labels say about it, for shard `me` of `ring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Assigned to `me`: handle it.
    Mine,
    /// Assigned to `me`, and the sharder asks for it back: stop, then remove both labels.
    DrainRequested,
    /// Assigned to another shard, or to none.
    NotMine,
}

/// The ownership of an object with `body`, for shard `me` of `ring`.
pub fn ownership(body: &Value, ring: &str, me: &str) -> Ownership {
    let labels = body.pointer("/metadata/labels").and_then(Value::as_object);
    ownership_by(
        |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str),
        ring,
        me,
    )
}

/// [`ownership`] from a lookup of the object's labels.
pub fn ownership_by<'a>(
    label: impl Fn(&str) -> Option<&'a str>,
    ring: &str,
    me: &str,
) -> Ownership {
    if label(&shard_label(ring)) != Some(me) {
        return Ownership::NotMine;
    }
    if label(&drain_label(ring)).is_some() {
        Ownership::DrainRequested
    } else {
        Ownership::Mine
    }
}

/// Where an object that `me` owns belongs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Here.
    Stay,
    /// With that member: hand it over.
    Move(String),
}

/// Where an object of ring key `key`, owned by `me`, belongs on `ring`. While `me` is not on the
/// ring (its own Lease not seen yet), nothing moves.
pub fn placement(ring: &Ring, key: &str, me: &str) -> Placement {
    match ring.owner(key) {
        Some(owner) if owner != me && ring.contains(me) => Placement::Move(owner.to_owned()),
        _ => Placement::Stay,
    }
}

/// Whether `me` takes an object of ring key `key` whose shard label says `current`: it is
/// unassigned or assigned to a shard that is no longer live, and the ring places it with `me`.
pub fn should_claim(ring: &Ring, key: &str, me: &str, current: Option<&str>) -> bool {
    let orphaned = current.is_none_or(|c| c.is_empty() || !ring.contains(c));
    orphaned && ring.owner(key) == Some(me)
}

/// The objects a shard handed over, until they are really assigned to it again.
///
/// After a handover (the labels patched to another shard, or removed for the sharder), events
/// from before the patch may still arrive: a watch event in flight, or a listing that began
/// before it. None of them may start work here. An object counts as back only when it is seen
/// assigned here *after* the handover: in a watch event after its exit event (the watch said it
/// left the selection), or in a listing that began after the patch.
#[derive(Debug, Clone)]
pub struct Handovers<K, T> {
    entries: HashMap<K, Handover<T>>,
}

impl<K, T> Default for Handovers<K, T> {
    fn default() -> Self {
        Handovers {
            entries: HashMap::new(),
        }
    }
}

/// One object's handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handover<T> {
    /// Its work is being stopped; the labels are not patched yet.
    Draining,
    /// Patched away at that time; its exit not seen yet.
    Patched(T),
    /// Patched away at that time, and seen leaving.
    Exited(T),
}

impl<K: Hash + Eq + Clone, T: Ord + Copy> Handovers<K, T> {
    /// Starts handing `key` over; false when it already is.
    pub fn begin(&mut self, key: &K) -> bool {
        if self.entries.contains_key(key) {
            return false;
        }
        self.entries.insert(key.clone(), Handover::Draining);
        true
    }

    /// The labels were patched away at `at`.
    pub fn patched(&mut self, key: &K, at: T) {
        if let Some(entry) = self.entries.get_mut(key) {
            *entry = Handover::Patched(at);
        }
    }

    /// The handover failed (the object is still ours): work on it may go on.
    pub fn abandon(&mut self, key: &K) {
        if self.entries.get(key) == Some(&Handover::Draining) {
            self.entries.remove(key);
        }
    }

    /// No work may start on `key` here.
    pub fn is_handed_over(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// How many objects are being handed over or not seen back yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// None.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A watch event (not a listing) showed `key`; `mine`: assigned here.
    pub fn applied(&mut self, key: &K, mine: bool) {
        if mine && matches!(self.entries.get(key), Some(Handover::Exited(_))) {
            self.entries.remove(key);
        }
    }

    /// A watch event said `key` left (deleted, or no longer selected).
    pub fn left(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key)
            && let Handover::Patched(at) = *entry
        {
            *entry = Handover::Exited(at);
        }
    }

    /// A listing that began at `started` showed `key`; `mine`: assigned here.
    pub fn listed(&mut self, key: &K, mine: bool, started: T) {
        match self.entries.get(key) {
            Some(Handover::Patched(at) | Handover::Exited(at)) if mine && started > *at => {
                self.entries.remove(key);
            }
            _ => {}
        }
    }

    /// A listing that began at `started` is complete; `covers(key)`: the listing was of the
    /// key's scope, `listed(key)`: the key was in it. Handovers patched before the listing
    /// began and missing from it have left.
    pub fn listing_done(
        &mut self,
        started: T,
        covers: impl Fn(&K) -> bool,
        listed: impl Fn(&K) -> bool,
    ) {
        for (key, entry) in &mut self.entries {
            if let Handover::Patched(at) = *entry
                && started > at
                && covers(key)
                && !listed(key)
            {
                *entry = Handover::Exited(at);
            }
        }
    }

    /// Forgets handovers that left before `before` (an object given away and never back).
    pub fn expire(&mut self, before: T) {
        self.entries
            .retain(|_, entry| !matches!(entry, Handover::Exited(at) if *at < before));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring(members: &[&str]) -> Ring {
        Ring::new(members.iter().map(|m| (*m).to_owned()))
    }

    /// Figures computed with timebertt/kubernetes-controller-sharding's ring
    /// (`consistenthash.New(xxhash.Sum64, 100, ...)`, github.com/cespare/xxhash/v2 v2.3.0): the
    /// same keys land on the same members.
    #[test]
    fn the_ring_places_keys_as_the_sharders_ring_does() {
        assert_eq!(xxh64(b"core-0-0", 0), 4_296_339_365_543_222_772);
        let (three, four) = (
            ring(&["core-0", "core-1", "core-2"]),
            ring(&["core-2", "core-3", "core-0", "core-1"]),
        );
        for (key, in_three, in_four) in [
            ("example.com/Widget/ns1/w-000", "core-0", "core-0"),
            ("example.com/Widget/ns1/w-001", "core-0", "core-0"),
            ("example.com/Widget/ns1/w-002", "core-2", "core-2"),
            ("/ConfigMap/default/a", "core-1", "core-1"),
            ("apps/Deployment/kube-system/coredns", "core-2", "core-3"),
            ("example.com/Widget//cluster-wide", "core-1", "core-3"),
        ] {
            assert_eq!(three.owner(key), Some(in_three), "{key} on three");
            assert_eq!(four.owner(key), Some(in_four), "{key} on four");
        }
        // 2,000 keys: the sharder's ring gives 590/640/770 on three members, 455/524/551/470
        // on four, and moves 470 keys — each to the new member.
        let mut counts3: HashMap<&str, usize> = HashMap::new();
        let mut counts4: HashMap<&str, usize> = HashMap::new();
        let mut moved = 0;
        for i in 0..2000 {
            let key = format!("example.com/Widget/ns1/w-{i:04}");
            let (a, b) = (three.owner(&key).unwrap(), four.owner(&key).unwrap());
            *counts3.entry(a).or_default() += 1;
            *counts4.entry(b).or_default() += 1;
            if a != b {
                moved += 1;
                assert_eq!(b, "core-3", "a key moves only to the new member");
            }
        }
        assert_eq!(
            [counts3["core-0"], counts3["core-1"], counts3["core-2"]],
            [590, 640, 770]
        );
        assert_eq!(
            [
                counts4["core-0"],
                counts4["core-1"],
                counts4["core-2"],
                counts4["core-3"]
            ],
            [455, 524, 551, 470]
        );
        assert_eq!(moved, 470);
        assert_eq!(Ring::default().owner("x"), None);
    }

    #[test]
    fn children_hash_by_their_controller() {
        let own = json!({"metadata": {"namespace": "ns", "name": "w1"}});
        assert_eq!(
            ring_key("example.com", "Widget", &own).unwrap(),
            "example.com/Widget/ns/w1"
        );
        let child = json!({"metadata": {"namespace": "ns", "name": "w1-cm", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Secret", "name": "other"},
            {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1", "controller": true},
        ]}});
        assert_eq!(
            ring_key("", "ConfigMap", &child).unwrap(),
            "example.com/Widget/ns/w1"
        );
        let core_owner = json!({"metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n1", "controller": true},
        ]}});
        assert_eq!(ring_key("", "Pod", &core_owner).unwrap(), "/Node//n1");
        assert!(ring_key("", "Pod", &json!({"metadata": {"generateName": "p-"}})).is_err());
        let broken = json!({"metadata": {"name": "p", "ownerReferences": [{"controller": true}]}});
        assert!(ring_key("", "Pod", &broken).is_err());
    }

    #[test]
    fn a_member_is_live_while_it_holds_its_lease_and_renews_it() {
        let lease = |holder: Option<&str>, unchanged: u64| ShardLease {
            name: "core-0".into(),
            holder: holder.map(str::to_owned),
            unchanged_for: Duration::from_secs(unchanged),
            duration: Duration::from_secs(15),
        };
        assert!(lease(Some("core-0"), 14).live());
        assert!(!lease(Some("core-0"), 15).live(), "expired");
        assert!(!lease(None, 0).live(), "released");
        assert!(
            !lease(Some("sharder"), 0).live(),
            "taken by the sharder: dead"
        );
        let mut other = lease(Some("core-1"), 1);
        other.name = "core-1".into();
        assert_eq!(
            live_members(&[other, lease(Some("core-0"), 1)]),
            ["core-0", "core-1"]
        );
    }

    #[test]
    fn labels_say_whose_an_object_is() {
        let body = |labels: Value| json!({"metadata": {"labels": labels}});
        let shard = shard_label("r");
        let drain = drain_label("r");
        assert_eq!(
            ownership(&body(json!({&shard: "a"})), "r", "a"),
            Ownership::Mine
        );
        assert_eq!(
            ownership(&body(json!({&shard: "a", &drain: "true"})), "r", "a"),
            Ownership::DrainRequested
        );
        assert_eq!(
            ownership(&body(json!({&shard: "b"})), "r", "a"),
            Ownership::NotMine
        );
        assert_eq!(ownership(&json!({}), "r", "a"), Ownership::NotMine);
        assert_eq!(
            ownership(&body(json!({shard_label("other"): "a"})), "r", "a"),
            Ownership::NotMine
        );
        assert!(is_sharding_label(&shard) && is_sharding_label(&drain));
        assert!(!is_sharding_label("app"));
    }

    #[test]
    fn only_the_ring_owner_claims_unassigned_or_orphaned_objects() {
        let r = ring(&["core-0", "core-1", "core-2"]);
        let key = "example.com/Widget/ns1/w-002"; // core-2's
        assert!(should_claim(&r, key, "core-2", None));
        assert!(should_claim(&r, key, "core-2", Some("")));
        assert!(should_claim(&r, key, "core-2", Some("dead-shard")));
        assert!(
            !should_claim(&r, key, "core-2", Some("core-0")),
            "a live owner keeps it"
        );
        assert!(
            !should_claim(&r, key, "core-0", None),
            "not the ring's choice"
        );
        assert_eq!(placement(&r, key, "core-2"), Placement::Stay);
        assert_eq!(
            placement(&r, key, "core-0"),
            Placement::Move("core-2".into())
        );
        let without_me = ring(&["core-2"]);
        assert_eq!(
            placement(&without_me, key, "core-0"),
            Placement::Stay,
            "nothing moves before our own Lease is seen"
        );
    }

    #[test]
    fn a_handed_over_object_comes_back_only_when_assigned_here_after_the_handover() {
        let mut h: Handovers<&str, u32> = Handovers::default();
        assert!(h.begin(&"a"));
        assert!(!h.begin(&"a"), "once at a time");
        assert!(h.is_handed_over(&"a"));
        h.abandon(&"a");
        assert!(!h.is_handed_over(&"a"), "a failed handover: still ours");

        assert!(h.begin(&"a"));
        h.patched(&"a", 10);
        h.abandon(&"a");
        assert!(h.is_handed_over(&"a"), "patched: no way back by abandoning");
        h.applied(&"a", true);
        assert!(
            h.is_handed_over(&"a"),
            "an event from before the exit is stale"
        );
        h.listed(&"a", true, 9);
        assert!(
            h.is_handed_over(&"a"),
            "a listing begun before the patch is stale"
        );
        h.left(&"a");
        h.applied(&"a", false);
        assert!(h.is_handed_over(&"a"));
        h.applied(&"a", true);
        assert!(!h.is_handed_over(&"a"), "assigned here after it left: back");

        h.begin(&"b");
        h.patched(&"b", 10);
        h.listed(&"b", true, 11);
        assert!(
            !h.is_handed_over(&"b"),
            "a listing after the patch shows it here: back"
        );

        h.begin(&"c");
        h.patched(&"c", 10);
        h.listing_done(9, |_| true, |_| false);
        h.applied(&"c", true);
        assert!(
            h.is_handed_over(&"c"),
            "a listing begun before the patch proves nothing"
        );
        h.listing_done(11, |_| false, |_| false);
        h.applied(&"c", true);
        assert!(
            h.is_handed_over(&"c"),
            "a listing of another scope proves nothing"
        );
        h.listing_done(11, |_| true, |_| false);
        assert_eq!(h.len(), 1);
        h.expire(10);
        assert_eq!(h.len(), 1, "left at 10: kept until after 10");
        h.expire(11);
        assert!(h.is_empty());
    }
}
