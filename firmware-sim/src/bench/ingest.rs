//! `bench ingest`: QoS 1 ingest throughput of the gateway. A gateway with its
//! spool in a temporary directory runs in this process, and a fleet publishes
//! to it flat out for a fixed time.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::FleetConfig;
use crate::fleet::run_fleet;
use crate::pipeline::{Listen, Pipeline};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Number of devices, one MQTT connection each.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// How long the fleet publishes.
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,
    /// Unacknowledged publishes per connection.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// MQTT QoS (1: every PUBACK waits for the spool flush).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Also run the collector and let the uplink drain concurrently.
    #[arg(long)]
    pub with_collector: bool,
}

pub async fn ingest(args: BenchArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let temp = tempfile::tempdir()?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listen = Listen {
        mqtt: any,
        collector: any,
        admin: any,
    };
    let pipeline = Pipeline::start(temp.path(), listen, args.with_collector).await?;
    let fleet = FleetConfig {
        broker: pipeline.agent.mqtt_addr().to_string(),
        devices: args.devices,
        duration: Some(args.duration.into()),
        rate: 0.0,
        qos: args.qos,
        inflight: args.inflight,
        progress: false,
        ..FleetConfig::default()
    };
    let summary = run_fleet(fleet, shutdown).await?;
    let stats = pipeline.agent.spool().stats();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| devices | qos | inflight | duration | acked | msg/s | spooled |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| {} | {} | {} | {:.1} s | {} | {:.0} | {} |",
        args.devices,
        args.qos,
        args.inflight,
        summary.elapsed.as_secs_f64(),
        summary.acked,
        summary.rate(),
        stats.durable_seq,
    )?;
    if args.with_collector {
        // What the uplink still has to send once the fleet stops.
        let backlog = pipeline.agent.spool().stats().pending;
        let started = std::time::Instant::now();
        let drained = pipeline.drain(Duration::from_secs(120)).await;
        let secs = started.elapsed().as_secs_f64();
        writeln!(
            out,
            "uplink: {} readings still spooled when the fleet stopped, {} in {secs:.1} s ({:.0} readings/s)",
            backlog,
            if drained { "drained" } else { "NOT drained" },
            backlog as f64 / secs.max(0.001),
        )?;
    }
    drop(out);
    pipeline.stop().await?;
    Ok(ExitCode::SUCCESS)
}
