//! The embedded store: one sled database in the collector's data directory.
//!
//! ```text
//! tree       key                                              value (CBOR map unless said)
//! ---------  -----------------------------------------------  ----------------------------------------------
//! points     device_id 0x00 name 0x00 time(first point)       a chunk: packed CBOR [{0: offset, 1: value, 2: unit,
//!                                                              3: spool_ref, 4: seq}, ...] (sled/chunks.rs)
//! documents  device_id 0x00 received_at(u64 ms BE) origin     {topic, payload, kind, reason}
//! dedup      gateway_id 0x00 spool_id 0x00 first_seq(u64 BE)  last_seq (u64 BE): seqs first..=last are stored
//! spools     gateway_id 0x00 spool_id 0x00                    spool_ref (u64 BE, from sled's id generator)
//! devices    device_id                                        {gateway_id, last_seen_ms,
//!                                                              measurements: {name: points}, documents}
//! gateways   gateway_id                                       {spool_id, last_sync_ms, backlog,
//!                                                              batches, accepted, duplicates}
//! meta       "schema_version"                                 u32 BE (= 2; 1 is upgraded in place)
//!
//! time   := signed nanoseconds since the epoch, sign bit flipped, big-endian (sorts in time order)
//! origin := gateway_id 0x00 spool_id 0x00 seq(u64 BE), the envelope that brought the record
//! value  := {"float": f64} | {"bool": bool} | {"string": text} | {"bytes": bytes}   (telemetry::Value)
//! ```
//!
//! Points are most of the data. Every sled insert costs several
//! microseconds (it copies and logs a tree node), so the points one batch
//! brings to one series share one key, a chunk; and sled's cost grows with
//! the bytes written, so a point names its origin by `spool_ref` (a number
//! registered once per spool, before any point refers to it) and seq, in
//! packed CBOR (integer field keys).
//!
//! One ingest writes, in this order, each step after the previous one returned:
//!
//! ```text
//! 0. spools     one insert, the first time a spool is seen
//! 1. points     one sled::Batch   new chunks; a chunk already held is only rewritten with more points
//! 2. documents  one sled::Batch   documents of the new envelopes (keyed by origin: rewriting is harmless)
//! 3. devices + gateways + dedup   one small multi-tree transaction: counters and dedup marks together
//! 4. flush                        then, and only then, the HTTP answer
//! ```
//!
//! Invariants:
//! - A dedup mark exists only if the data of its envelope is stored (or was
//!   stored and then removed by retention or erasure, `sled/remove.rs`):
//!   marks are written after the data, and sled recovers a prefix of its log.
//! - Counters change in the same transaction as the marks, so each envelope
//!   is counted exactly once. A retry after a crash between steps 2 and 3
//!   finds the points of its unmarked envelopes already stored *with that
//!   envelope as origin*, and counts them as its own, not as duplicates.
//! - A point is identified by `(device_id, name, time)`: the first envelope
//!   to bring it is its origin; a resend under another seq is a duplicate.
//! - Ingests are serialised by a mutex (from the first read to the commit);
//!   flushes run outside it so that concurrent batches share fsyncs.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional, Tree};
use telemetry::Value;

use super::backend::{SeriesQuery, Store, StoreError, StoreFuture};
use super::{intervals, keys};
use crate::aggregate::Buckets;
use crate::model::{
    Bucket, Content, DeviceSummary, Document, DocumentKind, ErasureOutcome, ExpiryOutcome,
    ExpiryPolicy, GatewaySummary, IngestOutcome, PreparedBatch, SeriesPoint, StoredDocument,
    TimeRange,
};

mod chunks;
mod remove;

use chunks::{Direction, SeriesChunks, SeriesPoints};

/// Layout version written in `meta`; bump it when a key or value changes.
/// 2: `points` values are chunks of points (`sled/chunks.rs`).
const SCHEMA_VERSION: u32 = 2;
/// Versions this code opens and stamps with [`SCHEMA_VERSION`]: schema 1
/// held one point per key, which version 2 reads as a chunk of one point,
/// so the upgrade rewrites nothing. A collector of schema 1 then refuses
/// the store instead of misreading its chunks.
const UPGRADABLE_SCHEMAS: &[u32] = &[1];
const SCHEMA_KEY: &[u8] = b"schema_version";
/// Name of the tree every sled database has.
const DEFAULT_TREE: &[u8] = b"__sled__default";

/// The sled backend. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

