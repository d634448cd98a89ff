//! TLS and mutual TLS, as the core connects: a CA, a server certificate for `localhost`, and a
//! client certificate for the core; a client without one is refused when the service requires
//! it.

use std::path::PathBuf;
use std::time::Duration;

use operon_handler::proto as pb;
use operon_handler::{Ctx, HandlerResult, Operator, ServeConfig, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use serde_json::Value;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn noop(_: Ctx<Value>) -> HandlerResult {
    Ok(None)
}

struct Pki {
    dir: PathBuf,
    ca: String,
    client: (String, String),
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!(
        "operon-handler-tls-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, usage| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf(
        vec!["localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = leaf(vec!["operon".into()], ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), &server.0).unwrap();
    std::fs::write(dir.join("tls.key"), &server.1).unwrap();
    Pki {
        dir,
        ca: ca.pem(),
        client,
    }
}

async fn describe(
    port: u16,
    tls: ClientTlsConfig,
) -> Result<pb::Manifest, Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(format!("https://localhost:{port}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let manifest = pb::handler_service_client::HandlerServiceClient::new(channel)
        .describe(pb::DescribeRequest {
            core_version: "test".into(),
            contract_revision: operon_handler::CONTRACT_REVISION,
        })
        .await?
        .into_inner();
    Ok(manifest)
}

#[tokio::test]
async fn mutual_tls_admits_the_core_and_refuses_strangers() {
    let pki = pki();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: pki.dir.join("tls.crt"),
            key: pki.dir.join("tls.key"),
            client_ca: Some(pki.dir.join("ca.crt")),
        }),
        telemetry: false,
        ..ServeConfig::default()
    };
    let running = Operator::new("tls")
        .on_create("widgets.example.com", noop)
        .start(config)
        .await
        .unwrap();
    let port = running.addr().port();
    let trust = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let with_identity = trust
        .clone()
        .identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    let manifest = describe(port, with_identity)
        .await
        .expect("the core's certificate is accepted");
    assert_eq!(manifest.service_name, "tls");
    assert!(
        describe(port, trust).await.is_err(),
        "a client without a certificate is refused"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn tls_without_client_certificates() {
    let pki = pki();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: pki.dir.join("tls.crt"),
            key: pki.dir.join("tls.key"),
            client_ca: None,
        }),
        telemetry: false,
        ..ServeConfig::default()
    };
    let running = Operator::new("tls")
        .on_create("widgets.example.com", noop)
        .start(config)
        .await
        .unwrap();
    let trust = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let manifest = describe(running.addr().port(), trust).await.unwrap();
    assert_eq!(manifest.handlers.len(), 1);
    running.stop().await.unwrap();
}

/// The health service's answer for `service` on the plaintext listener at `addr`: `Err` when
/// nothing answers there.
async fn plaintext_health(
    addr: std::net::SocketAddr,
    service: &str,
) -> Result<i32, Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(answer.into_inner().status)
}

/// `--health-listen`: beside a (mutual) TLS handler port, a plaintext port that serves the
/// health service alone, for the kubelet's `grpc:` probes: SERVING while the service serves,
/// NOT_SERVING once a stop is begun (while the calls in flight finish), closed after.
#[tokio::test]
async fn a_plaintext_health_listener_beside_tls() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let pki = pki();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: pki.dir.join("tls.crt"),
            key: pki.dir.join("tls.key"),
            client_ca: Some(pki.dir.join("ca.crt")),
        }),
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        telemetry: false,
        shutdown_grace: Duration::from_secs(5),
    };
    // A handler that says when it runs, and then takes a while.
    let (started, mut running_call) = tokio::sync::mpsc::unbounded_channel();
    let slow = move |_: Ctx<Value>| {
        let _ = started.send(());
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(None)
        }
    };
    let running = Operator::new("tls")
        .on_create_with(
            "widgets.example.com",
            operon_handler::HandlerOptions::new().id("slow"),
            slow,
        )
        .start(config)
        .await
        .unwrap();
    let health = running.health_addr().expect("a health listener");
    assert_ne!(health, running.addr());
    for service in ["", "operon.v1.HandlerService"] {
        assert_eq!(
            plaintext_health(health, service).await.unwrap(),
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    // Only the health service is there: not the handler service.
    let channel = Channel::from_shared(format!("http://{health}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = pb::handler_service_client::HandlerServiceClient::new(channel)
        .describe(pb::DescribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    // The main port stays TLS-only: plaintext gets nothing.
    assert!(plaintext_health(running.addr(), "").await.is_err());

    // A call in flight on the main port keeps the service draining for a while.
    let client_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    let main = Channel::from_shared(format!("https://localhost:{}", running.addr().port()))
        .unwrap()
        .tls_config(client_tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::handler_service_client::HandlerServiceClient::new(main);
    let in_flight = tokio::spawn(async move {
        client
            .invoke(pb::InvokeRequest {
                handler_id: "slow".into(),
                reason: pb::Reason::Create as i32,
                body_json: br#"{"metadata": {"name": "w"}}"#.to_vec(),
                ..Default::default()
            })
            .await
    });
    running_call.recv().await.expect("the call runs");
    let stopping = tokio::spawn(running.stop());
    let mut status = None;
    for _ in 0..50 {
        match plaintext_health(health, "").await {
            Ok(s) if s == ServingStatus::NotServing as i32 => {
                status = Some(s);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => panic!("the health listener closed before the drain ended: {error}"),
        }
    }
    assert_eq!(
        status,
        Some(ServingStatus::NotServing as i32),
        "NOT_SERVING while draining"
    );
    in_flight
        .await
        .unwrap()
        .expect("the call in flight is answered");
    stopping.await.unwrap().unwrap();
    assert!(
        plaintext_health(health, "").await.is_err(),
        "the health listener is closed after the stop"
    );
}
