//! Selectors that name no single resource — Kopf's `kopf.EVERYTHING`, `category=` and callable
//! selectors — matched against what discovery found (Kopf's `Selector.check` and the scanning's
//! filters in `observation.py`, re-stated, not copied).
//!
//! Pure: the runtime scans the API server (`runtime::discovery::scan` in the `operon` crate),
//! asks the services about their callables, and this module decides which resources are served.

use std::collections::BTreeSet;

/// A resource as discovery found it (one group, one version).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discovered {
    /// API group; empty for the core group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural name (the URL segment).
    pub plural: String,
    /// Kind.
    pub kind: String,
    /// Singular name, or the lower-cased kind when discovery gives none.
    pub singular: String,
    /// Short names.
    pub short_names: Vec<String>,
    /// Categories (`all`, …).
    pub categories: Vec<String>,
    /// Subresources (`status`, `scale`, …).
    pub subresources: Vec<String>,
    /// Namespaced (vs. cluster-wide).
    pub namespaced: bool,
    /// The group's preferred version (always true in the core group).
    pub preferred: bool,
    /// The verbs the API server allows.
    pub verbs: Vec<String>,
}

impl Discovered {
    /// Whether the core can serve it at all: it can be listed and watched (Kopf serves no other).
    pub fn watchable(&self) -> bool {
        self.verbs.iter().any(|v| v == "list") && self.verbs.iter().any(|v| v == "watch")
    }

    /// The core's and events.k8s.io's Events, which Kopf keeps out of `EVERYTHING` and callables:
    /// handling posts them, so serving them would loop.
    pub fn is_event(&self) -> bool {
        self.plural == "events" && (self.group.is_empty() || self.group == "events.k8s.io")
    }

    /// `plural.group/version`, for logs.
    pub fn name(&self) -> String {
        if self.group.is_empty() {
            format!("{}/{}", self.plural, self.version)
        } else {
            format!("{}.{}/{}", self.plural, self.group, self.version)
        }
    }
}

/// A resource as a service names it, kubectl-style: one resource (unlike a [`WideSelector`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// API group; empty for the core group or "any".
    pub group: String,
    /// Version; empty for the preferred one.
    pub version: String,
    /// Plural, singular, kind or short name.
    pub name: String,
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.group.as_str(), self.version.as_str()) {
            ("", "") => write!(f, "{}", self.name),
            (g, "") => write!(f, "{}.{g}", self.name),
            (g, v) => write!(f, "{g}/{v}/{}", self.name),
        }
    }
}

/// What a wide selector picks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pick {
    /// Every resource (`kopf.EVERYTHING`).
    Everything,
    /// Every resource in this category.
    Category(String),
    /// Whatever the service's callable with this id accepts.
    Callable(String),
}

/// A selector that names no single resource, narrowed by group and version when given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WideSelector {
    /// `None`: any group; `Some("")`: the core group.
    pub group: Option<String>,
    /// `None`: the preferred version (any version for a callable).
    pub version: Option<String>,
    /// What it picks.
    pub pick: Pick,
}

impl std::fmt::Display for WideSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pick {
            Pick::Everything => write!(f, "EVERYTHING")?,
            Pick::Category(c) => write!(f, "category={c}")?,
            Pick::Callable(id) => write!(f, "callable {id}")?,
        }
        if let Some(g) = &self.group {
            write!(f, " in group {g:?}")?;
        }
        if let Some(v) = &self.version {
            write!(f, " version {v}")?;
        }
        Ok(())
    }
}

impl WideSelector {
    /// Whether the declarative part accepts `r` (for a callable: whether the service is asked
    /// about it at all). `accepted` is the set of resources (indexes into the scan) that the
    /// service's callable accepted; it is only consulted for [`Pick::Callable`].
    pub fn accepts(
        &self,
        r: &Discovered,
        accepted: Option<&BTreeSet<usize>>,
        index: usize,
    ) -> bool {
        if !r.watchable() || r.is_event() {
            return false;
        }
        if self.group.as_ref().is_some_and(|g| *g != r.group) {
            return false;
        }
        let version_ok = match &self.version {
            Some(v) => *v == r.version,
            None => r.preferred || matches!(self.pick, Pick::Callable(_)),
        };
        if !version_ok {
            return false;
        }
        match &self.pick {
            Pick::Everything => true,
            Pick::Category(c) => r.categories.iter().any(|x| x == c),
            Pick::Callable(_) => accepted.is_some_and(|a| a.contains(&index)),
        }
    }

