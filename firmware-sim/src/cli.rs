//! The command line: clap definitions (their doc comments are the help text)
//! and what each subcommand does. New subcommands (such as a `demo` that runs
//! the whole pipeline) go into [`Command`] and [`run`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::FleetConfig;
use crate::fleet::run_fleet;
use crate::ledger::Ledger;
use crate::verify::{verify_within, VerifyReport};

/// Simulated device fleets over MQTT, and an end-to-end check that every
/// acknowledged reading reached the collector exactly once.
#[derive(Debug, Parser)]
#[command(name = "firmware-sim", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a fleet of virtual devices against an MQTT broker.
    Run(RunArgs),
    /// Check a saved ledger against the collector.
    Verify(VerifyArgs),
    /// Run collector, gateway and a simulated fleet in one process until Ctrl-C.
    Demo(crate::demo::DemoArgs),
    /// Measure the gateway and the collector: ingest, drain, side by side with Mosquitto,
    /// end-to-end latency, the collector alone, or the whole suite.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Devices publish flat out to an in-process gateway; prints acknowledged msg/s.
    Ingest(crate::bench::BenchArgs),
    /// Spool readings with the collector down, start it, time the catch-up (real binaries).
    Drain(crate::bench::DrainArgs),
    /// The real edge-agent against Mosquitto set up as a store-and-forward buffer, one load generator.
    Compare(crate::bench::CompareArgs),
    /// Publish-to-queryable latency under a steady fleet load (real edge-agent and cloud-sync).
    Latency(crate::bench::LatencyArgs),
    /// The real cloud-sync alone: points/s stored and a day's aggregate query, sled and PostgreSQL.
    Collector(crate::bench::CollectorArgs),
    /// Forwarding to HTTP against Mosquitto + a Node-RED flow: delivered/s and loss while the receiver is down.
    Forward(crate::bench::ForwardArgs),
    /// Every benchmark in turn; writes Markdown and JSON to bench/results/.
    Suite(crate::bench::SuiteArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// MQTT broker address, host:port.
    #[arg(long, env = "FIRMWARE_SIM_BROKER", default_value_t = FleetConfig::default().broker)]
    pub broker: String,
    /// Number of virtual devices, one connection each.
    #[arg(long, default_value_t = FleetConfig::default().devices)]
    pub devices: usize,
    /// Device ids are PREFIX followed by a five-digit index.
    #[arg(long, value_name = "PREFIX", default_value_t = FleetConfig::default().device_prefix)]
    pub prefix: String,
    /// Readings per second per device; 0 publishes as fast as the broker acknowledges.
    #[arg(long, default_value_t = FleetConfig::default().rate)]
    pub rate: f64,
    /// Stop after this long, e.g. 30s or 5m (default: when the readings are done, or Ctrl-C).
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// Stop each device after N acknowledged readings.
    #[arg(long, value_name = "N")]
    pub readings: Option<u64>,
    /// MQTT QoS of every publish.
    #[arg(long, default_value_t = FleetConfig::default().qos,
          value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Unacknowledged publishes each connection may have in flight.
    #[arg(long, default_value_t = FleetConfig::default().inflight,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    /// Time allowed to connect to the broker (whole seconds).
    #[arg(long, default_value_t = FleetConfig::default().connect_timeout.into())]
    pub connect_timeout: humantime::Duration,
    /// Seed of the sensor models: the same seed gives the same values.
    #[arg(long, default_value_t = FleetConfig::default().seed)]
    pub seed: u64,
    /// Pad every payload to N bytes with a SenML base name (default: the bare record).
    #[arg(long, value_name = "N")]
    pub payload_bytes: Option<usize>,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Write every acknowledged reading to FILE (JSON lines) for a later `verify`.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// After the run, check delivery against the collector at URL; exit non-zero if incomplete.
    #[arg(long, value_name = "URL")]
    pub verify: Option<String>,
    /// How long to keep asking the collector before judging (with --verify).
    #[arg(long, default_value = "30s")]
    pub verify_wait: humantime::Duration,
}

