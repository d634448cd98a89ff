//! The command line and the handlers it declares.
//!
//! Parsing is pure: [`parse_resource`] and [`parse_handler`] turn the `--resource` and
//! `--handler` values into data, and [`Config`] checks them as a whole.

use std::{collections::HashSet, net::SocketAddr, path::PathBuf};

use clap::Parser;
use operon_handler::proto::{ErrorsMode, HandlerKind, Options, TaskMode};

use crate::duration::seconds_to_proto;

/// `operon-example-handler`: an Operon handler service whose handlers do what the objects'
/// `spec.behaviour.<handler id>` tells them to.
#[derive(Debug, Clone, Parser)]
#[command(name = "operon-example-handler", version, about)]
pub struct Cli {
    /// The address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "OPERON_EXAMPLE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// The JSON-lines file to append one line to per handler execution.
    #[arg(long, env = "OPERON_EXAMPLE_LEDGER")]
    pub ledger: Option<PathBuf>,
    /// The resource all handlers serve: GROUP/VERSION/PLURAL (an empty GROUP is the core group).
    #[arg(long, value_parser = parse_resource)]
    pub resource: ResourceSpec,
    /// A handler: `KIND:ID[=FIELD][,OPTION=VALUE...]`, KIND one of
    /// create|update|delete|resume|field|event|timer|daemon|validate|mutate; FIELD (a dotted
    /// path) only for field handlers and update handlers (an update of that field only);
    /// options: retries, timeout, backoff, call_timeout (seconds), errors
    /// (temporary|permanent|ignored), optional, deleted (true|false), label=KEY=VALUE; for
    /// validate/mutate: operations (OP|OP…), subresource, ignore_failures, side_effects,
    /// persistent (see `admission.rs` for what they do).
    #[arg(long = "handler", value_parser = parse_handler, required = true)]
    pub handlers: Vec<HandlerSpec>,
    /// Make every delete handler optional (it then causes no finalizer).
    #[arg(long)]
    pub optional_delete: bool,
    /// A task type, served through `TaskService`:
    /// ID:TASK_RESOURCE:PARENT_RESOURCE:PARENT_FIELD:MODE[,OPTION=VALUE...], resources as
    /// GROUP/VERSION/PLURAL, MODE parallel|sequential; options: priority (an integer),
    /// retention, timeout (seconds). What a task does is scripted by its spec (see `task.rs`).
    #[arg(long = "task", value_parser = parse_task)]
    pub tasks: Vec<TaskSpec>,
    /// Also serve the gRPC health service alone there, in plaintext (for the kubelet's grpc
    /// probes).
    #[arg(long, env = "OPERON_EXAMPLE_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Serve TLS with this certificate (PEM); needs --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "OPERON_EXAMPLE_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "OPERON_EXAMPLE_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require mutual TLS: clients (the core) must present a certificate signed by this CA (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "OPERON_EXAMPLE_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
}

/// The resource the handlers serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    /// The API group; empty for the core group.
    pub group: String,
    /// The API version, e.g. `v1`.
    pub version: String,
    /// The plural name, e.g. `kopfexamples`.
    pub plural: String,
}

/// One handler as declared on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerSpec {
    /// The handler id: the key of its progress record and of `spec.behaviour.<id>`.
    pub id: String,
    /// The kind of handler.
    pub kind: HandlerKind,
    /// For field handlers: the dotted path of the field that must change.
    pub field: Option<String>,
    /// The handler's options, as announced in the manifest.
    pub options: Options,
    /// Label filters (`label=KEY=VALUE` options): the label must have this value.
    pub labels: Vec<(String, String)>,
}

/// One task type as declared on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The registration id (`TaskRequest.task_id`).
    pub id: String,
    /// The task resource.
    pub task: ResourceSpec,
    /// The parent resource.
    pub parent: ResourceSpec,
    /// The dotted path in a task naming its parent.
    pub parent_field: String,
    /// Parallel or sequential.
    pub mode: TaskMode,
    /// Higher first among the waiting tasks of a parent.
    pub priority: i32,
    /// How long finished tasks are kept.
    pub retention: Option<prost_types::Duration>,
    /// A deadline for the whole run.
    pub timeout: Option<prost_types::Duration>,
}

