//! The run behind `bench forward`: one fleet at a fixed rate feeds each
//! pipeline in turn (never both at once, so neither shares the 2 cores with
//! the other), through four phases timed by the bench:
//!
//! ```text
//!  0 ── warm-up ── steady (delivered/s) ── receiver down (--outage) ── receiver back (--after) ── fleet stops ── settle (until nothing more arrives)
//! ```
//!
//! Delivered counts distinct readings at the receiving end, sampled every
//! [`SAMPLE_EVERY`]; lost is acknowledged to the devices minus delivered.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::node_red;
use super::pipeline::{Extras, Pipeline, System};
use super::table;
use crate::bench::mosquitto;
use crate::bench::procs::{
    clock_ticks_per_second, cpu_seconds, load_average, own_cpu_seconds, status_kib,
};
use crate::config::FleetConfig;
use crate::fleet::run_fleet;

/// How often delivered is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Settling ends once delivered has not grown for this long (our agent
/// retries at most every 2 s, so a pause of this length is no retry gap).
const QUIET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    /// Number of devices, one MQTT connection each.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Readings per second per device, fixed; QoS 1.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Left out of delivered/s at the start (connects, first requests).
    #[arg(long, default_value = "2s")]
    pub warmup: humantime::Duration,
    /// Steady delivery before the outage; delivered/s is measured over it.
    #[arg(long, default_value = "15s")]
    pub steady: humantime::Duration,
    /// How long the receiving end is down: our collector process stopped,
    /// the sink's port closed.
    #[arg(long, default_value = "30s")]
    pub outage: humantime::Duration,
    /// How long the fleet keeps publishing once the receiving end is back.
    #[arg(long, default_value = "5s")]
    pub after: humantime::Duration,
    /// Longest wait after the fleet stops for deliveries to end.
    #[arg(long, default_value = "30s")]
    pub settle: humantime::Duration,
    /// Unacknowledged publishes per connection.
    #[arg(long, default_value_t = 10)]
    pub inflight: u16,
    /// Size of every SenML payload in bytes; its base name carries the
    /// device id, which makes every payload unique for the sink's count.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Pipelines to run, comma-separated, in this order (default: both).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub systems: Vec<System>,
    /// Node-RED's folder: package.json, package-lock.json, flows.json,
    /// settings.js (default: bench/node-red of the current directory or of
    /// this checkout). `npm ci` runs there when node_modules is missing.
    #[arg(long, value_name = "DIR")]
    pub node_red_dir: Option<PathBuf>,
    /// Where spools, the collector's data and Node-RED's userDir go
    /// (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Also write the runs as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl ForwardArgs {
    fn systems(&self) -> Vec<System> {
        if self.systems.is_empty() {
            System::ALL.to_vec()
        } else {
            self.systems.clone()
        }
    }
}

/// The phases' lengths.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Plan {
    pub warmup_s: f64,
    pub steady_s: f64,
    pub outage_s: f64,
    pub after_s: f64,
    pub settle_limit_s: f64,
}

/// Delivered at one moment, seconds from the fleet's start.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub delivered: u64,
}

/// One pipeline's run: what the report and the JSON show.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardRun {
    pub system: System,
    /// Distinct readings the devices wrote (a resend is not counted again).
    pub published: u64,
    /// Readings the broker acknowledged with a PUBACK.
    pub acknowledged: u64,
    /// Distinct readings at the receiving end when the run settled.
    pub delivered: u64,
    /// `acknowledged - delivered`, 0 if more arrived (a publish written but
    /// unacknowledged when the fleet stopped may still arrive).
    pub lost: u64,
    /// Distinct readings delivered per second over the steady phase.
    pub steady_delivered_per_s: f64,
    /// Delivered before the receiving end went down, while it was down, and
    /// from its return to the end of the run.
    pub delivered_before_outage: u64,
    pub delivered_during_outage: u64,
    pub delivered_after_outage: u64,
    /// From the fleet's stop until delivered last grew: the backlog still
    /// on its way then (0 when nothing more arrived).
    pub settle_s: f64,
    /// Whether deliveries ended (all delivered, or nothing more for 5 s)
    /// within the settle limit.
    pub settled: bool,
    /// The outage as it happened: from the port closing to it opening again.
    pub outage_s: f64,
    /// CPU seconds (user + system) of the forwarding process (edge-agent,
    /// Node-RED's node) from the fleet's start to the end of settling.
    pub forwarder_cpu_s: f64,
    /// Its peak resident memory (VmHWM) over the whole run.
    pub forwarder_peak_rss_mib: f64,
    /// The same for a separate broker process (Mosquitto); ours is inside edge-agent.
    pub broker_cpu_s: Option<f64>,
    pub broker_peak_rss_mib: Option<f64>,
    /// CPU seconds of the load generator (this process, sink included).
    pub loadgen_cpu_s: f64,
    pub extras: Extras,
    pub timeline: Vec<Sample>,
}

