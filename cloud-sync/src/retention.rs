//! The retention task: at start and then every `retention.interval`, the
//! store deletes each device's points older than its period (by SenML point
//! time) and its documents older than it (by `received_at`, the gateway's
//! arrival time), then the run is logged at INFO, counted and recorded in
//! the audit log as `retention.run` by `system`.
//!
//! A run stops at shutdown: each store removes a device's data in atomic
//! chunks (`store/sled/remove.rs`, `store/postgres/remove.rs`), so a cut-off
//! run leaves consistent data and the next run finishes the job.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::audit::{Details, ACTOR_SYSTEM};
use crate::config::Retention;
use crate::model::{ExpiryOutcome, ExpiryPolicy};
use crate::state::AppState;
use crate::store::StoreError;

/// The cutoffs of `retention` at `now`: nanoseconds since the epoch.
pub fn policy(retention: &Retention, now: SystemTime) -> ExpiryPolicy {
    let now_ns = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let cutoff = |period: Option<Duration>| {
        period.map(|p| now_ns.saturating_sub(i64::try_from(p.as_nanos()).unwrap_or(i64::MAX)))
    };
    ExpiryPolicy {
        default: cutoff(retention.default),
        devices: retention
            .devices
            .iter()
            .map(|(device, period)| (device.clone(), cutoff(*period)))
            .collect(),
    }
}

/// One retention run as of `now`; nothing when no retention is configured.
/// Logs, counts and audits it whatever the outcome.
pub async fn run_once(state: &AppState, now: SystemTime) -> Result<ExpiryOutcome, StoreError> {
    let Some(retention) = state.retention() else {
        return Ok(ExpiryOutcome::default());
    };
    let policy = policy(retention, now);
    let started = Instant::now();
    let result = state.store().expire(policy.clone()).await;
    let mut details = Details::new();
    details.insert(
        "default".into(),
        retention
            .default
            .map_or("forever".to_owned(), |d| {
                humantime::format_duration(d).to_string()
            })
            .into(),
    );
    if let Some(cutoff) = policy.default {
        details.insert("default_cutoff".into(), rfc3339_of_nanos(cutoff).into());
    }
    details.insert("overrides".into(), retention.devices.len().into());
    match &result {
        Ok(outcome) => {
            tracing::info!(
                points = outcome.points,
                documents = outcome.documents,
                devices = outcome.devices,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "retention run removed old data"
            );
            state.metrics().observe_retention(Some(outcome));
            details.insert("result".into(), "ok".into());
            details.insert("points".into(), outcome.points.into());
            details.insert("documents".into(), outcome.documents.into());
            details.insert("devices".into(), outcome.devices.into());
        }
        Err(err) => {
            tracing::error!(error = %err, "retention run failed; the next run retries");
            state.metrics().observe_retention(None);
            details.insert("result".into(), "error".into());
        }
    }
    if let Err(err) = state.record(ACTOR_SYSTEM, "retention.run", details).await {
        tracing::error!(error = %err, "cannot record the retention run in the audit log");
    }
    result
}

/// Runs retention at start and every `retention.interval` until `shutdown`.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let Some(interval) = state.retention().map(|r| r.interval) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                tracing::info!("retention run stopped by shutdown; the next start finishes it");
                return;
            }
            // Errors are logged, counted and audited by run_once.
            _ = run_once(&state, SystemTime::now()) => {}
        }
    }
}

fn rfc3339_of_nanos(nanos: i64) -> String {
    let time = if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn cutoffs_are_now_minus_the_period() {
        let day = Duration::from_secs(86_400);
        let retention = Retention {
            default: Some(90 * day),
            devices: BTreeMap::from([("a".to_owned(), Some(day)), ("b".to_owned(), None)]),
            interval: Duration::from_secs(3600),
        };
        let now = UNIX_EPOCH + 100 * day;
        let policy = policy(&retention, now);
        let ns = |d: Duration| d.as_nanos() as i64;
        assert_eq!(policy.default, Some(ns(10 * day)));
        assert_eq!(policy.cutoff("a"), Some(ns(99 * day)));
        assert_eq!(policy.cutoff("b"), None);
        assert_eq!(policy.cutoff("c"), Some(ns(10 * day)));
        // A period longer than the epoch's age reaches before it, harmlessly.
        let long = Retention {
            default: Some(1000 * day),
            ..retention
        };
        assert!(super::policy(&long, now).default.unwrap() < 0);
        assert_eq!(rfc3339_of_nanos(ns(day)), "1970-01-02T00:00:00Z");
    }
}
