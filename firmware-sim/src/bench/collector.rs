//! `bench collector`: the real `cloud-sync` binary alone, per store (sled in
//! a temporary directory; PostgreSQL in a throwaway schema when a server
//! answers). How many points per second it stores from uploads as the
//! gateway sends them, and how long a dashboard waits for a day of one
//! device in one-minute buckets.
//!
//! ```text
//! ingest  c gateways ─POST /v1/batches (SyncBatch of N envelopes, zstd)──▶ cloud-sync ─▶ store
//!         points/s = points stored (checked in /v1/devices) / first request to last answer
//! query   one device, 24 h of readings every --day-every, then Q times in turn:
//!         GET /v1/devices/bench-day/aggregates?name=temp&from=D&to=D+86400&step=60 (1440 buckets)
//! ```
//!
//! Every body is encoded and compressed before the clock starts, so the
//! client's own work is small; it still shares the cores (its CPU time is
//! reported).

use std::f64::consts::TAU;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_bytes::ByteBuf;
use telemetry::{encode_batch, Envelope, SyncBatch, Value};
use tokio_util::sync::CancellationToken;

use super::postgres::{self, Schema};
use super::procs::{
    clock_ticks_per_second, cpu_seconds, free_port, own_cpu_seconds, reset_hwm, sibling_binary,
    spawn_collector, status_kib, wait_ready,
};
use super::report;
use crate::latency::Latencies;
use crate::ledger::Reading;
use crate::payload;
use crate::sensors::Sensor;

/// The store behind the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded store, in a temporary directory.
    Sled,
    /// A fresh schema on the --postgres server, dropped afterwards.
    Postgres,
}

impl StoreKind {
    pub(super) fn label(self) -> &'static str {
        match self {
            StoreKind::Sled => "sled",
            StoreKind::Postgres => "PostgreSQL",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CollectorArgs {
    /// Points posted in the ingest run, per store (rounded up to whole batches).
    #[arg(long, default_value_t = 200_000)]
    pub points: u64,
    /// Envelopes per batch, one reading each (the uplink's max_batch_records).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Devices the ingest run's readings come from.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Requests in flight at once, each from a gateway of its own posting its batches in order.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Time between two readings of the day-long series the aggregate query reads.
    #[arg(long, default_value = "10s")]
    pub day_every: humantime::Duration,
    /// Times the aggregate query over the day is asked, one after another.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Collector processes sharing the PostgreSQL schema, the gateways spread over them
    /// (sled is one process's store: always 1 there).
    #[arg(long, default_value_t = 1)]
    pub postgres_collectors: usize,
    /// Stores to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StoreKind::Sled, StoreKind::Postgres])]
    pub stores: Vec<StoreKind>,
    /// PostgreSQL server; the benchmark works in a schema of its own and drops it.
    #[arg(
        long,
        env = "CLOUD_SYNC_TEST_POSTGRES",
        default_value = postgres::DEFAULT_URL,
        hide_env_values = true
    )]
    pub postgres: String,
    /// Size of every SenML payload of the ingest run in bytes (default: the bare record, 20 to 40 bytes).
    #[arg(long)]
    pub payload_bytes: Option<usize>,
}

/// The device whose day the aggregate query reads, and its measurement.
const DAY_DEVICE: &str = "bench-day";
const DAY_NAME: &str = "temp";
const DAY_SECONDS: u64 = 86_400;
/// One-minute buckets: 1440 over the day.
const STEP_SECONDS: u64 = 60;

