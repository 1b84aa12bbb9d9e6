//! `bench latency`: end-to-end latency from an MQTT publish to the reading
//! being queryable in the collector, under a steady fleet load, through the
//! real `edge-agent` and `cloud-sync` binaries with default settings.
//!
//! ```text
//! fleet (rate total) ─MQTT─▶ edge-agent ─spool─▶ uplink (linger 100 ms) ─HTTP─▶ cloud-sync
//! probe ─publish t_i (unique SenML time)──┘                 poll GET /points ◀──┘
//! latency_i = first answer that holds t_i − publish of t_i
//! ```
//!
//! One probe device publishes a reading every `--probe-every`; one poller
//! asks the collector every `--poll-every` for the probes not yet seen (one
//! request for all of them, so the polling adds the same small load however
//! many are outstanding). A probe counts as visible when the answer that
//! holds it arrives, so each latency is rounded up by at most one poll
//! interval plus a query's round trip, both reported.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use telemetry::Value;
use tokio_util::sync::CancellationToken;

use super::procs::{
    clock_ticks_per_second, cpu_seconds, free_port, own_cpu_seconds, pending, reset_hwm,
    sibling_binary, spawn_agent, spawn_collector, status_kib, wait_ready,
};
use super::report;
use crate::config::FleetConfig;
use crate::fleet::run_fleet;
use crate::latency::Latencies;
use crate::ledger::Reading;
use crate::payload;

#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    /// Readings per second of the whole fleet, spread evenly over --devices.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Devices of the fleet, one MQTT connection each (QoS 1).
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// How long probes are sent; the fleet runs --warmup before and a second after.
    #[arg(long, default_value = "20s")]
    pub duration: humantime::Duration,
    /// Fleet load before the first probe (connects, the uplink settling).
    #[arg(long, default_value = "3s")]
    pub warmup: humantime::Duration,
    /// Time between two probe readings.
    #[arg(long, default_value = "100ms")]
    pub probe_every: humantime::Duration,
    /// Time between two queries of the collector for the probes not seen yet.
    #[arg(long, default_value = "5ms")]
    pub poll_every: humantime::Duration,
    /// Size of every SenML payload of the fleet in bytes (default: the bare record, 20 to 40 bytes).
    #[arg(long)]
    pub payload_bytes: Option<usize>,
}

/// A probe not seen within this long counts as lost (the run ends early).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The probe's device id; the fleet's ids are `sim-NNNNN`.
const PROBE_DEVICE: &str = "bench-probe";
/// The probe's measurement name.
const PROBE_NAME: &str = "probe";
/// The agent's `uplink.linger` default, which this benchmark keeps.
const DEFAULT_LINGER_MS: f64 = 100.0;
/// The agent's histogram of batch uploads, request to answer.
const UPLINK_HISTOGRAM: &str = "edge_uplink_request_seconds";
/// How often the agent's backlog is read.
const BACKLOG_EVERY: Duration = Duration::from_millis(250);

/// What `bench latency` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    /// Readings per second asked of the fleet, in total.
    pub target_rate: f64,
    pub devices: usize,
    /// The probing window (the fleet ran warm-up + window + 1 s).
    pub window_s: f64,
    pub probe_every_ms: f64,
    pub poll_every_ms: f64,
    /// The agent's `uplink.linger`: its default, not changed here.
    pub linger_ms: f64,
    /// Acknowledged fleet readings per second after the warm-up.
    pub load_readings_per_s: f64,
    pub probes_sent: u64,
    pub probes_seen: u64,
    /// Probes not seen within 10 s, or not by the end of the run.
    pub probes_lost: u64,
    /// Publish to first visible in the query API.
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    pub e2e_max_ms: Option<f64>,
    /// Publish to PUBACK of the probes: the gateway's spool commit.
    pub puback_p50_ms: Option<f64>,
    pub puback_p99_ms: Option<f64>,
    /// PUBACK to visible: linger, upload, the collector's commit, polling.
    pub after_puback_p50_ms: Option<f64>,
    pub after_puback_p99_ms: Option<f64>,
    /// Round trip of one poll of the collector: the measurement's resolution
    /// is the poll interval plus this.
    pub query_p50_ms: Option<f64>,
    /// Batches the agent uploaded over the window, and their mean time from
    /// sending to the collector's answer (its commit included), from the
    /// agent's `edge_uplink_request_seconds`.
    pub uplink_requests: u64,
    pub uplink_request_mean_ms: Option<f64>,
    /// Most readings in the agent's spool at once, sampled every 250 ms; a
    /// growing backlog means the uplink or the collector does not keep up.
    pub agent_backlog_max: u64,
    /// CPU seconds over the probing window.
    pub agent_cpu_s: f64,
    pub collector_cpu_s: f64,
    pub loadgen_cpu_s: f64,
    /// Peak RSS over the probing window.
    pub agent_peak_rss_mib: f64,
    pub collector_peak_rss_mib: f64,
}

