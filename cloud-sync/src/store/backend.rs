//! The storage contract every backend keeps, and its error type.
//!
//! Methods return boxed futures so that the trait stays object safe
//! (`Arc<dyn Store>`): the sled backend runs its blocking work on
//! `spawn_blocking`, the PostgreSQL backend awaits its pooled connections.

use std::future::Future;
use std::pin::Pin;

use crate::model::{
    Bucket, DeviceSummary, ErasureOutcome, ExpiryOutcome, ExpiryPolicy, GatewaySummary,
    IngestOutcome, PreparedBatch, SeriesPoint, StoredDocument, TimeRange,
};

/// What every [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One measurement of one device over a time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    pub device_id: String,
    pub name: String,
    pub range: TimeRange,
}

/// A storage backend for the collector.
///
/// Contract, for every backend:
/// - `ingest` is idempotent by `(gateway_id, spool_id, seq)` and by point
///   identity `(device_id, name, time)`, also when retried after a crash in
///   the middle of an earlier attempt;
/// - `ingest` resolves only once everything it reports is durable;
/// - concurrent `ingest` calls never count one envelope as accepted twice;
/// - `expire` and `erase_device` keep the device summaries equal to what is
///   stored (a measurement left without points is no longer listed; a
///   device that lost every point to retention stays listed with none), and
///   leave the dedup marks of `(gateway_id, spool_id, seq)`, so that a
///   gateway resending a removed envelope gets "duplicate", not a copy back;
/// - both resolve only once what they report is durable, and both are
///   idempotent: repeating one after a crash finishes it.
pub trait Store: Send + Sync + 'static {
    /// Stores a batch exactly once and says how many envelopes were new.
    fn ingest(&self, batch: PreparedBatch) -> StoreFuture<'_, IngestOutcome>;

    /// Every known device, sorted by id.
    fn devices(&self) -> StoreFuture<'_, Vec<DeviceSummary>>;

    /// One device, or `None` when nothing was ever stored for it.
    fn device(&self, device_id: String) -> StoreFuture<'_, Option<DeviceSummary>>;

    /// Points of one series in time order, at most `limit` of them.
    fn points(&self, query: SeriesQuery, limit: usize) -> StoreFuture<'_, Vec<SeriesPoint>>;

    /// Times of the first and the last point of a series, `None` when empty.
    fn series_bounds(&self, query: SeriesQuery) -> StoreFuture<'_, Option<(i64, i64)>>;

    /// Non-empty buckets of `step_ns` over a series, in time order.
    fn aggregate(&self, query: SeriesQuery, step_ns: i64) -> StoreFuture<'_, Vec<Bucket>>;

    /// Documents of one device whose `received_at` lies in `range`, oldest first.
    fn documents(
        &self,
        device_id: String,
        range: TimeRange,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredDocument>>;

    /// Every gateway that ever synced, sorted by id.
    fn gateways(&self) -> StoreFuture<'_, Vec<GatewaySummary>>;

    /// Retention: removes the points older than their device's cutoff (by
    /// point time) and the documents that reached the gateway before it.
    fn expire(&self, policy: ExpiryPolicy) -> StoreFuture<'_, ExpiryOutcome>;

    /// Erasure: removes every point, document and summary of one device,
    /// and nothing of any other device.
    fn erase_device(&self, device_id: String) -> StoreFuture<'_, ErasureOutcome>;

    /// Makes every completed write durable (called at shutdown).
    fn flush(&self) -> StoreFuture<'_, ()>;
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O error, full disk, lost or refused database
    /// connection, failed migration). Nothing was acknowledged; the client
    /// should retry later and an operator should look.
    #[error("storage backend failed: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A stored record does not decode: the data on disk is damaged or was
    /// written by an incompatible version. An operator must act.
    #[error("stored record in {tree} is corrupt: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    /// The store was created by a version with another layout (sled), or
    /// migrated by a newer collector (PostgreSQL); run a matching collector
    /// or point this one at another data directory or database.
    #[error("store schema version is {found}, this collector reads version {expected}")]
    Schema { found: u32, expected: u32 },
    /// The directory holds a sled database that is not a collector store
    /// (an edge-agent spool, say); point the collector at another directory.
    #[error("the directory holds a database that is not a cloud-sync store")]
    Foreign,
    /// The worker running the operation died (a panic); see the logs.
    #[error("storage worker stopped unexpectedly")]
    Worker,
}
