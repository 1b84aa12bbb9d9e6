//! The uplink: reads batches from the spool, posts them to the collector
//! (several at once while catching up) and deletes them only after a 2xx,
//! strictly in seq order.
//!
//! ```text
//!  spool ──read_after(read_pos)──▶ full batch, or first reading `linger` old?
//!    ▲                              │ yes, and fewer than `concurrency` requests in flight
//!    │                              ▼
//!    │           ┌──────────── in flight (seq order) ────────────┐
//!    │           │ [1..1000] sending   [1001..2000] stored        │
//!    │           │ [2001..3000] sending   [3001..3500] queued     │
//!    │           └────────────────────────────────────────────────┘
//!    │                              │ the oldest batches are settled
//!    └────── ack(last seq) ◀────────┘ (stored, or dead-lettered after a 400)
//! ```
//!
//! Invariants:
//! - A reading leaves the spool only after the collector answered 2xx for a
//!   batch holding it (or 400, into the dead letters).
//! - `Spool::ack` is called only for a contiguous prefix of what was read: a
//!   batch answered before an older one waits in memory for it. After a
//!   crash or shutdown that waiting batch is sent again; the collector
//!   deduplicates by `(gateway_id, spool_id, seq)`.
//! - New requests are opened only for full batches (or one whose first
//!   reading is `linger` old), so live traffic still goes one small batch per
//!   linger while a backlog goes as `concurrency` full batches at a time.
//!
//! Answers: 2xx acknowledges; 400 moves the batch to the dead-letter tree and
//! goes on; 401/403 raise an ERROR and retry at the slowest pace; 413 splits
//! that batch in two and lowers the batch size (it grows back on success);
//! 429/503 wait as `Retry-After` says; anything else (5xx, timeouts, resets)
//! retries that same batch with capped exponential backoff and jitter,
//! forever. After any failure no new request starts until the wait is over,
//! and only one request at a time is sent until one succeeds again, so a
//! collector that is down or overloaded sees one probe, not `concurrency`.
//! A spool read or dead-letter write that fails (the spool reopens its files
//! after a failed write) is tried again with the same backoff; a failed ack
//! write is kept in memory by the spool and written with the next ack.

use crate::now_ms;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use telemetry::{encode_batch, BatchResponse, Envelope, SyncBatch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn, Instrument};

use crate::config::{Compression, UplinkConfig};
use crate::metrics::{StatusLabel, UplinkMetrics};
use crate::spool::{Spool, SpoolError};

/// Batch requests in flight at once while a backlog drains (`uplink.concurrency`
/// once the config has it). Four keeps the collector's store busy while the
/// next batches are encoded and on the wire; more only queue at the collector.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// What the admin API reports about the uplink.
#[derive(Debug, Default)]
pub struct UplinkState {
    /// Unix ms of the last 2xx, 0 if none yet.
    pub last_success_ms: AtomicU64,
    /// The last failure, cleared by the next success.
    pub last_error: Mutex<Option<String>>,
}

/// The uplink task's inputs; [`Uplink::run`] drives it.
pub struct Uplink {
    /// Sent in every batch, the first part of the collector's dedup key.
    pub gateway_id: String,
    pub spool: Spool,
    pub config: UplinkConfig,
    pub metrics: UplinkMetrics,
    /// Shared with the admin API's `/healthz`.
    pub state: Arc<UplinkState>,
}

/// How one attempt at a batch ended.
#[derive(Debug)]
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
    /// The batch went down with a panicked encoding task; it is still
    /// spooled, but this run of the uplink can no longer keep seq order.
    Lost(String),
}

/// What a finished request task hands back: the batch travels with it, so
/// it is neither cloned for the request nor lost when it must be resent.
struct Attempt {
    first_seq: u64,
    batch: Vec<Envelope>,
    outcome: Outcome,
}

