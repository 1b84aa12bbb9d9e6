//! HTTPS for the collector: the PEM files of `server.tls_cert` and
//! `server.tls_key` (and `server.tls_client_ca`, which makes client
//! certificates required) become one rustls `ServerConfig` (ring provider,
//! TLS 1.2 and 1.3, ALPN h2 and http/1.1), and [`TlsListener`] hands axum
//! only connections whose handshake is done.
//!
//! ```text
//! TcpListener ──accept──▶ spawn: handshake (≤ HANDSHAKE_TIMEOUT, ≤ MAX_HANDSHAKES at once)
//!                                   │ done
//!                                   ▼
//!                      bounded channel ──▶ TlsListener::accept ──▶ axum::serve
//! ```
//!
//! Invariant: the accept loop never waits on a peer, so one silent client
//! cannot stall the handshakes of the others (the trap rumqttd's TLS
//! listener falls into, see DESIGN.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::metrics::HandshakeLabels;

/// Time a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait to be accepted
/// (in the kernel's backlog) until one finishes.
const MAX_HANDSHAKES: usize = 1024;

/// Why the TLS files cannot be used; the operator must fix the named file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("server.{field} {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds no PEM item of the expected kind.
    #[error("server.{field} {path}: no PEM {what} found")]
    Empty {
        field: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    /// The client CA file holds a certificate rustls cannot use as a trust
    /// anchor; replace it with the CA certificates that sign the clients'.
    #[error("server.tls_client_ca {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    /// The certificate and key do not fit together, or rustls refuses them.
    #[error("server.tls_cert {cert} with server.tls_key {key}: {reason}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Reads the certificate chain, the key and the client CA, and builds the
/// server configuration.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs("tls_cert", &files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let unusable = |reason: String| TlsError::Unusable {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| unusable(err.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|err| unusable(err.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_file(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(field, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Empty {
            field,
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("tls_key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Empty {
        field: "tls_key",
        path: path.to_owned(),
        what: "private key (PKCS#8, PKCS#1 or SEC1)",
    })
}

/// Requires every client to present a certificate chaining to one of the
/// CAs in `path` (WebPKI rules: validity dates, signatures, the clientAuth
/// extended key usage when the certificate lists any). No CRLs: revoke a
/// gateway by revoking its token.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let client_ca = |reason: String| TlsError::ClientCa {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs("tls_client_ca", path)? {
        roots.add(cert).map_err(|err| client_ca(err.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|err| client_ca(err.to_string()))
}

/// An `axum::serve` listener that yields TLS streams after their handshake.
/// The accept loop runs in its own task and stops when this is dropped.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener`; handshakes use `config`, and each
    /// one that fails is counted in `failed`.
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        failed: Family<HandshakeLabels, Counter>,
    ) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx, failed));
        Ok(TlsListener { ready, local_addr })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    failed: Family<HandshakeLabels, Counter>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = tx.closed() => return,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let failed = failed.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                // Scanners, wrong CAs, clients without the certificate
                // `tls_client_ca` requires, plain HTTP on the TLS port: routine.
                Ok(Err(err)) => {
                    failed
                        .get_or_create(&HandshakeLabels { reason: "error" })
                        .inc();
                    tracing::debug!(%peer, error = %err, "tls handshake failed");
                }
                Err(_) => {
                    failed
                        .get_or_create(&HandshakeLabels { reason: "timeout" })
                        .inc();
                    tracing::debug!(%peer, "tls handshake timed out");
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop only stops once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    /// A self-signed server certificate and key, and a CA certificate, as PEM files.
    fn files(dir: &Path) -> TlsFiles {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap();
        let mut files = TlsFiles::new(
            write("server.pem", cert.pem()),
            write("server.key", key.serialize_pem()),
        );
        files.client_ca = Some(write("clients-ca.pem", ca.pem()));
        files
    }

    #[test]
    fn a_client_ca_loads_beside_the_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        load(&files).unwrap();
        let plain = TlsFiles::new(files.cert.clone(), files.key.clone());
        load(&plain).unwrap();
    }

    #[test]
    fn a_bad_client_ca_file_names_the_field_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = files(dir.path());
        let missing = dir.path().join("missing-ca.pem");
        // A key is no certificate: nothing to trust.
        for (path, expected) in [
            (missing.clone(), "missing-ca.pem"),
            (files.key.clone(), "no PEM certificate found"),
        ] {
            files.client_ca = Some(path.clone());
            let err = load(&files).unwrap_err().to_string();
            assert!(err.starts_with("server.tls_client_ca "), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(expected), "{err}");
        }
    }
}
