//! The benchmarks' Markdown: for each load, a table of ratios (ours over
//! each peer) first, then the absolute figures. Only formatting happens
//! here; every number comes from a run.

use std::fmt::Write;

use super::collector::CollectorReport;
use super::compare::{IngestRun, Target};
use super::drain::DrainRun;
use super::latency::LatencyRun;
use super::suite::{describe, SuiteReport};

/// `ours / peer` as "1.23×"; "-" when either is missing or the peer is 0.
pub(super) fn ratio(ours: Option<f64>, peer: Option<f64>) -> String {
    match (ours, peer) {
        (Some(ours), Some(peer)) if peer > 0.0 && ours.is_finite() => {
            let r = ours / peer;
            if r >= 100.0 {
                format!("{r:.0}×")
            } else if r >= 10.0 {
                format!("{r:.1}×")
            } else {
                format!("{r:.2}×")
            }
        }
        _ => "-".to_owned(),
    }
}

/// A number with `digits` decimals, "-" when missing.
pub(super) fn num(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The title of one load: QoS, and flat out or a rate.
fn load_title(qos: u8, rate: f64) -> String {
    if rate > 0.0 {
        format!("QoS {qos}, every device at {rate} readings/s")
    } else {
        format!("QoS {qos}, flat out")
    }
}

/// Ratio and absolute tables of `runs`, one section per (QoS, rate), in the
/// order the runs came.
pub(super) fn ingest_tables(runs: &[IngestRun]) -> String {
    let mut loads: Vec<(u8, f64)> = Vec::new();
    for run in runs {
        if !loads.contains(&(run.qos, run.rate)) {
            loads.push((run.qos, run.rate));
        }
    }
    let mut out = String::new();
    for (qos, rate) in loads {
        let these: Vec<&IngestRun> = runs
            .iter()
            .filter(|r| r.qos == qos && r.rate == rate)
            .collect();
        let _ = writeln!(out, "### {}\n", load_title(qos, rate));
        out.push_str(&ratio_table(&these, qos));
        out.push('\n');
        out.push_str(&absolute_table(&these));
        out.push('\n');
    }
    out
}

/// For QoS 0 the rate compared is what each system took in, not what the
/// fleet wrote: a socket buffer takes QoS 0 publishes a slow broker has not
/// read.
fn ratio_table(runs: &[&IngestRun], qos: u8) -> String {
    let rate = |r: &IngestRun| {
        if qos == 0 {
            r.received_per_s()
        } else {
            Some(r.msg_per_s)
        }
    };
    let mut out = format!(
        "edge-agent / peer ({}: above 1 is faster; latency, memory, CPU: below 1 is less)\n\n\
         | devices | peer | {} | PUBACK p50 | PUBACK p99 | peak RSS | CPU per msg |\n\
         |---|---|---|---|---|---|---|\n",
        if qos == 0 { "received/s" } else { "msg/s" },
        if qos == 0 { "received/s" } else { "msg/s" },
    );
    let mut rows = 0;
    for ours in runs.iter().filter(|r| r.target == Target::EdgeAgent) {
        for peer in runs
            .iter()
            .filter(|r| r.target != Target::EdgeAgent && r.devices == ours.devices)
        {
            rows += 1;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                ours.devices,
                peer.target.label(),
                ratio(rate(ours), rate(peer)),
                ratio(ours.puback_p50_ms, peer.puback_p50_ms),
                ratio(ours.puback_p99_ms, peer.puback_p99_ms),
                ratio(Some(ours.peak_rss_mib), Some(peer.peak_rss_mib)),
                ratio(ours.system_cpu_us_per_msg(), peer.system_cpu_us_per_msg()),
            );
        }
    }
    if rows == 0 {
        out.push_str("| - | no edge-agent run and peer of the same fleet | | | | | |\n");
    }
    out
}

fn absolute_table(runs: &[&IngestRun]) -> String {
    let mut out = String::from(
        "| devices | system | msg/s | PUBACK p50 ms | PUBACK p99 ms | idle RSS MiB | peak RSS MiB \
         | CPU s system | CPU s load gen | CPU µs/msg system | CPU µs/msg load gen \
         | acked | sent, not acked | received/s | kept | disk bytes/reading |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            run.devices,
            run.target.label(),
            run.msg_per_s,
            num(run.puback_p50_ms, 2),
            num(run.puback_p99_ms, 2),
            run.idle_rss_mib,
            run.peak_rss_mib,
            run.system_cpu_s,
            run.loadgen_cpu_s,
            num(run.system_cpu_us_per_msg(), 1),
            num(run.loadgen_cpu_us_per_msg(), 1),
            run.acked,
            run.sent.saturating_sub(run.acked),
            num(run.received_per_s(), 0),
            run.kept.map_or("-".to_owned(), |k| k.to_string()),
            num(run.disk_bytes_per_reading(), 0),
        );
    }
    out
}

