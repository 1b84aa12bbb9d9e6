//! Runs a fleet: one task per virtual device, a timer for the duration, a
//! watchdog for a broker nobody can reach, the progress bar, and the merge of
//! every device's acknowledged readings into the [`Summary`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::QoS;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::FleetConfig;
use crate::device::{self, Counters, DeviceParams};
use crate::latency::Latencies;
use crate::ledger::Ledger;
use crate::progress::Progress;
use crate::summary::{Steady, Summary};

/// Devices start within this window (or one reading period, if shorter).
const MAX_START_SPREAD: Duration = Duration::from_secs(1);

/// Why a fleet run gave up.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No device got a CONNACK within the connect timeout: the broker is
    /// down, the address is wrong or it refuses the credentials. Check
    /// `broker` and that the broker is running.
    #[error("no device could connect to {broker} within {}: {error}", humantime::format_duration(*.waited))]
    Unreachable {
        broker: String,
        waited: Duration,
        error: String,
    },
}

/// Simulates `config.devices` devices publishing to `config.broker` until each
/// has its `readings_per_device` acknowledged, `duration` elapses or
/// `shutdown` is cancelled. On duration or shutdown the devices stop taking
/// readings and wait up to ~2 s for outstanding acknowledgements; what is
/// still unacknowledged then is reported as sent but not acked.
///
/// Fails on an invalid config, or when no device at all can connect within
/// the connect timeout; once one has connected, connection errors are counted
/// and retried until the run ends.
pub async fn run_fleet(
    config: FleetConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<Summary> {
    config.validate().context("invalid fleet config")?;
    let (host, port) = config.broker_addr()?;
    let interval = config.interval();
    // Spread the connects (a millisecond a device when flat out, so a small
    // benchmark is not dominated by it) and, with a rate, the reading phases.
    let start_spread = interval
        .unwrap_or(Duration::from_millis(config.devices as u64))
        .min(MAX_START_SPREAD);
    let connect_timeout_secs = config.connect_timeout.as_secs_f64().ceil().max(1.0) as u64;
    let params = Arc::new(DeviceParams {
        host,
        port,
        qos: if config.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        inflight: config.inflight,
        connect_timeout_secs,
        readings: config.readings_per_device,
        interval,
        seed: config.seed,
        start_spread,
        payload_bytes: config.payload_bytes,
        keep_ledger: config.keep_ledger,
        record_latency: config.record_latency,
    });
    let counters = Arc::new(Counters::default());
    // Cancelled by shutdown, the duration timer or the watchdog.
    let stop = shutdown.child_token();
    let tracker = TaskTracker::new();
    let started = Instant::now();
    tracing::info!(
        broker = %config.broker,
        devices = config.devices,
        rate = config.rate,
        qos = config.qos,
        "fleet starting"
    );

    let devices: Vec<_> = (0..config.devices)
        .map(|index| {
            tracker.spawn(device::run_device(
                index,
                config.device_id(index),
                params.clone(),
                counters.clone(),
                tracker.clone(),
                stop.child_token(),
            ))
        })
        .collect();
    // Stops the run after `duration`; counts the acknowledgements between
    // `warmup` and then, so that connects and the final drain stay out.
    let timer = config.duration.map(|duration| {
        let (stop, counters) = (stop.clone(), counters.clone());
        let warmup = config.warmup.min(duration);
        tracker.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(warmup) => {}
                () = stop.cancelled() => return None,
            }
            let (from, at) = (counters.acked.load(Ordering::Relaxed), Instant::now());
            tokio::select! {
                () = tokio::time::sleep(duration - warmup) => stop.cancel(),
                () = stop.cancelled() => return None,
            }
            Some(Steady {
                acked: counters.acked.load(Ordering::Relaxed) - from,
                elapsed: at.elapsed(),
            })
        })
    });
    let watchdog_wait =
        start_spread + Duration::from_secs(connect_timeout_secs) + Duration::from_secs(1);
    let watchdog = {
        let (stop, counters) = (stop.clone(), counters.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(watchdog_wait) => {}
                () = stop.cancelled() => return false,
            }
            let unreachable = !counters.connected_once.load(Ordering::Relaxed);
            if unreachable {
                stop.cancel();
            }
            unreachable
        })
    };
    let total = config
        .readings_per_device
        .map(|n| n.saturating_mul(config.devices as u64));
    let progress = config
        .progress
        .then(|| Progress::start(counters.clone(), total));

    let mut ledger = Ledger::new();
    let mut latency = Latencies::new();
    let mut panicked = None;
    for device in devices {
        match device.await {
            Ok(outcome) => {
                ledger.extend(outcome.acked);
                latency.extend(outcome.latency);
            }
            Err(e) => panicked = Some(e),
        }
    }
    let elapsed = started.elapsed();
    // Ends the duration timer and the watchdog if they are still waiting.
    stop.cancel();
    let unreachable = watchdog.await.unwrap_or(false);
    let steady = match timer {
        Some(timer) => timer.await.ok().flatten(),
        None => None,
    };
    tracker.close();
    tracker.wait().await;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    if let Some(e) = panicked {
        return Err(anyhow::anyhow!("a device task failed: {e}"));
    }
    if unreachable {
        return Err(FleetError::Unreachable {
            broker: config.broker.clone(),
            waited: Duration::from_millis(watchdog_wait.as_millis() as u64),
            error: counters
                .first_error()
                .unwrap_or_else(|| "no answer".to_owned()),
        }
        .into());
    }
    ledger.sort();
    let summary = Summary {
        sent: counters.sent.load(Ordering::Relaxed),
        acked: counters.acked.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        elapsed,
        ledger,
        latency,
        steady: steady.filter(|s| !s.elapsed.is_zero()),
    };
    tracing::info!(
        sent = summary.sent,
        acked = summary.acked,
        errors = summary.errors,
        elapsed = ?summary.elapsed,
        "fleet finished"
    );
    Ok(summary)
}
