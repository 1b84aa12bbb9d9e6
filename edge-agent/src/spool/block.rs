//! Encoding of one group commit's readings as a single sled value.
//!
//! ```text
//! byte 0       format version: 1 plain, 2 sealed
//! bytes 1..5   record count (u32 BE)
//! bytes 5..13  last seq in the block (u64 BE)
//! bytes 13..21 received_at of the first reading (u64 BE, ms since the epoch)
//! bytes 21..   version 1: CBOR array of telemetry::Envelope, in seq order
//!              version 2: that CBOR array sealed (seal.rs: key id, nonce,
//!              ciphertext, tag), with bytes 0..21 as associated data
//! ```
//!
//! The header lets the spool count, age and trim blocks without decoding
//! (or decrypting) them; it holds no device id and no payload. A sealed
//! header cannot be changed or moved onto another body without the block
//! failing to open.

use serde::{Deserialize, Serialize};
use telemetry::Envelope;

use super::seal::{KeyRing, SealError};

const PLAIN: u8 = 1;
const SEALED: u8 = 2;
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
    /// Tampered with, or sealed with a key the ring lacks.
    #[error("block does not open: {0}")]
    Sealed(#[from] SealError),
}

/// What a block's header says, read without decoding the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub count: u32,
    pub last_seq: u64,
    /// Arrival of the block's oldest reading, ms since the epoch.
    pub first_received_at: u64,
    /// The key the body is sealed with; `None` for a plain block.
    pub key_id: Option<u32>,
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

/// Encodes a block, sealed under the ring's current key if it has one.
pub fn encode(envelopes: &[Envelope], keys: &KeyRing) -> Vec<u8> {
    let body = serde_cbor::to_vec(&envelopes).expect("envelopes always serialize");
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.push(if keys.is_enabled() { SEALED } else { PLAIN });
    header.extend_from_slice(&(envelopes.len() as u32).to_be_bytes());
    let last = envelopes.last().map_or(0, |e| e.seq);
    header.extend_from_slice(&last.to_be_bytes());
    let first_received_at = envelopes.first().map_or(0, |e| e.received_at);
    header.extend_from_slice(&first_received_at.to_be_bytes());
    let body = keys.seal(&header, &body).unwrap_or(body);
    let mut out = header;
    out.extend_from_slice(&body);
    out
}

pub fn header(bytes: &[u8]) -> Result<BlockHeader, BlockError> {
    if bytes.len() < HEADER_LEN {
        return Err(BlockError::Short(bytes.len()));
    }
    let key_id = match bytes[0] {
        PLAIN => None,
        SEALED => Some(KeyRing::key_id(&bytes[HEADER_LEN..])?),
        other => return Err(BlockError::Version(other)),
    };
    let count = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
    let last_seq = u64::from_be_bytes(bytes[5..13].try_into().expect("8 bytes"));
    let first_received_at = u64::from_be_bytes(bytes[13..21].try_into().expect("8 bytes"));
    Ok(BlockHeader {
        count,
        last_seq,
        first_received_at,
        key_id,
    })
}

/// Decodes a block, opening it first if it is sealed. A plain block decodes
/// with any ring, so a spool written before encryption was turned on drains.
pub fn decode(bytes: &[u8], keys: &KeyRing) -> Result<Vec<Envelope>, BlockError> {
    let header = header(bytes)?;
    let (head, body) = bytes.split_at(HEADER_LEN);
    match header.key_id {
        None => Ok(serde_cbor::from_slice(body)?),
        Some(_) => Ok(serde_cbor::from_slice(&keys.open(head, body)?)?),
    }
}

/// A publish the gateway refused, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub envelope: Envelope,
    pub reason: String,
}

/// First byte of a sealed dead letter. A plain one is a CBOR map (0xa2),
/// never a 19-byte CBOR byte string (0x53), so the two cannot be confused.
const SEALED_LETTER: u8 = 0x53;