impl LatencyRun {
    /// Where the median probe's time went, in one sentence. After its
    /// PUBACK a reading waits for its batch to close (at most the linger;
    /// less when 1000 readings fill it first), then for the upload and the
    /// collector's commit, then for the next poll to see it; the wait is
    /// what is left of PUBACK-to-visible once the upload's mean and half a
    /// poll are taken off, so it is an estimate.
    pub fn dominant(&self) -> String {
        let (Some(e2e), Some(puback), Some(after)) = (
            self.e2e_p50_ms,
            self.puback_p50_ms,
            self.after_puback_p50_ms,
        ) else {
            return "no probe was seen: nothing to break down".to_owned();
        };
        let Some(upload) = self.uplink_request_mean_ms else {
            return format!(
                "median {e2e:.0} ms: publish to PUBACK {puback:.0} ms, PUBACK to visible {after:.0} ms \
                 (the agent's upload time was not available to split it further)"
            );
        };
        let polling = self.poll_every_ms / 2.0 + self.query_p50_ms.unwrap_or(0.0);
        let wait = (after - upload - polling).max(0.0);
        let parts = [
            (puback, "publish to PUBACK (the gateway's spool commit)"),
            (wait, "waiting in the spool for the batch to close"),
            (upload, "the upload and the collector's commit"),
            (polling, "seeing it (half a poll interval plus a query)"),
        ];
        let (ms, what) = parts
            .iter()
            .copied()
            .fold((f64::MIN, ""), |a, b| if b.0 > a.0 { b } else { a });
        format!(
            "what dominates: {what}, about {ms:.0} ms of the median {e2e:.0} ms. Split: publish to PUBACK \
             {puback:.0} ms, batch wait ~{wait:.0} ms (linger {:.0} ms; {} batches in the window, \
             ~{:.0} readings each), upload and commit {upload:.0} ms (mean), polling ~{polling:.0} ms",
            self.linger_ms,
            self.uplink_requests,
            self.load_readings_per_s * self.window_s / self.uplink_requests.max(1) as f64,
        )
    }
}

