//! Binding, serving and shutting down.

use std::{io, io::Write, net::SocketAddr, time::Duration};

use anyhow::Context;
use operon_proto::v1::handler_service_server::HandlerServiceServer;
use operon_proto::v1::task_service_server::TaskServiceServer;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::oneshot,
    task::JoinHandle,
};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};

use crate::{
    config::{Cli, Config},
    ledger::Ledger,
    service::ExampleService,
};

/// How long in-flight calls may take to finish after SIGTERM/SIGINT.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A server running in a task.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// The address the server is bound to (with the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server stops on its own (which only an error makes it do).
    pub async fn finished(&mut self) -> anyhow::Result<()> {
        (&mut self.task)
            .await
            .context("the server task failed")?
            .context("the server failed")
    }

    /// Stops accepting calls and waits up to `grace` for the calls in flight.
    pub async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        // The server may be gone already; then there is nobody to tell.
        let _ = self.shutdown.send(());
        let abort = self.task.abort_handle();
        match tokio::time::timeout(grace, self.task).await {
            Ok(finished) => finished
                .context("the server task failed")?
                .context("the server failed"),
            Err(_) => {
                eprintln!("calls still in flight after {grace:?}; stopping anyway");
                abort.abort();
                Ok(())
            }
        }
    }
}

/// Binds `listen` and serves `service` there in a new task (plaintext).
pub async fn start(listen: SocketAddr, service: ExampleService) -> io::Result<RunningServer> {
    start_with(listen, service, None).await
}

/// The TLS configuration the command line asks for: a server certificate and, with
/// `--tls-client-ca`, required client certificates (mutual TLS); `None` for plaintext.
pub fn tls_config(cli: &Cli) -> anyhow::Result<Option<ServerTlsConfig>> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read --{flag} {}", path.display()))
    };
    let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) else {
        return Ok(None);
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read("tls-cert", cert)?,
        read("tls-key", key)?,
    ));
    if let Some(ca) = &cli.tls_client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("tls-client-ca", ca)?));
    }
    Ok(Some(config))
}

/// Binds `listen` and serves `service` there in a new task, with TLS when `tls` is given.
pub async fn start_with(
    listen: SocketAddr,
    service: ExampleService,
    tls: Option<ServerTlsConfig>,
) -> io::Result<RunningServer> {
    let incoming = TcpIncoming::bind(listen)?.with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(io::Error::other)?;
    }
    let tasks = TaskServiceServer::new(service.tasks());
    let server = builder
        .add_service(HandlerServiceServer::new(service))
        .add_service(tasks)
        .serve_with_incoming_shutdown(incoming, async {
            // A dropped sender means shut down too.
            let _ = stopped.await;
        });
    Ok(RunningServer {
        addr,
        shutdown,
        task: tokio::spawn(server),
    })
}

/// The one line on stdout that tells the bound address; flushed at once.
pub fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()
}

/// Registers the SIGTERM and SIGINT listeners now (before the address is announced: a signal
/// from then on is a clean stop); the future resolves on the first of them.
fn shutdown_signal() -> io::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Runs the service the command line describes until SIGTERM or SIGINT.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_cli(&cli).map_err(anyhow::Error::msg)?;
    let exporter = crate::telemetry::init();
    let result = serve(cli, config).await;
    exporter.shutdown();
    result
}

async fn serve(cli: Cli, config: Config) -> anyhow::Result<()> {
    let ledger = Ledger::new(cli.ledger.clone());
    let service = ExampleService::new(config, ledger);
    let tls = tls_config(&cli)?;
    let signal = shutdown_signal().context("cannot wait for signals")?;
    let mut server = start_with(cli.listen, service, tls)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    announce(server.addr()).context("cannot write to stdout")?;
    tokio::select! {
        finished = server.finished() => return finished,
        () = signal => {}
    }
    eprintln!("shutting down");
    server.stop(SHUTDOWN_GRACE).await
}
