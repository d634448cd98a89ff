//! The command line: `operon run`, `operon dashboard`, `operon rbac`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod coordination;
mod rbac_command;

use rbac_command::RbacArgs;

/// Operon, a Kubernetes operator runtime: a Rust core that calls your handlers over gRPC.
#[derive(Debug, Parser)]
#[command(name = "operon", version = crate::core::manifest::version_line(), about, long_about = None)]
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
    Run(Box<RunArgs>),
    /// Serve the dashboard alone, reading progress straight from the cluster.
    Dashboard(DashboardArgs),
    /// Print the least-privilege Role/ClusterRole (and binding) the core needs to serve some
    /// resources, for a ServiceAccount.
    Rbac(RbacArgs),
}

/// TLS towards handler services (`https://` addresses); `http://` addresses stay plaintext.
#[derive(Debug, Args)]
struct TlsArgs {
    /// The CA certificate (PEM) that https:// handler services' certificates must chain to.
    #[arg(long, value_name = "FILE", env = "OPERON_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The core's client certificate (PEM), for handler services that require mutual TLS.
    #[arg(
        long,
        value_name = "FILE",
        env = "OPERON_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "OPERON_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn load(&self) -> anyhow::Result<Option<crate::runtime::grpc::ClientTls>> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read --{flag} {}: {e}", path.display()))
        };
        let ca = self
            .tls_ca
            .as_ref()
            .map(|p| read("tls-ca", p))
            .transpose()?;
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((read("tls-cert", cert)?, read("tls-key", key)?)),
            _ => None,
        };
        if ca.is_none() && identity.is_none() {
            return Ok(None);
        }
        Ok(Some(crate::runtime::grpc::ClientTls { ca, identity }))
    }
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
    /// Serve objects in this namespace (repeatable), or in the namespaces that match Kopf's
    /// pattern (`'app-*'`, `'!kube-*'`, `'app-*,!*-pr-*'`): then the core watches cluster-wide
    /// and drops the objects of other namespaces.
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Serve objects in the namespaces whose whole name matches this regular expression
    /// (repeatable; Kopf's `namespaces=[re.compile(...)]`): watched cluster-wide and filtered.
    #[arg(
        long = "namespace-regex",
        value_name = "RE",
        conflicts_with = "all_namespaces"
    )]
    namespace_regexes: Vec<String>,
    #[command(flatten)]
    coordination: coordination::CoordinationArgs,
    /// The annotation prefix of progress records and the diff-base (Kopf's default).
    #[arg(long, default_value = "kopf.zalando.org")]
    prefix: String,
    /// The finalizer held while delete handlers are pending.
    #[arg(long, default_value = crate::core::finalizer::DEFAULT_FINALIZER)]
    finalizer: String,
    /// Where progress records are kept: smart (Kopf's default: annotations, plus the legacy
    /// status read and purged), annotations, status, or a JSON description of Kopf's storages
    /// (see the README).
    #[arg(
        long,
        value_name = "SPEC",
        default_value = "smart",
        env = "OPERON_PROGRESS_STORAGE"
    )]
    progress_storage: String,
    /// Where the last handled state (the diff-base) is kept: annotations (Kopf's default),
    /// status, or a JSON description of Kopf's storages (see the README).
    #[arg(
        long,
        value_name = "SPEC",
        default_value = "annotations",
        env = "OPERON_DIFFBASE_STORAGE"
    )]
    diffbase_storage: String,
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
    /// Seconds a finished task is kept before it is deleted, unless its registration says.
    #[arg(long, value_name = "SECS", default_value_t = 86400.0)]
    task_retention: f64,
    /// Seconds between re-discoveries of the API resources, when a handler's selector names no
    /// single resource (EVERYTHING, a category, a callable): new resources are served, gone
    /// ones dropped.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30.0,
        env = "OPERON_RESCAN_INTERVAL"
    )]
    rescan_interval: f64,
    /// Take the API credentials from the handler services' login handlers (`Login`; Kopf's
    /// `@kopf.on.login`) instead of the kubeconfig: logged in again on a 401 Unauthorized and
    /// shortly before the credentials expire, without restarting the watches.
    #[arg(long)]
    login: bool,
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
    /// The core's base URL as applications reach it, for shutdown-hook callbacks
    /// (default: http://<the --http address>).
    #[arg(long, value_name = "URL", env = "OPERON_CALLBACK_URL")]
    callback_url: Option<String>,
    #[command(flatten)]
    dashboard: DashboardOptions,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    admission: AdmissionArgs,
}