/// `bench latency`: prints one table.
pub async fn latency(args: LatencyArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let run = measure(args, shutdown).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(report::latency_table(std::slice::from_ref(&run)).as_bytes())?;
    writeln!(out, "\n{}", run.dominant())?;
    Ok(if run.probes_seen > 0 && run.probes_lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The measurement behind `bench latency`.
pub(super) async fn measure(
    args: LatencyArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<LatencyRun> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if !args.rate.is_finite() || args.rate <= 0.0 {
        bail!("--rate must be above 0, got {}", args.rate);
    }
    let window: Duration = args.duration.into();
    let warmup: Duration = args.warmup.into();
    let probe_every: Duration = args.probe_every.into();
    let poll_every: Duration = args.poll_every.into();
    if probe_every.is_zero() || poll_every.is_zero() {
        bail!("--probe-every and --poll-every must be above zero");
    }
    let agent_bin = sibling_binary("edge-agent")?;
    let collector_bin = sibling_binary("cloud-sync")?;
    let ticks = clock_ticks_per_second();
    let temp = tempfile::tempdir()?;
    let token = format!("{:032x}", rand::random::<u128>());

    let collector_addr = free_port()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut collector = spawn_collector(
        &collector_bin,
        &temp.path().join("cloud"),
        None,
        collector_addr,
        &token,
        temp.path(),
    )?;
    wait_ready(&client, &mut collector, collector_addr).await?;
    // An empty config file: every uplink setting (linger 100 ms, batches of
    // 1000, zstd, concurrency 4) is the default a deployment starts with.
    let config = temp.path().join("edge-agent.toml");
    std::fs::write(&config, "")?;
    let (mut agent, admin, mqtt) =
        spawn_agent(&agent_bin, temp.path(), &config, collector_addr, &token).await?;

    // The fleet runs past the window so that the last probes still travel
    // under load.
    let fleet = FleetConfig {
        broker: mqtt.to_string(),
        devices: args.devices,
        rate: args.rate / args.devices as f64,
        duration: Some(warmup + window + Duration::from_secs(1)),
        warmup,
        qos: 1,
        inflight: 10,
        progress: false,
        payload_bytes: args.payload_bytes,
        keep_ledger: false,
        ..FleetConfig::default()
    };
    eprintln!(
        "latency: {} devices at {:.0} readings/s in total, probes every {:?} for {:?} after a {:?} warm-up",
        args.devices, args.rate, probe_every, window, warmup
    );
    let fleet_task = tokio::spawn(run_fleet(fleet, shutdown.clone()));

    tokio::select! {
        () = shutdown.cancelled() => bail!("interrupted"),
        () = tokio::time::sleep(warmup) => {}
    }
    let (agent_pid, collector_pid) = (agent.pid(), collector.pid());
    reset_hwm(agent_pid);
    reset_hwm(collector_pid);
    let cpu_before = (
        cpu_seconds(agent_pid, ticks),
        cpu_seconds(collector_pid, ticks),
        own_cpu_seconds(ticks),
    );
    let metrics = format!("http://{admin}/metrics");
    let uplink_before = histogram(&client, &metrics, UPLINK_HISTOGRAM).await;
    let started = Instant::now();

    let probes = Arc::new(Mutex::new(Probes::default()));
    let stop = shutdown.child_token();
    // Stops the probe's tasks on every way out of here, errors included.
    let _stop_on_exit = stop.clone().drop_guard();
    let publish = probe_connection(mqtt, probes.clone(), stop.clone()).await?;
    let poller = tokio::spawn(poll_collector(
        client.clone(),
        collector_addr,
        poll_every,
        probes.clone(),
        stop.clone(),
    ));
    let backlog = tokio::spawn(watch_backlog(
        client.clone(),
        format!("http://{admin}/healthz"),
        stop.clone(),
    ));
    let sent = send_probes(&publish, &probes, probe_every, window, &shutdown).await;
    let cpu_after = (
        cpu_seconds(agent_pid, ticks),
        cpu_seconds(collector_pid, ticks),
        own_cpu_seconds(ticks),
    );
    let peaks = (
        status_kib(agent_pid, "VmHWM:").unwrap_or(0),
        status_kib(collector_pid, "VmHWM:").unwrap_or(0),
    );
    let window_s = started.elapsed().as_secs_f64();
    let uplink_after = histogram(&client, &metrics, UPLINK_HISTOGRAM).await;
    sent?;
    let uplink = uplink_before
        .zip(uplink_after)
        .map(|((sum0, n0), (sum1, n1))| (sum1 - sum0, n1.saturating_sub(n0)));

    // The last probes get up to PROBE_TIMEOUT to show up.
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while Instant::now() < deadline && probes.lock().expect("probes lock").outstanding() > 0 {
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let query_times = poller.await.context("poller task")??;
    let backlog_max = backlog.await.context("backlog task")?;
    let _ = publish.disconnect().await;
    let summary = fleet_task.await.context("fleet task")??;
    if shutdown.is_cancelled() {
        bail!("interrupted");
    }
    agent.terminate(Duration::from_secs(10))?;
    collector.terminate(Duration::from_secs(10))?;

    let probes = std::mem::take(&mut *probes.lock().expect("probes lock"));
    let stats = probes.stats();
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut query_times = query_times;
    let mut e2e = stats.e2e;
    let mut puback = stats.puback;
    let mut after = stats.after_puback;
    Ok(LatencyRun {
        target_rate: args.rate,
        devices: args.devices,
        window_s,
        probe_every_ms: probe_every.as_secs_f64() * 1e3,
        poll_every_ms: poll_every.as_secs_f64() * 1e3,
        linger_ms: DEFAULT_LINGER_MS,
        load_readings_per_s: summary.steady.map_or(summary.rate(), |s| s.rate()),
        probes_sent: probes.sent.len() as u64,
        probes_seen: e2e.len() as u64,
        probes_lost: probes.sent.len() as u64 - e2e.len() as u64,
        e2e_p50_ms: ms(e2e.percentile(50.0)),
        e2e_p99_ms: ms(e2e.percentile(99.0)),
        e2e_max_ms: ms(e2e.percentile(100.0)),
        puback_p50_ms: ms(puback.percentile(50.0)),
        puback_p99_ms: ms(puback.percentile(99.0)),
        after_puback_p50_ms: ms(after.percentile(50.0)),
        after_puback_p99_ms: ms(after.percentile(99.0)),
        query_p50_ms: ms(query_times.percentile(50.0)),
        uplink_requests: uplink.map_or(0, |(_, n)| n),
        uplink_request_mean_ms: uplink
            .filter(|&(_, n)| n > 0)
            .map(|(sum, n)| sum / n as f64 * 1e3),
        agent_backlog_max: backlog_max,
        agent_cpu_s: cpu_after.0 - cpu_before.0,
        collector_cpu_s: cpu_after.1 - cpu_before.1,
        loadgen_cpu_s: cpu_after.2 - cpu_before.2,
        agent_peak_rss_mib: mib(peaks.0),
        collector_peak_rss_mib: mib(peaks.1),
    })
}

/// One probe reading on its way.
#[derive(Debug, Clone, Copy)]
struct Probe {
    published: Instant,
    puback: Option<Instant>,
    visible: Option<Instant>,
}

/// Every probe of the run, keyed by its SenML time in milliseconds.
#[derive(Debug, Default)]
struct Probes {
    sent: BTreeMap<u64, Probe>,
    /// Probes handed to rumqttc, in order, not yet given a packet id.
    unnumbered: VecDeque<u64>,
    /// Packet id to probe, until the PUBACK.
    by_pkid: BTreeMap<u16, u64>,
}

/// The latencies of the probes that were seen.
struct ProbeStats {
    e2e: Latencies,
    puback: Latencies,
    after_puback: Latencies,
}

impl Probes {
    /// Probes not seen yet and not given up on.
    fn outstanding(&self) -> usize {
        self.sent
            .values()
            .filter(|p| p.visible.is_none() && p.published.elapsed() < PROBE_TIMEOUT)
            .count()
    }

    /// The time range (ms, inclusive) of the outstanding probes.
    fn outstanding_range(&self) -> Option<(u64, u64)> {
        let mut waiting = self
            .sent
            .iter()
            .filter(|(_, p)| p.visible.is_none() && p.published.elapsed() < PROBE_TIMEOUT)
            .map(|(&t, _)| t);
        let first = waiting.next()?;
        Some((first, waiting.next_back().unwrap_or(first)))
    }

    fn stats(&self) -> ProbeStats {
        let mut stats = ProbeStats {
            e2e: Latencies::new(),
            puback: Latencies::new(),
            after_puback: Latencies::new(),
        };
        for probe in self.sent.values() {
            let Some(visible) = probe.visible else {
                continue;
            };
            stats.e2e.record(visible - probe.published);
            if let Some(puback) = probe.puback {
                stats.puback.record(puback - probe.published);
                stats
                    .after_puback
                    .record(visible.saturating_duration_since(puback));
            }
        }
        stats
    }
}

/// Connects the probe device and spawns the task that polls its event
/// loop, matching PUBACKs to probes; returns the client to publish with.
async fn probe_connection(
    mqtt: SocketAddr,
    probes: Arc<Mutex<Probes>>,
    stop: CancellationToken,
) -> anyhow::Result<AsyncClient> {
    let mut options = MqttOptions::new(PROBE_DEVICE, mqtt.ip().to_string(), mqtt.port());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_credentials(PROBE_DEVICE, "probe");
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(err)) => bail!("the probe device cannot connect to {mqtt}: {err}"),
        Err(_) => bail!("the probe device got no CONNACK from {mqtt} within 5 s"),
    }
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = eventloop.poll() => event,
            };
            let now = Instant::now();
            let mut probes = probes.lock().expect("probes lock");
            match event {
                // rumqttc writes publishes in the order they were handed over.
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(time) = probes.unnumbered.pop_front() {
                        probes.by_pkid.insert(pkid, time);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(time) = probes.by_pkid.remove(&ack.pkid) {
                        if let Some(probe) = probes.sent.get_mut(&time) {
                            probe.puback = Some(now);
                        }
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    // No reconnect: the probes left are reported lost.
                    tracing::warn!(error = %err, "probe connection failed");
                    return;
                }
            }
        }
    });
    Ok(client)
}

