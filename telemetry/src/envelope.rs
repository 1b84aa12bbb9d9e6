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

/// A batch or envelope that does not decode. The message names the field
/// at fault, e.g. `envelopes[3].seq: invalid type: text string, expected u64`.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A field has the wrong type or is missing; `path` is where.
    #[error("invalid sync batch at {path}: {source}")]
    Field {
        path: String,
        source: serde_cbor::Error,
    },
    /// Not one CBOR item, or bytes after it.
    #[error("invalid sync batch: {0}")]
    Cbor(#[from] serde_cbor::Error),
}

pub fn encode_batch(batch: &SyncBatch) -> Vec<u8> {
    serde_cbor::to_vec(batch).expect("a sync batch always serializes")
}

/// Decodes a batch. The plain decoder runs first: tracking the path of
/// every field costs as much again as the decoding, and is only needed to
/// name the field of a batch that does not decode, which is decoded again.
pub fn decode_batch(bytes: &[u8]) -> Result<SyncBatch, WireError> {
    match serde_cbor::from_slice(bytes) {
        Ok(batch) => Ok(batch),
        Err(_) => decode_batch_tracked(bytes),
    }
}

/// [`decode_batch`] with the path of the field at fault in the error.
fn decode_batch_tracked(bytes: &[u8]) -> Result<SyncBatch, WireError> {
    let mut de = serde_cbor::Deserializer::from_slice(bytes);
    let batch = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let source = err.into_inner();
        if path == "." {
            WireError::Cbor(source)
        } else {
            WireError::Field { path, source }
        }
    })?;
    de.end()?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_cbor::Value as Cbor;

    fn batch() -> SyncBatch {
        SyncBatch {
            gateway_id: "gw-1".into(),
            spool_id: "0123456789abcdef0123456789abcdef".into(),
            backlog: 7,
            envelopes: vec![Envelope {
                seq: 1,
                device_id: "dev".into(),
                topic: "devices/dev/telemetry".into(),
                received_at: 1_700_000_000_000,
                payload: ByteBuf::from(vec![0x81, 0x00]),
            }],
        }
    }

    #[test]
    fn payload_travels_as_a_byte_string() {
        // serde_bytes keeps the payload one CBOR byte string, not an array of ints.
        let doc: Cbor = serde_cbor::from_slice(&encode_batch(&batch())).unwrap();
        let Cbor::Map(batch) = doc else {
            panic!("batch is not a map");
        };
        let Cbor::Array(envelopes) = &batch[&Cbor::Text("envelopes".into())] else {
            panic!("envelopes is not an array");
        };
        let Cbor::Map(envelope) = &envelopes[0] else {
            panic!("envelope is not a map");
        };
        assert_eq!(
            envelope[&Cbor::Text("payload".into())],
            Cbor::Bytes(vec![0x81, 0x00])
        );
    }

    #[test]
    fn batches_round_trip_and_garbage_does_not_decode() {
        assert_eq!(decode_batch(&encode_batch(&batch())).unwrap(), batch());
        assert!(decode_batch(&[]).is_err());
        assert!(decode_batch(&[0xa0]).is_err());
        assert!(decode_batch(b"not cbor").is_err());
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_by_its_path() {
        let mut doc: Cbor = serde_cbor::from_slice(&encode_batch(&batch())).unwrap();
        let Cbor::Map(fields) = &mut doc else {
            panic!("batch is not a map");
        };
        let Some(Cbor::Array(envelopes)) = fields.get_mut(&Cbor::Text("envelopes".into())) else {
            panic!("envelopes is not an array");
        };
        let Cbor::Map(envelope) = &mut envelopes[0] else {
            panic!("envelope is not a map");
        };
        envelope.insert(Cbor::Text("seq".into()), Cbor::Text("7".into()));
        let err = decode_batch(&serde_cbor::to_vec(&doc).unwrap()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("envelopes[0].seq"), "{message}");
        assert!(message.contains("expected u64"), "{message}");

        let mut trailing = encode_batch(&batch());
        trailing.push(0x00);
        assert!(matches!(decode_batch(&trailing), Err(WireError::Cbor(_))));
    }

    #[test]
    fn approx_size_counts_ids_topic_payload_and_fixed_fields() {
        let envelope = &batch().envelopes[0];
        assert_eq!(envelope.approx_size(), 3 + 21 + 2 + 24);
    }
}
