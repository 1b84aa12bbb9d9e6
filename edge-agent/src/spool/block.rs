//! Encoding of one group commit's readings as a single sled value.
//!
//! ```text
//! byte 0       format version (1)
//! bytes 1..5   record count (u32 BE)
//! bytes 5..13  last seq in the block (u64 BE)
//! bytes 13..21 received_at of the first reading (u64 BE, ms since the epoch)
//! bytes 21..   CBOR array of telemetry::Envelope, in seq order
//! ```
//!
//! The header lets the spool count, age and trim blocks without decoding them.

use serde::{Deserialize, Serialize};
use telemetry::Envelope;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 21;

/// Why a stored block cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block is {0} bytes, shorter than its header")]
    Short(usize),
    #[error("block format version {0} is not supported")]
    Version(u8),
    #[error("block body does not decode: {0}")]
    Body(#[from] serde_cbor::Error),
}

/// What a block's header says, read without decoding the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub count: u32,
    pub last_seq: u64,
    /// Arrival of the block's oldest reading, ms since the epoch.
    pub first_received_at: u64,
}

/// Most bytes of readings (payload, ids, topic) put in one block.
///
/// sled stores a value larger than a quarter of its 512 KiB segment as a
/// separate blob file, written and fsynced on its own: slower, and a full
/// disk can leave a blob torn that the log still points to, which makes the
/// whole spool unreadable. Blocks stay well below that size, so they live in
/// the log, where a torn tail is cut off cleanly at recovery.
pub const MAX_BLOCK_BYTES: usize = 64 * 1024;

/// Bytes a reading adds to a block, near enough for [`split`].
fn weight(envelope: &Envelope) -> usize {
    // Field names, seq, timestamps and CBOR heads: 70-odd bytes.
    const FRAMING: usize = 80;
    envelope.payload.len() + envelope.device_id.len() + envelope.topic.len() + FRAMING
}

/// Cuts a group commit's readings into runs of at most [`MAX_BLOCK_BYTES`]
/// (a single larger reading makes a block of its own).
pub fn split(envelopes: &[Envelope]) -> impl Iterator<Item = &[Envelope]> {
    let mut rest = envelopes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut size = 0;
        let len = rest
            .iter()
            .take_while(|e| {
                size += weight(e);
                size <= MAX_BLOCK_BYTES
            })
            .count()
            .max(1);
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

pub fn encode(envelopes: &[Envelope]) -> Vec<u8> {
    let body = serde_cbor::to_vec(&envelopes).expect("envelopes always serialize");
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(VERSION);
    out.extend_from_slice(&(envelopes.len() as u32).to_be_bytes());
    let last = envelopes.last().map_or(0, |e| e.seq);
    out.extend_from_slice(&last.to_be_bytes());
    let first_received_at = envelopes.first().map_or(0, |e| e.received_at);
    out.extend_from_slice(&first_received_at.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn header(bytes: &[u8]) -> Result<BlockHeader, BlockError> {
    if bytes.len() < HEADER_LEN {
        return Err(BlockError::Short(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(BlockError::Version(bytes[0]));
    }
    let count = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
    let last_seq = u64::from_be_bytes(bytes[5..13].try_into().expect("8 bytes"));
    let first_received_at = u64::from_be_bytes(bytes[13..21].try_into().expect("8 bytes"));
    Ok(BlockHeader {
        count,
        last_seq,
        first_received_at,
    })
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Envelope>, BlockError> {
    header(bytes)?;
    Ok(serde_cbor::from_slice(&bytes[HEADER_LEN..])?)
}

/// A publish the gateway refused, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub envelope: Envelope,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn envelope(seq: u64) -> Envelope {
        Envelope {
            seq,
            device_id: "d".into(),
            topic: "devices/d/telemetry".into(),
            received_at: 1000 + seq,
            payload: ByteBuf::from(vec![0xa0]),
        }
    }

    #[test]
    fn round_trips_with_header() {
        let envelopes: Vec<_> = (5..9).map(envelope).collect();
        let bytes = encode(&envelopes);
        assert_eq!(
            header(&bytes).unwrap(),
            BlockHeader {
                count: 4,
                last_seq: 8,
                first_received_at: 1005
            }
        );
        assert_eq!(decode(&bytes).unwrap(), envelopes);
    }

    #[test]
    fn split_keeps_blocks_below_sleds_blob_size_and_loses_nothing() {
        let mut envelopes: Vec<_> = (1..=3000)
            .map(|seq| Envelope {
                payload: ByteBuf::from(vec![0xa0; 100]),
                ..envelope(seq)
            })
            .collect();
        // One reading bigger than a block goes alone.
        envelopes[1500].payload = ByteBuf::from(vec![0xa0; 100 * 1024]);
        let chunks: Vec<_> = split(&envelopes).collect();
        let mut seqs = Vec::new();
        for chunk in &chunks {
            let encoded = encode(chunk);
            if chunk.len() > 1 {
                assert!(encoded.len() <= MAX_BLOCK_BYTES, "{} bytes", encoded.len());
            }
            seqs.extend(chunk.iter().map(|e| e.seq));
        }
        assert!(chunks.len() > 5, "{} blocks", chunks.len());
        assert!(chunks.iter().any(|c| c.len() == 1 && c[0].seq == 1501));
        assert_eq!(seqs, (1..=3000).collect::<Vec<_>>());
        assert_eq!(split(&[]).count(), 0);
    }

    #[test]
    fn rejects_truncated_and_unknown_blocks() {
        assert!(matches!(header(&[1, 0]), Err(BlockError::Short(2))));
        let mut bytes = encode(&[envelope(1)]);
        bytes[0] = 9;
        assert!(matches!(decode(&bytes), Err(BlockError::Version(9))));
        let bytes = encode(&[envelope(1)]);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
