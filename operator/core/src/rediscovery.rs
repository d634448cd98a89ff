//! Which resources the wide selectors (`kopf.EVERYTHING`, `category=`, callables) serve, scan
//! after scan of the API server: the resources each selector matches now, grouped per resource,
//! and what a new scan asks of the engine (serve new resources, stop gone ones, or start over
//! when the handlers of a served resource changed). The runtime (`runtime::selecting`) scans and
//! asks the services about their callables; the engine performs the answers.

use std::collections::{BTreeMap, BTreeSet};

use crate::selectors::{Discovered, Pick, WideSelector};

/// The key of a resource across scans: group, version, plural.
pub type ResourceKey = (String, String, String);

/// The wide handlers of one resource, as `(service index, handler)` pairs: what is compared
/// between two scans.
pub type Handlers = BTreeSet<(usize, String)>;

/// The key of a discovered resource.
pub fn key_of(r: &Discovered) -> ResourceKey {
    (r.group.clone(), r.version.clone(), r.plural.clone())
}

/// `plural.group/version` (`plural/version` in the core group), for the reasons of a reload.
pub fn name_of(key: &ResourceKey) -> String {
    let (group, version, plural) = key;
    if group.is_empty() {
        format!("{plural}/{version}")
    } else {
        format!("{plural}.{group}/{version}")
    }
}

/// Which resources of `scan` the wide selectors serve: per resource (an index into `scan`, in
/// the order they are first matched), the indexes of its selectors in `wide`. A selector is given
/// with the index of its service; `accepted` holds what each service's callables accepted (by
/// service index and callable id; indexes into `scan`).
pub fn matches(
    scan: &[Discovered],
    wide: &[(&WideSelector, usize)],
    accepted: &BTreeMap<(usize, String), BTreeSet<usize>>,
) -> Vec<(usize, Vec<usize>)> {
    let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
    for (w, (selector, service)) in wide.iter().enumerate() {
        let theirs = match &selector.pick {
            Pick::Callable(id) => accepted.get(&(*service, id.clone())),
            _ => None,
        };
        for r in selector.select(scan, theirs) {
            let key = key_of(&scan[r]);
            let slot = match out.iter().position(|(s, _)| key_of(&scan[*s]) == key) {
                Some(slot) => slot,
                None => {
                    out.push((r, Vec::new()));
                    out.len() - 1
                }
            };
            out[slot].1.push(w);
        }
    }
    out
}

/// What a re-discovery asks of the engine; `T` is what the engine serves a resource with.
#[derive(Debug)]
pub enum Rediscovery<T> {
    /// Serve these resources from now on (they appeared, or started to match), and stop
    /// watching those (gone, or no longer matching); nothing else changes.
    Changes {
        /// New resources.
        serve: Vec<T>,
        /// Resources no longer served.
        stop: Vec<ResourceKey>,
    },
    /// The handlers of a resource that is served changed (a named resource that a wide selector
    /// now matches, or no longer; a wide handler that now matches a served resource too): the
    /// generation starts over with the reason.
    Reload(String),
}

/// What the wide selectors match, scan after scan.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The resources that named handlers serve.
    named: BTreeSet<ResourceKey>,
    /// The wide handlers of every matched resource, as of the last scan.
    matched: BTreeMap<ResourceKey, Handlers>,
}

impl Tracker {
    /// After the start's scan: `named` resources and what the wide selectors `matched` then.
    pub fn new(named: BTreeSet<ResourceKey>, matched: BTreeMap<ResourceKey, Handlers>) -> Self {
        Tracker { named, matched }
    }