/// Publishes a probe every `every` for `window`, each with a SenML time of
/// its own (wall-clock milliseconds, bumped past the previous probe's).
async fn send_probes(
    client: &AsyncClient,
    probes: &Mutex<Probes>,
    every: Duration,
    window: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let topic = payload::topic(PROBE_DEVICE);
    let end = Instant::now() + window;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ms = 0;
    let mut index = 0_u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => bail!("interrupted"),
            _ = ticker.tick() => {}
        }
        if Instant::now() >= end {
            return Ok(());
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let time_ms = now_ms.max(last_ms + 1);
        last_ms = time_ms;
        index += 1;
        let reading = Reading {
            device_id: PROBE_DEVICE.to_owned(),
            name: PROBE_NAME.to_owned(),
            time: time_ms as f64 / 1e3,
            value: Value::Float(index as f64),
            unit: None,
        };
        let body = payload::encode(&reading);
        {
            let mut probes = probes.lock().expect("probes lock");
            probes.sent.insert(
                time_ms,
                Probe {
                    published: Instant::now(),
                    puback: None,
                    visible: None,
                },
            );
            probes.unnumbered.push_back(time_ms);
        }
        client
            .publish(&topic, QoS::AtLeastOnce, false, body)
            .await
            .context("publishing a probe")?;
    }
}

