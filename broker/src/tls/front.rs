//! The TLS front of the MQTT listener: our own accept loop, so that no peer
//! can stall anyone else's handshake.
//!
//! rumqttd 0.20 runs TLS handshakes inline in its accept loop (one silent
//! peer stalls every later TLS client) and cannot be handed an accepted
//! stream. So TLS ends here, and the decrypted MQTT bytes go over loopback
//! to a rumqttd listener of the same broker that only this front uses:
//!
//! ```text
//! device ──TLS──▶ accept loop: accept, take a permit (max_connections), spawn; nothing else
//!                  │
//!                  ▼ one task per connection, holding its permit to the end
//!                 handshake, bounded by handshake_timeout
//!                 [client_ca set] device id = the certificate's subject CN;
//!                   read the first packet (bounded by connect_timeout and the
//!                   packet size limit): a CONNECT whose username is that id,
//!                   else CONNACK "not authorized" and close; forward the
//!                   CONNECT with the front token as its password
//!                 copy bytes both ways ──plain MQTT──▶ internal rumqttd listener
//!                 until either side closes            (127.0.0.1:0, IngestCodec)
//! ```
//!
//! Invariant: the accept loop never awaits anything a peer controls; every
//! wait on a peer is in that peer's task and bounded in time.
//!
//! The front token is a random secret made at each start and known only to
//! this process. The internal listener takes it as the proof that the front
//! checked a client certificate for that username; a local process that
//! connects to the internal listener directly cannot present it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{ConnAck, ConnectReturnCode, Login, Packet, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, warn};

use crate::metrics::{BrokerMetrics, ReasonLabel};
use crate::tls::identity;

/// How often a refused TLS connection is logged at most (all are counted).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Longest wait for a TLS close_notify to go out when the broker side closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (out of file descriptors), so the loop
/// does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The secret with which the front vouches for a certificate-authenticated
/// CONNECT on the internal listener.
pub(crate) struct FrontToken(String);