struct Inner {
    db: sled::Db,
    points: Tree,
    documents: Tree,
    dedup: Tree,
    spools: Tree,
    devices: Tree,
    gateways: Tree,
    /// Serialises ingests: between reading "is this seq / point new?" and
    /// committing, no other batch may commit the same keys.
    ingest_lock: Mutex<()>,
}

/// Every write of one batch, computed before any is made.
struct Plan {
    outcome: IngestOutcome,
    data: DataWrites,
    marks: MarkWrites,
}

struct DataWrites {
    points: Batch,
    documents: Batch,
}

struct MarkWrites {
    devices: Batch,
    gateways: Batch,
    dedup: Batch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PointRecord {
    value: Value,
    unit: Option<String>,
    /// The origin, the envelope that brought this point first: its spool
    /// (a number from `spools`) and its seq.
    spool_ref: u64,
    seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct DocumentRecord {
    topic: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    kind: DocumentKind,
    reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DeviceRecord {
    gateway_id: String,
    last_seen_ms: u64,
    /// Points stored per measurement name.
    measurements: BTreeMap<String, u64>,
    documents: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct GatewayRecord {
    spool_id: String,
    last_sync_ms: u64,
    backlog: u64,
    batches: u64,
    accepted: u64,
    duplicates: u64,
}

/// Opens the sled database, waiting up to a second for its file lock.
///
/// A handle dropped a moment ago in this process (a restart in place, a
/// test reopening its store) lets go of the lock only when sled's flusher
/// thread exits, shortly after the drop returns; another process that
/// holds the lock still fails the open, a second later.
fn open_db(path: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match sled::Config::new().path(path).open() {
            Err(err)
                if err.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

fn backend(err: sled::Error) -> StoreError {
    StoreError::Backend(Box::new(err))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_cbor::to_vec(value).expect("store records always serialize")
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_cbor::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

impl SledStore {
    /// Opens (or creates) the store in `path`. Fails when another process
    /// holds it or when it was written with another schema version.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        let db = open_db(path).map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        match meta.get(SCHEMA_KEY).map_err(backend)? {
            Some(found) => {
                let found = <[u8; 4]>::try_from(found.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: "meta",
                        reason: "schema version is not 4 bytes".into(),
                    })?;
                if UPGRADABLE_SCHEMAS.contains(&found) {
                    meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                        .map_err(backend)?;
                    db.flush().map_err(backend)?;
                } else if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                // Stamp only a fresh database, never another program's (an
                // edge-agent spool has a `meta` tree too).
                let foreign = !meta.is_empty()
                    || db
                        .tree_names()
                        .iter()
                        .any(|name| name.as_ref() != b"meta" && name.as_ref() != DEFAULT_TREE);
                if foreign {
                    return Err(StoreError::Foreign);
                }
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(backend)?;
            }
        }
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let inner = Inner {
            points: tree("points")?,
            documents: tree("documents")?,
            dedup: tree("dedup")?,
            spools: tree("spools")?,
            devices: tree("devices")?,
            gateways: tree("gateways")?,
            db,
            ingest_lock: Mutex::new(()),
        };
        Ok(SledStore {
            inner: Arc::new(inner),
        })
    }

    /// Runs `work` on the blocking pool: sled reads, writes and fsyncs block.
    fn blocking<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&inner))
                .await
                .map_err(|_| StoreError::Worker)?
        })
    }
}

impl Store for SledStore {
    fn ingest(&self, batch: PreparedBatch) -> StoreFuture<'_, IngestOutcome> {
        self.blocking(move |inner| inner.ingest(&batch))
    }

    fn devices(&self) -> StoreFuture<'_, Vec<DeviceSummary>> {
        self.blocking(|inner| inner.devices())
    }

    fn device(&self, device_id: String) -> StoreFuture<'_, Option<DeviceSummary>> {
        self.blocking(move |inner| inner.device(&device_id))
    }

    fn points(&self, query: SeriesQuery, limit: usize) -> StoreFuture<'_, Vec<SeriesPoint>> {
        self.blocking(move |inner| inner.points(&query, limit))
    }

    fn series_bounds(&self, query: SeriesQuery) -> StoreFuture<'_, Option<(i64, i64)>> {
        self.blocking(move |inner| inner.series_bounds(&query))
    }

    fn aggregate(&self, query: SeriesQuery, step_ns: i64) -> StoreFuture<'_, Vec<Bucket>> {
        self.blocking(move |inner| inner.aggregate(&query, step_ns))
    }

    fn documents(
        &self,
        device_id: String,
        range: TimeRange,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredDocument>> {
        self.blocking(move |inner| inner.documents(&device_id, range, limit))
    }

    fn gateways(&self) -> StoreFuture<'_, Vec<GatewaySummary>> {
        self.blocking(|inner| inner.gateways())
    }

    fn expire(&self, policy: ExpiryPolicy) -> StoreFuture<'_, ExpiryOutcome> {
        self.blocking(move |inner| inner.expire(&policy))
    }

    fn erase_device(&self, device_id: String) -> StoreFuture<'_, ErasureOutcome> {
        self.blocking(move |inner| inner.erase_device(&device_id))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        self.blocking(|inner| inner.db.flush().map(drop).map_err(backend))
    }
}

