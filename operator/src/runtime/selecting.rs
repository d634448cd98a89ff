//! Serving the handlers whose selectors name no single resource (`kopf.EVERYTHING`, `category=`,
//! callables): scan the API server, ask each service about its callables (`SelectResources`),
//! and decide which resources each handler serves ([`crate::core::selectors`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::core::selectors::{Discovered, Pick, askable};
use crate::runtime::convert::WideRegistration;
use crate::runtime::discovery::{self, Served};
use crate::runtime::dispatch::Dispatch;

/// A resource and the wide registrations (with their service's index) it is served for.
pub type Matches = Vec<(Served, Vec<(WideRegistration, usize)>)>;

/// The key of a resource across scans: group, version, plural.
pub type ResourceKey = (String, String, String);

/// The key of a served resource.
pub fn key_of(served: &Served) -> ResourceKey {
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
pub async fn matches(
    client: &kube::Client,
    services: &[Arc<dyn Dispatch>],
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

/// Pure: which resource of `scan` each wide registration serves.
pub fn decide(
    scan: &[Discovered],
    wide: &[(WideRegistration, usize)],
    accepted: &BTreeMap<(usize, String), BTreeSet<usize>>,
) -> Matches {
    let mut out: Matches = Vec::new();
    for (reg, i) in wide {
        let theirs = match &reg.selector.pick {
            Pick::Callable(id) => accepted.get(&(*i, id.clone())),
            _ => None,
        };
        for r in reg.selector.select(scan, theirs) {
            let served = Served::from(&scan[r]);
            let slot = match out.iter().position(|(s, _)| key_of(s) == key_of(&served)) {
                Some(slot) => slot,
                None => {
                    out.push((served, Vec::new()));
                    out.len() - 1
                }
            };
            out[slot].1.push((reg.clone(), *i));
        }
    }
    out
}

/// What the handlers of each matched resource are, for comparing two scans.
pub fn summary(matches: &Matches) -> BTreeMap<ResourceKey, BTreeSet<(usize, String)>> {
    matches
        .iter()
        .map(|(served, regs)| {
            (
                key_of(served),
                regs.iter()
                    .map(|(r, i)| (*i, format!("{}:{:?}", r.handler.id, r.handler.kind)))
                    .collect(),
            )
        })
        .collect()
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
}
