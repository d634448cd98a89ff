//! The command line as an SDK operator: one registration per `--handler` and `--task`, served
//! by the SDK behind [`crate::faults`].

use std::time::Duration;

use anyhow::Context as _;
use operon_handler::proto as pb;
use operon_handler::{
    ErrorsMode, HandlerOptions, Operator, Resource, Running, ServeConfig, TaskMode, TaskOptions,
    TlsFiles,
};

use crate::config::{Cli, Config, HandlerSpec, ResourceSpec, TaskSpec};
use crate::faults::Faults;
use crate::ledger::Ledger;
use crate::{daemon, handlers, task};

/// The operator's name: the default `service.name` of its spans, and its manifest's.
pub const SERVICE_NAME: &str = "operon-example-handler";

fn resource(spec: &ResourceSpec) -> Resource {
    Resource::new(&spec.group, &spec.version, &spec.plural)
}

fn duration(value: Option<prost_types::Duration>) -> Option<Duration> {
    value.and_then(|d| {
        let seconds = u64::try_from(d.seconds).ok()?;
        Some(Duration::new(seconds, u32::try_from(d.nanos).ok()?))
    })
}

/// A setter of a duration option.
type SetDuration = fn(HandlerOptions, Duration) -> HandlerOptions;

/// A handler's options as the SDK takes them. Options that do not apply to the handler's kind
/// are refused by the SDK when the service starts.
fn options(spec: &HandlerSpec) -> HandlerOptions {
    let o = &spec.options;
    let mut options = HandlerOptions::new().id(&spec.id);
    let durations: [(Option<prost_types::Duration>, SetDuration); 6] = [
        (o.timeout, HandlerOptions::timeout),
        (o.backoff, HandlerOptions::backoff),
        (o.call_timeout, HandlerOptions::call_timeout),
        (o.idle, HandlerOptions::idle),
        (o.initial_delay, HandlerOptions::initial_delay),
        (o.cancellation_timeout, HandlerOptions::cancellation_timeout),
    ];
    for (value, set) in durations {
        if let Some(value) = duration(value) {
            options = set(options, value);
        }
    }
    if let Some(retries) = o.retries {
        options = options.retries(retries);
    }
    options = match o.errors() {
        pb::ErrorsMode::Temporary => options.errors(ErrorsMode::Temporary),
        pb::ErrorsMode::Permanent => options.errors(ErrorsMode::Permanent),
        pb::ErrorsMode::Ignored => options.errors(ErrorsMode::Ignored),
        pb::ErrorsMode::Unspecified => options,
    };
    if o.optional {
        options = options.optional();
    }
    if o.deleted {
        options = options.deleted();
    }
    if o.sharp {
        options = options.sharp();
    }
    if !o.operations.is_empty() {
        options = options.operations(o.operations.iter().map(String::as_str));
    }
    if let Some(subresource) = &o.subresource {
        options = options.subresource(subresource);
    }
    if o.ignore_failures {
        options = options.ignore_failures();
    }
    if o.side_effects {
        options = options.side_effects();
    }
    if o.persistent {
        options = options.persistent();
    }
    for (key, value) in &spec.labels {
        options = options.label(key, value.as_str());
    }
    options
}

