//! `edge-agent status`: asks the running agent's admin API (`/healthz`)
//! twice, a second apart, and shows what a person on the gateway needs:
//! connected devices, ingest rate, spool depth and age, uplink state.

use crate::now_ms;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::admin::Health;

/// Fetches the agent's health at `base` (e.g. `http://127.0.0.1:8481`).
pub async fn fetch(client: &reqwest::Client, base: &str) -> anyhow::Result<Health> {
    let url = format!("{}/healthz", base.trim_end_matches('/'));
    let response = client.get(&url).send().await.with_context(|| {
        format!("cannot reach the agent at {url} (is it running? is --admin-listen right?)")
    })?;
    let text = response.text().await?;
    serde_json::from_str(&text).with_context(|| format!("unexpected answer from {url}"))
}

/// Prints the status of the agent at `base`, as a table or JSON.
pub async fn status(base: &str, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let first = fetch(&client, base).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = fetch(&client, base).await?;
    let secs = started.elapsed().as_secs_f64();
    let rate = second.mqtt.accepted.saturating_sub(first.mqtt.accepted) as f64 / secs;
    if json {
        let mut value = serde_json::to_value(&second)?;
        value["ingest_per_second"] = serde_json::json!(rate);
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)?;
        return Ok(());
    }
    let now = now_ms();
    let age = |t: Option<u64>| {
        t.map(|t| format!("{:.1} s ago", now.saturating_sub(t) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let h = &second;
    let uplink = match (&h.uplink.last_error, h.uplink.last_success_ms) {
        (Some(err), _) => format!("retrying: {err}"),
        (None, Some(_)) => "ok".into(),
        (None, None) => "no batch sent yet".into(),
    };
    let rows = [
        ("gateway", h.gateway_id.clone()),
        ("spool id", h.spool_id.clone()),
        ("mqtt", h.mqtt_listen.clone()),
        ("connected devices", h.mqtt.connections.to_string()),
        ("ingest", format!("{rate:.1} readings/s")),
        (
            "accepted / refused",
            format!("{} / {}", h.mqtt.accepted, h.mqtt.rejected),
        ),
        (
            "spool depth",
            format!("{} readings, {} bytes", h.spool.pending, h.spool.bytes),
        ),
        ("oldest reading", age(h.oldest_received_at)),
        ("uplink", uplink),
        ("last upload", age(h.uplink.last_success_ms)),
    ];
    for (name, value) in rows {
        writeln!(out, "{name:<20} {value}")?;
    }
    Ok(())
}