/// Parses `ID:TASK_RESOURCE:PARENT_RESOURCE:PARENT_FIELD:MODE[,OPTION=VALUE...]`.
pub fn parse_task(value: &str) -> Result<TaskSpec, String> {
    let mut options = value.split(',');
    let head = options.next().unwrap_or_default();
    let parts: Vec<&str> = head.split(':').collect();
    let [id, task, parent, field, mode] = parts.as_slice() else {
        return Err(format!(
            "expected ID:TASK_RESOURCE:PARENT_RESOURCE:PARENT_FIELD:MODE[,OPTION=VALUE...], \
             got {value:?}"
        ));
    };
    if id.is_empty() || field.is_empty() {
        return Err(format!(
            "the task id and the parent field must not be empty in {value:?}"
        ));
    }
    let mode = match *mode {
        "parallel" => TaskMode::Parallel,
        "sequential" => TaskMode::Sequential,
        _ => {
            return Err(format!(
                "the task mode must be parallel|sequential, got {mode:?}"
            ));
        }
    };
    let mut spec = TaskSpec {
        id: (*id).to_owned(),
        task: parse_resource(task)?,
        parent: parse_resource(parent)?,
        parent_field: (*field).to_owned(),
        mode,
        priority: 0,
        retention: None,
        timeout: None,
    };
    for option in options {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("expected OPTION=VALUE, got {option:?}"))?;
        let seconds = || {
            value
                .parse::<f64>()
                .ok()
                .and_then(seconds_to_proto)
                .ok_or_else(|| {
                    format!("{key} must be a non-negative number of seconds, got {value:?}")
                })
        };
        match key {
            "priority" => {
                spec.priority = value
                    .parse()
                    .map_err(|_| format!("priority must be an integer, got {value:?}"))?;
            }
            "retention" => spec.retention = Some(seconds()?),
            "timeout" => spec.timeout = Some(seconds()?),
            _ => {
                return Err(format!(
                    "unknown task option {key:?} (expected priority, retention, timeout)"
                ));
            }
        }
    }
    Ok(spec)
}

/// Parses `GROUP/VERSION/PLURAL` (or `VERSION/PLURAL` for the core group).
pub fn parse_resource(value: &str) -> Result<ResourceSpec, String> {
    let parts: Vec<&str> = value.split('/').collect();
    let (group, version, plural) = match parts.as_slice() {
        [group, version, plural] => (*group, *version, *plural),
        [version, plural] => ("", *version, *plural),
        _ => return Err(format!("expected GROUP/VERSION/PLURAL, got {value:?}")),
    };
    if version.is_empty() || plural.is_empty() {
        return Err(format!(
            "the version and the plural must not be empty in {value:?}"
        ));
    }
    Ok(ResourceSpec {
        group: group.to_owned(),
        version: version.to_owned(),
        plural: plural.to_owned(),
    })
}

/// Parses `KIND:ID[=FIELD][,OPTION=VALUE...]`.
pub fn parse_handler(value: &str) -> Result<HandlerSpec, String> {
    let (kind, rest) = value
        .split_once(':')
        .ok_or_else(|| format!("expected KIND:ID[,OPTION=VALUE...], got {value:?}"))?;
    let kind = parse_kind(kind)?;
    let mut parts = rest.split(',');
    let head = parts.next().unwrap_or_default();
    let (id, field) = match head.split_once('=') {
        Some((id, field)) => (id, Some(field)),
        None => (head, None),
    };
    if id.is_empty() {
        return Err(format!("the handler id is empty in {value:?}"));
    }
    let field = match (kind, field) {
        (HandlerKind::Field, Some(field)) if !field.is_empty() => Some(field.to_owned()),
        (HandlerKind::Field, _) => {
            return Err(format!(
                "a field handler needs field:ID=PATH, got {value:?}"
            ));
        }
        // An update handler with a field filter: Kopf's `@kopf.on.update(..., field=PATH)`.
        (HandlerKind::Update, Some(field)) if !field.is_empty() => Some(field.to_owned()),
        (_, Some(_)) => {
            return Err(format!(
                "only field and update handlers take =PATH, got {value:?}"
            ));
        }
        (_, None) => None,
    };
    let mut options = Options::default();
    let mut labels = Vec::new();
    for option in parts {
        if let Some(label) = option.strip_prefix("label=") {
            let (key, value) = label
                .split_once('=')
                .ok_or_else(|| format!("expected label=KEY=VALUE, got {option:?}"))?;
            labels.push((key.to_owned(), value.to_owned()));
            continue;
        }
        apply_option(&mut options, option)?;
    }
    Ok(HandlerSpec {
        id: id.to_owned(),
        kind,
        field,
        options,
        labels,
    })
}

