//! TLS with rustls: the server configuration built from `[tls]` (TLS 1.2
//! and 1.3 only, optional client certificates), replaced on SIGHUP, and the
//! identity a verified client certificate carries (SASL EXTERNAL).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, TlsConfig};

/// The AMQP TLS protocol header (protocol id 2, AMQP 5.2.1).
pub const TLS_HEADER: [u8; 8] = *b"AMQP\x02\x01\x00\x00";

/// Why the TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("tls.{key} = {path:?}: {reason}")]
    File {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match the
    /// certificate, an unusable CA).
    #[error("tls: {0}")]
    Rustls(String),
}

/// Builds the acceptor `[tls]` describes (None when TLS is off).
pub fn acceptor(config: &TlsConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    if !config.enabled() {
        return Ok(None);
    }
    let certs = certificates("cert", &config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| TlsError::File {
        key: "key",
        path: config.key.clone(),
        reason: pem_reason(&e, "no private key (PKCS#8, PKCS#1 or SEC1 PEM)"),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match config.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("client-ca", &config.client_ca)? {
                roots.add(ca).map_err(|e| TlsError::File {
                    key: "client-ca",
                    path: config.client_ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// Every certificate in a PEM file (at least one).
fn certificates(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::File {
        key,
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() || !Path::new(path).exists() {
        return Err(fail("no such file".into()));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_reason(&e, "unreadable")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_reason(&e, "not PEM")))?;
    if certs.is_empty() {
        return Err(fail("no certificate (PEM \"CERTIFICATE\") in it".into()));
    }
    Ok(certs)
}

fn pem_reason(e: &rustls_pki_types::pem::Error, none: &str) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => none.to_owned(),
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

/// The name a verified client certificate stands for: its subject's
/// common name (CN), as RabbitMQ's EXTERNAL mechanism uses by default.
pub fn certificate_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_of_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_identity(cert.der()).as_deref(), Some("alice"));
    }

    #[test]
    fn missing_files_are_named() {
        let config = TlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ..TlsConfig::default()
        };
        let e = acceptor(&config).err().expect("refused").to_string();
        assert!(e.contains("tls.cert") && e.contains("no such file"), "{e}");
    }
}
