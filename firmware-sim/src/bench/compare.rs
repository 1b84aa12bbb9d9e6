//! `bench compare`: the gateway against Mosquitto, side by side, with one
//! load generator. Each system under test runs as a child process on its
//! own free port with its data in a fresh directory; the same fleet (this
//! process) publishes the same sized SenML readings to each in turn; the
//! bench reads the system's CPU time and peak memory from `/proc`.
//!
//! ```text
//!  firmware-sim (fleet, load generator) ──MQTT 127.0.0.1──▶ edge-agent       (spool: sled, durable before PUBACK)
//!                                                      └──▶ mosquitto ×3     (default autosave | save on every change | keeps nothing)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::mosquitto::{Keep, Mosquitto};
use super::procs::{
    clock_ticks_per_second, cpu_seconds, dir_bytes, free_port, healthz, own_cpu_seconds,
    sibling_binary, spawn_agent, status_kib, Proc,
};
use super::report;
use crate::config::FleetConfig;
use crate::fleet::run_fleet;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Our gateway: the release `edge-agent`, PUBACK after the spool flush.
    EdgeAgent,
    /// Mosquitto, persistence with the default autosave, offline consumer.
    MosquittoDefault,
    /// Mosquitto, `autosave_on_changes true` + `autosave_interval 1`, offline consumer.
    MosquittoEveryChange,
    /// Mosquitto keeping nothing: no persistence, no consumer.
    MosquittoPlain,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::EdgeAgent,
        Target::MosquittoDefault,
        Target::MosquittoEveryChange,
        Target::MosquittoPlain,
    ];

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Target::EdgeAgent => "edge-agent (durable before PUBACK)",
            Target::MosquittoDefault => "Mosquitto, queue for offline consumer, default autosave",
            Target::MosquittoEveryChange => {
                "Mosquitto, queue for offline consumer, autosave on every change"
            }
            Target::MosquittoPlain => "Mosquitto keeping nothing (ceiling)",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Fleet sizes to run, comma-separated; one MQTT connection per device.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000])]
    pub devices: Vec<usize>,
    /// QoS levels to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 0],
          value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: Vec<u8>,
    /// Systems under test, comma-separated (default: all four).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub targets: Vec<Target>,
    /// Readings per second per device; 0 is flat out (as fast as acknowledged).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long the fleet publishes to each system.
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,
    /// Left out of msg/s at the start of each run (connects).
    #[arg(long, default_value = "2s")]
    pub warmup: humantime::Duration,
    /// Unacknowledged QoS 1 publishes per connection.
    #[arg(long, default_value_t = 10)]
    pub inflight: u16,
    /// Size of every SenML payload, in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Where spools and Mosquitto databases go (default: the system's
    /// temporary directory); put it on the disk you mean to measure.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Also write the runs as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl CompareArgs {
    pub(super) fn targets(&self) -> Vec<Target> {
        if self.targets.is_empty() {
            Target::ALL.to_vec()
        } else {
            self.targets.clone()
        }
    }
}

/// One fleet against one system: what the report and the JSON show.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRun {
    pub target: Target,
    pub devices: usize,
    pub qos: u8,
    /// Readings per second per device asked for; 0 is flat out.
    pub rate: f64,
    /// Acknowledged readings per second after the warm-up (whole run if
    /// it stopped early).
    pub msg_per_s: f64,
    /// Acknowledged over the whole run (PUBACK for QoS 1, written for QoS 0).
    pub acked: u64,
    /// Written at least once; `sent - acked` were still unacknowledged at the end.
    pub sent: u64,
    pub connection_errors: u64,
    /// Written-to-PUBACK time, QoS 1 only.
    pub puback_p50_ms: Option<f64>,
    pub puback_p99_ms: Option<f64>,
    /// Resident memory of the system under test before the fleet connects.
    pub idle_rss_mib: f64,
    /// Its peak resident memory (VmHWM) up to the end of the run.
    pub peak_rss_mib: f64,
    /// CPU seconds (user + system) of the system under test during the fleet run.
    pub system_cpu_s: f64,
    /// CPU seconds of the load generator (this process) during the fleet run.
    pub loadgen_cpu_s: f64,
    /// Publishes the system had read about a second after the fleet
    /// stopped: the gateway's accepted publishes, Mosquitto's
    /// `$SYS/broker/publish/messages/received`. For QoS 0 this is what it
    /// took in; what the fleet "wrote" may still sit in socket buffers.
    pub received: Option<u64>,
    /// Readings the system says it holds after the run: the gateway's
    /// accepted publishes, Mosquitto's store growth (from `$SYS`, ± its own
    /// retained messages); none for a broker that keeps nothing.
    pub kept: Option<u64>,
    /// Bytes of its data directory after it stopped (sled spool files;
    /// `mosquitto.db`, saved at shutdown).
    pub disk_bytes: Option<u64>,
    pub elapsed_s: f64,
}

