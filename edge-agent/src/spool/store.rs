//! Opening the spool, handing publishes to the writer, reading batches for
//! the uplink and trimming what the collector acknowledged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use broker::{Incoming, IngestSink, SinkError, Ticket};
use telemetry::Envelope;
use tokio::sync::watch;

use super::block::{self, DeadLetter};
use super::seal::{self, KeyRing, SealError};
use super::segments::{self, Next, Queue};
use super::watermark::{self, Watermark};
use super::writer::{self, DiskGuard, Durability, Item, Writer, WriterConfig};
use crate::metrics::SpoolMetrics;

pub(super) const SPOOL_ID: &str = "spool_id";
pub(super) const NEXT_SEQ: &str = "next_seq";
pub(super) const ACKED_SEQ: &str = "acked_seq";

/// Spool settings, after validation.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Longest a group commit waits for more publishes before flushing (default
    /// 2 ms); it waits no longer than the last write and sync took.
    pub flush_interval: Duration,
    /// Most readings in one group commit, i.e. one block (default 1000).
    pub max_block_records: usize,
    /// Publishes queued for the writer before submitters block (default 20,000).
    pub queue_capacity: usize,
    /// Refused publishes kept for inspection; the oldest go first (default 10,000).
    pub max_dead_letters: u64,
    /// Most bytes of readings kept (default 1 GiB); past it `full_policy` applies.
    pub max_bytes: u64,
    /// Readings older than this are dropped, sent or not (default 7 days).
    pub max_age: Duration,
    /// What a full spool does with new readings (default drop-oldest).
    pub full_policy: FullPolicy,
    /// Free space the spool leaves on its filesystem (default 64 MiB, and
    /// never more than 10 % of the filesystem): below it new readings are
    /// refused like on a full disk, before sled itself runs out of room.
    pub min_free_bytes: u64,
    /// Keys that seal blocks and dead letters at rest (`spool.key_file` or
    /// `$EDGE_AGENT_SPOOL_KEYS`); empty by default: no encryption.
    pub keys: KeyRing,
}

/// What happens when a reading does not fit in `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Delete the oldest readings to make room; every drop is counted.
    DropOldest,
    /// Refuse the new readings: no PUBACK, so QoS 1 devices keep and resend them.
    RejectNew,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            flush_interval: Duration::from_millis(2),
            max_block_records: 1000,
            queue_capacity: 20_000,
            max_dead_letters: 10_000,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(7 * 24 * 3600),
            full_policy: FullPolicy::DropOldest,
            min_free_bytes: 64 << 20,
            keys: KeyRing::none(),
        }
    }
}

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// sled could not open, read or write the spool files.
    #[error("spool i/o at {path}: {source}")]
    Storage { path: PathBuf, source: sled::Error },
    /// A stored block or meta value does not decode: the spool is corrupt.
    #[error("spool at {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// The spool is sealed with keys the configured key ring lacks, or does
    /// not match. Refused and left exactly as it is: configure the right
    /// keys (never quarantine or wipe a spool for this).
    #[error("spool at {path} cannot be opened with the configured keys: {reason}")]
    Key { path: PathBuf, reason: String },
}

impl SpoolError {
    /// Whether the spool's files are bad (quarantine them) rather than
    /// unreachable (an operator must act; never move a spool aside for that).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, SpoolError::Corrupt { .. })
    }
}

/// Counts for status pages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpoolStats {
    /// Readings stored and not yet acknowledged by the collector.
    pub pending: u64,
    /// Highest seq the collector acknowledged.
    pub acked_seq: u64,
    /// Highest seq written durably.
    pub durable_seq: u64,
    /// Bytes of stored blocks.
    pub bytes: u64,
}

/// What `edge-agent spool stats` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpoolReport {
    pub path: String,
    pub spool_id: String,
    #[serde(flatten)]
    pub stats: SpoolStats,
    /// Group-commit blocks in the queue.
    pub blocks: u64,
    /// Blocks sealed with each key id; a key may leave the ring once no
    /// block needs it.
    pub sealed_blocks: std::collections::BTreeMap<u32, u64>,
    /// Arrival of the oldest stored reading, ms since the epoch.
    pub oldest_received_at: Option<u64>,
    pub dead_letters: u64,
    pub corrupt_blocks: u64,
}

