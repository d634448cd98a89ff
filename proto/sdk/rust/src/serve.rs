//! Serving: the address and TLS from flags or the environment ([`ServeConfig`]), the gRPC
//! server with the contract's services, `grpc.health.v1.Health` and server reflection, and the
//! graceful shutdown on SIGTERM/SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use operon_proto::v1::handler_service_server::HandlerServiceServer;
use operon_proto::v1::sync_service_server::SyncServiceServer;
use operon_proto::v1::task_service_server::TaskServiceServer;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::operator::Operator;
use crate::registry::RegistrationError;
use crate::service::Service;

/// The address served when neither `--listen` nor `OPERON_HANDLER_LISTEN` says otherwise (the
/// loopback: in a pod, give `--listen 0.0.0.0:50051`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// How long in-flight calls may take to finish after a stop is requested, by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the service cannot start or stopped with an error.
///
/// Its `Debug` is its `Display` (each message names its cause), so that `main` can return
/// `Result<(), operon_handler::Error>` and print something readable.
#[derive(thiserror::Error)]
pub enum Error {
    /// `--help` was given: [`Operator::serve_from_env`] prints [`USAGE`] and returns `Ok`.
    #[error("{USAGE}")]
    Help,
    /// The registrations have problems (all of them are listed).
    #[error("the operator's registrations have {} problem(s):\n  - {}", .0.len(), list(.0))]
    Register(Vec<RegistrationError>),
    /// The command line or the environment is not understood.
    #[error("{0}\n\n{USAGE}")]
    ReadConfig(String),
    /// A TLS file cannot be read.
    #[error("cannot read {flag} {}: {source}", path.display())]
    ReadTlsFile {
        /// The flag that names it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration is refused (e.g. a certificate that does not parse).
    #[error("cannot set up TLS: {0}")]
    ConfigureTls(#[source] tonic::transport::Error),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The reflection service cannot be built from the file descriptor sets.
    #[error("cannot build the reflection service: {0}")]
    BuildReflection(#[source] tonic_reflection::server::Error),
    /// The announcement line cannot be written to stdout.
    #[error("cannot write to stdout: {0}")]
    Announce(#[source] std::io::Error),
    /// The signal handlers cannot be installed.
    #[error("cannot wait for SIGTERM/SIGINT: {0}")]
    Signals(#[source] std::io::Error),
    /// The server failed.
    #[error("the gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// The server task panicked.
    #[error("the gRPC server task failed: {0}")]
    Join(#[source] tokio::task::JoinError),
}

/// Seconds (`2.5`), or a number with a unit: `ms`, `s`, `m` (`500ms`, `10s`, `1m`).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let seconds = number.trim().parse::<f64>().ok()? * scale;
    Duration::try_from_secs_f64(seconds).ok()
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every message names its cause already.
        std::fmt::Display::fmt(self, f)
    }
}

fn list(problems: &[RegistrationError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  - ")
}

/// What `--help` prints.
pub const USAGE: &str = "\
Options (each also from the environment; a flag wins):
  --listen HOST:PORT        the gRPC address [OPERON_HANDLER_LISTEN; default 127.0.0.1:50051;
                            port 0 picks a free port]
  --tls-cert FILE           serve TLS with this certificate (PEM); needs --tls-key
                            [OPERON_HANDLER_TLS_CERT]
  --tls-key FILE            the private key of --tls-cert (PEM) [OPERON_HANDLER_TLS_KEY]
  --tls-client-ca FILE      require mutual TLS: clients (the core) must present a certificate
                            signed by this CA (PEM) [OPERON_HANDLER_TLS_CLIENT_CA]
  --shutdown-grace DURATION how long in-flight calls may finish after SIGTERM/SIGINT: seconds,
                            or with a unit (500ms, 10s, 1m) [OPERON_HANDLER_SHUTDOWN_GRACE;
                            default 10s]
  -h, --help                this text
Traces: OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/gRPC), OTEL_SERVICE_NAME. Logs: RUST_LOG (default info).";

/// The TLS files of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// With mutual TLS: the CA that clients' certificates must chain to (PEM).
    pub client_ca: Option<PathBuf>,
}

/// How to serve: the address, TLS and the shutdown grace. Built from flags and the environment
/// by [`ServeConfig::from_env`], or by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The address to listen on (port 0: a free one; see [`Running::addr`]).
    pub listen: SocketAddr,
    /// TLS (`None`: plaintext, e.g. for a sidecar on the pod's loopback).
    pub tls: Option<TlsFiles>,
    /// How long in-flight calls may take to finish after a stop is requested.
    pub shutdown_grace: Duration,
    /// Install the logging/tracing subscriber and the OTLP exporter (see the crate docs).
    pub telemetry: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            tls: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            telemetry: true,
        }
    }
}