impl Uplink {
    /// Runs until `shutdown`; whatever was not acknowledged stays spooled.
    /// Requests still in flight are abandoned (their batches are sent again
    /// after a restart).
    pub async fn run(self, shutdown: CancellationToken) {
        let client = match self.config.http_client() {
            Ok(client) => client,
            Err(err) => {
                error!(
                    error = format!("{err:#}"),
                    "cannot build the uplink http client"
                );
                return;
            }
        };
        let uplink = Arc::new(self);
        let concurrency = uplink.config.concurrency.max(1);
        let mut durable = uplink.spool.subscribe();
        let mut flight = Flight::new(uplink.spool.stats().acked_seq);
        let mut tasks: JoinSet<Attempt> = JoinSet::new();
        // Lowered after a 413, so that batches fit the collector's limit;
        // doubles back after each success.
        let mut batch_limit = uplink.config.max_batch_records;
        // Requests allowed in flight: `concurrency`, or 1 after a failure
        // until a request succeeds again.
        let mut window = concurrency;
        // No request starts before this (backoff or Retry-After).
        let mut paused_until: Option<tokio::time::Instant> = None;
        // Spool calls that failed in a row, for their backoff.
        let mut spool_failures = 0u32;
        loop {
            let mut linger = None;
            let mut want_data = false;
            match uplink.settle(&mut flight).await {
                Ok(()) => {}
                Err(SpoolTrouble::Panicked) => return,
                Err(SpoolTrouble::Failed) => {
                    pause(&mut paused_until, uplink.spool_backoff(&mut spool_failures));
                }
            }
            if paused_until.is_some_and(|until| until <= tokio::time::Instant::now()) {
                paused_until = None;
            }
            while paused_until.is_none() && tasks.len() < window {
                // A batch that failed goes again before anything newer.
                if let Some((first_seq, batch)) = flight.take_queued() {
                    tasks.spawn(uplink.clone().attempt(client.clone(), first_seq, batch));
                    continue;
                }
                durable.borrow_and_update();
                let batch = match uplink.read(flight.read_pos(), batch_limit).await {
                    Ok(batch) => {
                        spool_failures = 0;
                        batch
                    }
                    Err(SpoolTrouble::Panicked) => return,
                    Err(SpoolTrouble::Failed) => {
                        pause(&mut paused_until, uplink.spool_backoff(&mut spool_failures));
                        break;
                    }
                };
                match uplink.ready(&batch, batch_limit) {
                    Ready::Now => {
                        if let Some(first_seq) = flight.push_sending(&batch) {
                            tasks.spawn(uplink.clone().attempt(client.clone(), first_seq, batch));
                        }
                    }
                    Ready::After(wait) => {
                        linger = wait;
                        want_data = true;
                        break;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    let attempt = match joined {
                        Ok(attempt) => attempt,
                        Err(err) => {
                            error!(error = %err, "uplink request task failed; uplink stopped");
                            return;
                        }
                    };
                    match uplink.answered(attempt, &mut flight, &mut batch_limit) {
                        Answered::Stop => return,
                        Answered::Ok => window = concurrency,
                        Answered::Again => {}
                        Answered::Failed(delay) => {
                            window = 1;
                            pause(&mut paused_until, delay);
                        }
                    }
                }
                changed = durable.changed(), if want_data => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = sleep_opt(linger), if want_data => {}
                _ = sleep_until_opt(paused_until) => {}
            }
        }
    }

    /// Whether `batch` goes now or waits for more readings (and how long at
    /// most: until its first reading is `linger` old; `None` when empty).
    fn ready(&self, batch: &[Envelope], limit: usize) -> Ready {
        let Some(first) = batch.first() else {
            return Ready::After(None);
        };
        let bytes: usize = batch.iter().map(Envelope::approx_size).sum();
        if batch.len() >= limit || bytes >= self.config.max_batch_bytes {
            return Ready::Now;
        }
        let deadline = first.received_at + self.config.linger.as_millis() as u64;
        let now = now_ms();
        if deadline <= now {
            Ready::Now
        } else {
            Ready::After(Some(Duration::from_millis(deadline - now)))
        }
    }

    /// Records what the collector said about one batch in `flight`.
    fn answered(&self, attempt: Attempt, flight: &mut Flight, batch_limit: &mut usize) -> Answered {
        let Attempt {
            first_seq,
            batch,
            outcome,
        } = attempt;
        let records = batch.len();
        match outcome {
            Outcome::Stored => {
                self.state
                    .last_success_ms
                    .store(now_ms(), Ordering::Relaxed);
                *self.state.last_error.lock().expect("state lock") = None;
                *batch_limit = (*batch_limit * 2).min(self.config.max_batch_records);
                flight.stored(first_seq);
                Answered::Ok
            }
            Outcome::Refused(reason) => {
                error!(
                    reason,
                    first_seq, records, "collector refused a batch; moving it to dead letters"
                );
                flight.refused(first_seq, batch, reason);
                Answered::Ok
            }
            Outcome::TooLarge if records > 1 => {
                *batch_limit = (records / 2).max(1);
                warn!(
                    first_seq,
                    records,
                    batch_limit = *batch_limit,
                    "collector says the batch is too large; splitting"
                );
                flight.split(first_seq, batch);
                Answered::Again
            }
            Outcome::TooLarge => {
                let reason = "collector refuses even a single reading as too large".to_string();
                error!(reason, first_seq, "moving it to dead letters");
                flight.refused(first_seq, batch, reason);
                Answered::Ok
            }
            Outcome::Lost(reason) => {
                error!(reason, first_seq, "batch encoding failed; uplink stopped");
                Answered::Stop
            }
            Outcome::Retry {
                after,
                reason,
                alarm,
            } => {
                self.metrics.retries.inc();
                let attempt = flight.failed(first_seq, batch);
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
                        retry_in = ?delay,
                        "collector refuses this gateway's credentials; retrying slowly"
                    );
                } else {
                    warn!(reason, retry_in = ?delay, attempt, first_seq, records, "batch not stored; retrying");
                }
                *self.state.last_error.lock().expect("state lock") = Some(reason);
                Answered::Failed(delay)
            }
        }
    }

    /// Acknowledges (or dead-letters) the settled batches at the front of
    /// `flight`, oldest first. A batch the dead-letter tree could not take
    /// stays at the front, to be tried again.
    async fn settle(&self, flight: &mut Flight) -> Result<(), SpoolTrouble> {
        // Consecutive stored batches become one ack: one meta write, one trim.
        let mut stored: Option<(u64, u64)> = None;
        while let Some(done) = flight.pop_settled() {
            match done {
                Settled::Stored { last_seq, records } => {
                    let count = stored.map_or(0, |(_, count)| count);
                    stored = Some((last_seq, count + records));
                }
                Settled::Refused {
                    first_seq,
                    last_seq,
                    batch,
                    reason,
                } => {
                    if let Some((upto, count)) = stored.take() {
                        self.acknowledge(upto, count).await?;
                    }
                    if let Err((trouble, batch)) =
                        self.dead_letter(batch, reason.clone(), last_seq).await
                    {
                        flight.unsettle(first_seq, last_seq, batch, reason);
                        return Err(trouble);
                    }
                }
            }
        }
        match stored {
            Some((upto, count)) => self.acknowledge(upto, count).await,
            None => Ok(()),
        }
    }

    /// The wait after a failed spool call; counts the failure.
    fn spool_backoff(&self, failures: &mut u32) -> Duration {
        let delay = backoff(*failures, self.config.backoff_min, self.config.backoff_max);
        *failures = failures.saturating_add(1);
        delay
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, SpoolTrouble> {
        let spool = self.spool.clone();
        let max_bytes = self.config.max_batch_bytes;
        blocking("read", move || spool.read_after(after, limit, max_bytes)).await
    }

    /// One request for one batch, as a task of its own.
    async fn attempt(
        self: Arc<Self>,
        client: reqwest::Client,
        first_seq: u64,
        batch: Vec<Envelope>,
    ) -> Attempt {
        let span = tracing::debug_span!("batch", first_seq, records = batch.len());
        let (batch, outcome) = self.send(&client, batch).instrument(span).await;
        Attempt {
            first_seq,
            batch,
            outcome,
        }
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        batch: Vec<Envelope>,
    ) -> (Vec<Envelope>, Outcome) {
        let backlog = self
            .spool
            .stats()
            .pending
            .saturating_sub(batch.len() as u64);
        let sync = SyncBatch {
            gateway_id: self.gateway_id.clone(),
            spool_id: self.spool.spool_id().to_string(),
            backlog,
            envelopes: batch,
        };
        let compression = self.config.compression;
        // Encoding and compressing a full batch is milliseconds of CPU: keep
        // it off the async workers that also serve the admin API.
        let encoded = tokio::task::spawn_blocking(move || {
            let body = compress(encode_batch(&sync), compression);
            (sync.envelopes, body)
        })
        .await;
        let (batch, body) = match encoded {
            Ok(encoded) => encoded,
            Err(err) => return (Vec::new(), Outcome::Lost(err.to_string())),
        };
        let (body, encoding) = match body {
            Ok(compressed) => compressed,
            Err(err) => {
                let outcome = Outcome::Retry {
                    after: None,
                    reason: format!("compression failed: {err}"),
                    alarm: false,
                };
                return (batch, outcome);
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
                let outcome = Outcome::Retry {
                    after: None,
                    reason: format!("request failed: {}", error_chain(&err)),
                    alarm: false,
                };
                return (batch, outcome);
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
        let outcome = match status {
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
        };
        (batch, outcome)
    }

    fn count(&self, status: &str) {
        self.metrics
            .batches
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// Trims the spool after a 2xx.
    async fn acknowledge(&self, upto: u64, count: u64) -> Result<(), SpoolTrouble> {
        self.metrics.records.inc_by(count);
        let spool = self.spool.clone();
        match blocking("ack", move || spool.ack(upto, count)).await {
            // The spool keeps a failed acknowledgement in memory and writes
            // it with the next one; at worst a restart sends the batch again.
            Err(SpoolTrouble::Failed) => Ok(()),
            other => other,
        }
    }

    /// Keeps a refused batch in the dead letters, then acknowledges it. On
    /// failure the batch comes back, so that nothing is acknowledged unkept.
    async fn dead_letter(
        &self,
        batch: Vec<Envelope>,
        reason: String,
        upto: u64,
    ) -> Result<(), (SpoolTrouble, Vec<Envelope>)> {
        let spool = self.spool.clone();
        let letters = batch.clone();
        if let Err(trouble) =
            blocking("dead_letter", move || spool.dead_letter(letters, &reason)).await
        {
            return Err((trouble, batch));
        }
        // Not counted as stored; a failed ack write is kept in memory, as above.
        let spool = self.spool.clone();
        let count = batch.len() as u64;
        match blocking("ack", move || spool.ack(upto, count)).await {
            Ok(()) | Err(SpoolTrouble::Failed) => Ok(()),
            Err(SpoolTrouble::Panicked) => Err((SpoolTrouble::Panicked, batch)),
        }
    }
}

/// Why a spool call from the uplink did not complete (already logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpoolTrouble {
    /// A storage error. The spool reopens its files after a failed write,
    /// so the call is tried again after a backoff.
    Failed,
    /// The blocking task panicked: a bug, the uplink stops.
    Panicked,
}

/// Runs a spool call on the blocking pool (sled reads and writes block).
async fn blocking<T: Send + 'static>(
    call: &'static str,
    work: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolTrouble> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            error!(error = %err, call, "spool call from the uplink failed; trying again");
            Err(SpoolTrouble::Failed)
        }
        Err(err) => {
            error!(error = %err, call, "spool call panicked; uplink stopped");
            Err(SpoolTrouble::Panicked)
        }
    }
}

