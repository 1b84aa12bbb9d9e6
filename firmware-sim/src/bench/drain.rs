//! `bench drain`: how fast the real `edge-agent` binary catches up with a
//! backlog once the real `cloud-sync` binary comes back after an outage.
//! Load generator, gateway and collector share the machine, so the figures
//! are lower bounds.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio_util::sync::CancellationToken;

use serde::Serialize;

use super::procs::{
    clock_ticks_per_second, cpu_seconds, dir_bytes, free_port, healthz, pending, reset_hwm,
    sibling_binary, spawn_agent, spawn_collector, status_kib, wait_ready,
};
use super::report;
use crate::config::FleetConfig;
use crate::fleet::run_fleet;

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// Readings spooled while the collector is down (rounded up to a multiple of --devices).
    #[arg(long, default_value_t = 1_000_000)]
    pub readings: u64,
    /// Number of devices, one MQTT connection each.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Unacknowledged publishes per connection.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// Give up when the backlog is not drained within this long.
    #[arg(long, default_value = "10m")]
    pub timeout: humantime::Duration,
    /// Size of every SenML payload in bytes (default: the bare record, 20 to 40 bytes).
    #[arg(long)]
    pub payload_bytes: Option<usize>,
    /// Encrypt the spool at rest (a fresh key file, `spool.key_file`).
    #[arg(long)]
    pub encrypt: bool,
}

/// The agent's retry ceiling in this benchmark. The default (30 s) would
/// make the drain time mostly a measure of how long the last backoff slept.
const BENCH_BACKOFF_MAX: &str = "1s";

/// How often RSS and the backlog are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What `bench drain` measured.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    /// Whether the spool was encrypted at rest.
    pub encrypted: bool,
    /// Readings in the backlog when the collector came back.
    pub readings: u64,
    pub devices: usize,
    /// QoS 1 ingest rate while the spool filled (collector down).
    pub ingest_msg_per_s: f64,
    pub drained: bool,
    /// From the collector answering `/healthz` to an empty backlog.
    pub drain_s: f64,
    pub drain_readings_per_s: f64,
    /// When the first batch was stored, after the collector came back; the
    /// agent notices it at its next retry.
    pub first_batch_s: Option<f64>,
    /// The rate from the first stored batch on.
    pub readings_per_s_after_first_batch: Option<f64>,
    /// The agent's peak RSS while the backlog built up, and while it drained.
    pub agent_peak_rss_outage_mib: f64,
    /// The agent's RSS once restarted on the whole backlog, before the
    /// collector returns: what the backlog itself costs in memory.
    pub agent_rss_restarted_mib: f64,
    pub agent_peak_rss_drain_mib: f64,
    pub collector_peak_rss_mib: f64,
    /// CPU seconds during the drain.
    pub agent_cpu_s: f64,
    pub collector_cpu_s: f64,
    /// The spool's files (segments and sled) with the whole backlog in, per reading.
    pub spool_disk_bytes_per_reading: f64,
    /// The stored blocks alone (`spool.bytes` of `/healthz`), per reading.
    pub spool_block_bytes_per_reading: f64,
}