impl SledStore {
    /// The names of the trees with a key or a value that contains `needle`,
    /// read record by record: how the erasure tests (and an operator's
    /// check) show that no record still names an erased device. It reads
    /// records, not sled's files, which may hold removed bytes for a while.
    pub async fn trees_mentioning(&self, needle: Vec<u8>) -> Result<Vec<String>, StoreError> {
        if needle.is_empty() {
            return Ok(Vec::new());
        }
        self.blocking(move |inner| {
            let mut found = Vec::new();
            for name in inner.db.tree_names() {
                let tree = inner.db.open_tree(&name).map_err(backend)?;
                for entry in tree.iter() {
                    let (key, value) = entry.map_err(backend)?;
                    let holds = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
                    if holds(&key) || holds(&value) {
                        found.push(String::from_utf8_lossy(&name).into_owned());
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
    }
}

impl Inner {
    fn ingest(&self, batch: &PreparedBatch) -> Result<IngestOutcome, StoreError> {
        let outcome = {
            // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
            let _serial = self.ingest_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.apply(batch)?
        };
        // Flushing outside the lock lets concurrent batches share one fsync.
        // It also covers any write an earlier batch made that this one counted
        // as a duplicate, so the answer never precedes durability.
        self.db.flush().map_err(backend)?;
        Ok(outcome)
    }

    /// Decides what is new, then writes it in the order the module doc gives.
    fn apply(&self, batch: &PreparedBatch) -> Result<IngestOutcome, StoreError> {
        let plan = self.plan(batch)?;
        let outcome = plan.outcome;
        self.write_data(plan.data)?;
        self.write_marks(plan.marks)?;
        Ok(outcome)
    }

    /// Steps 1 and 2: the points and the documents.
    fn write_data(&self, data: DataWrites) -> Result<(), StoreError> {
        self.points.apply_batch(data.points).map_err(backend)?;
        self.documents.apply_batch(data.documents).map_err(backend)
    }

    /// Step 3: counters and dedup marks, atomically.
    fn write_marks(&self, marks: MarkWrites) -> Result<(), StoreError> {
        (&self.devices, &self.gateways, &self.dedup)
            .transaction(|(devices, gateways, dedup)| {
                devices.apply_batch(&marks.devices)?;
                gateways.apply_batch(&marks.gateways)?;
                dedup.apply_batch(&marks.dedup)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => backend(e),
                TransactionError::Abort(()) => unreachable!("the ingest transaction never aborts"),
            })
    }

    /// Reads what is held and computes every write of a batch.
    fn plan(&self, batch: &PreparedBatch) -> Result<Plan, StoreError> {
        let spool = keys::spool_prefix(&batch.gateway_id, &batch.spool_id);
        let mut seqs: Vec<u64> = batch.envelopes.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let marked = self.marked_seqs(&spool, &seqs)?;
        let spool_ref = self.spool_ref(&spool)?;
        let mut series = self.held_series(batch, &marked)?;

        let mut outcome = IngestOutcome::default();
        let mut documents = Batch::default();
        // Within one batch a seq or a point may repeat too.
        let mut new_seqs = HashSet::new();
        let mut seen_points: HashSet<(&str, &str, i64)> = HashSet::new();
        let mut devices: HashMap<&str, DeviceRecord> = HashMap::new();

        for envelope in &batch.envelopes {
            if marked.contains(&envelope.seq) || !new_seqs.insert(envelope.seq) {
                outcome.duplicates += 1;
                continue;
            }
            outcome.accepted += 1;
            let device = match devices.entry(envelope.device_id.as_str()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.device_record(&envelope.device_id)?),
            };
            if device.gateway_id.is_empty() || envelope.received_at_ms >= device.last_seen_ms {
                device.last_seen_ms = envelope.received_at_ms;
                device.gateway_id.clone_from(&batch.gateway_id);
            }
            match &envelope.content {
                Content::Points(new_points) => {
                    for point in new_points {
                        let id = (envelope.device_id.as_str(), point.name.as_str());
                        if !seen_points.insert((id.0, id.1, point.time_ns)) {
                            outcome.duplicate_points += 1;
                            continue;
                        }
                        let chunks = series
                            .get_mut(&id)
                            .expect("held_series loads every series of an unmarked envelope");
                        match chunks.held_point(point.time_ns) {
                            None => chunks.add(
                                point.time_ns,
                                PointRecord {
                                    value: point.value.clone(),
                                    unit: point.unit.clone(),
                                    spool_ref,
                                    seq: envelope.seq,
                                },
                            ),
                            Some(held)
                                if held.spool_ref == spool_ref && held.seq == envelope.seq =>
                            {
                                // Written by an attempt that died before its marks: ours to count.
                            }
                            Some(_) => {
                                outcome.duplicate_points += 1;
                                continue;
                            }
                        }
                        count_point(&mut device.measurements, &point.name);
                        outcome.points += 1;
                    }
                }
                Content::Document(document) => {
                    let key = keys::document_key(
                        &envelope.device_id,
                        envelope.received_at_ms,
                        &batch.gateway_id,
                        &batch.spool_id,
                        envelope.seq,
                    );
                    documents.insert(key, encode(&document_record(document)));
                    device.documents += 1;
                    outcome.documents += 1;
                    if document.kind == DocumentKind::Invalid {
                        outcome.invalid_documents += 1;
                    }
                }
            }
        }

        let mut points = Batch::default();
        for chunks in series.into_values() {
            chunks.write_into(&mut points);
        }

        let mut gateway: GatewayRecord =
            match self.gateways.get(&batch.gateway_id).map_err(backend)? {
                Some(bytes) => decode("gateways", &bytes)?,
                None => GatewayRecord::default(),
            };
        gateway.spool_id.clone_from(&batch.spool_id);
        gateway.last_sync_ms = batch.synced_at_ms;
        gateway.backlog = batch.backlog;
        gateway.batches += 1;
        gateway.accepted += outcome.accepted;
        gateway.duplicates += outcome.duplicates;
        let mut gateways = Batch::default();
        gateways.insert(batch.gateway_id.as_bytes(), encode(&gateway));

        let mut device_batch = Batch::default();
        for (device_id, record) in &devices {
            device_batch.insert(device_id.as_bytes(), encode(record));
        }

        let mut new_seqs: Vec<u64> = new_seqs.into_iter().collect();
        new_seqs.sort_unstable();
        let dedup = self.mark(&spool, &new_seqs)?;
        Ok(Plan {
            outcome,
            data: DataWrites { points, documents },
            marks: MarkWrites {
                devices: device_batch,
                gateways,
                dedup,
            },
        })
    }

    /// The stored chunks of every series that the unmarked envelopes of
    /// `batch` bring points to, keyed by `(device_id, name)`: what decides
    /// which of those points are new.
    fn held_series<'b>(
        &self,
        batch: &'b PreparedBatch,
        marked: &HashSet<u64>,
    ) -> Result<HashMap<(&'b str, &'b str), SeriesChunks>, StoreError> {
        let mut times: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
        for envelope in batch.envelopes.iter().filter(|e| !marked.contains(&e.seq)) {
            if let Content::Points(points) = &envelope.content {
                for point in points {
                    times
                        .entry((envelope.device_id.as_str(), point.name.as_str()))
                        .or_default()
                        .push(point.time_ns);
                }
            }
        }
        times
            .into_iter()
            .map(|((device_id, name), times)| {
                let prefix = keys::series_prefix(device_id, name);
                let chunks = SeriesChunks::load(&self.points, prefix, &times)?;
                Ok(((device_id, name), chunks))
            })
            .collect()
    }

    /// The number standing for a spool in point origins, registered (and
    /// written, ahead of any point that uses it) the first time.
    fn spool_ref(&self, spool: &[u8]) -> Result<u64, StoreError> {
        if let Some(bytes) = self.spools.get(spool).map_err(backend)? {
            return <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    tree: "spools",
                    reason: "spool ref is not 8 bytes".into(),
                });
        }
        let spool_ref = self.db.generate_id().map_err(backend)?;
        self.spools
            .insert(spool, &spool_ref.to_be_bytes())
            .map_err(backend)?;
        Ok(spool_ref)
    }

    fn device_record(&self, device_id: &str) -> Result<DeviceRecord, StoreError> {
        match self.devices.get(device_id).map_err(backend)? {
            Some(bytes) => decode("devices", &bytes),
            None => Ok(DeviceRecord::default()),
        }
    }

    /// The dedup interval of `spool` with the largest start not after `seq`.
    fn interval_at_or_before(
        &self,
        spool: &[u8],
        seq: u64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let range = keys::seq_key(spool, 0)..=keys::seq_key(spool, seq);
        match self.dedup.range(range).next_back() {
            None => Ok(None),
            Some(entry) => interval(entry.map_err(backend)?).map(Some),
        }
    }

    /// Which of `seqs` (sorted, unique) are marked in `spool`: a walk that
    /// reads one or two keys per interval or gap, not one per seq.
    fn marked_seqs(&self, spool: &[u8], seqs: &[u64]) -> Result<HashSet<u64>, StoreError> {
        let mut marked = HashSet::new();
        let mut i = 0;
        while let Some(&seq) = seqs.get(i) {
            match self.interval_at_or_before(spool, seq)? {
                Some((_, last)) if last >= seq => {
                    while let Some(&s) = seqs.get(i).filter(|&&s| s <= last) {
                        marked.insert(s);
                        i += 1;
                    }
                }
                _ => {
                    // Not marked; neither is anything before the next interval.
                    let after = (
                        Bound::Excluded(keys::seq_key(spool, seq)),
                        Bound::Included(keys::seq_key(spool, u64::MAX)),
                    );
                    let next = match self.dedup.range(after).next() {
                        None => None,
                        Some(entry) => Some(interval(entry.map_err(backend)?)?.0),
                    };
                    while seqs.get(i).is_some_and(|&s| next.is_none_or(|n| s < n)) {
                        i += 1;
                    }
                }
            }
        }
        Ok(marked)
    }

    /// The dedup writes that add `new_seqs` (sorted, unique, unmarked) to
    /// `spool`'s intervals, joining the neighbours they touch.
    fn mark(&self, spool: &[u8], new_seqs: &[u64]) -> Result<Batch, StoreError> {
        let mut pieces = intervals::runs(new_seqs);
        let mut replaced = Vec::new();
        for &(first, last) in &pieces.clone() {
            if let Some(before) = first.checked_sub(1) {
                if let Some((f, l)) = self.interval_at_or_before(spool, before)? {
                    if l == before {
                        pieces.push((f, l));
                        replaced.push(f);
                    }
                }
            }
            if let Some(after) = last.checked_add(1) {
                if let Some(bytes) = self
                    .dedup
                    .get(keys::seq_key(spool, after))
                    .map_err(backend)?
                {
                    let l = seq_value(&bytes)?;
                    pieces.push((after, l));
                    replaced.push(after);
                }
            }
        }
        let mut writes = Batch::default();
        for first in replaced {
            writes.remove(keys::seq_key(spool, first));
        }
        // Inserts after removes: in a sled::Batch the last write of a key wins.
        for (first, last) in intervals::merge(pieces) {
            writes.insert(keys::seq_key(spool, first), &last.to_be_bytes());
        }
        Ok(writes)
    }

    fn devices(&self) -> Result<Vec<DeviceSummary>, StoreError> {
        self.devices
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(backend)?;
                summary(&key, &value)
            })
            .collect()
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceSummary>, StoreError> {
        self.devices
            .get(device_id)
            .map_err(backend)?
            .map(|value| summary(device_id.as_bytes(), &value))
            .transpose()
    }