/// Asks the collector every `every` for the outstanding probes' time range
/// and marks those in the answer visible; returns each query's round trip.
async fn poll_collector(
    client: reqwest::Client,
    collector: SocketAddr,
    every: Duration,
    probes: Arc<Mutex<Probes>>,
    stop: CancellationToken,
) -> anyhow::Result<Latencies> {
    let url = format!("http://{collector}/v1/devices/{PROBE_DEVICE}/points");
    let mut round_trips = Latencies::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0_u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(round_trips),
            _ = ticker.tick() => {}
        }
        let range = probes.lock().expect("probes lock").outstanding_range();
        let Some((first, last)) = range else {
            continue;
        };
        // Half a millisecond either side: times go through f64 seconds.
        let (from, to) = ((first as f64 - 0.5) / 1e3, (last as f64 + 0.5) / 1e3);
        let asked = Instant::now();
        let answer = client
            .get(&url)
            .query(&[
                ("name", PROBE_NAME.to_owned()),
                ("from", from.to_string()),
                ("to", to.to_string()),
            ])
            .send()
            .await;
        let times = match answer {
            // Before the first probe arrives the device is unknown: 404.
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Vec::new(),
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.context("points answer")?;
                let body: serde_json::Value =
                    serde_json::from_slice(&body).context("points answer is not JSON")?;
                body["points"]
                    .as_array()
                    .map(|points| {
                        points
                            .iter()
                            .filter_map(|p| p["time"].as_f64())
                            .map(|t| (t * 1e3).round() as u64)
                            .collect()
                    })
                    .unwrap_or_default()
            }
            other => {
                failures += 1;
                if failures > 100 {
                    bail!("the collector's query API keeps failing: {other:?}");
                }
                continue;
            }
        };
        let now = Instant::now();
        round_trips.record(now - asked);
        let mut probes = probes.lock().expect("probes lock");
        for time in times {
            if let Some(probe) = probes.sent.get_mut(&time) {
                probe.visible.get_or_insert(now);
            }
        }
    }
}

