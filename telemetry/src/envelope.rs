//! The gateway's unit of storage (`Envelope`) and the uplink's unit of
//! transfer (`SyncBatch`), both CBOR through serde_cbor.
//!
//! ```text
//! Envelope  { seq: u64, device_id: text, topic: text, received_at: u64 ms, payload: bytes }
//! SyncBatch { gateway_id: text, spool_id: text (32 hex digits), backlog: u64,
//!             envelopes: [Envelope, ...] }
//! ```
//!
//! Invariants: `seq` is strictly increasing within one spool, so
//! `(gateway_id, spool_id, seq)` names an envelope uniquely and is the
//! collector's dedup key; `payload` is the device's bytes, untouched.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// One accepted publish, as spooled on the gateway and sent to the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Gateway-assigned, strictly increasing per spool.
    pub seq: u64,
    pub device_id: String,
    pub topic: String,
    /// Gateway clock when the publish arrived, milliseconds since the epoch.
    pub received_at: u64,
    /// The original CBOR payload.
    pub payload: ByteBuf,
}

impl Envelope {
    /// Bytes this envelope adds to a batch, near enough to size batches by.
    pub fn approx_size(&self) -> usize {
        self.device_id.len() + self.topic.len() + self.payload.len() + 24
    }
}

/// What the uplink posts to `POST /v1/batches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBatch {
    pub gateway_id: String,
    /// Random id of the spool the envelopes come from (new after a re-flash or a quarantined spool).
    pub spool_id: String,
    /// Readings still waiting on the gateway after this batch, for the fleet view.
    pub backlog: u64,
    pub envelopes: Vec<Envelope>,
}

/// The collector's answer to a batch it stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// Envelopes stored for the first time.
    pub accepted: u64,
    /// Envelopes the collector already held (a retry or an overlap).
    pub duplicates: u64,
}

/// A batch or envelope that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("invalid sync batch: {0}")]
pub struct WireError(#[from] serde_cbor::Error);

pub fn encode_batch(batch: &SyncBatch) -> Vec<u8> {
    serde_cbor::to_vec(batch).expect("a sync batch always serializes")
}

pub fn decode_batch(bytes: &[u8]) -> Result<SyncBatch, WireError> {
    Ok(serde_cbor::from_slice(bytes)?)
}