    /// The points of one series in the query's range, oldest first
    /// (`Direction::Forward`) or newest first.
    fn series(
        &self,
        query: &SeriesQuery,
        direction: Direction,
    ) -> Result<SeriesPoints, StoreError> {
        let prefix = keys::series_prefix(&query.device_id, &query.name);
        SeriesPoints::new(&self.points, &prefix, query.range, direction)
    }

    fn points(&self, query: &SeriesQuery, limit: usize) -> Result<Vec<SeriesPoint>, StoreError> {
        self.series(query, Direction::Forward)?
            .take(limit)
            .map(|entry| {
                let (time_ns, record) = entry?;
                Ok(SeriesPoint {
                    time_ns,
                    value: record.value,
                    unit: record.unit,
                })
            })
            .collect()
    }

    fn series_bounds(&self, query: &SeriesQuery) -> Result<Option<(i64, i64)>, StoreError> {
        let Some((first, _)) = self.series(query, Direction::Forward)?.next().transpose()? else {
            return Ok(None);
        };
        let last = match self
            .series(query, Direction::Backward)?
            .next()
            .transpose()?
        {
            Some((time, _)) => time,
            None => first,
        };
        Ok(Some((first, last)))
    }

    fn aggregate(&self, query: &SeriesQuery, step_ns: i64) -> Result<Vec<Bucket>, StoreError> {
        let mut buckets = Buckets::new(step_ns);
        for entry in self.series(query, Direction::Forward)? {
            let (time_ns, record) = entry?;
            buckets.push(time_ns, record.value);
        }
        Ok(buckets.finish())
    }

