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
