//! `operon rbac`: the Role or ClusterRole the core needs, from its resources or its handler
//! services.

use clap::Args;

use super::TlsArgs;

/// Options of `operon rbac`.
#[derive(Debug, Args)]
pub(super) struct RbacArgs {
    /// A served resource: GROUP/VERSION/PLURAL, VERSION/PLURAL (core group) or PLURAL.GROUP
    /// (repeatable); printed without asking the cluster.
    #[arg(
        long = "resource",
        value_name = "RESOURCE",
        required_unless_present = "handlers"
    )]
    resources: Vec<String>,
    /// A handler service to ask for its resources (Describe), resolved through the cluster's
    /// discovery like `operon run` does (repeatable).
    #[arg(long = "handler", value_name = "URL")]
    handlers: Vec<String>,
    /// The core serves all namespaces: print a ClusterRole and ClusterRoleBinding.
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespaces")]
    all_namespaces: bool,
    /// The core serves this namespace: print a Role and RoleBinding in it (repeatable).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// The name of the Role/ClusterRole and its binding.
    #[arg(long, default_value = "operon")]
    name: String,
    /// The core's ServiceAccount, NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME", default_value = "operon/operon")]
    service_account: String,
    /// Print only the rules (the Helm chart's `rbac.rules` value).
    #[arg(long)]
    rules_only: bool,
    /// The core manages admission webhook configurations (`operon run --admission-managed`):
    /// grant reading, creating and patching them (cluster-scoped: needs -A).
    #[arg(long)]
    admission_managed: bool,
    /// The core runs with `--leader-election`: grant its Lease (get, create, update). The
    /// Lease's namespace must be one of the -n namespaces (or use -A).
    #[arg(long)]
    leader_election: bool,
    /// The core runs with `--shards-ring`: grant the shard Leases (get, list, create, update)
    /// and `patch` of tasks' parents (claimed by a label). The Leases' namespace must be one of
    /// the -n namespaces (or use -A).
    #[arg(long)]
    shards: bool,
    /// The core runs with `--peering` (Kopf's peering): grant reading and patching the
    /// KopfPeering objects (ClusterKopfPeering with -A).
    #[arg(long)]
    peering: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

impl RbacArgs {
    pub(super) async fn render(&self) -> anyhow::Result<String> {
        use crate::rbac;
        if !self.rules_only && !self.all_namespaces && self.namespaces.is_empty() {
            anyhow::bail!("say where the core serves: -A (all namespaces) or -n NS (repeatable)");
        }
        let Some((sa_namespace, sa_name)) = self
            .service_account
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        else {
            anyhow::bail!(
                "--service-account must be NAMESPACE/NAME, got {:?}",
                self.service_account
            );
        };
        if let Some(pattern) = self
            .namespaces
            .iter()
            .find(|n| crate::core::namespaces::is_pattern(n))
        {
            anyhow::bail!(
                "-n {pattern:?} is a namespace pattern: the core watches cluster-wide under patterns, \
                 so it needs a ClusterRole (use -A)"
            );
        }
        let mut resources = Vec::new();
        for text in &self.resources {
            let selector = crate::runtime::observer::parse_selector(text)?;
            if selector.version.is_empty() && selector.group.is_empty() {
                anyhow::bail!(
                    "--resource {text}: give the group (GROUP/VERSION/PLURAL, PLURAL.GROUP, or \
                     VERSION/PLURAL for the core group), or use --handler to resolve names"
                );
            }
            resources.push(rbac::Resource::new(
                selector.group,
                selector.name,
                true,
                rbac::Access::Served,
            ));
        }
        if !self.handlers.is_empty() {
            let tls = self.tls.load()?;
            let served = crate::runtime::engine::served_by(&self.handlers, tls.as_ref()).await?;
            for (s, access) in served {
                if !s.namespaced && !self.all_namespaces {
                    anyhow::bail!(
                        "{} is cluster-scoped: the core needs a ClusterRole for it (use -A)",
                        s.name()
                    );
                }
                // The core writes the status of what it serves and of tasks, never of children
                // or of a task's parent.
                let writes_status =
                    s.has_status && matches!(access, rbac::Access::Served | rbac::Access::Task);
                if self.shards && matches!(access, rbac::Access::TaskParent) {
                    // A shard claims the parents it runs tasks for by labelling them.
                    resources.push(rbac::Resource::new(
                        s.resource.group.clone(),
                        s.resource.plural.clone(),
                        false,
                        rbac::Access::Claimed,
                    ));
                }
                resources.push(rbac::Resource::new(
                    s.resource.group,
                    s.resource.plural,
                    writes_status,
                    access,
                ));
            }
        }
        if self.admission_managed {
            if !self.all_namespaces && !self.rules_only {
                anyhow::bail!(
                    "webhook configurations are cluster-scoped: the core needs a ClusterRole to \
                     manage them (use -A)"
                );
            }
            resources.extend(rbac::webhook_configurations());
        }
        if self.leader_election {
            resources.extend(rbac::leases());
        }
        if self.shards {
            resources.extend(rbac::shard_leases());
        }
        if self.peering {
            resources.extend(rbac::peerings(self.all_namespaces));
        }
        let rules = rbac::rules(&resources);
        if self.rules_only {
            return Ok(rbac::render_rules(&rules, ""));
        }
        let mut command = String::from("operon rbac");
        for r in &self.resources {
            command.push_str(&format!(" --resource {r}"));
        }
        for h in &self.handlers {
            command.push_str(&format!(" --handler {h}"));
        }
        let scope = if self.all_namespaces {
            command.push_str(" -A");
            rbac::Scope::Cluster
        } else {
            for ns in &self.namespaces {
                command.push_str(&format!(" -n {ns}"));
            }
            rbac::Scope::Namespaces(self.namespaces.clone())
        };
        if self.admission_managed {
            command.push_str(" --admission-managed");
        }
        if self.leader_election {
            command.push_str(" --leader-election");
        }
        if self.shards {
            command.push_str(" --shards");
        }
        if self.peering {
            command.push_str(" --peering");
        }
        if self.name != "operon" {
            command.push_str(&format!(" --name {}", self.name));
        }
        if self.service_account != "operon/operon" {
            command.push_str(&format!(" --service-account {}", self.service_account));
        }
        let subject = rbac::Subject {
            role: self.name.clone(),
            service_account: sa_name.to_owned(),
            namespace: sa_namespace.to_owned(),
        };
        Ok(rbac::render(&rules, &scope, &subject, &command))
    }
}