    fn documents(
        &self,
        device_id: &str,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let prefix = keys::document_prefix(device_id);
        // Documents are keyed by milliseconds: ms >= from_ns/1e6 <=> ms >= ceil(from_ns/1e6).
        let ms_ceil = |nanos: i64| -> u64 { (nanos.max(0) as u64).div_ceil(1_000_000) };
        let start = keys::document_bound(&prefix, range.from.map_or(0, ms_ceil));
        let end = match range.to {
            Some(to) => Bound::Excluded(keys::document_bound(&prefix, ms_ceil(to))),
            None => Bound::Included(keys::document_bound(&prefix, u64::MAX)),
        };
        let mut out = Vec::new();
        for entry in self.documents.range((Bound::Included(start), end)) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(backend)?;
            let (device_id, received_at_ms, gateway_id, spool_id, seq) =
                keys::parse_document_key(&key).ok_or(StoreError::Corrupt {
                    tree: "documents",
                    reason: "undecodable key".into(),
                })?;
            let record: DocumentRecord = decode("documents", &value)?;
            out.push(StoredDocument {
                device_id,
                gateway_id,
                spool_id,
                seq,
                received_at_ms,
                document: Document {
                    topic: record.topic,
                    payload: record.payload,
                    kind: record.kind,
                    reason: record.reason,
                },
            });
        }
        Ok(out)
    }

    fn gateways(&self) -> Result<Vec<GatewaySummary>, StoreError> {
        self.gateways
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(backend)?;
                let record: GatewayRecord = decode("gateways", &value)?;
                Ok(GatewaySummary {
                    gateway_id: String::from_utf8_lossy(&key).into_owned(),
                    spool_id: record.spool_id,
                    last_sync_ms: record.last_sync_ms,
                    backlog: record.backlog,
                    batches: record.batches,
                    accepted: record.accepted,
                    duplicates: record.duplicates,
                })
            })
            .collect()
    }
}

