//! edge-agent: the gateway daemon. Devices publish to the embedded broker;
//! every accepted reading goes into the sled spool before its PUBACK; the
//! uplink batch-syncs the spool to the cloud collector.
//!
//! ```text
//! devices ─MQTT─▶ broker (IngestCodec) ─submit─▶ spool writer ─flush─▶ PUBACK released
//!                                                     │
//!                                     uplink ◀─ read ─┘ ─POST /v1/batches─▶ collector
//! ```
//!
//! **Architecture Invariant:** the agent links neither the collector nor a
//! database client; it reaches the cloud only over HTTP.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod offline;
pub mod spool;
pub mod status;
pub mod uplink;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, FileConfig};

use crate::metrics::{SpoolMetrics, UplinkMetrics};
use crate::spool::Spool;
use crate::uplink::{Uplink, UplinkState};

/// A started agent: broker listening, spool open, uplink and admin running.
pub struct Agent {
    broker: broker::Broker,
    spool: Spool,
    admin_addr: SocketAddr,
    tasks: TaskTracker,
    /// Cancels the uplink and the admin server.
    stop: CancellationToken,
}

impl Agent {
    /// Opens the spool, starts the broker, the uplink and the admin server.
    pub async fn start(config: Config) -> anyhow::Result<Agent> {
        let spool_metrics = SpoolMetrics::default();
        let uplink_metrics = UplinkMetrics::default();
        let dir = config.spool_dir.clone();
        let options = config.spool.clone();
        let metrics = spool_metrics.clone();
        let (spool, _quarantine) = tokio::task::spawn_blocking(move || {
            spool::open_or_quarantine(&dir, &options, &metrics)
        })
        .await
        .context("spool open panicked")?
        .with_context(|| format!("cannot open the spool at {}", config.spool_dir.display()))?;

        let broker = broker::Broker::start(config.mqtt.clone(), Arc::new(spool.clone()))
            .context("cannot start the MQTT broker")?;
        let registry = metrics::registry(&spool_metrics, &uplink_metrics, broker.metrics());

        let admin = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| {
                format!("cannot listen for the admin API on {}", config.admin_listen)
            })?;
        let admin_addr = admin.local_addr()?;

        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let uplink_state = Arc::new(UplinkState::default());
        let uplink = Uplink {
            gateway_id: config.gateway_id.clone(),
            spool: spool.clone(),
            config: config.uplink.clone(),
            metrics: uplink_metrics,
            state: uplink_state.clone(),
        };
        tasks.spawn(uplink.run(stop.child_token()));

        let app = admin::router(admin::AdminState {
            broker: broker.metrics().clone(),
            gateway_id: config.gateway_id.clone(),
            spool: spool.clone(),
            uplink: uplink_state,
            registry: Arc::new(registry),
            mqtt_addr: broker.local_addr(),
        });
        let admin_stop = stop.child_token();
        tasks.spawn(async move {
            let serve =
                axum::serve(admin, app).with_graceful_shutdown(admin_stop.cancelled_owned());
            if let Err(err) = serve.await {
                warn!(error = %err, "admin server stopped");
            }
        });
        tasks.close();
        info!(
            gateway_id = config.gateway_id,
            spool_id = spool.spool_id(),
            mqtt = %broker.local_addr(),
            mqtt_tls = ?broker.tls_addr(),
            admin = %admin_addr,
            uplink = config.uplink.url,
            uplink_client_cert = config.uplink.client_identity.is_some(),
            "edge-agent started"
        );
        Ok(Agent {
            broker,
            spool,
            admin_addr,
            tasks,
            stop,
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.broker.local_addr()
    }

    /// The MQTT-over-TLS address, when `[mqtt.tls]` is configured.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.broker.tls_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Runs until `shutdown`, then stops in order: MQTT first (no new
    /// publishes), then the spool writer drains its queue and flushes, then
    /// the uplink and admin server stop. Unsent readings stay spooled.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        shutdown.cancelled().await;
        self.shutdown().await
    }

    /// Stops the agent now (see [`Agent::run`]).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        info!("edge-agent stopping");
        self.broker.shutdown();
        self.stop.cancel();
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || spool.close())
            .await
            .context("spool close panicked")?
            .context("cannot flush the spool")?;
        self.tasks.wait().await;
        info!("edge-agent stopped");
        Ok(())
    }
}

/// The wall clock in milliseconds since the epoch: the time base of
/// `received_at`, linger deadlines, expiry and the status page.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the agent and runs it until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Agent::start(config).await?.run(shutdown).await
}
