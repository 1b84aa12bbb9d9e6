//! Group commit: one thread takes submitted publishes off a bounded queue,
//! appends each gathered group as one or more blocks (see [`block::split`])
//! to the last segment file, syncs it once, and only then marks the group's
//! seqs durable, which releases the waiting PUBACKs.
//!
//! ```text
//! submit (any thread)          writer thread                     waiters
//! seq = next_seq++  ──queue──▶ gather ≤ max_block_records, for as
//!                              long as the last write took (≤ flush_interval)
//!                              append blocks, fdatasync ──▶ processed = last seq, notify
//! ```
//!
//! Refused publishes (dead letters) go to sled, flushed with the group's
//! `next_seq`, before the group's readings are appended.
//!
//! A failed write marks its seqs failed: their PUBACKs are withheld and the
//! devices resend after reconnecting.

use crate::now_ms;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use broker::ReasonLabel;
use broker::{Disposition, Incoming, SinkError};
use serde_bytes::ByteBuf;
use telemetry::Envelope;
use tracing::{error, warn};

use super::block::{self, DeadLetter};
use super::seal::KeyRing;
use super::segments::{Appender, Queue, Roll};
use super::store::{Counters, Files, FullPolicy, SpoolError, Trees};
use super::watermark::Watermark;
use crate::metrics::SpoolMetrics;

/// How many failed groups are remembered to answer late waiters.
const FAILURES_KEPT: usize = 1024;

/// A submitted publish with its assigned seq.
pub(super) struct Item {
    pub seq: u64,
    pub incoming: Incoming,
}

/// The durable watermark shared by the writer and the waiting connections.
pub(super) struct Durability {
    /// Every seq <= this has an outcome (written or failed). Read without the lock.
    processed: AtomicU64,
    state: Mutex<Failures>,
    changed: Condvar,
    /// `processed` again, for connections that wait as futures.
    outcomes: tokio::sync::watch::Sender<u64>,
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
            state: Mutex::default(),
            changed: Condvar::new(),
            outcomes: tokio::sync::watch::Sender::new(processed),
        }
    }

    pub fn outcomes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outcomes.subscribe()
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
        self.outcomes.send_if_modified(|processed| {
            let advanced = last_seq > *processed;
            *processed = (*processed).max(last_seq);
            advanced
        });
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
    pub max_bytes: u64,
    /// A segment file takes no more blocks past this size.
    pub segment_bytes: u64,
    pub max_age: Duration,
    pub full_policy: FullPolicy,
    pub min_free_bytes: u64,
    /// Seals new blocks and dead letters (empty: they are written plain).
    pub keys: KeyRing,
}

/// How often the writer looks for expired blocks, and at most how often it
/// logs dropped readings.
const TICK: Duration = Duration::from_secs(1);
/// How long [`gather`] naps at a time while a group waits for more readings.
const GATHER_NAP: Duration = Duration::from_micros(250);
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a group was not written.
enum WriteError {
    Storage(sled::Error),
    /// The spool is at `max_bytes` and the policy is reject-new.
    Full,
    /// The filesystem is below `min_free_bytes`; sled is not even asked.
    DiskFull,
}

impl From<sled::Error> for WriteError {
    fn from(err: sled::Error) -> Self {
        WriteError::Storage(err)
    }
}

/// Rate limit for the WARN line about dropped readings.
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl DropLog {
    fn dropped(&mut self, reason: &'static str, readings: u64) {
        self.suppressed += readings;
        if self
            .last
            .is_none_or(|last| last.elapsed() >= DROP_LOG_INTERVAL)
        {
            warn!(
                reason,
                readings = self.suppressed,
                "spool dropped readings (logged every 10 s at most)"
            );
            self.last = Some(Instant::now());
            self.suppressed = 0;
        }
    }
}

/// Keeps the spool from filling its filesystem to the last byte.
///
/// A failed append is cut off and costs nothing, but sled (meta, dead
/// letters) does not survive running out of space under load: a write that
/// fails with ENOSPC can leave a log it later reads as corrupt. So the writer
/// refuses a group (no PUBACK; devices keep and resend) while free space is
/// below the floor, and the files only meet a full disk when something else
/// fills it faster than one group commit.
pub(super) struct DiskGuard {
    dir: std::path::PathBuf,
    min_free: u64,
    /// Free bytes at the last check.
    free: u64,
    /// The floor in force (`min_free`, capped at 10 % of the filesystem).
    floor: u64,
    /// Below the floor at the last check: then writes resume only at twice
    /// the floor, so that sled freeing a segment does not let one group in
    /// and refuse the next.
    low: bool,
}