impl IngestRun {
    /// CPU microseconds of the system under test per acknowledged reading.
    pub fn system_cpu_us_per_msg(&self) -> Option<f64> {
        (self.acked > 0).then(|| self.system_cpu_s * 1e6 / self.acked as f64)
    }

    /// CPU microseconds of the load generator per acknowledged reading.
    pub fn loadgen_cpu_us_per_msg(&self) -> Option<f64> {
        (self.acked > 0).then(|| self.loadgen_cpu_s * 1e6 / self.acked as f64)
    }

    /// Publishes the system took in per second of the fleet run.
    pub fn received_per_s(&self) -> Option<f64> {
        self.received
            .filter(|_| self.elapsed_s > 0.0)
            .map(|r| r as f64 / self.elapsed_s)
    }

    /// Bytes on disk per reading kept.
    pub fn disk_bytes_per_reading(&self) -> Option<f64> {
        match (self.disk_bytes, self.kept) {
            (Some(bytes), Some(kept)) if kept > 0 && bytes > 0 => Some(bytes as f64 / kept as f64),
            _ => None,
        }
    }
}

/// What every run of a comparison shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    pub devices: usize,
    pub qos: u8,
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub inflight: u16,
    pub payload_bytes: usize,
}

/// `bench compare`: every target × fleet size × QoS, printed as Markdown.
pub async fn compare(args: CompareArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let mut runs = Vec::new();
    for &qos in &args.qos {
        for &devices in &args.devices {
            let load = Load {
                devices,
                qos,
                rate: args.rate,
                duration: args.duration.into(),
                warmup: args.warmup.into(),
                inflight: args.inflight,
                payload_bytes: args.payload_bytes,
            };
            runs.extend(
                run_targets(&args.targets(), load, args.work_dir.as_deref(), &shutdown).await?,
            );
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(report::ingest_tables(&runs).as_bytes())?;
    drop(out);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&runs)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `load` against each target in turn.
pub(super) async fn run_targets(
    targets: &[Target],
    load: Load,
    work_dir: Option<&Path>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<IngestRun>> {
    let agent_bin = if targets.contains(&Target::EdgeAgent) {
        Some(sibling_binary("edge-agent")?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for &target in targets {
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        eprintln!(
            "{}: {} devices, QoS {}, {}",
            target.label(),
            load.devices,
            load.qos,
            if load.rate > 0.0 {
                format!("{} readings/s each", load.rate)
            } else {
                "flat out".to_owned()
            }
        );
        let run = run_one(target, load, agent_bin.as_deref(), work_dir, shutdown)
            .await
            .with_context(|| format!("{}, {} devices", target.label(), load.devices))?;
        eprintln!(
            "  {:.0} msg/s, p99 {} ms, peak RSS {:.0} MiB",
            run.msg_per_s,
            run.puback_p99_ms.map_or("-".into(), |p| format!("{p:.1}")),
            run.peak_rss_mib
        );
        runs.push(run);
    }
    Ok(runs)
}

/// A running system under test.
enum System {
    Agent {
        proc: Proc,
        admin: std::net::SocketAddr,
        spool: PathBuf,
    },
    Mosquitto(Mosquitto),
}

impl System {
    fn pid(&self) -> u32 {
        match self {
            System::Agent { proc, .. } => proc.pid(),
            System::Mosquitto(m) => m.proc.pid(),
        }
    }
}

async fn run_one(
    target: Target,
    load: Load,
    agent_bin: Option<&Path>,
    work_dir: Option<&Path>,
    shutdown: &CancellationToken,
) -> anyhow::Result<IngestRun> {
    let temp = match work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::tempdir_in(dir)?
        }
        None => tempfile::tempdir()?,
    };
    let ticks = clock_ticks_per_second();
    let (system, broker) = match target {
        Target::EdgeAgent => {
            let bin = agent_bin.context("edge-agent binary")?;
            let config = temp.path().join("edge-agent.toml");
            std::fs::write(&config, "# defaults; the collector is down on purpose\n")?;
            // Nothing listens there: the uplink retries in the background.
            let collector = free_port()?;
            let (proc, admin, mqtt) =
                spawn_agent(bin, temp.path(), &config, collector, "bench-token").await?;
            let spool = temp.path().join("spool");
            (System::Agent { proc, admin, spool }, mqtt)
        }
        Target::MosquittoDefault | Target::MosquittoEveryChange | Target::MosquittoPlain => {
            let keep = match target {
                Target::MosquittoDefault => Keep::DefaultAutosave,
                Target::MosquittoEveryChange => Keep::EveryChange,
                _ => Keep::Nothing,
            };
            let mosquitto = Mosquitto::start(&temp.path().join("mosquitto"), keep).await?;
            let addr = mosquitto.addr;
            (System::Mosquitto(mosquitto), addr)
        }
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let stored_before = match &system {
        System::Mosquitto(m) if target != Target::MosquittoPlain => {
            Some(m.stored_messages().await?)
        }
        _ => None,
    };
    let pid = system.pid();
    let idle_rss = status_kib(pid, "VmRSS:").unwrap_or(0);
    let (system_cpu_before, own_cpu_before) = (cpu_seconds(pid, ticks), own_cpu_seconds(ticks));

    let fleet = FleetConfig {
        broker: broker.to_string(),
        devices: load.devices,
        duration: Some(load.duration),
        warmup: load.warmup,
        rate: load.rate,
        qos: load.qos,
        inflight: load.inflight,
        payload_bytes: Some(load.payload_bytes),
        keep_ledger: false,
        record_latency: true,
        progress: false,
        ..FleetConfig::default()
    };
    let mut summary = run_fleet(fleet, shutdown.clone()).await?;
    if shutdown.is_cancelled() {
        bail!("interrupted");
    }
    let system_cpu = cpu_seconds(pid, ticks) - system_cpu_before;
    let loadgen_cpu = own_cpu_seconds(ticks) - own_cpu_before;
    let peak_rss = status_kib(pid, "VmHWM:").unwrap_or(0);
    // Mosquitto's `$SYS` counters are refreshed every second; the gateway
    // gets the same second to read what is in its sockets.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (received, kept, disk_bytes) = match system {
        System::Agent {
            mut proc,
            admin,
            spool,
        } => {
            let health = healthz(&client, &format!("http://{admin}/healthz")).await?;
            let accepted = health["mqtt"]["accepted"].as_u64();
            proc.terminate(Duration::from_secs(30))?;
            (accepted, accepted, Some(dir_bytes(&spool)))
        }
        System::Mosquitto(mosquitto) => {
            let received = mosquitto.received_publishes().await?;
            let kept = match stored_before {
                Some(before) => Some(mosquitto.stored_messages().await?.saturating_sub(before)),
                None => None,
            };
            let db = mosquitto.stop()?;
            (Some(received), kept, (db > 0).then_some(db))
        }
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(IngestRun {
        target,
        devices: load.devices,
        qos: load.qos,
        rate: load.rate,
        msg_per_s: summary.steady.map_or_else(|| summary.rate(), |s| s.rate()),
        acked: summary.acked,
        sent: summary.sent,
        connection_errors: summary.errors,
        puback_p50_ms: summary.latency.percentile(50.0).map(ms),
        puback_p99_ms: summary.latency.percentile(99.0).map(ms),
        idle_rss_mib: mib(idle_rss),
        peak_rss_mib: mib(peak_rss),
        system_cpu_s: system_cpu,
        loadgen_cpu_s: loadgen_cpu,
        received,
        kept,
        disk_bytes,
        elapsed_s: summary.elapsed.as_secs_f64(),
    })
}
