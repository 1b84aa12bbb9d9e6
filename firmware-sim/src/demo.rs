//! `firmware-sim demo`: the whole pipeline in one command. A collector, a
//! gateway and a fleet of simulated devices run until Ctrl-C; then the fleet
//! stops, the gateway uploads what is left, and the ledger is verified.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::FleetConfig;
use crate::fleet::run_fleet;
use crate::pipeline::{Listen, Pipeline};
use crate::verify::verify;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of simulated devices.
    #[arg(long, default_value_t = 50)]
    pub devices: usize,
    /// Readings per second per device.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// MQTT listen address of the gateway (1883 is left to a broker already running).
    #[arg(long, default_value = "127.0.0.1:1884")]
    pub mqtt_listen: std::net::SocketAddr,
    /// HTTP listen address of the collector.
    #[arg(long, default_value = "127.0.0.1:8480")]
    pub collector_listen: std::net::SocketAddr,
    /// Listen address of the gateway's /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8481")]
    pub admin_listen: std::net::SocketAddr,
    /// Keep the spool and the store here (default: a temporary directory, removed at exit).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

pub async fn demo(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let listen = Listen {
        mqtt: args.mqtt_listen,
        collector: args.collector_listen,
        admin: args.admin_listen,
    };
    let pipeline = Pipeline::start(&data_dir, listen, true).await?;
    let collector = format!(
        "http://{}",
        pipeline.collector_addr.expect("demo runs a collector")
    );
    let admin = pipeline.agent.admin_addr();
    println!(
        "edge telemetry demo: {} devices at {}/s each",
        args.devices, args.rate
    );
    println!("  dashboard            {collector}/");
    println!("  devices (query API)  {collector}/v1/devices");
    println!("  one device's points  {collector}/v1/devices/sim-00000/points?name=temperature");
    println!("  gateways             {collector}/v1/gateways");
    println!("  gateway health       http://{admin}/healthz");
    println!("  gateway metrics      http://{admin}/metrics");
    println!("  MQTT                 {}", pipeline.agent.mqtt_addr());
    println!("  data                 {}", data_dir.display());
    println!("Ctrl-C stops the fleet, uploads what is left and verifies delivery.");

    let fleet = FleetConfig {
        broker: pipeline.agent.mqtt_addr().to_string(),
        devices: args.devices,
        rate: args.rate,
        duration: args.duration.map(Into::into),
        progress: !args.no_progress,
        ..FleetConfig::default()
    };
    let summary = run_fleet(fleet, shutdown).await;
    let outcome = match summary {
        Ok(summary) => {
            let mut out = std::io::stdout().lock();
            summary.print_table(&mut out)?;
            drop(out);
            let drained = pipeline.drain(Duration::from_secs(15)).await;
            if !drained {
                println!("the gateway did not upload everything within 15 s");
            }
            let report = verify(&summary.ledger, &collector).await?;
            report.print(&mut std::io::stdout().lock())?;
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(err) => Err(err),
    };
    pipeline.stop().await?;
    std::io::stdout().flush()?;
    outcome
}