impl DiskGuard {
    pub fn new(dir: &std::path::Path, min_free: u64) -> DiskGuard {
        DiskGuard {
            dir: dir.to_path_buf(),
            min_free,
            free: u64::MAX,
            floor: 0,
            low: false,
        }
    }

    /// Whether a group may be written; true if free space cannot be read.
    pub fn has_room(&mut self) -> bool {
        let Ok(stat) = rustix::fs::statvfs(&self.dir) else {
            return true;
        };
        self.free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let size = stat.f_blocks.saturating_mul(stat.f_frsize);
        self.floor = self.min_free.min(size / 10);
        let resume_at = if self.low {
            self.floor.saturating_mul(2)
        } else {
            self.floor
        };
        self.low = self.free < resume_at;
        !self.low
    }

    pub fn describe(&self) -> String {
        format!(
            "disk nearly full: {} bytes free, the spool keeps {} free (spool.min_free_bytes)",
            self.free, self.floor
        )
    }
}

/// What the writer thread owns or shares.
pub(super) struct Writer {
    pub files: Arc<Files>,
    pub queue: Arc<Queue>,
    pub counters: Arc<Counters>,
    pub durability: Arc<Durability>,
    pub watermark: Watermark,
    pub disk: DiskGuard,
    pub config: WriterConfig,
    pub metrics: SpoolMetrics,
}

