//! The uplink: reads batches from the spool, posts them to the collector and
//! deletes them only after a 2xx.
//!
//! ```text
//! read readings after `sent` ─▶ batch full? ──no──▶ wait for more until the first
//!        ▲                       │ yes               reading is `linger` old
//!        │                       ▼
//!        └── ack(last seq) ◀── POST /v1/batches ──▶ retry (backoff + jitter,
//!                                                   Retry-After, split on 413)
//! ```
//!
//! Answers: 2xx acknowledges; 400 moves the batch to the dead-letter tree and
//! goes on; 401/403 raise an ERROR and retry at the slowest pace; 413 halves
//! the batch; 429/503 wait as `Retry-After` says; anything else (5xx,
//! timeouts, resets) retries with capped exponential backoff and jitter,
//! forever. Invariant: a reading leaves the spool only after the collector
//! answered 2xx for a batch holding it (or 400, into the dead letters).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use telemetry::{encode_batch, BatchResponse, Envelope, SyncBatch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::config::{Compression, UplinkConfig};
use crate::metrics::{StatusLabel, UplinkMetrics};
use crate::spool::Spool;

/// What the admin API reports about the uplink.
#[derive(Debug, Default)]
pub struct UplinkState {
    /// Unix ms of the last 2xx, 0 if none yet.
    pub last_success_ms: AtomicU64,
    /// The last failure, cleared by the next success.
    pub last_error: Mutex<Option<String>>,
}

pub struct Uplink {
    pub gateway_id: String,
    pub spool: Spool,
    pub config: UplinkConfig,
    pub metrics: UplinkMetrics,
    pub state: Arc<UplinkState>,
}

/// How one attempt at a batch ended.
enum Outcome {
    Stored,
    /// The collector refuses this batch for good (400).
    Refused(String),
    /// The batch is too large for the collector (413).
    TooLarge,
    /// Try again after this long.
    Retry {
        after: Option<Duration>,
        reason: String,
        alarm: bool,
    },
}

