//! Resolving the resource a handler service names, kubectl-style (plural, singular, kind or
//! short name; group and version optional), among what the API server's discovery lists. The
//! runtime (`runtime::discovery`) asks the API server; this module decides.

use crate::selectors::{Discovered, Selector};

/// Whether the group versions of `group` are looked at for `selector` (any group when it names
/// none).
pub fn group_wanted(selector: &Selector, group: &str) -> bool {
    selector.group.is_empty() || selector.group == group
}

/// Whether a group version is looked at for `selector`: the named version, or the group's
/// preferred one when it names none.
pub fn version_wanted(selector: &Selector, version: &str, preferred: bool) -> bool {
    if selector.version.is_empty() {
        preferred
    } else {
        selector.version == version
    }
}

/// Whether `selector` names the resource: by its plural, singular, kind (in any case) or one of
/// its short names.
pub fn names(selector: &Selector, r: &Discovered) -> bool {
    let name = selector.name.as_str();
    r.plural == name
        || r.singular == name
        || r.kind == name
        || r.kind.eq_ignore_ascii_case(name)
        || r.short_names.iter().any(|s| s == name)
}

/// Why a selector resolves to no single resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// Nothing matches (yet).
    NotFound,
    /// Resources in several groups match; their names, comma-separated.
    Ambiguous(String),
}

/// The one resource among `found` (what the selector names in the versions looked at): the
/// core group wins over others for a bare name (kubectl: `pods` is v1/pods).
///
/// # Errors
/// [`Unresolved`] when none or several match.
pub fn pick(mut found: Vec<Discovered>) -> Result<Discovered, Unresolved> {
    match found.len() {
        0 => Err(Unresolved::NotFound),
        1 => Ok(found.remove(0)),
        _ => match found.iter().position(|r| r.group.is_empty()) {
            Some(i) => Ok(found.remove(i)),
            None => Err(Unresolved::Ambiguous(
                found
                    .iter()
                    .map(Discovered::name)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(group: &str, version: &str, name: &str) -> Selector {
        Selector {
            group: group.into(),
            version: version.into(),
            name: name.into(),
        }
    }

    fn res(group: &str, plural: &str, kind: &str) -> Discovered {
        Discovered {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            kind: kind.into(),
            singular: kind.to_lowercase(),
            short_names: vec!["kex".into()],
            ..Discovered::default()
        }
    }

    #[test]
    fn a_resource_is_named_by_plural_singular_kind_or_short_name() {
        let r = res("kopf.dev", "kopfexamples", "KopfExample");
        for name in [
            "kopfexamples",
            "kopfexample",
            "KopfExample",
            "KOPFEXAMPLE",
            "kex",
        ] {
            assert!(names(&selector("", "", name), &r), "{name}");
        }
        assert!(!names(&selector("", "", "examples"), &r));
    }

    #[test]
    fn groups_and_versions_are_looked_at_as_named_or_preferred() {
        let any = selector("", "", "pods");
        assert!(group_wanted(&any, "apps") && group_wanted(&any, ""));
        assert!(!group_wanted(&selector("kopf.dev", "", "x"), "apps"));
        assert!(version_wanted(&any, "v1", true));
        assert!(!version_wanted(&any, "v1beta1", false));
        let v1beta1 = selector("", "v1beta1", "x");
        assert!(version_wanted(&v1beta1, "v1beta1", false));
        assert!(!version_wanted(&v1beta1, "v1", true));
    }

    #[test]
    fn one_match_wins_the_core_group_wins_and_others_are_ambiguous() {
        assert_eq!(pick(Vec::new()), Err(Unresolved::NotFound));
        let pods = res("", "pods", "Pod");
        let other = res("metrics.k8s.io", "pods", "PodMetrics");
        assert_eq!(pick(vec![pods.clone()]), Ok(pods.clone()));
        assert_eq!(pick(vec![other.clone(), pods.clone()]), Ok(pods));
        let third = res("x.dev", "pods", "Pod");
        assert_eq!(
            pick(vec![other, third]),
            Err(Unresolved::Ambiguous(
                "pods.metrics.k8s.io/v1, pods.x.dev/v1".into()
            ))
        );
    }
}
