//! TLS settings of the MQTT listener and their loading: the PEM files are
//! read once, at start, into one rustls `ServerConfig` that every handshake
//! shares. Every error names the file at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The TLS listener of the broker (MQTT over TLS).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Address of the TLS listener (MQTT over TLS is conventionally port
    /// 8883); port 0 picks a free port (see `Broker::tls_addr`).
    pub listen: SocketAddr,
    /// PEM file with the server certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates that sign device certificates.
    /// When set, every TLS client must present a certificate signed by one
    /// of them, and its subject CN is the device identity (see `front.rs`).
    /// When unset (default), devices authenticate with their password only.
    pub client_ca: Option<PathBuf>,
    /// Time a TLS client has to complete its handshake (default 10 s); a
    /// peer that says nothing or stalls midway is dropped after it.
    pub handshake_timeout: Duration,
    /// Most concurrent TLS connections, handshaking or established (default
    /// 10,000); past it a new connection is closed at once.
    pub max_connections: usize,
}

impl TlsConfig {
    /// TLS on `listen` with the given certificate and key, no client
    /// certificates, and the default timeout and connection limit.
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> TlsConfig {
        TlsConfig {
            listen,
            cert,
            key,
            client_ca: None,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }

    /// Reads and checks the certificate, the key and the client CA, and
    /// builds the rustls configuration every handshake uses.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&self.cert, "certificate")?;
        let key = read_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Rustls(err.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                },
                other => TlsError::Unusable {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                    reason: other.to_string(),
                },
            })?;
        Ok(Arc::new(config))
    }
}

/// Why the TLS listener cannot start. Every variant names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file is missing or unreadable; check `mqtt.tls.cert`/`key`/`client_ca`.
    #[error("cannot read TLS {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds no PEM item of the kind needed, or broken PEM.
    #[error("TLS {what} file {path}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The private key is not the key of the certificate's public key.
    #[error("TLS key file {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the pair otherwise (for example an unsupported key type).
    #[error("cannot use TLS certificate {cert} with key {key}: {reason}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// The client CA file holds certificates rustls cannot use as trust anchors.
    #[error("TLS client CA file {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    /// No protocol version in common with the crypto provider (a build problem).
    #[error("cannot set up TLS: {0}")]
    Rustls(String),
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, what: &'static str, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, what, format!("not valid PEM: {err}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            path,
            what,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found",
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "key";
    let bytes = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => pem_error(
            path,
            what,
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) found",
        ),
        other => pem_error(path, what, format!("not valid PEM: {other}")),
    })
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "client CA")? {
        roots.add(cert).map_err(|err| TlsError::ClientCa {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|err| TlsError::ClientCa {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })
}
