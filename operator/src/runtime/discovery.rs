//! Finding the resources that handler services name, kubectl-style (plural, singular, kind or
//! short name; group and version optional), through the API server's discovery.

use kube::Client;
use kube::api::ApiResource;

use crate::runtime::convert::Selector;

/// A discovery failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
pub struct Served {
    /// Group, version, kind, plural.
    pub resource: ApiResource,
    /// Namespaced (vs. cluster-wide).
    pub namespaced: bool,
    /// Has a `/status` subresource: status must be written there.
    pub has_status: bool,
}

impl Served {
    /// `plural.group/version`, for logs.
    pub fn name(&self) -> String {
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
pub async fn resolve(client: &Client, selector: &Selector) -> Result<Served, Error> {
    let mut found = Vec::new();
    let groups = client.list_api_groups().await.map_err(Error::Api)?;
    let mut versions: Vec<(String, String, bool)> = Vec::new(); // (group, version, preferred)
    if selector.group.is_empty() {
        let core = client.list_core_api_versions().await.map_err(Error::Api)?;
        versions.extend(core.versions.into_iter().map(|v| (String::new(), v, true)));
    }
    for g in groups.groups {
        if !selector.group.is_empty() && g.name != selector.group {
            continue;
        }
        let preferred = g.preferred_version.map(|p| p.version);
        for v in g.versions {
            let is_preferred = preferred.as_deref() == Some(v.version.as_str());
            versions.push((g.name.clone(), v.version, is_preferred));
        }
    }
    for (group, version, preferred) in versions {
        if !selector.version.is_empty() && version != selector.version {
            continue;
        }
        if selector.version.is_empty() && !preferred {
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
        for r in &list.resources {
            if r.name.contains('/') || !matches(selector, r) {
                continue;
            }
            let has_status = list
                .resources
                .iter()
                .any(|s| s.name == format!("{}/status", r.name));
            found.push(Served {
                resource: ApiResource {
                    group: group.clone(),
                    version: version.clone(),
                    api_version: if group.is_empty() {
                        version.clone()
                    } else {
                        format!("{group}/{version}")
                    },
                    kind: r.kind.clone(),
                    plural: r.name.clone(),
                },
                namespaced: r.namespaced,
                has_status,
            });
        }
    }
    match found.len() {
        0 => Err(Error::NotFound(selector.to_string())),
        1 => Ok(found.remove(0)),
        _ => {
            // The core group wins over others for a bare name (kubectl: `pods` is v1/pods).
            if let Some(i) = found.iter().position(|s| s.resource.group.is_empty()) {
                return Ok(found.remove(i));
            }
            Err(Error::Ambiguous {
                selector: selector.to_string(),
                candidates: found
                    .iter()
                    .map(Served::name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

fn matches(
    selector: &Selector,
    r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource,
) -> bool {
    let name = selector.name.as_str();
    r.name == name
        || r.singular_name == name
        || r.kind == name
        || r.kind.eq_ignore_ascii_case(name)
        || r.short_names.iter().flatten().any(|s| s == name)
}
