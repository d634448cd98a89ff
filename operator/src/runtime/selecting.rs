//! Serving the handlers whose selectors name no single resource (`kopf.EVERYTHING`, `category=`,
//! callables): scan the API server, ask each service about its callables (`SelectResources`),
//! and decide which resources each handler serves ([`crate::core::selectors`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::core::rediscovery::{self, Handlers};
use crate::core::selectors::{Discovered, Pick, askable};
use crate::runtime::discovery::{self, Served};
use crate::runtime::ports::HandlerPort;
use crate::runtime::ports::WideRegistration;

/// A resource and the wide registrations (with their service's index) it is served for.
pub(crate) type Matches = Vec<(Served, Vec<(WideRegistration, usize)>)>;

pub(crate) use crate::core::rediscovery::ResourceKey;

/// The key of a served resource.
pub(crate) fn key_of(served: &Served) -> ResourceKey {
    (
        served.resource.group.clone(),
        served.resource.version.clone(),
        served.resource.plural.clone(),
    )
}

/// Scans the API server and matches every wide registration against what it found; also the
/// keys of every resource found. A service that fails to answer `SelectResources` is logged,
/// and its callables match nothing this time.
///
/// # Errors
/// When the scan itself fails.
pub(crate) async fn matches(
    client: &kube::Client,
    services: &[Arc<dyn HandlerPort>],
    wide: &[(WideRegistration, usize)],
) -> Result<(Matches, BTreeSet<ResourceKey>), discovery::Error> {
    let scan = discovery::scan(client).await?;
    let mut accepted: BTreeMap<(usize, String), BTreeSet<usize>> = BTreeMap::new();
    let asking: BTreeSet<usize> = wide
        .iter()
        .filter(|(r, _)| matches!(r.selector.pick, Pick::Callable(_)))
        .map(|(_, i)| *i)
        .collect();
    if !asking.is_empty() {
        let indexes = askable(&scan);
        let offered: Vec<Discovered> = indexes.iter().map(|i| scan[*i].clone()).collect();
        for i in asking {
            match services[i].select_resources(&offered).await {
                Ok(selections) => {
                    for (id, picked) in selections {
                        accepted
                            .entry((i, id))
                            .or_default()
                            .extend(picked.into_iter().filter_map(|p| indexes.get(p).copied()));
                    }
                }
                Err(err) => {
                    tracing::warn!(service = services[i].name(), error = %err, "The handler service did not say which resources its callable selectors accept; they match nothing for now.");
                }
            }
        }
    }
    let keys = scan
        .iter()
        .map(|r| (r.group.clone(), r.version.clone(), r.plural.clone()))
        .collect();
    Ok((decide(&scan, wide, &accepted), keys))
}

/// Which resource of `scan` each wide registration serves (decided by
/// [`rediscovery::matches`]).
pub(crate) fn decide(
    scan: &[Discovered],
    wide: &[(WideRegistration, usize)],
    accepted: &BTreeMap<(usize, String), BTreeSet<usize>>,
) -> Matches {
    let selectors: Vec<_> = wide.iter().map(|(r, i)| (&r.selector, *i)).collect();
    rediscovery::matches(scan, &selectors, accepted)
        .into_iter()
        .map(|(r, regs)| {
            (
                Served::from(&scan[r]),
                regs.into_iter().map(|w| wide[w].clone()).collect(),
            )
        })
        .collect()
}

/// The wide handlers of one matched resource, for comparing two scans.
fn handlers_of(regs: &[(WideRegistration, usize)]) -> Handlers {
    regs.iter()
        .map(|(r, i)| (*i, format!("{}:{:?}", r.handler.id, r.handler.kind)))
        .collect()
}

/// What the handlers of each matched resource are, for comparing two scans.
pub(crate) fn summary(matches: &Matches) -> BTreeMap<ResourceKey, Handlers> {
    matches
        .iter()
        .map(|(served, regs)| (key_of(served), handlers_of(regs)))
        .collect()
}

/// What a re-discovery asks of the engine (see [`rediscovery::Rediscovery`]).
pub(crate) type Rediscovery = rediscovery::Rediscovery<(Served, Vec<(WideRegistration, usize)>)>;

/// What the wide selectors match, scan after scan (decided by [`rediscovery::Tracker`]; the
/// engine performs the answers).
#[derive(Debug, Default)]
pub(crate) struct Tracker(rediscovery::Tracker);

impl Tracker {
    /// After the start's scan: `named` resources and what the wide selectors `matched` then.
    pub(crate) fn new(named: BTreeSet<ResourceKey>, matched: &Matches) -> Self {
        Tracker(rediscovery::Tracker::new(named, summary(matched)))
    }

