//! Serving: the address and TLS from flags or the environment ([`ServeConfig`]), the gRPC
//! server with the contract's services, `grpc.health.v1.Health` and server reflection, the
//! optional plaintext listener that serves the health service alone (for the kubelet's `grpc:`
//! probes, which speak neither TLS nor to a pod's loopback), and the graceful shutdown on
//! SIGTERM/SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use operon_proto::v1::handler_service_server::{HandlerService, HandlerServiceServer};
use operon_proto::v1::sync_service_server::{SyncService, SyncServiceServer};
use operon_proto::v1::task_service_server::{TaskService, TaskServiceServer};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::operator::Operator;
use crate::registry::RegistrationError;
use crate::service::Services;

/// The address served when neither `--listen` nor `OPERON_HANDLER_LISTEN` says otherwise (the
/// loopback: in a pod, give `--listen 0.0.0.0:50051`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// How long in-flight calls may take to finish after a stop is requested, by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long the health listener's calls in flight may take once the main server has stopped
/// (a probe is one short call; a `Watch` would never end on its own).
const HEALTH_STOP_GRACE: Duration = Duration::from_secs(1);

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
  --health-listen HOST:PORT also serve the gRPC health service (grpc.health.v1) alone there,
                            in plaintext, for Kubernetes' grpc probes (e.g. 0.0.0.0:50052)
                            [OPERON_HANDLER_HEALTH_LISTEN; default: none]
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

/// How to serve: the address, TLS, the health listener and the shutdown grace. Built from flags
/// and the environment by [`ServeConfig::from_env`], or by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The address to listen on (port 0: a free one; see [`Running::addr`]).
    pub listen: SocketAddr,
    /// TLS (`None`: plaintext, e.g. for a sidecar on the pod's loopback).
    pub tls: Option<TlsFiles>,
    /// A second address that serves the gRPC health service (`grpc.health.v1.Health`) alone,
    /// always in plaintext, with the same statuses as the main server: for the kubelet's
    /// `grpc:` probes, which reach neither a pod's loopback nor a TLS port. `None`: no such
    /// listener (port 0: a free one; see [`Running::health_addr`]).
    pub health_listen: Option<SocketAddr>,
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
            health_listen: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            telemetry: true,
        }
    }
}

impl ServeConfig {
    /// Reads the process's command line (see [`USAGE`]) and environment.
    ///
    /// # Errors
    /// [`Error::ReadConfig`] for an unknown flag, a missing or bad value (an address that is not
    /// `HOST:PORT`, a bad duration), `--tls-cert` without
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
        let mut values: [(&str, &str, Option<String>); 6] = [
            ("--listen", "OPERON_HANDLER_LISTEN", None),
            ("--tls-cert", "OPERON_HANDLER_TLS_CERT", None),
            ("--tls-key", "OPERON_HANDLER_TLS_KEY", None),
            ("--tls-client-ca", "OPERON_HANDLER_TLS_CLIENT_CA", None),
            ("--shutdown-grace", "OPERON_HANDLER_SHUTDOWN_GRACE", None),
            ("--health-listen", "OPERON_HANDLER_HEALTH_LISTEN", None),
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
        let (listen, cert, key, client_ca, grace, health) =
            (get(0), get(1), get(2), get(3), get(4), get(5));
        let mut config = Self::default();
        let address = |flag: &str, text: &str| {
            text.trim()
                .parse::<SocketAddr>()
                .map_err(|_| bad(format!("{flag} must be HOST:PORT, got {text:?}")))
        };
        if let Some(listen) = listen {
            config.listen = address("--listen", &listen)?;
        }
        if let Some(health) = health {
            config.health_listen = Some(address("--health-listen", &health)?);
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

    /// The same configuration, also serving the health service alone, in plaintext, on
    /// `health_listen` (see the field [`health_listen`](ServeConfig#structfield.health_listen)).
    pub fn health_listen(mut self, health_listen: SocketAddr) -> Self {
        self.health_listen = Some(health_listen);
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

/// Binds `addr` for a gRPC server; answers the listener and its real address.
fn bind(addr: SocketAddr) -> Result<(TcpIncoming, SocketAddr), Error> {
    let failed = |source: std::io::Error| Error::Bind {
        addr,
        source: source.into(),
    };
    let incoming = TcpIncoming::bind(addr)
        .map_err(failed)?
        .with_nodelay(Some(true));
    let bound = incoming.local_addr().map_err(failed)?;
    Ok((incoming, bound))
}

/// The second, plaintext listener that serves `grpc.health.v1.Health` alone, with the statuses
/// of the main server (both read one [`HealthReporter`]).
#[derive(Debug)]
struct HealthListener {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl HealthListener {
    /// Binds `listen` and serves `health` there in a new task.
    fn start<S: Health>(listen: SocketAddr, health: HealthServer<S>) -> Result<Self, Error> {
        let (incoming, addr) = bind(listen)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    // A dropped sender (the `Running` is gone) means stop too.
                    let _ = stopped.await;
                }),
        );
        tracing::info!(%addr, "Serving the health service alone, in plaintext.");
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// Stops accepting connections; the checks in flight get [`HEALTH_STOP_GRACE`].
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        match tokio::time::timeout(HEALTH_STOP_GRACE, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, addr = %self.addr, "The health listener failed.");
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, addr = %self.addr, "The health listener's task failed.");
            }
            Err(_) => abort.abort(),
        }
    }
}