/// sled handles: everything but the queue itself, which is in segment
/// files (segments.rs).
#[derive(Clone)]
pub(super) struct Trees {
    pub db: sled::Db,
    pub meta: sled::Tree,
    pub dead_letters: sled::Tree,
    /// Blocks (or damaged ranges of segments) that stopped decoding, kept
    /// for `spool recover` and forensics; key = segment name ++ offset.
    pub corrupt: sled::Tree,
}

/// Counts shared by the spool handle and its writer thread.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Every seq <= this was acknowledged by the collector.
    pub acked_seq: AtomicU64,
    /// Readings stored with a seq above `acked_seq`. Approximate only when
    /// a full spool drops a block the uplink is sending at that moment.
    pub pending: AtomicU64,
    /// Bytes of the queue's segment files.
    pub bytes: AtomicU64,
}

impl Counters {
    pub fn sub_pending(&self, n: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
    }
}

/// The sled files, which the writer reopens after a failed write: sled keeps
/// the first I/O error (a full disk, say) and refuses every later write
/// until the database is opened anew.
pub(super) struct Files {
    path: PathBuf,
    /// `None` only for the moment of a reopen.
    trees: RwLock<Option<Trees>>,
    /// Since when sled has been refusing writes (whoever saw it fail: the
    /// writer or an acknowledgement); the writer reopens it.
    broken: Mutex<Option<std::time::Instant>>,
}

/// How long the writer waits between attempts to reopen failed sled files.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

impl Files {
    /// Runs `f` on the open trees; an error if a reopen failed.
    pub fn with<R>(
        &self,
        f: impl FnOnce(&Trees) -> Result<R, SpoolError>,
    ) -> Result<R, SpoolError> {
        let guard = self.trees.read().expect("spool files lock");
        match guard.as_ref() {
            Some(trees) => f(trees),
            None => Err(SpoolError::Storage {
                path: self.path.clone(),
                source: sled::Error::Unsupported(
                    "spool files are being reopened after a write failure".into(),
                ),
            }),
        }
    }

    /// Notes that a sled write failed: sled refuses every later one until
    /// it is reopened.
    pub fn mark_broken(&self) {
        self.broken
            .lock()
            .expect("spool files lock")
            .get_or_insert_with(std::time::Instant::now);
    }

    /// If sled failed, reopens it (at most once per [`REOPEN_INTERVAL`]);
    /// an error while it is still failed.
    pub fn recover(&self) -> Result<(), SpoolError> {
        let mut broken = self.broken.lock().expect("spool files lock");
        let Some(since) = *broken else {
            return Ok(());
        };
        if since.elapsed() < REOPEN_INTERVAL {
            return Err(self.storage_error(sled::Error::Unsupported(
                "spool storage failed; waiting to reopen it".into(),
            )));
        }
        match self.reopen() {
            Ok(()) => {
                *broken = None;
                tracing::info!("spool storage reopened; accepting writes again");
                Ok(())
            }
            Err(err) => {
                *broken = Some(std::time::Instant::now());
                Err(self.storage_error(err))
            }
        }
    }

    pub fn storage_error(&self, source: sled::Error) -> SpoolError {
        SpoolError::Storage {
            path: self.path.clone(),
            source,
        }
    }

    /// Closes and reopens the sled database. Readers meanwhile get an error
    /// rather than wait.
    ///
    /// The old handles are dropped on a thread of their own: sled flushes on
    /// drop and, on a disk that is still full, may keep trying for as long
    /// as it stays full. Until that drop is done sled keeps its file lock,
    /// the open below fails, and the writer tries again later.
    pub fn reopen(&self) -> Result<(), sled::Error> {
        let old = self.trees.write().expect("spool files lock").take();
        if let Some(old) = old {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let closer = std::thread::Builder::new()
                .name("spool-close".into())
                .spawn(move || {
                    drop(old);
                    let _ = done_tx.send(());
                });
            if closer.is_ok() {
                // Usually quick; past this the open below fails and is retried.
                let _ = done_rx.recv_timeout(Duration::from_secs(1));
            }
        }
        let trees = Trees::open(open_sled(&self.path)?)?;
        *self.trees.write().expect("spool files lock") = Some(trees);
        Ok(())
    }
}