/// The table of `bench drain`.
pub(super) fn drain_table(runs: &[DrainRun]) -> String {
    let mut out = String::from(
        "| spool | readings | ingest msg/s (collector down) | drain s | drain readings/s | first batch stored after s \
         | readings/s from the first batch | agent peak RSS MiB, backlog building \
         | agent RSS MiB, restarted on the backlog | agent peak RSS MiB, draining \
         | collector peak RSS MiB | agent CPU s (drain) | collector CPU s (drain) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let _ = writeln!(
        out,
        "| {} | {} | {:.0} | {:.1}{} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
        if run.encrypted { "encrypted" } else { "plain" },
        run.readings,
        run.ingest_msg_per_s,
        run.drain_s,
        if run.drained { "" } else { " (NOT drained)" },
        run.drain_readings_per_s,
        num(run.first_batch_s, 2),
        num(run.readings_per_s_after_first_batch, 0),
        run.agent_peak_rss_outage_mib,
        run.agent_rss_restarted_mib,
        run.agent_peak_rss_drain_mib,
        run.collector_peak_rss_mib,
        run.agent_cpu_s,
        run.collector_cpu_s,
    );
    }
    out
}

/// The table of `bench latency`.
pub(super) fn latency_table(runs: &[LatencyRun]) -> String {
    let mut out = String::from(
        "| load readings/s (asked) | load readings/s (acked) | devices | probes seen / sent \
         | end-to-end p50 ms | p99 ms | max ms | publish to PUBACK p50 ms | p99 ms \
         | PUBACK to visible p50 ms | p99 ms | poll every ms | poll round trip p50 ms \
         | uplink batches | upload mean ms | agent backlog max | agent CPU % | collector CPU % | load gen CPU % \
         | agent peak RSS MiB | collector peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let percent = |cpu_s: f64| 100.0 * cpu_s / run.window_s.max(0.001);
        let _ = writeln!(
            out,
            "| {:.0} | {:.0} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            run.target_rate,
            run.load_readings_per_s,
            run.devices,
            run.probes_seen,
            run.probes_sent,
            num(run.e2e_p50_ms, 0),
            num(run.e2e_p99_ms, 0),
            num(run.e2e_max_ms, 0),
            num(run.puback_p50_ms, 1),
            num(run.puback_p99_ms, 1),
            num(run.after_puback_p50_ms, 0),
            num(run.after_puback_p99_ms, 0),
            run.poll_every_ms,
            num(run.query_p50_ms, 1),
            run.uplink_requests,
            num(run.uplink_request_mean_ms, 1),
            run.agent_backlog_max,
            percent(run.agent_cpu_s),
            percent(run.collector_cpu_s),
            percent(run.loadgen_cpu_s),
            run.agent_peak_rss_mib,
            run.collector_peak_rss_mib,
        );
    }
    out
}

/// The tables of `bench collector`: ingest, then the day's query, then
/// one line per store left out.
pub(super) fn collector_table(report: &CollectorReport) -> String {
    if report.runs.is_empty() {
        return report.skipped.join("\n") + "\n";
    }
    let mut out = String::from(
        "| store | collectors | points | batches × envelopes | devices | requests in flight | seconds | points/s \
         | batch p50 ms | batch p99 ms | collector CPU s | client CPU s | collector peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in &report.runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} × {} | {} | {} | {:.1} | {:.0} | {} | {} | {:.1} | {:.1} | {:.0} |",
            run.store.label(),
            run.collectors,
            run.points,
            run.batches,
            run.batch_envelopes,
            run.devices,
            run.concurrency,
            run.ingest_s,
            run.points_per_s,
            num(run.batch_p50_ms, 0),
            num(run.batch_p99_ms, 0),
            run.collector_cpu_s,
            run.client_cpu_s,
            run.collector_peak_rss_mib,
        );
    }
    out.push_str(
        "\n| store | day of one device | buckets (step 60 s) | queries | query p50 ms | p99 ms | max ms \
         | collector CPU ms per query |\n|---|---|---|---|---|---|---|---|\n",
    );
    for run in &report.runs {
        let _ = writeln!(
            out,
            "| {} | {} readings, one every {} s | {} | {} | {} | {} | {} | {:.1} |",
            run.store.label(),
            run.day_points,
            run.day_every_s,
            run.buckets,
            run.queries,
            num(run.query_p50_ms, 1),
            num(run.query_p99_ms, 1),
            num(run.query_max_ms, 1),
            1e3 * run.query_collector_cpu_s / run.queries.max(1) as f64,
        );
    }
    for line in &report.skipped {
        let _ = writeln!(out, "\n{line}");
    }
    out
}

