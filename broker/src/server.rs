//! Starting and stopping the embedded broker: rumqttd's router on its own
//! thread, its v4 server on a runtime of ours, our codec in between.
//!
//! rumqttd's `Broker::start` only logs a failed bind and never exposes the
//! address of a port-0 listener, so this module drives `Router` and `Server`
//! directly. `Server::start` binds before its first `.await` that can pend
//! (rumqttd 0.20.0, server/broker.rs), so polling it once tells for certain
//! whether the listener is up. For port 0 we pick a free port from the OS and
//! retry if someone else takes it first: the outcome is always known, only
//! the port may change.
//!
//! With TLS configured, a second rumqttd listener on 127.0.0.1:0 serves only
//! the TLS front (`tls/front.rs`), which owns the public TLS socket:
//!
//! ```text
//! devices ──MQTT──────────────────────────────▶ rumqttd listener (`listen`)  ─┐
//! devices ──TLS──▶ front (`tls.listen`) ──MQTT─▶ rumqttd listener (loopback) ─┴▶ router
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use telemetry::Limits;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::info;

use crate::auth::DeviceRegistry;
use crate::codec::IngestCodec;
use crate::metrics::BrokerMetrics;
use crate::sink::IngestSink;
use crate::subscriptions::Subscriptions;
use crate::tls::front::{Front, FrontToken};
use crate::tls::{TlsConfig, TlsError};

/// Broker settings, after validation.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// MQTT listen address; port 0 picks a free port (see [`Broker::local_addr`]).
    pub listen: SocketAddr,
    /// Most concurrent device connections (default 10,000).
    pub max_connections: usize,
    /// Payload size and nesting limits for device publishes.
    pub limits: Limits,
    /// Time a new connection has to send CONNECT (default 5 s).
    pub connect_timeout: Duration,
    /// Longest a PUBACK waits for the spool before the connection is dropped (default 10 s).
    pub durable_timeout: Duration,
    /// Packets read from one connection before they are handed to the router (default 100).
    pub read_batch: usize,
    /// Worker threads of the runtime that serves MQTT connections (default 2).
    pub worker_threads: usize,
    /// Registered devices. With a registry, a device connects with username =
    /// its device id and its password, and may publish only under its own
    /// `devices/{device_id}/`. Without one (default), anyone may publish as
    /// any device: for a closed network or a demo only.
    pub devices: Option<Arc<DeviceRegistry>>,
    /// A second listener for MQTT over TLS (default none). Its
    /// `max_connections` bounds TLS connections; `max_connections` above
    /// still bounds all connections together.
    pub tls: Option<TlsConfig>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1884)),
            max_connections: 10_000,
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(5),
            durable_timeout: Duration::from_secs(10),
            read_batch: 100,
            worker_threads: 2,
            devices: None,
            tls: None,
        }
    }
}

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not ours; pick another `listen` address.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The MQTT runtime could not start (out of threads or file descriptors).
    #[error("cannot start the MQTT runtime: {0}")]
    Runtime(std::io::Error),
    /// A TLS file is missing or unusable; the error names it.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A running embedded broker. Dropping it stops serving MQTT.
pub struct Broker {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    runtime: Option<tokio::runtime::Runtime>,
    metrics: BrokerMetrics,
}

/// Attempts at finding a free port when `listen` has port 0.
const PORT_ATTEMPTS: usize = 16;

impl Broker {
    /// Starts the router and the MQTT listeners; returns once every listener
    /// is bound. With TLS configured, its files are read and checked first.
    pub fn start(config: BrokerConfig, sink: Arc<dyn IngestSink>) -> Result<Broker, BrokerError> {
        let tls = match &config.tls {
            Some(tls) => Some((tls, tls.load()?)),
            None => None,
        };
        let metrics = BrokerMetrics::default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.max(1))
            .thread_name("mqtt")
            .enable_all()
            .build()
            .map_err(BrokerError::Runtime)?;
        let router_tx = Router::new(0, router_config(&config)).spawn();
        if config.devices.is_none() {
            tracing::warn!("no device file: any client may publish as any device");
        }
        // One set for both listeners: their publishes share one router.
        let subscriptions = Arc::new(Subscriptions::default());
        let codec = |authenticated| {
            IngestCodec::new(
                sink.clone(),
                config.limits,
                config.durable_timeout,
                metrics.clone(),
                authenticated,
                subscriptions.clone(),
            )
        };