    /// The indexes of the resources in `scan` that this selector serves.
    pub fn select(&self, scan: &[Discovered], accepted: Option<&BTreeSet<usize>>) -> Vec<usize> {
        scan.iter()
            .enumerate()
            .filter(|(i, r)| self.accepts(r, accepted, *i))
            .map(|(i, _)| i)
            .collect()
    }
}

/// The resources of a scan that the service's callables are asked about: every watchable one,
/// in every version, but the Events.
pub fn askable(scan: &[Discovered]) -> Vec<usize> {
    scan.iter()
        .enumerate()
        .filter(|(_, r)| r.watchable() && !r.is_event())
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, version: &str, plural: &str) -> Discovered {
        Discovered {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: plural.trim_end_matches('s').into(),
            singular: plural.trim_end_matches('s').into(),
            namespaced: true,
            preferred: true,
            verbs: vec!["get".into(), "list".into(), "watch".into(), "patch".into()],
            ..Discovered::default()
        }
    }

    fn everything() -> WideSelector {
        WideSelector {
            group: None,
            version: None,
            pick: Pick::Everything,
        }
    }

    #[test]
    fn everything_skips_events_unwatchable_and_non_preferred_versions() {
        let mut old = res("kopf.dev", "v1beta1", "kopfexamples");
        old.preferred = false;
        let mut bindings = res("", "v1", "bindings");
        bindings.verbs = vec!["create".into()];
        let scan = vec![
            res("", "v1", "configmaps"),
            res("", "v1", "events"),
            res("events.k8s.io", "v1", "events"),
            res("kopf.dev", "v1", "kopfexamples"),
            old,
            bindings,
        ];
        assert_eq!(everything().select(&scan, None), vec![0, 3]);
    }

    #[test]
    fn group_and_version_narrow_a_wide_selector() {
        let mut old = res("kopf.dev", "v1beta1", "kopfexamples");
        old.preferred = false;
        let scan = vec![
            res("", "v1", "configmaps"),
            res("kopf.dev", "v1", "kopfexamples"),
            old,
        ];
        let core = WideSelector {
            group: Some(String::new()),
            ..everything()
        };
        assert_eq!(core.select(&scan, None), vec![0]);
        let beta = WideSelector {
            group: Some("kopf.dev".into()),
            version: Some("v1beta1".into()),
            pick: Pick::Everything,
        };
        assert_eq!(beta.select(&scan, None), vec![2]);
    }

    #[test]
    fn a_category_matches_the_resources_that_list_it() {
        let mut a = res("kopf.dev", "v1", "kopfexamples");
        a.categories = vec!["all".into(), "kopf".into()];
        let mut b = res("", "v1", "pods");
        b.categories = vec!["all".into()];
        let scan = vec![a, b, res("", "v1", "configmaps")];
        let sel = |c: &str| WideSelector {
            group: None,
            version: None,
            pick: Pick::Category(c.into()),
        };
        assert_eq!(sel("all").select(&scan, None), vec![0, 1]);
        assert_eq!(sel("kopf").select(&scan, None), vec![0]);
        assert!(sel("nothing").select(&scan, None).is_empty());
    }

    #[test]
    fn a_callable_serves_what_the_service_accepted_in_any_version_but_events() {
        let mut old = res("kopf.dev", "v1beta1", "kopfexamples");
        old.preferred = false;
        let scan = vec![
            res("", "v1", "configmaps"),
            res("", "v1", "events"),
            old,
            res("kopf.dev", "v1", "kopfexamples"),
        ];
        assert_eq!(askable(&scan), vec![0, 2, 3]);
        let sel = WideSelector {
            group: None,
            version: None,
            pick: Pick::Callable("fn-1".into()),
        };
        // The service may (wrongly) accept an Event: it is still not served.
        let accepted: BTreeSet<usize> = [1, 2].into();
        assert_eq!(sel.select(&scan, Some(&accepted)), vec![2]);
        assert!(sel.select(&scan, None).is_empty());
    }
}
