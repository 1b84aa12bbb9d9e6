//! The collector's data model, shared by the HTTP layer and every storage
//! backend: what a batch becomes once decoded, and what queries return.
//!
//! Times are kept as `i64` nanoseconds since the Unix epoch inside the
//! collector (exact, orderable, usable as a key); the HTTP API speaks `f64`
//! seconds like SenML does.

use telemetry::Value;

/// Nanoseconds in one second.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Converts SenML seconds to nanoseconds, or `None` when the time is not
/// finite or falls outside what an `i64` of nanoseconds holds (years 1677 to 2262).
pub fn seconds_to_nanos(seconds: f64) -> Option<i64> {
    let nanos = (seconds * NANOS_PER_SECOND as f64).round();
    // i64::MAX is not representable as f64; 2^63 is the first value out of range.
    if nanos.is_finite() && nanos >= -(2f64.powi(63)) && nanos < 2f64.powi(63) {
        Some(nanos as i64)
    } else {
        None
    }
}

/// Converts nanoseconds to seconds. Whole seconds and the fraction are
/// converted apart so that a time that came in as `f64` seconds comes back as
/// the same `f64` (one rounding instead of two).
pub fn nanos_to_seconds(nanos: i64) -> f64 {
    let whole = nanos.div_euclid(NANOS_PER_SECOND);
    let frac = nanos.rem_euclid(NANOS_PER_SECOND);
    whole as f64 + frac as f64 / NANOS_PER_SECOND as f64
}

/// A time window over nanoseconds: `from` inclusive, `to` exclusive; `None`
/// means unbounded on that side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TimeRange {
    /// Whether `nanos` lies in the window.
    pub fn contains(&self, nanos: i64) -> bool {
        self.from.is_none_or(|from| nanos >= from) && self.to.is_none_or(|to| nanos < to)
    }
}

/// A validated, decoded `SyncBatch`, ready for a store.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedBatch {
    pub gateway_id: String,
    /// Lowercase hex, 32 digits.
    pub spool_id: String,
    /// Readings the gateway still holds after this batch.
    pub backlog: u64,
    /// Collector clock when the batch arrived, milliseconds since the epoch.
    pub synced_at_ms: u64,
    pub envelopes: Vec<PreparedEnvelope>,
}

/// One envelope of a batch with its payload decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedEnvelope {
    pub seq: u64,
    pub device_id: String,
    /// Gateway clock when the publish arrived, milliseconds since the epoch.
    pub received_at_ms: u64,
    pub content: Content,
}

/// What an envelope is stored as.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A SenML pack: one point per record.
    Points(Vec<Point>),
    /// Anything else, kept losslessly.
    Document(Document),
}

/// One reading, identified by `(device_id, name, time)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub time_ns: i64,
    pub value: Value,
    pub unit: Option<String>,
}

/// An envelope kept as is because it does not hold SenML points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub topic: String,
    /// The device's bytes, untouched.
    pub payload: Vec<u8>,
    pub kind: DocumentKind,
    /// Why the payload is not points (the SenML or payload error).
    pub reason: String,
}

/// Whether a document's payload is usable CBOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// Well-formed CBOR that is not SenML.
    Opaque,
    /// A payload the collector could not decode (the gateway accepted it anyway).
    Invalid,
}

/// What a store did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Envelopes stored for the first time.
    pub accepted: u64,
    /// Envelopes already held under their `(gateway_id, spool_id, seq)`.
    pub duplicates: u64,
    /// New points written.
    pub points: u64,
    /// Points skipped because a point with the same `(device_id, name, time)` was held.
    pub duplicate_points: u64,
    /// New documents written.
    pub documents: u64,
    /// Of those documents, the ones flagged invalid.
    pub invalid_documents: u64,
}

/// What a retention run removes: per device, every point whose time is
/// before a cutoff and every document that reached the gateway before it.
/// Cutoffs are nanoseconds since the epoch; the caller computes them from
/// its clock, so stores and tests need none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// Cutoff of every device without an entry in `devices`; `None` keeps their data.
    pub default: Option<i64>,
    /// Per-device cutoffs, winning over `default`; `None` keeps that device's data.
    pub devices: std::collections::BTreeMap<String, Option<i64>>,
}

impl ExpiryPolicy {
    /// The cutoff of `device_id`, `None` when its data is kept.
    pub fn cutoff(&self, device_id: &str) -> Option<i64> {
        self.devices.get(device_id).copied().unwrap_or(self.default)
    }

    /// Documents are keyed by whole milliseconds: `ms * 1e6 < cutoff` exactly
    /// when `ms <` this.
    pub fn documents_before_ms(cutoff_ns: i64) -> u64 {
        (cutoff_ns.max(0) as u64).div_ceil(1_000_000)
    }
}

/// What a retention run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryOutcome {
    pub points: u64,
    pub documents: u64,
    /// Devices that lost at least one point or document.
    pub devices: u64,
}

/// What erasing one device removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasureOutcome {
    pub points: u64,
    pub documents: u64,
    /// Series (measurement names) that held at least one point.
    pub measurements: u64,
}

/// A point as returned by a series query.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    pub time_ns: i64,
    pub value: Value,
    pub unit: Option<String>,
}

/// A stored document as returned by a query.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    pub device_id: String,
    pub gateway_id: String,
    pub spool_id: String,
    pub seq: u64,
    pub received_at_ms: u64,
    pub document: Document,
}

/// What the collector knows about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    pub device_id: String,
    /// Gateway of the most recent envelope.
    pub gateway_id: String,
    /// Latest `received_at` seen, milliseconds since the epoch.
    pub last_seen_ms: u64,
    /// Measurement names, sorted.
    pub measurements: Vec<String>,
    pub points: u64,
    pub documents: u64,
}

/// What the collector knows about one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySummary {
    pub gateway_id: String,
    /// Spool of the latest batch.
    pub spool_id: String,
    /// Collector clock at the latest batch, milliseconds since the epoch.
    pub last_sync_ms: u64,
    /// Backlog the gateway reported in its latest batch.
    pub backlog: u64,
    pub batches: u64,
    pub accepted: u64,
    pub duplicates: u64,
}

/// One non-empty aggregate bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Start of the bucket, a multiple of the step, nanoseconds since the epoch.
    pub start_ns: i64,
    pub count: u64,
    /// Over numeric values (floats, bools as 0/1); `None` when the bucket holds none.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    /// The value with the latest time in the bucket.
    pub last: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip_through_nanos() {
        for s in [
            0.0,
            1.5,
            -1.5,
            1_700_000_000.0,
            1_700_000_000.123_456_7,
            1_712_345_678.987_654_3,
            -12_345.678,
        ] {
            let nanos = seconds_to_nanos(s).unwrap();
            assert_eq!(nanos_to_seconds(nanos), s, "{s}");
        }
    }

    #[test]
    fn times_outside_i64_nanos_are_refused() {
        assert_eq!(seconds_to_nanos(1e10), None);
        assert_eq!(seconds_to_nanos(-1e10), None);
        assert_eq!(seconds_to_nanos(f64::NAN), None);
        assert_eq!(seconds_to_nanos(f64::INFINITY), None);
        assert!(seconds_to_nanos(9.2e9).is_some());
    }

    #[test]
    fn range_is_half_open() {
        let r = TimeRange {
            from: Some(10),
            to: Some(20),
        };
        assert!(r.contains(10));
        assert!(r.contains(19));
        assert!(!r.contains(20));
        assert!(!r.contains(9));
        assert!(TimeRange::default().contains(i64::MIN));
    }
}