/// Opens the spool's sled database, waiting up to a second for its file
/// lock: a handle dropped a moment ago in this process (a reopen after a
/// failed write, an offline command right after a close) lets go of the
/// lock only when sled's flusher thread exits, shortly after the drop. A
/// lock held by another process (a running agent) still fails, a second
/// later.
pub(super) fn open_sled(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match sled_config(dir).open() {
            Err(err)
                if err.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Moves the blocks of a spool written before the queue left sled (its
/// tree `queue`) into segment files, then drops the tree. A crash half way
/// repeats the import next time: segments already written are kept as they
/// are (see [`segments::SegmentBuilder`]).
pub(super) fn import_sled_queue(db: &sled::Db, dir: &Path) -> std::io::Result<()> {
    if !db.tree_names().iter().any(|name| name.as_ref() == b"queue") {
        return Ok(());
    }
    let tree = db.open_tree("queue")?;
    let mut segments = segments::SegmentBuilder::new(dir);
    for entry in tree.iter() {
        let (key, value) = entry?;
        let first_seq = key
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "queue key is not 8 bytes")
            })?;
        segments.push(first_seq, value.to_vec())?;
    }
    segments.finish()?;
    drop(tree);
    db.drop_tree("queue")?;
    db.flush()?;
    Ok(())
}

/// Readings in the queue with a seq above `acked`: exact, by decoding the
/// blocks of the one segment the acknowledgement stopped inside.
fn count_unacked(queue: &Queue, acked: u64, keys: &KeyRing) -> std::io::Result<u64> {
    let mut pending = 0;
    let mut straddling = None;
    for (name, segment) in queue.segments() {
        match segment.first_seq {
            Some(first) if first > acked => pending += segment.readings,
            Some(_) if segment.last_seq > acked => straddling = Some(name),
            _ => {}
        }
    }
    let Some(straddling) = straddling else {
        return Ok(pending);
    };
    queue.visit(acked, |item| {
        let segments::Item::Block { segment, bytes, .. } = item else {
            return Next::Continue;
        };
        if segment != straddling {
            return Next::Stop;
        }
        pending += match block::header(bytes) {
            Ok(header) if header.last_seq <= acked => 0,
            Ok(header) => match block::decode(bytes, keys) {
                Ok(envelopes) => envelopes.iter().filter(|e| e.seq > acked).count() as u64,
                // Tampered: `read_after` sets it aside; count it whole till then.
                Err(_) => u64::from(header.count),
            },
            Err(_) => 0,
        };
        Next::Continue
    })?;
    Ok(pending)
}

/// The one sled configuration of a spool.
pub(super) fn sled_config(dir: &Path) -> sled::Config {
    // sled's default page cache is 1 GiB; sled holds only the metadata, the
    // dead letters (at most `max_dead_letters`) and blocks set aside here,
    // none of them read often: a small cache is plenty.
    sled::Config::new()
        .path(dir)
        .cache_capacity(8 * 1024 * 1024)
}

impl Trees {
    fn open(db: sled::Db) -> Result<Trees, sled::Error> {
        Ok(Trees {
            meta: db.open_tree("meta")?,
            dead_letters: db.open_tree("dead_letters")?,
            corrupt: db.open_tree("corrupt_blocks")?,
            db,
        })
    }
}

/// The durable queue; cheap to clone, shared by the broker codec and the uplink.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    files: Arc<Files>,
    queue: Arc<Queue>,
    spool_id: String,
    submit: Mutex<Submitter>,
    durability: Arc<Durability>,
    counters: Arc<Counters>,
    /// Last durable reading seq, for the uplink to wait on.
    durable_tx: watch::Sender<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: SpoolMetrics,
    max_dead_letters: u64,
    keys: KeyRing,
}