        let started = (|| {
            let plain_auth = config.devices.clone().map(DeviceAuth::Password);
            let plain_codec = codec(plain_auth.is_some());
            let local_addr = start_listener(&runtime, config.listen, |addr| {
                let settings = server_settings(&config, addr, plain_auth.clone(), &metrics);
                Server::new(settings, router_tx.clone(), plain_codec.clone_template())
            })?;
            info!(addr = %local_addr, "mqtt listening");
            let Some((tls, server_config)) = tls else {
                return Ok((local_addr, None));
            };
            // With client certificates, the front vouches for each device
            // with the token; without, devices log in with their password.
            let token = tls
                .client_ca
                .as_ref()
                .map(|_| Arc::new(FrontToken::generate()));
            let internal_auth = match &token {
                Some(token) => Some(DeviceAuth::Certificate {
                    token: token.clone(),
                    registry: config.devices.clone(),
                }),
                None => config.devices.clone().map(DeviceAuth::Password),
            };
            // Behind a verified certificate, topics are bound to the device
            // id even without a device file.
            let internal_codec = codec(internal_auth.is_some());
            let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let upstream = start_listener(&runtime, loopback, |addr| {
                let settings = server_settings(&config, addr, internal_auth.clone(), &metrics);
                Server::new(settings, router_tx.clone(), internal_codec.clone_template())
            })?;
            let front = Front {
                acceptor: TlsAcceptor::from(server_config),
                token,
                handshake_timeout: tls.handshake_timeout,
                connect_timeout: config.connect_timeout,
                max_packet_size: max_packet_size(&config),
                upstream,
                metrics: metrics.clone(),
                permits: Arc::new(Semaphore::new(tls.max_connections)),
                last_log: Mutex::default(),
            };
            let tls_addr = start_front(&runtime, tls.listen, front)?;
            info!(
                addr = %tls_addr,
                client_certificates = tls.client_ca.is_some(),
                "mqtt over tls listening"
            );
            Ok((local_addr, Some(tls_addr)))
        })();
        match started {
            Ok((local_addr, tls_addr)) => Ok(Broker {
                local_addr,
                tls_addr,
                runtime: Some(runtime),
                metrics,
            }),
            Err(err) => {
                // Not a plain drop: that panics when called from async code.
                runtime.shutdown_background();
                Err(err)
            }
        }
    }

    /// The address the plain MQTT listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the MQTT-over-TLS listener is bound to, when configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The broker's counters, to register with a Prometheus registry.
    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    /// Stops accepting and closes every device connection. Publishes already
    /// handed to the sink stay there; unacknowledged devices will resend.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    future.poll(&mut cx)
}

/// Starts one rumqttd listener on `listen` and returns its address. For
/// port 0, retries with another free port if someone takes it first.
fn start_listener(
    runtime: &tokio::runtime::Runtime,
    listen: SocketAddr,
    server: impl Fn(SocketAddr) -> Server<IngestCodec>,
) -> Result<SocketAddr, BrokerError> {
    let attempts = if listen.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let addr = match pick_addr(listen) {
            Ok(addr) => addr,
            Err(source) => {
                last_error = Some(BrokerError::Bind {
                    addr: listen,
                    source,
                });
                continue;
            }
        };
        let mut server = server(addr);
        let mut serve: Pin<Box<dyn Future<Output = Result<(), String>> + Send>> =
            Box::pin(async move {
                server
                    .start(LinkType::Remote)
                    .await
                    .map_err(|e| e.to_string())
            });
        // Poll once inside the runtime: the bind happens before the first pending await.
        // `enter` (not `block_on`) so that this works from inside another runtime.
        let first = {
            let _context = runtime.enter();
            poll_once(serve.as_mut())
        };
        match first {
            Poll::Pending => {
                runtime.spawn(async move {
                    if let Err(err) = serve.await {
                        tracing::error!(error = %err, "mqtt listener stopped");
                    }
                });
                return Ok(addr);
            }
            Poll::Ready(result) => {
                let source = match result {
                    Err(err) => std::io::Error::other(err),
                    Ok(()) => std::io::Error::other("listener ended at once"),
                };
                last_error = Some(BrokerError::Bind { addr, source });
            }
        }
    }
    Err(last_error.expect("at least one attempt was made"))
}