/// Counts one more point of measurement `name` (allocating the name only
/// the first time).
fn count_point(measurements: &mut BTreeMap<String, u64>, name: &str) {
    match measurements.get_mut(name) {
        Some(count) => *count += 1,
        None => {
            measurements.insert(name.to_owned(), 1);
        }
    }
}

fn seq_value(bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree: "dedup",
            reason: "interval end is not 8 bytes".into(),
        })
}

fn interval((key, value): (sled::IVec, sled::IVec)) -> Result<(u64, u64), StoreError> {
    let first = keys::seq_of(&key).ok_or(StoreError::Corrupt {
        tree: "dedup",
        reason: "key shorter than a seq".into(),
    })?;
    Ok((first, seq_value(&value)?))
}

fn document_record(document: &Document) -> DocumentRecord {
    DocumentRecord {
        topic: document.topic.clone(),
        payload: document.payload.clone(),
        kind: document.kind,
        reason: document.reason.clone(),
    }
}

fn summary(key: &[u8], value: &[u8]) -> Result<DeviceSummary, StoreError> {
    let record: DeviceRecord = decode("devices", value)?;
    Ok(DeviceSummary {
        device_id: String::from_utf8_lossy(key).into_owned(),
        gateway_id: record.gateway_id,
        last_seen_ms: record.last_seen_ms,
        points: record.measurements.values().sum(),
        measurements: record.measurements.into_keys().collect(),
        documents: record.documents,
    })
}

