//! Least-privilege RBAC for the core, derived from what it serves (`operon rbac`).
//!
//! The core calls exactly this on the API server (see `runtime::{engine, patching, events,
//! discovery}`), and the rules grant exactly this, with no wildcards:
//!
//! - `list` and `watch` of every served resource (the watches), `patch` of it (progress records,
//!   the diff-base, the finalizer, handler results without a status subresource);
//! - `patch` of `<plural>/status` where results go to a status subresource;
//! - for sync registrations: the parents as served resources, and `create` (server-side apply of
//!   a new child), `patch` and `delete` of every child type;
//! - for task registrations: `get` and `delete` of the tasks besides the above, `get` of their
//!   parents;
//! - `create` of core `events` (Kopf-style events about the handled objects);
//! - with managed admission webhooks (`--admission-managed`): `get`, `create` and `patch` of
//!   the cluster-scoped `validatingwebhookconfigurations` and `mutatingwebhookconfigurations`
//!   (so a ClusterRole);
//! - with `--leader-election`: `get`, `create` and `update` of coordination.k8s.io `leases`;
//! - with `--shards-ring`: besides, `list` of `leases` (every shard reads the ring's members),
//!   and `patch` of the tasks' parents (a shard claims them by a label);
//! - with `--peering`: `get` and `patch` of Kopf's `kopfpeerings` (or `clusterkopfpeerings`
//!   with -A) and their `/status`, in `kopf.dev` and `zalando.org`;
//! - discovery (`/api`, `/apis`, …), which every authenticated user may read through the
//!   built-in `system:discovery` ClusterRole — no rule is needed.
//!
//! Operon defines no CRDs of its own today, so there is nothing else to grant.
//! [`render`] prints the Role/ClusterRole and its binding as YAML; it is pure, so the committed
//! manifests in `deploy/` are drift-checked against it by a plain test.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A resource the core serves, as far as RBAC cares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Resource {
    /// The API group; empty for the core group.
    pub group: String,
    /// The plural name (what RBAC rules name).
    pub plural: String,
    /// Whether the core writes `/status` (the resource has a status subresource). Unknown
    /// (offline) counts as yes.
    pub status: bool,
    /// The verbs the core uses on it (see [`Access`]).
    pub verbs: Vec<&'static str>,
}

/// What the core does with a resource, and so the verbs it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Access {
    /// Served by change handlers, a sync parent: watched and patched.
    Served,
    /// A sync registration's child type: watched, applied (created or patched) and deleted.
    Child,
    /// A task resource: watched, read, patched and deleted (when its retention ends).
    Task,
    /// The parent of a task: read.
    TaskParent,
    /// A webhook configuration the core manages (admission webhooks): read, created, patched.
    WebhookConfiguration,
    /// The leader election's Lease: read, created, updated (`--leader-election`).
    Lease,
    /// The shard Leases: the own one read, created, updated; the ring's listed (`--shards-ring`).
    ShardLease,
    /// An object a shard claims by labelling it (a task's parent, with `--shards-ring`): patched.
    Claimed,
    /// Kopf's peering objects: read and patched (`--peering`).
    Peering,
}

impl Access {
    /// The verbs of this access, in [`VERB_ORDER`].
    pub(crate) fn verbs(self) -> &'static [&'static str] {
        match self {
            Access::Served => &RESOURCE_VERBS,
            Access::Child => &["list", "watch", "create", "patch", "delete"],
            Access::Task => &["get", "list", "watch", "patch", "delete"],
            Access::TaskParent => &["get", "list", "watch"],
            Access::WebhookConfiguration => &["get", "create", "patch"],
            Access::Lease => &["get", "create", "update"],
            Access::ShardLease => &["get", "list", "create", "update"],
            Access::Claimed => &["patch"],
            Access::Peering => &["get", "patch"],
        }
    }
}

/// The order verbs are printed in.
pub(crate) const VERB_ORDER: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

impl Resource {
    /// A resource with the verbs of `access`.
    pub(crate) fn new(
        group: impl Into<String>,
        plural: impl Into<String>,
        status: bool,
        access: Access,
    ) -> Self {
        Resource {
            group: group.into(),
            plural: plural.into(),
            status,
            verbs: access.verbs().to_vec(),
        }
    }
}

