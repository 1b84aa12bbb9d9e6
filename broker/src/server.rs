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

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use telemetry::Limits;
use tracing::info;

use crate::auth::DeviceRegistry;
use crate::codec::IngestCodec;
use crate::metrics::BrokerMetrics;
use crate::sink::IngestSink;

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
}

/// A running embedded broker. Dropping it stops serving MQTT.
pub struct Broker {
    local_addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    metrics: BrokerMetrics,
}

/// Attempts at finding a free port when `listen` has port 0.
const PORT_ATTEMPTS: usize = 16;

impl Broker {
    /// Starts the router and the MQTT listener; returns once the listener is bound.
    pub fn start(config: BrokerConfig, sink: Arc<dyn IngestSink>) -> Result<Broker, BrokerError> {
        let metrics = BrokerMetrics::default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.max(1))
            .thread_name("mqtt")
            .enable_all()
            .build()
            .map_err(BrokerError::Runtime)?;
        let router_tx = Router::new(0, router_config(&config)).spawn();
        let codec = IngestCodec::new(
            sink,
            config.limits,
            config.durable_timeout,
            metrics.clone(),
            config.devices.is_some(),
        );
        if config.devices.is_none() {
            tracing::warn!("no device file: any client may publish as any device");
        }

        let attempts = if config.listen.port() == 0 {
            PORT_ATTEMPTS
        } else {
            1
        };
        let mut last_error = None;
        for _ in 0..attempts {
            let addr = match pick_addr(config.listen) {
                Ok(addr) => addr,
                Err(source) => {
                    last_error = Some(BrokerError::Bind {
                        addr: config.listen,
                        source,
                    });
                    continue;
                }
            };
            let mut server = Server::new(
                server_settings(&config, addr, &metrics),
                router_tx.clone(),
                codec.clone_template(),
            );
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
                    info!(%addr, "mqtt listening");
                    return Ok(Broker {
                        local_addr: addr,
                        runtime: Some(runtime),
                        metrics,
                    });
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
        runtime.shutdown_background();
        Err(last_error.expect("at least one attempt was made"))
    }

    /// The address the MQTT listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        // segments bound rumqttd's memory to about 2 x 4 MiB.
        max_segment_size: 4 * 1024 * 1024,
        max_segment_count: 2,
        custom_segment: None,
        initialized_filters: Some(vec!["devices/+/telemetry".to_string()]),
        shared_subscriptions_strategy: Default::default(),
    }
}

fn server_settings(
    config: &BrokerConfig,
    listen: SocketAddr,
    metrics: &BrokerMetrics,
) -> ServerSettings {
    let mut settings = ServerSettings {
        name: "mqtt".to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: config.connect_timeout.as_millis().min(u16::MAX as u128) as u16,
            // Room for the topic and headers on top of the payload limit, so an
            // oversized payload reaches our codec and is rejected with a reason.
            max_payload_size: config.limits.max_bytes + 1024,
            max_inflight_count: config.read_batch.max(1),
            auth: None::<HashMap<String, String>>,
            external_auth: None,
            dynamic_filters: false,
        },
    };
    if let Some(registry) = &config.devices {
        let registry = registry.clone();
        let metrics = metrics.clone();
        settings.set_auth_handler(move |_client_id, username: String, password: String| {
            let registry = registry.clone();
            let metrics = metrics.clone();
            async move {
                // argon2 is slow on purpose: keep it off the connection runtime's workers.
                let device_id = username.clone();
                let ok = tokio::task::spawn_blocking(move || registry.verify(&username, &password))
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