/// Binds the TLS listener and spawns the front's accept loop on `runtime`.
fn start_front(
    runtime: &tokio::runtime::Runtime,
    listen: SocketAddr,
    front: Front,
) -> Result<SocketAddr, BrokerError> {
    let bind_error = |source| BrokerError::Bind {
        addr: listen,
        source,
    };
    // Registering the socket needs the runtime's reactor.
    let _context = runtime.enter();
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_error)?;
    // As tokio's own `TcpListener::bind` does: a restart must not wait for
    // the old connections' TIME_WAIT.
    socket.set_reuseaddr(true).map_err(bind_error)?;
    socket.bind(listen).map_err(bind_error)?;
    let listener = socket.listen(1024).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    runtime.spawn(Arc::new(front).serve(listener));
    Ok(addr)
}

/// How a listener authenticates devices.
#[derive(Clone)]
enum DeviceAuth {
    /// Username = device id, password checked against the registry.
    Password(Arc<DeviceRegistry>),
    /// Behind the TLS front with client certificates: the password must be
    /// the front's token (the front checked the certificate and that the
    /// username is its device id); with a registry, the device must also be
    /// registered.
    Certificate {
        token: Arc<FrontToken>,
        registry: Option<Arc<DeviceRegistry>>,
    },
}

impl DeviceAuth {
    /// Whether the CONNECT's login is good. Slow (argon2, file reload): call
    /// it off the async workers.
    fn check(&self, username: &str, password: &str) -> bool {
        match self {
            DeviceAuth::Password(registry) => registry.verify(username, password),
            DeviceAuth::Certificate { token, registry } => {
                token.matches(password)
                    && registry
                        .as_ref()
                        .is_none_or(|registry| registry.is_registered(username))
            }
        }
    }
}

/// The largest MQTT packet accepted: room for the topic and headers on top
/// of the payload limit, so an oversized payload reaches our codec and is
/// rejected with a reason.
fn max_packet_size(config: &BrokerConfig) -> usize {
    config.limits.max_bytes + 1024
}

/// The address to hand rumqttd: `listen` itself, or a port the OS just gave us.
fn pick_addr(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    StdListener::bind(listen)?.local_addr()
}

fn router_config(config: &BrokerConfig) -> RouterConfig {
    RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: 200,
        // Nothing is meant to subscribe: the spool is the consumer. One
        // wildcard filter gives every publish a log to land in, and its
        // segments bound rumqttd's memory. The size counts payload bytes
        // only, while each entry also holds a publish with its properties
        // (about 750 bytes for a 100-byte reading): 2 x 4 MiB of payloads
        // were 60 MiB of heap under flat-out load (heaptrack). 2 x 64 KiB
        // keep that under 1 MiB.
        max_segment_size: 64 * 1024,
        max_segment_count: 2,
        custom_segment: None,
        initialized_filters: Some(vec!["devices/+/telemetry".to_string()]),
        shared_subscriptions_strategy: Default::default(),
    }
}

fn server_settings(
    config: &BrokerConfig,
    listen: SocketAddr,
    auth: Option<DeviceAuth>,
    metrics: &BrokerMetrics,
) -> ServerSettings {
    let mut settings = ServerSettings {
        name: "mqtt".to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: config.connect_timeout.as_millis().min(u16::MAX as u128) as u16,
            max_payload_size: max_packet_size(config),
            max_inflight_count: config.read_batch.max(1),
            auth: None::<HashMap<String, String>>,
            external_auth: None,
            dynamic_filters: false,
        },
    };
    if let Some(auth) = auth {
        let metrics = metrics.clone();
        settings.set_auth_handler(move |_client_id, username: String, password: String| {
            let auth = auth.clone();
            let metrics = metrics.clone();
            async move {
                // argon2 is slow on purpose: keep it off the connection runtime's workers.
                let device_id = username.clone();
                let ok = tokio::task::spawn_blocking(move || auth.check(&username, &password))
                    .await
                    .unwrap_or(false);
                if !ok {
                    metrics.connections_refused.inc();
                    tracing::debug!(
                        device_id,
                        "connection refused: unknown device or wrong password"
                    );
                }
                ok
            }
        });
    }
    settings
}