/// Moves `paused_until` to at least `delay` from now.
fn pause(paused_until: &mut Option<tokio::time::Instant>, delay: Duration) {
    let until = tokio::time::Instant::now() + delay;
    *paused_until = Some(paused_until.map_or(until, |p| p.max(until)));
}

/// Whether the batch just read can be sent.
enum Ready {
    Now,
    /// Wait for more readings, or this long at most (`None`: nothing to send).
    After(Option<Duration>),
}

/// What an answer means for the request window.
enum Answered {
    /// The collector took a decision on the batch: open the window again.
    Ok,
    /// The batch goes again at once (split after a 413).
    Again,
    /// Nothing new starts for this long, then one request at a time.
    Failed(Duration),
    /// The uplink cannot go on (already logged).
    Stop,
}

/// The batches read from the spool and not yet acknowledged, by first seq.
/// They cover every pending seq from the spool's acknowledged seq to
/// `read_pos` without gap or overlap, so settling a prefix acks exactly it.
#[derive(Debug)]
struct Flight {
    slots: BTreeMap<u64, Slot>,
    /// Last seq put into a slot (the acked seq when there are none).
    read_pos: u64,
}

#[derive(Debug)]
struct Slot {
    last_seq: u64,
    records: u64,
    /// Failed attempts in a row, for the backoff.
    failures: u32,
    state: SlotState,
}