/// The webhook configurations the core manages with `--admission-managed` (cluster-scoped).
pub(crate) fn webhook_configurations() -> Vec<Resource> {
    [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ]
    .into_iter()
    .map(|plural| {
        Resource::new(
            "admissionregistration.k8s.io",
            plural,
            false,
            Access::WebhookConfiguration,
        )
    })
    .collect()
}

/// The leader election's Lease (`operon run --leader-election`).
pub(crate) fn leases() -> Vec<Resource> {
    vec![Resource::new(
        "coordination.k8s.io",
        "leases",
        false,
        Access::Lease,
    )]
}

/// The shard Leases (`operon run --shards-ring`).
pub(crate) fn shard_leases() -> Vec<Resource> {
    vec![Resource::new(
        "coordination.k8s.io",
        "leases",
        false,
        Access::ShardLease,
    )]
}

/// Kopf's peering objects (`operon run --peering`): `ClusterKopfPeering` when the core serves
/// all namespaces, else `KopfPeering`, of both of Kopf's groups. `/status` too, for a CRD that
/// has the subresource (Kopf's own have none).
pub(crate) fn peerings(cluster: bool) -> Vec<Resource> {
    let plural = if cluster {
        "clusterkopfpeerings"
    } else {
        "kopfpeerings"
    };
    ["kopf.dev", "zalando.org"]
        .into_iter()
        .map(|group| Resource::new(group, plural, true, Access::Peering))
        .collect()
}

/// Where the core serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// All namespaces (`-A`): one ClusterRole and ClusterRoleBinding.
    Cluster,
    /// These namespaces (`-n NS …`): one Role and RoleBinding in each.
    Namespaces(Vec<String>),
}

/// One RBAC policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// `apiGroups`.
    pub api_groups: Vec<String>,
    /// `resources`.
    pub resources: Vec<String>,
    /// `verbs`.
    pub verbs: Vec<&'static str>,
}

/// Who gets the role: the names in the printed manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    /// The name of the Role/ClusterRole and of its binding.
    pub role: String,
    /// The ServiceAccount's name.
    pub service_account: String,
    /// The ServiceAccount's namespace.
    pub namespace: String,
}

/// The verbs the core uses on a served resource.
pub(crate) const RESOURCE_VERBS: [&str; 3] = ["list", "watch", "patch"];
/// The verbs the core uses on a served resource's status subresource.
pub(crate) const STATUS_VERBS: [&str; 1] = ["patch"];
/// The verbs the core uses on core `events`.
pub(crate) const EVENT_VERBS: [&str; 1] = ["create"];