/// What `bench collector` measured on one store.
#[derive(Debug, Clone, Serialize)]
pub struct CollectorRun {
    pub store: StoreKind,
    /// Collector processes over the store, the gateways spread over them.
    pub collectors: usize,
    /// Ingest: points posted and found stored afterwards.
    pub points: u64,
    pub batches: u64,
    pub batch_envelopes: usize,
    pub devices: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// First request to last answer.
    pub ingest_s: f64,
    pub points_per_s: f64,
    /// Request to answer of one batch.
    pub batch_p50_ms: Option<f64>,
    pub batch_p99_ms: Option<f64>,
    /// CPU seconds over the ingest run: the collectors together, and this
    /// process (the HTTP client; its bodies were ready before).
    pub collector_cpu_s: f64,
    pub client_cpu_s: f64,
    /// The largest collector's peak RSS over the ingest run and the queries.
    pub collector_peak_rss_mib: f64,
    /// Query: points in the device's day, one every `day_every_s`.
    pub day_points: u64,
    pub day_every_s: f64,
    /// Buckets in each answer (1440 when every minute holds a reading).
    pub buckets: usize,
    pub queries: usize,
    pub query_p50_ms: Option<f64>,
    pub query_p99_ms: Option<f64>,
    pub query_max_ms: Option<f64>,
    /// CPU seconds of the collector over all queries.
    pub query_collector_cpu_s: f64,
}

/// Every store's run, and why any was left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectorReport {
    pub runs: Vec<CollectorRun>,
    /// One line per store that was skipped (no PostgreSQL server).
    pub skipped: Vec<String>,
}