impl FrontToken {
    /// 256 random bits, hex-encoded (MQTT passwords travel as UTF-8 here).
    pub(crate) fn generate() -> FrontToken {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        FrontToken(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether `password` is the token, in time independent of where they differ.
    pub(crate) fn matches(&self, password: &str) -> bool {
        let (token, password) = (self.0.as_bytes(), password.as_bytes());
        token.len() == password.len()
            && token
                .iter()
                .zip(password)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

/// Everything one TLS connection task needs; shared by all of them.
pub(crate) struct Front {
    pub acceptor: TlsAcceptor,
    /// Set when a client certificate is required: then the front checks the
    /// CONNECT's username against the certificate and vouches with this token.
    pub token: Option<Arc<FrontToken>>,
    pub handshake_timeout: Duration,
    /// Time after the handshake in which the CONNECT must arrive.
    pub connect_timeout: Duration,
    /// Largest first packet read (the broker's packet size limit).
    pub max_packet_size: usize,
    /// The internal rumqttd listener on loopback.
    pub upstream: SocketAddr,
    pub metrics: BrokerMetrics,
    /// One permit per open TLS connection, handshaking or established.
    pub permits: Arc<Semaphore>,
    /// When a refusal was last logged.
    pub last_log: Mutex<Option<Instant>>,
}

/// Why a TLS connection ended before it reached the broker.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("tls handshake not complete within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("tls handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("too many tls connections")]
    Limit,
    #[error(transparent)]
    NoIdentity(identity::IdentityError),
    #[error("no MQTT CONNECT within {0:?} of the handshake")]
    ConnectTimeout(Duration),
    #[error("first packet is not a valid MQTT 3.1.1 CONNECT: {0}")]
    NotConnect(String),
    #[error("CONNECT username {username:?} is not the certificate's device id {device_id:?}")]
    IdentityMismatch {
        device_id: String,
        username: Option<String>,
    },
    #[error("cannot reach the internal MQTT listener: {0}")]
    Upstream(std::io::Error),
}

impl Refusal {
    /// Counts the refusal under its metric and reason.
    fn count(&self, metrics: &BrokerMetrics) {
        let (family, reason) = match self {
            Refusal::HandshakeTimeout(_) => (&metrics.tls_handshakes_failed, "timeout"),
            Refusal::Handshake(err) => (&metrics.tls_handshakes_failed, handshake_reason(err)),
            Refusal::Limit => (&metrics.tls_connections_refused, "limit"),
            Refusal::NoIdentity(_) => (&metrics.tls_connections_refused, "no_identity"),
            Refusal::ConnectTimeout(_) => (&metrics.tls_connections_refused, "connect_timeout"),
            Refusal::NotConnect(_) => (&metrics.tls_connections_refused, "not_connect"),
            Refusal::IdentityMismatch { .. } => {
                (&metrics.tls_connections_refused, "identity_mismatch")
            }
            Refusal::Upstream(_) => (&metrics.tls_connections_refused, "upstream"),
        };
        family.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// `client_cert` when rustls refused the client's certificate (or its
/// absence), `protocol` for any other failure, `aborted` when the peer left.
fn handshake_reason(err: &std::io::Error) -> &'static str {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(
            rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertificate(_)
            | rustls::Error::InvalidCertRevocationList(_),
        ) => "client_cert",
        Some(_) => "protocol",
        None => "aborted",
    }
}

impl Front {
    /// The accept loop. Runs until the broker's runtime shuts down, which
    /// drops every connection task with it.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(error = %err, "tls listener cannot accept; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            // Refuse at once rather than stop accepting: a full house of
            // silent peers then cannot leave real clients hanging in the backlog.
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.refused(peer, &Refusal::Limit);
                continue;
            };
            tokio::spawn(self.clone().connection(stream, peer, permit));
        }
    }

    /// Handshake, identity check, then bytes both ways until either side
    /// closes. A refusal is counted before the socket closes, so a client
    /// that sees the close finds it in the metrics.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        // Fallible: a failed handshake hands the socket back, to be closed
        // only after the failure is counted.
        let accept = self.acceptor.accept(stream).into_fallible();
        tokio::pin!(accept);
        let mut tls = match tokio::time::timeout(self.handshake_timeout, &mut accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err((err, _stream))) => return self.refused(peer, &Refusal::Handshake(err)),
            Err(_) => {
                return self.refused(peer, &Refusal::HandshakeTimeout(self.handshake_timeout))
            }
        };
        self.metrics.tls_handshakes.inc();

        let first = match &self.token {
            None => BytesMut::new(),
            Some(token) => match self.vouch(&mut tls, token).await {
                Ok(first) => first,
                Err(refusal) => {
                    self.refused(peer, &refusal);
                    if let Refusal::IdentityMismatch { .. } = refusal {
                        // Bounded too: a client that reads nothing must not hold the task.
                        let _ =
                            tokio::time::timeout(self.connect_timeout, refuse_connect(&mut tls))
                                .await;
                    }
                    return;
                }
            },
        };

        let upstream = async {
            let mut upstream = TcpStream::connect(self.upstream).await?;
            let _ = upstream.set_nodelay(true);
            upstream.write_all(&first).await?;
            Ok::<_, std::io::Error>(upstream)
        };
        let mut upstream = match upstream.await {
            Ok(upstream) => upstream,
            Err(err) => return self.refused(peer, &Refusal::Upstream(err)),
        };
        relay(tls, &mut upstream).await;
    }

    /// The first packet, checked against the client certificate, within
    /// `connect_timeout` of the handshake.
    async fn vouch(
        &self,
        tls: &mut TlsStream<TcpStream>,
        token: &FrontToken,
    ) -> Result<BytesMut, Refusal> {
        let device_id = peer_device_id(tls).map_err(Refusal::NoIdentity)?;
        tokio::time::timeout(
            self.connect_timeout,
            self.vouched_connect(tls, &device_id, token),
        )
        .await
        .map_err(|_| Refusal::ConnectTimeout(self.connect_timeout))?
    }

    /// Reads the first packet, checks that it is a CONNECT from `device_id`,
    /// and returns it re-encoded with the front token as its password,
    /// followed by whatever the client sent after it.
    async fn vouched_connect(
        &self,
        tls: &mut TlsStream<TcpStream>,
        device_id: &str,
        token: &FrontToken,
    ) -> Result<BytesMut, Refusal> {
        let mut buffer = BytesMut::with_capacity(1024);
        let packet = loop {
            match V4.read_mut(&mut buffer, self.max_packet_size) {
                Ok(packet) => break packet,
                Err(rumqttd::protocol::Error::InsufficientBytes(_)) => {
                    let read = tls
                        .read_buf(&mut buffer)
                        .await
                        .map_err(|e| Refusal::NotConnect(e.to_string()))?;
                    if read == 0 {
                        return Err(Refusal::NotConnect("closed before a whole packet".into()));
                    }
                }
                Err(err) => return Err(Refusal::NotConnect(format!("{err:?}"))),
            }
        };
        let Packet::Connect(connect, _, will, _, login) = packet else {
            return Err(Refusal::NotConnect(format!("{packet:?}")));
        };
        let username = login.map(|l| l.username);
        if username.as_deref() != Some(device_id) {
            return Err(Refusal::IdentityMismatch {
                device_id: device_id.to_string(),
                username,
            });
        }
        let login = Login {
            username: device_id.to_string(),
            password: token.0.clone(),
        };
        let mut forward = BytesMut::with_capacity(buffer.len() + 256);
        V4.write(
            Packet::Connect(connect, None, will, None, Some(login)),
            &mut forward,
        )
        .map_err(|err| Refusal::NotConnect(format!("{err:?}")))?;
        forward.extend_from_slice(&buffer);
        Ok(forward)
    }

    /// Counts a refusal, logs it at DEBUG, and at WARN once per interval.
    fn refused(&self, peer: SocketAddr, refusal: &Refusal) {
        refusal.count(&self.metrics);
        if let Refusal::Upstream(_) = refusal {
            // Our own listener is gone: no TLS device can get in.
            error!(%peer, error = %refusal, "tls connection cannot be relayed");
            return;
        }
        debug!(%peer, reason = %refusal, "tls connection refused");
        let now = Instant::now();
        let Ok(mut last) = self.last_log.lock() else {
            return;
        };
        if last.is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL) {
            *last = Some(now);
            warn!(
                %peer,
                reason = %refusal,
                "tls connection refused (logged once a minute; edge_mqtt_tls_* counters have them all)"
            );
        }
    }
}

