//! The command line: `operon run`, `operon dashboard`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Operon, a Kubernetes operator runtime: a Rust core that calls your handlers over gRPC.
#[derive(Debug, Parser)]
#[command(name = "operon", version, about, long_about = None)]
pub struct Cli {
    /// Log lines as human-readable text or as one JSON object per line (for log shippers and
    /// for SDKs that forward the core's lines into their own logging).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the core: watch what the handler services serve and call their handlers.
    Run(RunArgs),
    /// Serve the dashboard alone, reading progress straight from the cluster.
    Dashboard(DashboardArgs),
}

/// Options of `operon run`.
#[derive(Debug, Args)]
struct RunArgs {
    /// A handler service's gRPC address, e.g. http://127.0.0.1:50051 (repeatable).
    #[arg(long = "handler", value_name = "URL", required = true)]
    handlers: Vec<String>,
    /// Serve objects in all namespaces.
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespaces")]
    all_namespaces: bool,
    /// Serve objects in this namespace (repeatable).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Do not take part in leader election or peering.
    #[arg(long)]
    standalone: bool,
    /// The annotation prefix of progress records and the diff-base (Kopf's default).
    #[arg(long, default_value = "kopf.zalando.org")]
    prefix: String,
    /// The finalizer held while delete handlers are pending.
    #[arg(long, default_value = crate::core::finalizer::DEFAULT_FINALIZER)]
    finalizer: String,
    /// Handling cycles running at once, at most.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Seconds before retrying an arbitrary handler error (Kopf's default backoff).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    default_backoff: f64,
    /// Seconds one handler call may take before it counts as failed.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    call_timeout: f64,
    /// Seconds to wait for our own write to come back through the watch.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    consistency_timeout: f64,
    /// Seconds a watch may stay silent before it is restarted.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    watch_silence_timeout: f64,
    /// Seconds that in-flight cycles may take to finish after SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    shutdown_grace: f64,
    /// Export traces over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317); tracing is
    /// off without it.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The `service.name` of the core's spans.
    #[arg(
        long,
        value_name = "NAME",
        env = "OTEL_SERVICE_NAME",
        default_value = "operon"
    )]
    service_name: String,
    #[command(flatten)]
    dashboard: DashboardOptions,
    #[command(flatten)]
    http: HttpArgs,
}

/// The dashboard's options, for `operon run` and `operon dashboard`.
#[derive(Debug, Args)]
struct DashboardOptions {
    /// Require this bearer token on every route but /healthz and /readyz (a browser passes it
    /// once as ?token=…, then keeps it in a cookie).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "OPERON_DASHBOARD_TOKEN",
        hide_env_values = true
    )]
    dashboard_token: Option<String>,
    /// The Jaeger UI's base URL, for links to the handlers' traces (e.g. http://127.0.0.1:16686).
    #[arg(long, value_name = "URL", env = "OPERON_JAEGER_UI")]
    jaeger_ui: Option<String>,
}

impl DashboardOptions {
    fn options(self) -> operon_dashboard::Options {
        operon_dashboard::Options {
            token: self.dashboard_token.filter(|t| !t.is_empty()),
            jaeger_ui: self.jaeger_ui.filter(|u| !u.is_empty()),
        }
    }
}

/// Options of `operon dashboard`.
#[derive(Debug, Args)]
struct DashboardArgs {
    /// A resource to show, kubectl-style: GROUP/VERSION/PLURAL, PLURAL.GROUP or a bare name
    /// (repeatable).
    #[arg(long = "resource", value_name = "RESOURCE", required = true)]
    resources: Vec<String>,
    /// Show objects in all namespaces.
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespaces")]
    all_namespaces: bool,
    /// Show objects in this namespace (repeatable).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// The annotation prefix of progress records and the diff-base (Kopf's default).
    #[arg(long, default_value = "kopf.zalando.org")]
    prefix: String,
    #[command(flatten)]
    dashboard: DashboardOptions,
    #[command(flatten)]
    http: HttpArgs,
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        anyhow::anyhow!("--{name} must be a non-negative number of seconds, got {value}")
    })
}

#[derive(Debug, Args)]
struct HttpArgs {
    /// Address of the HTTP listener (dashboard, API, metrics, probes).
    #[arg(long = "http", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

/// Parses the command line and runs the chosen command; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("operon: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let format = match cli.log_format {
        LogFormat::Text => crate::telemetry::LogFormat::Text,
        LogFormat::Json => crate::telemetry::LogFormat::Json,
    };
    let tracing_cfg = match &cli.command {
        Command::Run(args) => crate::telemetry::Tracing {
            endpoint: args.otlp_endpoint.clone().filter(|e| !e.is_empty()),
            service_name: args.service_name.clone(),
        },
        Command::Dashboard(_) => crate::telemetry::Tracing::default(),
    };
    let telemetry = {
        let _entered = runtime.enter();
        crate::telemetry::init(format, &tracing_cfg)
    };
    let result = runtime.block_on(cli.run());
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("operon: {err:#}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => {
                if !args.all_namespaces && args.namespaces.is_empty() {
                    anyhow::bail!("say which namespaces to serve: -A (all) or -n NS (repeatable)");
                }
                let config = crate::runtime::engine::Config {
                    handlers: args.handlers,
                    namespaces: args.namespaces,
                    http: args.http.listen,
                    prefix: args.prefix,
                    finalizer: args.finalizer,
                    workers: args.workers,
                    default_backoff: seconds("default-backoff", args.default_backoff)?,
                    call_timeout: seconds("call-timeout", args.call_timeout)?,
                    consistency_timeout: seconds("consistency-timeout", args.consistency_timeout)?,
                    watch_silence_timeout: seconds(
                        "watch-silence-timeout",
                        args.watch_silence_timeout,
                    )?,
                    shutdown_grace: seconds("shutdown-grace", args.shutdown_grace)?,
                    dashboard: args.dashboard.options(),
                };
                let _ = args.standalone;
                Ok(crate::runtime::engine::run(config).await?)
            }
            Command::Dashboard(args) => {
                if !args.all_namespaces && args.namespaces.is_empty() {
                    anyhow::bail!("say which namespaces to show: -A (all) or -n NS (repeatable)");
                }
                let config = crate::runtime::observer::Config {
                    resources: args
                        .resources
                        .iter()
                        .map(|r| crate::runtime::observer::parse_selector(r))
                        .collect::<Result<_, _>>()?,
                    namespaces: args.namespaces,
                    http: args.http.listen,
                    prefix: args.prefix,
                    dashboard: args.dashboard.options(),
                };
                Ok(crate::runtime::observer::run(config).await?)
            }
        }
    }
}