/// Runs until every sender is gone and the queue is drained.
pub(super) fn run(rx: Receiver<Item>, writer: Writer, on_durable: impl Fn(u64, usize)) {
    let Writer {
        files,
        queue,
        counters,
        durability,
        mut watermark,
        mut disk,
        config,
        metrics,
    } = writer;
    let mut group = Vec::with_capacity(config.max_block_records);
    let mut appender = Appender::default();
    let mut drops = DropLog::default();
    // Failed groups since the last ERROR line, and when that line was written.
    let mut failures = 0u64;
    let mut last_failure_log: Option<Instant> = None;
    let mut last_expiry = Instant::now();
    // How long the last group took to write and sync: the longest the next
    // one waits for more readings (see `gather`).
    let mut last_write = config.flush_interval;
    loop {
        let first = match rx.recv_timeout(TICK) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => {
                // sled may have failed under an acknowledgement too.
                let _ = files.recover();
                watermark.write();
                expire(&queue, &counters, &config, &metrics, &mut drops);
                last_expiry = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        group.push(first);
        gather(&rx, &mut group, &config, last_write);
        let first_seq = group[0].seq;
        let last_seq = group[group.len() - 1].seq;
        let started = Instant::now();
        let written = if disk.has_room() {
            let mut output = Output {
                files: &files,
                queue: &queue,
                appender: &mut appender,
            };
            write_group(
                &mut output,
                &counters,
                &mut group,
                &config,
                &metrics,
                &mut drops,
            )
        } else {
            Err(WriteError::DiskFull)
        };
        match written {
            Ok(readings) => {
                last_write = started.elapsed();
                metrics.flush_seconds.observe(last_write.as_secs_f64());
                metrics.group_commit_records.observe(readings as f64);
                // Counts first, so that whoever wakes up sees them.
                on_durable(last_seq, readings);
                durability.complete(last_seq, None);
                watermark.advance(last_seq + 1);
            }
            Err(WriteError::DiskFull) => {
                metrics.rejected_disk.inc_by(group.len() as u64);
                drops.dropped("disk nearly full: not acknowledged", group.len() as u64);
                durability.complete(last_seq, Some((first_seq, disk.describe())));
            }
            Err(WriteError::Full) => {
                metrics.rejected_full.inc_by(group.len() as u64);
                drops.dropped("full, reject-new: not acknowledged", group.len() as u64);
                durability.complete(
                    last_seq,
                    Some((first_seq, "spool is full (policy reject-new)".into())),
                );
            }
            Err(WriteError::Storage(err)) => {
                metrics.write_errors.inc();
                failures += 1;
                // Every failed group is counted; the log gets one line per
                // interval, so a full disk does not also flood the journal.
                if last_failure_log.is_none_or(|at: Instant| at.elapsed() >= DROP_LOG_INTERVAL) {
                    error!(
                        error = %err,
                        first_seq,
                        last_seq,
                        failed_groups = failures,
                        "spool write failed; acknowledgements withheld (logged every 10 s at most)"
                    );
                    last_failure_log = Some(Instant::now());
                    failures = 0;
                }
                durability.complete(last_seq, Some((first_seq, err.to_string())));
            }
        }
        group.clear();
        if last_expiry.elapsed() >= TICK {
            let _ = files.recover();
            expire(&queue, &counters, &config, &metrics, &mut drops);
            last_expiry = Instant::now();
        }
    }
    watermark.write();
}

/// Drops segments whose newest block arrived before `max_age` ago, and
/// segments the collector acknowledged whole. A segment holds readings that
/// arrived within a sixteenth of `max_age` of each other (the writer starts
/// a new one past that), so a reading is dropped at most that much late.
fn expire(
    queue: &Queue,
    counters: &Counters,
    config: &WriterConfig,
    metrics: &SpoolMetrics,
    drops: &mut DropLog,
) {
    let cutoff = now_ms().saturating_sub(config.max_age.as_millis() as u64);
    let acked = counters.acked_seq.load(Ordering::Acquire);
    let dropped = queue
        .drop_while(acked, |segment| {
            segment.first_seq.is_some() && segment.newest < cutoff
        })
        .and_then(|(_, lost)| {
            // Acknowledged segments go, the last one too (for an empty
            // successor): no delivered reading lingers on disk while idle.
            queue
                .drop_while(acked, |segment| segment.last_seq <= acked)
                .map(|_| lost)
        });
    counters.bytes.store(queue.bytes(), Ordering::Release);
    metrics
        .bytes
        .set(counters.bytes.load(Ordering::Acquire) as i64);
    match dropped {
        Ok(0) => {}
        Ok(lost) => {
            counters.sub_pending(lost);
            metrics
                .dropped
                .get_or_create(&ReasonLabel { reason: "expired" })
                .inc_by(lost);
            metrics.records.dec_by(lost as i64);
            drops.dropped("expired", lost);
        }
        Err(err) => warn!(error = %err, "spool expiry failed; will retry"),
    }
}

/// Adds queued items to `group` until it is full or `wait` (the last
/// group's write and sync), at most `flush_interval`, has passed.
///
/// Waiting as long as a write takes keeps the disk busy at most about half
/// the time: a fast disk is synced often and PUBACKs come quickly (1,000
/// devices at 10 readings/s: p50 2.5 → 0.9 ms, 300 → 640 syncs/s), and a
/// slow one (an SD card) is synced less often, down to one sync per
/// `flush_interval`. Under load the groups fill up either way.
///
/// While the queue is empty the writer naps ([`GATHER_NAP`]) rather than
/// blocking on the channel: a writer blocked on the channel is woken by every
/// reading queued, and at a few hundred thousand readings a second those
/// wake-ups (a futex call in the connection's thread and a context switch
/// here, per reading) cost more than the readings themselves.
fn gather(rx: &Receiver<Item>, group: &mut Vec<Item>, config: &WriterConfig, wait: Duration) {
    let deadline = Instant::now() + wait.min(config.flush_interval);
    while group.len() < config.max_block_records {
        match rx.try_recv() {
            Ok(item) => group.push(item),
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    return;
                }
                std::thread::sleep((deadline - now).min(GATHER_NAP));
            }
        }
    }
}

/// Where a group goes: dead letters to sled (reopened after a failure),
/// readings to the queue's last segment.
struct Output<'a> {
    files: &'a Files,
    queue: &'a Queue,
    appender: &'a mut Appender,
}

