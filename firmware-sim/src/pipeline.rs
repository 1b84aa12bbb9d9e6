//! Runs a collector and a gateway in this process, for the one-command demo
//! and the ingest benchmark. Everything listens on 127.0.0.1.
//!
//! This is the only place `firmware-sim` links `edge-agent` and `cloud-sync`
//! as libraries; its fleets still talk to them over MQTT and HTTP only.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use edge_agent::{Agent, FileConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Addresses of an in-process pipeline.
pub struct Listen {
    pub mqtt: SocketAddr,
    pub collector: SocketAddr,
    pub admin: SocketAddr,
}

/// A collector and a gateway running in this process.
pub struct Pipeline {
    pub agent: Agent,
    pub collector_addr: Option<SocketAddr>,
    collector: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl Pipeline {
    /// Starts the collector (unless `uplink_only_to` names another address)
    /// and the gateway, with their data under `data_dir`.
    pub async fn start(
        data_dir: &Path,
        listen: Listen,
        with_collector: bool,
    ) -> anyhow::Result<Pipeline> {
        let token = hex_token();
        let (collector_addr, collector) = if with_collector {
            let mut config = cloud_sync::Config::new(data_dir.join("cloud"), vec![token.clone()]);
            config.listen = listen.collector;
            let server = cloud_sync::Server::bind(config)
                .await
                .context("cannot start the collector")?;
            let addr = server.local_addr();
            let stop = CancellationToken::new();
            let task = tokio::spawn(server.run(stop.clone()));
            (Some(addr), Some((stop, task)))
        } else {
            (None, None)
        };

        let mut file = FileConfig::default();
        file.gateway.id = Some("demo-gateway".into());
        file.mqtt.listen = Some(listen.mqtt.to_string());
        file.admin.listen = Some(listen.admin.to_string());
        file.spool.dir = Some(data_dir.join("spool"));
        // Without a collector the uplink retries against a closed port, and
        // every reading stays spooled: a pure ingest measurement.
        let uplink = collector_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9)));
        file.uplink.url = Some(format!("http://{uplink}"));
        file.uplink.token = Some(token);
        let agent = Agent::start(file.validate()?).await?;
        Ok(Pipeline {
            agent,
            collector_addr,
            collector,
        })
    }

    /// Waits until the gateway has uploaded everything, or `limit` passed.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.agent.spool().stats().pending > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Stops the gateway (flushing its spool), then the collector.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.agent.shutdown().await?;
        if let Some((stop, task)) = self.collector {
            stop.cancel();
            task.await.context("collector task panicked")??;
        }
        Ok(())
    }
}

fn hex_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