impl Uplink {
    /// Runs until `shutdown`; whatever was not acknowledged stays spooled.
    pub async fn run(self, shutdown: CancellationToken) {
        let client = match reqwest::Client::builder()
            .timeout(self.config.request_timeout)
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                error!(error = %err, "cannot build the uplink http client");
                return;
            }
        };
        let mut durable = self.spool.subscribe();
        let mut sent = self.spool.stats().acked_seq;
        // Lowered after a 413, so that batches fit the collector's limit.
        let mut batch_limit = self.config.max_batch_records;
        loop {
            let Some(batch) = self
                .next_batch(sent, batch_limit, &mut durable, &shutdown)
                .await
            else {
                return;
            };
            let mut attempt = 0u32;
            loop {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    outcome = self.send(&client, &batch) => outcome,
                };
                match outcome {
                    Outcome::Stored => {
                        sent = batch.last().map_or(sent, |e| e.seq);
                        if !self.acknowledge(sent, batch.len() as u64).await {
                            return;
                        }
                        batch_limit = (batch_limit * 2).min(self.config.max_batch_records);
                        break;
                    }
                    Outcome::Refused(reason) => {
                        error!(
                            reason,
                            records = batch.len(),
                            "collector refused a batch; moved to dead letters"
                        );
                        sent = batch.last().map_or(sent, |e| e.seq);
                        if !self.dead_letter(batch, reason, sent).await {
                            return;
                        }
                        break;
                    }
                    Outcome::TooLarge if batch.len() > 1 => {
                        batch_limit = (batch.len() / 2).max(1);
                        warn!(
                            batch_limit,
                            "collector says the batch is too large; splitting"
                        );
                        break;
                    }
                    Outcome::TooLarge => {
                        sent = batch.last().map_or(sent, |e| e.seq);
                        let reason =
                            "collector refuses even a single reading as too large".to_string();
                        error!(reason, "moved to dead letters");
                        if !self.dead_letter(batch, reason, sent).await {
                            return;
                        }
                        break;
                    }
                    Outcome::Retry {
                        after,
                        reason,
                        alarm,
                    } => {
                        self.metrics.retries.inc();
                        let delay = after.unwrap_or_else(|| {
                            if alarm {
                                self.config.backoff_max
                            } else {
                                backoff(attempt, self.config.backoff_min, self.config.backoff_max)
                            }
                        });
                        if alarm {
                            error!(
                                reason,
                                "collector refuses this gateway's credentials; retrying slowly"
                            );
                        } else {
                            warn!(reason, retry_in = ?delay, attempt, "batch not stored; retrying");
                        }
                        *self.state.last_error.lock().expect("state lock") = Some(reason);
                        attempt = attempt.saturating_add(1);
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }

    /// Waits for readings after `sent` and returns a batch once it is full or
    /// its first reading is `linger` old. `None` on shutdown.
    async fn next_batch(
        &self,
        sent: u64,
        limit: usize,
        durable: &mut tokio::sync::watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Envelope>> {
        loop {
            durable.borrow_and_update();
            let batch = self.read(sent, limit).await?;
            let bytes: usize = batch.iter().map(Envelope::approx_size).sum();
            let full = batch.len() >= limit || bytes >= self.config.max_batch_bytes;
            let deadline = batch
                .first()
                .map(|first| first.received_at + self.config.linger.as_millis() as u64);
            let wait = match deadline {
                _ if full => return Some(batch),
                Some(deadline) if deadline <= now_ms() => return Some(batch),
                Some(deadline) => Some(Duration::from_millis(deadline - now_ms())),
                None => None,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                changed = durable.changed() => if changed.is_err() { return None },
                _ = sleep_opt(wait) => return self.read(sent, limit).await,
            }
        }
    }

    async fn read(&self, after: u64, limit: usize) -> Option<Vec<Envelope>> {
        let spool = self.spool.clone();
        let max_bytes = self.config.max_batch_bytes;
        match tokio::task::spawn_blocking(move || spool.read_after(after, limit, max_bytes)).await {
            Ok(Ok(batch)) => Some(batch),
            Ok(Err(err)) => {
                error!(error = %err, "cannot read the spool; uplink stopped");
                None
            }
            Err(err) => {
                error!(error = %err, "spool reader panicked; uplink stopped");
                None
            }
        }
    }

    async fn send(&self, client: &reqwest::Client, batch: &[Envelope]) -> Outcome {
        let backlog = self
            .spool
            .stats()
            .pending
            .saturating_sub(batch.len() as u64);
        let body = encode_batch(&SyncBatch {
            gateway_id: self.gateway_id.clone(),
            spool_id: self.spool.spool_id().to_string(),
            backlog,
            envelopes: batch.to_vec(),
        });
        let (body, encoding) = match compress(body, self.config.compression) {
            Ok(compressed) => compressed,
            Err(err) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("compression failed: {err}"),
                    alarm: false,
                }
            }
        };
        self.metrics.bytes.inc_by(body.len() as u64);
        let mut request = client
            .post(format!("{}/v1/batches", self.config.url))
            .header(AUTHORIZATION, format!("Bearer {}", self.config.token))
            .header(CONTENT_TYPE, "application/cbor")
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        let started = Instant::now();
        let response = request.send().await;
        self.metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                self.count("error");
                return Outcome::Retry {
                    after: None,
                    reason: format!("request failed: {err}"),
                    alarm: false,
                };
            }
        };
        let status = response.status();
        self.count(status.as_str());
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        match status {
            s if s.is_success() => {
                match serde_json::from_str::<BatchResponse>(&text) {
                    Ok(answer) => debug!(
                        accepted = answer.accepted,
                        duplicates = answer.duplicates,
                        "batch stored"
                    ),
                    Err(err) => {
                        warn!(error = %err, "collector answered 2xx with an unexpected body")
                    }
                }
                Outcome::Stored
            }
            StatusCode::BAD_REQUEST => Outcome::Refused(format!("400: {}", truncate(&text))),
            StatusCode::PAYLOAD_TOO_LARGE => Outcome::TooLarge,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Outcome::Retry {
                after: None,
                reason: format!("{status}: {}", truncate(&text)),
                alarm: true,
            },
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Outcome::Retry {
                after: retry_after,
                reason: format!("{status}"),
                alarm: false,
            },
            _ => Outcome::Retry {
                after: None,
                reason: format!("{status}: {}", truncate(&text)),
                alarm: false,
            },
        }
    }

    fn count(&self, status: &str) {
        self.metrics
            .batches
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// Trims the spool after a 2xx. False if the spool failed (uplink stops).
    async fn acknowledge(&self, upto: u64, count: u64) -> bool {
        self.metrics.records.inc_by(count);
        self.state
            .last_success_ms
            .store(now_ms(), Ordering::Relaxed);
        *self.state.last_error.lock().expect("state lock") = None;
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.ack(upto, count)).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                error!(error = %err, "cannot record the acknowledgement; uplink stopped");
                false
            }
            Err(err) => {
                error!(error = %err, "spool ack panicked; uplink stopped");
                false
            }
        }
    }

    async fn dead_letter(&self, batch: Vec<Envelope>, reason: String, upto: u64) -> bool {
        let spool = self.spool.clone();
        let count = batch.len() as u64;
        match tokio::task::spawn_blocking(move || {
            spool.dead_letter(batch, &reason)?;
            spool.ack(upto, count)
        })
        .await
        {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                error!(error = %err, "cannot move a refused batch to dead letters; uplink stopped");
                false
            }
            Err(err) => {
                error!(error = %err, "dead-lettering panicked; uplink stopped");
                false
            }
        }
    }
}

/// Capped exponential backoff with jitter: between half and all of
/// `min * 2^attempt`, never above `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn compress(
    body: Vec<u8>,
    compression: Compression,
) -> std::io::Result<(Vec<u8>, Option<&'static str>)> {
    match compression {
        Compression::None => Ok((body, None)),
        Compression::Zstd => Ok((zstd::encode_all(body.as_slice(), 3)?, Some("zstd"))),
        Compression::Gzip => {
            use std::io::Write;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&body)?;
            Ok((encoder.finish()?, Some("gzip")))
        }
    }
}

async fn sleep_opt(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

fn truncate(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_jitters_and_caps() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..40 {
            let ceiling = (min * 2u32.pow(attempt.min(20))).min(max);
            let d = backoff(attempt, min, max);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
    }
}