/// A dead letter as stored: plain CBOR, or `0x53` + the sealed CBOR.
pub fn encode_dead_letter(letter: &DeadLetter, keys: &KeyRing) -> Vec<u8> {
    let plain = serde_cbor::to_vec(letter).expect("dead letters always serialize");
    match keys.seal(&[SEALED_LETTER], &plain) {
        Some(sealed) => [&[SEALED_LETTER][..], &sealed].concat(),
        None => plain,
    }
}

pub fn decode_dead_letter(bytes: &[u8], keys: &KeyRing) -> Result<DeadLetter, BlockError> {
    match bytes.split_first() {
        Some((&SEALED_LETTER, sealed)) => Ok(serde_cbor::from_slice(
            &keys.open(&[SEALED_LETTER], sealed)?,
        )?),
        _ => Ok(serde_cbor::from_slice(bytes)?),
    }
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

    fn keys() -> KeyRing {
        KeyRing::parse(
            "test",
            "1 2026-11-29T00:00:00Z AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .unwrap()
    }

    #[test]
    fn round_trips_with_header() {
        let envelopes: Vec<_> = (5..9).map(envelope).collect();
        let bytes = encode(&envelopes, &KeyRing::none());
        assert_eq!(
            header(&bytes).unwrap(),
            BlockHeader {
                count: 4,
                last_seq: 8,
                first_received_at: 1005,
                key_id: None,
            }
        );
        assert_eq!(decode(&bytes, &KeyRing::none()).unwrap(), envelopes);
        // A plain block still decodes once encryption is on.
        assert_eq!(decode(&bytes, &keys()).unwrap(), envelopes);
    }

    #[test]
    fn sealed_blocks_hide_the_body_and_catch_any_change() {
        let mut envelopes: Vec<_> = (5..9).map(envelope).collect();
        envelopes[2].payload = ByteBuf::from(b"MARKER-42".to_vec());
        let bytes = encode(&envelopes, &keys());
        let found = header(&bytes).unwrap();
        assert_eq!((found.count, found.last_seq, found.key_id), (4, 8, Some(1)));
        assert!(!bytes.windows(9).any(|w| w == b"MARKER-42"));
        assert!(!bytes.windows(19).any(|w| w == b"devices/d/telemetry"));
        assert_eq!(decode(&bytes, &keys()).unwrap(), envelopes);
        assert!(matches!(
            decode(&bytes, &KeyRing::none()),
            Err(BlockError::Sealed(SealError::NoKeys))
        ));
        // A flipped bit anywhere, header included, is caught (byte 0 turns
        // it into another format, bytes 21..25 name another key).
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad, &keys()).is_err(), "byte {i}");
        }
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
            let encoded = encode(chunk, &KeyRing::none());
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
    fn dead_letters_round_trip_plain_and_sealed() {
        let letter = DeadLetter {
            envelope: envelope(3),
            reason: "payload is not SenML".into(),
        };
        let plain = encode_dead_letter(&letter, &KeyRing::none());
        assert_eq!(decode_dead_letter(&plain, &keys()).unwrap(), letter);
        let sealed = encode_dead_letter(&letter, &keys());
        assert!(!sealed.windows(5).any(|w| w == b"SenML"));
        assert_eq!(decode_dead_letter(&sealed, &keys()).unwrap(), letter);
        assert!(decode_dead_letter(&sealed, &KeyRing::none()).is_err());
    }

    #[test]
    fn rejects_truncated_and_unknown_blocks() {
        assert!(matches!(header(&[1, 0]), Err(BlockError::Short(2))));
        let mut bytes = encode(&[envelope(1)], &KeyRing::none());
        bytes[0] = 9;
        assert!(matches!(
            decode(&bytes, &KeyRing::none()),
            Err(BlockError::Version(9))
        ));
        let bytes = encode(&[envelope(1)], &KeyRing::none());
        assert!(decode(&bytes[..bytes.len() - 1], &KeyRing::none()).is_err());
    }
}
