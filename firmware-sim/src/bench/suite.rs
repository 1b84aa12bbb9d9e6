//! `bench suite`: every benchmark in turn, on the same machine with the same
//! load generator, written to `<out-dir>/<UTC time>.md` and `.json`.
//!
//! 1. QoS 1 and 2. QoS 0 ingest, flat out: edge-agent against Mosquitto
//!    (default autosave, autosave on every change, keeping nothing), per
//!    fleet size ([`super::compare`]).
//! 3. A fixed load, 1,000 devices × 10 readings/s at QoS 1, against the
//!    same four: latency, memory and CPU at equal work.
//! 4. Drain: a backlog spooled with the collector down, then caught up
//!    ([`super::drain`]), with a plain spool and with an encrypted one.
//! 5. End to end (issue 7's scenario 5): publish to queryable in the
//!    collector under a steady 10,000 readings/s ([`super::latency`]).
//! 6. The collector alone (scenario 7): points/s stored and a day's
//!    aggregate query, on sled and, when a server answers, PostgreSQL
//!    ([`super::collector`]).
//! 7. Bytes per reading on the wire ([`super::bytes`]) and on disk.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::bytes::{wire_bytes, WireBytes};
use super::collector::{CollectorArgs, CollectorReport, StoreKind};
use super::compare::{run_targets, IngestRun, Load, Target};
use super::drain::{DrainArgs, DrainRun};
use super::latency::{LatencyArgs, LatencyRun};
use super::procs::load_average;
use super::report;

#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// Where the Markdown and JSON results go.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// How long each ingest run lasts.
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,
    /// Left out of msg/s at the start of each ingest run.
    #[arg(long, default_value = "2s")]
    pub warmup: humantime::Duration,
    /// Fleet sizes of the flat-out runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000])]
    pub devices: Vec<usize>,
    /// Unacknowledged QoS 1 publishes per connection in the ingest runs.
    #[arg(long, default_value_t = 10)]
    pub inflight: u16,
    /// Size of every SenML payload, in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Readings in the drain benchmark's backlog; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    pub drain_readings: u64,
    /// Devices of the fixed-load run, each at --fixed-rate; 0 skips it.
    #[arg(long, default_value_t = 1000)]
    pub fixed_devices: usize,
    /// Readings per second per device of the fixed-load run.
    #[arg(long, default_value_t = 10.0)]
    pub fixed_rate: f64,
    /// Probing time of the end-to-end latency run (after a 3 s warm-up); 0 skips it.
    #[arg(long, default_value = "15s")]
    pub latency_duration: humantime::Duration,
    /// Readings per second of the whole fleet in the latency run.
    #[arg(long, default_value_t = 10_000.0)]
    pub latency_rate: f64,
    /// Points posted to each store in the collector run; 0 skips the collector run.
    #[arg(long, default_value_t = 200_000)]
    pub collector_points: u64,
    /// Aggregate queries over the day, per store, in the collector run.
    #[arg(long, default_value_t = 100)]
    pub collector_queries: usize,
    /// Time between two readings of the collector run's day-long series.
    #[arg(long, default_value = "10s")]
    pub collector_day_every: humantime::Duration,
    /// Stores of the collector run, comma-separated (PostgreSQL is skipped when no server answers).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StoreKind::Sled, StoreKind::Postgres])]
    pub collector_stores: Vec<StoreKind>,
    /// PostgreSQL server of the collector run; it works in a schema of its own and drops it.
    #[arg(
        long,
        env = "CLOUD_SYNC_TEST_POSTGRES",
        default_value = super::postgres::DEFAULT_URL,
        hide_env_values = true
    )]
    pub postgres: String,
    /// Where spools and Mosquitto databases go (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// Everything one suite run measured; the JSON file.