struct Submitter {
    next_seq: u64,
    /// `None` once the spool is closing.
    tx: Option<SyncSender<Item>>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and starts its writer thread.
    pub fn open(
        dir: &Path,
        options: SpoolOptions,
        metrics: SpoolMetrics,
    ) -> Result<Spool, SpoolError> {
        let storage = |source| SpoolError::Storage {
            path: dir.to_path_buf(),
            source,
        };
        let corrupt = |reason: String| SpoolError::Corrupt {
            path: dir.to_path_buf(),
            reason,
        };
        // Errors that say the files themselves are bad, as opposed to the
        // directory being unreachable or locked by another process.
        let opening = |source: sled::Error| match source {
            sled::Error::Corruption { .. }
            | sled::Error::Unsupported(_)
            | sled::Error::ReportableBug(_) => corrupt(source.to_string()),
            sled::Error::Io(ref e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                corrupt(source.to_string())
            }
            source => storage(source),
        };
        super::erase::finish_interrupted(dir).map_err(|e| storage(sled::Error::Io(e)))?;
        // Before anything else touches the files: a wrong key changes nothing.
        let sealed_with = seal::check(dir, &options.keys).map_err(|err| SpoolError::Key {
            path: dir.to_path_buf(),
            reason: err.to_string(),
        })?;
        let mark = watermark::read(dir).map_err(|err| match err.kind() {
            std::io::ErrorKind::InvalidData => corrupt(err.to_string()),
            _ => storage(sled::Error::Io(err)),
        })?;
        let db = open_sled(dir).map_err(opening)?;
        let trees = Trees::open(db).map_err(opening)?;
        let queue_error = |err: std::io::Error| match err.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                corrupt(err.to_string())
            }
            _ => storage(sled::Error::Io(err)),
        };
        import_sled_queue(&trees.db, dir).map_err(queue_error)?;

        let spool_id = match trees.meta.get(SPOOL_ID).map_err(storage)? {
            Some(id) if id.len() == 16 => hex::encode(&id),
            Some(id) => return Err(corrupt(format!("spool_id has {} bytes, not 16", id.len()))),
            None if mark.is_some() => {
                return Err(corrupt(
                    "sled holds no spool, yet the watermark says one was flushed here".into(),
                ))
            }
            None => {
                let id: [u8; 16] = rand::random();
                trees.meta.insert(SPOOL_ID, &id).map_err(storage)?;
                trees.db.flush().map_err(storage)?;
                hex::encode(id)
            }
        };
        let read_u64 = |key: &str| -> Result<u64, SpoolError> {
            match trees.meta.get(key).map_err(storage)? {
                None => Ok(0),
                Some(v) => {
                    Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                        corrupt(format!("meta {key} is not 8 bytes"))
                    })?))
                }
            }
        };
        let acked_seq = read_u64(ACKED_SEQ)?;
        let (queue, opened) = Queue::open(dir).map_err(queue_error)?;
        if opened.torn_bytes > 0 {
            tracing::warn!(
                bytes = opened.torn_bytes,
                "spool: cut off a write torn by a crash (never acknowledged to any device)"
            );
        }
        // Blocks that were all acknowledged need no key any more.
        if let Some(id) = queue
            .segments()
            .iter()
            .flat_map(|(_, segment)| segment.sealed.iter())
            .find(|(id, (_, last_seq))| *last_seq > acked_seq && !options.keys.has(**id))
            .map(|(id, _)| *id)
        {
            return Err(SpoolError::Key {
                path: dir.to_path_buf(),
                reason: SealError::UnknownKey(id).to_string(),
            });
        }
        let next_seq = read_u64(NEXT_SEQ)?
            .max(acked_seq + 1)
            .max(opened.next_seq)
            .max(1);
        let pending = count_unacked(&queue, acked_seq, &options.keys).map_err(queue_error)?;
        let bytes = queue.bytes();
        if let Some(mark) = mark {
            if mark.spool_id != spool_id {
                return Err(corrupt(format!(
                    "the watermark belongs to spool {}, the files to spool {spool_id}",
                    mark.spool_id
                )));
            }
            if next_seq < mark.next_seq {
                return Err(corrupt(format!(
                    "the log ends before seq {next_seq}, but seqs up to {} were flushed: \
                     sled dropped a damaged part of it",
                    mark.next_seq - 1
                )));
            }
        }
        seal::record_current(dir, &options.keys, &sealed_with)
            .map_err(|e| storage(sled::Error::Io(e)))?;
        metrics.records.set(pending as i64);
        metrics.dead_letters.set(trees.dead_letters.len() as i64);

        let durability = Arc::new(Durability::new(next_seq - 1));
        let (durable_tx, _) = watch::channel(next_seq - 1);
        let (tx, rx) = sync_channel(options.queue_capacity.max(1));
        let counters = Arc::new(Counters {
            acked_seq: AtomicU64::new(acked_seq),
            pending: AtomicU64::new(pending),
            bytes: AtomicU64::new(bytes),
        });
        metrics.bytes.set(bytes as i64);
        let files = Arc::new(Files {
            path: dir.to_path_buf(),
            trees: RwLock::new(Some(trees)),
            broken: Mutex::default(),
        });
        let queue = Arc::new(queue);
        let inner = Arc::new(Inner {
            path: dir.to_path_buf(),
            files: files.clone(),
            queue: queue.clone(),
            spool_id,
            submit: Mutex::new(Submitter {
                next_seq,
                tx: Some(tx),
            }),
            durability: durability.clone(),
            counters: counters.clone(),
            durable_tx,
            writer: Mutex::new(None),
            metrics: metrics.clone(),
            max_dead_letters: options.max_dead_letters,
            keys: options.keys.clone(),
        });

        let config = WriterConfig {
            flush_interval: options.flush_interval,
            max_block_records: options.max_block_records.max(1),
            max_dead_letters: options.max_dead_letters,
            max_bytes: options.max_bytes,
            // Small enough that drop-oldest frees room in sixteenths.
            segment_bytes: (options.max_bytes / 16).clamp(1, segments::MAX_SEGMENT_BYTES),
            max_age: options.max_age,
            full_policy: options.full_policy,
            min_free_bytes: options.min_free_bytes,
            keys: options.keys,
        };
        let watermark = Watermark::new(dir, &inner.spool_id, next_seq);
        let disk = DiskGuard::new(dir, config.min_free_bytes);
        let notify = Arc::downgrade(&inner);
        let writer_files = files;
        let writer_counters = counters;
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                writer::run(
                    rx,
                    Writer {
                        files: writer_files,
                        queue,
                        counters: writer_counters,
                        durability,
                        watermark,
                        disk,
                        config,
                        metrics,
                    },
                    |last_seq, readings| {
                        if let Some(inner) = notify.upgrade() {
                            inner
                                .counters
                                .pending
                                .fetch_add(readings as u64, Ordering::AcqRel);
                            inner.durable_tx.send_replace(last_seq);
                        }
                    },
                )
            })
            .map_err(|e| storage(sled::Error::Io(e)))?;
        *inner.writer.lock().expect("writer lock") = Some(handle);
        Ok(Spool { inner })
    }

    /// Random id of this spool, made when it was created.
    pub fn spool_id(&self) -> &str {
        &self.inner.spool_id
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The key ring blocks are sealed and opened with.
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// Arrival of the oldest reading not yet acknowledged (ms since the
    /// epoch), if any; to the segment (see segments.rs).
    pub fn oldest_received_at(&self) -> Option<u64> {
        let acked = self.inner.counters.acked_seq.load(Ordering::Acquire);
        self.inner
            .queue
            .segments()
            .into_iter()
            .find(|(_, segment)| segment.unacked(acked) > 0)
            .and_then(|(_, segment)| segment.oldest)
    }

    /// Sets the oldest-reading age gauge; called when `/metrics` is scraped.
    pub fn refresh_oldest_age(&self) {
        let age_ms = self
            .oldest_received_at()
            .map_or(0, |at| crate::now_ms().saturating_sub(at));
        self.inner
            .metrics
            .oldest_age_seconds
            .set(age_ms as f64 / 1000.0);
    }

    /// A fuller picture than [`Spool::stats`], for the offline CLI.
    pub fn inspect(&self) -> Result<SpoolReport, SpoolError> {
        let stats = self.stats();
        let segments = self.inner.queue.segments();
        let mut sealed_blocks = std::collections::BTreeMap::new();
        for (_, segment) in &segments {
            for (id, (blocks, _)) in &segment.sealed {
                *sealed_blocks.entry(*id).or_insert(0) += blocks;
            }
        }
        self.inner.files.with(|trees| {
            Ok(SpoolReport {
                path: self.inner.path.display().to_string(),
                spool_id: self.inner.spool_id.clone(),
                stats,
                blocks: segments.iter().map(|(_, s)| s.blocks).sum(),
                sealed_blocks,
                oldest_received_at: segments.iter().find_map(|(_, s)| s.oldest),
                dead_letters: trees.dead_letters.len() as u64,
                corrupt_blocks: trees.corrupt.len() as u64,
            })
        })
    }

    /// Deletes every pending reading (and, with `dead_letters`, the dead
    /// letters); returns how many readings went. For an operator who has
    /// decided the data is not wanted.
    pub fn purge(&self, dead_letters: bool) -> Result<u64, SpoolError> {
        let purged = self.stats().pending;
        let counters = &self.inner.counters;
        let acked = counters.acked_seq.load(Ordering::Acquire);
        self.inner
            .queue
            .drop_while(acked, |_| true)
            .map_err(|e| self.storage(sled::Error::Io(e)))?;
        counters.pending.store(0, Ordering::Release);
        counters
            .bytes
            .store(self.inner.queue.bytes(), Ordering::Release);
        // Later readings must not reuse the purged seqs' acknowledgement.
        let durable = self.inner.durability.processed();
        counters.acked_seq.fetch_max(durable, Ordering::AcqRel);
        self.inner.files.with(|trees| {
            let storage = |source| self.storage(source);
            if dead_letters {
                trees.dead_letters.clear().map_err(storage)?;
            }
            trees
                .meta
                .insert(ACKED_SEQ, &durable.to_be_bytes())
                .map_err(storage)?;
            trees
                .meta
                .insert(NEXT_SEQ, &(durable + 1).to_be_bytes())
                .map_err(storage)?;
            trees.db.flush().map_err(storage)?;
            Ok(())
        })?;
        Ok(purged)
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            pending: self.inner.counters.pending.load(Ordering::Acquire),
            acked_seq: self.inner.counters.acked_seq.load(Ordering::Acquire),
            bytes: self.inner.counters.bytes.load(Ordering::Acquire),
            durable_seq: self.inner.durability.processed(),
        }
    }

    /// A receiver that changes whenever new readings became durable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.durable_tx.subscribe()
    }

    /// Up to `max_records` pending, durable readings (and about `max_bytes`)
    /// whose seq is above `after`, in seq order. Acknowledged readings are
    /// never returned. A block that no longer decodes (or a damaged range
    /// of a segment) is copied to the `corrupt_blocks` tree (counted,
    /// logged) and skipped instead of stopping the uplink for good.
    pub fn read_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Envelope>, SpoolError> {
        let after = after.max(self.inner.counters.acked_seq.load(Ordering::Acquire));
        // Only what a successful sync made durable (the queue shows readers
        // nothing else; this is a second line).
        let durable = *self.inner.durable_tx.borrow();
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut failed = None;
        let visited = self.inner.queue.visit(after, |item| {
            let (segment, offset, raw, decoded) = match item {
                segments::Item::Block {
                    segment,
                    offset,
                    bytes: raw,
                    ..
                } => {
                    // The header alone tells whether the block was read
                    // already; only blocks with something to return are decoded.
                    let decoded = match block::header(raw) {
                        Ok(header) if header.last_seq <= after => return Next::Continue,
                        Ok(_) => block::decode(raw, &self.inner.keys),
                        Err(err) => Err(err),
                    };
                    (segment, offset, raw, decoded)
                }
                segments::Item::Damaged {
                    segment,
                    offset,
                    bytes: raw,
                } => {
                    let reason = format!("{} bytes that are not a whole record", raw.len());
                    if let Err(err) = self.set_aside(segment, offset, raw, &reason) {
                        failed = Some(err);
                        return Next::Stop;
                    }
                    let end = offset + raw.len() as u64;
                    self.inner.queue.mark_damaged(segment, offset, end);
                    return Next::Continue;
                }
            };
            let envelopes = match decoded {
                Ok(envelopes) => envelopes,
                Err(err) => {
                    let end = segments::record_end(offset, raw);
                    if self.inner.queue.mark_damaged(segment, offset, end) {
                        if let Err(err) = self.set_aside(segment, offset, raw, &err.to_string()) {
                            failed = Some(err);
                            return Next::Stop;
                        }
                    }
                    return Next::Continue;
                }
            };
            for envelope in envelopes {
                if envelope.seq <= after {
                    continue;
                }
                if envelope.seq > durable {
                    return Next::Stop;
                }
                bytes += envelope.approx_size();
                out.push(envelope);
                if out.len() >= max_records || bytes >= max_bytes {
                    return Next::Stop;
                }
            }
            Next::Continue
        });
        visited.map_err(|e| self.storage(sled::Error::Io(e)))?;
        match failed {
            Some(err) => Err(err),
            None => Ok(out),
        }
    }

    /// Keeps a copy of an unreadable block (or damaged range) of a segment
    /// in `corrupt_blocks`, for `spool recover` and forensics.
    fn set_aside(
        &self,
        segment: u64,
        offset: u64,
        bytes: &[u8],
        reason: &str,
    ) -> Result<(), SpoolError> {
        tracing::error!(
            segment,
            offset,
            error = reason,
            "spool block does not decode; copied to corrupt_blocks and skipped"
        );
        self.inner.metrics.corrupt_blocks.inc();
        self.inner.files.with(|trees| {
            trees
                .corrupt
                .insert(segments::place_key(segment, offset), bytes)
                .map(|_| ())
                .map_err(|s| self.storage(s))
        })
    }

    /// Records that the collector stored every reading with seq <= `upto`
    /// (`count` of them were pending), and deletes the segments that are
    /// done. If the write of `acked_seq` fails, the acknowledgement still
    /// counts in memory (and its segments still go: on a full disk they are
    /// the room the spool needs), sled is reopened by the writer, and the
    /// next successful `ack` records its own seq.
    pub fn ack(&self, upto: u64, count: u64) -> Result<(), SpoolError> {
        let inner = &self.inner;
        let counters = &inner.counters;
        let previous = counters.acked_seq.fetch_max(upto, Ordering::AcqRel);
        if previous >= upto {
            return Ok(());
        }
        counters.sub_pending(count);
        inner.metrics.records.dec_by(count as i64);
        inner.metrics.acked_seq.set(upto as i64);
        let trimmed = inner.queue.trim(upto);
        counters.bytes.store(inner.queue.bytes(), Ordering::Release);
        inner
            .metrics
            .bytes
            .set(counters.bytes.load(Ordering::Acquire) as i64);
        let recorded = inner.files.with(|trees| {
            trees
                .meta
                .insert(ACKED_SEQ, &upto.to_be_bytes())
                .map(|_| ())
                .map_err(|s| self.storage(s))
        });
        if recorded.is_err() {
            inner.files.mark_broken();
        }
        trimmed.map_err(|e| self.storage(sled::Error::Io(e)))?;
        recorded
    }

    /// Keeps readings the collector refused for good, with the reason.
    pub fn dead_letter(&self, envelopes: Vec<Envelope>, reason: &str) -> Result<(), SpoolError> {
        self.inner.files.with(|trees| {
            let storage = |source| self.storage(source);
            for envelope in envelopes {
                let key = envelope.seq.to_be_bytes();
                let letter = DeadLetter {
                    envelope,
                    reason: reason.to_string(),
                };
                let bytes = block::encode_dead_letter(&letter, &self.inner.keys);
                trees.dead_letters.insert(key, bytes).map_err(storage)?;
            }
            writer::trim_dead_letters(trees, self.inner.max_dead_letters).map_err(storage)?;
            trees.db.flush().map_err(storage)?;
            self.inner
                .metrics
                .dead_letters
                .set(trees.dead_letters.len() as i64);
            Ok(())
        })
    }

    /// Refused publishes kept for inspection, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        self.inner.files.with(|trees| {
            let mut out = Vec::new();
            for entry in trees.dead_letters.iter() {
                let (_, value) = entry.map_err(|s| self.storage(s))?;
                out.push(
                    block::decode_dead_letter(&value, &self.inner.keys).map_err(|e| {
                        SpoolError::Corrupt {
                            path: self.inner.path.clone(),
                            reason: format!("dead letter: {e}"),
                        }
                    })?,
                );
            }
            Ok(out)
        })
    }

    /// Stops taking publishes, writes what is queued, flushes and stops the writer.
    /// Blocks; call from a blocking context.
    pub fn close(&self) -> Result<(), SpoolError> {
        drop(self.inner.submit.lock().expect("submit lock").tx.take());
        if let Some(handle) = self.inner.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
        self.inner
            .files
            .with(|trees| trees.db.flush().map(|_| ()).map_err(|s| self.storage(s)))
    }

    /// A sink error as a spool error, for callers outside the MQTT path.
    pub fn storage_error_from(&self, err: broker::SinkError) -> SpoolError {
        self.storage(sled::Error::Unsupported(err.to_string()))
    }

    fn storage(&self, source: sled::Error) -> SpoolError {
        SpoolError::Storage {
            path: self.inner.path.clone(),
            source,
        }
    }
}

