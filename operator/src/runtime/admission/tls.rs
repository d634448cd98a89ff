//! The admission listener's certificates: given as PEM files, or made at start-up — a
//! self-signed CA and a server certificate it signs, for the webhook's host and address (what
//! Kopf's `WebhookServer` does when it gets no certificate; Kopf makes one self-signed
//! certificate that is its own CA).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::core::admission::serving;

/// A failure to make or load the listener's certificates.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Generating the CA or the server certificate failed.
    #[error("cannot generate the webhook certificate")]
    Generate(#[source] rcgen::Error),
    /// The certificate file holds no PEM certificate.
    #[error("no PEM certificate in the webhook certificate")]
    NoCertificate,
    /// The key file holds no usable PEM private key.
    #[error("no usable PEM private key in the webhook key: {0}")]
    BadKey(String),
    /// rustls refused the certificate and key.
    #[error("the webhook certificate and key cannot be used")]
    Rustls(#[source] rustls::Error),
}

/// The PEM material of the listener.
#[derive(Debug, Clone)]
pub(crate) struct Material {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    /// The server's private key.
    pub key_pem: Vec<u8>,
    /// The CA bundle the API server must trust (the webhook configurations' `caBundle`).
    pub ca_pem: Vec<u8>,
}

/// Makes a CA (CN `Operon admission CA`) and a server certificate signed by it, valid for every
/// name in `hostnames` (IP addresses become IP SANs; the first non-IP name, else the first
/// address, is the common name). Unspecified addresses (`0.0.0.0`, `::`) are left out.
///
/// # Errors
/// [`Error::Generate`] if a name cannot be put in a certificate.
pub(crate) fn generate(hostnames: &[String]) -> Result<Material, Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let names = serving::subject_names(hostnames);
    let common_name = serving::common_name(&names);

    let ca_key = KeyPair::generate().map_err(Error::Generate)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(Error::Generate)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Operon admission CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(Error::Generate)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(Error::Generate)?;
    let mut params = CertificateParams::new(names).map_err(Error::Generate)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(Error::Generate)?;
    let mut chain = cert.pem().into_bytes();
    chain.extend_from_slice(ca_cert.pem().as_bytes());
    Ok(Material {
        cert_pem: chain,
        key_pem: key.serialize_pem().into_bytes(),
        ca_pem: ca_cert.pem().into_bytes(),
    })
}

/// The rustls server configuration for the material (HTTP/1.1 only, no client certificates).
///
/// # Errors
/// [`Error::NoCertificate`], [`Error::BadKey`], [`Error::Rustls`].
pub(crate) fn server_config(material: &Material) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&material.cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(Error::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key_pem)
        .map_err(|e| Error::BadKey(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Rustls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(Error::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;

    #[test]
    fn generated_certificates_chain_to_the_ca_and_name_the_host() {
        let m = generate(&["127.0.0.1".into(), "0.0.0.0".into(), "webhook.local".into()]).unwrap();
        assert!(String::from_utf8_lossy(&m.ca_pem).starts_with("-----BEGIN CERTIFICATE-----"));
        // The chain is the server certificate, then the CA.
        let chain: Vec<_> = CertificateDer::pem_slice_iter(&m.cert_pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2);
        let ca = CertificateDer::from_pem_slice(&m.ca_pem).unwrap();
        assert_eq!(chain[1], ca);
        // A TLS client that trusts only the CA accepts the server for both names, and not for
        // another name (webpki, as rustls verifies it).
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let now = rustls_pki_types::UnixTime::now();
        for (name, ok) in [
            ("127.0.0.1", true),
            ("webhook.local", true),
            ("other.local", false),
        ] {
            let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
            let verdict =
                verifier.verify_server_cert(&chain[0], &chain[1..], &server_name, &[], now);
            assert_eq!(verdict.is_ok(), ok, "{name}: {verdict:?}");
        }
        assert!(server_config(&m).is_ok());
    }

    #[test]
    fn unusable_material_is_refused_with_the_reason() {
        let m = generate(&["localhost".into()]).unwrap();
        let no_cert = Material {
            cert_pem: b"nothing".to_vec(),
            ..m.clone()
        };
        assert!(matches!(server_config(&no_cert), Err(Error::NoCertificate)));
        let no_key = Material {
            key_pem: b"nothing".to_vec(),
            ..m
        };
        assert!(matches!(server_config(&no_key), Err(Error::BadKey(_))));
    }
}