/// The whole suite's Markdown.
pub(super) fn suite_markdown(report: &SuiteReport) -> String {
    let mut out = format!(
        "# Benchmark results, {}\n\nWritten by `firmware-sim bench suite` \
         (`bench/run.sh`); see `docs/benchmarks.md` for what each figure means.\n\n",
        report.started_at
    );
    out.push_str(&describe(report));
    out.push_str("\n## Ingest: edge-agent and Mosquitto, one load generator\n\n");
    out.push_str(&ingest_tables(&report.ingest));
    if !report.drain.is_empty() {
        let _ = writeln!(
            out,
            "## Drain: a backlog spooled with the collector down, then caught up\n\n\
             {} devices, inflight {}, QoS 1; uplink.backoff_max = 1s.\n",
            report.settings.drain_devices, report.settings.drain_inflight
        );
        out.push_str(&drain_table(&report.drain));
        out.push('\n');
    }
    if let Some(run) = &report.latency {
        let _ = writeln!(
            out,
            "## End to end: publish to queryable in the collector\n\n\
             {} devices at {:.0} readings/s in total, QoS 1, through the real edge-agent and cloud-sync \
             (sled), default uplink settings (linger {:.0} ms); a probe reading every {:.0} ms for {:.0} s, \
             the collector polled every {:.0} ms.\n",
            run.devices,
            run.target_rate,
            run.linger_ms,
            run.probe_every_ms,
            run.window_s,
            run.poll_every_ms
        );
        out.push_str(&latency_table(std::slice::from_ref(run)));
        let _ = writeln!(out, "\n{}\n", run.dominant());
    }
    if let Some(collector) = &report.collector {
        out.push_str("## Collector: ingest and a day's aggregate query\n\n");
        out.push_str(&collector_table(collector));
        out.push('\n');
    }
    let w = &report.wire;
    let _ = writeln!(
        out,
        "## Bytes per reading\n\n\
         | where | bytes per reading |\n|---|---|\n\
         | SenML-CBOR payload | {} |\n\
         | MQTT, QoS 1 (PUBLISH + PUBACK) | {} |\n\
         | MQTT, QoS 0 (PUBLISH) | {} |\n\
         | upload body, CBOR SyncBatch of {} | {:.1} |\n\
         | upload body, gzip (fast) | {:.1} |\n\
         | upload body, zstd (level 3, the default) | {:.1} |",
        w.payload,
        w.mqtt_qos1,
        w.mqtt_qos0,
        w.batch_records,
        w.upload_cbor,
        w.upload_gzip,
        w.upload_zstd
    );
    for drain in &report.drain {
        let spool = if drain.encrypted {
            "encrypted"
        } else {
            "plain"
        };
        let _ = writeln!(
            out,
            "| spool blocks ({spool}, {} readings spooled) | {:.1} |\n\
             | spool files on disk ({spool}, segments and sled, same backlog) | {:.1} |",
            drain.readings, drain.spool_block_bytes_per_reading, drain.spool_disk_bytes_per_reading
        );
    }
    for run in report.ingest.iter().filter(|r| r.qos == 1 && r.rate == 0.0) {
        if let Some(bytes) = run.disk_bytes_per_reading() {
            let _ = writeln!(
                out,
                "| on disk after the QoS 1 run, {} devices: {} ({} readings kept) | {bytes:.1} |",
                run.devices,
                run.target.label(),
                run.kept.unwrap_or(0)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: Target, devices: usize, msg_per_s: f64, p99: Option<f64>) -> IngestRun {
        IngestRun {
            target,
            devices,
            qos: 1,
            rate: 0.0,
            msg_per_s,
            acked: 1000,
            sent: 1010,
            connection_errors: 0,
            puback_p50_ms: p99.map(|p| p / 2.0),
            puback_p99_ms: p99,
            idle_rss_mib: 5.0,
            peak_rss_mib: 20.0,
            system_cpu_s: 2.0,
            loadgen_cpu_s: 3.0,
            received: Some(1000),
            kept: Some(1000),
            disk_bytes: Some(150_000),
            elapsed_s: 10.0,
        }
    }

    #[test]
    fn ratios_are_ours_over_the_peer() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50×");
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25×");
        assert_eq!(ratio(Some(500.0), Some(20.0)), "25.0×");
        assert_eq!(ratio(Some(50_000.0), Some(170.0)), "294×");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
        assert_eq!(ratio(None, Some(1.0)), "-");
    }

    #[test]
    fn one_ratio_row_per_peer_of_the_same_fleet() {
        let runs = [
            run(Target::EdgeAgent, 100, 40_000.0, Some(4.0)),
            run(Target::MosquittoDefault, 100, 50_000.0, Some(2.0)),
            run(Target::MosquittoEveryChange, 100, 200.0, Some(400.0)),
            run(Target::EdgeAgent, 1000, 30_000.0, Some(8.0)),
            run(Target::MosquittoPlain, 1000, 60_000.0, Some(1.0)),
        ];
        let text = ingest_tables(&runs);
        assert!(text.starts_with("### QoS 1, flat out\n"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| 1")).collect();
        // 3 ratio rows (2 peers at 100, 1 at 1000) and 5 absolute rows.
        assert_eq!(rows.len(), 8, "{text}");
        assert!(rows[0].starts_with(
            "| 100 | Mosquitto, queue for offline consumer, default autosave | 0.80× | 2.00× | 2.00× | 1.00× | 1.00× |"
        ), "{}", rows[0]);
        assert!(rows[1].contains("| 200× | 0.01× | 0.01× |"), "{}", rows[1]);
        assert!(rows[2].starts_with("| 1000 | Mosquitto keeping nothing (ceiling) | 0.50× |"));
        // Absolute: CPU per message, unacked and disk per reading derived.
        assert!(rows[3].starts_with("| 100 | edge-agent (durable before PUBACK) | 40000 | 2.00 | 4.00 | 5.0 | 20.0 | 2.0 | 3.0 | 2000.0 | 3000.0 | 1000 | 10 | 100 | 1000 | 150 |"), "{}", rows[3]);
    }

    #[test]
    fn qos_0_compares_what_each_system_took_in_not_what_was_written() {
        let mut ours = run(Target::EdgeAgent, 100, 50_000.0, None);
        let mut peer = run(Target::MosquittoEveryChange, 100, 50_000.0, None);
        ours.qos = 0;
        peer.qos = 0;
        ours.received = Some(500_000);
        peer.received = Some(20_000);
        let text = ingest_tables(&[ours, peer]);
        assert!(
            text.contains(
                "| 100 | Mosquitto, queue for offline consumer, autosave on every change | 25.0× |"
            ),
            "{text}"
        );
    }

    #[test]
    fn collector_tables_have_a_row_per_store_and_say_what_was_skipped() {
        let run = super::super::collector::CollectorRun {
            store: super::super::collector::StoreKind::Sled,
            collectors: 1,
            points: 200_000,
            batches: 200,
            batch_envelopes: 1000,
            devices: 1000,
            concurrency: 4,
            ingest_s: 4.0,
            points_per_s: 50_000.0,
            batch_p50_ms: Some(70.0),
            batch_p99_ms: Some(150.0),
            collector_cpu_s: 6.0,
            client_cpu_s: 0.5,
            collector_peak_rss_mib: 120.0,
            day_points: 8640,
            day_every_s: 10.0,
            buckets: 1440,
            queries: 100,
            query_p50_ms: Some(12.0),
            query_p99_ms: Some(20.0),
            query_max_ms: Some(25.0),
            query_collector_cpu_s: 1.0,
        };
        let text = collector_table(&CollectorReport {
            runs: vec![run],
            skipped: vec!["PostgreSQL skipped: no server at x".to_owned()],
        });
        assert!(
            text.contains("| sled | 1 | 200000 | 200 × 1000 | 1000 | 4 | 4.0 | 50000 | 70 | 150 |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| sled | 8640 readings, one every 10 s | 1440 | 100 | 12.0 | 20.0 | 25.0 | 10.0 |"
            ),
            "{text}"
        );
        assert!(text
            .trim_end()
            .ends_with("PostgreSQL skipped: no server at x"));
    }

    #[test]
    fn loads_get_their_own_sections() {
        let mut qos0 = run(Target::EdgeAgent, 100, 1.0, None);
        qos0.qos = 0;
        let mut paced = run(Target::EdgeAgent, 1000, 1.0, Some(1.0));
        paced.rate = 10.0;
        let text = ingest_tables(&[run(Target::EdgeAgent, 100, 1.0, Some(1.0)), qos0, paced]);
        let titles: Vec<&str> = text.lines().filter(|l| l.starts_with("###")).collect();
        assert_eq!(
            titles,
            [
                "### QoS 1, flat out",
                "### QoS 0, flat out",
                "### QoS 1, every device at 10 readings/s"
            ]
        );
    }
}