/// `bench collector`: prints the table.
pub async fn collector(
    args: CollectorArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let measured = measure(args, shutdown).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(report::collector_table(&measured).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The measurement behind `bench collector`, store after store.
pub(super) async fn measure(
    args: CollectorArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<CollectorReport> {
    ensure!(args.points > 0, "--points must be at least 1");
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(args.devices > 0, "--devices must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(
        args.postgres_collectors > 0,
        "--postgres-collectors must be at least 1"
    );
    let day_every: Duration = args.day_every.into();
    ensure!(
        day_every >= Duration::from_millis(1) && day_every <= Duration::from_secs(STEP_SECONDS),
        "--day-every must be between 1ms and 60s, so that every minute holds a reading"
    );
    let bin = sibling_binary("cloud-sync")?;
    // Yesterday, from midnight UTC: old enough to be history, recent enough
    // for any retention period.
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / DAY_SECONDS
        * DAY_SECONDS;
    let day_start = today - DAY_SECONDS;
    let bodies = Arc::new(ingest_bodies(&args, day_start - DAY_SECONDS));
    let day = day_bodies(day_start, day_every, args.batch);

    let mut measured = CollectorReport::default();
    for &store in &args.stores {
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        let run = match store {
            StoreKind::Sled => {
                eprintln!("collector: sled");
                one_store(&bin, store, None, &args, &bodies, &day, &shutdown).await?
            }
            StoreKind::Postgres => {
                let schema = match Schema::create(&args.postgres).await {
                    Ok(schema) => schema,
                    Err(err) => {
                        let line = format!(
                            "PostgreSQL skipped: no server at {} ({err:#})",
                            postgres::shown(&args.postgres)
                        );
                        eprintln!("collector: {line}");
                        measured.skipped.push(line);
                        continue;
                    }
                };
                eprintln!("collector: PostgreSQL, schema {}", schema.name);
                let url = schema.url();
                let run = one_store(&bin, store, Some(&url), &args, &bodies, &day, &shutdown).await;
                // Dropped whatever happened, after the collector has stopped.
                let dropped = schema.drop().await;
                let run = run?;
                dropped?;
                run
            }
        };
        measured.runs.push(run);
    }
    Ok(measured)
}

/// Starts a collector on `store` (sled when `None`), runs the ingest and
/// then the queries against it, and stops it.
async fn one_store(
    bin: &std::path::Path,
    store: StoreKind,
    url: Option<&str>,
    args: &CollectorArgs,
    bodies: &Arc<Vec<Vec<Vec<u8>>>>,
    day: &Day,
    shutdown: &CancellationToken,
) -> anyhow::Result<CollectorRun> {
    let ticks = clock_ticks_per_second();
    let temp = tempfile::tempdir()?;
    let token = format!("{:032x}", rand::random::<u128>());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let count = match store {
        StoreKind::Sled => 1,
        StoreKind::Postgres => args.postgres_collectors,
    };
    let mut collectors = Vec::new();
    let mut bases = Vec::new();
    for i in 0..count {
        let addr = free_port()?;
        // Each has a data directory of its own, for its audit log (and sled).
        let mut collector = spawn_collector(
            bin,
            &temp.path().join(format!("cloud-{i}")),
            url,
            addr,
            &token,
            temp.path(),
        )?;
        wait_ready(&client, &mut collector, addr).await?;
        collectors.push(collector);
        bases.push(format!("http://{addr}"));
    }
    let pids: Vec<u32> = collectors.iter().map(|c| c.pid()).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_seconds(p, ticks)).sum::<f64>();
    let base = &bases[0];

    // Ingest.
    for &pid in &pids {
        reset_hwm(pid);
    }
    let cpu_before = (cpu(&pids), own_cpu_seconds(ticks));
    let started = Instant::now();
    let mut batch_times = post_all(&client, &bases, &token, bodies, shutdown).await?;
    let ingest_s = started.elapsed().as_secs_f64();
    let cpu_after = (cpu(&pids), own_cpu_seconds(ticks));
    let points = stored_points(&client, base).await?;
    let posted = round_up(args.points, args.batch);
    ensure!(
        points == posted,
        "{}: the collector holds {points} points, {posted} were posted",
        store.label()
    );

    // A day of one device, then the aggregate query over it.
    post_all(&client, &bases[..1], &token, &day.bodies, shutdown).await?;
    let day_points = day.readings;
    let query_cpu_before = cpu(&pids);
    let url = format!("{base}/v1/devices/{DAY_DEVICE}/aggregates");
    let params = [
        ("name", DAY_NAME.to_owned()),
        ("from", day.start.to_string()),
        ("to", (day.start + DAY_SECONDS).to_string()),
        ("step", STEP_SECONDS.to_string()),
    ];
    let mut query_times = Latencies::new();
    let mut buckets = 0;
    for i in 0..args.queries {
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        let asked = Instant::now();
        let response = client
            .get(&url)
            .query(&params)
            .send()
            .await
            .context("aggregate query")?;
        let status = response.status();
        let body = response.bytes().await?;
        query_times.record(asked.elapsed());
        ensure!(
            status.is_success(),
            "aggregate query: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        // The first answer is checked; the others are the same query.
        if i == 0 {
            let answer: serde_json::Value = serde_json::from_slice(&body)?;
            let list = answer["buckets"].as_array().context("no buckets")?;
            let counted: u64 = list.iter().filter_map(|b| b["count"].as_u64()).sum();
            ensure!(
                counted == day_points,
                "the day's buckets hold {counted} readings, {day_points} were posted"
            );
            buckets = list.len();
        }
    }
    let query_collector_cpu_s = cpu(&pids) - query_cpu_before;
    let peak = pids
        .iter()
        .map(|&pid| status_kib(pid, "VmHWM:").unwrap_or(0))
        .max()
        .unwrap_or(0);
    for mut collector in collectors {
        collector.terminate(Duration::from_secs(10))?;
    }

    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    Ok(CollectorRun {
        store,
        collectors: count,
        points,
        batches: bodies.iter().map(Vec::len).sum::<usize>() as u64,
        batch_envelopes: args.batch,
        devices: args.devices,
        concurrency: args.concurrency,
        ingest_s,
        points_per_s: points as f64 / ingest_s.max(0.001),
        batch_p50_ms: ms(batch_times.percentile(50.0)),
        batch_p99_ms: ms(batch_times.percentile(99.0)),
        collector_cpu_s: cpu_after.0 - cpu_before.0,
        client_cpu_s: cpu_after.1 - cpu_before.1,
        collector_peak_rss_mib: peak as f64 / 1024.0,
        day_points,
        day_every_s: DAY_SECONDS as f64 / day_points.max(1) as f64,
        buckets,
        queries: args.queries,
        query_p50_ms: ms(query_times.percentile(50.0)),
        query_p99_ms: ms(query_times.percentile(99.0)),
        query_max_ms: ms(query_times.percentile(100.0)),
        query_collector_cpu_s,
    })
}

/// `n` rounded up to a multiple of `to`.
fn round_up(n: u64, to: usize) -> u64 {
    n.div_ceil(to as u64) * to as u64
}

/// Posts every gateway's bodies, the gateways at once and each one batch at
/// a time (as an uplink does), gateway `g` to collector `g mod n`; returns
/// each request's round trip.
async fn post_all(
    client: &reqwest::Client,
    bases: &[String],
    token: &str,
    bodies: &Arc<Vec<Vec<Vec<u8>>>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Latencies> {
    let gateways: Vec<_> = (0..bodies.len())
        .map(|g| {
            let url = format!("{}/v1/batches", bases[g % bases.len()]);
            let (client, bodies, url, token) = (
                client.clone(),
                bodies.clone(),
                url.clone(),
                token.to_owned(),
            );
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut times = Latencies::new();
                for body in &bodies[g] {
                    if shutdown.is_cancelled() {
                        bail!("interrupted");
                    }
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/cbor")
                        .header("content-encoding", "zstd")
                        .body(body.clone())
                        .send()
                        .await
                        .context("POST /v1/batches")?;
                    let status = response.status();
                    let answer = response.bytes().await?;
                    ensure!(
                        status.is_success(),
                        "POST /v1/batches: {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                    times.record(sent.elapsed());
                }
                Ok(times)
            })
        })
        .collect();
    let mut times = Latencies::new();
    for gateway in gateways {
        times.extend(gateway.await.context("gateway task")??);
    }
    Ok(times)
}

/// Points the collector holds, over every device (`GET /v1/devices`).
async fn stored_points(client: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let body = client
        .get(format!("{base}/v1/devices"))
        .send()
        .await
        .context("GET /v1/devices")?
        .bytes()
        .await?;
    let devices: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(devices["devices"]
        .as_array()
        .context("no device list in GET /v1/devices")?
        .iter()
        .filter_map(|d| d["points"].as_u64())
        .sum())
}

/// The ingest run's bodies, per gateway: `points` readings (rounded up to
/// whole batches) from `devices` devices, one reading per envelope, batch
/// `k` going to gateway `k mod concurrency`. Device `d`'s readings are a
/// second apart from `start`.
fn ingest_bodies(args: &CollectorArgs, start: u64) -> Vec<Vec<Vec<u8>>> {
    let batches = round_up(args.points, args.batch) / args.batch as u64;
    let mut sensors: Vec<Sensor> = (0..args.devices)
        .map(|d| Sensor::for_device(1, d))
        .collect();
    let mut gateways = vec![Vec::new(); args.concurrency];
    let mut seqs = vec![0_u64; args.concurrency];
    let mut n = 0_u64;
    for k in 0..batches {
        let g = (k % args.concurrency as u64) as usize;
        let envelopes = (0..args.batch)
            .map(|_| {
                let d = (n % args.devices as u64) as usize;
                let step = n / args.devices as u64;
                n += 1;
                let sensor = &mut sensors[d];
                let kind = sensor.kind();
                let reading = Reading {
                    device_id: format!("bench-{d:05}"),
                    name: kind.name().to_owned(),
                    time: (start + step) as f64,
                    value: sensor.sample(),
                    unit: kind.unit().map(str::to_owned),
                };
                seqs[g] += 1;
                envelope(seqs[g], &reading, args.payload_bytes)
            })
            .collect();
        gateways[g].push(compressed(&format!("bench-gw-{g}"), g as u128, envelopes));
    }
    gateways
}

/// The day-long series of one device, ready to post.
struct Day {
    /// Midnight UTC, seconds since the epoch.
    start: u64,
    readings: u64,
    /// One gateway's batches.
    bodies: Arc<Vec<Vec<Vec<u8>>>>,
}

/// One device's day from `start`, one reading every `every`, in batches of
/// `batch` envelopes from one gateway.
fn day_bodies(start: u64, every: Duration, batch: usize) -> Day {
    let every_ms = every.as_millis().max(1) as u64;
    let readings = DAY_SECONDS * 1000 / every_ms;
    let mut bodies = Vec::new();
    let mut envelopes = Vec::with_capacity(batch);
    for i in 0..readings {
        let reading = Reading {
            device_id: DAY_DEVICE.to_owned(),
            name: DAY_NAME.to_owned(),
            time: (start * 1000 + i * every_ms) as f64 / 1e3,
            // A slow daily swing, so that the buckets differ.
            value: Value::Float(20.0 + 5.0 * (i as f64 / readings as f64 * TAU).sin()),
            unit: Some("Cel".to_owned()),
        };
        envelopes.push(envelope(i + 1, &reading, None));
        if envelopes.len() == batch || i + 1 == readings {
            let full = std::mem::replace(&mut envelopes, Vec::with_capacity(batch));
            bodies.push(compressed("bench-day-gw", 0xda7, full));
        }
    }
    Day {
        start,
        readings,
        bodies: Arc::new(vec![bodies]),
    }
}

fn envelope(seq: u64, reading: &Reading, payload_bytes: Option<usize>) -> Envelope {
    Envelope {
        seq,
        device_id: reading.device_id.clone(),
        topic: payload::topic(&reading.device_id),
        received_at: (reading.time * 1e3) as u64,
        payload: ByteBuf::from(payload::encode_sized(reading, payload_bytes)),
    }
}

/// A `SyncBatch` body as the uplink sends it: CBOR, zstd level 3.
fn compressed(gateway: &str, spool: u128, envelopes: Vec<Envelope>) -> Vec<u8> {
    let body = encode_batch(&SyncBatch {
        gateway_id: gateway.to_owned(),
        spool_id: format!("{:032x}", 0xbe0c_0000_u128 + spool),
        backlog: 0,
        envelopes,
    });
    zstd::encode_all(body.as_slice(), 3).expect("zstd into a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CollectorArgs,
    }

    fn args(extra: &[&str]) -> CollectorArgs {
        let mut argv = vec!["collector"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    fn decode(body: &[u8]) -> SyncBatch {
        telemetry::decode_batch(&zstd::decode_all(body).unwrap()).unwrap()
    }

    #[test]
    fn ingest_batches_are_spread_over_the_gateways_in_seq_order() {
        let args = args(&["--points", "2500", "--batch", "1000", "--devices", "7"]);
        assert_eq!(args.stores, [StoreKind::Sled, StoreKind::Postgres]);
        let bodies = ingest_bodies(&args, 1_800_000_000);
        // 3 batches over 4 gateways: gateways 0, 1, 2 get one each.
        assert_eq!(
            bodies.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 1, 1, 0]
        );
        let first = decode(&bodies[0][0]);
        assert_eq!(first.gateway_id, "bench-gw-0");
        assert_eq!(first.envelopes.len(), 1000);
        assert_eq!(first.envelopes[0].seq, 1);
        assert_eq!(first.envelopes[999].seq, 1000);
        let devices: std::collections::BTreeSet<_> =
            first.envelopes.iter().map(|e| &e.device_id).collect();
        assert_eq!(devices.len(), 7);
        assert_ne!(first.spool_id, decode(&bodies[1][0]).spool_id);
    }

    #[test]
    fn a_day_every_ten_seconds_is_8640_readings() {
        let day = day_bodies(
            1_800_000_000 / 86_400 * 86_400,
            Duration::from_secs(10),
            1000,
        );
        assert_eq!(day.readings, 8640);
        assert_eq!(day.bodies[0].len(), 9);
        let last = decode(&day.bodies[0][8]);
        assert_eq!(last.envelopes.len(), 640);
        assert_eq!(last.envelopes[639].seq, 8640);
    }
}