impl RunArgs {
    /// The fleet these arguments describe.
    pub fn fleet_config(&self) -> FleetConfig {
        FleetConfig {
            broker: self.broker.clone(),
            devices: self.devices,
            device_prefix: self.prefix.clone(),
            readings_per_device: self.readings,
            duration: self.duration.map(Into::into),
            rate: self.rate,
            qos: self.qos,
            inflight: self.inflight,
            connect_timeout: self.connect_timeout.into(),
            progress: !self.no_progress,
            seed: self.seed,
            payload_bytes: self.payload_bytes,
            ..FleetConfig::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Ledger written by `run --ledger`.
    #[arg(long, value_name = "FILE")]
    pub ledger: PathBuf,
    /// Base URL of the collector, e.g. http://127.0.0.1:8480.
    #[arg(long, value_name = "URL")]
    pub collector: String,
    /// Keep asking until every reading is there or this much time has passed.
    #[arg(long, default_value = "0s")]
    pub wait: humantime::Duration,
}

/// Runs a parsed command line. `Ok(FAILURE)` means the command ran and
/// found a problem it already reported (an incomplete delivery); `Err` means
/// it could not run.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_command(args, shutdown).await,
        Command::Verify(args) => verify_command(args, shutdown).await,
        Command::Demo(args) => crate::demo::demo(args, shutdown).await,
        Command::Bench(BenchCommand::Ingest(args)) => crate::bench::ingest(args, shutdown).await,
        Command::Bench(BenchCommand::Drain(args)) => crate::bench::drain(args, shutdown).await,
        Command::Bench(BenchCommand::Compare(args)) => crate::bench::compare(args, shutdown).await,
        Command::Bench(BenchCommand::Latency(args)) => crate::bench::latency(args, shutdown).await,
        Command::Bench(BenchCommand::Collector(args)) => {
            crate::bench::collector(args, shutdown).await
        }
        Command::Bench(BenchCommand::Forward(args)) => crate::bench::forward(args, shutdown).await,
        Command::Bench(BenchCommand::Suite(args)) => crate::bench::suite(args, shutdown).await,
    }
}

async fn run_command(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let config = args.fleet_config();
    config.validate().context("invalid fleet config")?;
    if config.readings_per_device.is_none() && config.duration.is_none() {
        eprintln!("running until Ctrl-C (set --readings or --duration to stop by itself)");
    }
    let summary = run_fleet(config, shutdown.clone()).await?;
    let mut out = std::io::stdout().lock();
    summary.print_table(&mut out)?;
    if let Some(path) = &args.ledger {
        summary.ledger.save(path)?;
        writeln!(
            out,
            "ledger: {} readings written to {}",
            summary.ledger.len(),
            path.display()
        )?;
    }
    drop(out);
    let Some(collector) = &args.verify else {
        return Ok(ExitCode::SUCCESS);
    };
    if shutdown.is_cancelled() {
        anyhow::bail!("interrupted, delivery not verified");
    }
    let report = verify_within(
        &summary.ledger,
        collector,
        args.verify_wait.into(),
        &shutdown,
    )
    .await
    .with_context(|| format!("verifying against {collector}"))?;
    print_report(&report)
}

async fn verify_command(args: VerifyArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::load(&args.ledger)?;
    let report = verify_within(&ledger, &args.collector, args.wait.into(), &shutdown)
        .await
        .with_context(|| format!("verifying against {}", args.collector))?;
    print_report(&report)
}

fn print_report(report: &VerifyReport) -> anyhow::Result<ExitCode> {
    report.print(&mut std::io::stdout().lock())?;
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_map_onto_the_fleet_config() {
        let cli = Cli::try_parse_from([
            "firmware-sim",
            "run",
            "--broker",
            "10.0.0.1:1883",
            "--devices",
            "7",
            "--rate",
            "0",
            "--duration",
            "1m 30s",
            "--readings",
            "20",
            "--qos",
            "0",
            "--inflight",
            "1000",
            "--no-progress",
            "--seed",
            "9",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        let config = args.fleet_config();
        assert_eq!(config.broker, "10.0.0.1:1883");
        assert_eq!(config.devices, 7);
        assert_eq!(config.rate, 0.0);
        assert_eq!(config.duration, Some(Duration::from_secs(90)));
        assert_eq!(config.readings_per_device, Some(20));
        assert_eq!((config.qos, config.inflight, config.seed), (0, 1000, 9));
        assert!(!config.progress);
    }

    #[test]
    fn run_defaults_are_the_fleet_defaults() {
        let Command::Run(args) = Cli::try_parse_from(["firmware-sim", "run"])
            .unwrap()
            .command
        else {
            panic!("expected run");
        };
        let config = args.fleet_config();
        assert_eq!(
            config,
            FleetConfig {
                progress: true,
                ..FleetConfig::default()
            }
        );
        assert_eq!(Duration::from(args.verify_wait), Duration::from_secs(30));
    }

    #[test]
    fn qos_2_is_refused() {
        assert!(Cli::try_parse_from(["firmware-sim", "run", "--qos", "2"]).is_err());
    }
}