/// Sled-specific behaviour; what every backend must do is the storage
/// suite's (`tests/suite/`), run on this store by `tests/suite_sled.rs`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Point, PreparedEnvelope};

    const S: i64 = 1_000_000_000;
    const SPOOL: &str = "00112233445566778899aabbccddeeff";

    fn point(name: &str, secs: i64, value: f64) -> Point {
        Point {
            name: name.into(),
            time_ns: secs * S,
            value: Value::Float(value),
            unit: Some("Cel".into()),
        }
    }

    fn envelope(seq: u64, device: &str, points: Vec<Point>) -> PreparedEnvelope {
        PreparedEnvelope {
            seq,
            device_id: device.into(),
            received_at_ms: 1_000 + seq,
            content: Content::Points(points),
        }
    }

    fn batch(spool: &str, envelopes: Vec<PreparedEnvelope>) -> PreparedBatch {
        PreparedBatch {
            gateway_id: "gw".into(),
            spool_id: spool.into(),
            backlog: 3,
            synced_at_ms: 99,
            envelopes,
        }
    }

    fn series(device: &str, name: &str, from: Option<i64>, to: Option<i64>) -> SeriesQuery {
        SeriesQuery {
            device_id: device.into(),
            name: name.into(),
            range: TimeRange { from, to },
        }
    }

    fn open() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .inner
                .ingest(&batch(
                    SPOOL,
                    vec![envelope(1, "d", vec![point("t", 1, 1.5)])],
                ))
                .unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let points = store
            .inner
            .points(&series("d", "t", None, None), 10)
            .unwrap();
        assert_eq!(points[0].value, Value::Float(1.5));
        let again = store
            .inner
            .ingest(&batch(
                SPOOL,
                vec![envelope(1, "d", vec![point("t", 1, 1.5)])],
            ))
            .unwrap();
        assert_eq!(again.duplicates, 1);
    }

    #[test]
    fn a_retry_after_a_crash_before_the_marks_counts_everything_once() {
        let (_dir, store) = open();
        let doc = PreparedEnvelope {
            seq: 3,
            device_id: "d".into(),
            received_at_ms: 5,
            content: Content::Document(Document {
                topic: "t".into(),
                payload: vec![1],
                kind: DocumentKind::Opaque,
                reason: "r".into(),
            }),
        };
        let b = batch(
            SPOOL,
            vec![
                envelope(1, "d", vec![point("t", 1, 1.0), point("u", 1, 1.0)]),
                envelope(2, "d", vec![point("t", 1, 1.0)]), // a resend of seq 1's reading
                doc,
            ],
        );
        // The process dies after steps 1 and 2: data written, no marks, no counters.
        let plan = store.inner.plan(&b).unwrap();
        store.inner.write_data(plan.data).unwrap();
        assert_eq!(store.inner.device("d").unwrap(), None);

        let retry = store.inner.ingest(&b).unwrap();
        assert_eq!(retry, plan.outcome);
        assert_eq!(
            (
                retry.accepted,
                retry.points,
                retry.duplicate_points,
                retry.documents
            ),
            (3, 2, 1, 1)
        );
        let device = store.inner.device("d").unwrap().unwrap();
        assert_eq!((device.points, device.documents), (2, 1));
        assert_eq!(
            store
                .inner
                .documents("d", TimeRange::default(), 9)
                .unwrap()
                .len(),
            1
        );
        let again = store.inner.ingest(&b).unwrap();
        assert_eq!((again.accepted, again.duplicates, again.points), (0, 3, 0));
    }

    #[test]
    fn a_resend_does_not_claim_a_point_written_by_a_dead_attempt() {
        let (_dir, store) = open();
        // Seq 1 wrote the point, then the process died before its marks.
        let first = batch(SPOOL, vec![envelope(1, "d", vec![point("t", 1, 1.0)])]);
        let plan = store.inner.plan(&first).unwrap();
        store.inner.write_data(plan.data).unwrap();
        // The device's resend (seq 2) arrives first: the point is seq 1's, not its own.
        let resend = store
            .inner
            .ingest(&batch(
                SPOOL,
                vec![envelope(2, "d", vec![point("t", 1, 1.0)])],
            ))
            .unwrap();
        assert_eq!(
            (resend.accepted, resend.points, resend.duplicate_points),
            (1, 0, 1)
        );
        let retry = store.inner.ingest(&first).unwrap();
        assert_eq!((retry.accepted, retry.points), (1, 1));
        assert_eq!(store.inner.device("d").unwrap().unwrap().points, 1);
    }

    #[test]
    fn dedup_marks_match_a_model_set() {
        use rand::{Rng, SeedableRng};
        let (_dir, store) = open();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut model = std::collections::BTreeSet::new();
        for _ in 0..300 {
            // Batches of nearby seqs, with repeats, gaps and going backwards.
            let base: u64 = rng.random_range(0..400);
            let len = rng.random_range(0..30);
            let seqs: Vec<u64> = (0..len).map(|_| base + rng.random_range(0..40)).collect();
            let envelopes = seqs.iter().map(|&s| envelope(s, "d", vec![])).collect();
            let out = store.inner.ingest(&batch(SPOOL, envelopes)).unwrap();
            let mut expected_new = 0;
            for s in &seqs {
                if model.insert(*s) {
                    expected_new += 1;
                }
            }
            assert_eq!(out.accepted, expected_new, "{seqs:?}");
            assert_eq!(out.duplicates, seqs.len() as u64 - expected_new);
        }
        // The stored intervals are exactly the model's runs.
        let spool = keys::spool_prefix("gw", SPOOL);
        let stored: Vec<(u64, u64)> = store
            .inner
            .dedup
            .scan_prefix(&spool)
            .map(|e| interval(e.unwrap()).unwrap())
            .collect();
        let model: Vec<u64> = model.into_iter().collect();
        assert_eq!(stored, intervals::runs(&model));
    }

    #[test]
    fn a_contiguous_batch_writes_one_interval() {
        let (_dir, store) = open();
        let envelopes = (1..=1000).map(|s| envelope(s, "d", vec![])).collect();
        store.inner.ingest(&batch(SPOOL, envelopes)).unwrap();
        let envelopes = (1001..=2000).map(|s| envelope(s, "d", vec![])).collect();
        store.inner.ingest(&batch(SPOOL, envelopes)).unwrap();
        assert_eq!(store.inner.dedup.len(), 1);
    }

    /// A store written by schema 1 (one point per key, values packed
    /// `PointRecord`s) opens, reads, dedups and keeps growing.
    #[test]
    fn a_schema_1_store_is_read_and_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(SCHEMA_KEY, &1u32.to_be_bytes())
                .unwrap();
            let spool = keys::spool_prefix("gw", SPOOL);
            db.open_tree("spools")
                .unwrap()
                .insert(&spool, &7u64.to_be_bytes())
                .unwrap();
            let points = db.open_tree("points").unwrap();
            for (secs, seq) in [(1, 1), (3, 2)] {
                let record = PointRecord {
                    value: Value::Float(secs as f64),
                    unit: Some("Cel".into()),
                    spool_ref: 7,
                    seq,
                };
                let key = keys::point_key(&keys::series_prefix("d", "t"), secs * S);
                let value = serde_cbor::ser::to_vec_packed(&record).unwrap();
                points.insert(key, value).unwrap();
            }
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let meta = store.inner.db.open_tree("meta").unwrap();
        assert_eq!(
            meta.get(SCHEMA_KEY).unwrap().unwrap().as_ref(),
            &SCHEMA_VERSION.to_be_bytes()
        );
        // Seq 3 resends the point of 3 s and brings 2 s, between the old ones.
        let out = store
            .inner
            .ingest(&batch(
                SPOOL,
                vec![envelope(
                    3,
                    "d",
                    vec![point("t", 3, 3.0), point("t", 2, 2.0)],
                )],
            ))
            .unwrap();
        assert_eq!((out.points, out.duplicate_points), (1, 1));
        let times: Vec<i64> = store
            .inner
            .points(&series("d", "t", None, None), 10)
            .unwrap()
            .iter()
            .map(|p| p.time_ns / S)
            .collect();
        assert_eq!(times, vec![1, 2, 3]);
        let removed = store
            .inner
            .expire(&ExpiryPolicy {
                default: Some(2 * S),
                ..ExpiryPolicy::default()
            })
            .unwrap();
        assert_eq!(removed.points, 1);
        assert_eq!(
            store
                .inner
                .series_bounds(&series("d", "t", None, None))
                .unwrap(),
            Some((2 * S, 3 * S))
        );
    }

    /// A batch's points of one series share one key; a resend of the whole
    /// batch under new seqs finds every point in it and writes nothing.
    #[test]
    fn a_batch_writes_one_chunk_per_series() {
        let (_dir, store) = open();
        let envelopes = (1..=100)
            .map(|s| envelope(s, "d", vec![point("t", s as i64, 1.0)]))
            .collect();
        let out = store.inner.ingest(&batch(SPOOL, envelopes)).unwrap();
        assert_eq!(out.points, 100);
        assert_eq!(store.inner.points.len(), 1);
        let resent = (101..=200)
            .map(|s| envelope(s, "d", vec![point("t", s as i64 - 100, 1.0)]))
            .collect();
        let out = store.inner.ingest(&batch(SPOOL, resent)).unwrap();
        assert_eq!(
            (out.accepted, out.points, out.duplicate_points),
            (100, 0, 100)
        );
        assert_eq!(store.inner.points.len(), 1);
    }

    #[test]
    fn another_programs_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("queue").unwrap().insert(b"k", b"v").unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            SledStore::open(dir.path()),
            Err(StoreError::Foreign)
        ));
    }

    #[test]
    fn another_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(SCHEMA_KEY, &7u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            SledStore::open(dir.path()),
            Err(StoreError::Schema {
                found: 7,
                expected: 2
            })
        ));
    }
}
