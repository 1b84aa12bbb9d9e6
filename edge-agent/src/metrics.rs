//! The agent's Prometheus metrics: one registry per agent (not a global
//! recorder), so several agents can run in one test process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Spool metrics, updated by the writer thread and the uplink.
#[derive(Clone, Debug)]
pub struct SpoolMetrics {
    /// Readings stored and not yet acknowledged by the collector.
    pub records: Gauge,
    /// Highest seq the collector acknowledged.
    pub acked_seq: Gauge,
    /// Refused publishes held in the dead-letter tree.
    pub dead_letters: Gauge,
    /// Bytes of blocks written.
    pub bytes_written: Counter,
    /// Group commits that failed to write or flush.
    pub write_errors: Counter,
    /// Time to write and flush one group commit, in seconds.
    pub flush_seconds: Histogram,
    /// Readings per group commit.
    pub group_commit_records: Histogram,
    /// Bytes of stored blocks.
    pub bytes: Gauge,
    /// Age of the oldest stored reading in seconds (0 when empty), set when scraped.
    pub oldest_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Readings deleted before the collector had them, by reason (`full`, `expired`).
    pub dropped: Family<broker::ReasonLabel, Counter>,
    /// Readings refused because the spool was full (policy reject-new).
    pub rejected_full: Counter,
    /// Readings refused because the disk was below `min_free_bytes`.
    pub rejected_disk: Counter,
    /// Spools found corrupt at start and moved aside.
    pub quarantined: Counter,
    /// Stored blocks (or damaged ranges of a segment) that no longer decode or open, set aside and skipped.
    pub corrupt_blocks: Counter,
}

impl Default for SpoolMetrics {
    fn default() -> Self {
        SpoolMetrics {
            records: Gauge::default(),
            acked_seq: Gauge::default(),
            dead_letters: Gauge::default(),
            bytes_written: Counter::default(),
            write_errors: Counter::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            group_commit_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            bytes: Gauge::default(),
            oldest_age_seconds: Gauge::default(),
            dropped: Family::default(),
            rejected_full: Counter::default(),
            rejected_disk: Counter::default(),
            quarantined: Counter::default(),
            corrupt_blocks: Counter::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// HTTP status code, or `error` for a network failure or timeout.
    pub status: String,
}

/// Uplink metrics.
#[derive(Clone, Debug)]
pub struct UplinkMetrics {
    /// Batch requests by outcome.
    pub batches: Family<StatusLabel, Counter>,
    /// Readings the collector acknowledged.
    pub records: Counter,
    /// Request body bytes sent (after compression).
    pub bytes: Counter,
    /// Requests retried after a failure.
    pub retries: Counter,
    /// Time from sending a batch to its answer, in seconds.
    pub request_seconds: Histogram,
}

impl Default for UplinkMetrics {
    fn default() -> Self {
        UplinkMetrics {
            batches: Family::default(),
            records: Counter::default(),
            bytes: Counter::default(),
            retries: Counter::default(),
            request_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

/// Registers every agent metric under its `edge_` name.
pub fn registry(
    spool: &SpoolMetrics,
    uplink: &UplinkMetrics,
    broker: &broker::BrokerMetrics,
) -> Registry {
    let mut registry = Registry::default();
    broker.register(&mut registry);
    registry.register(
        "edge_spool_records",
        "Readings stored and not yet acknowledged",
        spool.records.clone(),
    );
    registry.register(
        "edge_spool_acked_seq",
        "Highest seq the collector acknowledged",
        spool.acked_seq.clone(),
    );
    registry.register(
        "edge_spool_dead_letters",
        "Refused publishes held for inspection",
        spool.dead_letters.clone(),
    );
    registry.register(
        "edge_spool_written_bytes",
        "Bytes of blocks written",
        spool.bytes_written.clone(),
    );
    registry.register(
        "edge_spool_write_errors",
        "Group commits that failed",
        spool.write_errors.clone(),
    );
    registry.register(
        "edge_spool_flush_seconds",
        "Time to write and flush one group commit",
        spool.flush_seconds.clone(),
    );
    registry.register(
        "edge_spool_group_commit_records",
        "Readings per group commit",
        spool.group_commit_records.clone(),
    );
    registry.register(
        "edge_spool_bytes",
        "Bytes of the spool's segment files",
        spool.bytes.clone(),
    );
    registry.register(
        "edge_spool_oldest_age_seconds",
        "Age of the oldest stored reading (0 when the spool is empty)",
        spool.oldest_age_seconds.clone(),
    );
    registry.register(
        "edge_spool_dropped",
        "Readings deleted before the collector had them, by reason",
        spool.dropped.clone(),
    );
    registry.register(
        "edge_spool_rejected_full",
        "Readings refused because the spool was full (reject-new)",
        spool.rejected_full.clone(),
    );
    registry.register(
        "edge_spool_rejected_disk_full",
        "Readings refused because the disk was nearly full (spool.min_free_bytes)",
        spool.rejected_disk.clone(),
    );
    registry.register(
        "edge_spool_quarantined",
        "Spools found corrupt at start and moved aside",
        spool.quarantined.clone(),
    );
    registry.register(
        "edge_spool_corrupt_blocks",
        "Stored blocks (or damaged ranges of a segment) that no longer decode or open, set aside and skipped",
        spool.corrupt_blocks.clone(),
    );
    registry.register(
        "edge_uplink_batches",
        "Batch requests by outcome",
        uplink.batches.clone(),
    );
    registry.register(
        "edge_uplink_records",
        "Readings acknowledged by the collector",
        uplink.records.clone(),
    );
    registry.register(
        "edge_uplink_sent_bytes",
        "Request body bytes sent",
        uplink.bytes.clone(),
    );
    registry.register(
        "edge_uplink_retries",
        "Batch requests retried",
        uplink.retries.clone(),
    );
    registry.register(
        "edge_uplink_request_seconds",
        "Time from sending a batch to its answer",
        uplink.request_seconds.clone(),
    );
    registry
}