/// A service running in a task: its address, its health, and a graceful stop.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    health_only: Option<HealthListener>,
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

    /// The bound address of the plaintext health listener (the field
    /// [`health_listen`](ServeConfig#structfield.health_listen) of [`ServeConfig`]), if there
    /// is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_only.as_ref().map(|listener| listener.addr)
    }

    /// Stops gracefully: the health service answers NOT_SERVING (on the health listener too),
    /// daemons are asked to stop (reason [`crate::StopReason::ServiceExiting`]), no new
    /// connections are accepted, and the calls in flight get the shutdown grace to finish; calls
    /// still running then are cut. The health listener closes last.
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
        let stopped = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(joined) => joined
                .map_err(Error::Join)
                .and_then(|r| r.map_err(Error::Serve)),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "Calls still in flight after the shutdown grace; they are cut.");
                abort.abort();
                Ok(())
            }
        };
        if let Some(listener) = self.health_only.take() {
            listener.stop().await;
        }
        stopped
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
        self.serve_wrapped(config, |services| services).await
    }

    /// [`Operator::serve`] with the contract's services wrapped by `wrap`: see
    /// [`Operator::start_wrapped`].
    ///
    /// # Errors
    /// As [`Operator::serve_from_env`].
    pub async fn serve_wrapped<W, F>(self, config: ServeConfig, wrap: F) -> Result<(), Error>
    where
        F: FnOnce(Services) -> W,
        W: HandlerService + SyncService + TaskService + Clone,
    {
        let telemetry = config.telemetry.then(|| crate::telemetry::init(&self.name));
        let result = self.serve_until_signal(config, wrap).await;
        if let Err(error) = &result {
            tracing::error!(%error, "The handler service stopped with an error.");
        }
        if let Some(telemetry) = telemetry {
            telemetry.shutdown();
        }
        result
    }

    async fn serve_until_signal<W, F>(self, config: ServeConfig, wrap: F) -> Result<(), Error>
    where
        F: FnOnce(Services) -> W,
        W: HandlerService + SyncService + TaskService + Clone,
    {
        let signal = shutdown_signal().map_err(Error::Signals)?;
        let mut running = self.start_wrapped(config, wrap).await?;
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
        self.start_wrapped(config, |services| services).await
    }

    /// [`Operator::start`], serving what `wrap` makes of the contract's [`Services`] instead of
    /// the services themselves: a wrapper sees every `HandlerService`, `SyncService` and
    /// `TaskService` call first and hands on what it does not answer itself (everything else —
    /// TLS, health, reflection, the graceful stop — is as with [`Operator::start`]). The
    /// wrapper is on its own: what it answers without the [`Services`] gets neither the attempt
    /// cache nor the contract's checks.
    ///
    /// A wrapper is a type implementing the three traits of [`crate::proto`], mostly by handing
    /// calls on (`self.inner.invoke(request).await`); `proto/examples/rust/src/faults.rs` in
    /// the Operon repository is one. The identity wrapper is [`Operator::start`]:
    ///
    /// ```no_run
    /// # use operon_handler::{Operator, ServeConfig};
    /// # async fn run(operator: Operator) -> Result<(), operon_handler::Error> {
    /// let running = operator
    ///     .start_wrapped(ServeConfig::default(), |services| services)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Operator::start`].
    pub async fn start_wrapped<W, F>(self, config: ServeConfig, wrap: F) -> Result<Running, Error>
    where
        F: FnOnce(Services) -> W,
        W: HandlerService + SyncService + TaskService + Clone,
    {
        let registry = self.registry().map_err(Error::Register)?;
        let tls = config.tls_config()?;
        let (draining_tx, draining_rx) = watch::channel(false);
        let service = Services::new(registry, draining_rx);
        let manifest = service.manifest().clone();
        let has_syncs = !manifest.syncs.is_empty();
        let has_tasks = !manifest.tasks.is_empty();
        let wrapped = wrap(service);
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut names = vec![""];
        names.push(HandlerServiceServer::<W>::NAME);
        if has_syncs {
            names.push(SyncServiceServer::<W>::NAME);
        }
        if has_tasks {
            names.push(TaskServiceServer::<W>::NAME);
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
        // The health listener first: a probe sees NOT_SERVING until the handlers are served.
        let health_only = config
            .health_listen
            .map(|listen| HealthListener::start(listen, health_service.clone()))
            .transpose()?;
        let (incoming, addr) = bind(config.listen)?;
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(Error::ConfigureTls)?;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(HandlerServiceServer::new(wrapped.clone()))
            .add_optional_service(has_syncs.then(|| SyncServiceServer::new(wrapped.clone())))
            .add_optional_service(has_tasks.then(|| TaskServiceServer::new(wrapped)));
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            // A dropped sender means stop too.
            let _ = stopped.await;
        }));
        let running = Running {
            addr,
            health_only,
            health,
            names,
            draining: draining_tx,
            stop: Some(stop),
            task,
            grace: config.shutdown_grace,
        };
        running.set_health(ServingStatus::Serving).await;
        tracing::info!(
            service = %manifest.service_name,
            %addr,
            tls = config.tls.is_some(),
            health = ?running.health_addr(),
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
        assert_eq!(env.health_listen, None);
        // The health listener: from the flag, else the environment.
        let health = |args: &[&str], env: &[(&str, &str)]| parse(args, env).unwrap().health_listen;
        assert_eq!(
            health(&[], &[("OPERON_HANDLER_HEALTH_LISTEN", "0.0.0.0:50052")]),
            Some("0.0.0.0:50052".parse().unwrap())
        );
        assert_eq!(
            health(
                &["--health-listen=127.0.0.1:9"],
                &[("OPERON_HANDLER_HEALTH_LISTEN", "0.0.0.0:50052")]
            ),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(health(&[], &[("OPERON_HANDLER_HEALTH_LISTEN", " ")]), None);
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
        assert!(
            text(&["--health-listen", ":50052"]).starts_with("--health-listen must be HOST:PORT")
        );
        assert!(text(&["--health-listen"]).starts_with("--health-listen needs a value"));
        assert!(text(&["--tls-cert", "c.pem"]).contains("go together"));
        assert!(text(&["--tls-client-ca", "ca.pem"]).contains("needs --tls-cert"));
        assert!(text(&["--shutdown-grace", "-1"]).contains("a duration"));
        assert!(text(&["--shutdown-grace", "10h"]).contains("a duration"));
        assert!(matches!(parse(&["-h"], &[]), Err(Error::Help)));
        assert!(text(&["--help"]).contains("--tls-client-ca FILE"));
        assert!(text(&["--help"]).contains("--health-listen HOST:PORT"));
    }
}