#[derive(Debug)]
enum SlotState {
    /// Waiting to be sent (again); holds the batch.
    Queued(Vec<Envelope>),
    /// A request task holds the batch.
    Sending,
    /// Answered 2xx; waiting for the batches before it.
    Stored,
    /// Answered 400 (or 413 for one reading); goes to the dead letters in turn.
    Refused {
        batch: Vec<Envelope>,
        reason: String,
    },
}

/// A batch at the front of [`Flight`] that the spool can now forget.
#[derive(Debug)]
enum Settled {
    Stored {
        last_seq: u64,
        records: u64,
    },
    Refused {
        first_seq: u64,
        last_seq: u64,
        batch: Vec<Envelope>,
        reason: String,
    },
}

impl Flight {
    fn new(acked_seq: u64) -> Flight {
        Flight {
            slots: BTreeMap::new(),
            read_pos: acked_seq,
        }
    }

    fn read_pos(&self) -> u64 {
        self.read_pos
    }

    /// Adds a batch just read (seqs above `read_pos`) as being sent; returns
    /// its first seq, `None` if it is empty.
    fn push_sending(&mut self, batch: &[Envelope]) -> Option<u64> {
        let (first, last) = (batch.first()?.seq, batch.last()?.seq);
        debug_assert!(first > self.read_pos, "batches are read in seq order");
        self.read_pos = last;
        self.slots.insert(
            first,
            Slot {
                last_seq: last,
                records: batch.len() as u64,
                failures: 0,
                state: SlotState::Sending,
            },
        );
        Some(first)
    }

