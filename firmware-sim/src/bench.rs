//! Benchmarks. `bench ingest`: QoS 1 ingest throughput of the gateway; a
//! gateway with its spool in a temporary directory runs in this process, and
//! a fleet publishes to it flat out for a fixed time. `bench drain`: how fast
//! the real `edge-agent` binary catches up with a backlog once the real
//! `cloud-sync` binary comes back after an outage. Load generator, gateway
//! and collector share the machine, so the figures are lower bounds.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
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

#[derive(Debug, Args)]
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
}

/// The agent's retry ceiling in this benchmark. The default (30 s) would
/// make the drain time mostly a measure of how long the last backoff slept.
const BENCH_BACKOFF_MAX: &str = "1s";

/// How often RSS and the backlog are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// `bench drain`: spool `--readings` with the collector down, start the
/// collector, time until the agent's backlog is empty. Runs the release
/// binaries found next to this one as child processes.
pub async fn drain(args: DrainArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
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
    std::fs::write(
        &config,
        format!("[uplink]\nbackoff_max = \"{BENCH_BACKOFF_MAX}\"\n"),
    )?;

    let (mut agent, admin, mqtt) =
        spawn_agent(&agent_bin, temp.path(), &config, collector_addr, &token).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let health = format!("http://{admin}/healthz");
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

    // The collector comes back.
    eprintln!("{backlog} readings spooled; starting the collector");
    let mut collector = spawn_collector(
        &collector_bin,
        &temp.path().join("cloud"),
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
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| readings | ingest msg/s (outage) | drain s | drain readings/s | agent peak RSS outage MiB | agent peak RSS drain MiB | collector peak RSS MiB | agent CPU s (drain) | collector CPU s (drain) |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| {backlog} | {:.0} | {drain_secs:.1}{} | {:.0} | {:.0} | {:.0} | {:.0} | {agent_cpu:.1} | {collector_cpu:.1} |",
        summary.rate(),
        if drained { "" } else { " (NOT drained)" },
        backlog as f64 / drain_secs.max(0.001),
        mib(outage.agent),
        mib(during.agent),
        mib(during.collector),
    )?;
    // The agent notices the collector at its next retry (at most
    // BENCH_BACKOFF_MAX later); the rate from the first stored batch on
    // leaves that wait out.
    let after_first = first_ack.map(|d| drain_secs - d.as_secs_f64());
    writeln!(
        out,
        "drain is timed from the collector answering /healthz; the first batch was stored after {} \
         ({} readings/s from then on); uplink.backoff_max = {BENCH_BACKOFF_MAX}; {} cores",
        first_ack.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        after_first.map_or("-".into(), |s| format!("{:.0}", backlog as f64 / s.max(0.001))),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )?;
    drop(out);
    Ok(if drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A release binary next to the running one.
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build it first: cargo build --release -p edge-agent -p cloud-sync -p firmware-sim",
            path.display()
        );
    }
    Ok(path)
}

/// A port nobody listens on right now (the collector takes it later).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A child process that is sent SIGTERM (then SIGKILL) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits up to `grace` for a clean exit.
    fn terminate(&mut self, grace: Duration) -> anyhow::Result<()> {
        if self.exited() {
            bail!("{} exited early; see {}", self.name, self.log_tail());
        }
        // libc is not a dependency; kill(1) is everywhere this runs.
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("{} stopped with {status}; {}", self.name, self.log_tail());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not stop within {grace:?} of SIGTERM", self.name)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        format!("last log lines:\n{tail}")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.terminate(Duration::from_secs(5));
        }
    }
}

/// Starts `edge-agent run` on free ports with the uplink pointing at
/// `collector`; returns it with its admin and MQTT addresses.
async fn spawn_agent(
    bin: &Path,
    dir: &Path,
    config: &Path,
    collector: SocketAddr,
    token: &str,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr)> {
    let log = dir.join("edge-agent.stderr");
    let mut child = Command::new(bin)
        .args([
            "run",
            "--log-format",
            "json",
            "--gateway-id",
            "bench-gateway",
        ])
        .arg("--config")
        .arg(config)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--uplink-url", &format!("http://{collector}")])
        .args(["--uplink-token", token])
        .env("RUST_LOG", "info,rumqttd=off")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("agent stdout")?;
    let agent = Proc {
        name: "edge-agent",
        child,
        log,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &event["fields"];
            if fields["message"] == "edge-agent started" {
                let addr = |key: &str| fields[key].as_str().and_then(|s| s.parse().ok());
                let _ = tx.send((addr("admin"), addr("mqtt")));
                break;
            }
        }
        // Keep reading so the agent never blocks on a full pipe.
        for _ in lines {}
    });
    let started =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30))).await?;
    match started {
        Ok((Some(admin), Some(mqtt))) => Ok((agent, admin, mqtt)),
        Ok(_) => bail!("cannot parse the addresses in the agent's start line"),
        Err(_) => bail!("edge-agent did not start; {}", agent.log_tail()),
    }
}

fn spawn_collector(
    bin: &Path,
    data_dir: &Path,
    listen: SocketAddr,
    token: &str,
    log_dir: &Path,
) -> anyhow::Result<Proc> {
    let log = log_dir.join("cloud-sync.log");
    let file = std::fs::File::create(&log)?;
    let child = Command::new(bin)
        .args(["serve", "--listen", &listen.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--token", token])
        .env("RUST_LOG", "warn")
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Proc {
        name: "cloud-sync",
        child,
        log,
    })
}

/// Waits until the collector answers `/healthz`.
async fn wait_ready(
    client: &reqwest::Client,
    collector: &mut Proc,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let url = format!("http://{addr}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if collector.exited() {
            bail!("cloud-sync exited at start; {}", collector.log_tail());
        }
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("cloud-sync did not answer on {addr} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The agent's `spool.pending` from `/healthz`.
async fn pending(client: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let body = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .text()
        .await?;
    let health: serde_json::Value = serde_json::from_str(&body)?;
    health["spool"]["pending"]
        .as_u64()
        .with_context(|| format!("no spool.pending in {body}"))
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
    collector: Arc<AtomicU32>,
    peaks: Arc<Mutex<Peaks>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    agent: u32,
}

impl Sampler {
    fn start(agent: u32) -> Sampler {
        let collector = Arc::new(AtomicU32::new(0));
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, p, s) = (collector.clone(), peaks.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let agent_rss = status_kib(agent, "VmRSS:").unwrap_or(0);
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
        reset_hwm(agent);
        Sampler {
            collector,
            peaks,
            stop,
            agent,
        }
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
            if pid == self.agent {
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

/// A `Vm*:` line of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux 4.0+; best effort).
fn reset_hwm(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// User plus system CPU time of `pid` so far, in seconds (0 if unknown).
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which may hold spaces, in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); `rest` starts at field 3.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / ticks_per_second
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}
