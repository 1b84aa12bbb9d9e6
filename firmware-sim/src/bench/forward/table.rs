//! `bench forward`'s Markdown: one row per pipeline, then what only one of
//! them can tell (the sink's resends, Node-RED's failed requests,
//! Mosquitto's drops). Only formatting happens here.

use std::fmt::Write;

use super::measure::{ForwardReport, ForwardRun};
use crate::bench::report::num;

/// The report of a whole `bench forward` run.
pub(super) fn markdown(report: &ForwardReport) -> String {
    let plan = &report.plan;
    let mut out = format!(
        "### Forwarding to HTTP: {} devices × {} readings/s, QoS 1, {}-byte readings, receiver down {:.0} s\n\n",
        report.devices, report.rate, report.payload_bytes, plan.outage_s
    );
    let _ = writeln!(
        out,
        "Phases: {:.0} s warm-up, {:.0} s steady, {:.0} s outage, {:.0} s after, then up to {:.0} s to settle. \
         Lost = acknowledged to the devices − distinct readings delivered.\n",
        plan.warmup_s, plan.steady_s, plan.outage_s, plan.after_s, plan.settle_limit_s
    );
    out.push_str(
        "| pipeline | published | acknowledged | delivered | lost | lost % | delivered/s, steady \
         | delivered during outage | delivered after return | forwarder CPU s | forwarder peak RSS MiB \
         | broker CPU s | broker peak RSS MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for run in &report.runs {
        out.push_str(&row(run));
    }
    out.push('\n');
    for run in &report.runs {
        out.push_str(&notes(run));
    }
    let versions: Vec<String> = [
        report
            .node_red_version
            .as_ref()
            .map(|v| format!("Node-RED {v}")),
        report.node_version.as_ref().map(|v| format!("Node.js {v}")),
        report.mosquitto_version.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !versions.is_empty() {
        let _ = writeln!(out, "- {}", versions.join(", "));
    }
    if let Some([one, five, fifteen]) = report.load_average {
        let _ = writeln!(
            out,
            "- load average at the start: {one:.2} {five:.2} {fifteen:.2} (2 cores shared; figures are indicative)"
        );
    }
    out
}

fn row(run: &ForwardRun) -> String {
    let lost_pct =
        (run.acknowledged > 0).then(|| run.lost as f64 * 100.0 / run.acknowledged as f64);
    let broker = |v: Option<f64>, digits| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "in edge-agent".to_owned(),
    };
    format!(
        "| {} | {} | {} | {} | {} | {} % | {:.0} | {} | {} | {:.1} | {:.0} | {} | {} |\n",
        run.system.label(),
        run.published,
        run.acknowledged,
        run.delivered,
        run.lost,
        num(lost_pct, 1),
        run.steady_delivered_per_s,
        run.delivered_during_outage,
        run.delivered_after_outage,
        run.forwarder_cpu_s,
        run.forwarder_peak_rss_mib,
        broker(run.broker_cpu_s, 1),
        broker(run.broker_peak_rss_mib, 0),
    )
}

/// One line per pipeline with what the table has no column for.
fn notes(run: &ForwardRun) -> String {
    let mut parts = vec![format!("outage lasted {:.1} s", run.outage_s)];
    parts.push(format!(
        "deliveries ended {:.1} s after the fleet stopped",
        run.settle_s
    ));
    if !run.settled {
        parts.push("still delivering when the settle limit ended the run".to_owned());
    }
    let extras = &run.extras;
    if let Some(requests) = extras.sink_requests {
        parts.push(format!(
            "{requests} requests reached the sink ({} resends)",
            requests.saturating_sub(run.delivered)
        ));
    }
    if let Some(failed) = extras.failed_requests {
        parts.push(format!("{failed} failed requests logged by Node-RED"));
    }
    if let Some(dropped) = extras.broker_dropped {
        parts.push(format!("Mosquitto dropped {dropped} publishes"));
    }
    parts.push(format!("load generator {:.1} CPU s", run.loadgen_cpu_s));
    format!("- {}: {}\n", run.system.label(), parts.join("; "))
}