    /// A new scan: `found` is what the wide selectors match now (each resource's key, its wide
    /// handlers, and what the engine serves it with), `scanned` every resource the API server
    /// has.
    pub fn rediscovered<T>(
        &mut self,
        found: Vec<(ResourceKey, Handlers, T)>,
        scanned: &BTreeSet<ResourceKey>,
    ) -> Rediscovery<T> {
        let mut now: BTreeMap<ResourceKey, Handlers> = found
            .iter()
            .map(|(key, handlers, _)| (key.clone(), handlers.clone()))
            .collect();
        let mut serve = Vec::new();
        for (key, _, served) in found {
            match self.matched.get(&key) {
                None if self.named.contains(&key) => {
                    return Rediscovery::Reload(format!(
                        "{} (now matched by a wide selector)",
                        name_of(&key)
                    ));
                }
                None => serve.push(served),
                Some(before) if now.get(&key) != Some(before) => {
                    return Rediscovery::Reload(format!(
                        "{} (its wide handlers changed)",
                        name_of(&key)
                    ));
                }
                Some(_) => {}
            }
        }
        let mut stop = Vec::new();
        for (key, before) in &self.matched {
            if now.contains_key(key) {
                continue;
            }
            match (self.named.contains(key), scanned.contains(key)) {
                // Named handlers keep a gone resource's watch, as without wide selectors, and
                // its place: when it comes back, nothing changed.
                (true, false) => {
                    now.insert(key.clone(), before.clone());
                }
                (true, true) => {
                    return Rediscovery::Reload(format!(
                        "{}.{}/{} (no longer matched by a wide selector)",
                        key.2, key.0, key.1
                    ));
                }
                (false, _) => stop.push(key.clone()),
            }
        }
        self.matched = now;
        Rediscovery::Changes { serve, stop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(plural: &str) -> ResourceKey {
        (String::new(), "v1".into(), plural.into())
    }

    fn handlers(ids: &[&str]) -> Handlers {
        ids.iter().map(|id| (0, (*id).to_owned())).collect()
    }

    fn found(items: &[(&str, &[&str])]) -> Vec<(ResourceKey, Handlers, String)> {
        items
            .iter()
            .map(|(p, ids)| (key(p), handlers(ids), (*p).to_owned()))
            .collect()
    }

    fn keys(plurals: &[&str]) -> BTreeSet<ResourceKey> {
        plurals.iter().map(|p| key(p)).collect()
    }

    #[test]
    fn resources_are_grouped_with_every_selector_that_matches_them() {
        let res = |plural: &str, categories: &[&str]| Discovered {
            version: "v1".into(),
            plural: plural.into(),
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
            preferred: true,
            verbs: vec!["list".into(), "watch".into()],
            ..Discovered::default()
        };
        let scan = [res("configmaps", &[][..]), res("things", &["c"][..])];
        let all = WideSelector {
            group: None,
            version: None,
            pick: Pick::Everything,
        };
        let cat = WideSelector {
            pick: Pick::Category("c".into()),
            ..all.clone()
        };
        let fns = WideSelector {
            pick: Pick::Callable("f".into()),
            ..all.clone()
        };
        let accepted: BTreeMap<_, _> = [((1, "f".to_owned()), BTreeSet::from([0]))].into();
        let wide = [(&all, 0), (&cat, 0), (&fns, 1)];
        assert_eq!(
            matches(&scan, &wide, &accepted),
            [(0, vec![0, 2]), (1, vec![0, 1])]
        );
        let others: BTreeMap<_, _> = [((0, "f".to_owned()), BTreeSet::from([0]))].into();
        assert!(
            matches(&scan, &wide[2..], &others).is_empty(),
            "another service's callable"
        );
    }

    #[test]
    fn new_resources_are_served_and_gone_ones_stopped() {
        let mut tracker = Tracker::new(BTreeSet::new(), [(key("a"), handlers(&["all"]))].into());
        let Rediscovery::Changes { serve, stop } = tracker.rediscovered(
            found(&[("a", &["all"][..]), ("b", &["all"][..])]),
            &keys(&["a", "b"]),
        ) else {
            panic!("no reload");
        };
        assert_eq!((serve, stop), (vec!["b".to_owned()], vec![]));
        let Rediscovery::Changes { serve, stop } =
            tracker.rediscovered(found(&[("b", &["all"][..])]), &keys(&["b"]))
        else {
            panic!("no reload");
        };
        assert_eq!((serve, stop), (vec![], vec![key("a")]));
    }

    #[test]
    fn changed_handlers_of_a_served_resource_start_over() {
        let named = keys(&["pods"]);
        let mut tracker = Tracker::new(named.clone(), BTreeMap::new());
        let answer = tracker.rediscovered(found(&[("pods", &["all"][..])]), &keys(&["pods"]));
        assert!(
            matches!(&answer, Rediscovery::Reload(why) if why == "pods/v1 (now matched by a wide selector)"),
            "{answer:?}"
        );
        let mut tracker = Tracker::new(BTreeSet::new(), [(key("a"), handlers(&["x"]))].into());
        let answer = tracker.rediscovered(found(&[("a", &["x", "y"][..])]), &keys(&["a"]));
        assert!(
            matches!(answer, Rediscovery::Reload(why) if why.contains("its wide handlers changed"))
        );
        // A named resource no longer matched while it exists: start over; gone: keep it.
        let mut tracker = Tracker::new(named, [(key("pods"), handlers(&["x"]))].into());
        let Rediscovery::Changes { serve, stop } =
            tracker.rediscovered(Vec::<(ResourceKey, Handlers, String)>::new(), &keys(&[]))
        else {
            panic!("kept while gone");
        };
        assert!(serve.is_empty() && stop.is_empty());
        let answer = tracker.rediscovered(
            Vec::<(ResourceKey, Handlers, String)>::new(),
            &keys(&["pods"]),
        );
        assert!(
            matches!(&answer, Rediscovery::Reload(why) if why == "pods./v1 (no longer matched by a wide selector)"),
            "{answer:?}"
        );
    }
}