/// The rules for serving `resources`: per API group (sorted), the resources by the verbs they
/// need (a resource named twice gets the union), then their status subresources, then events.
pub(crate) fn rules(resources: &[Resource]) -> Vec<Rule> {
    let mut by_group: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for r in resources {
        by_group.entry(r.group.as_str()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (group, members) in by_group {
        let mut verbs_of: BTreeMap<&str, Vec<&'static str>> = BTreeMap::new();
        for r in &members {
            verbs_of
                .entry(r.plural.as_str())
                .or_default()
                .extend(&r.verbs);
        }
        let mut by_verbs: BTreeMap<Vec<usize>, Vec<String>> = BTreeMap::new();
        for (plural, verbs) in verbs_of {
            let mut order: Vec<usize> = verbs
                .iter()
                .filter_map(|v| VERB_ORDER.iter().position(|o| o == v))
                .collect();
            order.sort_unstable();
            order.dedup();
            by_verbs.entry(order).or_default().push(plural.to_owned());
        }
        // The served resources' rule first (the common case), then the others.
        let served: Vec<usize> = RESOURCE_VERBS
            .iter()
            .filter_map(|v| VERB_ORDER.iter().position(|o| o == v))
            .collect();
        let mut groups: Vec<(Vec<usize>, Vec<String>)> = by_verbs.into_iter().collect();
        groups.sort_by_key(|(verbs, _)| *verbs != served);
        for (verbs, plurals) in groups {
            out.push(Rule {
                api_groups: vec![group.to_owned()],
                resources: plurals,
                verbs: verbs.into_iter().map(|i| VERB_ORDER[i]).collect(),
            });
        }
        let mut statuses: Vec<String> = members
            .iter()
            .filter(|r| r.status)
            .map(|r| format!("{}/status", r.plural))
            .collect();
        statuses.sort();
        statuses.dedup();
        if !statuses.is_empty() {
            out.push(Rule {
                api_groups: vec![group.to_owned()],
                resources: statuses,
                verbs: STATUS_VERBS.to_vec(),
            });
        }
    }
    out.push(Rule {
        api_groups: vec![String::new()],
        resources: vec!["events".to_owned()],
        verbs: EVENT_VERBS.to_vec(),
    });
    out
}

fn quoted(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let items: Vec<String> = items
        .into_iter()
        .map(|s| serde_json::Value::String(s.as_ref().to_owned()).to_string())
        .collect();
    format!("[{}]", items.join(", "))
}

/// The rules as a YAML list (what the Helm chart's `rbac.rules` value holds), each line
/// prefixed with `indent`.
pub(crate) fn render_rules(rules: &[Rule], indent: &str) -> String {
    let mut out = String::new();
    for rule in rules {
        let _ = writeln!(out, "{indent}- apiGroups: {}", quoted(&rule.api_groups));
        let _ = writeln!(out, "{indent}  resources: {}", quoted(&rule.resources));
        let _ = writeln!(out, "{indent}  verbs: {}", quoted(&rule.verbs));
    }
    out
}

/// The Role(s)/ClusterRole with `rules` and the binding(s) to the ServiceAccount, as
/// multi-document YAML, headed by a comment naming the command that prints it.
pub(crate) fn render(rules: &[Rule], scope: &Scope, subject: &Subject, command: &str) -> String {
    let mut out = format!(
        "# Least-privilege RBAC of the Operon core, printed by `{command}`.\n\
         # Regenerate it rather than editing it (a test checks that it is up to date).\n"
    );
    let role = |out: &mut String, kind: &str, namespace: Option<&str>| {
        let _ = writeln!(out, "apiVersion: rbac.authorization.k8s.io/v1");
        let _ = writeln!(out, "kind: {kind}");
        let _ = writeln!(out, "metadata:");
        let _ = writeln!(out, "  name: {}", subject.role);
        if let Some(ns) = namespace {
            let _ = writeln!(out, "  namespace: {ns}");
        }
        let _ = writeln!(out, "rules:");
        out.push_str(&render_rules(rules, ""));
    };
    let binding = |out: &mut String, kind: &str, role_kind: &str, namespace: Option<&str>| {
        let _ = writeln!(out, "---");
        let _ = writeln!(out, "apiVersion: rbac.authorization.k8s.io/v1");
        let _ = writeln!(out, "kind: {kind}");
        let _ = writeln!(out, "metadata:");
        let _ = writeln!(out, "  name: {}", subject.role);
        if let Some(ns) = namespace {
            let _ = writeln!(out, "  namespace: {ns}");
        }
        let _ = writeln!(out, "roleRef:");
        let _ = writeln!(out, "  apiGroup: rbac.authorization.k8s.io");
        let _ = writeln!(out, "  kind: {role_kind}");
        let _ = writeln!(out, "  name: {}", subject.role);
        let _ = writeln!(out, "subjects:");
        let _ = writeln!(out, "- kind: ServiceAccount");
        let _ = writeln!(out, "  name: {}", subject.service_account);
        let _ = writeln!(out, "  namespace: {}", subject.namespace);
    };
    match scope {
        Scope::Cluster => {
            role(&mut out, "ClusterRole", None);
            binding(&mut out, "ClusterRoleBinding", "ClusterRole", None);
        }
        Scope::Namespaces(namespaces) => {
            for (i, ns) in namespaces.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                role(&mut out, "Role", Some(ns));
                binding(&mut out, "RoleBinding", "Role", Some(ns));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Vec<Resource> {
        vec![Resource {
            group: "kopf.dev".into(),
            plural: "kopfexamples".into(),
            status: true,
            verbs: RESOURCE_VERBS.to_vec(),
        }]
    }

    fn subject() -> Subject {
        Subject {
            role: "operon".into(),
            service_account: "operon".into(),
            namespace: "operon".into(),
        }
    }

    #[test]
    fn managed_admission_webhooks_need_their_configurations() {
        let mut resources = example();
        resources.extend(webhook_configurations());
        assert_eq!(
            render_rules(&rules(&resources), ""),
            r#"- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfexamples"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfexamples/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
"#
        );
    }

    #[test]
    fn a_shard_may_label_the_parents_of_its_tasks() {
        let rules = rules(&[
            Resource::new("example.dev", "clusters", false, Access::TaskParent),
            Resource::new("example.dev", "clusters", false, Access::Claimed),
        ]);
        assert_eq!(
            render_rules(&rules, ""),
            r#"- apiGroups: ["example.dev"]
  resources: ["clusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
"#
        );
    }

    #[test]
    fn sync_children_and_tasks_get_the_verbs_the_core_uses_on_them() {
        let rules = rules(&[
            Resource::new("example.dev", "sites", true, Access::Served),
            Resource::new("", "configmaps", false, Access::Child),
            Resource::new("example.dev", "repairs", true, Access::Task),
            Resource::new("example.dev", "clusters", true, Access::TaskParent),
            Resource::new("example.dev", "clusters", true, Access::Served),
        ]);
        assert_eq!(
            render_rules(&rules, ""),
            r#"- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["example.dev"]
  resources: ["sites"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["example.dev"]
  resources: ["clusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["example.dev"]
  resources: ["repairs"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["example.dev"]
  resources: ["clusters/status", "repairs/status", "sites/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
"#
        );
    }

    #[test]
    fn rules_name_exactly_what_the_core_calls_and_no_wildcards() {
        let rules = rules(&[
            Resource::new("kopf.dev", "kopfexamples", true, Access::Served),
            Resource::new("", "pods", false, Access::Served),
            Resource::new("kopf.dev", "another", false, Access::Served),
        ]);
        let text = render_rules(&rules, "");
        assert!(!text.contains('*'), "{text}");
        assert_eq!(
            text,
            r#"- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["kopf.dev"]
  resources: ["another", "kopfexamples"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfexamples/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
"#
        );
    }

    #[test]
    fn namespaced_scope_gives_a_role_and_binding_per_namespace() {
        let text = render(
            &rules(&example()),
            &Scope::Namespaces(vec!["a".into(), "b".into()]),
            &subject(),
            "operon rbac",
        );
        assert_eq!(text.matches("\nkind: Role\n").count(), 2);
        assert_eq!(text.matches("\nkind: RoleBinding\n").count(), 2);
        assert!(text.contains("  namespace: b\n"));
        assert!(!text.contains("ClusterRole"));
    }

    /// The committed RBAC of the kustomize base is exactly what `operon rbac` prints for the
    /// example (`deploy/kustomize/README.md` says how to regenerate it).
    #[test]
    fn the_kustomize_base_rbac_is_up_to_date() {
        let committed = include_str!("../../deploy/kustomize/base/rbac.yaml");
        let generated = render(
            &rules(&example()),
            &Scope::Cluster,
            &subject(),
            KUSTOMIZE_COMMAND,
        );
        assert_eq!(
            committed, generated,
            "deploy/kustomize/base/rbac.yaml is stale: regenerate it with `{KUSTOMIZE_COMMAND} > deploy/kustomize/base/rbac.yaml`"
        );
    }

    /// The Helm chart's default `rbac.rules` are exactly what `operon rbac --rules-only` prints
    /// for the example.
    #[test]
    fn the_helm_chart_default_rules_are_up_to_date() {
        let values = include_str!("../../deploy/helm/operon/values.yaml");
        let begin = "  # BEGIN operon rbac --resource kopf.dev/v1/kopfexamples --rules-only\n";
        let end = "  # END operon rbac\n";
        let start = values.find(begin).expect("the BEGIN marker in values.yaml") + begin.len();
        let stop = values[start..]
            .find(end)
            .expect("the END marker in values.yaml")
            + start;
        assert_eq!(
            &values[start..stop],
            render_rules(&rules(&example()), "  "),
            "the rbac.rules of deploy/helm/operon/values.yaml are stale: regenerate them with \
             `operon rbac --resource kopf.dev/v1/kopfexamples --rules-only`"
        );
    }

    const KUSTOMIZE_COMMAND: &str = "operon rbac --resource kopf.dev/v1/kopfexamples -A";
}