/// Everything `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardReport {
    pub devices: usize,
    pub rate: f64,
    pub payload_bytes: usize,
    pub plan: Plan,
    pub node_red_version: Option<String>,
    pub node_version: Option<String>,
    pub mosquitto_version: Option<String>,
    /// 1, 5 and 15 minute load averages when the bench started.
    pub load_average: Option<[f64; 3]>,
    pub runs: Vec<ForwardRun>,
}

/// `bench forward`: each pipeline in turn, then a Markdown table.
pub async fn forward(args: ForwardArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be above 0: the outage is measured at a fixed rate");
    }
    let systems = args.systems();
    let node_red_dir = if systems.contains(&System::NodeRed) {
        let dir = node_red::locate(args.node_red_dir.as_deref())?;
        node_red::ensure_installed(&dir)?;
        Some(dir)
    } else {
        None
    };
    let plan = Plan {
        warmup_s: Duration::from(args.warmup).as_secs_f64(),
        steady_s: Duration::from(args.steady).as_secs_f64(),
        outage_s: Duration::from(args.outage).as_secs_f64(),
        after_s: Duration::from(args.after).as_secs_f64(),
        settle_limit_s: Duration::from(args.settle).as_secs_f64(),
    };
    let mut report = ForwardReport {
        devices: args.devices,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        plan,
        node_red_version: node_red_dir.as_deref().and_then(node_red::version),
        node_version: node_red_dir.as_ref().and_then(|_| node_red::node_version()),
        mosquitto_version: node_red_dir.as_ref().and_then(|_| mosquitto::version()),
        load_average: load_average(),
        runs: Vec::new(),
    };
    for system in systems {
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        eprintln!(
            "{}: {} devices × {} readings/s, QoS 1, receiver down {:.0} s",
            system.label(),
            args.devices,
            args.rate,
            plan.outage_s
        );
        let run = run_one(system, &args, node_red_dir.as_deref(), &shutdown)
            .await
            .with_context(|| system.label())?;
        eprintln!(
            "  acknowledged {}, delivered {}, lost {}",
            run.acknowledged, run.delivered, run.lost
        );
        report.runs.push(run);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(table::markdown(&report).as_bytes())?;
    drop(out);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Times at which the phases actually changed, from the fleet's start.
struct Marks {
    steady_from: u64,
    steady_to: u64,
    /// Delivered when the receiving end was down, and when it was back.
    at_down: u64,
    at_back: u64,
    down_at: Duration,
    back_at: Duration,
}

async fn run_one(
    system: System,
    args: &ForwardArgs,
    node_red_dir: Option<&Path>,
    shutdown: &CancellationToken,
) -> anyhow::Result<ForwardRun> {
    let temp = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::tempdir_in(dir)?
        }
        None => tempfile::tempdir()?,
    };
    let mut pipeline = Pipeline::start(system, temp.path(), node_red_dir).await?;
    let ticks = clock_ticks_per_second();
    let forwarder = pipeline.forwarder_pid();
    let broker = pipeline.broker_pid();
    let cpu_before = (
        cpu_seconds(forwarder, ticks),
        broker.map(|pid| cpu_seconds(pid, ticks)),
        own_cpu_seconds(ticks),
    );

    let fleet = FleetConfig {
        broker: pipeline.broker().to_string(),
        devices: args.devices,
        rate: args.rate,
        qos: 1,
        inflight: args.inflight,
        payload_bytes: Some(args.payload_bytes),
        keep_ledger: false,
        progress: false,
        ..FleetConfig::default()
    };
    // The fleet runs until the phases are done, and the phases stop early
    // if the fleet fails; child tokens, so that Ctrl-C stops both.
    let fleet_stop = shutdown.child_token();
    let phases_stop = shutdown.child_token();
    let started = Instant::now();
    let mut timeline = Vec::new();
    let (summary, marks) = tokio::join!(
        async {
            let summary = run_fleet(fleet, fleet_stop.clone()).await;
            phases_stop.cancel();
            summary
        },
        async {
            let marks = drive(&mut pipeline, args, started, &mut timeline, &phases_stop).await;
            fleet_stop.cancel();
            marks
        }
    );
    // The fleet's error first: a failed fleet also interrupts the phases.
    let summary = summary?;
    if shutdown.is_cancelled() {
        bail!("interrupted");
    }
    let marks = marks?;

    // Settle: until everything acknowledged is there, nothing more arrives
    // for QUIET, or the limit.
    let settle_from = Instant::now();
    let mut last = timeline.last().map_or(0, |s: &Sample| s.delivered);
    let mut last_growth = Instant::now();
    let mut grew_in_settle = None;
    let settled = loop {
        tokio::select! {
            () = shutdown.cancelled() => bail!("interrupted"),
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
        pipeline.check_alive()?;
        if let Some(delivered) = pipeline.delivered().await {
            timeline.push(Sample {
                t_s: started.elapsed().as_secs_f64(),
                delivered,
            });
            if delivered > last {
                last = delivered;
                last_growth = Instant::now();
                grew_in_settle = Some(settle_from.elapsed());
            }
        }
        if last >= summary.acked || last_growth.elapsed() >= QUIET {
            break true;
        }
        if settle_from.elapsed() >= Duration::from(args.settle) {
            break false;
        }
    };
    let forwarder_cpu = cpu_seconds(forwarder, ticks) - cpu_before.0;
    let broker_cpu = broker
        .zip(cpu_before.1)
        .map(|(pid, b)| cpu_seconds(pid, ticks) - b);
    let loadgen_cpu = own_cpu_seconds(ticks) - cpu_before.2;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let forwarder_rss = mib(status_kib(forwarder, "VmHWM:").unwrap_or(0));
    let broker_rss = broker.map(|pid| mib(status_kib(pid, "VmHWM:").unwrap_or(0)));
    let extras = pipeline.finish().await?;

    let delivered = last;
    let steady_s = Duration::from(args.steady).as_secs_f64();
    Ok(ForwardRun {
        system,
        published: summary.sent,
        acknowledged: summary.acked,
        delivered,
        lost: summary.acked.saturating_sub(delivered),
        steady_delivered_per_s: marks.steady_to.saturating_sub(marks.steady_from) as f64
            / steady_s.max(f64::MIN_POSITIVE),
        delivered_before_outage: marks.at_down,
        delivered_during_outage: marks.at_back.saturating_sub(marks.at_down),
        delivered_after_outage: delivered.saturating_sub(marks.at_back),
        settle_s: grew_in_settle.map_or(0.0, |d| d.as_secs_f64()),
        settled,
        outage_s: (marks.back_at - marks.down_at).as_secs_f64(),
        forwarder_cpu_s: forwarder_cpu,
        forwarder_peak_rss_mib: forwarder_rss,
        broker_cpu_s: broker_cpu,
        broker_peak_rss_mib: broker_rss,
        loadgen_cpu_s: loadgen_cpu,
        extras,
        timeline,
    })
}