fn parse_kind(kind: &str) -> Result<HandlerKind, String> {
    Ok(match kind {
        "create" => HandlerKind::Create,
        "update" => HandlerKind::Update,
        "delete" => HandlerKind::Delete,
        "resume" => HandlerKind::Resume,
        "field" => HandlerKind::Field,
        "event" => HandlerKind::Event,
        "timer" => HandlerKind::Timer,
        "daemon" => HandlerKind::Daemon,
        "validate" => HandlerKind::Validate,
        "mutate" => HandlerKind::Mutate,
        _ => {
            return Err(format!(
                "unknown handler kind {kind:?} \
                 (expected create|update|delete|resume|field|event|timer|daemon|validate|mutate)"
            ));
        }
    })
}

fn apply_option(options: &mut Options, option: &str) -> Result<(), String> {
    let (key, value) = option
        .split_once('=')
        .ok_or_else(|| format!("expected OPTION=VALUE, got {option:?}"))?;
    let seconds = || {
        value
            .parse::<f64>()
            .ok()
            .and_then(seconds_to_proto)
            .ok_or_else(|| format!("{key} must be a non-negative number of seconds, got {value:?}"))
    };
    let flag = || {
        value
            .parse::<bool>()
            .map_err(|_| format!("{key} must be true or false, got {value:?}"))
    };
    match key {
        "retries" => {
            let retries = value
                .parse::<u32>()
                .map_err(|_| format!("retries must be a whole number, got {value:?}"))?;
            options.retries = Some(retries);
        }
        "timeout" => options.timeout = Some(seconds()?),
        "backoff" => options.backoff = Some(seconds()?),
        "call_timeout" => options.call_timeout = Some(seconds()?),
        "interval" => options.interval = Some(seconds()?),
        "idle" => options.idle = Some(seconds()?),
        "initial_delay" => options.initial_delay = Some(seconds()?),
        "sharp" => options.sharp = flag()?,
        "cancellation_timeout" => options.cancellation_timeout = Some(seconds()?),
        "errors" => {
            let mode = match value {
                "temporary" => ErrorsMode::Temporary,
                "permanent" => ErrorsMode::Permanent,
                "ignored" => ErrorsMode::Ignored,
                _ => {
                    return Err(format!(
                        "errors must be temporary|permanent|ignored, got {value:?}"
                    ));
                }
            };
            options.set_errors(mode);
        }
        "optional" => options.optional = flag()?,
        "deleted" => options.deleted = flag()?,
        // Admission handlers: `operations=CREATE|UPDATE`, `subresource=status` (or `*`).
        "operations" => options.operations = value.split('|').map(str::to_owned).collect(),
        "subresource" => options.subresource = Some(value.to_owned()),
        "ignore_failures" => options.ignore_failures = flag()?,
        "side_effects" => options.side_effects = flag()?,
        "persistent" => options.persistent = flag()?,
        _ => {
            return Err(format!(
                "unknown handler option {key:?} (expected retries, timeout, backoff, \
                 call_timeout, interval, idle, initial_delay, sharp, cancellation_timeout, errors, \
                 optional, deleted, operations, subresource, ignore_failures, side_effects, \
                 persistent)"
            ));
        }
    }
    Ok(())
}

/// The validated configuration of a running service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The resource all handlers serve.
    pub resource: ResourceSpec,
    /// The handlers, in the order given.
    pub handlers: Vec<HandlerSpec>,
    /// The task types, in the order given.
    pub tasks: Vec<TaskSpec>,
}

impl Config {
    /// Checks the handlers (ids are unique) and applies `--optional-delete`.
    pub fn new(
        resource: ResourceSpec,
        mut handlers: Vec<HandlerSpec>,
        optional_delete: bool,
    ) -> Result<Self, String> {
        let mut seen = HashSet::new();
        for handler in &mut handlers {
            if !seen.insert(handler.id.clone()) {
                return Err(format!("the handler id {:?} is given twice", handler.id));
            }
            if optional_delete && handler.kind == HandlerKind::Delete {
                handler.options.optional = true;
            }
        }
        Ok(Self {
            resource,
            handlers,
            tasks: Vec::new(),
        })
    }