/// Copies bytes both ways until either side closes, then closes the other.
///
/// Not `copy_bidirectional`: that waits for both sides to close, so after
/// rumqttd dropped a connection (refused login, keep-alive expired) a peer
/// that never closes its end would hold its task and permit for good. MQTT
/// has no use for half-closed connections.
async fn relay(tls: TlsStream<TcpStream>, upstream: &mut TcpStream) {
    let (mut device_read, mut device_write) = tokio::io::split(tls);
    let (mut broker_read, mut broker_write) = upstream.split();
    // Either side closing or resetting ends the relay; that is how MQTT
    // connections end, so there is nothing to report.
    tokio::select! {
        copied = tokio::io::copy(&mut device_read, &mut broker_write) => {
            if let Err(err) = copied {
                debug!(error = %err, "tls relay ended by the device side");
            }
        }
        copied = tokio::io::copy(&mut broker_read, &mut device_write) => {
            if let Err(err) = copied {
                debug!(error = %err, "tls relay ended by the broker side");
            }
            // The broker's last bytes are flushed; end the TLS session
            // properly, but do not wait on a peer that reads nothing.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, device_write.shutdown()).await;
        }
    }
}

/// The device id of the verified client certificate.
fn peer_device_id(tls: &TlsStream<TcpStream>) -> Result<String, identity::IdentityError> {
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let Some(end_entity) = certs.first() else {
        // The verifier requires a certificate; this cannot pass a handshake.
        return Err(identity::IdentityError::CommonNames(0));
    };
    identity::device_id(end_entity)
}

/// Tells the client why it is refused (MQTT 3.1.1 return code 5) and closes.
async fn refuse_connect(tls: &mut TlsStream<TcpStream>) {
    let mut out = BytesMut::with_capacity(4);
    let ack = ConnAck {
        session_present: false,
        code: ConnectReturnCode::NotAuthorized,
    };
    if V4.write(Packet::ConnAck(ack, None), &mut out).is_ok() {
        let _ = tls.write_all(&out).await;
    }
    let _ = tls.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_matches_only_itself() {
        let token = FrontToken::generate();
        assert_eq!(token.0.len(), 64);
        assert!(token.matches(&token.0.clone()));
        assert!(!token.matches(""));
        assert!(!token.matches(&token.0[..63]));
        assert!(!FrontToken::generate().matches(&token.0));
    }
}