/// Runs the phases while the fleet publishes: warm-up, steady, outage,
/// after; samples delivered throughout.
async fn drive(
    pipeline: &mut Pipeline,
    args: &ForwardArgs,
    started: Instant,
    timeline: &mut Vec<Sample>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Marks> {
    let warmup: Duration = args.warmup.into();
    let steady: Duration = args.steady.into();
    let steady_from = sample_until(pipeline, started, started + warmup, timeline, shutdown).await?;
    let steady_to = sample_until(
        pipeline,
        started,
        started + warmup + steady,
        timeline,
        shutdown,
    )
    .await?;
    pipeline
        .take_down()
        .await
        .context("taking the receiver down")?;
    let down_at = started.elapsed();
    // What was in flight when it went down may still have been counted.
    let at_down = pipeline
        .delivered()
        .await
        .unwrap_or(steady_to)
        .max(steady_to);
    eprintln!("  receiver down at {:.1} s", down_at.as_secs_f64());
    let outage_end = Instant::now() + Duration::from(args.outage);
    sample_until(pipeline, started, outage_end, timeline, shutdown).await?;
    pipeline
        .bring_back()
        .await
        .context("bringing the receiver back")?;
    let back_at = started.elapsed();
    eprintln!("  receiver back at {:.1} s", back_at.as_secs_f64());
    let at_back = pipeline.delivered().await.unwrap_or(at_down);
    sample_until(
        pipeline,
        started,
        Instant::now() + Duration::from(args.after),
        timeline,
        shutdown,
    )
    .await?;
    Ok(Marks {
        steady_from,
        steady_to,
        at_down,
        at_back,
        down_at,
        back_at,
    })
}

/// Samples delivered every [`SAMPLE_EVERY`] until `until`; returns the last
/// value read (0 before any).
async fn sample_until(
    pipeline: &mut Pipeline,
    started: Instant,
    until: Instant,
    timeline: &mut Vec<Sample>,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    loop {
        pipeline.check_alive()?;
        if let Some(delivered) = pipeline.delivered().await {
            timeline.push(Sample {
                t_s: started.elapsed().as_secs_f64(),
                delivered,
            });
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => bail!("interrupted"),
            () = tokio::time::sleep(SAMPLE_EVERY.min(until - now)) => {}
        }
    }
    Ok(timeline.last().map_or(0, |s| s.delivered))
}