/// Sum and count of the unlabelled histogram `name` at `url` (Prometheus
/// text); `None` when it cannot be read.
async fn histogram(client: &reqwest::Client, url: &str, name: &str) -> Option<(f64, u64)> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    parse_histogram(&text, name)
}

fn parse_histogram(text: &str, name: &str) -> Option<(f64, u64)> {
    let value = |suffix: &str| {
        let key = format!("{name}_{suffix} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((value("sum")?, value("count")? as u64))
}

/// The agent's largest spool backlog, read every [`BACKLOG_EVERY`] until `stop`.
async fn watch_backlog(client: reqwest::Client, health: String, stop: CancellationToken) -> u64 {
    let mut most = 0;
    let mut ticker = tokio::time::interval(BACKLOG_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return most,
            _ = ticker.tick() => {}
        }
        if let Ok(now) = pending(&client, &health).await {
            most = most.max(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(published: Instant, puback_ms: u64, visible_ms: Option<u64>) -> Probe {
        Probe {
            published,
            puback: Some(published + Duration::from_millis(puback_ms)),
            visible: visible_ms.map(|ms| published + Duration::from_millis(ms)),
        }
    }

    #[test]
    fn only_probes_not_seen_are_polled_for() {
        let now = Instant::now();
        let mut probes = Probes::default();
        probes.sent.insert(1_000, probe(now, 5, Some(150)));
        probes.sent.insert(1_100, probe(now, 5, None));
        probes.sent.insert(1_200, probe(now, 5, None));
        assert_eq!(probes.outstanding(), 2);
        assert_eq!(probes.outstanding_range(), Some((1_100, 1_200)));
        let stats = probes.stats();
        assert_eq!(stats.e2e.len(), 1);
        let mut after = stats.after_puback;
        assert_eq!(after.percentile(50.0), Some(Duration::from_millis(145)));
    }

    #[test]
    fn the_breakdown_names_the_largest_part() {
        let run = LatencyRun {
            target_rate: 10_000.0,
            devices: 100,
            window_s: 20.0,
            probe_every_ms: 100.0,
            poll_every_ms: 5.0,
            linger_ms: 100.0,
            load_readings_per_s: 9_990.0,
            probes_sent: 200,
            probes_seen: 200,
            probes_lost: 0,
            e2e_p50_ms: Some(400.0),
            e2e_p99_ms: Some(900.0),
            e2e_max_ms: Some(950.0),
            puback_p50_ms: Some(20.0),
            puback_p99_ms: Some(60.0),
            after_puback_p50_ms: Some(380.0),
            after_puback_p99_ms: Some(850.0),
            query_p50_ms: Some(1.0),
            uplink_requests: 200,
            uplink_request_mean_ms: Some(250.0),
            agent_backlog_max: 3000,
            agent_cpu_s: 5.0,
            collector_cpu_s: 8.0,
            loadgen_cpu_s: 4.0,
            agent_peak_rss_mib: 50.0,
            collector_peak_rss_mib: 80.0,
        };
        let text = run.dominant();
        assert!(
            text.starts_with("what dominates: the upload and the collector's commit, about 250 ms"),
            "{text}"
        );
        // 380 - 250 - (2.5 + 1) ms waiting; 9,990/s × 20 s over 200 batches.
        assert!(text.contains("batch wait ~126 ms"), "{text}");
        assert!(text.contains("~999 readings each"), "{text}");
    }

    #[test]
    fn histogram_sum_and_count_come_from_the_text_format() {
        let text = "# TYPE edge_uplink_request_seconds histogram\n\
                    edge_uplink_request_seconds_sum 1.5\n\
                    edge_uplink_request_seconds_count 30\n\
                    edge_uplink_request_seconds_bucket{le=\"0.001\"} 0\n\
                    edge_uplink_request_seconds_other_sum 9\n";
        assert_eq!(
            parse_histogram(text, "edge_uplink_request_seconds"),
            Some((1.5, 30))
        );
        assert_eq!(parse_histogram(text, "missing"), None);
    }
}
