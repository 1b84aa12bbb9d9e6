//! Group commit: one thread takes submitted publishes off a bounded queue,
//! writes each gathered group as one block, flushes sled once, and only then
//! marks the group's seqs durable, which releases the waiting PUBACKs.
//!
//! ```text
//! submit (any thread)          writer thread                     waiters
//! seq = next_seq++  ──queue──▶ gather ≤ max_block_records
//!                              or until flush_interval passed
//!                              insert block + meta, flush ──▶ processed = last seq, notify
//! ```
//!
//! A failed write marks its seqs failed: their PUBACKs are withheld and the
//! devices resend after reconnecting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use broker::{Disposition, Incoming, SinkError};
use serde_bytes::ByteBuf;
use telemetry::Envelope;
use tracing::{error, info};

use super::block::{self, DeadLetter};
use super::store::{Files, SpoolError, Trees};
use crate::metrics::SpoolMetrics;

/// How many failed groups are remembered to answer late waiters.
const FAILURES_KEPT: usize = 1024;

/// A submitted publish with its assigned seq.
pub(super) struct Item {
    pub seq: u64,
    pub incoming: Incoming,
}

/// The durable watermark shared by the writer and the waiting connections.
#[derive(Default)]
pub(super) struct Durability {
    /// Every seq <= this has an outcome (written or failed). Read without the lock.
    processed: AtomicU64,
    state: Mutex<Failures>,
    changed: Condvar,
}

#[derive(Default)]
struct Failures {
    /// Seq ranges (inclusive) whose write failed, newest last.
    ranges: VecDeque<(u64, u64, String)>,
}

impl Durability {
    pub fn new(processed: u64) -> Durability {
        Durability {
            processed: AtomicU64::new(processed),
            ..Durability::default()
        }
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Acquire)
    }

    pub fn is_durable(&self, seq: u64) -> bool {
        if self.processed() < seq {
            return false;
        }
        let failures = self.state.lock().expect("durability lock");
        failure_of(&failures, seq).is_none()
    }

    pub fn wait(&self, seq: u64, timeout: Duration) -> Result<(), SinkError> {
        let deadline = Instant::now() + timeout;
        let mut failures = self.state.lock().expect("durability lock");
        loop {
            if self.processed() >= seq {
                return match failure_of(&failures, seq) {
                    Some(reason) => Err(SinkError::WriteFailed(reason)),
                    None => Ok(()),
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SinkError::Timeout(timeout));
            }
            failures = self
                .changed
                .wait_timeout(failures, deadline - now)
                .expect("durability lock")
                .0;
        }
    }

    fn complete(&self, last_seq: u64, failed: Option<(u64, String)>) {
        let mut failures = self.state.lock().expect("durability lock");
        if let Some((first_seq, reason)) = failed {
            failures.ranges.push_back((first_seq, last_seq, reason));
            if failures.ranges.len() > FAILURES_KEPT {
                failures.ranges.pop_front();
            }
        }
        self.processed.fetch_max(last_seq, Ordering::AcqRel);
        drop(failures);
        self.changed.notify_all();
    }
}

fn failure_of(failures: &Failures, seq: u64) -> Option<String> {
    failures
        .ranges
        .iter()
        .rev()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&seq))
        .map(|(_, _, reason)| reason.clone())
}

/// Settings of the writer thread.
pub(super) struct WriterConfig {
    pub flush_interval: Duration,
    pub max_block_records: usize,
    pub max_dead_letters: u64,
}

