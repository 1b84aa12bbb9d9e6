//! The live progress bar of a fleet run: acknowledged readings (against the
//! total when it is known), msg/s over the last second, connection errors.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::device::Counters;

const REFRESH: Duration = Duration::from_millis(250);

/// A progress bar refreshed from the fleet's counters by its own task.
pub(crate) struct Progress {
    bar: ProgressBar,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts drawing on stderr; `total` is the number of readings expected,
    /// when the run is bounded by a reading count.
    pub fn start(counters: Arc<Counters>, total: Option<u64>) -> Progress {
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} acked  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} acked  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(refresh(bar.clone(), counters, cancel.clone()));
        Progress { bar, cancel, task }
    }

    /// Stops refreshing and clears the bar so the summary prints cleanly.
    pub async fn finish(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        self.bar.finish_and_clear();
    }
}

async fn refresh(bar: ProgressBar, counters: Arc<Counters>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(REFRESH);
    let mut last = (tokio::time::Instant::now(), 0u64);
    // Exponential moving average over roughly the last second.
    let mut rate = 0.0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let acked = counters.acked.load(Ordering::Relaxed);
        let secs = now.duration_since(last.0).as_secs_f64();
        if secs > 0.0 {
            let instant = acked.saturating_sub(last.1) as f64 / secs;
            rate = 0.7 * rate + 0.3 * instant;
        }
        last = (now, acked);
        bar.set_position(acked);
        bar.set_message(format!(
            "{rate:.0} msg/s  {} errors",
            counters.errors.load(Ordering::Relaxed)
        ));
    }
}