impl ServeConfig {
    /// Reads the process's command line (see [`USAGE`]) and environment.
    ///
    /// # Errors
    /// [`Error::ReadConfig`] for an unknown flag, a missing or bad value, `--tls-cert` without
    /// `--tls-key` (or the reverse), `--tls-client-ca` without a certificate; [`Error::Help`]
    /// for `--help`.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_args(std::env::args().skip(1), |name| std::env::var(name).ok())
    }

    /// Reads `args` (without the program name) and the variables `env` gives.
    ///
    /// # Errors
    /// As [`ServeConfig::from_env`].
    pub fn from_args<I, E>(args: I, env: E) -> Result<Self, Error>
    where
        I: IntoIterator<Item = String>,
        E: Fn(&str) -> Option<String>,
    {
        let bad = |text: String| Error::ReadConfig(text);
        let mut values: [(&str, &str, Option<String>); 5] = [
            ("--listen", "OPERON_HANDLER_LISTEN", None),
            ("--tls-cert", "OPERON_HANDLER_TLS_CERT", None),
            ("--tls-key", "OPERON_HANDLER_TLS_KEY", None),
            ("--tls-client-ca", "OPERON_HANDLER_TLS_CLIENT_CA", None),
            ("--shutdown-grace", "OPERON_HANDLER_SHUTDOWN_GRACE", None),
        ];
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(Error::Help);
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let Some(slot) = values.iter_mut().find(|(name, _, _)| *name == flag) else {
                return Err(bad(format!("unknown argument {arg:?}")));
            };
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| bad(format!("{flag} needs a value")))?,
            };
            slot.2 = Some(value);
        }
        let mut get = |i: usize| {
            let (_, var, value) = &mut values[i];
            value
                .take()
                .or_else(|| env(var).filter(|v| !v.trim().is_empty()))
        };
        let (listen, cert, key, client_ca, grace) = (get(0), get(1), get(2), get(3), get(4));
        let mut config = Self::default();
        if let Some(listen) = listen {
            config.listen = listen
                .parse()
                .map_err(|_| bad(format!("--listen must be HOST:PORT, got {listen:?}")))?;
        }
        if let Some(grace) = grace {
            config.shutdown_grace = parse_duration(&grace).ok_or_else(|| {
                bad(format!(
                    "--shutdown-grace must be a duration (seconds, or 500ms, 10s, 1m), got \
                     {grace:?}"
                ))
            })?;
        }
        config.tls = match (cert, key, client_ca) {
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
                client_ca: client_ca.map(PathBuf::from),
            }),
            (None, None, None) => None,
            (None, None, Some(_)) => {
                return Err(bad(
                    "--tls-client-ca needs --tls-cert and --tls-key (the server's own certificate)"
                        .into(),
                ));
            }
            _ => return Err(bad("--tls-cert and --tls-key go together".into())),
        };
        Ok(config)
    }

    /// The same configuration listening on `listen`.
    pub fn listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    fn tls_config(&self) -> Result<Option<ServerTlsConfig>, Error> {
        let Some(files) = &self.tls else {
            return Ok(None);
        };
        let read = |flag: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| Error::ReadTlsFile {
                flag,
                path: path.to_owned(),
                source,
            })
        };
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
            read("--tls-cert", &files.cert)?,
            read("--tls-key", &files.key)?,
        ));
        if let Some(ca) = &files.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?));
        }
        Ok(Some(config))
    }
}