/// Registers one `--handler`.
fn register(
    operator: Operator,
    on: Resource,
    spec: &HandlerSpec,
    ledger: &Ledger,
) -> anyhow::Result<Operator> {
    use pb::HandlerKind as K;
    let opts = options(spec);
    let field = spec.field.as_deref().unwrap_or_default();
    let l = ledger.clone();
    let scripted = move |ctx| handlers::scripted(ctx, l.clone());
    Ok(match spec.kind {
        K::Create => operator.on_create_with(on, opts, scripted),
        K::Update if spec.field.is_some() => {
            operator.on_update_field_with(on, field, opts, scripted)
        }
        K::Update => operator.on_update_with(on, opts, scripted),
        K::Delete => operator.on_delete_with(on, opts, scripted),
        K::Resume => operator.on_resume_with(on, opts, scripted),
        K::Field => operator.on_field_with(on, field, opts, scripted),
        K::Event => operator.on_event_with(on, opts, scripted),
        K::Timer => {
            let interval = duration(spec.options.interval)
                .with_context(|| format!("the timer {:?} needs interval=SECONDS", spec.id))?;
            operator.timer_with(on, interval, opts, scripted)
        }
        K::Daemon => {
            let ledger = ledger.clone();
            operator.daemon_with(on, opts, move |ctx| daemon::run(ctx, ledger.clone()))
        }
        K::Validate => operator.on_validate_with(on, opts, |ctx| handlers::admit(ctx, false)),
        K::Mutate => operator.on_mutate_with(on, opts, |ctx| handlers::admit(ctx, true)),
        K::Unspecified | K::Sync | K::Task | K::Index => {
            anyhow::bail!(
                "the handler {:?}: the example has no {:?} handlers",
                spec.id,
                spec.kind
            )
        }
    })
}

/// Registers one `--task`.
fn register_task(operator: Operator, spec: &TaskSpec, ledger: &Ledger) -> Operator {
    let mut options = TaskOptions::new()
        .id(&spec.id)
        .priority(spec.priority)
        .mode(match spec.mode {
            pb::TaskMode::Sequential => TaskMode::Sequential,
            _ => TaskMode::Parallel,
        });
    if let Some(retention) = duration(spec.retention) {
        options = options.retention(retention);
    }
    if let Some(timeout) = duration(spec.timeout) {
        options = options.timeout(timeout);
    }
    let ledger = ledger.clone();
    operator.task_with(
        resource(&spec.task),
        resource(&spec.parent),
        &spec.parent_field,
        options,
        move |ctx| task::run(ctx, ledger.clone()),
    )
}

/// The operator the configuration describes, recording its runs in `ledger`.
///
/// # Errors
/// A timer without an interval.
pub fn operator(config: &Config, ledger: &Ledger) -> anyhow::Result<Operator> {
    let on = resource(&config.resource);
    let mut operator = Operator::new(SERVICE_NAME);
    for spec in &config.handlers {
        operator = register(operator, on.clone(), spec, ledger)?;
    }
    for spec in &config.tasks {
        operator = register_task(operator, spec, ledger);
    }
    Ok(operator)
}

/// How the command line asks to serve: address, TLS, health listener.
pub fn serve_config(cli: &Cli) -> ServeConfig {
    let mut config = ServeConfig::default().listen(cli.listen);
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        config.tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: cli.tls_client_ca.clone(),
        });
    }
    config.health_listen = cli.health_listen;
    config
}

/// The operator the command line describes and its ledger.
fn prepare(cli: &Cli) -> anyhow::Result<(Operator, Ledger)> {
    let config = Config::from_cli(cli).map_err(anyhow::Error::msg)?;
    let ledger = Ledger::new(cli.ledger.clone());
    Ok((operator(&config, &ledger)?, ledger))
}

/// Starts serving what the command line describes, without telemetry or signals (for tests).
///
/// # Errors
/// A bad configuration (all registration problems), an address that cannot be bound.
pub async fn start(cli: &Cli) -> anyhow::Result<Running> {
    let (operator, ledger) = prepare(cli)?;
    let config = ServeConfig {
        telemetry: false,
        ..serve_config(cli)
    };
    Ok(operator
        .start_wrapped(config, move |services| Faults::new(services, ledger))
        .await?)
}

/// Serves what the command line describes until SIGTERM/SIGINT (the SDK prints
/// `listening on HOST:PORT`, exports spans, drains on a stop).
///
/// # Errors
/// As [`start`].
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (operator, ledger) = prepare(&cli)?;
    operator
        .serve_wrapped(serve_config(&cli), move |services| {
            Faults::new(services, ledger)
        })
        .await?;
    Ok(())
}