/// Writes one group (blocks of readings plus any dead letters) and syncs.
/// Returns the number of readings written.
fn write_group(
    out: &mut Output<'_>,
    counters: &Counters,
    group: &mut [Item],
    config: &WriterConfig,
    metrics: &SpoolMetrics,
    drops: &mut DropLog,
) -> Result<usize, WriteError> {
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
    if !dead.is_empty() {
        let last_seq = group.last().map_or(0, |item| item.seq);
        write_dead_letters(out.files, &dead, last_seq, config)?;
        metrics
            .dead_letters
            .set(out.files.with(|t| Ok(t.dead_letters.len())).unwrap_or(0) as i64);
    }
    let blocks: Vec<(u64, Vec<u8>)> = block::split(&readings)
        .map(|chunk| (chunk[0].seq, block::encode(chunk, &config.keys)))
        .collect();
    let size: u64 = blocks.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    if size == 0 {
        return Ok(0);
    }
    make_room(out.queue, counters, size, config, metrics, drops)?;
    let acked = counters.acked_seq.load(Ordering::Acquire);
    let roll = Roll {
        bytes: config.segment_bytes,
        span_ms: (config.max_age.as_millis() as u64 / 16).max(1),
    };
    let written = out
        .queue
        .append(out.appender, &blocks, roll, acked)
        .map_err(|e| WriteError::Storage(sled::Error::Io(e)))?;
    metrics.bytes_written.inc_by(written);
    counters.bytes.store(out.queue.bytes(), Ordering::Release);
    metrics
        .bytes
        .set(counters.bytes.load(Ordering::Acquire) as i64);
    metrics.records.inc_by(readings.len() as i64);
    Ok(readings.len())
}

/// Stores a group's refused publishes with the group's `next_seq` (their
/// seqs are in no segment) and flushes sled.
fn write_dead_letters(
    files: &Files,
    dead: &[DeadLetter],
    last_seq: u64,
    config: &WriterConfig,
) -> Result<(), WriteError> {
    let failed = |e: SpoolError| WriteError::Storage(sled::Error::Unsupported(e.to_string()));
    files.recover().map_err(failed)?;
    let written = files.with(|trees| {
        let storage = |e| files.storage_error(e);
        for letter in dead {
            let bytes = block::encode_dead_letter(letter, &config.keys);
            trees
                .dead_letters
                .insert(letter.envelope.seq.to_be_bytes(), bytes)
                .map_err(storage)?;
        }
        trim_dead_letters(trees, config.max_dead_letters).map_err(storage)?;
        trees
            .meta
            .insert(super::store::NEXT_SEQ, &(last_seq + 1).to_be_bytes())
            .map_err(storage)?;
        trees.db.flush().map_err(storage)?;
        Ok(())
    });
    if written.is_err() {
        files.mark_broken();
    }
    written.map_err(failed)
}

/// Applies the full policy when blocks of `size` bytes would pass `max_bytes`.
fn make_room(
    queue: &Queue,
    counters: &Counters,
    size: u64,
    config: &WriterConfig,
    metrics: &SpoolMetrics,
    drops: &mut DropLog,
) -> Result<(), WriteError> {
    let mut excess = (queue.bytes() + size).saturating_sub(config.max_bytes);
    if excess == 0 {
        return Ok(());
    }
    if config.full_policy == FullPolicy::RejectNew {
        return Err(WriteError::Full);
    }
    let acked = counters.acked_seq.load(Ordering::Acquire);
    let (_, lost) = queue
        .drop_while(acked, |segment| {
            let doomed = excess > 0;
            excess = excess.saturating_sub(segment.len);
            doomed
        })
        .map_err(|e| WriteError::Storage(sled::Error::Io(e)))?;
    counters.sub_pending(lost);
    counters.bytes.store(queue.bytes(), Ordering::Release);
    if lost > 0 {
        metrics
            .dropped
            .get_or_create(&ReasonLabel { reason: "full" })
            .inc_by(lost);
        metrics.records.dec_by(lost as i64);
        drops.dropped("full, drop-oldest", lost);
    }
    Ok(())
}

/// Keeps the dead-letter tree at `max` entries, dropping the oldest.
pub(super) fn trim_dead_letters(trees: &Trees, max: u64) -> Result<(), sled::Error> {
    let excess = (trees.dead_letters.len() as u64).saturating_sub(max);
    for _ in 0..excess {
        trees.dead_letters.pop_min()?;
    }
    Ok(())
}