#[derive(Debug, Serialize)]
pub struct SuiteReport {
    /// UTC, e.g. 2026-11-29T01:41:20Z.
    pub started_at: String,
    pub elapsed_s: f64,
    pub machine: Machine,
    pub settings: Settings,
    pub ingest: Vec<IngestRun>,
    /// The drain with a plain spool, then with an encrypted one.
    pub drain: Vec<DrainRun>,
    /// End to end, publish to queryable; `None` when skipped.
    pub latency: Option<LatencyRun>,
    /// The collector alone; `None` when skipped.
    pub collector: Option<CollectorReport>,
    pub wire: WireBytes,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: Option<String>,
    pub kernel: Option<String>,
    /// 1, 5 and 15 minute load averages when the suite started and ended.
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    pub mosquitto: Option<String>,
    pub commit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub duration_s: f64,
    pub warmup_s: f64,
    pub inflight: u16,
    pub payload_bytes: usize,
    pub drain_readings: u64,
    pub drain_devices: usize,
    pub drain_inflight: u16,
    /// The latency run: fleet rate in total, devices, probing time.
    pub latency_rate: f64,
    pub latency_devices: usize,
    pub latency_duration_s: f64,
    /// The collector run: points per store, queries, the day's spacing.
    pub collector_points: u64,
    pub collector_queries: usize,
    pub collector_day_every_s: f64,
}

/// Devices and inflight of the drain run: the `bench drain` defaults.
const DRAIN_DEVICES: usize = 100;
const DRAIN_INFLIGHT: u16 = 100;
/// Devices of the latency run: the `bench latency` default.
const LATENCY_DEVICES: usize = 100;
/// Readings per upload batch: the uplink's default `max_batch_records`.
const BATCH_RECORDS: usize = 1000;