    /// With these task types (ids must be unique).
    pub fn with_tasks(mut self, tasks: Vec<TaskSpec>) -> Result<Self, String> {
        let mut seen = HashSet::new();
        for task in &tasks {
            if !seen.insert(task.id.clone()) {
                return Err(format!("the task id {:?} is given twice", task.id));
            }
        }
        self.tasks = tasks;
        Ok(self)
    }

    /// The task type with this id, if the service has it.
    pub fn task(&self, id: &str) -> Option<&TaskSpec> {
        self.tasks.iter().find(|task| task.id == id)
    }

    /// The configuration the command line describes.
    pub fn from_cli(cli: &Cli) -> Result<Self, String> {
        Self::new(
            cli.resource.clone(),
            cli.handlers.clone(),
            cli.optional_delete,
        )?
        .with_tasks(cli.tasks.clone())
    }

    /// The handler with this id, if the service has it.
    pub fn handler(&self, id: &str) -> Option<&HandlerSpec> {
        self.handlers.iter().find(|handler| handler.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_with_and_without_group() {
        assert_eq!(
            parse_resource("kopf.dev/v1/kopfexamples").unwrap(),
            ResourceSpec {
                group: "kopf.dev".into(),
                version: "v1".into(),
                plural: "kopfexamples".into()
            }
        );
        let core = parse_resource("/v1/pods").unwrap();
        assert_eq!((core.group.as_str(), core.plural.as_str()), ("", "pods"));
        assert_eq!(parse_resource("v1/pods").unwrap(), core);
        assert!(parse_resource("pods").is_err());
        assert!(parse_resource("a/b/c/d").is_err());
        assert!(parse_resource("g//p").is_err());
    }

    #[test]
    fn plain_handler() {
        let handler = parse_handler("create:create_fn").unwrap();
        assert_eq!(handler.id, "create_fn");
        assert_eq!(handler.kind, HandlerKind::Create);
        assert_eq!(handler.field, None);
        assert_eq!(handler.options, Options::default());
    }

    #[test]
    fn handler_with_options() {
        let handler = parse_handler(
            "create:h1,retries=3,timeout=10,backoff=1.5,errors=permanent,call_timeout=2",
        )
        .unwrap();
        assert_eq!(handler.options.retries, Some(3));
        assert_eq!(handler.options.timeout.unwrap().seconds, 10);
        let backoff = handler.options.backoff.unwrap();
        assert_eq!((backoff.seconds, backoff.nanos), (1, 500_000_000));
        assert_eq!(handler.options.errors(), ErrorsMode::Permanent);
        assert_eq!(handler.options.call_timeout.unwrap().seconds, 2);
    }

    #[test]
    fn field_handler() {
        let handler = parse_handler("field:f1=spec.some.path,errors=ignored").unwrap();
        assert_eq!(handler.kind, HandlerKind::Field);
        assert_eq!(handler.id, "f1");
        assert_eq!(handler.field.as_deref(), Some("spec.some.path"));
        assert_eq!(handler.options.errors(), ErrorsMode::Ignored);
        assert!(parse_handler("field:f1").is_err());
        let update = parse_handler("update:u1=spec.value").unwrap();
        assert_eq!(
            (update.kind, update.field.as_deref()),
            (HandlerKind::Update, Some("spec.value"))
        );
        assert!(parse_handler("create:c1=spec.value").is_err());
        assert!(parse_handler("field:f1=").is_err());
        assert!(parse_handler("create:c1=spec.x").is_err());
    }

    #[test]
    fn daemons() {
        let daemon = parse_handler("daemon:d1,cancellation_timeout=0.5").unwrap();
        assert_eq!(daemon.kind, HandlerKind::Daemon);
        assert_eq!(
            daemon.options.cancellation_timeout.unwrap().nanos,
            500_000_000
        );
    }

    #[test]
    fn timers_and_label_filters() {
        let timer =
            parse_handler("timer:t1,interval=1.5,idle=2,initial_delay=3,sharp=true").unwrap();
        assert_eq!(timer.kind, HandlerKind::Timer);
        assert_eq!(timer.options.interval.unwrap().seconds, 1);
        assert!(timer.options.sharp);
        let delete = parse_handler("delete:d1,label=app=db").unwrap();
        assert_eq!(delete.labels, [("app".to_owned(), "db".to_owned())]);
    }

    #[test]
    fn bad_handlers() {
        assert!(parse_handler("create").is_err());
        assert!(parse_handler("create:").is_err());
        assert!(parse_handler("sync:d1").is_err());
        assert!(parse_handler("delete:d1,label=app").is_err());
        assert!(parse_handler("create:h1,retries=-1").is_err());
        assert!(parse_handler("create:h1,timeout=soon").is_err());
        assert!(parse_handler("create:h1,errors=loud").is_err());
        assert!(parse_handler("create:h1,colour=blue").is_err());
        assert!(parse_handler("create:h1,retries").is_err());
    }

    #[test]
    fn optional_delete_and_duplicates() {
        let resource = parse_resource("kopf.dev/v1/kopfexamples").unwrap();
        let handlers = vec![
            parse_handler("delete:d1").unwrap(),
            parse_handler("create:c1").unwrap(),
        ];
        let config = Config::new(resource.clone(), handlers.clone(), true).unwrap();
        assert!(config.handler("d1").unwrap().options.optional);
        assert!(!config.handler("c1").unwrap().options.optional);
        assert!(config.handler("nope").is_none());
        let config = Config::new(resource.clone(), handlers, false).unwrap();
        assert!(!config.handler("d1").unwrap().options.optional);
        let twice = vec![
            parse_handler("create:c1").unwrap(),
            parse_handler("update:c1").unwrap(),
        ];
        assert!(Config::new(resource, twice, false).is_err());
    }

    #[test]
    fn tasks() {
        let task = parse_task(
            "repair:e2e.operon.dev/v1/repairs:e2e.operon.dev/v1/clusters:spec.cluster:sequential,priority=5,retention=2.5,timeout=60",
        )
        .unwrap();
        assert_eq!(task.id, "repair");
        assert_eq!(task.task.plural, "repairs");
        assert_eq!(task.parent.plural, "clusters");
        assert_eq!(task.parent_field, "spec.cluster");
        assert_eq!(task.mode, TaskMode::Sequential);
        assert_eq!(task.priority, 5);
        assert_eq!(task.retention.unwrap().nanos, 500_000_000);
        assert_eq!(task.timeout.unwrap().seconds, 60);
        let plain = parse_task("t:g/v1/ts:g/v1/ps:spec.p:parallel").unwrap();
        assert_eq!(
            (plain.mode, plain.priority, plain.retention),
            (TaskMode::Parallel, 0, None)
        );
        assert!(parse_task("t:g/v1/ts:g/v1/ps:spec.p").is_err());
        assert!(parse_task("t:g/v1/ts:g/v1/ps:spec.p:sideways").is_err());
        assert!(parse_task(":g/v1/ts:g/v1/ps:spec.p:parallel").is_err());
        assert!(parse_task("t:g/v1/ts:g/v1/ps::parallel").is_err());
        assert!(parse_task("t:g/v1/ts:g/v1/ps:spec.p:parallel,priority=high").is_err());
        assert!(parse_task("t:g/v1/ts:g/v1/ps:spec.p:parallel,colour=red").is_err());
        let resource = parse_resource("g/v1/ps").unwrap();
        let config = Config::new(resource, vec![], false).unwrap();
        assert!(
            config
                .clone()
                .with_tasks(vec![plain.clone(), plain.clone()])
                .is_err()
        );
        assert!(config.with_tasks(vec![plain]).unwrap().task("t").is_some());
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "operon-example-handler",
            "--listen",
            "127.0.0.1:0",
            "--ledger",
            "/tmp/ledger.jsonl",
            "--resource",
            "kopf.dev/v1/kopfexamples",
            "--handler",
            "create:c1",
            "--handler",
            "field:f1=spec.field",
            "--optional-delete",
        ])
        .unwrap();
        assert_eq!(cli.handlers.len(), 2);
        assert!(cli.optional_delete);
        assert_eq!(cli.listen.port(), 0);
        assert!(Cli::try_parse_from(["x", "--resource", "g/v/p", "--handler", "bogus"]).is_err());
    }
}