    /// The oldest batch waiting to be sent again, now marked as being sent.
    fn take_queued(&mut self) -> Option<(u64, Vec<Envelope>)> {
        let (&first, slot) = self
            .slots
            .iter_mut()
            .find(|(_, slot)| matches!(slot.state, SlotState::Queued(_)))?;
        let SlotState::Queued(batch) = std::mem::replace(&mut slot.state, SlotState::Sending)
        else {
            return None;
        };
        Some((first, batch))
    }

    fn stored(&mut self, first: u64) {
        if let Some(slot) = self.slots.get_mut(&first) {
            slot.state = SlotState::Stored;
        }
    }

    fn refused(&mut self, first: u64, batch: Vec<Envelope>, reason: String) {
        if let Some(slot) = self.slots.get_mut(&first) {
            slot.state = SlotState::Refused { batch, reason };
        }
    }

    /// Queues the batch to be sent again; returns its failures before this one.
    fn failed(&mut self, first: u64, batch: Vec<Envelope>) -> u32 {
        match self.slots.get_mut(&first) {
            Some(slot) => {
                slot.state = SlotState::Queued(batch);
                slot.failures = slot.failures.saturating_add(1);
                slot.failures - 1
            }
            None => 0,
        }
    }

    /// Replaces the batch by its two halves, both queued (callers split only
    /// batches of two or more; a smaller one is just queued again).
    fn split(&mut self, first: u64, mut batch: Vec<Envelope>) {
        if batch.len() < 2 {
            self.failed(first, batch);
            return;
        }
        if self.slots.remove(&first).is_none() {
            return;
        }
        let second = batch.split_off(batch.len() / 2);
        for half in [batch, second] {
            if let (Some(head), Some(tail)) = (half.first(), half.last()) {
                let (head, tail) = (head.seq, tail.seq);
                self.slots.insert(
                    head,
                    Slot {
                        last_seq: tail,
                        records: half.len() as u64,
                        failures: 0,
                        state: SlotState::Queued(half),
                    },
                );
            }
        }
    }

    /// Puts back a refused batch that could not be dead-lettered yet.
    fn unsettle(&mut self, first: u64, last_seq: u64, batch: Vec<Envelope>, reason: String) {
        let records = batch.len() as u64;
        self.slots.insert(
            first,
            Slot {
                last_seq,
                records,
                failures: 0,
                state: SlotState::Refused { batch, reason },
            },
        );
    }

