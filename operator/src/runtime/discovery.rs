//! Finding the resources that handler services name, kubectl-style (plural, singular, kind or
//! short name; group and version optional), through the API server's discovery.

use kube::Client;
use kube::api::ApiResource;

use crate::core::discovery::{self as resolving, Unresolved};
use crate::core::selectors::Discovered;
use crate::core::selectors::Selector;

/// A discovery failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The API server's discovery failed.
    #[error("API discovery failed")]
    Api(#[source] kube::Error),
    /// Nothing matches.
    #[error("no resource matches {0} (is its CRD installed?)")]
    NotFound(String),
    /// More than one resource matches.
    #[error("{selector} is ambiguous: it matches {candidates}")]
    Ambiguous {
        /// The selector.
        selector: String,
        /// What it matches.
        candidates: String,
    },
}

/// A resource the core serves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Served {
    /// Group, version, kind, plural.
    pub resource: ApiResource,
    /// Namespaced (vs. cluster-wide).
    pub namespaced: bool,
    /// Has a `/status` subresource: status must be written there.
    pub has_status: bool,
}

impl Served {
    /// `plural.group/version`, for logs.
    pub(crate) fn name(&self) -> String {
        if self.resource.group.is_empty() {
            format!("{}/{}", self.resource.plural, self.resource.version)
        } else {
            format!(
                "{}.{}/{}",
                self.resource.plural, self.resource.group, self.resource.version
            )
        }
    }
}

/// Resolves one selector.
///
/// # Errors
/// [`Error::NotFound`] when nothing matches (yet), [`Error::Ambiguous`] when several resources
/// in different groups do, [`Error::Api`] when discovery fails.
pub(crate) async fn resolve(client: &Client, selector: &Selector) -> Result<Served, Error> {
    let mut found = Vec::new();
    let groups = client.list_api_groups().await.map_err(Error::Api)?;
    let mut versions: Vec<(String, String, bool)> = Vec::new(); // (group, version, preferred)
    if selector.group.is_empty() {
        let core = client.list_core_api_versions().await.map_err(Error::Api)?;
        versions.extend(core.versions.into_iter().map(|v| (String::new(), v, true)));
    }
    for g in groups.groups {
        if !resolving::group_wanted(selector, &g.name) {
            continue;
        }
        let preferred = g.preferred_version.map(|p| p.version);
        for v in g.versions {
            let is_preferred = preferred.as_deref() == Some(v.version.as_str());
            versions.push((g.name.clone(), v.version, is_preferred));
        }
    }
    for (group, version, preferred) in versions {
        if !resolving::version_wanted(selector, &version, preferred) {
            continue;
        }
        let list = if group.is_empty() {
            client.list_core_api_resources(&version).await
        } else {
            client
                .list_api_group_resources(&format!("{group}/{version}"))
                .await
        };
        let list = match list {
            Ok(list) => list,
            Err(err) => {
                tracing::debug!(%group, %version, error = %err, "Discovery of a group version failed.");
                continue;
            }
        };
        found.extend(
            discovered(&group, &version, preferred, &list.resources)
                .into_iter()
                .filter(|r| resolving::names(selector, r)),
        );
    }
    match resolving::pick(found) {
        Ok(r) => Ok(Served::from(&r)),
        Err(Unresolved::NotFound) => Err(Error::NotFound(selector.to_string())),
        Err(Unresolved::Ambiguous(candidates)) => Err(Error::Ambiguous {
            selector: selector.to_string(),
            candidates,
        }),
    }
}

/// Every resource the API server serves, in every group and version, without subresources
/// (their names are kept on the resource) — Kopf's scanning of `/api` and `/apis`. A group
/// version whose discovery fails is skipped (logged), as a group that went away meanwhile.
///
/// # Errors
/// [`Error::Api`] when the list of groups cannot be read.
pub(crate) async fn scan(client: &Client) -> Result<Vec<Discovered>, Error> {
    let mut versions: Vec<(String, String, bool)> = Vec::new();
    let core = client.list_core_api_versions().await.map_err(Error::Api)?;
    versions.extend(core.versions.into_iter().map(|v| (String::new(), v, true)));
    let groups = client.list_api_groups().await.map_err(Error::Api)?;
    for g in groups.groups {
        let preferred = g.preferred_version.map(|p| p.version);
        for v in g.versions {
            let is_preferred = preferred.as_deref() == Some(v.version.as_str());
            versions.push((g.name.clone(), v.version, is_preferred));
        }
    }
    let mut found = Vec::new();
    for (group, version, preferred) in versions {
        let list = if group.is_empty() {
            client.list_core_api_resources(&version).await
        } else {
            client
                .list_api_group_resources(&format!("{group}/{version}"))
                .await
        };
        match list {
            Ok(list) => found.extend(discovered(&group, &version, preferred, &list.resources)),
            Err(err) => {
                tracing::debug!(%group, %version, error = %err, "Discovery of a group version failed.");
            }
        }
    }
    Ok(found)
}

/// One group version's discovery as [`Discovered`] resources (pure: the scan's filtering).
pub(crate) fn discovered(
    group: &str,
    version: &str,
    preferred: bool,
    resources: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource],
) -> Vec<Discovered> {
    resources
        .iter()
        .filter(|r| !r.name.contains('/'))
        .map(|r| {
            let prefix = format!("{}/", r.name);
            Discovered {
                group: group.to_owned(),
                version: version.to_owned(),
                plural: r.name.clone(),
                kind: r.kind.clone(),
                singular: if r.singular_name.is_empty() {
                    r.kind.to_lowercase()
                } else {
                    r.singular_name.clone()
                },
                short_names: r.short_names.clone().unwrap_or_default(),
                categories: r.categories.clone().unwrap_or_default(),
                subresources: resources
                    .iter()
                    .filter_map(|s| s.name.strip_prefix(&prefix).map(str::to_owned))
                    .collect(),
                namespaced: r.namespaced,
                preferred,
                verbs: r.verbs.clone(),
            }
        })
        .collect()
}

impl From<&Discovered> for Served {
    fn from(d: &Discovered) -> Self {
        Served {
            resource: ApiResource {
                group: d.group.clone(),
                version: d.version.clone(),
                api_version: if d.group.is_empty() {
                    d.version.clone()
                } else {
                    format!("{}/{}", d.group, d.version)
                },
                kind: d.kind.clone(),
                plural: d.plural.clone(),
            },
            namespaced: d.namespaced,
            has_status: d.subresources.iter().any(|s| s == "status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn api(name: &str, kind: &str, verbs: &[&str]) -> APIResource {
        APIResource {
            name: name.into(),
            kind: kind.into(),
            namespaced: true,
            singular_name: String::new(),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..APIResource::default()
        }
    }

    #[test]
    fn subresources_are_folded_into_their_resource() {
        let list = vec![
            api("pods", "Pod", &["list", "watch"]),
            api("pods/status", "Pod", &["get", "patch"]),
            api("pods/log", "Pod", &["get"]),
            api("bindings", "Binding", &["create"]),
        ];
        let found = discovered("", "v1", true, &list);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].plural, "pods");
        assert_eq!(
            found[0].singular, "pod",
            "the lower-cased kind when discovery has none"
        );
        assert_eq!(found[0].subresources, vec!["status", "log"]);
        assert!(found[0].watchable());
        assert!(
            !found[1].watchable(),
            "bindings cannot be listed and watched"
        );
        assert!(Served::from(&found[0]).has_status);
        assert!(!Served::from(&found[1]).has_status);
    }
}