pub async fn suite(args: SuiteArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut machine = Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: cpu_model(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned()),
        load_average_start: load_average(),
        load_average_end: None,
        mosquitto: super::mosquitto::version(),
        commit: git_commit(),
    };
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;

    let mut ingest = Vec::new();
    for qos in [1, 0] {
        for &devices in &args.devices {
            let load = Load {
                devices,
                qos,
                rate: 0.0,
                duration: args.duration.into(),
                warmup: args.warmup.into(),
                inflight: args.inflight,
                payload_bytes: args.payload_bytes,
            };
            ingest.extend(
                run_targets(&Target::ALL, load, args.work_dir.as_deref(), &shutdown).await?,
            );
        }
    }
    if args.fixed_devices > 0 {
        let load = Load {
            devices: args.fixed_devices,
            qos: 1,
            rate: args.fixed_rate,
            duration: args.duration.into(),
            warmup: args.warmup.into(),
            inflight: args.inflight,
            payload_bytes: args.payload_bytes,
        };
        ingest.extend(run_targets(&Target::ALL, load, args.work_dir.as_deref(), &shutdown).await?);
    }
    let mut drain = Vec::new();
    for encrypt in [false, true] {
        if args.drain_readings == 0 {
            break;
        }
        let spool = if encrypt { "encrypted" } else { "plain" };
        eprintln!("drain: {} readings, {spool} spool", args.drain_readings);
        let drain_args = DrainArgs {
            readings: args.drain_readings,
            devices: DRAIN_DEVICES,
            inflight: DRAIN_INFLIGHT,
            timeout: Duration::from_secs(300).into(),
            payload_bytes: Some(args.payload_bytes),
            encrypt,
        };
        drain.push(super::drain::measure(drain_args, shutdown.clone()).await?);
    }
    let latency_duration = Duration::from(args.latency_duration);
    let latency = if latency_duration.is_zero() {
        None
    } else {
        let latency_args = LatencyArgs {
            rate: args.latency_rate,
            devices: LATENCY_DEVICES,
            duration: latency_duration.into(),
            warmup: Duration::from_secs(3).into(),
            probe_every: Duration::from_millis(100).into(),
            poll_every: Duration::from_millis(5).into(),
            payload_bytes: Some(args.payload_bytes),
        };
        Some(super::latency::measure(latency_args, shutdown.clone()).await?)
    };
    let collector = if args.collector_points == 0 {
        None
    } else {
        let collector_args = CollectorArgs {
            points: args.collector_points,
            batch: BATCH_RECORDS,
            devices: 1000,
            concurrency: 4,
            postgres_collectors: 1,
            day_every: args.collector_day_every,
            queries: args.collector_queries,
            stores: args.collector_stores.clone(),
            postgres: args.postgres.clone(),
            payload_bytes: Some(args.payload_bytes),
        };
        Some(super::collector::measure(collector_args, shutdown.clone()).await?)
    };
    let wire = wire_bytes(args.payload_bytes, DRAIN_DEVICES, BATCH_RECORDS);
    machine.load_average_end = load_average();

    let report = SuiteReport {
        started_at: utc_timestamp(now),
        elapsed_s: started.elapsed().as_secs_f64(),
        machine,
        settings: Settings {
            duration_s: Duration::from(args.duration).as_secs_f64(),
            warmup_s: Duration::from(args.warmup).as_secs_f64(),
            inflight: args.inflight,
            payload_bytes: args.payload_bytes,
            drain_readings: args.drain_readings,
            drain_devices: DRAIN_DEVICES,
            drain_inflight: DRAIN_INFLIGHT,
            latency_rate: args.latency_rate,
            latency_devices: LATENCY_DEVICES,
            latency_duration_s: latency_duration.as_secs_f64(),
            collector_points: args.collector_points,
            collector_queries: args.collector_queries,
            collector_day_every_s: Duration::from(args.collector_day_every).as_secs_f64(),
        },
        ingest,
        drain,
        latency,
        collector,
        wire,
    };
    let stem = args.out_dir.join(file_stem(now));
    let md = stem.with_extension("md");
    let json = stem.with_extension("json");
    std::fs::write(&md, report::suite_markdown(&report))
        .with_context(|| format!("cannot write {}", md.display()))?;
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!(
        "wrote {} and {} in {:.0} s",
        md.display(),
        json.display(),
        report.elapsed_s
    );
    Ok(ExitCode::SUCCESS)
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// The checked-out commit, marked when the work tree has changes.
fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    Some(if dirty {
        format!("{commit} with uncommitted changes")
    } else {
        commit
    })
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-29T01:41:20Z`.
fn utc_timestamp(unix: u64) -> String {
    let (y, m, d) = civil_from_days((unix / 86_400) as i64);
    let secs = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `2026-11-29T0141Z`: sorts by time, no colons in file names.
fn file_stem(unix: u64) -> String {
    let stamp = utc_timestamp(unix);
    // "2026-11-29T01:41" of "2026-11-29T01:41:20Z"; a year past 9999 is longer.
    let minutes = &stamp[..stamp.len() - 4];
    format!("{}Z", minutes.replace(':', ""))
}

/// The run's header lines for the Markdown.
pub(super) fn describe(report: &SuiteReport) -> String {
    let m = &report.machine;
    let s = &report.settings;
    let load =
        |l: Option<[f64; 3]>| l.map_or("-".to_owned(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- started {} UTC, took {:.0} s; commit {}",
        report.started_at.trim_end_matches('Z').replace('T', " "),
        report.elapsed_s,
        m.commit.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "- machine: {} cores ({}), Linux {}; load average (1, 5, 15 min) {} at the start, {} at the end",
        m.cores,
        m.cpu.as_deref().unwrap_or("-"),
        m.kernel.as_deref().unwrap_or("-"),
        load(m.load_average_start),
        load(m.load_average_end),
    );
    let _ = writeln!(
        out,
        "- peers: {}; load generator: firmware-sim (rumqttc), one connection per device, on the same cores",
        m.mosquitto.as_deref().unwrap_or("mosquitto (version unknown)")
    );
    let _ = writeln!(
        out,
        "- ingest runs: {} s each, msg/s counted after a {} s warm-up; inflight {} per connection; \
         {}-byte SenML-CBOR payloads on devices/{{id}}/telemetry",
        s.duration_s, s.warmup_s, s.inflight, s.payload_bytes
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century year) 12:34:56.
        assert_eq!(utc_timestamp(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(utc_timestamp(1_795_916_480), "2026-11-29T01:41:20Z");
        assert_eq!(file_stem(1_795_916_480), "2026-11-29T0141Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