/// `bench drain`: spool `--readings` with the collector down, start the
/// collector, time until the agent's backlog is empty. Runs the release
/// binaries found next to this one as child processes.
pub async fn drain(args: DrainArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let run = measure(args, shutdown).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(report::drain_table(std::slice::from_ref(&run)).as_bytes())?;
    Ok(if run.drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The measurement behind `bench drain`.
pub(super) async fn measure(
    args: DrainArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<DrainRun> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let agent_bin = sibling_binary("edge-agent")?;
    let collector_bin = sibling_binary("cloud-sync")?;
    let ticks = clock_ticks_per_second();
    let temp = tempfile::tempdir()?;
    let token = format!("{:032x}", rand::random::<u128>());
    // Nothing listens there until the collector starts: the outage.
    let collector_addr = free_port()?;
    let config = temp.path().join("edge-agent.toml");
    let mut toml = format!("[uplink]\nbackoff_max = \"{BENCH_BACKOFF_MAX}\"\n");
    if args.encrypt {
        let keys = temp.path().join("spool.keys");
        edge_agent::spool::rotate_key(&keys)?;
        toml.push_str(&format!(
            "[spool]\nkey_file = {:?}\n",
            keys.display().to_string()
        ));
    }
    std::fs::write(&config, toml)?;

    let (mut agent, admin, mqtt) =
        spawn_agent(&agent_bin, temp.path(), &config, collector_addr, &token).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut health = format!("http://{admin}/healthz");
    let sampler = Sampler::start(agent.pid());

    // Outage: the fleet fills the spool.
    let per_device = args.readings.div_ceil(args.devices as u64);
    let fleet = FleetConfig {
        broker: mqtt.to_string(),
        devices: args.devices,
        readings_per_device: Some(per_device),
        rate: 0.0,
        qos: 1,
        inflight: args.inflight,
        progress: false,
        payload_bytes: args.payload_bytes,
        keep_ledger: false,
        ..FleetConfig::default()
    };
    eprintln!(
        "spooling {} readings from {} devices, collector down",
        per_device * args.devices as u64,
        args.devices
    );
    let summary = run_fleet(fleet, shutdown.clone()).await?;
    if shutdown.is_cancelled() {
        bail!("interrupted");
    }
    let backlog = pending(&client, &health).await?;
    if backlog < summary.acked {
        bail!(
            "the agent reports {backlog} pending readings but the fleet had {} acknowledged: \
             did the uplink reach something on {collector_addr}?",
            summary.acked
        );
    }
    let outage = sampler.phase_end(&[agent.pid()]);
    let spool_blocks = healthz(&client, &health).await?["spool"]["bytes"]
        .as_u64()
        .unwrap_or(0);
    let spool_files = dir_bytes(&temp.path().join("spool"));

    // The backlog is on disk, not in memory: an agent restarted on it
    // starts with about the footprint of an empty one.
    agent.terminate(Duration::from_secs(10))?;
    let (restarted, admin, _) =
        spawn_agent(&agent_bin, temp.path(), &config, collector_addr, &token).await?;
    agent = restarted;
    health = format!("http://{admin}/healthz");
    sampler.watch_agent(agent.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reopened = pending(&client, &health).await?;
    if reopened != backlog {
        bail!("the restarted agent reports {reopened} pending readings, not {backlog}");
    }
    let restarted_rss = status_kib(agent.pid(), "VmRSS:").unwrap_or(0);

    // The collector comes back.
    eprintln!("{backlog} readings spooled; starting the collector");
    let mut collector = spawn_collector(
        &collector_bin,
        &temp.path().join("cloud"),
        None,
        collector_addr,
        &token,
        temp.path(),
    )?;
    wait_ready(&client, &mut collector, collector_addr).await?;
    let started = Instant::now();
    sampler.watch_collector(collector.pid());
    let agent_cpu_before = cpu_seconds(agent.pid(), ticks);
    let collector_cpu_before = cpu_seconds(collector.pid(), ticks);
    let limit: Duration = args.timeout.into();
    let mut first_ack = None;
    let mut interval = tokio::time::interval(SAMPLE_EVERY);
    let drained = loop {
        tokio::select! {
            _ = shutdown.cancelled() => bail!("interrupted"),
            _ = interval.tick() => {}
        }
        let left = pending(&client, &health).await?;
        if first_ack.is_none() && left < backlog {
            first_ack = Some(started.elapsed());
        }
        if left == 0 {
            break true;
        }
        if started.elapsed() > limit || collector.exited() {
            break false;
        }
    };
    let drain_secs = started.elapsed().as_secs_f64();
    let agent_cpu = cpu_seconds(agent.pid(), ticks) - agent_cpu_before;
    let collector_cpu = cpu_seconds(collector.pid(), ticks) - collector_cpu_before;
    let during = sampler.phase_end(&[agent.pid(), collector.pid()]);
    sampler.stop();

    agent.terminate(Duration::from_secs(10))?;
    collector.terminate(Duration::from_secs(10))?;

    let mib = |kib: u64| kib as f64 / 1024.0;
    // The agent notices the collector at its next retry (at most
    // BENCH_BACKOFF_MAX later); the rate from the first stored batch on
    // leaves that wait out.
    let after_first = first_ack.map(|d| drain_secs - d.as_secs_f64());
    Ok(DrainRun {
        encrypted: args.encrypt,
        readings: backlog,
        devices: args.devices,
        ingest_msg_per_s: summary.rate(),
        drained,
        drain_s: drain_secs,
        drain_readings_per_s: backlog as f64 / drain_secs.max(0.001),
        first_batch_s: first_ack.map(|d| d.as_secs_f64()),
        readings_per_s_after_first_batch: after_first.map(|s| backlog as f64 / s.max(0.001)),
        agent_peak_rss_outage_mib: mib(outage.agent),
        agent_rss_restarted_mib: mib(restarted_rss),
        agent_peak_rss_drain_mib: mib(during.agent),
        collector_peak_rss_mib: mib(during.collector),
        agent_cpu_s: agent_cpu,
        collector_cpu_s: collector_cpu,
        spool_disk_bytes_per_reading: spool_files as f64 / backlog.max(1) as f64,
        spool_block_bytes_per_reading: spool_blocks as f64 / backlog.max(1) as f64,
    })
}

/// Peak resident memory of the agent and the collector, in KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    agent: u64,
    collector: u64,
}

/// Samples VmRSS every [`SAMPLE_EVERY`] on a thread; phases are cut with
/// [`Sampler::phase_end`], which also resets the kernel's high-water mark.
struct Sampler {
    agent: Arc<AtomicU32>,
    collector: Arc<AtomicU32>,
    peaks: Arc<Mutex<Peaks>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Sampler {
    fn start(agent: u32) -> Sampler {
        let collector = Arc::new(AtomicU32::new(0));
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        reset_hwm(agent);
        let agent = Arc::new(AtomicU32::new(agent));
        let (a, c, p, s) = (
            agent.clone(),
            collector.clone(),
            peaks.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let agent_rss = status_kib(a.load(Ordering::Relaxed), "VmRSS:").unwrap_or(0);
                let collector_rss = match c.load(Ordering::Relaxed) {
                    0 => 0,
                    pid => status_kib(pid, "VmRSS:").unwrap_or(0),
                };
                let mut peaks = p.lock().expect("peaks lock");
                peaks.agent = peaks.agent.max(agent_rss);
                peaks.collector = peaks.collector.max(collector_rss);
                drop(peaks);
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Sampler {
            agent,
            collector,
            peaks,
            stop,
        }
    }

    /// Samples a new agent process (a restart) from now on.
    fn watch_agent(&self, pid: u32) {
        reset_hwm(pid);
        self.agent.store(pid, Ordering::Relaxed);
    }

    fn watch_collector(&self, pid: u32) {
        reset_hwm(pid);
        self.collector.store(pid, Ordering::Relaxed);
    }

    /// The peaks since the last cut: the sampled maximum or the kernel's
    /// VmHWM, whichever is higher (a spike between samples still counts).
    fn phase_end(&self, pids: &[u32]) -> Peaks {
        let mut peaks = std::mem::take(&mut *self.peaks.lock().expect("peaks lock"));
        for &pid in pids {
            let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
            if pid == self.agent.load(Ordering::Relaxed) {
                peaks.agent = peaks.agent.max(hwm);
            } else {
                peaks.collector = peaks.collector.max(hwm);
            }
            reset_hwm(pid);
        }
        peaks
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}
