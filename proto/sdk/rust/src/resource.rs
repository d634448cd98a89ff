//! Which resource a registration serves, written the way `kubectl` names resources.

use std::fmt;

use operon_proto::v1 as pb;

/// A resource, kubectl-style: a plural, singular, kind or short name, narrowed down by an API
/// group and version when given. The core resolves it against the API server's discovery.
///
/// From a string ([`Resource::parse`], also `impl From<&str>`):
/// - `"widgets.example.com"` — name `widgets` in group `example.com`;
/// - `"deployments.v1.apps"` — name, version and group;
/// - `"example.com/v1/widgets"` — group/version/name;
/// - `"v1/configmaps"` — the core group, version `v1`;
/// - `"configmaps"` — a name alone (any group; the core picks the resource of that name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    group: String,
    version: String,
    name: String,
}

impl Resource {
    /// A resource by its group (empty: the core group), version (empty: the preferred one) and
    /// name.
    pub fn new(
        group: impl Into<String>,
        version: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            name: name.into(),
        }
    }

    /// A resource of the core group (`""`, version `v1`), e.g. `Resource::core("configmaps")`.
    pub fn core(name: impl Into<String>) -> Self {
        Self::new("", "v1", name)
    }

    /// Reads the kubectl-style forms listed on [`Resource`]. Never fails: a malformed string
    /// (an empty name) is refused when the operator is served, with the string in the error.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.contains('/') {
            let parts: Vec<&str> = text.split('/').collect();
            return match parts.as_slice() {
                [group, version, name] => Self::new(*group, *version, *name),
                [version, name] => Self::new("", *version, *name),
                _ => Self::new("", "", ""),
            };
        }
        match text.split_once('.') {
            None => Self::new("", "", text),
            Some((name, rest)) => match rest.split_once('.') {
                Some((version, group)) if is_version(version) => Self::new(group, version, name),
                _ if is_version(rest) => Self::new("", rest, name),
                _ => Self::new(rest, "", name),
            },
        }
    }

    /// The API group (empty: the core group, or any group when the version is empty too).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The API version (empty: the group's preferred version).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The plural, singular, kind or short name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is wrong with it, if anything.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.name.is_empty() {
            Some("the resource name is empty")
        } else if self.name.contains(char::is_whitespace) {
            Some("the resource name contains whitespace")
        } else {
            None
        }
    }

    pub(crate) fn to_proto(&self) -> pb::ResourceSelector {
        pb::ResourceSelector {
            group: self.group.clone(),
            version: self.version.clone(),
            name: self.name.clone(),
            ..pb::ResourceSelector::default()
        }
    }
}

/// `v1`, `v2beta1`, `v1alpha3`: a Kubernetes API version.
fn is_version(segment: &str) -> bool {
    let Some(rest) = segment.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = &rest[digits..];
    let tail = rest
        .strip_prefix("alpha")
        .or_else(|| rest.strip_prefix("beta"));
    match tail {
        None => rest.is_empty(),
        Some(tail) => !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()),
    }
}

impl From<&str> for Resource {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

impl From<String> for Resource {
    fn from(text: String) -> Self {
        Self::parse(&text)
    }
}

impl From<&String> for Resource {
    fn from(text: &String) -> Self {
        Self::parse(text)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.group.is_empty(), self.version.is_empty()) {
            (true, true) => write!(f, "{}", self.name),
            (true, false) => write!(f, "{}/{}", self.version, self.name),
            (false, true) => write!(f, "{}.{}", self.name, self.group),
            (false, false) => write!(f, "{}.{}.{}", self.name, self.version, self.group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_forms() {
        assert_eq!(
            Resource::parse("widgets.example.com"),
            Resource::new("example.com", "", "widgets")
        );
        assert_eq!(
            Resource::parse("deployments.v1.apps"),
            Resource::new("apps", "v1", "deployments")
        );
        assert_eq!(
            Resource::parse("crontabs.v2beta1.stable.example.com"),
            Resource::new("stable.example.com", "v2beta1", "crontabs")
        );
        assert_eq!(
            Resource::parse("example.com/v1/widgets"),
            Resource::new("example.com", "v1", "widgets")
        );
        assert_eq!(
            Resource::parse("v1/configmaps"),
            Resource::core("configmaps")
        );
        assert_eq!(
            Resource::parse("configmaps"),
            Resource::new("", "", "configmaps")
        );
        // A group whose first label looks like a version only when it is one.
        assert_eq!(
            Resource::parse("sites.vm.example.com"),
            Resource::new("vm.example.com", "", "sites")
        );
        assert_eq!(Resource::parse("pods.v1"), Resource::core("pods"));
    }

    #[test]
    fn problems_and_display() {
        assert!(Resource::parse("").problem().is_some());
        assert!(Resource::parse("a/b/c/d").problem().is_some());
        assert!(Resource::parse("widgets.example.com").problem().is_none());
        assert_eq!(
            Resource::parse("deployments.v1.apps").to_string(),
            "deployments.v1.apps"
        );
        assert_eq!(Resource::core("services").to_string(), "v1/services");
        let proto = Resource::parse("widgets.example.com").to_proto();
        assert_eq!(
            (
                proto.group.as_str(),
                proto.version.as_str(),
                proto.name.as_str()
            ),
            ("example.com", "", "widgets")
        );
    }

    #[test]
    fn versions() {
        for v in ["v1", "v12", "v1beta1", "v2alpha3"] {
            assert!(is_version(v), "{v}");
        }
        for v in ["v", "vm", "v1beta", "version", "1", "v1gamma1"] {
            assert!(!is_version(v), "{v}");
        }
    }
}