/// How long the writer waits between attempts to reopen failed storage;
/// groups that arrive meanwhile fail at once, so devices are not kept waiting.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until every sender is gone and the queue is drained.
pub(super) fn run(
    rx: Receiver<Item>,
    files: Arc<Files>,
    durability: Arc<Durability>,
    config: WriterConfig,
    metrics: SpoolMetrics,
    on_durable: impl Fn(u64, usize),
) {
    let mut group = Vec::with_capacity(config.max_block_records);
    // When the last write failed: sled refuses all writes after an I/O error
    // until it is reopened, which is retried every REOPEN_INTERVAL.
    let mut broken: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        group.push(first);
        gather(&rx, &mut group, &config);
        let first_seq = group[0].seq;
        let last_seq = group[group.len() - 1].seq;
        let started = Instant::now();
        let written = match recover(&files, &mut broken) {
            Ok(()) => files.with(|trees| {
                write_group(trees, &mut group, &config, &metrics)
                    .map_err(|e| files.storage_error(e))
            }),
            Err(err) => Err(err),
        };
        if written.is_err() && broken.is_none() {
            broken = Some(Instant::now());
        }
        match written {
            Ok(readings) => {
                metrics
                    .flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.group_commit_records.observe(readings as f64);
                // Counts first, so that whoever wakes up sees them.
                on_durable(last_seq, readings);
                durability.complete(last_seq, None);
            }
            Err(err) => {
                metrics.write_errors.inc();
                error!(error = %err, first_seq, last_seq, "spool write failed; acknowledgements withheld");
                durability.complete(last_seq, Some((first_seq, err.to_string())));
            }
        }
        group.clear();
    }
}

/// After a failed write, reopens the files at most once per interval.
fn recover(files: &Files, broken: &mut Option<Instant>) -> Result<(), SpoolError> {
    let Some(since) = *broken else {
        return Ok(());
    };
    if since.elapsed() < REOPEN_INTERVAL {
        return Err(files.storage_error(sled::Error::Unsupported(
            "spool storage failed; waiting to reopen it".into(),
        )));
    }
    match files.reopen() {
        Ok(()) => {
            *broken = None;
            info!("spool storage reopened; accepting writes again");
            Ok(())
        }
        Err(err) => {
            *broken = Some(Instant::now());
            Err(files.storage_error(err))
        }
    }
}

/// Adds queued items to `group` until it is full or `flush_interval` has passed.
fn gather(rx: &Receiver<Item>, group: &mut Vec<Item>, config: &WriterConfig) {
    let deadline = Instant::now() + config.flush_interval;
    while group.len() < config.max_block_records {
        match rx.try_recv() {
            Ok(item) => group.push(item),
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    return;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(item) => group.push(item),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
                }
            }
        }
    }
}

/// Writes one group (a block of readings plus any dead letters) and flushes.
/// Returns the number of readings written.
fn write_group(
    trees: &Trees,
    group: &mut [Item],
    config: &WriterConfig,
    metrics: &SpoolMetrics,
) -> Result<usize, sled::Error> {
    let mut readings = Vec::with_capacity(group.len());
    let mut dead = Vec::new();
    for item in group.iter_mut() {
        let incoming = &mut item.incoming;
        let envelope = Envelope {
            seq: item.seq,
            device_id: std::mem::take(&mut incoming.device_id),
            topic: std::mem::take(&mut incoming.topic),
            received_at: incoming.received_at,
            payload: ByteBuf::from(incoming.payload.to_vec()),
        };
        match &incoming.disposition {
            Disposition::Reading => readings.push(envelope),
            Disposition::Rejected { reason } => dead.push(DeadLetter {
                envelope,
                reason: reason.clone(),
            }),
        }
    }
    let last_seq = group.last().map_or(0, |item| item.seq);
    if let Some(first) = readings.first() {
        let bytes = block::encode(&readings);
        metrics.bytes_written.inc_by(bytes.len() as u64);
        trees.queue.insert(first.seq.to_be_bytes(), bytes)?;
    }
    for letter in &dead {
        let bytes = serde_cbor::to_vec(letter).expect("dead letters always serialize");
        trees
            .dead_letters
            .insert(letter.envelope.seq.to_be_bytes(), bytes)?;
    }
    if !dead.is_empty() {
        trim_dead_letters(trees, config.max_dead_letters)?;
    }
    trees
        .meta
        .insert(super::store::NEXT_SEQ, &(last_seq + 1).to_be_bytes())?;
    trees.db.flush()?;
    metrics.records.inc_by(readings.len() as i64);
    metrics.dead_letters.set(trees.dead_letters.len() as i64);
    Ok(readings.len())
}

/// Keeps the dead-letter tree at `max` entries, dropping the oldest.
pub(super) fn trim_dead_letters(trees: &Trees, max: u64) -> Result<(), sled::Error> {
    let excess = (trees.dead_letters.len() as u64).saturating_sub(max);
    for _ in 0..excess {
        trees.dead_letters.pop_min()?;
    }
    Ok(())
}