/// Admission webhooks (Kopf's `settings.admission`): served by the core over HTTPS when
/// `--admission-listen` is given.
#[derive(Debug, Args)]
struct AdmissionArgs {
    /// Serve the handler services' validate/mutate handlers as admission webhooks (HTTPS) on this
    /// address, e.g. 127.0.0.1:9443 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    admission_listen: Option<SocketAddr>,
    /// The host name or address the API server reaches the webhooks at: the webhooks' URL and
    /// the generated certificate's name (default: the listening address).
    #[arg(long, value_name = "HOST", requires = "admission_listen")]
    admission_host: Option<String>,
    /// A root path for the webhooks' URLs, e.g. /webhooks (Kopf's `path`).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "",
        requires = "admission_listen"
    )]
    admission_path: String,
    /// The webhook server's certificate (PEM); without it, a CA and a certificate are made at
    /// start-up.
    #[arg(long, value_name = "FILE", requires_all = ["admission_listen", "admission_key"])]
    admission_cert: Option<PathBuf>,
    /// The private key (PEM) of --admission-cert.
    #[arg(long, value_name = "FILE", requires = "admission_cert")]
    admission_key: Option<PathBuf>,
    /// The CA bundle (PEM) the API server must trust (default: the CA made at start-up, or
    /// --admission-cert itself).
    #[arg(long, value_name = "FILE", requires = "admission_listen")]
    admission_ca: Option<PathBuf>,
    /// Write the CA bundle to this file, e.g. for `curl --cacert` (Kopf's `cadump`).
    #[arg(long, value_name = "FILE", requires = "admission_listen")]
    admission_ca_dump: Option<PathBuf>,
    /// Another name for the generated certificate (repeatable; Kopf's `extra_sans`).
    #[arg(
        long = "admission-san",
        value_name = "NAME",
        requires = "admission_listen"
    )]
    admission_sans: Vec<String>,
    /// Create and keep up to date the ValidatingWebhookConfiguration and the
    /// MutatingWebhookConfiguration of this name (Kopf's `settings.admission.managed`).
    #[arg(long, value_name = "NAME", requires = "admission_listen")]
    admission_managed: Option<String>,
}

impl AdmissionArgs {
    fn config(self) -> anyhow::Result<Option<crate::runtime::admission::Config>> {
        let Some(listen) = self.admission_listen else {
            return Ok(None);
        };
        if !self.admission_path.is_empty() && !self.admission_path.starts_with('/') {
            anyhow::bail!(
                "--admission-path must start with '/', got {:?}",
                self.admission_path
            );
        }
        Ok(Some(crate::runtime::admission::Config {
            listen,
            host: self.admission_host.filter(|h| !h.is_empty()),
            path: self.admission_path,
            cert: self.admission_cert.zip(self.admission_key),
            ca: self.admission_ca,
            ca_dump: self.admission_ca_dump,
            extra_sans: self.admission_sans,
            managed: self.admission_managed.filter(|n| !n.is_empty()),
        }))
    }
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
    /// Jaeger's query API (e.g. http://127.0.0.1:16686): the object page shows each attempt's
    /// trace inline, and /traces/ID one trace (only traces of the core's own attempts are
    /// fetched, read-only).
    #[arg(long, value_name = "URL", env = "OPERON_JAEGER_QUERY")]
    jaeger_query: Option<String>,
}

impl DashboardOptions {
    fn options(self) -> operon_dashboard::Options {
        operon_dashboard::Options {
            token: self.dashboard_token.filter(|t| !t.is_empty()),
            jaeger_ui: self.jaeger_ui.filter(|u| !u.is_empty()),
            jaeger_query: self.jaeger_query.filter(|u| !u.is_empty()),
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
        Command::Dashboard(_) | Command::Rbac(_) => crate::telemetry::Tracing::default(),
    };
    let telemetry = {
        let _entered = runtime.enter();
        let telemetry = crate::telemetry::init(format, &tracing_cfg);
        // Before anything that may take a while: a SIGTERM from now on is a clean stop.
        crate::runtime::signals::install();
        telemetry
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
                if !args.all_namespaces
                    && args.namespaces.is_empty()
                    && args.namespace_regexes.is_empty()
                {
                    anyhow::bail!("say which namespaces to serve: -A (all) or -n NS (repeatable)");
                }
                use crate::core::persistence::spec;
                let progress = spec::progress_storage(&args.progress_storage, &args.prefix)
                    .map_err(|e| anyhow::anyhow!("invalid --progress-storage: {e}"))?;
                let diffbase = spec::diffbase_storage(&args.diffbase_storage, &args.prefix)
                    .map_err(|e| anyhow::anyhow!("invalid --diffbase-storage: {e}"))?;
                // A regular expression that does not compile stops the start at once.
                crate::core::namespaces::Namespaces::with_regexes(
                    &args.namespaces,
                    &args.namespace_regexes,
                )?;
                let patterns = !args.namespace_regexes.is_empty()
                    || args
                        .namespaces
                        .iter()
                        .any(|n| crate::core::namespaces::is_pattern(n));
                let coordination = args.coordination.config(&args.namespaces, patterns)?;
                let config = crate::runtime::engine::Config {
                    coordination,
                    handlers: args.handlers,
                    namespaces: args.namespaces,
                    namespace_regexes: args.namespace_regexes,
                    http: args.http.listen,
                    prefix: args.prefix,
                    progress,
                    diffbase,
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
                    handler_tls: args.tls.load()?,
                    callback_url: args.callback_url,
                    task_retention: seconds("task-retention", args.task_retention)?,
                    admission: args.admission.config()?,
                    rescan_interval: seconds("rescan-interval", args.rescan_interval)?
                        .max(std::time::Duration::from_millis(100)),
                    login: args.login,
                };
                Ok(crate::runtime::engine::run(config).await?)
            }
            Command::Dashboard(args) => {
                if !args.all_namespaces && args.namespaces.is_empty() {
                    anyhow::bail!("say which namespaces to show: -A (all) or -n NS (repeatable)");
                }
                if let Some(p) = args
                    .namespaces
                    .iter()
                    .find(|n| crate::core::namespaces::is_pattern(n))
                {
                    anyhow::bail!(
                        "-n {p:?} is a namespace pattern: the dashboard shows namespaces by name (or -A)"
                    );
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
            Command::Rbac(args) => {
                print!("{}", args.render().await?);
                Ok(())
            }
        }
    }
}