    /// Removes and returns the oldest batch if it is settled.
    fn pop_settled(&mut self) -> Option<Settled> {
        let entry = self.slots.first_entry()?;
        if matches!(entry.get().state, SlotState::Queued(_) | SlotState::Sending) {
            return None;
        }
        let (first_seq, slot) = entry.remove_entry();
        match slot.state {
            SlotState::Stored => Some(Settled::Stored {
                last_seq: slot.last_seq,
                records: slot.records,
            }),
            SlotState::Refused { batch, reason } => Some(Settled::Refused {
                first_seq,
                last_seq: slot.last_seq,
                batch,
                reason,
            }),
            SlotState::Queued(_) | SlotState::Sending => None,
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

/// TLS alerts with which a collector refuses the gateway's client
/// certificate, or its lack of one (rustls names them so in "received fatal
/// alert: ..."): no certificate, one from another CA, expired, revoked or
/// not for client authentication.
const CLIENT_CERT_ALERTS: &[&str] = &[
    "CertificateRequired",
    "UnknownCA",
    "BadCertificate",
    "UnsupportedCertificate",
    "CertificateRevoked",
    "CertificateExpired",
    "CertificateUnknown",
];

/// An error and its causes on one line: reqwest's own message ("error
/// sending request") hides the reason, such as a certificate from an
/// unknown CA, in its sources. Certificate failures on either side get a
/// hint naming the setting to check.
fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.contains("certificate") {
        text.push_str(
            " (is uplink.ca_file the CA that signed the collector's certificate, and the URL's host in it?)",
        );
    } else if CLIENT_CERT_ALERTS
        .iter()
        .any(|alert| text.contains(&format!("fatal alert: {alert}")))
    {
        text.push_str(
            " (the collector requires a client certificate: are uplink.client_cert and uplink.client_key set, and the certificate signed by the collector's server.tls_client_ca and still valid?)",
        );
    }
    text
}

async fn sleep_opt(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

fn truncate(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
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

    fn batch(seqs: std::ops::RangeInclusive<u64>) -> Vec<Envelope> {
        seqs.map(|seq| Envelope {
            seq,
            device_id: "d".into(),
            topic: "devices/d/telemetry".into(),
            received_at: 0,
            payload: serde_bytes::ByteBuf::from(vec![0xf6]),
        })
        .collect()
    }

    fn settled(flight: &mut Flight) -> Vec<(u64, u64)> {
        std::iter::from_fn(|| flight.pop_settled())
            .map(|s| match s {
                Settled::Stored { last_seq, records } => (last_seq, records),
                Settled::Refused {
                    last_seq, batch, ..
                } => (last_seq, batch.len() as u64),
            })
            .collect()
    }

    #[test]
    fn only_a_contiguous_prefix_settles() {
        let mut flight = Flight::new(10);
        let a = flight.push_sending(&batch(11..=20)).unwrap();
        let b = flight.push_sending(&batch(21..=30)).unwrap();
        let c = flight.push_sending(&batch(31..=35)).unwrap();
        assert_eq!(flight.read_pos(), 35);
        flight.stored(c);
        flight.stored(b);
        assert!(settled(&mut flight).is_empty(), "the oldest is still out");
        flight.stored(a);
        assert_eq!(settled(&mut flight), vec![(20, 10), (30, 10), (35, 5)]);
        assert!(flight.slots.is_empty());
    }

    #[test]
    fn a_failed_batch_goes_again_before_newer_ones_and_counts_failures() {
        let mut flight = Flight::new(0);
        let a = flight.push_sending(&batch(1..=10)).unwrap();
        let b = flight.push_sending(&batch(11..=20)).unwrap();
        assert_eq!(flight.failed(b, batch(11..=20)), 0);
        assert_eq!(flight.failed(a, batch(1..=10)), 0);
        let (first, again) = flight.take_queued().unwrap();
        assert_eq!((first, again.len()), (1, 10));
        assert_eq!(flight.failed(a, again), 1, "the second failure in a row");
        assert_eq!(flight.take_queued().unwrap().0, 1);
        assert_eq!(flight.take_queued().unwrap().0, 11);
        assert!(flight.take_queued().is_none());
    }

    #[test]
    fn a_split_batch_settles_as_its_two_halves_in_order() {
        let mut flight = Flight::new(0);
        let a = flight.push_sending(&batch(1..=9)).unwrap();
        let b = flight.push_sending(&batch(10..=12)).unwrap();
        flight.stored(b);
        flight.split(a, batch(1..=9));
        let (h1, first_half) = flight.take_queued().unwrap();
        let (h2, second_half) = flight.take_queued().unwrap();
        assert_eq!((h1, first_half.len(), h2, second_half.len()), (1, 4, 5, 5));
        flight.stored(h2);
        assert!(settled(&mut flight).is_empty());
        flight.refused(h1, first_half, "400".into());
        assert_eq!(settled(&mut flight), vec![(4, 4), (9, 5), (12, 3)]);
    }

    #[test]
    fn a_refused_batch_put_back_settles_again_first() {
        let mut flight = Flight::new(0);
        let a = flight.push_sending(&batch(1..=2)).unwrap();
        let b = flight.push_sending(&batch(3..=4)).unwrap();
        flight.refused(a, batch(1..=2), "400".into());
        flight.stored(b);
        let Some(Settled::Refused {
            first_seq,
            last_seq,
            batch,
            reason,
        }) = flight.pop_settled()
        else {
            panic!("the refused batch settles first");
        };
        flight.unsettle(first_seq, last_seq, batch, reason);
        assert_eq!(settled(&mut flight), vec![(2, 2), (4, 2)]);
    }
}