/// A service running in a task: its address, its health, and a graceful stop.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    health: HealthReporter,
    names: Vec<&'static str>,
    draining: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    grace: Duration,
}

impl Running {
    /// The bound address (with the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully: the health service answers NOT_SERVING, daemons are asked to stop
    /// (reason [`crate::StopReason::ServiceExiting`]), no new connections are accepted, and
    /// the calls in flight get the shutdown grace to finish; calls still running then are cut.
    ///
    /// # Errors
    /// The server's own failure, if it failed.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.set_health(ServingStatus::NotServing).await;
        self.draining.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(joined) => joined.map_err(Error::Join)?.map_err(Error::Serve),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "Calls still in flight after the shutdown grace; they are cut.");
                abort.abort();
                Ok(())
            }
        }
    }

    /// Waits until the server stops on its own (only an error makes it do so).
    ///
    /// # Errors
    /// The server's failure.
    pub async fn finished(&mut self) -> Result<(), Error> {
        (&mut self.task)
            .await
            .map_err(Error::Join)?
            .map_err(Error::Serve)
    }

    async fn set_health(&self, status: ServingStatus) {
        for name in &self.names {
            self.health.set_service_status(*name, status).await;
        }
    }
}

/// Registers the SIGTERM and SIGINT listeners now (a signal from here on is a clean stop); the
/// future resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