impl Drop for Inner {
    /// The last handle gone: let the writer finish its group and release the
    /// sled files, so that the spool can be opened again right away.
    fn drop(&mut self) {
        if let Ok(submit) = self.submit.get_mut() {
            submit.tx.take();
        }
        if let Some(handle) = self.writer.get_mut().ok().and_then(Option::take) {
            // The writer itself may hold the last handle for a moment (its
            // durability callback); it must not wait for itself.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl IngestSink for Spool {
    fn submit(&self, incoming: Incoming) -> Result<Ticket, SinkError> {
        let mut submitter = self.inner.submit.lock().expect("submit lock");
        let seq = submitter.next_seq;
        let tx = submitter.tx.as_ref().ok_or(SinkError::Closed)?;
        // Seqs are assigned under the lock that also orders the queue, so the
        // writer sees them in increasing order.
        match tx.try_send(Item { seq, incoming }) {
            Ok(()) => {}
            Err(TrySendError::Full(item)) => {
                // Back-pressure: hold this connection (and, through the lock,
                // the others) until the writer catches up.
                let tx = tx.clone();
                tokio::task::block_in_place(|| tx.send(item).is_ok())
                    .then_some(())
                    .ok_or(SinkError::Closed)?;
            }
            Err(TrySendError::Disconnected(_)) => return Err(SinkError::Closed),
        }
        submitter.next_seq += 1;
        Ok(Ticket(seq))
    }

    fn is_durable(&self, ticket: Ticket) -> bool {
        self.inner.durability.is_durable(ticket.0)
    }

    fn wait_durable(&self, ticket: Ticket, timeout: Duration) -> Result<(), SinkError> {
        self.inner.durability.wait(ticket.0, timeout)
    }

    fn outcomes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.durability.outcomes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn envelopes(seqs: std::ops::RangeInclusive<u64>) -> Vec<Envelope> {
        seqs.map(|seq| Envelope {
            seq,
            device_id: "d".into(),
            topic: "devices/d/telemetry".into(),
            received_at: crate::now_ms(),
            payload: ByteBuf::from(vec![seq as u8]),
        })
        .collect()
    }

    /// A spool as written before the queue left sled: blocks in the tree
    /// `queue`, `acked_seq` in the middle of one.
    #[test]
    fn a_queue_kept_in_sled_is_moved_into_segments_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyRing::none();
        {
            let db = sled_config(dir.path()).open().unwrap();
            let meta = db.open_tree("meta").unwrap();
            meta.insert(SPOOL_ID, &[7u8; 16]).unwrap();
            meta.insert(ACKED_SEQ, &5u64.to_be_bytes()).unwrap();
            meta.insert(NEXT_SEQ, &21u64.to_be_bytes()).unwrap();
            let queue = db.open_tree("queue").unwrap();
            for (first, last) in [(1, 10), (11, 20)] {
                let block = block::encode(&envelopes(first..=last), &keys);
                queue.insert(u64::to_be_bytes(first), block).unwrap();
            }
            db.flush().unwrap();
        }
        let spool =
            Spool::open(dir.path(), SpoolOptions::default(), SpoolMetrics::default()).unwrap();
        assert_eq!(spool.spool_id(), hex::encode([7u8; 16]));
        assert_eq!(spool.stats().pending, 15);
        let seqs: Vec<u64> = spool
            .read_after(0, usize::MAX, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (6..=20).collect::<Vec<_>>());
        spool.close().unwrap();
        drop(spool);

        let db = open_sled(dir.path()).unwrap();
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"queue"));
        drop(db);
        let spool =
            Spool::open(dir.path(), SpoolOptions::default(), SpoolMetrics::default()).unwrap();
        assert_eq!(
            spool.stats().pending,
            15,
            "imported once, kept after reopen"
        );
        let ticket = spool
            .submit(Incoming {
                device_id: "d".into(),
                topic: "devices/d/telemetry".into(),
                received_at: crate::now_ms(),
                payload: vec![1].into(),
                qos: 1,
                disposition: broker::Disposition::Reading,
            })
            .unwrap();
        assert_eq!(ticket.0, 21, "seqs go on where the sled queue ended");
    }
}
