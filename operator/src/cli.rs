//! The command line: `operon run`, `operon dashboard`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Operon, a Kubernetes operator runtime: a Rust core that calls your handlers over gRPC.
#[derive(Debug, Parser)]
#[command(name = "operon", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
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
    #[command(flatten)]
    http: HttpArgs,
}

/// Options of `operon dashboard`.
#[derive(Debug, Args)]
struct DashboardArgs {
    #[command(flatten)]
    http: HttpArgs,
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
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("operon: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
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
                anyhow::bail!(
                    "`operon run` is not available in this build yet (handlers: {:?}); \
                     only `operon dashboard` serves so far",
                    args.handlers
                )
            }
            Command::Dashboard(args) => Ok(crate::http::serve(args.http.listen).await?),
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPERON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