    /// A new scan: `found` is what the wide selectors match now, `scanned` every resource the
    /// API server has.
    pub(crate) fn rediscovered(
        &mut self,
        found: Matches,
        scanned: &BTreeSet<ResourceKey>,
    ) -> Rediscovery {
        let found = found
            .into_iter()
            .map(|(served, regs)| (key_of(&served), handlers_of(&regs), (served, regs)))
            .collect();
        self.0.rediscovered(found, scanned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Filters, Handler, HandlerKind, Options};
    use crate::core::selectors::WideSelector;

    fn res(group: &str, plural: &str, categories: &[&str]) -> Discovered {
        Discovered {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            kind: plural.into(),
            singular: plural.into(),
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
            namespaced: true,
            preferred: true,
            verbs: vec!["list".into(), "watch".into()],
            ..Discovered::default()
        }
    }

    fn reg(id: &str, pick: Pick) -> WideRegistration {
        WideRegistration {
            selector: WideSelector {
                group: None,
                version: None,
                pick,
            },
            handler: Handler {
                id: id.into(),
                kind: HandlerKind::Event,
                has_callback_filters: false,
                filters: Filters::default(),
                options: Options::default(),
            },
        }
    }

    #[test]
    fn every_match_is_one_resource_with_all_its_wide_handlers() {
        let scan = vec![
            res("", "configmaps", &[]),
            res("kopf.dev", "kopfexamples", &["kopf"]),
            res("", "events", &[]),
        ];
        let wide = vec![
            (reg("all", Pick::Everything), 0),
            (reg("cat", Pick::Category("kopf".into())), 0),
            (reg("fn", Pick::Callable("c1".into())), 1),
        ];
        let accepted: BTreeMap<_, _> = [((1, "c1".to_owned()), BTreeSet::from([0]))].into();
        let out = decide(&scan, &wide, &accepted);
        let names: Vec<(String, Vec<String>)> = out
            .iter()
            .map(|(s, regs)| {
                (
                    s.resource.plural.clone(),
                    regs.iter().map(|(r, _)| r.handler.id.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    "configmaps".to_owned(),
                    vec!["all".to_owned(), "fn".to_owned()]
                ),
                (
                    "kopfexamples".to_owned(),
                    vec!["all".to_owned(), "cat".to_owned()]
                ),
            ]
        );
        // A callable of another service with the same id accepts nothing here.
        let other: BTreeMap<_, _> = [((0, "c1".to_owned()), BTreeSet::from([0]))].into();
        let out = decide(&scan, &wide[2..], &other);
        assert!(out.is_empty());
    }

    fn scan_of(names: &[&str]) -> Vec<Discovered> {
        names.iter().map(|n| res("", n, &[])).collect()
    }

    fn keys(scan: &[Discovered]) -> BTreeSet<ResourceKey> {
        scan.iter()
            .map(|r| (r.group.clone(), r.version.clone(), r.plural.clone()))
            .collect()
    }

    fn key(plural: &str) -> ResourceKey {
        (String::new(), "v1".into(), plural.into())
    }

    fn served(rediscovery: &Rediscovery) -> (Vec<String>, Vec<String>) {
        match rediscovery {
            Rediscovery::Changes { serve, stop } => (
                serve
                    .iter()
                    .map(|(s, _)| s.resource.plural.clone())
                    .collect(),
                stop.iter().map(|k| k.2.clone()).collect(),
            ),
            Rediscovery::Reload(why) => panic!("reload: {why}"),
        }
    }

    #[test]
    fn new_resources_are_served_and_gone_ones_stopped_without_a_reload() {
        let wide = vec![(reg("all", Pick::Everything), 0)];
        let none = BTreeMap::new();
        let start = scan_of(&["configmaps", "secrets"]);
        let mut tracker = Tracker::new(BTreeSet::new(), &decide(&start, &wide, &none));
        let same = tracker.rediscovered(decide(&start, &wide, &none), &keys(&start));
        assert_eq!(served(&same), (vec![], vec![]));
        let grown = scan_of(&["configmaps", "secrets", "things"]);
        let changes = tracker.rediscovered(decide(&grown, &wide, &none), &keys(&grown));
        assert_eq!(served(&changes), (vec!["things".to_owned()], vec![]));
        let shrunk = scan_of(&["configmaps", "things"]);
        let changes = tracker.rediscovered(decide(&shrunk, &wide, &none), &keys(&shrunk));
        assert_eq!(served(&changes), (vec![], vec!["secrets".to_owned()]));
        let back = tracker.rediscovered(decide(&grown, &wide, &none), &keys(&grown));
        assert_eq!(
            served(&back),
            (vec!["secrets".to_owned()], vec![]),
            "served again when back"
        );
    }

    #[test]
    fn a_named_resource_keeps_its_watch_when_gone_and_reloads_when_its_handlers_change() {
        let wide = vec![(reg("cat", Pick::Category("c".into())), 0)];
        let none = BTreeMap::new();
        let mut things = res("", "things", &["c"]);
        let start = vec![things.clone(), res("", "pods", &[])];
        let named: BTreeSet<ResourceKey> = [key("things"), key("pods")].into();
        let mut tracker = Tracker::new(named.clone(), &decide(&start, &wide, &none));
        // Gone from discovery: nothing to do, and nothing when it comes back.
        let gone = vec![res("", "pods", &[])];
        assert_eq!(
            served(&tracker.rediscovered(decide(&gone, &wide, &none), &keys(&gone))),
            (vec![], vec![])
        );
        assert_eq!(
            served(&tracker.rediscovered(decide(&start, &wide, &none), &keys(&start))),
            (vec![], vec![])
        );
        // Still there, no longer in the category: its handlers change.
        things.categories.clear();
        let uncategorised = vec![things, res("", "pods", &[])];
        let answer =
            tracker.rediscovered(decide(&uncategorised, &wide, &none), &keys(&uncategorised));
        assert!(
            matches!(answer, Rediscovery::Reload(ref why) if why.contains("things")),
            "{answer:?}"
        );
        // A named resource that starts to match.
        let mut tracker = Tracker::new(named, &decide(&start, &wide, &none));
        let joined = vec![res("", "things", &["c"]), res("", "pods", &["c"])];
        let answer = tracker.rediscovered(decide(&joined, &wide, &none), &keys(&joined));
        assert!(
            matches!(answer, Rediscovery::Reload(ref why) if why.contains("pods")),
            "{answer:?}"
        );
    }
}