impl Operator {
    /// Serves the registrations as configured by the command line and the environment
    /// ([`ServeConfig::from_env`]) until SIGTERM or SIGINT, then stops gracefully and flushes
    /// the spans. Prints `listening on HOST:PORT` on stdout once it accepts calls.
    ///
    /// # Errors
    /// A bad command line (with the usage), registration problems (all of them), unreadable
    /// TLS files, an address that cannot be bound, or a failed server.
    pub async fn serve_from_env(self) -> Result<(), Error> {
        match ServeConfig::from_env() {
            Ok(config) => self.serve(config).await,
            Err(Error::Help) => {
                println!("Serves the handlers of {}.\n\n{USAGE}", self.name);
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Serves with `config` until SIGTERM or SIGINT, then stops gracefully
    /// ([`Running::stop`]) and flushes the spans.
    ///
    /// # Errors
    /// As [`Operator::serve_from_env`].
    pub async fn serve(self, config: ServeConfig) -> Result<(), Error> {
        let telemetry = config.telemetry.then(|| crate::telemetry::init(&self.name));
        let result = self.serve_until_signal(config).await;
        if let Err(error) = &result {
            tracing::error!(%error, "The handler service stopped with an error.");
        }
        if let Some(telemetry) = telemetry {
            telemetry.shutdown();
        }
        result
    }

    async fn serve_until_signal(self, config: ServeConfig) -> Result<(), Error> {
        let signal = shutdown_signal().map_err(Error::Signals)?;
        let mut running = self.start(config).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", running.addr())
            .and_then(|()| out.flush())
            .map_err(Error::Announce)?;
        drop(out);
        tokio::select! {
            finished = running.finished() => return finished,
            signal = signal => {
                tracing::info!(signal, "Shutting down: no new calls; the calls in flight finish.");
            }
        }
        running.stop().await?;
        tracing::info!("The handler service stopped.");
        Ok(())
    }

    /// Validates the registrations, binds `config.listen` and serves in a new task; returns
    /// once it accepts calls. For tests and for programs that manage their own lifecycle
    /// ([`Operator::serve`] is this plus signals). Does not install telemetry.
    ///
    /// # Errors
    /// Registration problems, unreadable TLS files, an address that cannot be bound.
    pub async fn start(self, config: ServeConfig) -> Result<Running, Error> {
        let registry = self.registry().map_err(Error::Register)?;
        let tls = config.tls_config()?;
        let (draining_tx, draining_rx) = watch::channel(false);
        let service = Service::new(registry, draining_rx);
        let has_syncs = !service.manifest().syncs.is_empty();
        let has_tasks = !service.manifest().tasks.is_empty();
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut names = vec![""];
        names.push(HandlerServiceServer::<Service>::NAME);
        if has_syncs {
            names.push(SyncServiceServer::<Service>::NAME);
        }
        if has_tasks {
            names.push(TaskServiceServer::<Service>::NAME);
        }
        for name in &names {
            health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        // Both reflection versions: v1, and v1alpha for older clients (grpcurl before 1.9).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(operon_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(Error::BuildReflection)?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(Error::BuildReflection)?;
        let incoming = TcpIncoming::bind(config.listen)
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source: source.into(),
            })?
            .with_nodelay(Some(true));
        let addr = incoming.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source: source.into(),
        })?;
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(Error::ConfigureTls)?;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(HandlerServiceServer::new(service.clone()))
            .add_optional_service(has_syncs.then(|| SyncServiceServer::new(service.clone())))
            .add_optional_service(has_tasks.then(|| TaskServiceServer::new(service.clone())));
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            // A dropped sender means stop too.
            let _ = stopped.await;
        }));
        let running = Running {
            addr,
            health,
            names,
            draining: draining_tx,
            stop: Some(stop),
            task,
            grace: config.shutdown_grace,
        };
        running.set_health(ServingStatus::Serving).await;
        let manifest = service.manifest();
        tracing::info!(
            service = %manifest.service_name,
            %addr,
            tls = config.tls.is_some(),
            mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            handlers = manifest.handlers.len(),
            syncs = manifest.syncs.len(),
            tasks = manifest.tasks.len(),
            "Serving."
        );
        Ok(running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<ServeConfig, Error> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServeConfig::from_args(args.iter().map(|s| (*s).to_owned()), |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn flags_and_environment() {
        let default = parse(&[], &[]).unwrap();
        assert_eq!(default, ServeConfig::default());
        let config = parse(
            &[
                "--listen",
                "127.0.0.1:7000",
                "--tls-cert=c.pem",
                "--tls-key",
                "k.pem",
            ],
            &[
                ("OPERON_HANDLER_TLS_CLIENT_CA", "ca.pem"),
                ("OPERON_HANDLER_LISTEN", "0.0.0.0:1"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into(),
                client_ca: Some("ca.pem".into()),
            })
        );
        let env = parse(
            &[],
            &[
                ("OPERON_HANDLER_LISTEN", "127.0.0.1:0"),
                ("OPERON_HANDLER_SHUTDOWN_GRACE", "2.5"),
            ],
        )
        .unwrap();
        assert_eq!(env.listen.port(), 0);
        assert_eq!(env.shutdown_grace, Duration::from_millis(2500));
        for (text, expected) in [
            ("10s", 10_000),
            ("500ms", 500),
            ("1m", 60_000),
            ("3", 3_000),
        ] {
            assert_eq!(
                parse(&["--shutdown-grace", text], &[])
                    .unwrap()
                    .shutdown_grace,
                Duration::from_millis(expected),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_command_lines_say_why() {
        let text = |args: &[&str]| parse(args, &[]).unwrap_err().to_string();
        assert!(text(&["--ledger", "x"]).starts_with("unknown argument \"--ledger\""));
        assert!(text(&["--listen"]).starts_with("--listen needs a value"));
        assert!(text(&["--listen", "nowhere"]).contains("HOST:PORT"));
        assert!(text(&["--tls-cert", "c.pem"]).contains("go together"));
        assert!(text(&["--tls-client-ca", "ca.pem"]).contains("needs --tls-cert"));
        assert!(text(&["--shutdown-grace", "-1"]).contains("a duration"));
        assert!(text(&["--shutdown-grace", "10h"]).contains("a duration"));
        assert!(matches!(parse(&["-h"], &[]), Err(Error::Help)));
        assert!(text(&["--help"]).contains("--tls-client-ca FILE"));
    }
}
